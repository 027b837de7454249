//! A live ITCH feed over MoldUDP64 multicast, for real, inside a network namespace this
//! test creates: `mdfeedsim --send` is the venue (it also leaves out every 40th packet),
//! nftables drops 5 % of the multicast arriving, `mdpub run` with an `[itch]` config
//! receives and re-requests what is missing from mdfeedsim's request server. The books
//! and trades it publishes must be those of a loss-free run of the same feed.
//!
//! Needs root (network namespaces). Without it the test says so loudly, and fails when
//! `CI=true`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mdi_itch::pcap::{PcapReader, PcapWriter, udp_frame};
use mdi_itch::sim::{SOURCE, SimConfig, messages, packets};
use mdi_protocol::records::{FeedState, RecordKind, Trade};
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::view::RecordView;
use mdi_publisher::itch::feed::ItchFeed;
use mdi_publisher::itch::replay::replay_frames;
use mdi_publisher::pipeline::Rings;

mod common;
use common::{Netns, no_namespaces, stream_contents};

const GROUP: &str = "233.54.12.9:26490";
const REQUESTS: &str = "127.0.0.1:26491";
/// 2024-01-02T00:00:00Z.
const MIDNIGHT_NS: i64 = 1_704_153_600_000_000_000;

/// What must not depend on loss: the final books (level → shares, from the BookUpdate
/// deltas) and the trades (without the times mdpub stamps itself).
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    books: BTreeMap<(u32, bool, i64), i64>,
    trades: Vec<Trade>,
    resyncs: u64,
    lost: u64,
}

fn outcome(shm: &Path) -> Outcome {
    let mut out = Outcome::default();
    for (_, _, kind, body) in stream_contents(shm, "ticks") {
        if kind == 1 {
            continue;
        }
        let mut words = vec![0u64; body.len() / 8];
        zerocopy::IntoBytes::as_mut_bytes(&mut words[..]).copy_from_slice(&body);
        let body = zerocopy::IntoBytes::as_bytes(&words[..]);
        RecordView::open(RecordKind(kind), body, |view| match view {
            RecordView::Book(b) => {
                let b = b.to_record().unwrap();
                for (levels, bid) in [(&b.bids, true), (&b.asks, false)] {
                    for level in levels {
                        let key = (b.instrument_id, bid, level.price);
                        if level.qty == 0 {
                            out.books.remove(&key);
                        } else {
                            out.books.insert(key, level.qty);
                        }
                    }
                }
            }
            RecordView::Trade(t) => {
                let mut t = t.to_record().unwrap();
                (t.ts_receive_ns, t.ts_publish_ns) = (0, 0);
                out.trades.push(t);
            }
            RecordView::Status(s) => match s.state() {
                Ok(FeedState::ResyncStarted) => out.resyncs += 1,
                Ok(FeedState::Gap) => out.lost += 1,
                _ => {}
            },
            _ => {}
        })
        .unwrap();
    }
    out
}

/// The same feed, loss-free: its pcap replayed in process into rings in `shm`.
fn loss_free(config: &SimConfig, shm: &Path) -> Outcome {
    let messages = messages(config);
    let packets = packets(config, &messages);
    let mut pcap = PcapWriter::new(Vec::new()).unwrap();
    for (i, (_, packet)) in packets.iter().enumerate() {
        let frame = udp_frame(SOURCE, GROUP.parse().unwrap(), packet);
        pcap.write_frame(MIDNIGHT_NS + 50_000_000_000_000 + i as i64 * 50_000, &frame)
            .unwrap();
    }
    let bytes = pcap.finish().unwrap();
    let dir = ShmDir::new(shm);
    let options = RingOptions::default().capacity(16 << 20);
    let rings = Rings {
        ticks: RingWriter::create(&dir, "ticks", &options).unwrap(),
        klines: RingWriter::create(&dir, "klines", &options).unwrap(),
    };
    let mut feed = ItchFeed::new(
        rings,
        mdi_publisher::itch::feed::SessionClock::parse("2024-01-02"),
        || 0,
    );
    let mut frames = PcapReader::new(bytes.as_slice()).unwrap();
    replay_frames(&mut frames, None, &mut feed, Some).unwrap();
    drop(feed);
    outcome(shm)
}

/// Forges MoldUDP64 packets of the simulator's session (50 one-byte messages each,
/// cycling through every sequence of the run) for 2.5 s: to the feed's port on the
/// namespace's unicast address, and to every UDP port mdpub has bound (found with `ss`). Taken as
/// real, they would displace the real messages of those sequences (dropped as
/// duplicates) and the books would differ from the loss-free run's.
const FORGER: &str = r#"
import socket, struct, subprocess, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, ports, looked = 0, set(), 0.0
end = time.time() + 2.5
seq = 1
while time.time() < end:
    if time.time() - looked > 0.1:
        looked = time.time()
        out = subprocess.run(["ss", "-Huanp"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if '"mdpub"' in line:
                ports.add(int(line.split()[3].rsplit(":", 1)[1]))
    for _ in range(40):
        packet = b"MDISIM0001" + struct.pack(">QH", seq, 50) + b"".join(struct.pack(">H", 1) + b"X" for _ in range(50))
        for port in ports | {26490}:
            try:
                s.sendto(packet, ("127.0.0.1", port))
                sent += 1
            except OSError:
                pass
        seq = seq + 50 if seq < 40000 else 1
    time.sleep(0.001)
print(f"forged {sent} packets to mdpub ports {sorted(ports)}")
"#;

/// A child process killed if the test fails before waiting for it.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_gapped_live_itch_feed_is_repaired_by_re_request_into_the_books_of_a_loss_free_run() {
    let Some(netns) = Netns::loopback_multicast("itch") else {
        no_namespaces(
            "a_gapped_live_itch_feed_is_repaired_by_re_request_into_the_books_of_a_loss_free_run",
        );
        return;
    };
    // 5 % of the multicast is dropped as it arrives (the re-request answers are not)
    netns.drop_on_input(&["ip", "daddr", "233.54.12.9", "udp", "dport", "26490"], 5);
    // mdpub is another package's binary, built next to mdfeedsim by a workspace build
    let mdpub = Path::new(env!("CARGO_BIN_EXE_mdfeedsim")).with_file_name("mdpub");
    assert!(
        mdpub.exists(),
        "{} is missing: cargo build --workspace",
        mdpub.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let config = dir.path().join("itch.toml");
    std::fs::write(
        &config,
        format!(
            "shm_dir = {:?}\n[itch]\ngroup = \"{GROUP}\"\ninterface = \"127.0.0.1\"\n\
             request_server = \"{REQUESTS}\"\ndate = \"2024-01-02\"\nrequest_timeout_ms = 20\nstart_seq = 1\n\
             stop_at_end = true\n[streams]\nticks_capacity = 16777216\nklines_capacity = 1048576\n",
            live.display().to_string()
        ),
    )
    .unwrap();
    let mut receiver = Reaped(Some(
        netns
            .command(&mdpub)
            .args(["run", "--config"])
            .arg(&config)
            .args(["--duration", "60"])
            .env_remove("MDI_SHM_DIR")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // the rings exist once mdpub is about to join the group
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live.join("ticks.ring").exists() {
        assert!(Instant::now() < deadline, "mdpub did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // a forger in the namespace: MoldUDP64 packets of the real session, claiming the
    // first sequences, sent unicast to the feed's port and to every UDP port mdpub has
    // (its re-request socket among them) from a port that is not the request server's
    let mut forger = Reaped(Some(
        netns
            .command("python3")
            .args(["-c", FORGER])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // the forger has been at it for a while when the venue starts
    std::thread::sleep(Duration::from_millis(600));
    let sim = SimConfig {
        messages: 40_000,
        symbols: 8,
        seed: 17,
        ..SimConfig::default()
    };
    let venue = netns
        .command(env!("CARGO_BIN_EXE_mdfeedsim"))
        .args(["--send", "--group", GROUP, "--iface", "127.0.0.1"])
        .args(["--serve", REQUESTS, "--rate", "20000", "--drop-every", "40"])
        .args(["--messages", "40000", "--symbols", "8", "--seed", "17"])
        .args(["--linger-ms", "1500"])
        .output()
        .unwrap();
    let venue_log = String::from_utf8_lossy(&venue.stderr).into_owned();
    assert!(venue.status.success(), "mdfeedsim failed: {venue_log}");
    let forged = forger.0.take().unwrap().wait_with_output().unwrap();
    let forged = String::from_utf8_lossy(&forged.stdout).into_owned();
    assert!(
        forged.contains("to mdpub ports"),
        "the forger found no port of mdpub: {forged}"
    );
    let received = receiver.0.take().unwrap().wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&received.stderr).into_owned();
    assert!(received.status.success(), "mdpub failed: {log}");
    eprintln!("{venue_log}{log}");
    // loss happened on both paths, and was asked for again
    assert!(
        !netns.ruleset().contains("packets 0 "),
        "nftables dropped nothing: {}",
        netns.ruleset()
    );
    assert!(
        !venue_log.contains(" 0 re-requests answered"),
        "{venue_log}"
    );
    assert!(log.contains(" 0 messages lost"), "{log}");
    // the forged answers reached the re-request socket and were refused (the count is
    // only taken while a gap is open, so some of them)
    assert!(
        !log.contains(" 0 datagrams not from the request server refused"),
        "{forged}{log}"
    );

    let got = outcome(&live);
    let want = loss_free(&sim, &dir.path().join("reference"));
    assert!(got.resyncs > 0, "no gap was seen");
    assert_eq!((got.lost, want.lost), (0, 0));
    assert!(want.trades.len() > 1_000 && want.books.len() > 50);
    assert_eq!(got.trades.len(), want.trades.len());
    assert!(got.trades == want.trades, "the trades differ");
    assert_eq!(got.books, want.books);
}
