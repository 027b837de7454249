//! `mdbench itch`: ITCH 5.0 over MoldUDP64 on one core — a synthetic feed's packets
//! (generated first, in memory) through the session, the decoder, the order books and
//! the normalizer into the `ticks` ring (records committed to shared memory). Also the
//! decode + book stage alone, to show where the time goes. Each stage runs [`RUNS`]
//! times (best and median printed); the pipeline writes with the real clock into a ring
//! as `mdpub run` makes it (64 MiB) and as `mdpub replay` does (1 GiB).

use std::time::Instant;

use anyhow::{Context, Result};
use mdi_itch::book::{Applied, Books};
use mdi_itch::message::decode;
use mdi_itch::mold::{Packet, Session, SessionConfig};
use mdi_itch::sim::{SimConfig, messages, packets};
use mdi_protocol::ring::{DEFAULT_CAPACITY, RingOptions, RingWriter, ShmDir};
use mdi_protocol::time::MonoNs;
use mdi_publisher::itch::feed::ItchFeed;
use mdi_publisher::pipeline::Rings;
use mdi_transport::wall_clock_ns;

use crate::harness::{ResultLine, msgs_per_s, nanos, pin};

/// Runs of each stage; the machine is noisy, so the best and the median are reported.
const RUNS: usize = 5;

/// Runs `mdbench itch`.
pub fn run(quick: bool) -> Result<()> {
    let count: u64 = if quick { 1_000_000 } else { 10_000_000 };
    let config = SimConfig {
        messages: count,
        symbols: 100,
        seed: 3,
        ..SimConfig::default()
    };
    let messages = messages(&config);
    let packets = packets(&config, &messages);
    let count = messages.len() as u64;
    drop(messages);
    pin(0);

    let mut book_runs = Vec::new();
    for _ in 0..RUNS {
        let (ns, events) = book_stage(&packets)?;
        std::hint::black_box(events);
        book_runs.push(ns);
    }
    rates(ResultLine::new("itch-book", "mdi"), count, &mut book_runs)
        .field("messages", count)
        .print();

    // the whole path: session, decode, books, records committed to the ring — the ring as
    // `mdpub run` makes it (64 MiB, wrapping) and as `mdpub replay` does (1 GiB)
    for (capacity, ring) in [(DEFAULT_CAPACITY, "64MiB"), (1 << 30, "1GiB")] {
        let mut runs = Vec::new();
        let mut records = 0;
        for _ in 0..RUNS {
            let dir = tempfile::tempdir_in("/dev/shm").context("a shm directory")?;
            let shm = ShmDir::new(dir.path());
            let rings = Rings {
                ticks: RingWriter::create(
                    &shm,
                    "ticks",
                    &RingOptions::default().capacity(capacity),
                )?,
                klines: RingWriter::create(&shm, "klines", &RingOptions::default())?,
            };
            let mut feed = ItchFeed::new(
                rings,
                Some(mdi_publisher::itch::feed::SessionClock::from_utc_midnight(
                    0,
                )),
                wall_clock_ns,
            );
            runs.push(pipeline_stage(&packets, &mut feed)?);
            let counters = feed.counters();
            anyhow::ensure!(counters.messages == count, "messages went missing");
            records = counters.records;
        }
        rates(ResultLine::new("itch-pipeline", "mdi"), count, &mut runs)
            .field("ring", ring)
            .field("messages", count)
            .field("records", records)
            .print();
    }
    Ok(())
}

/// The best and the median rate of `runs` (ns each) over `count` messages.
fn rates(line: ResultLine, count: u64, runs: &mut [u64]) -> ResultLine {
    runs.sort_unstable();
    line.field("msgs_per_s", msgs_per_s(count, runs[0]))
        .field("median_msgs_per_s", msgs_per_s(count, runs[runs.len() / 2]))
        .field("runs", runs.len())
}

/// Decode + books: the packets' messages through the order books. Returns the time taken
/// (ns) and the events the books reported. Not inlined, so that callgrind can be pointed
/// at it (`--toggle-collect='*book_stage*'`).
#[inline(never)]
fn book_stage(packets: &[(u64, Vec<u8>)]) -> Result<(u64, u64)> {
    let mut books = Books::new();
    let mut events = 0u64;
    let mut applied = Applied::default();
    let started = Instant::now();
    for (_, bytes) in packets {
        let packet = Packet::parse(bytes).context("a generated packet")?;
        for message in packet.messages() {
            if let Ok(m) = decode(message) {
                books.apply(&m, &mut applied);
                events += applied.levels().len() as u64 + u64::from(applied.execution.is_some());
            }
        }
    }
    Ok((nanos(started.elapsed()), events))
}

/// The whole path for every packet: session, decode, books, records into the ring.
/// Returns the time taken (ns). Not inlined (see [`book_stage`]).
#[inline(never)]
fn pipeline_stage(packets: &[(u64, Vec<u8>)], feed: &mut ItchFeed) -> Result<u64> {
    let mut session = Session::new(SessionConfig::default());
    let mut failed = None;
    let started = Instant::now();
    for (i, (_, bytes)) in packets.iter().enumerate() {
        let now = i as i64;
        session.on_packet(MonoNs(i as u64), bytes, &mut |output| {
            if let Err(e) = feed.on_output(now, output) {
                failed.get_or_insert(e);
            }
        });
        feed.end_packet(now)?;
    }
    let elapsed = nanos(started.elapsed());
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(elapsed),
    }
}
