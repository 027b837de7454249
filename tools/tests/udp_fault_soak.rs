//! The UDP link under faults, for real (issue 19): a publisher host and three receiver
//! hosts as network namespaces on a bridge this test makes (never the host's
//! interfaces). Receiver 1 loses 5 % of what arrives, receiver 2 30 %, receiver 3 bursts
//! of 40 datagrams in every 400 (nftables, input hook). Mid-stream: receiver 1 is killed
//! with SIGKILL and restarted, receiver 3's link goes down for 2 s, and the publisher is
//! killed with SIGKILL and restarted (it takes its ring over in a new epoch and serves it
//! from a new socket, so the receivers follow it once the old one is silent). Every
//! replica must then equal the source ring, record for record, or — where the ring no
//! longer held something — report exactly what is missing.
//!
//! Short by default (CI); `MDI_SOAK_SECONDS=N` writes for about N seconds and
//! `MDI_SOAK_ROUNDS=R` repeats the whole scenario (`scripts/udp-fault-soak.sh --soak`).
//! Needs root (network namespaces): without it the test says so loudly, and fails when
//! `CI=true`.
#![allow(clippy::disallowed_methods)] // tests may use clocks and threads

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::time::WallNs;
use mdi_protocol::udp::Channel;
use mdi_transport::sender::{UdpSender, UdpSenderOptions};

mod common;
use common::{Netns, no_namespaces, run};

const PORT: u16 = 40_140;
const APP: RecordKind = RecordKind::APPLICATION_FIRST;

/// Record `i`: `i`, then bytes derived from it (16 to 376 bytes).
fn record(i: u64) -> Vec<u8> {
    let mut body = i.to_le_bytes().to_vec();
    body.extend((0..8 + (i % 46) * 8).map(|k| (i.wrapping_mul(31) ^ k) as u8));
    body
}

/// The record number of a body written by [`record`], checked.
fn record_number(body: &[u8]) -> u64 {
    let i = u64::from_le_bytes(body[..8].try_into().unwrap());
    assert_eq!(body, record(i), "record {i} is corrupt");
    i
}

/// Child role: the publisher. Takes the ring over (or makes it), continues after the last
/// record in it, writes up to `MDI_SOAK_TOTAL` records at `MDI_SOAK_RATE` per second
/// while serving the ring on the group, then ends the stream (linger, END).
#[test]
fn soak_publisher() {
    let Ok(dir) = std::env::var("MDI_SOAK_DIR") else {
        return;
    };
    let env = |name: &str| std::env::var(name).unwrap();
    let shm = ShmDir::new(PathBuf::from(dir));
    let channel = Channel::parse(&env("MDI_SOAK_CHANNEL")).unwrap();
    let total: u64 = env("MDI_SOAK_TOTAL").parse().unwrap();
    let rate: u64 = env("MDI_SOAK_RATE").parse().unwrap();
    let options = RingOptions::default()
        .capacity(ring_capacity(total))
        .now_ns(WallNs(1_700_000_000_000_000_000));
    let mut writer = RingWriter::create(&shm, "ticks", &options).unwrap();
    let mut next = last_record(&shm).map_or(0, |i| i + 1);
    eprintln!(
        "publisher {}: epoch {}, from record {next}",
        std::process::id(),
        writer.epoch()
    );
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
    let started = Instant::now();
    let first = next;
    let deadline = started + Duration::from_secs(600);
    let mut heartbeat = Instant::now();
    let mut closing = false;
    while !sender.is_closed() {
        assert!(Instant::now() < deadline, "the publisher did not finish");
        // paced: as many records as the rate allows by now
        let due = first + started.elapsed().as_micros() as u64 * rate / 1_000_000;
        while next < total && next < due {
            writer.append(APP, &record(next)).unwrap();
            next += 1;
        }
        if next == total && !closing {
            closing = true;
            sender.close();
        }
        if heartbeat.elapsed() >= Duration::from_millis(100) {
            heartbeat = Instant::now();
            writer.heartbeat(WallNs(wall_ns()));
        }
        if !sender.poll().unwrap() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    eprintln!("publisher: {:?}", sender.stats()[0].counters);
}

fn wall_ns() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_nanos()).unwrap()
}

/// A ring that holds `total` records (at most 392 bytes each with its header), so the
/// replicas can be compared whole.
fn ring_capacity(total: u64) -> u64 {
    (total * 392).next_power_of_two().max(1 << 20)
}

/// The number of the last record in the ring, if any.
fn last_record(shm: &ShmDir) -> Option<u64> {
    let mut reader = RingReader::open(shm, "ticks", StartAt::Earliest).ok()?;
    let mut last = None;
    while !reader.caught_up() {
        reader
            .poll(4096, |event| {
                if let ReadEvent::Record(r) = event {
                    last = Some(record_number(r.body));
                }
            })
            .unwrap();
    }
    last
}

/// What a replica must reproduce: (position, sequence, kind, body) of every record and
/// epoch start, and the sequence ranges reported lost.
type Seen = (u64, u64, u16, Vec<u8>);

fn contents(dir: &Path) -> (Vec<Seen>, Vec<(u64, u64)>) {
    let mut reader = RingReader::open(&ShmDir::new(dir), "ticks", StartAt::Earliest).unwrap();
    let (mut out, mut lost) = (Vec::new(), Vec::new());
    while !reader.caught_up() {
        reader
            .poll(4096, |event| match event {
                ReadEvent::Record(r) => {
                    out.push((r.position.get(), r.seq.get(), r.kind.0, r.body.to_vec()));
                }
                ReadEvent::EpochStarted { seq, epoch, .. } => {
                    out.push((0, seq.get(), 1, epoch.to_le_bytes().to_vec()));
                }
                ReadEvent::Lost { from_seq, to_seq } => lost.push((from_seq.get(), to_seq.get())),
            })
            .unwrap();
    }
    (out, lost)
}

/// A switch namespace with a bridge, and hosts joined to it by veth pairs
/// (`10.78.0.<i+1>/24`, multicast routed on the veth).
struct Bridge {
    hosts: Vec<Netns>,
    switch: Netns,
}

impl Bridge {
    fn new(names: &[&str]) -> Option<Self> {
        let switch = Netns::create("soak-sw")?;
        let ip = |args: &[&str]| assert!(run("ip", args), "ip {args:?}");
        ip(&[
            "-n",
            &switch.0,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &switch.0, "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let host = Netns::create(&format!("soak-{name}"))?;
            let (inside, outside) = (format!("eth{i}"), format!("sw{i}"));
            ip(&[
                "-n", &host.0, "link", "add", &inside, "type", "veth", "peer", "name", &outside,
                "netns", &switch.0,
            ]);
            ip(&[
                "-n", &switch.0, "link", "set", &outside, "master", "br0", "up",
            ]);
            let address = format!("10.78.0.{}/24", i + 1);
            ip(&["-n", &host.0, "addr", "add", &address, "dev", &inside]);
            ip(&["-n", &host.0, "link", "set", &inside, "up"]);
            ip(&["-n", &host.0, "route", "add", "224.0.0.0/4", "dev", &inside]);
            // room for bursts: the default receive buffer of a new namespace is 208 KiB
            let _ = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &host.0,
                    "sysctl",
                    "-qw",
                    "net.core.rmem_max=16777216",
                ],
            );
            hosts.push(host);
        }
        Some(Self { hosts, switch })
    }

    /// Takes host `i`'s link down (its switch port) or up.
    fn link(&self, i: usize, up: bool) {
        let port = format!("sw{i}");
        let state = if up { "up" } else { "down" };
        assert!(run(
            "ip",
            &["-n", &self.switch.0, "link", "set", &port, state]
        ));
    }
}

/// A child process killed (SIGKILL) and reaped if still running when dropped.
struct Reaped(Option<Child>);

impl Reaped {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) and returns success and stderr.
    fn finish(&mut self, limit: Duration) -> (bool, String) {
        let mut child = self.0.take().expect("running");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                // SIGTERM first: mdrecv says where it stood (its summary) before exiting
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let reaped = Instant::now() + Duration::from_secs(3);
                while Instant::now() < reaped && child.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut log);
        }
        (status.is_some_and(|s| s.success()), log)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill();
    }
}

fn mdrecv(bridge: &Bridge, host: usize, dir: &Path) -> Reaped {
    let channel = format!("udp://239.255.78.1:{PORT}?iface=10.78.0.{}", host + 1);
    Reaped(Some(
        bridge.hosts[host]
            .command(env!("CARGO_BIN_EXE_mdrecv"))
            .args(["--udp", &channel, "--until-end", "--timeout", "900"])
            .arg("--shm-dir")
            .arg(dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

fn publisher(bridge: &Bridge, dir: &Path, total: u64, rate: u64) -> Reaped {
    Reaped(Some(
        bridge.hosts[0]
            .command(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "soak_publisher",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MDI_SOAK_DIR", dir)
            .env(
                "MDI_SOAK_CHANNEL",
                format!("udp://239.255.78.1:{PORT}?iface=10.78.0.1&ttl=1"),
            )
            .env("MDI_SOAK_TOTAL", total.to_string())
            .env("MDI_SOAK_RATE", rate.to_string())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

#[test]
fn replicas_survive_loss_bursts_kills_and_a_link_down_on_a_bridge() {
    let Some(bridge) = Bridge::new(&["pub", "r1", "r2", "r3"]) else {
        no_namespaces("replicas_survive_loss_bursts_kills_and_a_link_down_on_a_bridge");
        return;
    };
    let seconds: u64 = std::env::var("MDI_SOAK_SECONDS").map_or(6, |s| s.parse().unwrap());
    let rounds: u64 = std::env::var("MDI_SOAK_ROUNDS").map_or(1, |s| s.parse().unwrap());
    let port = PORT.to_string();
    bridge.hosts[1].drop_on_input(&["udp", "dport", &port], 5);
    bridge.hosts[2].drop_on_input(&["udp", "dport", &port], 30);
    drop_bursts(&bridge.hosts[3], &port);
    for round in 0..rounds {
        one_round(&bridge, seconds, round);
    }
    for (host, rule) in [(1, "5 %"), (2, "30 %"), (3, "bursts")] {
        let rules = bridge.hosts[host].ruleset();
        assert!(
            !rules.contains("packets 0 "),
            "{rule}: nothing dropped: {rules}"
        );
    }
}

/// nftables on `host`: of every 400 datagrams arriving for the port, 40 in a row dropped.
fn drop_bursts(host: &Netns, port: &str) {
    let nft = |args: &[&str]| {
        let mut all = vec!["netns", "exec", host.0.as_str(), "nft"];
        all.extend_from_slice(args);
        assert!(run("ip", &all), "nft {args:?}");
    };
    nft(&["add", "table", "inet", "mdi_loss"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "mdi_loss",
        "input",
        "{ type filter hook input priority 0; }",
    ]);
    nft(&[
        "add", "rule", "inet", "mdi_loss", "input", "udp", "dport", port, "numgen", "inc", "mod",
        "400", "<", "40", "counter", "drop",
    ]);
}

fn one_round(bridge: &Bridge, seconds: u64, round: u64) {
    let rate = 20_000u64;
    let total = rate * seconds;
    let source = tempfile::tempdir().unwrap();
    let replicas: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut receivers: Vec<Reaped> = replicas
        .iter()
        .enumerate()
        .map(|(i, dir)| mdrecv(bridge, i + 1, dir.path()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut publishers = vec![publisher(bridge, source.path(), total, rate)];
    let at = |fraction: f64| Duration::from_secs_f64(seconds as f64 * fraction);
    let started = Instant::now();
    let wait_until = |when: Duration| {
        if let Some(left) = when.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    };
    // receiver 1 dies and comes back
    wait_until(at(0.15));
    receivers[0].kill();
    wait_until(at(0.25));
    receivers[0] = mdrecv(bridge, 1, replicas[0].path());
    // receiver 3's link is down for 2 s
    wait_until(at(0.3));
    bridge.link(3, false);
    std::thread::sleep(Duration::from_secs(2));
    bridge.link(3, true);
    // the publisher dies and comes back
    wait_until(at(0.5));
    publishers[0].kill();
    std::thread::sleep(Duration::from_millis(300));
    publishers.push(publisher(bridge, source.path(), total, rate));

    let limit = Duration::from_secs(seconds * 4 + 60);
    let (ok, log) = publishers[1].finish(limit);
    assert!(ok, "round {round}: the restarted publisher failed: {log}");
    eprintln!("round {round}: {}", log.trim());
    let (expected, source_lost) = contents(source.path());
    assert!(source_lost.is_empty());
    let numbers: Vec<u64> = expected
        .iter()
        .filter(|r| r.2 != 1)
        .map(|r| record_number(&r.3))
        .collect();
    assert!(
        numbers.len() as u64 == total && numbers.iter().copied().eq(0..total),
        "round {round}: the source does not hold records 0..{total} once each, in order \
         ({} records, from {:?} to {:?})",
        numbers.len(),
        numbers.first(),
        numbers.last()
    );
    for (i, receiver) in receivers.iter_mut().enumerate() {
        let (ok, log) = receiver.finish(limit);
        assert!(ok, "round {round}: mdrecv {} failed: {log}", i + 1);
        let summary = log
            .lines()
            .rev()
            .find(|l| l.contains("records,"))
            .unwrap_or("");
        eprintln!("round {round}: receiver {}: {summary}", i + 1);
        let (replica, lost) = contents(replicas[i].path());
        // nothing was beyond the ring's reach: the replicas must be whole
        assert!(
            lost.is_empty(),
            "round {round}: receiver {} lost {lost:?}: {log}",
            i + 1
        );
        assert_eq!(
            replica.len(),
            expected.len(),
            "round {round}: receiver {}",
            i + 1
        );
        assert!(
            replica == expected,
            "round {round}: replica {} differs from the source",
            i + 1
        );
    }
}
