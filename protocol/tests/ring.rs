//! Ring log behaviour through the public API, in one process.

#![allow(clippy::disallowed_methods)] // tests may use clocks and threads

use mdi_protocol::records::{RecordKind, Trade, decode};
use mdi_protocol::ring::{
    FileProblem, ReadEvent, ReaderOpenError, RingFileError, RingOptions, RingReader, RingWriter,
    Seq, ShmDir, StartAt, WaitStrategy, WriterCreateError, WriterState,
};
use mdi_protocol::time::WallNs;
use std::time::Duration;

const APP: RecordKind = RecordKind::APPLICATION_FIRST;

fn shm() -> (tempfile::TempDir, ShmDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = ShmDir::new(dir.path());
    (dir, shm)
}

fn small() -> RingOptions {
    RingOptions::default().capacity(4096)
}

/// Body that encodes its own sequence-independent identity: `id` repeated.
fn body(id: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Debug, Default)]
struct Seen {
    records: Vec<(u64, Vec<u8>)>,
    lost: u64,
    lost_ranges: Vec<(u64, u64)>,
    epochs: Vec<u64>,
}

fn drain(reader: &mut RingReader, seen: &mut Seen) {
    loop {
        let n = reader
            .poll(64, |event| match event {
                ReadEvent::Record(r) => seen.records.push((r.seq.get(), r.body.to_vec())),
                ReadEvent::Lost { from_seq, to_seq } => {
                    seen.lost += to_seq - from_seq;
                    seen.lost_ranges.push((from_seq.get(), to_seq.get()));
                }
                ReadEvent::EpochStarted { epoch, .. } => seen.epochs.push(epoch),
            })
            .expect("poll");
        if n == 0 && reader.caught_up() {
            break;
        }
    }
}

#[test]
fn records_arrive_in_order_across_the_wrap() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    let mut seen = Seen::default();
    // ~40 bytes per record, 4 KiB ring: wraps many times; the reader keeps up.
    for i in 0..1000u64 {
        let len = (i % 37) as usize;
        writer.append(APP, &body(i, len)).unwrap();
        if i % 10 == 9 {
            drain(&mut reader, &mut seen);
        }
    }
    drain(&mut reader, &mut seen);
    assert_eq!(seen.lost, 0);
    assert_eq!(seen.epochs, vec![1]);
    assert_eq!(seen.records.len(), 1000);
    for (i, (seq, b)) in seen.records.iter().enumerate() {
        let i = i as u64;
        assert_eq!(*seq, i + 1, "sequence 0 is the epoch record");
        assert_eq!(&b[..(i % 37) as usize], &body(i, (i % 37) as usize)[..]);
    }
}

#[test]
fn lapped_reader_reports_exact_loss_and_resynchronises() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    let total = 2000u64;
    for i in 0..total {
        writer.append(APP, &body(i, 24)).unwrap();
    }
    let mut seen = Seen::default();
    drain(&mut reader, &mut seen);
    assert!(seen.lost > 0, "a 4 KiB ring cannot hold 2000 records");
    // Epoch record (seq 0) + records 1..=total: delivered + lost covers every sequence once.
    let delivered = seen.records.len() as u64 + seen.epochs.len() as u64;
    assert_eq!(delivered + seen.lost, total + 1);
    let first_after_loss = seen.records.first().unwrap().0;
    assert_eq!(seen.lost_ranges, vec![(0, first_after_loss)]);
    // Contiguous after the resync.
    for pair in seen.records.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1);
    }
}

#[test]
fn start_positions() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    for i in 0..20u64 {
        writer.append(APP, &body(i, 8)).unwrap();
    }
    // Latest: only what comes next.
    let mut latest = RingReader::open(&shm, "t", StartAt::Latest).unwrap();
    assert_eq!(latest.next_seq(), Some(Seq(21)));
    // Sequence: exactly from there.
    let mut from_seq = RingReader::open(&shm, "t", StartAt::Sequence(Seq(7))).unwrap();
    writer.append(APP, &body(99, 8)).unwrap();
    let mut seen = Seen::default();
    drain(&mut latest, &mut seen);
    assert_eq!(
        seen.records.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![21]
    );
    let mut seen = Seen::default();
    drain(&mut from_seq, &mut seen);
    assert_eq!(seen.records.first().unwrap().0, 7);
    assert_eq!(seen.records.len(), 15);
    assert_eq!(seen.lost, 0);
    // A future sequence waits for it.
    let mut future = RingReader::open(&shm, "t", StartAt::Sequence(Seq(23))).unwrap();
    writer.append(APP, &body(100, 8)).unwrap();
    writer.append(APP, &body(101, 8)).unwrap();
    let mut seen = Seen::default();
    drain(&mut future, &mut seen);
    assert_eq!(
        seen.records.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![23]
    );
}

#[test]
fn seeking_an_overwritten_sequence_is_an_error_with_the_earliest() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    for i in 0..1000u64 {
        writer.append(APP, &body(i, 40)).unwrap();
    }
    match RingReader::open(&shm, "t", StartAt::Sequence(Seq(3))) {
        Err(ReaderOpenError::SequenceOverwritten {
            requested,
            earliest,
            ..
        }) => {
            assert_eq!(requested, 3);
            assert!(earliest > 900 && earliest < 1000, "earliest {earliest}");
            let mut reader = RingReader::open(&shm, "t", StartAt::Sequence(Seq(earliest))).unwrap();
            let mut seen = Seen::default();
            drain(&mut reader, &mut seen);
            assert_eq!(seen.records.first().unwrap().0, earliest);
            assert_eq!(seen.records.last().unwrap().0, 1000);
            // Earliest agrees with the sequence lookup.
            let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
            let mut seen = Seen::default();
            drain(&mut reader, &mut seen);
            assert_eq!(seen.records.first().unwrap().0, earliest);
        }
        other => panic!("expected SequenceOverwritten, got {other:?}"),
    }
}

#[test]
fn seek_in_a_large_ring_uses_the_index() {
    let (_d, shm) = shm();
    let mut writer =
        RingWriter::create(&shm, "big", &RingOptions::default().capacity(1 << 24)).unwrap();
    for i in 0..200_000u64 {
        writer.append(APP, &body(i, 48)).unwrap();
    }
    for target in [1u64, 12_345, 150_000, 199_999, 200_000] {
        let mut reader = RingReader::open(&shm, "big", StartAt::Sequence(Seq(target))).unwrap();
        let mut first = None;
        reader
            .poll(1, |e| {
                if let ReadEvent::Record(r) = e {
                    first = Some((r.seq.get(), r.body[..8].to_vec()));
                }
            })
            .unwrap();
        let (seq, id) = first.unwrap();
        assert_eq!(seq, target);
        assert_eq!(id, (target - 1).to_le_bytes().to_vec());
    }
}

#[test]
fn second_writer_is_refused_while_the_first_lives() {
    let (_d, shm) = shm();
    let first = RingWriter::create(&shm, "t", &small()).unwrap();
    match RingWriter::create(&shm, "t", &small()) {
        Err(WriterCreateError::WriterAlive { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => panic!("expected WriterAlive, got {other:?}"),
    }
    let message = RingWriter::create(&shm, "t", &small())
        .unwrap_err()
        .to_string();
    assert!(message.contains("another writer"), "{message}");
    drop(first);
    assert!(RingWriter::create(&shm, "t", &small()).is_ok());
}

#[test]
fn restarted_writer_starts_a_new_epoch_and_sequences_continue() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    assert_eq!(writer.epoch(), 1);
    writer.append(APP, &body(1, 8)).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    drop(writer);
    assert_eq!(reader.writer_status(0).state, WriterState::Closed);
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    assert_eq!(writer.epoch(), 2);
    assert_eq!(reader.writer_status(0).state, WriterState::Alive);
    writer.append(APP, &body(2, 8)).unwrap();
    let mut seen = Seen::default();
    drain(&mut reader, &mut seen);
    assert_eq!(seen.epochs, vec![1, 2]);
    assert_eq!(
        seen.records.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(seen.lost, 0);
}

#[test]
fn incompatible_capacity_is_refused_or_replaced() {
    let (_d, shm) = shm();
    drop(RingWriter::create(&shm, "t", &small()).unwrap());
    let err = RingWriter::create(&shm, "t", &small().capacity(8192)).unwrap_err();
    assert!(
        matches!(
            err,
            WriterCreateError::Incompatible {
                what: "capacity",
                found: 4096,
                wanted: 8192,
                ..
            }
        ),
        "{err}"
    );
    let old_reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    let writer = RingWriter::create(
        &shm,
        "t",
        &small().capacity(8192).replace_incompatible(true),
    )
    .unwrap();
    assert_eq!(writer.capacity(), 8192);
    assert_eq!(writer.epoch(), 1);
    assert_eq!(old_reader.writer_status(0).state, WriterState::Superseded);
}

#[test]
fn a_fresh_ring_supersedes_the_old_one_instead_of_continuing_it() {
    let (_d, shm) = shm();
    let mut old = RingWriter::create(&shm, "t", &small()).unwrap();
    old.append(APP, b"old").unwrap();
    drop(old);
    let old_reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    // a live writer is never displaced, fresh or not
    let writer = RingWriter::create(&shm, "t", &small().fresh(true)).unwrap();
    assert!(matches!(
        RingWriter::create(&shm, "t", &small().fresh(true)),
        Err(WriterCreateError::WriterAlive { .. })
    ));
    assert_eq!(writer.epoch(), 1);
    assert_eq!(old_reader.writer_status(0).state, WriterState::Superseded);
    // the new ring holds its epoch start only, not the old record
    let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    let mut events = Vec::new();
    reader
        .poll(8, |e| {
            events.push(match e {
                ReadEvent::EpochStarted {
                    epoch,
                    previous_epoch,
                    ..
                } => (epoch, previous_epoch),
                other => panic!("unexpected {other:?}"),
            });
        })
        .unwrap();
    assert_eq!(events, [(1, 0)]);
}

#[test]
fn typed_records_roundtrip_through_the_ring() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    let trade = Trade {
        instrument_id: 3,
        price: 2_712_345,
        qty: 1,
        trade_id: 77,
        ..Trade::default()
    };
    writer.append_record(&trade).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    let mut got = None;
    reader
        .poll(8, |e| {
            if let ReadEvent::Record(r) = e {
                assert_eq!(r.kind, RecordKind::TRADE);
                got = Some(decode::<Trade>(r.body).unwrap());
            }
        })
        .unwrap();
    assert_eq!(got, Some(trade));
}

#[test]
fn oversized_records_are_refused() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    let err = writer.append(APP, &vec![0u8; 2000]).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert!(writer.append(RecordKind::PADDING, b"x").is_err());
    // The largest allowed one goes through and is read back whole.
    let max = (writer.max_record_len() - 16) as usize;
    writer.append(APP, &body(5, max)).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    let mut seen = Seen::default();
    drain(&mut reader, &mut seen);
    assert_eq!(seen.records[0].1, body(5, max));
}

#[test]
fn large_records_beyond_the_reader_buffer() {
    let (_d, shm) = shm();
    let mut writer =
        RingWriter::create(&shm, "t", &RingOptions::default().capacity(1 << 22)).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Earliest).unwrap();
    for i in 0..10 {
        writer.append(APP, &body(i, 200_000)).unwrap();
    }
    let mut seen = Seen::default();
    drain(&mut reader, &mut seen);
    assert_eq!(seen.records.len(), 10);
    assert!(
        seen.records
            .iter()
            .enumerate()
            .all(|(i, r)| r.1 == body(i as u64, 200_000))
    );
}

#[test]
fn park_wakes_on_commit_and_times_out_when_idle() {
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Latest).unwrap();
    // Idle: returns after the timeout with nothing ready.
    let ready = reader
        .wait(WaitStrategy::Park {
            timeout: Duration::from_millis(20),
        })
        .unwrap();
    assert!(!ready);
    let handle = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        writer.append(APP, b"wake").unwrap();
        writer
    });
    // Bounded: the writer commits within 50 ms; allow generous time for a loaded machine.
    let mut ready = false;
    for _ in 0..100 {
        ready = reader
            .wait(WaitStrategy::Park {
                timeout: Duration::from_secs(1),
            })
            .unwrap();
        if ready {
            break;
        }
    }
    assert!(ready);
    let _writer = handle.join().unwrap();
    assert!(reader.wait(WaitStrategy::BusySpin).unwrap());
    assert!(reader.wait(WaitStrategy::Yield).unwrap());
}

fn write_file(shm: &ShmDir, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(shm.path()).unwrap();
    std::fs::write(shm.ring_path(name), bytes).unwrap();
}

fn open_problem(shm: &ShmDir, name: &str) -> (String, Option<FileProblem>) {
    let err = RingReader::open(shm, name, StartAt::Earliest).unwrap_err();
    let message = err.to_string();
    let problem = match err {
        ReaderOpenError::File(RingFileError::Invalid { problem, .. }) => Some(problem),
        _ => None,
    };
    (message, problem)
}

#[test]
fn foreign_corrupt_and_truncated_files_are_refused_clearly() {
    let (_d, shm) = shm();
    // A foreign file.
    write_file(&shm, "foreign", b"hello, I am not a ring");
    let (message, problem) = open_problem(&shm, "foreign");
    assert!(
        matches!(problem, Some(FileProblem::BadMagic { .. })),
        "{message}"
    );
    assert!(
        message.contains("foreign.ring") && message.contains("not an mdi ring log"),
        "{message}"
    );
    // A writer refuses to clobber it too.
    let err = RingWriter::create(&shm, "foreign", &small())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an mdi ring log"), "{err}");

    // A valid ring, then damaged in several ways.
    drop(RingWriter::create(&shm, "good", &small()).unwrap());
    let good = std::fs::read(shm.ring_path("good")).unwrap();

    let mut bad_version = good.clone();
    bad_version[8] = 99;
    write_file(&shm, "good", &bad_version);
    let (message, problem) = open_problem(&shm, "good");
    assert!(
        matches!(
            problem,
            Some(FileProblem::UnsupportedVersion {
                found: 99,
                supported: mdi_protocol::ring::RING_VERSION
            })
        ),
        "{message}"
    );

    let mut bad_capacity = good.clone();
    bad_capacity[16..24].copy_from_slice(&5000u64.to_le_bytes());
    write_file(&shm, "good", &bad_capacity);
    let (message, problem) = open_problem(&shm, "good");
    assert!(
        matches!(problem, Some(FileProblem::Inconsistent(_))),
        "{message}"
    );

    write_file(&shm, "good", &good[..good.len() - 100]);
    let (message, problem) = open_problem(&shm, "good");
    assert!(
        matches!(problem, Some(FileProblem::Truncated { .. })),
        "{message}"
    );
    assert!(message.contains("truncated"), "{message}");

    write_file(&shm, "good", &good[..100]);
    let (message, problem) = open_problem(&shm, "good");
    assert!(
        matches!(problem, Some(FileProblem::Truncated { .. })),
        "{message}"
    );

    // Renamed file: header names another stream.
    write_file(&shm, "other", &good);
    let (message, problem) = open_problem(&shm, "other");
    assert!(
        matches!(problem, Some(FileProblem::NameMismatch { .. })),
        "{message}"
    );

    // Missing ring: says where it looked.
    let message = RingReader::open(&shm, "absent", StartAt::Earliest)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("absent.ring") && message.contains("no such ring"),
        "{message}"
    );
    assert!(RingReader::open(&shm, "../etc", StartAt::Earliest).is_err());
}

#[test]
fn files_are_created_with_the_configured_modes() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, shm) = shm();
    drop(RingWriter::create(&shm, "t", &small()).unwrap());
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(shm.ring_path("t")), 0o640);
    assert_eq!(mode(shm.readers_path("t")), 0o660);
    drop(RingWriter::create(&shm, "u", &small().mode(0o600).readers_mode(0o600)).unwrap());
    assert_eq!(mode(shm.ring_path("u")), 0o600);
    assert_eq!(mode(shm.readers_path("u")), 0o600);
    assert_eq!(
        shm.streams().unwrap(),
        vec!["t".to_string(), "u".to_string()]
    );
}

#[test]
fn shm_dir_resolution_order() {
    let explicit = ShmDir::resolve(Some(std::path::Path::new("/x")));
    assert_eq!(explicit.path(), std::path::Path::new("/x"));
    // The environment is process-wide; only read it here.
    let resolved = ShmDir::resolve(None);
    match std::env::var_os("MDI_SHM_DIR") {
        Some(v) if !v.is_empty() => assert_eq!(resolved.path(), std::path::Path::new(&v)),
        _ => assert_eq!(resolved.path(), std::path::Path::new("/dev/shm/mdi")),
    }
}

#[test]
fn a_reader_that_died_parked_costs_a_bounded_number_of_wakeups() {
    use std::os::unix::fs::FileExt;
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    // A reader registered as a sleeper and was killed before it could unregister: the
    // count in the readers file (offset 128) stays at 1.
    let readers = std::fs::OpenOptions::new()
        .write(true)
        .open(shm.readers_path("t"))
        .unwrap();
    readers.write_all_at(&1u32.to_le_bytes(), 128).unwrap();
    assert_eq!(writer.parked_readers(), 1);
    for i in 0..100u64 {
        writer.append(APP, &body(i, 8)).unwrap();
    }
    assert_eq!(writer.parked_readers(), 0, "stale sleeper count reclaimed");
    // Live parked readers still work afterwards.
    let mut reader = RingReader::open(&shm, "t", StartAt::Latest).unwrap();
    assert!(
        !reader
            .wait(WaitStrategy::Park {
                timeout: Duration::from_millis(5)
            })
            .unwrap()
    );
    assert_eq!(
        writer.parked_readers(),
        0,
        "a reader unregisters after parking"
    );
}

#[test]
fn a_batch_publishes_each_record_at_once_and_wakes_parked_readers_once_at_its_end() {
    use std::os::unix::fs::FileExt;
    let (_d, shm) = shm();
    let mut writer = RingWriter::create(&shm, "t", &small()).unwrap();
    let mut reader = RingReader::open(&shm, "t", StartAt::Latest).unwrap();
    // A parked reader, as the readers file counts it (offset 128); wake-ups bump the
    // wake word (offset 256).
    let readers = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm.readers_path("t"))
        .unwrap();
    readers.write_all_at(&1u32.to_le_bytes(), 128).unwrap();
    let wakes = || {
        let mut word = [0u8; 4];
        readers.read_exact_at(&mut word, 256).unwrap();
        u32::from_le_bytes(word)
    };
    let before = wakes();
    let trade = |id: u64| Trade {
        trade_id: id,
        ..Trade::default()
    };
    let mut seen = Vec::new();
    {
        let mut batch = writer.batch();
        for id in 0..3 {
            batch.append_record(&trade(id)).unwrap();
            // published and committed already: a polling reader has it
            reader
                .poll(8, |event| {
                    if let ReadEvent::Record(r) = event {
                        seen.push(r.seq.get());
                    }
                })
                .unwrap();
            assert_eq!(seen.len() as u64, id + 1);
            assert_eq!(wakes(), before, "no wake-up before the batch ends");
        }
    }
    assert_eq!(wakes(), before + 1, "one wake-up for the whole batch");
    // An empty batch wakes nobody; single appends wake per record.
    drop(writer.batch());
    assert_eq!(wakes(), before + 1);
    writer.append_record(&trade(3)).unwrap();
    assert_eq!(wakes(), before + 2);
}

/// A start at a time, through a ring that has wrapped many times: for every time asked,
/// the first record delivered is the first retained one published at or after it (brute
/// force over what the ring holds), found by binary search rather than a read from the
/// ring's start; application records (no time) are read past. With a clock that steps
/// back now and then, no record published before the time is ever delivered, and the
/// start is never before the brute force's (the index keeps its times monotone; ring-log.md).
#[test]
fn a_start_at_a_time_is_the_first_record_published_at_or_after_it() {
    for steps_back in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let shm = ShmDir::new(dir.path());
        let mut writer =
            RingWriter::create(&shm, "timed", &RingOptions::default().capacity(64 << 10)).unwrap();
        let mut time = 1_000_000_i64;
        for n in 0..20_000u64 {
            time += if steps_back && n % 997 == 0 {
                -50_000
            } else {
                1_000 * (1 + (n % 3) as i64)
            };
            writer
                .append_record(&Trade {
                    trade_id: n,
                    ts_publish_ns: time,
                    ..Trade::default()
                })
                .unwrap();
            if n % 1_000 == 0 {
                writer
                    .append(RecordKind::APPLICATION_FIRST, b"no time here")
                    .unwrap();
            }
        }
        let retained = timed_trades(&shm, StartAt::Earliest, usize::MAX);
        assert!(
            retained.len() > 500 && retained[0].0 > 10_000,
            "the ring wrapped"
        );
        let first_time = retained.iter().map(|r| r.1).min().unwrap();
        let last_time = retained.iter().map(|r| r.1).max().unwrap();
        for k in 0..=400 {
            let at = first_time - 10_000 + (last_time - first_time + 20_000) * k / 400;
            let got = timed_trades(&shm, StartAt::Time(WallNs(at)), 1)
                .first()
                .copied();
            // found through the index: the reader starts right before what it delivers,
            // not at the earliest record (a 64 KiB ring indexes every 64 bytes)
            let mut reader = RingReader::open(&shm, "timed", StartAt::Time(WallNs(at))).unwrap();
            let opened_at = reader.next_seq().unwrap();
            let mut first_seq = None;
            reader
                .poll(64, |e| {
                    if let ReadEvent::Record(r) = e {
                        first_seq.get_or_insert(r.seq.get());
                    }
                })
                .unwrap();
            if let Some(first_seq) = first_seq {
                assert!(
                    first_seq - opened_at.get() <= 2,
                    "{at}: opened at {opened_at}, first record {first_seq}"
                );
            }
            let expected = retained.iter().position(|r| r.1 >= at);
            match (got, expected) {
                (Some(got), Some(i)) if !steps_back => {
                    assert_eq!(got, retained[i], "start at {at}")
                }
                (Some(got), Some(i)) => {
                    assert!(got.1 >= at, "{got:?} was published before {at}");
                    let j = retained.iter().position(|&r| r == got).unwrap();
                    assert!(
                        j >= i,
                        "{at}: {got:?} delivered, {:?} came first",
                        retained[i]
                    );
                }
                (None, None) => {}
                (got, expected) => panic!("{at}: got {got:?}, expected index {expected:?}"),
            }
        }
    }
}

/// Up to `max` trades (id, publish time) read from `start`, asserting that nothing else
/// (application records) is delivered after a time start.
fn timed_trades(shm: &ShmDir, start: StartAt, max: usize) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    let mut reader = RingReader::open(shm, "timed", start).unwrap();
    while out.len() < max && !reader.caught_up() {
        reader
            .poll(4096, |e| {
                if let ReadEvent::Record(r) = e {
                    if r.kind == RecordKind::TRADE {
                        let t: Trade = decode(r.body).unwrap();
                        out.push((t.trade_id, t.ts_publish_ns));
                    } else {
                        assert!(
                            matches!(start, StartAt::Earliest) || !out.is_empty(),
                            "an untimed record before the first at the time"
                        );
                    }
                }
            })
            .unwrap();
    }
    out
}

/// A ring name that is a symbolic link (to a ring, or anywhere) is refused by readers
/// and writers alike, with a message that says so; the link's target is left untouched.
#[test]
fn ring_files_behind_symbolic_links_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut real = RingWriter::create(&shm, "real", &small()).unwrap();
    real.append(RecordKind::APPLICATION_FIRST, b"kept").unwrap();
    drop(real);
    let before = std::fs::read(shm.ring_path("real")).unwrap();
    std::os::unix::fs::symlink(shm.ring_path("real"), shm.ring_path("link")).unwrap();
    let err = RingReader::open(&shm, "link", StartAt::Earliest)
        .unwrap_err()
        .to_string();
    assert!(err.contains("symbolic link"), "{err}");
    let err = RingWriter::create(&shm, "link", &small())
        .unwrap_err()
        .to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(shm.ring_path("real")).unwrap(), before);
}
