//! K-lines built from trades, with Binance's semantics exactly (docs/formats/records.md,
//! BINANCE.md): bucket = floor(trade time / interval) · interval (UTC-aligned), close
//! time = open + interval − 1 ms; open/close = the first/last trade by id, high/low the
//! extremes; volume Σ qty, quote volume Σ price·qty, the taker-buy sums over trades whose
//! taker bought (`m` false); the raw-trade count (`l − f + 1` for an aggTrade); first/last
//! raw trade id. An interval without trades while the feed is healthy still has a candle:
//! o=h=l=c = the previous close, zero volume, ids −1. During a feed outage no candle is
//! invented; a candle whose interval overlaps an outage is flagged.
//!
//! A trade that arrives after its candle was published final (a lagging or stalled feed)
//! corrects it: the candle is published again, final, with its `revision` one higher —
//! and so are the quiet candles after it whose prices were its close. Final candles stay
//! open to correction for [`KlineBuilder::with_correction_window`] (default one hour); a
//! trade older than that, or in an interval that has no candle (an outage), cannot be
//! placed and is reported ([`Placement::Unplaced`]). ADR 0015.
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
    /// 0 as first published; n for the nth correction of a final candle.
    pub revision: u32,
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
            revision: 0,
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

/// Where a trade went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Into the open candle (or a new one it opened).
    Open,
    /// Into a final candle, which was corrected (published again, `revision` + 1).
    Corrected,
    /// Older than the final candles kept for correction, or in an interval without a
    /// candle (an outage): in no candle.
    Unplaced,
}

/// Final candles kept for correction by default: those of the last hour.
pub const DEFAULT_CORRECTION_WINDOW_MS: i64 = 3_600_000;

/// Builds one interval's candles for one instrument.
#[derive(Debug, Clone)]
pub struct KlineBuilder {
    interval: Interval,
    current: Option<Candle>,
    last_close: Option<i64>,
    /// Since when the feed is down (no empty candles are made while it is).
    outage_since_ms: Option<i64>,
    /// The latest final candles, oldest first, open to correction by a late trade.
    finals: std::collections::VecDeque<Candle>,
    /// How many final candles are kept.
    keep: usize,
}

impl KlineBuilder {
    /// A builder with no candle yet (the first trade opens one).
    pub fn new(interval: Interval) -> Self {
        Self::with_correction_window(interval, DEFAULT_CORRECTION_WINDOW_MS)
    }

    /// A builder whose final candles stay open to correction for `window_ms` (at least
    /// the last one).
    pub fn with_correction_window(interval: Interval, window_ms: i64) -> Self {
        let keep = (window_ms.max(0).unsigned_abs() / interval.ms()).clamp(1, 10_000) as usize;
        Self {
            interval,
            current: None,
            last_close: None,
            outage_since_ms: None,
            finals: std::collections::VecDeque::new(),
            keep,
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
    /// time order, with `closed == true`. A trade older than the open candle (late)
    /// corrects its final candle, which goes to `emit` again with its revision raised
    /// (and the quiet candles after it, whose prices were its close).
    #[inline]
    pub fn on_trade(&mut self, trade: &TradeTick, emit: &mut impl FnMut(&Candle)) -> Placement {
        // Most trades fall in the open candle: no bucket arithmetic (a division) for them,
        // and nothing else inlined here (the rest is out of line, so this stays small).
        if let Some(current) = &mut self.current
            && (current.open_time_ms..=current.close_time_ms).contains(&trade.time_ms)
        {
            current.add(trade);
            return Placement::Open;
        }
        self.on_trade_elsewhere(trade, emit)
    }

    /// [`Self::on_trade`] for a trade outside the open candle: it opens a new one, or
    /// corrects a final one.
    #[inline(never)]
    fn on_trade_elsewhere(
        &mut self,
        trade: &TradeTick,
        emit: &mut impl FnMut(&Candle),
    ) -> Placement {
        let bucket = self.interval.bucket(trade.time_ms);
        let latest = self
            .current
            .map(|c| c.open_time_ms)
            .or_else(|| self.finals.back().map(|c| c.open_time_ms));
        if latest.is_some_and(|open| bucket < open)
            || (self.current.is_none() && latest == Some(bucket))
        {
            return self.correct(bucket, trade, emit);
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
        Placement::Open
    }

    /// A late trade for the final candle of `bucket`: corrects it and the quiet candles
    /// after it that carried its close (the open one too, unpublished as final).
    #[cold]
    fn correct(
        &mut self,
        bucket: i64,
        trade: &TradeTick,
        emit: &mut impl FnMut(&Candle),
    ) -> Placement {
        let Some(at) = self.finals.iter().position(|c| c.open_time_ms == bucket) else {
            return Placement::Unplaced;
        };
        let mut carried = {
            let candle = &mut self.finals[at];
            candle.add(trade);
            candle.revision += 1;
            emit(candle);
            candle.close
        };
        for candle in self.finals.iter_mut().skip(at + 1) {
            if candle.trades != 0 {
                return Placement::Corrected;
            }
            if candle.close != carried {
                (candle.open, candle.high, candle.low, candle.close) =
                    (carried, carried, carried, carried);
                candle.revision += 1;
                emit(candle);
            }
            carried = candle.close;
        }
        self.last_close = Some(carried);
        if let Some(open) = &mut self.current
            && open.trades == 0
        {
            (open.open, open.high, open.low, open.close) = (carried, carried, carried, carried);
        }
        Placement::Corrected
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
            && self.after_finals(bucket)
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
        // (a candle already final for that interval — closed by the clock while the feed
        // was down — is not opened again: trades for it correct it)
        if self.current.is_none()
            && self.after_finals(bucket)
            && let Some(previous) = self.last_close
        {
            let mut c = Candle::empty(self.interval, bucket, previous);
            c.spans_outage = true;
            self.current = Some(c);
        }
    }

    /// Whether the interval opening at `bucket` is after every final candle.
    fn after_finals(&self, bucket: i64) -> bool {
        self.finals
            .back()
            .is_none_or(|last| last.open_time_ms < bucket)
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
            self.keep_final(empty);
            open += step;
        }
    }

    /// Keeps a final candle open to correction (the oldest kept is let go).
    fn keep_final(&mut self, candle: Candle) {
        if self.finals.len() == self.keep {
            self.finals.pop_front();
        }
        self.finals.push_back(candle);
    }

    fn finish(&mut self, mut candle: Candle, emit: &mut impl FnMut(&Candle)) {
        candle.closed = true;
        self.last_close = Some(candle.close);
        self.current = None;
        emit(&candle);
        self.keep_final(candle);
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
    fn a_late_trade_corrects_its_final_candle() {
        let mut b = KlineBuilder::new(Interval::parse("1s").unwrap());
        let mut out = Vec::new();
        b.on_trade(&trade(1_500, 2, 100, 1, false), &mut |c| out.push(*c));
        b.on_trade(&trade(2_500, 3, 101, 1, false), &mut |c| out.push(*c));
        assert_eq!((out.len(), out[0].revision), (1, 0));
        out.clear();
        // trade 1 (before trade 2) arrives after its candle was published final
        let placed = b.on_trade(&trade(1_900, 1, 99, 1, false), &mut |c| out.push(*c));
        assert_eq!(placed, Placement::Corrected);
        assert_eq!(out.len(), 1);
        let c = out[0];
        assert!(c.closed);
        assert_eq!((c.open_time_ms, c.revision), (1_000, 1));
        assert_eq!((c.open, c.low, c.close, c.trades), (99, 99, 100, 2));
        assert_eq!((c.first_trade_id, c.last_trade_id), (1, 2));
        // within the open candle, an older id becomes the open
        assert_eq!(
            b.on_trade(&trade(2_100, 0, 98, 1, false), &mut |c| out.push(*c)),
            Placement::Open
        );
        assert_eq!(b.current().map(|c| (c.open, c.close)), Some((98, 101)));
    }

    #[test]
    fn a_correction_carries_into_the_quiet_candles_after_it() {
        let mut b = KlineBuilder::new(Interval::parse("1s").unwrap());
        let mut out = Vec::new();
        b.on_trade(&trade(500, 1, 100, 1, false), &mut |c| out.push(*c));
        b.on_trade(&trade(3_200, 3, 105, 1, false), &mut |c| out.push(*c));
        assert_eq!(
            out.len(),
            3,
            "0 s with a trade, 1 s and 2 s quiet at its close"
        );
        out.clear();
        // trade 2 of the 0 s candle, the last by id: its close moves, and the quiet
        // candles after it carry the new close
        let placed = b.on_trade(&trade(900, 2, 102, 1, false), &mut |c| out.push(*c));
        assert_eq!(placed, Placement::Corrected);
        let seen: Vec<_> = out
            .iter()
            .map(|c| (c.open_time_ms, c.open, c.close, c.revision))
            .collect();
        assert_eq!(
            seen,
            [(0, 100, 102, 1), (1_000, 102, 102, 1), (2_000, 102, 102, 1)]
        );
        // the open 3 s candle has its own trade: its open is unchanged
        assert_eq!(b.current().map(|c| c.open), Some(105));
        // a second correction of the same candle: revision 2
        out.clear();
        b.on_trade(&trade(100, 0, 90, 1, false), &mut |c| out.push(*c));
        assert_eq!(out.len(), 1, "the close did not move: only the 0 s candle");
        assert_eq!((out[0].open, out[0].low, out[0].revision), (90, 90, 2));
    }

    #[test]
    fn a_trade_older_than_the_correction_window_is_unplaced() {
        let mut b = KlineBuilder::with_correction_window(Interval::parse("1s").unwrap(), 2_000);
        let mut out = Vec::new();
        for (i, t) in [500, 1_500, 2_500, 3_500, 4_500].into_iter().enumerate() {
            b.on_trade(&trade(t, 10 + i as i64, 100, 1, false), &mut |c| {
                out.push(*c)
            });
        }
        out.clear();
        // finals 0..3 s; the last two (2 s, 3 s) are kept
        assert_eq!(
            b.on_trade(&trade(2_700, 5, 100, 1, false), &mut |c| out.push(*c)),
            Placement::Corrected
        );
        assert_eq!(
            b.on_trade(&trade(1_700, 4, 100, 1, false), &mut |c| out.push(*c)),
            Placement::Unplaced
        );
        assert_eq!(out.len(), 1);
        // during an outage no candle was made: a late trade there has nowhere to go
        let mut b = KlineBuilder::new(Interval::parse("1s").unwrap());
        b.on_trade(&trade(500, 1, 100, 1, false), &mut |_| {});
        b.feed_down(800, &mut |_| {});
        b.feed_up(5_200, &mut |_| {});
        b.on_trade(&trade(5_500, 3, 100, 1, false), &mut |_| {});
        assert_eq!(
            b.on_trade(&trade(3_300, 2, 100, 1, false), &mut |_| {}),
            Placement::Unplaced
        );
    }
}
#[cfg(test)]
#[test]
fn sizes_probe() {
    eprintln!(
        "SIZES candle={} builder={} opt={}",
        size_of::<Candle>(),
        size_of::<KlineBuilder>(),
        size_of::<Option<Candle>>()
    );
}
