//! Multicast for real, inside a network namespace this test creates (never on the host's
//! interfaces): a sender process and three `mdrecv` processes, each receiver dropping 5 %
//! of what arrives. Every replica must equal the source ring.
//!
//! Needs root (network namespaces). Without it the test says so loudly, and fails when
//! `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::Channel;
use mdi_publisher::udp::{UdpSender, UdpSenderOptions};

const GROUP: &str = "udp://239.255.77.1:40123?iface=127.0.0.1";

type Seen = (u64, u64, u16, Vec<u8>);

fn contents(dir: &Path) -> Vec<Seen> {
    let mut reader = RingReader::open(&ShmDir::new(dir), "ticks", StartAt::Earliest).unwrap();
    let mut out = Vec::new();
    while !reader.caught_up() {
        reader
            .poll(1024, |e| match e {
                ReadEvent::Record(r) => out.push((r.position, r.seq, r.kind.0, r.body.to_vec())),
                ReadEvent::EpochStarted { seq, epoch, .. } => {
                    out.push((0, seq, 1, epoch.to_le_bytes().to_vec()))
                }
                ReadEvent::Lost { from_seq, to_seq } => panic!("loss {from_seq}..{to_seq}"),
            })
            .unwrap();
    }
    out
}

/// A network namespace with loopback up and a multicast route, deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Option<Self> {
        let name = format!("mdi-test-{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", &name]) {
            return None;
        }
        let ns = Self(name);
        assert!(ok(&["-n", &ns.0, "link", "set", "lo", "up"]));
        assert!(ok(&[
            "-n",
            &ns.0,
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "lo"
        ]));
        Some(ns)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Child process role: serve the ring on the group until its writer exits.
#[test]
fn child() {
    let Ok(dir) = std::env::var("MDI_TEST_SERVE_DIR") else {
        return;
    };
    let shm = ShmDir::new(PathBuf::from(dir));
    let channel = Channel::parse(GROUP).unwrap();
    let mut sender = UdpSender::new(
        channel,
        &shm,
        &["ticks".to_string()],
        &UdpSenderOptions {
            linger: Duration::from_millis(500),
            ..UdpSenderOptions::default()
        },
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut closing = false;
    while !sender.is_closed() {
        assert!(Instant::now() < deadline, "sender did not finish");
        let busy = sender.poll().unwrap();
        if !closing && !sender.has_work() {
            closing = true;
            sender.close();
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let stats = sender.stats();
    eprintln!("sender: {:?}", stats[0].counters);
    assert_eq!(
        stats[0].receivers.len(),
        3,
        "three receivers reported STATUS"
    );
}

#[test]
fn multicast_in_a_namespace_three_receivers_each_dropping_5_percent() {
    let Some(netns) = Netns::create() else {
        let message = "SKIPPED multicast_in_a_namespace_three_receivers_each_dropping_5_percent: \\
                       cannot create a network namespace (needs root)";
        eprintln!("{message}");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{message} — required in CI"
        );
        return;
    };
    let source = tempfile::tempdir().unwrap();
    let replicas: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let src = ShmDir::new(source.path());
    let options = RingOptions::default()
        .capacity(8 << 20)
        .now_ns(1_700_000_000_000_000_000);
    let mut writer = RingWriter::create(&src, "ticks", &options).unwrap();

    let mut receivers: Vec<Child> = replicas
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            netns
                .command(env!("CARGO_BIN_EXE_mdrecv"))
                .args(["--udp", GROUP, "--until-end", "--timeout", "60"])
                .arg("--shm-dir")
                .arg(dir.path())
                .args([
                    "--debug-drop-rate",
                    "0.05",
                    "--debug-seed",
                    &(i + 1).to_string(),
                ])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut sender = netns
        .command(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("MDI_TEST_SERVE_DIR", source.path())
        .spawn()
        .unwrap();

    // 50 000 records over about half a second, then the writer exits.
    for i in 0..50_000u64 {
        let body: Vec<u8> = (0..(8 + i % 150) as usize)
            .map(|k| (i as u8).wrapping_add(k as u8))
            .collect();
        writer.append(RecordKind::APPLICATION_FIRST, &body).unwrap();
        if i % 1000 == 999 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    drop(writer);

    assert!(sender.wait().unwrap().success(), "sender failed");
    let expected = contents(source.path());
    for (i, (receiver, dir)) in receivers.iter_mut().zip(&replicas).enumerate() {
        let output = receiver.wait().unwrap();
        let mut log = String::new();
        use std::io::Read;
        receiver
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(output.success(), "mdrecv {i} failed: {log}");
        assert!(log.contains("NAKs"), "{log}");
        let replica = contents(dir.path());
        assert_eq!(replica.len(), expected.len(), "replica {i}: {log}");
        assert!(replica == expected, "replica {i} differs from the source");
    }
}
