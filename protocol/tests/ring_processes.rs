//! The ring across processes: a writer and several reader processes (one deliberately
//! slow), a writer killed with SIGKILL mid-stream, and file permissions.
//!
//! Child processes are this test binary re-run with `MDI_TEST_ROLE` set: the `child`
//! test then plays the role and reports on stdout lines starting with `MDI `.

#![allow(clippy::disallowed_methods)] // tests may use clocks and threads

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{
    ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt, WaitStrategy, WriterState,
};

const DATA: RecordKind = RecordKind::APPLICATION_FIRST;
const END: RecordKind = RecordKind(RecordKind::APPLICATION_FIRST.0 + 1);

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Record `i`: [i, checksum, filler...], 16 to 256 bytes, checksum over i and every filler word.
fn fill_record(i: u64, buf: &mut Vec<u8>) {
    let words = 2 + (splitmix(i) % 31) as usize;
    buf.clear();
    buf.extend_from_slice(&i.to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    let mut sum = splitmix(i);
    for k in 2..words as u64 {
        let w = splitmix(i ^ (k << 56));
        sum = sum.rotate_left(5) ^ w;
        buf.extend_from_slice(&w.to_le_bytes());
    }
    buf[8..16].copy_from_slice(&sum.to_le_bytes());
}

fn verify_record(body: &[u8]) -> Result<u64, String> {
    if body.len() < 16 || !body.len().is_multiple_of(8) {
        return Err(format!("bad length {}", body.len()));
    }
    let word = |k: usize| u64::from_le_bytes(body[k * 8..k * 8 + 8].try_into().unwrap());
    let i = word(0);
    let mut sum = splitmix(i);
    for k in 2..body.len() / 8 {
        sum = sum.rotate_left(5) ^ word(k);
    }
    if sum != word(1) {
        return Err(format!("checksum mismatch in record {i}"));
    }
    if body.len() != 4096 && body.len() / 8 != 2 + (splitmix(i) % 31) as usize {
        return Err(format!("record {i} has the wrong length"));
    }
    Ok(i)
}

/// A child process and its `MDI ` report lines.
struct ChildProc {
    child: Child,
    stdout: BufReader<ChildStdout>,
    seen: Vec<String>,
}

fn spawn_role(role: &str, dir: &Path) -> ChildProc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("MDI_TEST_ROLE", role)
        .env("MDI_TEST_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    ChildProc {
        child,
        stdout,
        seen: Vec::new(),
    }
}

/// The report in a line of child output (the harness may print before it on the line).
fn report(line: &str) -> Option<&str> {
    line.find("MDI ").map(|at| line[at + 4..].trim_end())
}

impl ChildProc {
    /// Reads report lines until one starts with `prefix`.
    fn wait_line(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "child exited before reporting {prefix:?}; saw {:?}",
                self.seen
            );
            if let Some(rest) = report(&line) {
                self.seen.push(rest.to_owned());
                if rest.starts_with(prefix) {
                    return rest.to_owned();
                }
            }
        }
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
fn child() {
    let Ok(role) = std::env::var("MDI_TEST_ROLE") else {
        return;
    };
    let dir = ShmDir::new(PathBuf::from(std::env::var("MDI_TEST_DIR").unwrap()));
    match role.as_str() {
        "reader" | "slow-reader" => run_reader(&dir, role == "slow-reader"),
        "endless-writer" => run_endless_writer(&dir),
        "perm-probe" => run_perm_probe(&dir),
        other => panic!("unknown role {other}"),
    }
}

fn run_reader(dir: &ShmDir, slow: bool) {
    let mut reader = RingReader::open(dir, "stress", StartAt::Earliest).unwrap();
    println!("MDI ready");
    let mut delivered = 0u64;
    let mut lost = 0u64;
    let mut next_seq = reader.next_seq().unwrap().get();
    let mut ended = false;
    let mut last_progress = Instant::now();
    let mut error = None;
    while !ended {
        let n = reader
            .poll(256, |event| match event {
                ReadEvent::Record(r) => {
                    if r.seq.get() != next_seq && error.is_none() {
                        error = Some(format!("seq {} expected {next_seq}", r.seq.get()));
                    }
                    next_seq = r.seq.get() + 1;
                    if r.kind == END {
                        ended = true;
                        return;
                    }
                    match verify_record(r.body) {
                        Ok(_) => delivered += 1,
                        Err(e) => error = error.take().or(Some(e)),
                    }
                }
                ReadEvent::Lost { from_seq, to_seq } => {
                    if from_seq != next_seq && error.is_none() {
                        error = Some(format!("loss from {from_seq} expected {next_seq}"));
                    }
                    lost += to_seq - from_seq;
                    next_seq = to_seq.get();
                }
                ReadEvent::EpochStarted { seq, .. } => next_seq = seq.get() + 1,
            })
            .unwrap();
        if n > 0 {
            last_progress = Instant::now();
            if slow {
                // A strategy that cannot keep up: 50 µs per batch.
                std::thread::sleep(Duration::from_micros(50));
            }
        } else {
            assert!(
                last_progress.elapsed() < Duration::from_secs(60),
                "no progress for 60 s"
            );
            reader.wait(WaitStrategy::Yield).unwrap();
        }
    }
    if let Some(e) = error {
        panic!("reader saw a bad record: {e}");
    }
    println!("MDI done delivered={delivered} lost={lost}");
}

#[test]
fn writer_and_three_reader_processes_account_for_every_record() {
    let records: u64 = std::env::var("MDI_STRESS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut writer =
        RingWriter::create(&shm, "stress", &RingOptions::default().capacity(8 << 20)).unwrap();
    let mut readers: Vec<ChildProc> = ["reader", "reader", "slow-reader"]
        .iter()
        .map(|role| spawn_role(role, dir.path()))
        .collect();
    for reader in &mut readers {
        reader.wait_line("ready");
    }
    let start = Instant::now();
    let mut buf = Vec::with_capacity(256);
    for i in 0..records {
        fill_record(i, &mut buf);
        writer.append(DATA, &buf).unwrap();
    }
    writer.append(END, b"end").unwrap();
    let write_secs = start.elapsed().as_secs_f64();
    let mut total_lost = Vec::new();
    for reader in &mut readers {
        let done = reader.wait_line("done");
        let delivered = field(&done, "delivered");
        let lost = field(&done, "lost");
        assert_eq!(
            delivered + lost,
            records,
            "delivered {delivered} + lost {lost} != written {records}"
        );
        total_lost.push(lost);
        assert!(reader.child.wait().unwrap().success());
    }
    eprintln!("wrote {records} records in {write_secs:.2} s; lost per reader {total_lost:?}");
    assert!(
        total_lost[2] > 0,
        "the slow reader should have been lapped (lost {total_lost:?})"
    );
}

fn run_endless_writer(dir: &ShmDir) {
    let mut writer =
        RingWriter::create(dir, "killme", &RingOptions::default().capacity(1 << 20)).unwrap();
    println!("MDI ready epoch={}", writer.epoch());
    // Prepared bodies, so that most of the time is spent inside append (between claim
    // and commit), where a SIGKILL leaves a torn record.
    let bodies: Vec<Vec<u8>> = (0..1024u64)
        .map(|i| {
            let mut buf = Vec::new();
            fill_record(i, &mut buf);
            buf.resize(4096, 0);
            let mut sum = splitmix(i);
            for k in 2..buf.len() / 8 {
                sum = sum.rotate_left(5)
                    ^ u64::from_le_bytes(buf[k * 8..k * 8 + 8].try_into().unwrap());
            }
            buf[8..16].copy_from_slice(&sum.to_le_bytes());
            buf
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0u64;
    // Killed by the parent long before the deadline.
    while Instant::now() < deadline {
        for _ in 0..1000 {
            writer.append(DATA, &bodies[(i % 1024) as usize]).unwrap();
            i += 1;
        }
        if i == 100_000 {
            println!("MDI written at-least={i}");
        }
    }
}

struct Tally {
    next_seq: u64,
    lost: u64,
    epochs: Vec<u64>,
}

/// Reads to the end, checking every record and sequence; returns the records delivered.
fn drain(reader: &mut RingReader, tally: &mut Tally) -> u64 {
    let mut delivered = 0;
    loop {
        let n = reader
            .poll(1024, |event| match event {
                ReadEvent::Record(r) => {
                    assert_eq!(r.seq.get(), tally.next_seq);
                    verify_record(r.body).unwrap();
                    tally.next_seq += 1;
                    delivered += 1;
                }
                ReadEvent::Lost { from_seq, to_seq } => {
                    assert_eq!(from_seq, tally.next_seq);
                    tally.lost += to_seq - from_seq;
                    tally.next_seq = to_seq.get();
                }
                ReadEvent::EpochStarted { epoch, seq, .. } => {
                    assert_eq!(seq, tally.next_seq);
                    tally.next_seq += 1;
                    tally.epochs.push(epoch);
                }
            })
            .unwrap();
        if n == 0 && reader.caught_up() {
            return delivered;
        }
    }
}

#[test]
fn sigkilled_writer_is_detected_and_taken_over_with_a_new_epoch() {
    // The kill lands at a different point of the append each time (mid-copy about half the
    // time: the writer spends most of its time copying 4 KiB records). The exact
    // torn-record and published-but-uncommitted cases are unit tests in ring::log.
    for _ in 0..3 {
        kill_and_take_over();
    }
}

fn kill_and_take_over() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut child = spawn_role("endless-writer", dir.path());
    child.wait_line("ready");
    let mut reader = RingReader::open(&shm, "killme", StartAt::Latest).unwrap();
    child.wait_line("written");
    assert_eq!(reader.writer_status(0).state, WriterState::Alive);
    // SIGKILL: no destructor runs, the record being copied may be torn.
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    let info = reader.info();
    eprintln!(
        "killed writer left commit={} next_seq={} claim={}",
        info.commit, info.next_seq, info.claim
    );
    assert_eq!(reader.writer_status(0).state, WriterState::Dead);
    assert!(!info.closed_cleanly);

    // The reader drains what was committed: every record intact, sequences contiguous
    // or reported lost (it may have been lapped while the writer ran flat out).
    let mut tally = Tally {
        next_seq: reader.next_seq().unwrap().get(),
        lost: 0,
        epochs: Vec::new(),
    };
    let before = drain(&mut reader, &mut tally);
    assert!(before > 0);
    // Everything the reader saw (published records, even one whose commit store the kill
    // prevented) is kept: the new writer continues after it.
    let last_committed = tally.next_seq;

    // A new writer takes over: new epoch, sequences continue after the last committed
    // record, the torn bytes are padded over and never delivered.
    let mut writer =
        RingWriter::create(&shm, "killme", &RingOptions::default().capacity(1 << 20)).unwrap();
    assert_eq!(writer.epoch(), 2);
    assert_eq!(
        writer.next_seq(),
        last_committed + 1,
        "epoch record takes the next sequence"
    );
    let mut buf = Vec::new();
    for i in 0..1000 {
        fill_record(i, &mut buf);
        writer.append(DATA, &buf).unwrap();
    }
    let after = drain(&mut reader, &mut tally);
    assert_eq!(after, 1000);
    assert_eq!(tally.epochs, vec![2]);
    assert_eq!(reader.writer_status(0).state, WriterState::Alive);
    eprintln!(
        "before kill: {before} delivered, {} lost to laps",
        tally.lost
    );
}

fn run_perm_probe(dir: &ShmDir) {
    let ring = dir.ring_path("perm");
    match RingReader::open(dir, "perm", StartAt::Earliest) {
        Ok(_) => println!("MDI open-read ok"),
        Err(e) => println!("MDI open-read err {e}"),
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ring)
    {
        Ok(_) => println!("MDI open-write ok"),
        Err(e) => println!("MDI open-write err {e}"),
    }
    match RingWriter::create(dir, "perm", &RingOptions::default().capacity(4096)) {
        Ok(_) => println!("MDI writer ok"),
        Err(e) => println!("MDI writer err {e}"),
    }
    println!("MDI end");
}

/// Root-only: run probes as user `nobody` (65534) to check the ring's modes.
#[test]
fn readers_in_the_group_map_read_only_and_others_cannot_read() {
    // SAFETY-free check of the effective uid through the file system: root owns new files.
    let probe = tempfile::tempdir().unwrap();
    let probe_file = probe.path().join("uid");
    std::fs::write(&probe_file, b"").unwrap();
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&probe_file).unwrap()) == 0;
    if !root {
        let message = "SKIPPED readers_in_the_group_map_read_only_and_others_cannot_read: needs root to run probes as another user";
        eprintln!("{message}");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{message} (required in CI)"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shm = ShmDir::new(dir.path());
    let _writer = RingWriter::create(&shm, "perm", &RingOptions::default().capacity(4096)).unwrap();
    let run_as = |gid: u32| -> Vec<String> {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env("MDI_TEST_ROLE", "perm-probe")
            .env("MDI_TEST_DIR", dir.path())
            .stdout(Stdio::piped())
            .uid(65534)
            .gid(gid);
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| report(l).map(str::to_owned))
            .collect()
    };
    // Not in the ring's group: cannot even read (mode 0640).
    let outsider = run_as(65534);
    assert!(
        outsider
            .iter()
            .any(|l| l.starts_with("open-read err") && l.contains("ermission denied")),
        "{outsider:?}"
    );
    // In the ring's group: reads, but cannot open the ring for writing or become its writer.
    std::os::unix::fs::chown(shm.ring_path("perm"), None, Some(65534)).unwrap();
    let member = run_as(65534);
    assert!(member.contains(&"open-read ok".to_string()), "{member:?}");
    assert!(
        member.iter().any(|l| l.starts_with("open-write err")),
        "{member:?}"
    );
    assert!(
        member.iter().any(|l| l.starts_with("writer err")),
        "{member:?}"
    );
}
