//! K-line properties: the candles depend only on the trades, not on how they were fed
//! (clock ticks in between, where the timer closed candles), and coarser candles are
//! exactly the merge of finer ones — empty candles included. Trades that arrive late (a
//! lagging or stalled feed, candles closed by the clock before them) correct their
//! candles: the last version of every candle is the one in-order delivery gives.

use mdi_publisher::kline::{Candle, Interval, KlineBuilder, Placement, TradeTick};
use proptest::prelude::*;

/// Trades in time and id order over a few minutes, with quiet stretches.
fn trades() -> impl Strategy<Value = Vec<TradeTick>> {
    prop::collection::vec(
        (
            0i64..40_000,
            1i64..4,
            9_000i64..11_000,
            1i64..5_000_000,
            any::<bool>(),
        ),
        1..200,
    )
    .prop_map(|steps| {
        let mut time = 1_700_000_000_000i64;
        let mut id = 1_000i64;
        steps
            .into_iter()
            .map(|(gap, raw, price, qty, maker)| {
                time += gap;
                let t = TradeTick {
                    time_ms: time,
                    first_id: id,
                    last_id: id + raw - 1,
                    price,
                    qty,
                    buyer_is_maker: maker,
                };
                id += raw;
                t
            })
            .collect()
    })
}

/// Closed candles from feeding `trades`, calling `advance` at `ticks` (clock times,
/// each placed before the next trade it does not pass), then closing at `end`.
fn candles(interval: Interval, trades: &[TradeTick], ticks: &[i64], end: i64) -> Vec<Candle> {
    let mut b = KlineBuilder::new(interval);
    let mut out = Vec::new();
    let mut ticks = ticks.iter().copied().peekable();
    for t in trades {
        while let Some(&tick) = ticks.peek() {
            if tick > t.time_ms {
                break;
            }
            b.advance(tick, &mut |c| out.push(*c));
            ticks.next();
        }
        assert_eq!(b.on_trade(t, &mut |c| out.push(*c)), Placement::Open);
    }
    b.advance(end, &mut |c| out.push(*c));
    out
}

fn merge(fine: &[Candle], coarse: Interval) -> Vec<Candle> {
    let mut out: Vec<Candle> = Vec::new();
    for c in fine {
        let open = coarse.bucket(c.open_time_ms);
        match out.last_mut() {
            Some(m) if m.open_time_ms == open => {
                if c.trades > 0 {
                    if m.trades == 0 {
                        m.open = c.open;
                        m.high = c.high;
                        m.low = c.low;
                        m.first_trade_id = c.first_trade_id;
                    } else {
                        m.high = m.high.max(c.high);
                        m.low = m.low.min(c.low);
                    }
                    m.close = c.close;
                    m.last_trade_id = c.last_trade_id;
                }
                m.volume += c.volume;
                m.quote_volume += c.quote_volume;
                m.taker_buy_volume += c.taker_buy_volume;
                m.taker_buy_quote_volume += c.taker_buy_quote_volume;
                m.trades += c.trades;
            }
            _ => {
                let mut m = *c;
                m.interval = coarse;
                m.open_time_ms = open;
                m.close_time_ms = open + coarse.ms() as i64 - 1;
                out.push(m);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn candles_do_not_depend_on_when_the_clock_ticked(
        trades in trades(),
        ticks in prop::collection::vec(0i64..1_000_000, 0..50),
    ) {
        let first = trades[0].time_ms;
        let end = trades[trades.len() - 1].time_ms + 600_000;
        let mut ticks: Vec<i64> = ticks.into_iter().map(|t| first + t).collect();
        ticks.sort_unstable();
        for interval in [Interval::parse("1s").unwrap(), Interval::parse("1m").unwrap()] {
            let plain = candles(interval, &trades, &[], end);
            let ticked = candles(interval, &trades, &ticks, end);
            prop_assert_eq!(&plain, &ticked);
            // every interval from the first trade's to the end's has exactly one candle
            let step = interval.ms() as i64;
            for pair in plain.windows(2) {
                prop_assert_eq!(pair[1].open_time_ms, pair[0].open_time_ms + step);
                prop_assert!(pair[0].closed);
            }
            let raw: u64 = trades.iter().map(|t| (t.last_id - t.first_id + 1) as u64).sum();
            prop_assert_eq!(plain.iter().map(|c| c.trades).sum::<u64>(), raw);
        }
    }

    #[test]
    fn one_second_candles_merged_equal_one_minute_and_five_minute_candles(trades in trades()) {
        let end = trades[trades.len() - 1].time_ms + 600_000;
        let seconds = candles(Interval::parse("1s").unwrap(), &trades, &[], end);
        for coarse in ["1m", "5m"] {
            let coarse = Interval::parse(coarse).unwrap();
            let direct = candles(coarse, &trades, &[], end);
            let merged = merge(&seconds, coarse);
            // the 1 s run closes more buckets before `end`; compare what both closed
            let n = direct.len().min(merged.len());
            prop_assert_eq!(&merged[..n], &direct[..n]);
            prop_assert!(direct.len() + 1 >= merged.len());
        }
    }

    #[test]
    fn late_trades_correct_their_candles_to_what_in_order_delivery_gives(
        trades in trades(),
        delays in prop::collection::vec(0i64..30_000, 200),
    ) {
        let end = trades[trades.len() - 1].time_ms + 600_000;
        // a venue sends a symbol's trades in order; each arrives up to `delay` after its
        // time (a lag, a stall and the backlog after it), never before the one before it;
        // before each arrival the clock (the wall clock, no grace: the most eager closing
        // there is) closes what it may
        let mut arrivals: Vec<(i64, TradeTick)> = Vec::new();
        for (t, d) in trades.iter().zip(delays.iter().cycle()) {
            let after = arrivals.last().map_or(i64::MIN, |(at, _)| *at);
            arrivals.push(((t.time_ms + d).max(after), *t));
        }
        for interval in [Interval::parse("1s").unwrap(), Interval::parse("1m").unwrap()] {
            let expected = candles(interval, &trades, &[], end);
            let mut b = KlineBuilder::new(interval);
            let mut out = Vec::new();
            for (at, t) in &arrivals {
                b.advance(*at, &mut |c| out.push(*c));
                let placed = b.on_trade(t, &mut |c| out.push(*c));
                prop_assert_ne!(placed, Placement::Unplaced);
            }
            b.advance(end, &mut |c| out.push(*c));
            // the last version of each candle, revisions rising one at a time
            let mut last: std::collections::BTreeMap<i64, Candle> = Default::default();
            for c in &out {
                prop_assert!(c.closed);
                if let Some(before) = last.get(&c.open_time_ms) {
                    prop_assert_eq!(c.revision, before.revision + 1);
                } else {
                    prop_assert_eq!(c.revision, 0);
                }
                last.insert(c.open_time_ms, *c);
            }
            let got: Vec<Candle> = last
                .into_values()
                .map(|c| Candle { revision: 0, ..c })
                .filter(|c| c.open_time_ms <= expected[expected.len() - 1].open_time_ms)
                .collect();
            // the eager clock may have opened candles before the first trade's: quiet
            // ones the in-order run never had (no trade before them to carry)
            let from = got
                .iter()
                .position(|c| c.open_time_ms == expected[0].open_time_ms)
                .unwrap();
            prop_assert_eq!(&got[from..], &expected[..]);
        }
    }
}
