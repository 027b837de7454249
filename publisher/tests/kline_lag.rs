//! K-lines when the feed lags (issue 20): a backlog delivered all at once, bursts held
//! back for seconds, a disconnect with the backlog sent after the reconnect. In each, the
//! last version of every candle must equal a brute-force model's of the same trades (the
//! venue's own candles), late trades must be counted, and nothing may be dropped
//! silently.
//!
//! Seen failing before the change: all at once, the wall-clock timer closed every candle
//! up to the present after the first trade and every later trade was refused (0 of the
//! candles equal); held-back bursts left candles short of their late trades.

use std::collections::BTreeMap;

use mdi_protocol::records::{Kline, RecordKind, decode};
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_publisher::binance::normalize::{InstrumentSpec, Normalizer, NormalizerConfig};
use mdi_publisher::kline::Interval;
use mdi_publisher::pipeline::Rings;

/// One aggTrade of the history.
#[derive(Debug, Clone, Copy)]
struct Agg {
    id: u64,
    price: i64, // exponent -2
    qty: i64,   // exponent -5
    time: i64,  // ms
    maker: bool,
}

/// A trading history: `n` aggTrades from `start`, gaps of 0–40 s (quiet minutes too).
fn history(n: u64, start: i64, seed: u64) -> Vec<Agg> {
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut time = start;
    let mut price = 8_300_000i64;
    (0..n)
        .map(|id| {
            time += (next() % 40_000) as i64 * if next() % 10 == 0 { 3 } else { 1 } / 7;
            price += (next() % 201) as i64 - 100;
            Agg {
                id: 1_000 + id,
                price,
                qty: 1 + (next() % 500_000) as i64,
                time,
                maker: next() % 2 == 0,
            }
        })
        .collect()
}

fn frame(t: &Agg) -> String {
    format!(
        r#"{{"stream":"btcusdt@aggTrade","data":{{"e":"aggTrade","E":{},"s":"BTCUSDT","a":{},"p":"{}.{:02}","q":"{}.{:05}","f":{},"l":{},"T":{},"m":{},"M":true}}}}"#,
        t.time,
        t.id,
        t.price / 100,
        t.price % 100,
        t.qty / 100_000,
        t.qty % 100_000,
        t.id * 3,
        t.id * 3 + 2,
        t.time,
        t.maker
    )
}

/// The venue's candles, brute force: every interval from the first trade's to the last
/// trade's, quiet ones at the previous close. (open, high, low, close, volume mantissa at
/// exponent -5, raw trades, first id, last id) by open time.
type Model = BTreeMap<i64, (i64, i64, i64, i64, i128, u64, i64, i64)>;

fn model(trades: &[Agg], interval_ms: i64) -> Model {
    let mut out: Model = BTreeMap::new();
    let first = trades[0].time / interval_ms * interval_ms;
    let last = trades[trades.len() - 1].time / interval_ms * interval_ms;
    let mut close = 0;
    let mut open = first;
    while open <= last {
        let inside: Vec<&Agg> = trades
            .iter()
            .filter(|t| t.time / interval_ms * interval_ms == open)
            .collect();
        let candle = if inside.is_empty() {
            (close, close, close, close, 0, 0, -1, -1)
        } else {
            let o = inside.iter().min_by_key(|t| t.id).unwrap();
            let c = inside.iter().max_by_key(|t| t.id).unwrap();
            (
                o.price,
                inside.iter().map(|t| t.price).max().unwrap(),
                inside.iter().map(|t| t.price).min().unwrap(),
                c.price,
                inside.iter().map(|t| i128::from(t.qty)).sum(),
                inside.len() as u64 * 3,
                (o.id * 3) as i64,
                (c.id * 3 + 2) as i64,
            )
        };
        close = candle.3;
        out.insert(open, candle);
        open += interval_ms;
    }
    out
}

fn normalizer(dir: &ShmDir, clock: fn() -> i64) -> Normalizer {
    let options = RingOptions::default().capacity(16 << 20);
    let rings = Rings {
        ticks: RingWriter::create(dir, "ticks", &options).unwrap(),
        klines: RingWriter::create(dir, "klines", &options).unwrap(),
    };
    let config = NormalizerConfig {
        instruments: vec![InstrumentSpec {
            symbol: "BTCUSDT".into(),
            price_exponent: -2,
            qty_exponent: -5,
        }],
        intervals: vec![
            Interval::parse("1m").unwrap(),
            Interval::parse("5m").unwrap(),
        ],
        kline_update_ms: Some(1_000),
        kline_source: mdi_publisher::binance::normalize::KlineSource::AggTrade,
        ..NormalizerConfig::default()
    };
    Normalizer::new(config, rings, clock).unwrap()
}

/// The last version of every final candle of `interval_ms`, as the model's tuple, and
/// how many versions were corrections.
fn published(dir: &ShmDir, interval_ms: u64) -> (Model, u64) {
    let mut reader = RingReader::open(dir, "klines", StartAt::Earliest).unwrap();
    let mut out: Model = BTreeMap::new();
    let mut corrections = 0;
    let mut versions: BTreeMap<i64, u32> = BTreeMap::new();
    while !reader.caught_up() {
        reader
            .poll(1024, |e| {
                if let ReadEvent::Record(r) = e
                    && r.kind == RecordKind::KLINE
                {
                    let k: Kline = decode(r.body).unwrap();
                    if !k.closed || k.interval_ms != interval_ms {
                        return;
                    }
                    let before = versions.insert(k.open_time_ms, k.revision);
                    assert_eq!(
                        k.revision,
                        before.map_or(0, |r| r + 1),
                        "revisions of {} go up one at a time",
                        k.open_time_ms
                    );
                    corrections += u64::from(k.revision > 0);
                    out.insert(
                        k.open_time_ms,
                        (
                            k.open,
                            k.high,
                            k.low,
                            k.close,
                            k.volume,
                            k.trades,
                            k.first_trade_id,
                            k.last_trade_id,
                        ),
                    );
                }
            })
            .unwrap();
    }
    (out, corrections)
}

/// The published candles equal the model's over the model's range.
fn check(dir: &ShmDir, trades: &[Agg], what: &str) -> u64 {
    let mut corrections = 0;
    for interval_ms in [60_000u64, 300_000] {
        let want = model(trades, interval_ms as i64);
        let (got, fixed) = published(dir, interval_ms);
        corrections += fixed;
        let got: Model = got
            .into_iter()
            .filter(|(open, _)| want.contains_key(open))
            .collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(open, candle)| got.get(open) != Some(candle))
            .map(|(open, candle)| (open, candle, got.get(open)))
            .take(3)
            .collect();
        assert!(
            differ.is_empty(),
            "{what}, {interval_ms} ms: {} of {} candles differ from the venue's, e.g. {differ:?}",
            want.iter().filter(|(o, c)| got.get(o) != Some(c)).count(),
            want.len()
        );
    }
    corrections
}

const NOW: i64 = 1_790_000_000_000; // the "present" of these runs (ms)

fn ns(ms: i64) -> i64 {
    ms * 1_000_000
}

#[test]
fn a_backlog_delivered_all_at_once_gives_the_venues_candles() {
    // two days of history ending now, all received at the same moment
    let trades = history(3_000, NOW - 2 * 86_400_000, 7);
    let end = trades[trades.len() - 1].time;
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShmDir::new(tmp.path());
    let mut n = normalizer(&dir, || 5);
    for (i, t) in trades.iter().enumerate() {
        n.on_frame(ns(end + 50), &frame(t)).unwrap();
        if i % 20 == 0 {
            n.on_timer(ns(end + 50)).unwrap();
        }
    }
    // the stream goes on live and quiet: the last candle closes on the venue's clock
    for k in 1..=600 {
        n.on_timer(ns(end + 50 + k * 1_000)).unwrap();
    }
    assert_eq!(n.counters().late_trades, 0, "{:?}", n.counters());
    drop(n);
    assert_eq!(check(&dir, &trades, "all at once"), 0, "nothing to correct");
}

#[test]
fn bursts_held_back_for_seconds_are_corrected_into_the_venues_candles() {
    let trades = history(3_000, NOW - 86_400_000, 11);
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShmDir::new(tmp.path());
    let mut n = normalizer(&dir, || 5);
    // live, but every so often the stream stalls 1–10 s and then delivers what it held;
    // the timer ticks every 250 ms of wall time throughout
    let mut wall = trades[0].time;
    let mut stalled_until = i64::MIN;
    for (i, t) in trades.iter().enumerate() {
        if i % 97 == 0 {
            stalled_until = t.time + 1_000 + (i as i64 * 37 % 9_000);
        }
        let arrives = t.time.max(stalled_until) + 20;
        while wall + 250 <= arrives {
            wall += 250;
            n.on_timer(ns(wall)).unwrap();
        }
        wall = wall.max(arrives);
        n.on_frame(ns(arrives), &frame(t)).unwrap();
    }
    for _ in 0..2_400 {
        wall += 250;
        n.on_timer(ns(wall)).unwrap();
    }
    let counters = n.counters();
    drop(n);
    assert!(
        counters.late_trades > 0,
        "the stalls made late trades: {counters:?}"
    );
    assert_eq!(counters.late_unplaced, 0, "{counters:?}");
    let corrections = check(&dir, &trades, "bursts held back");
    assert!(corrections > 0);
}

#[test]
fn a_backlog_after_a_reconnect_continues_the_candles() {
    let trades = history(2_000, NOW - 86_400_000, 13);
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShmDir::new(tmp.path());
    let mut n = normalizer(&dir, || 5);
    let cut = 700;
    let down = trades[cut].time + 100;
    let mut wall = trades[0].time;
    for t in &trades[..=cut] {
        while wall + 250 <= t.time {
            wall += 250;
            n.on_timer(ns(wall)).unwrap();
        }
        n.on_frame(ns(t.time + 20), &frame(t)).unwrap();
    }
    // disconnected for 200 s (whole minutes inside); the venue's trades meanwhile come as a backlog after the
    // reconnect, then the stream is live again
    n.feed_down(ns(down), "test disconnect").unwrap();
    let up = down + 200_000;
    while wall + 250 <= up {
        wall += 250;
        n.on_timer(ns(wall)).unwrap();
    }
    n.feed_up(ns(up)).unwrap();
    for t in &trades[cut + 1..] {
        let arrives = t.time.max(up + 10);
        while wall + 250 <= arrives {
            wall += 250;
            n.on_timer(ns(wall)).unwrap();
        }
        n.on_frame(ns(arrives), &frame(t)).unwrap();
    }
    for _ in 0..2_400 {
        wall += 250;
        n.on_timer(ns(wall)).unwrap();
    }
    let counters = n.counters();
    drop(n);
    assert_eq!(counters.late_unplaced, 0, "{counters:?}");
    check(&dir, &trades, "backlog after a reconnect");
}

/// Late trades are never silent: FeedStatus `late_trades` records (at most one a second)
/// add up to the counter, and say how many were corrected and how many placed nowhere.
#[test]
fn late_trades_are_reported_in_feed_status() {
    use mdi_protocol::records::{FeedState, FeedStatus};
    let trades = history(600, NOW - 86_400_000, 17);
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShmDir::new(tmp.path());
    let mut n = normalizer(&dir, || 5);
    // live until trade 300, then a 2 min stall, then the held trades at once
    let stall = trades[300].time;
    let mut wall = trades[0].time;
    for t in &trades {
        let arrives = if t.time >= stall && t.time < stall + 120_000 {
            stall + 120_000
        } else {
            t.time
        } + 20;
        while wall + 250 <= arrives {
            wall += 250;
            n.on_timer(ns(wall)).unwrap();
        }
        n.on_frame(ns(arrives), &frame(t)).unwrap();
    }
    for _ in 0..2_400 {
        wall += 250;
        n.on_timer(ns(wall)).unwrap();
    }
    let counters = n.counters();
    drop(n);
    let mut reader = RingReader::open(&dir, "ticks", StartAt::Earliest).unwrap();
    let mut reported = 0;
    while !reader.caught_up() {
        reader
            .poll(1024, |e| {
                if let ReadEvent::Record(r) = e
                    && r.kind == RecordKind::FEED_STATUS
                {
                    let s: FeedStatus = decode(r.body).unwrap();
                    if s.state == FeedState::LateTrades {
                        assert!(s.detail.contains("corrected"), "{s:?}");
                        reported += s.count;
                    }
                }
            })
            .unwrap();
    }
    assert!(counters.late_trades > 0, "{counters:?}");
    assert_eq!(reported, counters.late_trades, "{counters:?}");
    assert!(counters.kline_corrections > 0, "{counters:?}");
    check(&dir, &trades, "a 2 min stall");
}
