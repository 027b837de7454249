//! `mdbench archive`: the tick archive's write, read and seek speed.
//!
//! - write: a ring filled beforehand (random bodies) is recorded into segments
//!   (records/s, 64 B and 256 B bodies, fsync none and periodic; after a warm-up that
//!   is not reported), against the floor — the same bytes written in 64 KiB positioned
//!   writes to a file preallocated within the timing, as the recorder preallocates its
//!   segments — and (feature `rocksdb`) RocksDB keyed by sequence, in the same run;
//! - read: the archive read back from its start (records/s);
//! - seek: a reader moved to a random time in a synthetic archive (100 M records,
//!   `--quick` 5 M; deleted afterwards), p50/p99 over 100 000 seeks after 10 000 that
//!   warm the cache (the segments synced first: clean pages, none being written back);
//! - bytes on disk per record.
//!
//! Segments go to a directory on disk (`--dir`, default the system's temp directory):
//! without fsync that is the page cache, as a recorder without fsync writes.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use mdi_archive::{
    ArchiveReader, ArchiveRecord, ArchiveStart, Fsync, Recorder, RecorderOptions, SegmentHeader,
    SegmentWriter,
};
use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};

use crate::harness::{Latency, ResultLine, msgs_per_s, nanos};

/// What to run.
#[derive(Debug)]
pub struct ArchiveBench {
    pub quick: bool,
    pub dir: Option<std::path::PathBuf>,
    /// Only these parts (`write`, `seek`, `export`); empty: all.
    pub only: Vec<String>,
}

pub fn run(bench: &ArchiveBench) -> Result<()> {
    let base = match &bench.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir_in(std::env::temp_dir()),
    }
    .context("a directory for the segments")?;
    let part = |name: &str| bench.only.is_empty() || bench.only.iter().any(|o| o == name);
    let records: u64 = if bench.quick { 1_000_000 } else { 5_000_000 };
    if part("write") {
        // a warm-up, not reported: the first run of a process was up to a third slower
        // (the filesystem's first extents, the allocator's first pages)
        record(base.path(), 64, records / 4, Fsync::None, true, false)?;
        for size in [64usize, 256] {
            for fsync in [Fsync::None, Fsync::Periodic(100)] {
                write_and_read(base.path(), size, records, fsync)?;
            }
        }
    }
    if part("seek") {
        seek(
            base.path(),
            if bench.quick { 5_000_000 } else { 100_000_000 },
        )?;
    }
    if part("export") {
        export(
            base.path(),
            if bench.quick { 1_000_000 } else { 10_000_000 },
        )?;
    }
    Ok(())
}

fn fsync_name(fsync: Fsync) -> String {
    match fsync {
        Fsync::None => "none".into(),
        Fsync::Batch => "batch".into(),
        Fsync::Periodic(ms) => format!("periodic-{ms}ms"),
    }
}

/// A ring holding `records` records of `size`-byte bodies (application records: the
/// archive keeps any kind), with publish times.
fn filled_ring(shm: &ShmDir, size: usize, records: u64) -> Result<RingWriter> {
    let bytes = records * (size as u64 + 32);
    let capacity = bytes.next_power_of_two().max(1 << 20);
    let mut w = RingWriter::create(
        shm,
        "bench",
        &RingOptions::default().capacity(capacity).prefault(true),
    )?;
    // bodies of random bytes: no store compresses them away (RocksDB would turn zeros
    // into nothing, which market data is not)
    let mut body = vec![0u8; size];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for n in 0..records {
        for word in body.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        body[..8].copy_from_slice(&n.to_le_bytes());
        w.append(RecordKind(0x8001), &body)?;
    }
    Ok(w)
}

/// Rounds of the recorder and the floors, alternating.
const WRITE_ROUNDS: usize = 3;

fn write_and_read(base: &Path, size: usize, records: u64, fsync: Fsync) -> Result<()> {
    for write_behind in [true, false] {
        record(base, size, records, fsync, write_behind, true)?;
    }
    Ok(())
}

/// One configuration recorded and read back; `report: false` for a warm-up (nothing
/// printed, no peer).
fn record(
    base: &Path,
    size: usize,
    records: u64,
    fsync: Fsync,
    write_behind: bool,
    report: bool,
) -> Result<()> {
    let print = |line: ResultLine| {
        if report {
            line.print();
        }
    };
    // the ring in shared memory, as a publisher's is
    let shm_dir = tempfile::tempdir_in("/dev/shm").context("a directory in /dev/shm")?;
    let shm = ShmDir::new(shm_dir.path());
    let _writer = filled_ring(&shm, size, records)?;
    let archive = base.join(format!("archive-{size}-{}", fsync_name(fsync)));
    let options = RecorderOptions {
        segment_bytes: 256 << 20,
        fsync,
        write_behind,
    };
    // for reference: reading the ring alone
    {
        let mut reader = mdi_protocol::ring::RingReader::open_with(
            &shm,
            "bench",
            mdi_protocol::ring::StartAt::Earliest,
            true,
        )?;
        let started = Instant::now();
        let mut n = 0u64;
        while reader.poll(1 << 16, |_| n += 1)? > 0 {}
        print(
            ResultLine::new("archive-write", "ring-read-only")
                .field("size", size)
                .field("msgs_per_s", msgs_per_s(n, nanos(started.elapsed()))),
        );
    }
    // The recorder against the floors, alternating, WRITE_ROUNDS times: a disk's (and its
    // host's) write-back state swings figures between runs of the same work (a floor
    // measured once has swung 0.9-13 M records/s); each reports its median and range.
    let mut times: [Vec<u64>; 3] = Default::default();
    let mut bytes = Vec::new();
    let (mut used, mut on_disk) = (0, 0);
    // (one for a warm-up)
    for round in 0..if report { WRITE_ROUNDS } else { 1 } {
        let _ = std::fs::remove_dir_all(&archive);
        // the recorder, opened (its mapping of the ring populated, as a running
        // recorder's is), then timed: the whole ring into segments, closed (synced)
        let mut recorder = Recorder::open(&shm, "bench", &archive, options)?;
        let started = Instant::now();
        while recorder.poll(1 << 16)? > 0 {}
        let counts = recorder.close()?;
        times[0].push(nanos(started.elapsed()));
        anyhow::ensure!(
            counts.records >= records,
            "archived {} of {records}",
            counts.records
        );
        if round == 0 {
            on_disk = mdi_archive::segments(&archive.join("bench"))?
                .iter()
                .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
                .sum();
            used = used_bytes(&archive.join("bench"))?;
            // the floors write the segments' own bytes, in memory before their clocks
            // start
            bytes.reserve(used as usize);
            for (_, path) in mdi_archive::segments(&archive.join("bench"))? {
                let segment = std::fs::read(&path)?;
                let end = mdi_archive::SegmentReader::open(&path)?
                    .chunks()
                    .last()
                    .map_or(mdi_archive::HEADER_LEN, |c| {
                        c.offset + mdi_archive::CHUNK_HEADER as u64 + u64::from(c.len)
                    });
                bytes.extend_from_slice(&segment[..end as usize]);
            }
        }
        // the floor: the same bytes, the same 64 KiB positioned writes, a file
        // preallocated as the recorder preallocates its segments (the space of what it
        // writes, within the timing: what a recorder does once per segment) — plain, and
        // with the writeback the recorder's write-behind thread starts as it goes
        for (i, streamed) in [(1, false), (2, true)] {
            let floor = base.join(format!("floor-{size}"));
            times[i].push(raw_write(&floor, &bytes, fsync, streamed)?);
        }
    }
    let rate = |ns: u64| msgs_per_s(records, ns);
    let summary = |line: ResultLine, ns: &mut Vec<u64>| {
        ns.sort_unstable();
        line.field("msgs_per_s", rate(ns[ns.len() / 2]))
            .field("runs", ns.len())
            .field("min_msgs_per_s", rate(ns[ns.len() - 1]))
            .field("max_msgs_per_s", rate(ns[0]))
    };
    let [mdi, floor, streamed] = &mut times;
    print(
        summary(
            ResultLine::new(
                "archive-write",
                if write_behind {
                    "mdi"
                } else {
                    "mdi-one-thread"
                },
            )
            .field("size", size)
            .field("fsync", fsync_name(fsync)),
            mdi,
        )
        .field(
            "bytes_per_record",
            format!("{:.1}", used as f64 / records as f64),
        )
        .field("preallocated_bytes", on_disk),
    );
    for (name, ns) in [
        ("raw-write-floor", floor),
        ("raw-write-floor-streamed", streamed),
    ] {
        print(summary(
            ResultLine::new("archive-write", name)
                .field("size", size)
                .field("fsync", fsync_name(fsync)),
            ns,
        ));
    }
    #[cfg(feature = "rocksdb")]
    if report && write_behind && fsync == Fsync::None {
        rocksdb_peer(base, &shm, size, records)?;
    }
    // read back from the start
    if fsync == Fsync::None {
        let started = Instant::now();
        let mut reader = ArchiveReader::open(&archive, "bench", ArchiveStart::Earliest)?;
        let mut n = 0u64;
        let mut check = 0u64;
        while reader.poll(|r| {
            n += 1;
            check = check.wrapping_add(r.body.len() as u64);
            true
        })? > 0
        {}
        let elapsed = nanos(started.elapsed());
        anyhow::ensure!(n >= records && check > 0, "read {n} of {records}");
        print(
            ResultLine::new("archive-read", "mdi")
                .field("size", size)
                .field("msgs_per_s", msgs_per_s(n, elapsed)),
        );
    }
    std::fs::remove_dir_all(&archive)?;
    Ok(())
}

/// `bytes` written to a new file at `path` as the floor writes them (preallocated, 64 KiB
/// positioned writes, synced at the end and, with `Fsync::Periodic`, on its period);
/// `streamed`: with writeback started every [`mdi_archive::WRITEBACK_STRETCH`] bytes as
/// the recorder's write-behind thread starts it. Returns the ns it took; the file is
/// removed.
fn raw_write(path: &Path, bytes: &[u8], fsync: Fsync, streamed: bool) -> Result<u64> {
    let used = bytes.len() as u64;
    let file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let started = Instant::now();
    file.set_len(used)?;
    nix::fcntl::posix_fallocate(&file, 0, used as i64)?;
    let mut at = 0u64;
    let mut started_to = 0u64;
    let mut last_sync = Instant::now();
    while at < used {
        let n = (used - at).min(64 << 10) as usize;
        file.write_all_at(&bytes[at as usize..at as usize + n], at)?;
        at += n as u64;
        if streamed && at >= started_to + mdi_archive::WRITEBACK_STRETCH {
            mdi_archive::start_writeback(&file, started_to, at - started_to);
            started_to = at;
        }
        if let Fsync::Periodic(ms) = fsync
            && last_sync.elapsed().as_millis() as u64 >= ms
        {
            file.sync_data()?;
            last_sync = Instant::now();
        }
    }
    file.sync_data()?;
    let elapsed = nanos(started.elapsed());
    drop(file);
    std::fs::remove_file(path)?;
    Ok(elapsed)
}

/// The peer: the same ring's records into RocksDB keyed by sequence (big-endian: in
/// order), the value the record as the archive keeps it (publish time, kind, body);
/// batches of 1024 puts, WAL off, timed to the end of a flush of the memtables to SST
/// files (the records on disk, as the recorder's are at its close).
#[cfg(feature = "rocksdb")]
fn rocksdb_peer(base: &Path, shm: &ShmDir, size: usize, records: u64) -> Result<()> {
    use mdi_protocol::ring::{ReadEvent, RingReader, StartAt};
    let dir = base.join(format!("rocksdb-{size}"));
    let mut db = crate::rocksdb::RocksDb::open(&dir)?;
    let mut reader = RingReader::open_with(shm, "bench", StartAt::Earliest, true)?;
    let mut value = Vec::with_capacity(size + 16);
    let mut n = 0u64;
    let mut last = 0u64;
    let mut failed = None;
    let started = Instant::now();
    while reader.poll(1 << 16, |event| {
        if let ReadEvent::Record(r) = event {
            value.clear();
            // (the benchmark's records carry no time: the seq stands in for it)
            value.extend_from_slice(&r.seq.0.to_le_bytes());
            value.extend_from_slice(&r.kind.0.to_le_bytes());
            value.extend_from_slice(r.body);
            db.put(&r.seq.0.to_be_bytes(), &value);
            n += 1;
            last = r.seq.0;
            if db.batched() == 1024
                && let Err(e) = db.write_batch()
            {
                failed.get_or_insert(e);
            }
        }
    })? > 0
    {}
    if let Some(e) = failed {
        return Err(e);
    }
    db.write_batch()?;
    db.flush()?;
    let elapsed = nanos(started.elapsed());
    anyhow::ensure!(
        n >= records && db.get(&last.to_be_bytes())?.is_some(),
        "rocksdb holds {n} of {records}"
    );
    ResultLine::new("archive-write", "rocksdb")
        .field("size", size)
        .field("fsync", "none-wal-off")
        .field("msgs_per_s", msgs_per_s(n, elapsed))
        .field("bytes_on_disk", dir_bytes(&dir)?)
        .print();
    drop(db);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Bytes the segments use (headers and chunks; not the preallocated rest).
fn used_bytes(dir: &Path) -> Result<u64> {
    let mut used = 0;
    for (_, path) in mdi_archive::segments(dir)? {
        let reader = mdi_archive::SegmentReader::open(&path)?;
        used += reader.chunks().last().map_or(mdi_archive::HEADER_LEN, |c| {
            c.offset + mdi_archive::CHUNK_HEADER as u64 + u64::from(c.len)
        });
    }
    Ok(used)
}

/// A synthetic archive of `records` 64-byte records 1 us apart, written straight into
/// segments; then 110 000 seeks to random times, each to the first record delivered (the
/// first 10 000 not counted: they open the segments and warm the page cache).
fn seek(base: &Path, records: u64) -> Result<()> {
    let archive = base.join("seek");
    let dir = archive.join("bench");
    std::fs::create_dir_all(&dir)?;
    let t0 = 1_700_000_000_000_000_000i64;
    let body = [7u8; 64];
    let mut writer: Option<SegmentWriter> = None;
    let started = Instant::now();
    for seq in 1..=records {
        let record = ArchiveRecord {
            kind: 0x8001,
            seq,
            publish_ns: t0 + seq as i64 * 1000,
            body: &body,
        };
        loop {
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(SegmentWriter::create(
                    &dir.join(format!("{seq:020}.seg")),
                    SegmentHeader {
                        stream: "bench".into(),
                        epoch: 1,
                        first_seq: seq,
                        first_time_ns: record.publish_ns,
                        schema_id: mdi_archive::recorder::SCHEMA_ID,
                        capacity: 256 << 20,
                        sealed: false,
                        used: 0,
                    },
                )?),
            };
            if w.append(&record)? {
                break;
            }
            writer.take().expect("there").seal()?;
        }
    }
    if let Some(w) = writer.take() {
        w.seal()?;
    }
    let built = started.elapsed();
    // warm, not being written back: the page cache holds the segments, clean (a seek
    // measured while gigabytes of dirty pages go to disk measures the disk)
    for (_, path) in mdi_archive::segments(&dir)? {
        std::fs::File::open(&path)?.sync_all()?;
    }
    let mut reader = ArchiveReader::open(&archive, "bench", ArchiveStart::Earliest)?;
    let mut h = Histogram::<u64>::new(3)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..110_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let target = t0 + ((state % records) as i64 + 1) * 1000;
        let started = Instant::now();
        reader.seek(ArchiveStart::Time(target))?;
        let mut first = None;
        reader.poll(|r| {
            first = Some(r.publish_ns);
            false
        })?;
        let took = nanos(started.elapsed());
        anyhow::ensure!(first == Some(target), "seek to {target} found {first:?}");
        if i >= 10_000 {
            h.record(took)?;
        }
    }
    ResultLine::new("archive-seek", "mdi")
        .field("records", records)
        .field("segments", mdi_archive::segments(&dir)?.len())
        .field("build_s", format!("{:.1}", built.as_secs_f64()))
        .latency(Latency::of(&h))
        .print();
    std::fs::remove_dir_all(&archive)?;
    Ok(())
}

/// A binary next to this one (`target/release/mdarchive` beside `mdbench`).
fn sibling(name: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it (cargo build --release -p mdi-archive-cli -p mdi-tools)",
        path.display()
    );
    Ok(path)
}

/// `trades` aggTrades-like trades (a random walk, 8-decimal prices and quantities, as
/// Binance's) archived, then exported by `mdarchive export` (rows/s, the whole command)
/// and printed by `mdtail --format jsonl`: bytes per trade as segments, Parquet, jsonl.
fn export(base: &Path, trades: u64) -> Result<()> {
    use mdi_protocol::records::{InstrumentDefinition, Side, Trade};
    let shm_dir = tempfile::tempdir_in("/dev/shm").context("a directory in /dev/shm")?;
    let shm = ShmDir::new(shm_dir.path());
    let mut w = RingWriter::create(
        &shm,
        "ticks",
        &RingOptions::default()
            .capacity((trades * 160).next_power_of_two())
            .prefault(false),
    )?;
    let t0 = 1_704_153_600_000_000_000i64; // 2024-01-02
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut price, mut t, mut id) = (4_200_000_000_000i64, t0, 100u64);
    for n in 0..trades {
        if n % 10_000 == 0 {
            w.append_record(&InstrumentDefinition {
                instrument_id: 1,
                price_exponent: -8,
                qty_exponent: -8,
                venue: "binance".into(),
                symbol: "BTCUSDT".into(),
                ts_publish_ns: t,
                ..InstrumentDefinition::default()
            })?;
        }
        // As the venue's aggTrades are: the exchange's time in whole ms (~85 ms apart on
        // average), BTCUSDT's 0.01 tick (most trades at the last price or a tick away),
        // its 0.00001 lot (quantities log-uniform from one lot to 5 BTC); received 1-3 ms
        // later to the ns and published 2-10 µs after that.
        t += (next() % 170) as i64 * 1_000_000;
        let tick = 1_000_000i64;
        price += match next() % 100 {
            0..=54 => 0,
            55..=84 => tick * if next() % 2 == 0 { 1 } else { -1 },
            _ => tick * ((next() % 601) as i64 - 300),
        };
        let lots = (500_000f64.powf((next() % 1_000_000) as f64 / 1e6)) as i64;
        let received = t + 1_000_000 + (next() % 2_000_000) as i64;
        let count = 1 + next() % 4;
        let buy = next() % 2 == 0;
        w.append_record(&Trade {
            instrument_id: 1,
            price_exponent: -8,
            qty_exponent: -8,
            price,
            qty: lots.max(1) * 1_000,
            aggressor: if buy { Side::Buy } else { Side::Sell },
            trade_id: 500 + n,
            first_trade_id: id,
            last_trade_id: id + count - 1,
            is_aggregate: true,
            venue_seq: 500 + n,
            ts_exchange_ns: t,
            ts_receive_ns: received,
            ts_publish_ns: received + 2_000 + (next() % 8_000) as i64,
        })?;
        id += count;
    }
    let archive = base.join("export-archive");
    let mut recorder = Recorder::open(&shm, "ticks", &archive, RecorderOptions::default())?;
    while recorder.poll(1 << 16)? > 0 {}
    recorder.close()?;
    let segment_bytes = used_bytes(&archive.join("ticks"))?;
    let out = base.join("export-parquet");
    let started = Instant::now();
    let status = std::process::Command::new(sibling("mdarchive")?)
        .args(["export", "--archive"])
        .arg(&archive)
        .args(["--stream", "ticks", "--kind", "trade", "--out"])
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .status()?;
    let elapsed = nanos(started.elapsed());
    anyhow::ensure!(status.success(), "mdarchive export failed");
    let parquet_bytes = dir_bytes(&out)?;
    ResultLine::new("archive-export", "mdi-parquet")
        .field("rows", trades)
        .field("rows_per_s", msgs_per_s(trades, elapsed))
        .print();
    // jsonl: what mdtail prints of the same trades
    let jsonl = std::process::Command::new(sibling("mdtail")?)
        .arg("ticks")
        .arg("--shm-dir")
        .arg(shm.path())
        .args([
            "--from",
            "earliest",
            "--no-follow",
            "--format",
            "jsonl",
            "--kind",
            "trade",
        ])
        .output()?;
    anyhow::ensure!(jsonl.status.success(), "mdtail failed");
    let per = |bytes: u64| format!("{:.1}", bytes as f64 / trades as f64);
    ResultLine::new("archive-bytes-per-trade", "mdi")
        .field("segments", per(segment_bytes))
        .field("parquet", per(parquet_bytes))
        .field("jsonl", per(jsonl.stdout.len() as u64))
        .print();
    std::fs::remove_dir_all(&archive)?;
    std::fs::remove_dir_all(&out)?;
    Ok(())
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        total += if entry.file_type()?.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            entry.metadata()?.len()
        };
    }
    Ok(total)
}
