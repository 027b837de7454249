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
