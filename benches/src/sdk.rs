//! `mdbench sdk`: what the subscriber SDK adds to the raw ring reader. One writer thread
//! (core 0) publishes Trade records stamped with CLOCK_MONOTONIC, paced a few µs apart; a
//! reader thread (core 1) busy-spins and measures publish → read per record: first with
//! the raw `RingReader` decoding each Trade, then with `Subscriber::next` (decode, symbol
//! resolution, events), then with `Subscriber::poll_views` (zero-copy views) — same ring
//! size, same records, one after the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use mdi_protocol::records::{InstrumentDefinition, RecordKind, Trade, decode};
use mdi_protocol::ring::{
    ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt, WaitStrategy,
};
use mdi_protocol::view::RecordView;
use mdi_subscriber::{Event, Record, RecordKinds, Subscriber, ViewEvent};

use crate::harness::{Latency, ResultLine, histogram, now_ns, pin, spin_until};

const GAP_NS: u64 = 5_000;

/// Writes `count` trades paced `GAP_NS` apart once `go` is set.
fn writer(shm: ShmDir, count: u64, go: Arc<AtomicBool>) -> Result<()> {
    pin(0);
    let mut ring = RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(64 << 20))?;
    ring.append_record(&InstrumentDefinition {
        instrument_id: 1,
        symbol: "BTCUSDT".into(),
        ..InstrumentDefinition::default()
    })?;
    while !go.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let mut next = now_ns();
    for n in 0..count {
        spin_until(next);
        ring.append_record(&Trade {
            instrument_id: 1,
            trade_id: n,
            price: 8_303_429,
            qty: 62,
            ts_publish_ns: now_ns().cast_signed(),
            ..Trade::default()
        })?;
        next += GAP_NS;
    }
    Ok(())
}

/// How the reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// `RingReader::poll`, each Trade decoded into a struct.
    Raw,
    /// `Subscriber::next`: owned events.
    Sdk,
    /// `Subscriber::poll_views`: zero-copy views.
    SdkViews,
}

impl Reading {
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw-reader",
            Self::Sdk => "mdi-sdk",
            Self::SdkViews => "mdi-sdk-views",
        }
    }
}

fn run_one(count: u64, reading: Reading) -> Result<Latency> {
    let dir = tempfile::tempdir_in("/dev/shm").context("a shm directory")?;
    let shm = ShmDir::new(dir.path());
    let go = Arc::new(AtomicBool::new(false));
    // the ring must exist before the reader opens it
    drop(RingWriter::create(
        &shm,
        "ticks",
        &RingOptions::default().capacity(64 << 20),
    )?);
    let writing = {
        let (shm, go) = (shm.clone(), Arc::clone(&go));
        std::thread::spawn(move || writer(shm, count, go))
    };
    pin(1);
    let mut h = histogram();
    let mut seen = 0u64;
    let warmup = count / 10;
    let busy_spinning = || {
        Subscriber::builder()
            .shm_dir(dir.path())
            .stream("ticks")
            .kinds(RecordKinds::only(RecordKind::TRADE))
            .wait(WaitStrategy::BusySpin)
            .from_earliest()
            .open()
    };
    if reading == Reading::SdkViews {
        let mut subscriber = busy_spinning()?;
        go.store(true, Ordering::Release);
        while seen < count {
            subscriber.poll_views(usize::MAX, |event| {
                if let ViewEvent::Record {
                    record: RecordView::Trade(t),
                    ..
                } = event
                {
                    let now = now_ns();
                    if seen >= warmup {
                        let published = t.get_ts_publish_ns().unsigned_abs();
                        let _ = h.record(now.saturating_sub(published).max(1));
                    }
                    seen += 1;
                }
            })?;
        }
    } else if reading == Reading::Sdk {
        let mut subscriber = busy_spinning()?;
        go.store(true, Ordering::Release);
        while seen < count {
            if let Some(Event::Record {
                record: Record::Trade(t),
                ..
            }) = subscriber.next(Duration::from_secs(5))?
            {
                let now = now_ns();
                if seen >= warmup {
                    h.record(now.saturating_sub(t.ts_publish_ns.unsigned_abs()).max(1))?;
                }
                seen += 1;
            }
        }
    } else {
        let mut reader = RingReader::open(&shm, "ticks", StartAt::Earliest)?;
        go.store(true, Ordering::Release);
        while seen < count {
            reader
                .poll(usize::MAX, |e| {
                    if let ReadEvent::Record(r) = e
                        && r.kind == RecordKind::TRADE
                        && let Ok(t) = decode::<Trade>(r.body)
                    {
                        let now = now_ns();
                        if t.trade_id >= warmup {
                            let _ =
                                h.record(now.saturating_sub(t.ts_publish_ns.unsigned_abs()).max(1));
                        }
                        seen += 1;
                    }
                })
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    writing
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    Ok(Latency::of(&h))
}

/// Reading a full ring as fast as possible: the per-record cost of each, without waits.
fn drain(count: u64) -> Result<()> {
    let dir = tempfile::tempdir_in("/dev/shm").context("a shm directory")?;
    let shm = ShmDir::new(dir.path());
    let mut ring = RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(256 << 20))?;
    ring.append_record(&InstrumentDefinition {
        instrument_id: 1,
        symbol: "BTCUSDT".into(),
        ..InstrumentDefinition::default()
    })?;
    for n in 0..count {
        ring.append_record(&Trade {
            instrument_id: 1,
            trade_id: n,
            ..Trade::default()
        })?;
    }
    let mut reader = RingReader::open(&shm, "ticks", StartAt::Earliest)?;
    let started = std::time::Instant::now();
    let mut sum = 0u64;
    while reader
        .poll(usize::MAX, |e| {
            if let ReadEvent::Record(r) = e
                && r.kind == RecordKind::TRADE
                && let Ok(t) = decode::<Trade>(r.body)
            {
                sum += t.trade_id;
            }
        })
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        > 0
    {}
    let raw = started.elapsed();
    let trades = || {
        Subscriber::builder()
            .shm_dir(dir.path())
            .stream("ticks")
            .kinds(RecordKinds::only(RecordKind::TRADE))
            .from_earliest()
            .open()
    };
    let mut subscriber = trades()?;
    let started = std::time::Instant::now();
    let mut seen = 0;
    while seen < count {
        if let Some(Event::Record {
            record: Record::Trade(t),
            ..
        }) = subscriber.next(Duration::from_secs(1))?
        {
            sum = sum.wrapping_add(t.trade_id);
            seen += 1;
        }
    }
    let sdk = started.elapsed();
    let mut views = trades()?;
    let started = std::time::Instant::now();
    let mut seen = 0;
    while seen < count {
        views.poll_views(usize::MAX, |event| {
            if let ViewEvent::Record {
                record: RecordView::Trade(t),
                ..
            } = event
            {
                sum = sum.wrapping_add(t.get_trade_id());
                seen += 1;
            }
        })?;
    }
    let sdk_views = started.elapsed();
    std::hint::black_box(sum);
    for (reading, elapsed) in [
        (Reading::Raw, raw),
        (Reading::Sdk, sdk),
        (Reading::SdkViews, sdk_views),
    ] {
        let name = reading.name();
        ResultLine::new("sdk-drain", name)
            .field("records", count)
            .field(
                "ns_per_record",
                format!("{:.1}", elapsed.as_nanos() as f64 / count as f64),
            )
            .print();
    }
    Ok(())
}

/// Runs `mdbench sdk`.
pub fn run(quick: bool) -> Result<()> {
    let count = if quick { 100_000 } else { 1_000_000 };
    drain(count)?;
    for reading in [Reading::Raw, Reading::Sdk, Reading::SdkViews] {
        let latency = run_one(count, reading)?;
        ResultLine::new("sdk-latency", reading.name())
            .field("records", count)
            .latency(latency)
            .print();
    }
    Ok(())
}
