//! `mdarchive`: the tick archive's tool — `record` rings into segment files (the writer
//! never waits for it), `verify` an archive, `status` of each stream's archive, `prune`
//! by age or size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mdi_archive::{
    ArchiveError, ArchiveReader, ArchiveStart, Fsync, Keep, RecordError, Recorder, RecorderOptions,
    SegmentReader, apply_retention, archived_streams, segments, verify_stream,
};
use mdi_protocol::ring::ShmDir;
use mdi_transport::cli::LogFormat;

mod export;

#[derive(Debug, Parser)]
#[command(
    name = "mdarchive",
    version,
    about = "The tick archive: record rings into segment files, verify them, show and prune them"
)]
struct Cli {
    /// Log format: text or json (one object per line).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Follow rings and append every record to the archive (a reader: the writer never
    /// waits for it). Restarted, it continues after the last archived record; what a
    /// ring no longer holds is written as an exact gap marker.
    #[command(after_help = "Exit status:\n  \
        0  stopped (SIGINT, SIGTERM) or, with --no-follow, everything archived\n  \
        1  an error: a ring or the archive could not be read or written\n  \
        3  the disk is full: the segments are sealed, nothing before is lost")]
    Record(Record),
    /// Read every segment whole and check it: checksums, footers, each record once and in
    /// order, missing ranges only under gap markers.
    #[command(after_help = "Exit status:\n  \
        0  sound (gaps the recorder marked are listed, they are not damage)\n  \
        1  mdarchive itself failed (no archive directory, bad arguments)\n  \
        2  damage found (each problem is printed with its segment)")]
    Verify(Verify),
    /// Each stream's archive: segments, bytes, first and last sequence and time.
    Status(Status),
    /// Delete whole sealed segments older than --keep-age or beyond --keep-size.
    Prune(Prune),
    /// Write a range of a stream's history back into a ring (a strategy runs unchanged
    /// on it), at its own pace or faster.
    #[command(after_help = "Exit status:\n  \
        0  the range was written (or interrupted)\n  \
        1  an error: no archive, a ring that could not be created")]
    Replay(Replay),
    /// Write a stream's history as Parquet: one table per record kind, partitioned by
    /// kind, symbol and day (hive), prices and quantities exact decimals.
    #[command(after_help = "Examples:\n  \
        mdarchive export --archive /var/lib/mdi/archive --stream ticks --out ticks/\n  \
        mdarchive export --archive A --stream klines --kind kline --symbol BTCUSDT --from 2024-01-01 --to 2024-01-02 --out btc.parquet\n\n\
        A directory gets kind=K/symbol=S/date=D/part-N.parquet (polars: pl.scan_parquet(dir, hive_partitioning=True));\n\
        a .parquet file holds one kind of one symbol on one day.\n\n\
        Exit status:\n  0  written\n  1  an error (no archive, the range needs a directory, I/O)")]
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// The archive directory.
    #[arg(long, env = "MDI_ARCHIVE_DIR", value_name = "ADIR")]
    archive: PathBuf,
    /// The stream exported.
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// Only these kinds: trade,quote,book,kline,status,instrument (default: all but
    /// instrument).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    kind: Vec<String>,
    /// Only these symbols (comma-separated, case-insensitive).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    symbol: Vec<String>,
    /// The first publish time exported (a time or a date, UTC; as mdtail's time:).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<i64>,
    /// The last publish time exported (a date alone: up to its start).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<i64>,
    /// A directory (partitioned) or a .parquet file.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

fn parse_time(text: &str) -> Result<i64, String> {
    mdi_transport::time::parse_utc(text).ok_or_else(|| {
        format!("{text:?}: a time like 2024-01-01T00:00:00Z, a date, or 1704067200s")
    })
}

#[derive(Debug, clap::Args)]
struct Replay {
    /// The archive directory.
    #[arg(long, env = "MDI_ARCHIVE_DIR", value_name = "ADIR")]
    archive: PathBuf,
    /// The stream whose history is replayed.
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// The first record: earliest, seq:N or time:T (as mdtail's --from).
    #[arg(long, value_name = "WHERE", default_value = "earliest", value_parser = parse_where)]
    from: Where,
    /// The last record: seq:N or time:T (default: the end of the archive).
    #[arg(long, value_name = "WHERE", value_parser = parse_where)]
    to: Option<Where>,
    /// max, 1x (as it happened, by publish time), or another multiple such as 10x.
    #[arg(long, value_name = "SPEED", default_value = "max", value_parser = mdi_transport::cli::parse_speed)]
    speed: mdi_transport::cli::Speed,
    /// Shared-memory directory of the ring written.
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    shm_dir: PathBuf,
    /// The ring written (default: the stream's name).
    #[arg(long, value_name = "NAME")]
    ring: Option<String>,
    /// The ring's data size in MiB (a power of two), if it is created.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    ring_mib: u64,
}

/// A position in a stream: its start, a sequence number or a publish time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Earliest,
    Seq(u64),
    Time(i64),
}

fn parse_where(text: &str) -> Result<Where, String> {
    if text == "earliest" {
        return Ok(Where::Earliest);
    }
    if let Some(seq) = text.strip_prefix("seq:") {
        return seq
            .parse()
            .map(Where::Seq)
            .map_err(|_| format!("{text:?}: seq:N wants a sequence number"));
    }
    if let Some(time) = text.strip_prefix("time:") {
        return mdi_transport::time::parse_utc(time)
            .map(Where::Time)
            .ok_or_else(|| {
                format!(
                    "{text:?}: time: wants a time like 2024-01-01T00:00:00Z, a date, or 1704067200s"
                )
            });
    }
    Err(format!("{text:?}: use earliest, seq:N or time:T"))
}

#[derive(Debug, clap::Args)]
struct Record {
    /// Shared-memory directory of the rings (local rings, or replicas kept by mdrecv).
    #[arg(long, env = "MDI_SHM_DIR", value_name = "DIR", default_value = mdi_protocol::ring::DEFAULT_SHM_DIR)]
    shm_dir: PathBuf,
    /// The archive directory (one subdirectory of segments per stream).
    #[arg(long, env = "MDI_ARCHIVE_DIR", value_name = "ADIR")]
    archive: PathBuf,
    /// Streams to record (default: every stream of the shm directory, and streams that
    /// appear later).
    #[arg(long = "stream", value_name = "NAME")]
    streams: Vec<String>,
    /// Archive what the rings hold now, then exit.
    #[arg(long)]
    no_follow: bool,
    /// Each segment file's size in MiB (preallocated: a full disk shows when a segment
    /// is begun, never in the middle of one).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    segment_mib: u64,
    /// When to ask the disk to keep what was written: none (the page cache), batch
    /// (after every batch written) or periodic:MS.
    #[arg(long, value_name = "POLICY", default_value = "none", value_parser = parse_fsync)]
    fsync: Fsync,
    /// Write chunks on the recording thread itself instead of a write-behind thread
    /// (one core instead of two; about half the throughput).
    #[arg(long)]
    no_write_behind: bool,
    /// Warn when the archive's filesystem has less free space than this (e.g. 2G).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    alarm_free: u64,
    /// Delete sealed segments whose newest record is older than this (e.g. 7d, 12h).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    keep_age: Option<i64>,
    /// Delete the oldest sealed segments while a stream's archive is larger (e.g. 500G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_size: Option<u64>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9466): the
    /// recorded rings and each archive's position, lag, gaps and segments
    /// (`mdi_archive_*`), read at scrape time.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct Verify {
    /// The archive directory.
    #[arg(long, env = "MDI_ARCHIVE_DIR", value_name = "ADIR")]
    archive: PathBuf,
    /// Streams to verify (default: all).
    #[arg(long = "stream", value_name = "NAME")]
    streams: Vec<String>,
    /// One JSON object per stream instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct Status {
    /// The archive directory.
    #[arg(long, env = "MDI_ARCHIVE_DIR", value_name = "ADIR")]
    archive: PathBuf,
    /// Streams (default: all).
    #[arg(long = "stream", value_name = "NAME")]
    streams: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct Prune {
    /// The archive directory.
    #[arg(long, env = "MDI_ARCHIVE_DIR", value_name = "ADIR")]
    archive: PathBuf,
    /// Streams (default: all).
    #[arg(long = "stream", value_name = "NAME")]
    streams: Vec<String>,
    /// Delete sealed segments whose newest record is older than this (e.g. 7d, 12h).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    keep_age: Option<i64>,
    /// Delete the oldest sealed segments while a stream's archive is larger (e.g. 500G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_size: Option<u64>,
}

fn parse_fsync(text: &str) -> Result<Fsync, String> {
    match text {
        "none" => Ok(Fsync::None),
        "batch" => Ok(Fsync::Batch),
        _ => text
            .strip_prefix("periodic:")
            .and_then(|ms| ms.parse().ok())
            .map(Fsync::Periodic)
            .ok_or_else(|| format!("{text:?}: expected none, batch or periodic:MS")),
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches('i');
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a size like 500M or 2G"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: the unit is K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?}: too large"))
}

fn parse_age(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (digits, unit) = t.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected an age like 90m, 12h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(secs * 1_000_000_000)
        .ok_or_else(|| format!("{text:?}: too long"))
}

fn main() {
    let cli: Cli = mdi_transport::cli::parse_args();
    mdi_transport::cli::init_logging(cli.log_format);
    let code = match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mdarchive: {error:#}");
            let full = error.chain().any(|c| {
                matches!(
                    c.downcast_ref::<RecordError>(),
                    Some(RecordError::Archive(ArchiveError::NoRoom { .. }))
                )
            });
            if full { 3 } else { 1 }
        }
    };
    std::process::exit(code);
}

fn run(command: Command) -> Result<i32> {
    match command {
        Command::Record(args) => record(&args).map(|()| 0),
        Command::Verify(args) => verify(&args),
        Command::Status(args) => status(&args).map(|()| 0),
        Command::Prune(args) => prune(&args).map(|()| 0),
        Command::Replay(args) => replay(&args).map(|()| 0),
        Command::Export(args) => export(&args).map(|()| 0),
    }
}

fn streams_of(archive: &Path, named: &[String]) -> Result<Vec<String>> {
    if !named.is_empty() {
        return Ok(named.to_vec());
    }
    archived_streams(archive).with_context(|| format!("archive directory {}", archive.display()))
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

fn record(args: &Record) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("signal handler")?;
    }
    std::fs::create_dir_all(&args.archive)
        .with_context(|| format!("archive directory {}", args.archive.display()))?;
    let shm = ShmDir::new(&args.shm_dir);
    let options = RecorderOptions {
        segment_bytes: args.segment_mib.max(1) << 20,
        fsync: args.fsync,
        write_behind: !args.no_write_behind,
    };
    let keep = Keep {
        max_age_ns: args.keep_age,
        max_bytes: args.keep_size,
    };
    let _metrics = match args.metrics {
        Some(addr) => {
            let server =
                mdi_transport::metrics::serve(addr, args.shm_dir.clone(), args.streams.clone())
                    .with_context(|| format!("serving metrics on {addr}"))?;
            eprintln!("mdarchive: metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let mut recorders: BTreeMap<String, Recorder> = BTreeMap::new();
    // streams that could not be opened yet, and when that was said
    let mut waiting: BTreeMap<String, String> = BTreeMap::new();
    let mut last_scan: Option<Instant> = None;
    let mut last_housekeeping = Instant::now();
    let mut alarmed = false;
    let mut result = Ok(());
    'run: loop {
        if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_scan = Some(Instant::now());
            let wanted = if args.streams.is_empty() {
                shm.streams()
                    .with_context(|| format!("shm directory {}", args.shm_dir.display()))?
            } else {
                args.streams.clone()
            };
            for stream in wanted {
                if recorders.contains_key(&stream) {
                    continue;
                }
                match Recorder::open(&shm, &stream, &args.archive, options) {
                    Ok(recorder) => {
                        tracing::info!(
                            stream,
                            after = ?recorder.last_seq(),
                            "recording into {}",
                            args.archive.join(&stream).display()
                        );
                        waiting.remove(&stream);
                        recorders.insert(stream, recorder);
                    }
                    Err(e @ RecordError::Ring { .. }) if !args.no_follow => {
                        let text = e.to_string();
                        if waiting.get(&stream) != Some(&text) {
                            tracing::warn!(stream, "not recorded yet: {text}");
                            waiting.insert(stream, text);
                        }
                    }
                    Err(e) => return Err(e).context(format!("stream {stream}")),
                }
            }
        }
        let mut moved = 0;
        for (stream, recorder) in &mut recorders {
            match recorder.poll(1 << 16) {
                Ok(n) => moved += n,
                Err(e) => {
                    result = Err(anyhow::Error::new(e).context(format!("stream {stream}")));
                    break 'run;
                }
            }
        }
        if last_housekeeping.elapsed() >= Duration::from_secs(1) {
            last_housekeeping = Instant::now();
            let now = mdi_transport::wall_clock_ns();
            for (stream, recorder) in &recorders {
                mdi_transport::status::write(
                    shm.path(),
                    stream,
                    "archive",
                    &recorder.status_lines(),
                    now,
                );
            }
            if let Some(free) = free_bytes(&args.archive) {
                let low = free < args.alarm_free;
                if low && !alarmed {
                    tracing::warn!(
                        free_bytes = free,
                        alarm_bytes = args.alarm_free,
                        "the archive's filesystem is nearly full ({} MiB free): recording stops when a segment cannot be begun",
                        free >> 20
                    );
                }
                alarmed = low;
            }
            if keep != Keep::default() {
                let now = mdi_transport::wall_clock_ns();
                for stream in recorders.keys() {
                    match apply_retention(&args.archive, stream, keep, now) {
                        Ok(deleted) => {
                            for path in deleted {
                                tracing::info!(stream, "retention: deleted {}", path.display());
                            }
                        }
                        Err(e) => tracing::warn!(stream, "retention: {e}"),
                    }
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if moved == 0 {
            if args.no_follow && recorders.values().all(Recorder::caught_up) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (stream, recorder) in recorders {
        mdi_transport::status::remove(shm.path(), &stream, "archive");
        match recorder.close() {
            Ok(counts) => tracing::info!(
                stream,
                records = counts.records,
                gaps = counts.gaps,
                lost = counts.lost,
                segments = counts.segments,
                "stopped"
            ),
            Err(e) => tracing::error!(stream, "closing: {e}"),
        }
    }
    if args.no_follow && !waiting.is_empty() {
        bail!(
            "streams not recorded: {}",
            waiting.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    result
}

fn verify(args: &Verify) -> Result<i32> {
    let mut sound = true;
    for stream in streams_of(&args.archive, &args.streams)? {
        let report = verify_stream(&args.archive, &stream)?;
        sound &= report.sound();
        if args.json {
            let gaps: Vec<_> = report
                .gaps
                .iter()
                .map(|(from, to)| serde_json::json!({"from_seq": from, "to_seq": to, "lost": to - from}))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "stream": report.stream,
                    "sound": report.sound(),
                    "segments": report.segments,
                    "sealed": report.sealed,
                    "records": report.records,
                    "first_seq": report.first_seq,
                    "last_seq": report.last_seq,
                    "first_time_ns": report.first_time_ns,
                    "last_time_ns": report.last_time_ns,
                    "bytes": report.bytes,
                    "gaps": gaps,
                    "notes": report.notes,
                    "problems": report.problems,
                })
            );
            continue;
        }
        println!(
            "{}: {} — {} records in {} segments ({} sealed), sequences {}..={}, {} gaps ({} records the archive does not have)",
            report.stream,
            if report.sound() { "sound" } else { "DAMAGED" },
            report.records,
            report.segments,
            report.sealed,
            report.first_seq.map_or("-".into(), |s| s.to_string()),
            report.last_seq.map_or("-".into(), |s| s.to_string()),
            report.gaps.len(),
            report.gaps.iter().map(|g| g.1 - g.0).sum::<u64>(),
        );
        for (from, to) in report.gaps.iter().take(20) {
            println!("  gap: sequences {from}..{to} ({} records)", to - from);
        }
        for note in &report.notes {
            println!("  note: {note}");
        }
        for problem in &report.problems {
            println!("  problem: {problem}");
        }
    }
    Ok(if sound { 0 } else { 2 })
}

fn status(args: &Status) -> Result<()> {
    println!(
        "{:<16} {:>8} {:>10} {:>14} {:>14}  {:<30}  LAST TIME",
        "STREAM", "SEGMENTS", "MIB", "FIRST SEQ", "LAST SEQ", "FIRST TIME"
    );
    for stream in streams_of(&args.archive, &args.streams)? {
        let list = segments(&args.archive.join(&stream))?;
        let bytes: u64 = list
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let first = match ArchiveReader::open(&args.archive, &stream, ArchiveStart::Earliest) {
            Ok(reader) => reader.bounds()?,
            Err(_) => None,
        };
        let first_time = match list.first() {
            Some((_, p)) => Some(SegmentReader::open_header(p)?.first_time_ns),
            None => None,
        };
        let last_time = match list.last() {
            Some((_, p)) => SegmentReader::open(p)?
                .chunks()
                .last()
                .map(|c| c.last_time_ns),
            None => None,
        };
        let time = |t: Option<i64>| t.map_or("-".into(), mdi_transport::time::utc_timestamp);
        println!(
            "{:<16} {:>8} {:>10} {:>14} {:>14}  {:<30}  {}",
            stream,
            list.len(),
            bytes >> 20,
            first.map_or("-".into(), |f| f.0.to_string()),
            first.map_or("-".into(), |f| f.1.to_string()),
            time(first_time),
            time(last_time),
        );
    }
    Ok(())
}

fn prune(args: &Prune) -> Result<()> {
    let keep = Keep {
        max_age_ns: args.keep_age,
        max_bytes: args.keep_size,
    };
    if keep == Keep::default() {
        bail!("say what to keep: --keep-age and/or --keep-size");
    }
    let now = mdi_transport::wall_clock_ns();
    for stream in streams_of(&args.archive, &args.streams)? {
        for path in apply_retention(&args.archive, &stream, keep, now)? {
            println!("deleted {}", path.display());
        }
    }
    Ok(())
}

fn replay(args: &Replay) -> Result<()> {
    use mdi_protocol::records::RecordKind;
    use mdi_protocol::ring::{RingOptions, RingWriter};

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("signal handler")?;
    }
    let start = match args.from {
        Where::Earliest => ArchiveStart::Earliest,
        Where::Seq(seq) => ArchiveStart::Sequence(seq),
        Where::Time(ns) => ArchiveStart::Time(ns),
    };
    let mut reader = ArchiveReader::open(&args.archive, &args.stream, start)?;
    let end = args.to.map(|to| match to {
        Where::Seq(last) => ArchiveStart::Sequence(last.saturating_add(1)),
        Where::Time(last) => ArchiveStart::Time(last.saturating_add(1)),
        Where::Earliest => ArchiveStart::Earliest,
    });
    let passed = Arc::new(AtomicU64::new(0));
    // a bar with rate and ETA on a terminal, a line every 5 s otherwise
    let _progress = mdi_transport::cli::Progress::start_counting(
        mdi_transport::cli::Unit::Records,
        format!("mdarchive: replaying {}", args.stream),
        Arc::clone(&passed),
        records_in_range(&args.archive, &args.stream, start, end),
    );
    let ring = args.ring.as_deref().unwrap_or(&args.stream);
    let shm = ShmDir::new(&args.shm_dir);
    let mut writer = RingWriter::create(
        &shm,
        ring,
        &RingOptions::default().capacity(args.ring_mib << 20),
    )
    .with_context(|| format!("creating ring {ring} in {}", args.shm_dir.display()))?;
    let mut pacer = mdi_transport::cli::Pacer::new(args.speed);
    let (mut written, mut gaps, mut missing) = (0u64, 0u64, 0u64);
    let mut failed = None;
    let mut ended = false;
    while !ended && !stop.load(Ordering::Relaxed) {
        let n = reader.poll(|r| {
            let past = match args.to {
                Some(Where::Seq(last)) => r.seq > last,
                Some(Where::Time(last)) => r.publish_ns > last,
                _ => false,
            };
            if past {
                ended = true;
                return false;
            }
            if let Some(end) = r.gap_end() {
                // the ring cannot hold a hole: said, and the records go on after it
                gaps += 1;
                missing += end - r.seq;
                return true;
            }
            if r.kind == RecordKind::EPOCH_START.0 {
                return true; // the writer begins its own epoch
            }
            pacer.wait_for(r.publish_ns);
            match writer.append(RecordKind(r.kind), r.body) {
                Ok(_) => written += 1,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
            !stop.load(Ordering::Relaxed)
        })?;
        if let Some(e) = failed.take() {
            bail!("writing ring {ring}: {e}");
        }
        passed.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            break; // the end of what is archived
        }
    }
    if gaps > 0 {
        tracing::warn!(
            gaps,
            missing,
            "the range has gaps the recorder marked: {missing} records are not in the archive"
        );
    }
    eprintln!(
        "mdarchive: {written} records of {} written into ring {ring} ({})",
        args.stream,
        args.shm_dir.display()
    );
    Ok(())
}

/// About how many records (and gap markers' records) lie from `start` to `end` (the end
/// of the archive when `None`), for a progress bar: two seeks, no scan. `None` when the
/// archive does not say.
fn records_in_range(
    archive: &Path,
    stream: &str,
    start: ArchiveStart,
    end: Option<ArchiveStart>,
) -> Option<u64> {
    let first_at = |at: ArchiveStart| -> Option<u64> {
        let mut reader = ArchiveReader::open(archive, stream, at).ok()?;
        let mut seq = None;
        reader
            .poll(|r| {
                seq = Some(r.seq);
                false
            })
            .ok()?;
        seq
    };
    let last = ArchiveReader::open(archive, stream, ArchiveStart::Earliest)
        .ok()?
        .bounds()
        .ok()??
        .1;
    let first = first_at(start)?;
    let end = end.and_then(first_at).unwrap_or(last + 1);
    Some(end.saturating_sub(first))
}

fn export(args: &ExportArgs) -> Result<()> {
    use mdi_protocol::records::{RecordKind, RecordKinds};
    let kinds = if args.kind.is_empty() {
        RecordKinds::MARKET_DATA
    } else {
        let mut kinds = RecordKinds::NONE;
        for name in &args.kind {
            let kind = RecordKind::from_name(name).with_context(|| {
                format!("{name:?} is not a kind: trade, quote, book, kline, status, instrument")
            })?;
            kinds = kinds.with(kind);
        }
        kinds
    };
    let started = Instant::now();
    let passed = Arc::new(AtomicU64::new(0));
    let _progress = mdi_transport::cli::Progress::start_counting(
        mdi_transport::cli::Unit::Records,
        format!("mdarchive: exporting {}", args.stream),
        Arc::clone(&passed),
        records_in_range(
            &args.archive,
            &args.stream,
            export::reading_start(args.from),
            args.to.map(|t| ArchiveStart::Time(t.saturating_add(1))),
        ),
    );
    let done = export::export(&export::Export {
        passed: &passed,
        archive: &args.archive,
        stream: &args.stream,
        kinds,
        symbols: (!args.symbol.is_empty()).then(|| args.symbol.clone()),
        from_ns: args.from,
        to_ns: args.to,
        out: &args.out,
    })?;
    if done.missing > 0 {
        tracing::warn!(
            missing = done.missing,
            "the range has gaps the recorder marked: {} records are not in the archive",
            done.missing
        );
    }
    if done.undecodable > 0 {
        tracing::warn!(
            undecodable = done.undecodable,
            "records that did not decode were skipped"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "mdarchive: {} rows into {} files under {} in {secs:.2} s ({:.0} rows/s)",
        done.rows,
        done.files.len(),
        args.out.display(),
        done.rows as f64 / secs.max(1e-9)
    );
    Ok(())
}
