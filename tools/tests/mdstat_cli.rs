//! `mdstat` as operators run it: streams, writers, positions, registered readers with
//! their lag; odd shm dirs and bad arguments.

use std::process::{Command, Output};

use mdi_protocol::records::Trade;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_subscriber::Subscriber;

fn mdstat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdstat"))
        .args(args)
        .env_remove("MDI_SHM_DIR")
        .output()
        .expect("run mdstat")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn streams_and_a_lagging_registered_reader_as_json_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    let mut subscriber = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .from_earliest()
        .register("slow-strategy")
        .open()
        .unwrap();
    for n in 0..10 {
        ring.append_record(&Trade {
            trade_id: n,
            ..Trade::default()
        })
        .unwrap();
    }
    subscriber.poll(4, |_| {}).unwrap(); // reads only part
    for n in 10..20 {
        ring.append_record(&Trade {
            trade_id: n,
            ..Trade::default()
        })
        .unwrap();
    }
    let path = dir.path().to_str().unwrap();
    let output = mdstat(&["--json", "--interval-ms", "20", "--shm-dir", path]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let s = &doc["streams"][0];
    assert_eq!(s["name"], "ticks");
    assert_eq!(s["writer"]["state"], "alive");
    assert_eq!(s["writer"]["pid"], std::process::id());
    assert_eq!(s["writer"]["epoch"], 1);
    assert_eq!(s["capacity"], 1 << 20);
    assert_eq!(s["commit_position"], ring.position().get());
    assert_eq!(s["next_seq"], ring.next_seq().get());
    let r = &s["readers"][0];
    assert_eq!(
        (r["name"].as_str(), r["alive"].as_bool()),
        (Some("slow-strategy"), Some(true))
    );
    // 21 records (the epoch start and 20 trades), 4 of them read: 17 behind
    assert_eq!(r["lag_records"], 17);
    assert!(r["lag_bytes"].as_u64().unwrap() > 0);
    let output = mdstat(&["--interval-ms", "20", "--shm-dir", path]);
    let table = text(&output.stdout);
    assert!(
        table.contains("ticks") && table.contains("alive (pid"),
        "{table}"
    );
    assert!(table.contains("reader slow-strategy"), "{table}");
    // the writer closes: shown closed
    drop(ring);
    let output = mdstat(&["--json", "--interval-ms", "1", "--shm-dir", path]);
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["streams"][0]["writer"]["state"], "closed");
}

#[test]
fn odd_shm_dirs_and_bad_arguments() {
    let output = mdstat(&["--shm-dir", "/nonexistent/mdi"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no shm directory /nonexistent/mdi"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let output = mdstat(&["--shm-dir", path, "--interval-ms", "1"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("no streams in"),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(dir.path().join("junk.ring"), vec![3u8; 8192]).unwrap();
    let output = mdstat(&["--json", "--shm-dir", path, "--interval-ms", "1"]);
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let error = doc["streams"][0]["error"].as_str().unwrap();
    assert!(error.contains("junk.ring"), "{error}");
    assert!(
        text(&output.stderr).contains("junk"),
        "{}",
        text(&output.stderr)
    );
    let output = mdstat(&["--interval-ms", "soon"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("soon"));
}

/// A live feed's counters (late trades, corrections, lag per connection) from its status
/// file next to the ring: in the JSON and in the table (issue 20).
#[test]
fn a_feeds_late_trades_and_lag_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let _ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    let lines: Vec<(String, String)> = [
        ("frames", "1200"),
        ("trades", "1000"),
        ("late_trades", "7"),
        ("late_unplaced", "1"),
        ("kline_corrections", "9"),
        (
            "connection",
            "wss://stream.binance.com:9443/stream?streams=btcusdt@trade lag_ms=2500 max_lag_ms=4100 lagging=1",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    mdi_transport::status::write(dir.path(), "ticks", "feed", &lines, 1);
    let path = dir.path().to_str().unwrap();
    let output = mdstat(&["--json", "--interval-ms", "1", "--shm-dir", path]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let feed = &doc["streams"][0]["feed"];
    assert_eq!(
        (
            &feed["late_trades"],
            &feed["late_unplaced"],
            &feed["kline_corrections"]
        ),
        (
            &serde_json::json!(7),
            &serde_json::json!(1),
            &serde_json::json!(9)
        )
    );
    assert_eq!(feed["alive"], true, "this process wrote it");
    let connection = &feed["connections"][0];
    assert_eq!(connection["lag_ms"], 2500);
    assert_eq!(connection["max_lag_ms"], 4100);
    let output = mdstat(&["--interval-ms", "1", "--shm-dir", path]);
    let table = text(&output.stdout);
    assert!(
        table.contains("7 late trades (1 in no candle), 9 candles corrected"),
        "{table}"
    );
    assert!(
        table.contains("lag 2500 ms (max 4100 ms), LAGGING"),
        "{table}"
    );
}

/// Not a test on its own: run by `health_check_exit_codes` as a child process that
/// writes a ring and then waits to be killed (`MDSTAT_TEST_WRITER=<shm dir>`).
#[test]
fn writer_process_for_the_health_check() {
    let Ok(dir) = std::env::var("MDSTAT_TEST_WRITER") else {
        return;
    };
    let shm = ShmDir::new(&dir);
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    ring.append_record(&Trade::default()).unwrap();
    println!("writing");
    for _ in 0..600 {
        ring.heartbeat(mdi_protocol::time::WallNs(mdi_transport::wall_clock_ns()));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `mdstat --check` as a health probe (issue 24): 0 while the writer lives, 2 after
/// `kill -9` of it, 5 for a reader lagging past `--max-lag`, 3 for a corrupt stream or
/// none; one line per problem.
#[test]
fn health_check_exit_codes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let mut writer = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process_for_the_health_check",
            "--nocapture",
        ])
        .env("MDSTAT_TEST_WRITER", path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(writer.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().contains("writing")));
    let healthy = mdstat(&["--check", "--shm-dir", path]);
    assert_eq!(healthy.status.code(), Some(0), "{}", text(&healthy.stdout));
    assert!(text(&healthy.stdout).contains("healthy: 1 streams"));
    // a reader registered at the start lags one record: over a limit of 0
    let _reader = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .from_earliest()
        .register("slow")
        .open()
        .unwrap();
    let lagging = mdstat(&["--check", "--shm-dir", path, "--max-lag", "0"]);
    assert_eq!(lagging.status.code(), Some(5), "{}", text(&lagging.stdout));
    assert!(text(&lagging.stdout).contains("reader slow"));
    assert_eq!(
        mdstat(&["--check", "--shm-dir", path, "--max-lag", "10"])
            .status
            .code(),
        Some(0)
    );
    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    let dead = mdstat(&["--check", "--shm-dir", path]);
    assert_eq!(dead.status.code(), Some(2), "{}", text(&dead.stdout));
    assert!(
        text(&dead.stdout).contains("ticks: writer dead"),
        "{}",
        text(&dead.stdout)
    );
    std::fs::write(dir.path().join("junk.ring"), vec![3u8; 8192]).unwrap();
    let both = mdstat(&["--check", "--shm-dir", path]);
    assert_eq!(both.status.code(), Some(2), "the most serious first");
    assert!(text(&both.stdout).contains("junk: unreadable"));
    let empty = tempfile::tempdir().unwrap();
    let none = mdstat(&["--check", "--shm-dir", empty.path().to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(3));
    // bad arguments are mdstat's own failure (1), never a health code
    assert_eq!(
        mdstat(&["--check", "--max-lag", "lots"]).status.code(),
        Some(1)
    );
}
