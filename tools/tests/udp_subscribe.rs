//! Reading a remote publisher over reliable UDP in-process: `mdtail --udp` and
//! `Subscriber::builder().udp(..)`, against a ring served on loopback with 5 % of the
//! datagrams dropped by the sender's loss generator.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdi_protocol::records::{InstrumentDefinition, Trade};
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::udp::Channel;
use mdi_subscriber::{Event, Record, Subscriber};
use mdi_transport::sender::{ServeUntil, UdpSender, UdpSenderOptions, serve};

/// The tests that look at this process's private replica directories in /dev/shm run
/// one at a time (under `cargo test` they share the process, and so the pid in the
/// directory names).
static PRIVATE_DIRS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A ring of 1000 trades served on a fresh loopback port until dropped.
struct Publisher {
    dir: tempfile::TempDir,
    uri: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shm = ShmDir::new(dir.path());
        let mut ring =
            RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
        ring.append_record(&InstrumentDefinition {
            instrument_id: 1,
            symbol: "BTCUSDT".into(),
            ..InstrumentDefinition::default()
        })
        .unwrap();
        for n in 0..1_000 {
            ring.append_record(&Trade {
                instrument_id: 1,
                trade_id: n,
                price: 100 + n as i64,
                ..Trade::default()
            })
            .unwrap();
        }
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let uri = format!("udp://127.0.0.1:{port}");
        let mut sender = UdpSender::new(
            Channel::parse(&uri).unwrap(),
            &shm,
            &["ticks".to_owned()],
            &UdpSenderOptions {
                linger: Duration::from_millis(100),
                debug_drop_rate: 0.05,
                debug_seed: 9,
            },
        )
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let _ring = ring; // the writer stays alive while serving
                serve(
                    std::slice::from_mut(&mut sender),
                    &stop,
                    ServeUntil {
                        duration: Some(Duration::from_secs(30)),
                        writers_exit: false,
                    },
                )
                .unwrap();
            })
        };
        Self {
            dir,
            uri,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn mdtail_reads_a_remote_stream_over_udp() {
    let publisher = Publisher::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mdtail"))
        .args([
            "ticks",
            "--udp",
            &publisher.uri,
            "--from",
            "earliest",
            "--count",
            "1000",
        ])
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1000);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| l["trade_id"] == i as u64 && l["symbol"] == "BTCUSDT")
    );
}

#[test]
fn a_subscriber_reads_a_remote_stream_over_udp_and_cleans_up() {
    let _alone = PRIVATE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    let publisher = Publisher::start();
    let mut subscriber = Subscriber::builder()
        .udp(Channel::parse(&publisher.uri).unwrap())
        .stream("ticks")
        .from_earliest()
        .open()
        .unwrap();
    let mut ids = Vec::new();
    while ids.len() < 1000 {
        match subscriber.next(Duration::from_secs(10)).unwrap() {
            Some(Event::Record {
                record: Record::Trade(t),
                symbol,
                ..
            }) => {
                assert_eq!(symbol, Some("BTCUSDT"));
                ids.push(t.trade_id);
            }
            Some(Event::Lost { count, .. }) => panic!("{count} lost: the NAKs should repair"),
            Some(_) => {}
            None => panic!("stalled after {} trades", ids.len()),
        }
    }
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    let dirs = || {
        std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("mdi-udp-{}-", std::process::id()))
            })
            .count()
    };
    assert!(dirs() >= 1);
    drop(subscriber);
    assert_eq!(dirs(), 0, "the private replica directory is removed");
}

#[test]
fn mdstat_shows_the_udp_counters_of_both_ends() {
    let _alone = PRIVATE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    let publisher = Publisher::start();
    let mut subscriber = Subscriber::builder()
        .udp(Channel::parse(&publisher.uri).unwrap())
        .stream("ticks")
        .from_earliest()
        .open()
        .unwrap();
    // read everything, then give both ends time to write their counters (once a second)
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Some(Event::Record { .. }) = subscriber.next(Duration::from_millis(50)).unwrap() {
            read += 1;
        }
    }
    assert!(read >= 1000, "{read}");
    let mdstat = |dir: &std::path::Path| -> serde_json::Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mdstat"))
            .args(["--json", "--interval-ms", "1", "--shm-dir"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let sent = mdstat(publisher.dir.path());
    let send = &sent["streams"][0]["udp"]["send"];
    assert_eq!(send["channel"], publisher.uri.as_str(), "{sent}");
    assert_eq!(
        (send["alive"].as_bool(), send["receivers"].as_u64()),
        (Some(true), Some(1)),
        "{sent}"
    );
    assert!(
        send["data_frames"].as_u64().unwrap() > 0 && send["naks"].as_u64().unwrap() > 0,
        "{sent}"
    );
    assert_eq!(send["receiver_list"][0]["lost"], 0);
    let replicas = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("mdi-udp-{}-", std::process::id()))
        })
        .unwrap()
        .path();
    let received = mdstat(&replicas);
    let recv = &received["streams"][0]["udp"]["recv"];
    // the epoch start, the definition and 1000 trades
    assert_eq!(recv["records"].as_u64(), Some(1002), "{received}");
    assert_eq!(recv["lost_records"], 0);
    drop(subscriber);
}
