//! `mdbench ingest`: Binance trade frames through frame decoding → normalizer → ring
//! commit on one core (frames/s, and frame → committed latency), with the JSON decoders
//! side by side (serde_json, which mdi uses, and sonic-rs). `mdbench kline`: trades/s
//! through the K-line builder for six intervals.

use std::time::Instant;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_publisher::binance::frame::{self, TradeEvent};
use mdi_publisher::binance::normalize::{Normalizer, NormalizerConfig};
use mdi_publisher::kline::{Interval, KlineBuilder, TradeTick};
use mdi_publisher::pipeline::Rings;
use mdi_transport::wall_clock_ns;

use crate::harness::{Latency, ResultLine, msgs_per_s, nanos};

const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];

/// `count` trade frames as Binance sends them on a combined stream, symbols interleaved,
/// trade ids consecutive per symbol, a few trades per millisecond.
fn trade_frames(count: usize) -> Vec<String> {
    let start_ms = 1_790_649_900_000i64;
    (0..count)
        .map(|i| {
            let s = i % SYMBOLS.len();
            let id = 6_720_857_582 + (i / SYMBOLS.len()) as u64;
            let t = start_ms + (i / 8) as i64;
            let price = 8_303_429 + (i * 7 % 1_000) as i64;
            format!(
                r#"{{"stream":"{}@trade","data":{{"e":"trade","E":{t},"s":"{}","t":{id},"p":"{}.{:02}000000","q":"0.{:08}","T":{t},"m":{},"M":true}}}}"#,
                SYMBOLS[s].to_lowercase(),
                SYMBOLS[s],
                price / 100,
                price % 100,
                1 + i * 13 % 99_999_999,
                i % 3 == 0
            )
        })
        .collect()
}

/// sonic-rs decoding the same frames into the same borrowed event type.
fn parse_sonic(text: &str) -> Option<TradeEvent<'_>> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        stream: &'a str,
        #[serde(borrow)]
        data: TradeEvent<'a>,
    }
    let envelope: Envelope<'_> = sonic_rs::from_str(text).ok()?;
    envelope.stream.ends_with("@trade").then_some(envelope.data)
}

/// serde_json decoding the envelope with the payload typed.
fn parse_serde(text: &str) -> Option<TradeEvent<'_>> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        stream: &'a str,
        #[serde(borrow)]
        data: TradeEvent<'a>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    envelope.stream.ends_with("@trade").then_some(envelope.data)
}

fn normalizer(shm: &ShmDir) -> Result<Normalizer> {
    // big enough not to wrap in a full run; prefaulted, as the live rings are
    let options = RingOptions::default().fresh(true);
    let rings = Rings {
        ticks: RingWriter::create(shm, "ticks", &options.clone().capacity(512 << 20))
            .context("ticks ring")?,
        klines: RingWriter::create(shm, "klines", &options.capacity(64 << 20))
            .context("klines ring")?,
    };
    Normalizer::new(NormalizerConfig::default(), rings, wall_clock_ns).context("normalizer")
}

/// Runs `mdbench ingest`.
pub fn run_ingest(quick: bool) -> Result<()> {
    let count = if quick { 300_000 } else { 3_000_000 };
    let frames = trade_frames(count);
    let bytes: usize = frames.iter().map(String::len).sum();
    eprintln!(
        "ingest: {count} trade frames of {} bytes on average, {} symbols",
        bytes / count,
        SYMBOLS.len()
    );

    // Decoding alone, same frames: mdi's decoder on sonic-rs (what the normalizer uses)
    // and on serde_json, and each library decoding the envelope on its own.
    for (name, decode) in [
        (
            "mdi-sonic-rs",
            (|f: &str| frame::parse(f).is_ok()) as fn(&str) -> bool,
        ),
        ("mdi-serde_json", |f: &str| {
            frame::parse_serde_json(f).is_ok()
        }),
        ("sonic-rs", |f: &str| parse_sonic(f).is_some()),
        ("serde_json", |f: &str| parse_serde(f).is_some()),
    ] {
        let started = Instant::now();
        let decoded = frames.iter().filter(|f| decode(f)).count();
        let elapsed = started.elapsed();
        anyhow::ensure!(decoded == count, "{name} decoded {decoded} of {count}");
        ResultLine::new("ingest-decode", name)
            .field("frames", count)
            .field("msgs_per_s", msgs_per_s(count as u64, nanos(elapsed)))
            .print();
    }

    // The whole path: decode → normalize (fixed point, id checks, K-lines) → commit.
    let dir = tempfile::tempdir_in("/dev/shm").context("a shm directory for the rings")?;
    let shm = ShmDir::new(dir.path());
    let mut n = normalizer(&shm)?;
    let started = Instant::now();
    for f in &frames {
        n.on_frame(wall_clock_ns(), f)?;
    }
    let elapsed = started.elapsed();
    let counters = n.counters();
    anyhow::ensure!(
        counters.trades == count as u64,
        "only {} trades of {count} normalized: {counters:?}",
        counters.trades
    );
    ResultLine::new("ingest-throughput", "mdi")
        .field("decoder", "sonic-rs")
        .field("frames", count)
        .field("records", counters.records)
        .field("msgs_per_s", msgs_per_s(count as u64, nanos(elapsed)))
        .print();
    drop(n);

    // Frame in hand → committed to the ring, per frame (fresh rings, same frames).
    let dir = tempfile::tempdir_in("/dev/shm").context("a shm directory for the rings")?;
    let shm = ShmDir::new(dir.path());
    let mut n = normalizer(&shm)?;
    let mut histogram = Histogram::<u64>::new(3).context("histogram")?;
    for f in &frames {
        let t0 = Instant::now();
        n.on_frame(wall_clock_ns(), f)?;
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        histogram.record(ns.max(1)).context("recording")?;
    }
    ResultLine::new("ingest-latency", "mdi")
        .field("decoder", "sonic-rs")
        .latency(Latency::of(&histogram))
        .print();
    Ok(())
}

/// Runs `mdbench kline`.
pub fn run_kline(quick: bool) -> Result<()> {
    let count: u64 = if quick { 20_000_000 } else { 200_000_000 };
    let intervals = Interval::DEFAULTS;
    let mut builders: Vec<KlineBuilder> = intervals.iter().map(|&i| KlineBuilder::new(i)).collect();
    let mut closed = 0u64;
    let start_ms = 1_790_649_900_000i64;
    let started = Instant::now();
    for i in 0..count {
        // ten trades per millisecond, prices wandering in a band
        let tick = TradeTick {
            time_ms: start_ms + (i / 10) as i64,
            first_id: i as i64,
            last_id: i as i64,
            price: 8_303_429 + (i.wrapping_mul(2_654_435_761) % 1_000) as i64,
            qty: 1 + (i % 1_000) as i64,
            buyer_is_maker: i % 3 == 0,
        };
        for builder in &mut builders {
            builder.on_trade(&tick, &mut |_| closed += 1);
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(&builders);
    anyhow::ensure!(closed > 0, "no candle closed");
    ResultLine::new("kline", "mdi")
        .field("intervals", intervals.len())
        .field("trades", count)
        .field("candles", closed)
        .field("msgs_per_s", msgs_per_s(count, nanos(elapsed)))
        .print();
    Ok(())
}
