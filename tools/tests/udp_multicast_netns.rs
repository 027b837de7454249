//! Multicast for real, inside a network namespace this test creates (never on the host's
//! interfaces): a sender process and three `mdrecv` processes, each receiver dropping 5 %
//! of what arrives. Every replica must equal the source ring.
//!
//! Needs root (network namespaces). Without it the test says so loudly, and fails when
//! `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::udp::Channel;
use mdi_transport::sender::{UdpSender, UdpSenderOptions};

mod common;
use common::{Netns, no_namespaces, run, stream_contents};

const GROUP: &str = "udp://239.255.77.1:40123?iface=127.0.0.1";

use common::Seen;

fn contents(dir: &Path) -> Vec<Seen> {
    stream_contents(dir, "ticks")
}

/// Child process role: serve the ring on the group until its writer exits.
#[test]
fn child() {
    let Ok(dir) = std::env::var("MDI_TEST_SERVE_DIR") else {
        return;
    };
    let shm = ShmDir::new(PathBuf::from(dir));
    let channel =
        Channel::parse(&std::env::var("MDI_TEST_CHANNEL").unwrap_or(GROUP.to_string())).unwrap();
    let receivers: usize = std::env::var("MDI_TEST_RECEIVERS").map_or(3, |v| v.parse().unwrap());
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
        receivers,
        "every receiver reported STATUS"
    );
}

#[test]
fn multicast_in_a_namespace_three_receivers_each_dropping_5_percent() {
    let Some(netns) = Netns::loopback_multicast("lo") else {
        no_namespaces("multicast_in_a_namespace_three_receivers_each_dropping_5_percent");
        return;
    };
    let source = tempfile::tempdir().unwrap();
    let replicas: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let src = ShmDir::new(source.path());
    let options = RingOptions::default()
        .capacity(8 << 20)
        .now_ns(1_700_000_000_000_000_000);
    let writer = RingWriter::create(&src, "ticks", &options).unwrap();

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

    write_and_exit(writer);

    assert!(sender.wait().unwrap().success(), "sender failed");
    for log in check_replicas(source.path(), &mut receivers, &replicas) {
        assert!(log.contains("NAKs"), "{log}");
    }
}

/// Waits for every `mdrecv`, checks it succeeded and that its replica equals the source;
/// returns their logs.
fn check_replicas(
    source: &Path,
    receivers: &mut [Child],
    replicas: &[tempfile::TempDir],
) -> Vec<String> {
    let expected = contents(source);
    let mut logs = Vec::new();
    for (i, (receiver, dir)) in receivers.iter_mut().zip(replicas).enumerate() {
        let (ok, log) = receiver_output(receiver);
        assert!(ok, "mdrecv {i} failed: {log}");
        let replica = contents(dir.path());
        assert_eq!(replica.len(), expected.len(), "replica {i}: {log}");
        assert!(replica == expected, "replica {i} differs from the source");
        logs.push(log);
    }
    logs
}

/// Writes 50 000 records over about half a second, then the writer exits.
fn write_and_exit(mut writer: RingWriter) {
    for i in 0..50_000u64 {
        let body: Vec<u8> = (0..(8 + i % 150) as usize)
            .map(|k| (i as u8).wrapping_add(k as u8))
            .collect();
        writer.append(RecordKind::APPLICATION_FIRST, &body).unwrap();
        if i % 1000 == 999 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn three_hosts_on_a_bridge_with_nftables_dropping_5_percent_at_each_receiver() {
    // A switch namespace with a bridge; a publisher host and two receiver hosts, each
    // joined to the bridge by a veth pair; 10.77.0.0/24 with multicast routed on the veth.
    let Some(switch) = Netns::create("sw") else {
        no_namespaces("three_hosts_on_a_bridge_with_nftables_dropping_5_percent_at_each_receiver");
        return;
    };
    assert!(run(
        "ip",
        &[
            "-n",
            &switch.0,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0"
        ]
    ));
    assert!(run("ip", &["-n", &switch.0, "link", "set", "br0", "up"]));
    let hosts: Vec<Netns> = ["pub", "r1", "r2"]
        .iter()
        .map(|h| Netns::create(h).unwrap())
        .collect();
    for (i, host) in hosts.iter().enumerate() {
        let (inside, outside) = (format!("eth{i}"), format!("sw{i}"));
        assert!(run(
            "ip",
            &[
                "-n", &host.0, "link", "add", &inside, "type", "veth", "peer", "name", &outside,
                "netns", &switch.0
            ]
        ));
        assert!(run(
            "ip",
            &[
                "-n", &switch.0, "link", "set", &outside, "master", "br0", "up"
            ]
        ));
        let address = format!("10.77.0.{}/24", i + 1);
        assert!(run(
            "ip",
            &["-n", &host.0, "addr", "add", &address, "dev", &inside]
        ));
        assert!(run("ip", &["-n", &host.0, "link", "set", &inside, "up"]));
        assert!(run(
            "ip",
            &["-n", &host.0, "route", "add", "224.0.0.0/4", "dev", &inside]
        ));
    }
    for receiver in &hosts[1..] {
        // 5 % of the UDP datagrams arriving for the group port are dropped on input.
        receiver.drop_on_input(&["udp", "dport", "40124"], 5);
    }
    let source = tempfile::tempdir().unwrap();
    let replicas: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let src = ShmDir::new(source.path());
    let options = RingOptions::default()
        .capacity(8 << 20)
        .now_ns(1_700_000_000_000_000_001);
    let writer = RingWriter::create(&src, "ticks", &options).unwrap();
    let mut receivers: Vec<Child> = replicas
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let channel = format!("udp://239.255.77.2:40124?iface=10.77.0.{}", i + 2);
            hosts[i + 1]
                .command(env!("CARGO_BIN_EXE_mdrecv"))
                .args(["--udp", &channel, "--until-end", "--timeout", "60"])
                .arg("--shm-dir")
                .arg(dir.path())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut sender = hosts[0]
        .command(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("MDI_TEST_SERVE_DIR", source.path())
        .env(
            "MDI_TEST_CHANNEL",
            "udp://239.255.77.2:40124?iface=10.77.0.1&ttl=1",
        )
        .env("MDI_TEST_RECEIVERS", "2")
        .spawn()
        .unwrap();
    write_and_exit(writer);
    assert!(sender.wait().unwrap().success(), "sender failed");
    let logs = check_replicas(source.path(), &mut receivers, &replicas);
    for (i, log) in logs.iter().enumerate() {
        eprintln!("receiver {i}: {}", log.lines().last().unwrap_or(""));
        // The loss really happened: nftables counted drops, the receiver NAKed.
        let rules = hosts[i + 1].ruleset();
        assert!(
            !rules.contains("packets 0 "),
            "no datagram was dropped: {rules}"
        );
        assert!(!log.contains(" 0 NAKs"), "{log}");
    }
    drop(hosts);
    drop(switch);
}

/// The check as an operator runs it, with the binaries only: `mdpub replay` of a
/// history file serving multicast in a fresh namespace, two `mdrecv` dropping 5 % each.
/// Both streams' replicas must equal the source rings record for record.
#[test]
fn mdpub_replay_to_two_mdrecv_dropping_5_percent_in_a_namespace() {
    let Some(netns) = Netns::loopback_multicast("lo") else {
        no_namespaces("mdpub_replay_to_two_mdrecv_dropping_5_percent_in_a_namespace");
        return;
    };
    // mdpub is another package's binary, built next to mdrecv by a workspace build
    let mdpub = Path::new(env!("CARGO_BIN_EXE_mdrecv")).with_file_name("mdpub");
    assert!(
        mdpub.exists(),
        "{} is missing: cargo build --workspace",
        mdpub.display()
    );
    let input = tempfile::tempdir().unwrap();
    let file = input.path().join("ETHUSDT-aggTrades-2024-05-01.csv");
    let rows: String = (0..60_000u64)
        .map(|i| {
            format!(
                "{},{}.{:02},0.{:04},{},{},{},{},true\n",
                100 + i,
                3_000 + i % 17,
                i % 100,
                1 + i % 9_999,
                10 * i,
                10 * i + i % 3,
                1_714_521_600_000 + i * 1_300,
                i % 2 == 0
            )
        })
        .collect();
    std::fs::write(&file, rows).unwrap();
    let group = "udp://239.255.77.3:40125?iface=127.0.0.1";
    let source = tempfile::tempdir().unwrap();
    let replicas: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut receivers: Vec<Child> = replicas
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            netns
                .command(env!("CARGO_BIN_EXE_mdrecv"))
                .args(["--udp", group, "--until-end", "--timeout", "60"])
                .arg("--shm-dir")
                .arg(dir.path())
                .args(["--debug-drop-rate", "0.05", "--debug-seed"])
                .arg((i + 7).to_string())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let publisher = netns
        .command(&mdpub)
        .args(["replay", "--input"])
        .arg(&file)
        .arg("--shm-dir")
        .arg(source.path())
        .args(["--capacity", "67108864", "--udp", group])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&publisher.stderr);
    assert!(publisher.status.success(), "mdpub failed: {log}");
    assert!(log.contains("60000 trades"), "{log}");
    for (i, (receiver, dir)) in receivers.iter_mut().zip(&replicas).enumerate() {
        let output = receiver_output(receiver);
        assert!(output.0, "mdrecv {i} failed: {}", output.1);
        for stream in ["ticks", "klines"] {
            let expected = stream_contents(source.path(), stream);
            assert!(expected.len() > 1_000, "{stream}: {}", expected.len());
            assert!(
                stream_contents(dir.path(), stream) == expected,
                "replica {i} of {stream} differs from the source: {}",
                output.1
            );
        }
    }
}

fn receiver_output(child: &mut Child) -> (bool, String) {
    use std::io::Read;
    let status = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (status.success(), log)
}
