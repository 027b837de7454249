//! K-lines built from trades, with Binance's semantics exactly (docs/formats/records.md,
//! BINANCE.md): bucket = floor(trade time / interval) · interval (UTC-aligned), close
//! time = open + interval − 1 ms; open/close = the first/last trade by id, high/low the
//! extremes; volume Σ qty, quote volume Σ price·qty, the taker-buy sums over trades whose
//! taker bought (`m` false); the raw-trade count (`l − f + 1` for an aggTrade); first/last
//! raw trade id. An interval without trades while the feed is healthy still has a candle:
//! o=h=l=c = the previous close, zero volume, ids −1. During a feed outage no candle is
//! invented; a candle whose interval overlaps an outage is flagged.
//!
//! Arithmetic is exact: prices and quantities are mantissas at the instrument's exponents,
//! sums are 128-bit (quote volume at exponent price + qty).

pub use mdi_protocol::interval::{Interval, UnknownInterval};

/// One trade as the aggregator sees it: an aggTrade (several raw trades `first_id ..=
/// last_id` at one price) or a raw trade (`first_id == last_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeTick {
    /// Trade time (venue), milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// First raw trade id.
    pub first_id: i64,
    /// Last raw trade id.
    pub last_id: i64,
    /// Price mantissa.
    pub price: i64,
    /// Quantity mantissa.
    pub qty: i64,
    /// The buyer was the maker: the taker sold (Binance's `m`).
    pub buyer_is_maker: bool,
}

/// A candle: open (`closed == false`, still changing) or final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candle {
    /// The interval.
    pub interval: Interval,
    /// Open time (ms).
    pub open_time_ms: i64,
    /// Open + interval − 1 ms.
    pub close_time_ms: i64,
    /// First trade's price (previous close when empty).
    pub open: i64,
    /// Highest price.
    pub high: i64,
    /// Lowest price.
    pub low: i64,
    /// Last trade's price.
    pub close: i64,
    /// Σ qty.
    pub volume: i128,
    /// Σ price · qty.
    pub quote_volume: i128,
    /// Σ qty over taker buys.
    pub taker_buy_volume: i128,
    /// Σ price · qty over taker buys.
    pub taker_buy_quote_volume: i128,
    /// Raw trades.
    pub trades: u64,
    /// First raw trade id (−1 when empty).
    pub first_trade_id: i64,
    /// Last raw trade id (−1 when empty).
    pub last_trade_id: i64,
    /// Final.
    pub closed: bool,
    /// The feed was down during part of the interval.
    pub spans_outage: bool,
}

impl Candle {
    fn empty(interval: Interval, open_time_ms: i64, previous_close: i64) -> Self {
        Self {
            interval,
            open_time_ms,
            close_time_ms: open_time_ms + interval.ms() as i64 - 1,
            open: previous_close,
            high: previous_close,
            low: previous_close,
            close: previous_close,
            volume: 0,
            quote_volume: 0,
            taker_buy_volume: 0,
            taker_buy_quote_volume: 0,
            trades: 0,
            first_trade_id: -1,
            last_trade_id: -1,
            closed: false,
            spans_outage: false,
        }
    }

    fn add(&mut self, t: &TradeTick) {
        if self.trades == 0 {
            self.open = t.price;
            self.high = t.price;
            self.low = t.price;
            self.close = t.price;
            self.first_trade_id = t.first_id;
            self.last_trade_id = t.last_id;
        } else {
            // open/close follow trade ids, whatever order trades arrive in
            if t.first_id < self.first_trade_id {
                self.first_trade_id = t.first_id;
                self.open = t.price;
            }
            if t.last_id >= self.last_trade_id {
                self.last_trade_id = t.last_id;
                self.close = t.price;
            }
            self.high = self.high.max(t.price);
            self.low = self.low.min(t.price);
        }
        let qty = i128::from(t.qty);
        let quote = i128::from(t.price) * qty;
        self.volume += qty;
        self.quote_volume += quote;
        if !t.buyer_is_maker {
            self.taker_buy_volume += qty;
            self.taker_buy_quote_volume += quote;
        }
        self.trades += (t.last_id - t.first_id + 1).max(1).unsigned_abs();
    }
}

/// Builds one interval's candles for one instrument.
#[derive(Debug, Clone)]
pub struct KlineBuilder {
    interval: Interval,
    current: Option<Candle>,
    last_close: Option<i64>,
    /// Since when the feed is down (no empty candles are made while it is).
    outage_since_ms: Option<i64>,
}

impl KlineBuilder {
    /// A builder with no candle yet (the first trade opens one).
    pub fn new(interval: Interval) -> Self {
        Self {
            interval,
            current: None,
            last_close: None,
            outage_since_ms: None,
        }
    }

    /// The interval built.
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// The open candle, if any (`closed == false`).
    pub fn current(&self) -> Option<&Candle> {
        self.current.as_ref()
    }

    /// Adds a trade. Candles it closes — the open one, and an empty one for every
    /// interval since without a trade while the feed was healthy — go to `emit`, in
    /// time order, with `closed == true`. A trade older than the open candle (late, out
    /// of order) cannot change a published final candle: it is refused (false).
    pub fn on_trade(&mut self, trade: &TradeTick, emit: &mut impl FnMut(&Candle)) -> bool {
        // Most trades fall in the open candle: no bucket arithmetic (a division) for them.
        if let Some(current) = &mut self.current
            && (current.open_time_ms..=current.close_time_ms).contains(&trade.time_ms)
        {
            current.add(trade);
            return true;
        }
        let bucket = self.interval.bucket(trade.time_ms);
        if let Some(current) = &self.current
            && bucket < current.open_time_ms
        {
            return false;
        }
        self.close_before(bucket, emit);
        let interval = self.interval;
        let previous = self.last_close.unwrap_or(trade.price);
        let outage = self.outage_since_ms.is_some();
        let candle = self.current.get_or_insert_with(|| {
            let mut c = Candle::empty(interval, bucket, previous);
            c.spans_outage = outage;
            c
        });
        candle.add(trade);
        true
    }

    /// The clock moved to `now_ms` with no trade: closes the open candle once its
    /// interval is over, and (feed healthy) emits the empty candles of the intervals
    /// that have passed since. The open candle is then the empty one of `now_ms`'s
    /// interval, as Binance's stream shows it.
    pub fn advance(&mut self, now_ms: i64, emit: &mut impl FnMut(&Candle)) {
        let bucket = self.interval.bucket(now_ms);
        self.close_before(bucket, emit);
        if self.current.is_none()
            && self.outage_since_ms.is_none()
            && let Some(previous) = self.last_close
        {
            self.current = Some(Candle::empty(self.interval, bucket, previous));
        }
    }

    /// The feed went down at `at_ms`: the open candle is flagged, and no empty candles
    /// are made until [`KlineBuilder::feed_up`].
    pub fn feed_down(&mut self, at_ms: i64, emit: &mut impl FnMut(&Candle)) {
        self.close_before(self.interval.bucket(at_ms), emit);
        if let Some(c) = &mut self.current {
            c.spans_outage = true;
        }
        self.outage_since_ms.get_or_insert(at_ms);
    }

    /// The feed is healthy again at `at_ms`: intervals wholly inside the outage get no
    /// candle; the one the feed came back in is flagged.
    pub fn feed_up(&mut self, at_ms: i64, emit: &mut impl FnMut(&Candle)) {
        if self.outage_since_ms.take().is_none() {
            return;
        }
        let bucket = self.interval.bucket(at_ms);
        // the candle open when the feed went down closes (flagged) if its time is over
        if let Some(c) = self.current
            && c.open_time_ms < bucket
        {
            self.finish(c, emit);
        }
        if self.current.is_none()
            && let Some(previous) = self.last_close
        {
            let mut c = Candle::empty(self.interval, bucket, previous);
            c.spans_outage = true;
            self.current = Some(c);
        }
    }

    /// Closes the open candle if it is before `bucket`, then fills the healthy gap up to
    /// `bucket` with empty candles.
    fn close_before(&mut self, bucket: i64, emit: &mut impl FnMut(&Candle)) {
        let Some(current) = self.current else {
            return;
        };
        if current.open_time_ms >= bucket {
            return;
        }
        self.finish(current, emit);
        if self.outage_since_ms.is_some() {
            return;
        }
        let step = self.interval.ms() as i64;
        let mut open = current.open_time_ms + step;
        while open < bucket {
            let mut empty = Candle::empty(self.interval, open, current.close);
            empty.closed = true;
            emit(&empty);
            open += step;
        }
    }

    fn finish(&mut self, mut candle: Candle, emit: &mut impl FnMut(&Candle)) {
        candle.closed = true;
        self.last_close = Some(candle.close);
        self.current = None;
        emit(&candle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(time_ms: i64, id: i64, price: i64, qty: i64, buyer_is_maker: bool) -> TradeTick {
        TradeTick {
            time_ms,
            first_id: id,
            last_id: id,
            price,
            qty,
            buyer_is_maker,
        }
    }

    fn collect(b: &mut KlineBuilder, trades: &[TradeTick], end_ms: i64) -> Vec<Candle> {
        let mut out = Vec::new();
        for t in trades {
            b.on_trade(t, &mut |c| out.push(*c));
        }
        b.advance(end_ms, &mut |c| out.push(*c));
        out
    }

    #[test]
    fn a_candle_has_every_binance_field() {
        let mut b = KlineBuilder::new(Interval::parse("1s").unwrap());
        // BINANCE.md's BTCUSDT 1s candle: a taker buy of 0.011 at 27631.01, then a taker
        // sell of 0.2194 at 27631.00 (prices at exponent −2, quantities at −8)
        let out = collect(
            &mut b,
            &[
                trade(
                    1_682_244_927_100,
                    3_091_449_369,
                    2_763_101,
                    1_100_000,
                    false,
                ),
                trade(
                    1_682_244_927_900,
                    3_091_449_370,
                    2_763_100,
                    21_940_000,
                    true,
                ),
            ],
            1_682_244_928_001,
        );
        let c = out[0];
        assert_eq!(
            (c.open_time_ms, c.close_time_ms),
            (1_682_244_927_000, 1_682_244_927_999)
        );
        assert_eq!(
            (c.open, c.high, c.low, c.close),
            (2_763_101, 2_763_101, 2_763_100, 2_763_100)
        );
        assert_eq!(c.volume, 23_040_000); // 0.23040000
        assert_eq!(c.taker_buy_volume, 1_100_000); // 0.01100000
        // q = 27631.01·0.011 + 27631.00·0.2194 = 6366.18251 (exponent −2 + −8 = −10)
        assert_eq!(c.quote_volume, 63_661_825_100_000);
        assert_eq!(c.taker_buy_quote_volume, 3_039_411_100_000); // 303.94111
        assert_eq!(
            (c.trades, c.first_trade_id, c.last_trade_id),
            (2, 3_091_449_369, 3_091_449_370)
        );
        assert!(c.closed);
    }

    #[test]
    fn quiet_intervals_carry_the_previous_close_and_outages_invent_nothing() {
        let mut b = KlineBuilder::new(Interval::parse("1s").unwrap());
        let mut out = Vec::new();
        b.on_trade(&trade(500, 1, 100, 1, false), &mut |c| out.push(*c));
        b.on_trade(&trade(3_200, 2, 105, 1, false), &mut |c| out.push(*c));
        assert_eq!(out.len(), 3);
        assert_eq!(
            (out[1].open_time_ms, out[1].open, out[1].close),
            (1_000, 100, 100)
        );
        assert_eq!(
            (out[1].trades, out[1].first_trade_id, out[1].volume),
            (0, -1, 0)
        );
        assert_eq!(out[2].open_time_ms, 2_000);
        // feed down during 3.5 s .. 6.2 s: the 3 s candle is flagged, 4 s and 5 s have none
        out.clear();
        b.feed_down(3_500, &mut |c| out.push(*c));
        b.advance(5_000, &mut |c| out.push(*c));
        b.feed_up(6_200, &mut |c| out.push(*c));
        b.advance(7_000, &mut |c| out.push(*c));
        let opens: Vec<_> = out
            .iter()
            .map(|c| (c.open_time_ms, c.spans_outage))
            .collect();
        assert_eq!(opens, [(3_000, true), (6_000, true)]);
        assert!(out.iter().all(|c| c.closed));
        assert_eq!(
            b.current().map(|c| (c.open_time_ms, c.close)),
            Some((7_000, 105))
        );
    }

    #[test]
    fn a_late_trade_never_changes_a_final_candle() {
        let mut b = KlineBuilder::new(Interval::parse("1s").unwrap());
        let mut out = Vec::new();
        b.on_trade(&trade(1_500, 2, 100, 1, false), &mut |c| out.push(*c));
        b.on_trade(&trade(2_500, 3, 101, 1, false), &mut |c| out.push(*c));
        assert!(!b.on_trade(&trade(1_900, 1, 99, 1, false), &mut |c| out.push(*c)));
        // within the open candle, an older id becomes the open
        assert!(b.on_trade(&trade(2_100, 0, 98, 1, false), &mut |c| out.push(*c)));
        assert_eq!(b.current().map(|c| (c.open, c.close)), Some((98, 101)));
    }
}
