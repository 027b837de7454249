//! The venue-neutral stages every feed adapter writes through, whatever the venue:
//!
//! - [`Rings`]: the `ticks` and `klines` rings a feed writes;
//! - [`VenueIds`]: a venue's ids (trade ids, update ids) checked for duplicates and gaps,
//!   a gap counted exactly;
//! - [`KlineStage`]: K-lines of every configured interval per instrument, from trades,
//!   written to `klines` (open updates at most every `update_ms`, finals as candles
//!   close, by a trade in a later interval or by the clock);
//! - [`StatusWriter`]: FeedStatus records stamped with the venue and the publish time.
//!
//! The Binance normalizer ([`crate::binance::normalize`]) composes them; the ITCH feed
//! ([`crate::itch::feed`]) writes through the same rings, and its trades can feed a
//! [`KlineStage`] the same way.

use mdi_protocol::records::{FeedState, FeedStatus, Kline};
use mdi_protocol::ring::{RingWriter, WriteError};

use crate::kline::{Candle, Interval, KlineBuilder, Placement, TradeTick};

/// The two rings a feed writes.
#[derive(Debug)]
pub struct Rings {
    /// Trades, quotes, book updates, feed status, instrument definitions.
    pub ticks: RingWriter,
    /// K-lines (and the instrument definitions they need).
    pub klines: RingWriter,
}

/// What a venue id said about its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdCheck {
    /// The next id (or the first): a new event.
    New,
    /// An id at or below the last one seen (a reconnect's overlap): drop the event.
    Duplicate,
    /// A new event, after `missing` ids that never came, from `expected` on.
    Gap {
        /// The first id missing.
        expected: u64,
        /// How many ids are missing.
        missing: u64,
    },
}

/// The last id a venue gave in one sequence (per instrument and kind of id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VenueIds {
    last: Option<u64>,
}

impl VenueIds {
    /// Checks `id` against the last one seen and, unless a duplicate, takes it as the
    /// last.
    pub fn advance(&mut self, id: u64) -> IdCheck {
        match self.last {
            Some(last) if id <= last => IdCheck::Duplicate,
            Some(last) if id > last + 1 => {
                self.last = Some(id);
                IdCheck::Gap {
                    expected: last + 1,
                    missing: id - (last + 1),
                }
            }
            _ => {
                self.last = Some(id);
                IdCheck::New
            }
        }
    }

    /// The last id seen.
    pub fn last(&self) -> Option<u64> {
        self.last
    }
}

/// A connection's lag: receive time − event time of its frames (ms; a venue clock a
/// little ahead of ours reads as 0). Lagging once the lag has stayed over `limit_ms` for
/// `sustain_ms`; caught up once it is back under the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagMeter {
    /// The last frame's lag.
    pub last_ms: i64,
    /// The largest lag seen.
    pub max_ms: i64,
    /// Since when (wall ms) the lag has been over the limit.
    over_since_ms: Option<i64>,
    /// Reported as lagging (and not yet as caught up).
    pub lagging: bool,
}

/// What a lag observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagChange {
    /// The lag has been over the limit for the sustain time: report it.
    Lagging(i64),
    /// The lag is under the limit again after a report: report that.
    CaughtUp(i64),
}

impl LagMeter {
    /// A frame of event time `event_ns` received at `receive_ns`.
    pub fn observe(
        &mut self,
        event_ns: i64,
        receive_ns: i64,
        limit_ms: i64,
        sustain_ms: i64,
    ) -> Option<LagChange> {
        let lag = receive_ns.saturating_sub(event_ns).max(0) / 1_000_000;
        let now_ms = receive_ns / 1_000_000;
        self.last_ms = lag;
        self.max_ms = self.max_ms.max(lag);
        if lag > limit_ms {
            let since = *self.over_since_ms.get_or_insert(now_ms);
            if !self.lagging && now_ms - since >= sustain_ms {
                self.lagging = true;
                return Some(LagChange::Lagging(lag));
            }
        } else {
            self.over_since_ms = None;
            if self.lagging {
                self.lagging = false;
                return Some(LagChange::CaughtUp(lag));
            }
        }
        None
    }
}

/// Whether a FeedStatus states how things *are* (connected, halted, lagging, ...) rather
/// than reporting an event (a gap, a malformed frame, late trades, a resync): the state
/// refresh writes the latest state again for late joiners (ADR 0016), never an event.
pub fn is_standing_state(state: FeedState) -> bool {
    matches!(
        state,
        FeedState::Connected
            | FeedState::Disconnected
            | FeedState::Reconnecting
            | FeedState::Halted
            | FeedState::Trading
            | FeedState::EndOfSession
            | FeedState::Lagging
            | FeedState::CaughtUp
    )
}

/// Writes FeedStatus records of one venue to its `ticks` ring.
#[derive(Debug, Clone)]
pub struct StatusWriter {
    venue: String,
    clock: fn() -> i64,
}

impl StatusWriter {
    /// Statuses of `venue`, publish times from `clock`.
    pub fn new(venue: impl Into<String>, clock: fn() -> i64) -> Self {
        Self {
            venue: venue.into(),
            clock,
        }
    }

    /// Appends `status`, stamped with the venue and the publish time.
    pub fn write(&self, ticks: &mut RingWriter, mut status: FeedStatus) -> Result<(), WriteError> {
        status.venue.clone_from(&self.venue);
        status.ts_publish_ns = (self.clock)();
        ticks.append_record(&status)?;
        Ok(())
    }
}

/// How a [`KlineStage`] builds candles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlineConfig {
    /// The intervals built for every instrument.
    pub intervals: Vec<Interval>,
    /// Publish the open candles at most this often (ms of receive time); `None`: only
    /// final candles.
    pub update_ms: Option<i64>,
    /// A timer closes a quiet candle this long after its interval ended (on the
    /// instrument's venue clock), so trades still on their way get in.
    pub close_grace_ms: i64,
    /// An instrument's venue clock runs on with the wall clock only while its events
    /// arrive within this lag of their event time (ms); behind that, it stands at the
    /// latest event time (ADR 0015).
    pub live_lag_ms: i64,
    /// Final candles stay open to correction by late trades this long (ms).
    pub correction_window_ms: i64,
    /// Buckets are taken on time + this (ms): 0 for UTC-aligned candles (Binance); a
    /// venue's UTC offset for candles of its session day (ITCH: New York's, so a day
    /// candle is a New York day; whole hours leave the shorter intervals where they were).
    pub bucket_shift_ms: i64,
}

impl KlineConfig {
    /// `intervals`, updates every `update_ms`, the default grace (2 s), live lag (1 s)
    /// and correction window (1 h).
    pub fn new(intervals: Vec<Interval>, update_ms: Option<i64>) -> Self {
        Self {
            intervals,
            update_ms,
            close_grace_ms: 2_000,
            live_lag_ms: 1_000,
            correction_window_ms: crate::kline::DEFAULT_CORRECTION_WINDOW_MS,
            bucket_shift_ms: 0,
        }
    }
}

/// What a trade did to the candles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KlineOutcome {
    /// Kline records written.
    pub written: u64,
    /// The trade arrived after some interval's candle for it was final, and corrected it.
    pub corrected: bool,
    /// The trade arrived after some interval's candle for it was final and could not be
    /// placed (older than the correction window, or in an outage without a candle).
    pub unplaced: bool,
}

/// An instrument's clock in venue time: its latest event time, run on by the wall clock
/// while its events arrive live (within `live_lag_ms` of their event time) — a lagging
/// or backlogged stream closes candles where the venue did, not where the wall clock is
/// (ADR 0015).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VenueClock {
    /// The latest event time seen and the wall time it arrived (ms); none yet: `None`.
    latest: Option<(i64, i64)>,
}

impl VenueClock {
    /// An event of time `event_ms` arrived at wall time `receive_ms`.
    #[inline]
    pub fn observe(&mut self, event_ms: i64, receive_ms: i64) {
        match &mut self.latest {
            Some((event, receive)) if event_ms <= *event => {
                // an older event: the clock does not go back, but its arrival says the
                // stream is behind (it is not live until something recent arrives)
                *receive = (*receive).max(receive_ms);
            }
            latest => *latest = Some((event_ms, receive_ms)),
        }
    }

    /// The venue's time at wall time `wall_ms`: the latest event time, plus the wall time
    /// since it arrived if it arrived within `live_lag_ms` of it.
    pub fn now(&self, wall_ms: i64, live_lag_ms: i64) -> Option<i64> {
        let (event, receive) = self.latest?;
        if receive.saturating_sub(event) <= live_lag_ms {
            Some(event + wall_ms.saturating_sub(receive).max(0))
        } else {
            Some(event)
        }
    }

    /// How far behind the wall clock its latest event was when it arrived (ms).
    pub fn lag_ms(&self) -> Option<i64> {
        self.latest.map(|(event, receive)| receive - event)
    }
}

/// One instrument's candles.
#[derive(Debug)]
struct InstrumentKlines {
    instrument_id: u32,
    price_exponent: i8,
    qty_exponent: i8,
    builders: Vec<KlineBuilder>,
    last_update_ms: i64,
    venue: VenueClock,
    /// The feed came back up (wall ms); the builders leave their outage at this
    /// instrument's first event after it, at that event's time.
    up_pending: Option<i64>,
}

/// K-lines of every configured interval for each instrument, written to a `klines`
/// ring. Instruments are added in order and named by their index.
#[derive(Debug)]
pub struct KlineStage {
    config: KlineConfig,
    instruments: Vec<InstrumentKlines>,
    clock: fn() -> i64,
    /// Reused buffer of the candles a step produced.
    candles: Vec<Candle>,
    /// Corrected final candles written (revision > 0).
    corrections: u64,
}

impl KlineStage {
    /// A stage building `config`'s intervals; publish times from `clock`.
    pub fn new(config: KlineConfig, clock: fn() -> i64) -> Self {
        Self {
            config,
            instruments: Vec::new(),
            clock,
            candles: Vec::new(),
            corrections: 0,
        }
    }

    /// Corrected final candles written so far (K-line records with revision > 0).
    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// Adds an instrument; its index is the number added before it.
    pub fn add_instrument(
        &mut self,
        instrument_id: u32,
        price_exponent: i8,
        qty_exponent: i8,
    ) -> usize {
        self.instruments.push(InstrumentKlines {
            instrument_id,
            price_exponent,
            qty_exponent,
            builders: self
                .config
                .intervals
                .iter()
                .map(|&i| KlineBuilder::with_correction_window(i, self.config.correction_window_ms))
                .collect(),
            last_update_ms: i64::MIN,
            venue: VenueClock::default(),
            up_pending: None,
        });
        self.instruments.len() - 1
    }

    /// A trade of instrument `index`, at `exchange_ns` (its trade time) received at
    /// `receive_ns`: candles closed by it, and the open ones when an update is due.
    #[inline]
    pub fn on_trade(
        &mut self,
        klines: &mut RingWriter,
        index: usize,
        tick: &TradeTick,
        exchange_ns: i64,
        receive_ns: i64,
    ) -> Result<KlineOutcome, WriteError> {
        let mut candles = std::mem::take(&mut self.candles);
        let instrument = &mut self.instruments[index];
        let receive_ms = receive_ns.div_euclid(1_000_000);
        instrument.venue.observe(tick.time_ms, receive_ms);
        if instrument.up_pending.take().is_some() {
            // the first event after the feed came back: the outage ends at its time (a
            // backlog sent after a reconnect continues the candles it belongs to)
            for builder in &mut instrument.builders {
                builder.feed_up(tick.time_ms + self.config.bucket_shift_ms, &mut |c| {
                    candles.push(*c);
                });
            }
        }
        let shift = self.config.bucket_shift_ms;
        let shifted = TradeTick {
            time_ms: tick.time_ms + shift,
            ..*tick
        };
        let (mut corrected, mut unplaced) = (false, false);
        for builder in &mut instrument.builders {
            match builder.on_trade(&shifted, &mut |c| candles.push(*c)) {
                Placement::Open => {}
                Placement::Corrected => corrected = true,
                Placement::Unplaced => unplaced = true,
            }
        }
        if let Some(every) = self.config.update_ms
            && receive_ms.saturating_sub(instrument.last_update_ms) >= every
        {
            instrument.last_update_ms = receive_ms;
            candles.extend(
                instrument
                    .builders
                    .iter()
                    .filter_map(|b| b.current().copied()),
            );
        }
        // most trades close no candle and are not due an update: nothing to write
        let written = if candles.is_empty() {
            Ok(0)
        } else {
            self.write(klines, index, &candles, exchange_ns, receive_ns)
        };
        candles.clear();
        self.candles = candles;
        Ok(KlineOutcome {
            written: written?,
            corrected,
            unplaced,
        })
    }

    /// An event of instrument `index` other than a trade (its venue time, for the clock
    /// that closes quiet candles).
    #[inline]
    pub fn observe(&mut self, index: usize, exchange_ns: i64, receive_ns: i64) {
        self.instruments[index].venue.observe(
            exchange_ns.div_euclid(1_000_000),
            receive_ns.div_euclid(1_000_000),
        );
    }

    /// The venue clock of instrument `index`.
    pub fn venue_clock(&self, index: usize) -> VenueClock {
        self.instruments[index].venue
    }

    /// The wall clock moved to `now_ns`: each instrument's candles whose interval ended
    /// more than the close grace ago on its venue clock are closed, also when the market
    /// is quiet. An instrument whose feed came back up without an event since is taken
    /// up again once a grace has passed.
    pub fn on_timer(&mut self, klines: &mut RingWriter, now_ns: i64) -> Result<u64, WriteError> {
        let grace_ms = self.config.close_grace_ms;
        let live_lag_ms = self.config.live_lag_ms;
        let shift = self.config.bucket_shift_ms;
        let now_ms = now_ns.div_euclid(1_000_000);
        self.each_builder(klines, now_ns, |instrument, out| {
            let Some(venue_ms) = instrument.venue.now(now_ms, live_lag_ms) else {
                return;
            };
            let venue_ms = venue_ms + shift;
            if instrument
                .up_pending
                .is_some_and(|up| now_ms.saturating_sub(up) >= grace_ms)
            {
                instrument.up_pending = None;
                for b in &mut instrument.builders {
                    b.feed_up(venue_ms, &mut |c| out.push(*c));
                }
            }
            for b in &mut instrument.builders {
                b.advance(venue_ms.saturating_sub(grace_ms), &mut |c| out.push(*c));
            }
        })
    }

    /// The state refresh (ADR 0016): writes instrument `index`'s open candle of every
    /// interval again, so a late joiner has it also when the instrument is quiet. Only
    /// where open candles are published at all (`update_ms`; a replay of history writes
    /// final candles only).
    pub fn refresh_open(
        &mut self,
        klines: &mut RingWriter,
        index: usize,
        now_ns: i64,
    ) -> Result<u64, WriteError> {
        if self.config.update_ms.is_none() {
            return Ok(0);
        }
        let mut candles = std::mem::take(&mut self.candles);
        candles.clear();
        candles.extend(
            self.instruments[index]
                .builders
                .iter()
                .filter_map(|b| b.current().copied()),
        );
        let written = self.write(klines, index, &candles, now_ns, now_ns);
        candles.clear();
        self.candles = candles;
        written
    }

    /// Closes every candle whose interval ends at or before `at_ns`, without grace.
    pub fn close_before(&mut self, klines: &mut RingWriter, at_ns: i64) -> Result<u64, WriteError> {
        let at_ms = at_ns.div_euclid(1_000_000) + self.config.bucket_shift_ms;
        self.each_builder(klines, at_ns, |instrument, out| {
            for b in &mut instrument.builders {
                b.advance(at_ms, &mut |c| out.push(*c));
            }
        })
    }

    /// The feed went down at wall time `now_ns`: each instrument's candles spanning the
    /// outage (from its venue time) are flagged.
    pub fn feed_down(&mut self, klines: &mut RingWriter, now_ns: i64) -> Result<u64, WriteError> {
        let now_ms = now_ns.div_euclid(1_000_000);
        let live_lag_ms = self.config.live_lag_ms;
        let shift = self.config.bucket_shift_ms;
        self.each_builder(klines, now_ns, |instrument, out| {
            instrument.up_pending = None;
            let at_ms = instrument.venue.now(now_ms, live_lag_ms).unwrap_or(now_ms) + shift;
            for b in &mut instrument.builders {
                b.feed_down(at_ms, &mut |c| out.push(*c));
            }
        })
    }

    /// The feed is up again at wall time `now_ns`: each instrument leaves its outage at
    /// its first event from now on (at that event's time), or a grace from now if none
    /// comes.
    pub fn feed_up(&mut self, klines: &mut RingWriter, now_ns: i64) -> Result<u64, WriteError> {
        let now_ms = now_ns.div_euclid(1_000_000);
        self.each_builder(klines, now_ns, |instrument, _| {
            instrument.up_pending = Some(now_ms);
        })
    }

    fn each_builder(
        &mut self,
        klines: &mut RingWriter,
        now_ns: i64,
        step: impl Fn(&mut InstrumentKlines, &mut Vec<Candle>),
    ) -> Result<u64, WriteError> {
        let mut candles = std::mem::take(&mut self.candles);
        let mut written = 0;
        let mut result = Ok(());
        for index in 0..self.instruments.len() {
            candles.clear();
            step(&mut self.instruments[index], &mut candles);
            match self.write(klines, index, &candles, now_ns, now_ns) {
                Ok(n) => written += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        candles.clear();
        self.candles = candles;
        result.map(|()| written)
    }

    /// Appends `candles` of instrument `index` as Kline records.
    fn write(
        &mut self,
        klines: &mut RingWriter,
        index: usize,
        candles: &[Candle],
        exchange_ns: i64,
        receive_ns: i64,
    ) -> Result<u64, WriteError> {
        let instrument = &self.instruments[index];
        for c in candles {
            let kline = Kline {
                instrument_id: instrument.instrument_id,
                price_exponent: instrument.price_exponent,
                qty_exponent: instrument.qty_exponent,
                closed: c.closed,
                spans_outage: c.spans_outage,
                venue_seq: c.last_trade_id.max(0).unsigned_abs(),
                ts_exchange_ns: exchange_ns,
                ts_receive_ns: receive_ns,
                ts_publish_ns: (self.clock)(),
                interval_ms: c.interval.ms(),
                open_time_ms: c.open_time_ms - self.config.bucket_shift_ms,
                close_time_ms: c.close_time_ms - self.config.bucket_shift_ms,
                open: c.open,
                high: c.high,
                low: c.low,
                close: c.close,
                trades: c.trades,
                first_trade_id: c.first_trade_id,
                last_trade_id: c.last_trade_id,
                revision: c.revision,
                volume: c.volume,
                quote_volume: c.quote_volume,
                taker_buy_volume: c.taker_buy_volume,
                taker_buy_quote_volume: c.taker_buy_quote_volume,
            };
            klines.append_record(&kline)?;
            self.corrections += u64::from(c.revision > 0);
        }
        Ok(candles.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a bucket shift (a venue's UTC offset), a day candle is the venue's day: New
    /// York's starts at 05:00 UTC in January; times written back are UTC.
    #[test]
    fn a_bucket_shift_makes_day_candles_the_venues_days() {
        use mdi_protocol::records::{Kline, RecordKind, decode};
        use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, ShmDir, StartAt};
        let dir = tempfile::tempdir().unwrap();
        let shm = ShmDir::new(dir.path());
        let mut klines =
            RingWriter::create(&shm, "klines", &RingOptions::default().capacity(1 << 20)).unwrap();
        let mut config = KlineConfig::new(vec![Interval::parse("1d").unwrap()], None);
        config.bucket_shift_ms = -5 * 3_600_000;
        let mut stage = KlineStage::new(config, || 0);
        let i = stage.add_instrument(1, -4, 0);
        let at = |utc: &str| mdi_transport::time::parse_utc(utc).unwrap();
        for (id, time) in [
            (1, "2024-01-02T04:59:00Z"), // still 2024-01-01 in New York
            (2, "2024-01-02T05:01:00Z"), // 2024-01-02 in New York
            (3, "2024-01-03T06:00:00Z"), // 2024-01-03: closes the day before
        ] {
            let tick = TradeTick {
                time_ms: at(time) / 1_000_000,
                first_id: id,
                last_id: id,
                price: 100 + id,
                qty: 1,
                buyer_is_maker: false,
            };
            stage
                .on_trade(&mut klines, i, &tick, at(time), at(time))
                .unwrap();
        }
        let mut reader = RingReader::open(&shm, "klines", StartAt::Earliest).unwrap();
        let mut days = Vec::new();
        reader
            .poll(100, |e| {
                if let ReadEvent::Record(r) = e
                    && r.kind == RecordKind::KLINE
                {
                    let k: Kline = decode(r.body).unwrap();
                    days.push((k.open_time_ms, k.close_time_ms, k.trades, k.first_trade_id));
                }
            })
            .unwrap();
        let ms = |utc: &str| at(utc) / 1_000_000;
        assert_eq!(
            days,
            [
                (
                    ms("2024-01-01T05:00:00Z"),
                    ms("2024-01-02T04:59:59.999Z"),
                    1,
                    1
                ),
                (
                    ms("2024-01-02T05:00:00Z"),
                    ms("2024-01-03T04:59:59.999Z"),
                    1,
                    2
                ),
            ]
        );
    }

    #[test]
    fn venue_ids_tell_new_duplicate_and_gap_exactly() {
        let mut ids = VenueIds::default();
        assert_eq!(
            ids.advance(10),
            IdCheck::New,
            "the first id starts the sequence"
        );
        assert_eq!(ids.advance(11), IdCheck::New);
        assert_eq!(ids.advance(11), IdCheck::Duplicate);
        assert_eq!(ids.advance(3), IdCheck::Duplicate);
        assert_eq!(
            ids.last(),
            Some(11),
            "a duplicate does not move the last id"
        );
        assert_eq!(
            ids.advance(15),
            IdCheck::Gap {
                expected: 12,
                missing: 3
            }
        );
        assert_eq!(ids.advance(16), IdCheck::New);
        assert_eq!(
            ids.advance(u64::MAX),
            IdCheck::Gap {
                expected: 17,
                missing: u64::MAX - 17
            }
        );
        assert_eq!(
            ids.advance(u64::MAX),
            IdCheck::Duplicate,
            "no overflow at the top"
        );
    }
}

/// The publisher's latency histograms (venue event → arrival → commit), counted by the
/// writing thread into plain histograms and added to the process's
/// [`mdi_transport::latency::FEED_LATENCY`] every [`LatencyMeter::FLUSH_EVERY`] frames
/// and at each timer, where the metrics endpoint reads them. A frame costs a bucket
/// index and a few additions.
#[derive(Debug, Default)]
pub struct LatencyMeter {
    exchange_to_receive: mdi_transport::latency::LocalHistogram,
    receive_to_publish: mdi_transport::latency::LocalHistogram,
    since_flush: u32,
}

impl LatencyMeter {
    /// Frames (or packets) between flushes into the shared histograms.
    pub const FLUSH_EVERY: u32 = 1024;

    /// One frame or packet: its venue event time (if it has one), its arrival, and the
    /// commit time of its records (if it wrote any, and the caller read the clock).
    #[inline]
    pub fn observe(&mut self, exchange_ns: Option<i64>, receive_ns: i64, publish_ns: Option<i64>) {
        if let Some(exchange) = exchange_ns {
            self.exchange_to_receive.record(receive_ns - exchange);
        }
        if let Some(publish) = publish_ns {
            self.receive_to_publish.record(publish - receive_ns);
        }
        self.since_flush += 1;
        if self.since_flush >= Self::FLUSH_EVERY {
            self.flush();
        }
    }

    /// Adds what was counted to the process's histograms.
    pub fn flush(&mut self) {
        let shared = &mdi_transport::latency::FEED_LATENCY;
        self.exchange_to_receive
            .flush_into(&shared.exchange_to_receive);
        self.receive_to_publish
            .flush_into(&shared.receive_to_publish);
        self.since_flush = 0;
    }
}
