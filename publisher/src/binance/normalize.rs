//! The normalizer: venue events in, mdi records out — exact fixed point, venue sequence
//! checks, order books, K-lines — written to the `ticks` and `klines` rings.
//!
//! One path for everything that carries trades: live WebSocket frames, captures of them,
//! and history files all end in [`Normalizer::on_trade`], so a replay produces what the
//! live feed would have.
//!
//! - Every record carries the instrument id, the venue sequence and three timestamps:
//!   exchange time (0 where the venue gives none, as spot bookTicker), receive time (from
//!   the caller) and publish time (the normalizer's clock when the record is built).
//! - Decimal strings become mantissas at the instrument's exponents exactly; a value
//!   that does not fit is counted and reported (FeedStatus `value_out_of_range`), never
//!   rounded, and its event is skipped.
//! - Venue ids: a trade or aggTrade id that skips ahead is a gap (FeedStatus `gap` with
//!   the exact count); an id already seen (reconnect overlap) is a duplicate, dropped.
//! - Malformed frames are counted and skipped; FeedStatus `malformed` reports the running
//!   count at 1, 2, 4, 8, … so a flood of garbage cannot flood the ring.

use std::collections::HashMap;

use mdi_protocol::decimal::{DecimalError, parse_i64};
use mdi_protocol::records::{
    BookUpdate, FeedState, FeedStatus, InstrumentDefinition, InstrumentKind, PriceLevel, Quote,
    Side, Trade,
};
use mdi_protocol::ring::WriteError;
use mdi_protocol::time::WallNs;

use crate::binance::book::{BookOutput, DepthBook, DepthDiff, Level};
use crate::binance::frame::{self, Event, FrameError};
use crate::kline::{Interval, TradeTick};
use crate::pipeline::Rings;
use crate::pipeline::{IdCheck, KlineConfig, KlineStage, StatusWriter, VenueIds};

/// An instrument and its fixed-point exponents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentSpec {
    /// Venue symbol (`BTCUSDT`).
    pub symbol: String,
    /// Price exponent (−2: cents).
    pub price_exponent: i8,
    /// Quantity exponent.
    pub qty_exponent: i8,
}

impl InstrumentSpec {
    /// Binance's fallback: every price and quantity string has 8 decimals.
    pub fn binance_default(symbol: &str) -> Self {
        Self {
            symbol: symbol.to_owned(),
            price_exponent: -8,
            qty_exponent: -8,
        }
    }
}

/// Which trades K-lines are built from (never both: they are the same trades).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KlineSource {
    /// `@trade` events (raw trades).
    #[default]
    Trade,
    /// `@aggTrade` events.
    AggTrade,
}

/// What the venue's timestamps count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeUnit {
    /// Milliseconds (Binance's default).
    #[default]
    Millis,
    /// Microseconds (`timeUnit=MICROSECOND`).
    Micros,
}

impl TimeUnit {
    fn to_ns(self, value: i64) -> i64 {
        match self {
            Self::Millis => value.saturating_mul(1_000_000),
            Self::Micros => value.saturating_mul(1_000),
        }
    }
}

/// How the normalizer is set up.
#[derive(Debug, Clone)]
pub struct NormalizerConfig {
    /// Venue name in instrument definitions and feed status.
    pub venue: String,
    /// Known instruments (ids 1, 2, … in this order). Empty: every symbol seen is taken,
    /// at Binance's 8-decimal exponents.
    pub instruments: Vec<InstrumentSpec>,
    /// K-line intervals.
    pub intervals: Vec<Interval>,
    /// K-lines from trades or aggTrades.
    pub kline_source: KlineSource,
    /// Publish the open candle (closed = false) at most this often (ms of receive time);
    /// `None`: final candles only.
    pub kline_update_ms: Option<i64>,
    /// The venue's timestamp unit.
    pub time_unit: TimeUnit,
    /// Quiet candles are closed this long after their interval ends on the symbol's
    /// venue clock (ms).
    pub kline_close_grace_ms: i64,
    /// A symbol's venue clock runs on with the wall clock only while its events arrive
    /// within this lag (ms); see [`crate::pipeline::VenueClock`].
    pub kline_live_lag_ms: i64,
    /// Final candles stay open to correction by late trades this long (ms).
    pub kline_correction_window_ms: i64,
    /// Every this long of stream time (ms), the state a late joiner needs is written
    /// again: every instrument's definition, its book as a snapshot, its latest quote
    /// (ADR 0016); `None`: never.
    pub state_refresh_ms: Option<i64>,
}

impl Default for NormalizerConfig {
    fn default() -> Self {
        Self {
            venue: "binance".into(),
            instruments: Vec::new(),
            intervals: Interval::DEFAULTS.to_vec(),
            kline_source: KlineSource::Trade,
            kline_update_ms: Some(1_000),
            time_unit: TimeUnit::Millis,
            kline_close_grace_ms: 2_000,
            kline_live_lag_ms: 1_000,
            kline_correction_window_ms: crate::kline::DEFAULT_CORRECTION_WINDOW_MS,
            state_refresh_ms: Some(1_000),
        }
    }
}

/// What a normalizer saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizerCounters {
    /// Frames handed in.
    pub frames: u64,
    /// Records written (both rings).
    pub records: u64,
    /// Frames that were not valid JSON events (skipped).
    pub malformed: u64,
    /// Well-formed events of kinds mdi does not handle (skipped).
    pub unknown_events: u64,
    /// Events for symbols not configured (skipped).
    pub unknown_symbols: u64,
    /// Events with a value that does not fit the instrument's fixed point (skipped).
    pub out_of_range: u64,
    /// Events already seen (by venue id), dropped.
    pub duplicates: u64,
    /// Venue sequence gaps.
    pub gaps: u64,
    /// Order books discarded at a gap and synced again from a snapshot.
    pub book_resyncs: u64,
    /// Venue events missing in those gaps.
    pub missing: u64,
    /// Trades that arrived after their candle (of some interval) was final and corrected
    /// it: the candle was published again with its revision raised.
    pub late_trades: u64,
    /// Late trades that could not be placed in a candle (older than the correction
    /// window, or in an outage without a candle): in `ticks`, not in candles.
    pub late_unplaced: u64,
    /// Corrected final candles published (K-line records with revision > 0).
    pub kline_corrections: u64,
    /// Times the state for late joiners was written again.
    pub state_refreshes: u64,
    /// `serverShutdown` notices.
    pub server_shutdowns: u64,
    /// Trade records written.
    pub trades: u64,
    /// Trades of the K-line source (trades or aggTrades) that went to the candles.
    pub kline_trades: u64,
    /// Kline records written (open updates and final candles).
    pub klines: u64,
}

/// A trade as the normalizer takes it, already in fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeIn {
    /// Trade id, or aggregate trade id.
    pub id: u64,
    /// First raw trade id (= `id` for a raw trade).
    pub first_id: u64,
    /// Last raw trade id.
    pub last_id: u64,
    /// Price mantissa.
    pub price: i64,
    /// Quantity mantissa.
    pub qty: i64,
    /// Trade time (ns).
    pub time_ns: i64,
    /// The buyer was the maker: the taker sold.
    pub buyer_is_maker: bool,
    /// An aggregate trade.
    pub aggregate: bool,
}

#[derive(Debug)]
struct Instrument {
    id: u32,
    spec: InstrumentSpec,
    trade_ids: VenueIds,
    agg_ids: VenueIds,
    last_quote_id: Option<u64>,
    book: DepthBook,
    /// Its definition, written again by each state refresh.
    definition: InstrumentDefinition,
    /// Its latest quote, written again by each state refresh.
    last_quote: Option<Quote>,
}

/// Venue events to records. See the module docs.
#[derive(Debug)]
pub struct Normalizer {
    config: NormalizerConfig,
    rings: Rings,
    instruments: Vec<Instrument>,
    by_symbol: HashMap<String, usize, SymbolHash>,
    counters: NormalizerCounters,
    clock: fn() -> i64,
    klines: KlineStage,
    status: StatusWriter,
    /// The event time of the last frame handed in (ns), if it had one.
    frame_event_ns: Option<i64>,
    /// Late trades already reported in a FeedStatus, and when the last report went out
    /// (wall ns).
    late_reported: (u64, u64, i64),
    /// When the state was last written for late joiners (stream time, ns).
    refreshed_ns: i64,
    /// The latest standing state of the whole feed (connected, lagging, ...), written
    /// again by each state refresh.
    standing: Option<FeedStatus>,
    /// Latency histograms (receive → publish sampled: one frame in 16 reads the clock).
    latency: crate::pipeline::LatencyMeter,
}

/// Late trades are reported in a FeedStatus at most this often (ns).
const LATE_REPORT_EVERY_NS: i64 = 1_000_000_000;

/// FNV-1a for symbol lookups: symbols are short and chosen by the venue, not by an
/// attacker; SipHash's flood resistance costs more than the lookup itself here.
#[derive(Debug, Clone, Copy, Default)]
struct SymbolHash;

#[derive(Debug)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl std::hash::BuildHasher for SymbolHash {
    type Hasher = Fnv;

    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

/// A trade as a frame carries it: (id, first raw id, last raw id), decimal strings, the
/// venue's time in its unit.
struct FrameTrade<'a> {
    ids: (u64, u64, u64),
    price: &'a str,
    qty: &'a str,
    time: i64,
    buyer_is_maker: bool,
    aggregate: bool,
}

enum Skip {
    OutOfRange(String),
    Malformed(String),
}

fn mantissa(text: &str, exponent: i8, what: &str) -> Result<i64, Skip> {
    parse_i64(text, exponent).map_err(|e| match e {
        DecimalError::Empty | DecimalError::InvalidCharacter { .. } => {
            Skip::Malformed(format!("{what} {text:?}: {e}"))
        }
        _ => Skip::OutOfRange(format!("{what} {text:?}: {e}")),
    })
}

fn levels(raw: &[[&str; 2]], spec: &InstrumentSpec) -> Result<Vec<Level>, Skip> {
    raw.iter()
        .map(|[p, q]| {
            Ok((
                mantissa(p, spec.price_exponent, "price")?,
                mantissa(q, spec.qty_exponent, "qty")?,
            ))
        })
        .collect()
}

fn price_levels(levels: &[Level]) -> Vec<PriceLevel> {
    levels
        .iter()
        .map(|&(price, qty)| PriceLevel { price, qty })
        .collect()
}

impl Normalizer {
    /// A normalizer writing `rings`; the configured instruments' definitions are written
    /// to both rings first. `clock` gives publish times.
    pub fn new(
        config: NormalizerConfig,
        rings: Rings,
        clock: fn() -> i64,
    ) -> Result<Self, WriteError> {
        let klines = KlineStage::new(
            KlineConfig {
                intervals: config.intervals.clone(),
                update_ms: config.kline_update_ms,
                close_grace_ms: config.kline_close_grace_ms,
                live_lag_ms: config.kline_live_lag_ms,
                correction_window_ms: config.kline_correction_window_ms,
                bucket_shift_ms: 0,
            },
            clock,
        );
        let mut normalizer = Self {
            rings,
            instruments: Vec::new(),
            by_symbol: HashMap::default(),
            counters: NormalizerCounters::default(),
            clock,
            klines,
            status: StatusWriter::new(config.venue.clone(), clock),
            frame_event_ns: None,
            late_reported: (0, 0, i64::MIN),
            refreshed_ns: i64::MIN,
            standing: None,
            latency: crate::pipeline::LatencyMeter::default(),
            config,
        };
        for spec in normalizer.config.instruments.clone() {
            normalizer.add_instrument(spec, 0)?;
        }
        Ok(normalizer)
    }

    /// What was seen and done so far.
    pub fn counters(&self) -> NormalizerCounters {
        NormalizerCounters {
            kline_corrections: self.klines.corrections(),
            ..self.counters
        }
    }

    /// The event time (ns) of the last frame handed in, if it carried one: with its
    /// receive time, the feed's lag.
    pub fn frame_event_ns(&self) -> Option<i64> {
        self.frame_event_ns
    }

    /// The rings (to read positions, or to take them back).
    pub fn rings(&self) -> &Rings {
        &self.rings
    }

    /// Ends normalizing; the rings stay open until dropped.
    pub fn into_rings(self) -> Rings {
        self.rings
    }

    fn add_instrument(
        &mut self,
        spec: InstrumentSpec,
        receive_ns: i64,
    ) -> Result<usize, WriteError> {
        let index = self.instruments.len();
        let id = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let definition = InstrumentDefinition {
            instrument_id: id,
            price_exponent: spec.price_exponent,
            qty_exponent: spec.qty_exponent,
            ts_receive_ns: receive_ns,
            ts_publish_ns: (self.clock)(),
            kind: InstrumentKind::Spot,
            venue: self.config.venue.clone(),
            symbol: spec.symbol.clone(),
            ..InstrumentDefinition::default()
        };
        self.rings.ticks.append_record(&definition)?;
        self.rings.klines.append_record(&definition)?;
        self.counters.records += 2;
        self.by_symbol.insert(spec.symbol.clone(), index);
        let kept = definition;
        self.klines
            .add_instrument(id, spec.price_exponent, spec.qty_exponent);
        self.instruments.push(Instrument {
            id,
            spec,
            trade_ids: VenueIds::default(),
            agg_ids: VenueIds::default(),
            last_quote_id: None,
            book: DepthBook::new(),
            definition: kept,
            last_quote: None,
        });
        Ok(index)
    }

    /// The index of `symbol`'s instrument; unknown symbols are taken at Binance's
    /// exponents when no instruments were configured, skipped otherwise.
    pub fn instrument(
        &mut self,
        symbol: &str,
        receive_ns: i64,
    ) -> Result<Option<usize>, WriteError> {
        if let Some(&index) = self.by_symbol.get(symbol) {
            return Ok(Some(index));
        }
        if !self.config.instruments.is_empty() {
            self.counters.unknown_symbols += 1;
            return Ok(None);
        }
        self.add_instrument(InstrumentSpec::binance_default(symbol), receive_ns)
            .map(Some)
    }

    /// The instruments known so far, in id order (id = index + 1).
    pub fn instrument_specs(&self) -> Vec<InstrumentSpec> {
        self.instruments.iter().map(|i| i.spec.clone()).collect()
    }

    /// Makes `spec` known before its first event (a capture's recorded exponents). An
    /// instrument already known keeps its exponents (a mismatch is logged); with
    /// configured instruments, other symbols stay out.
    pub fn define_instrument(
        &mut self,
        spec: &InstrumentSpec,
        receive_ns: i64,
    ) -> Result<(), WriteError> {
        if let Some(&index) = self.by_symbol.get(&spec.symbol) {
            let known = &self.instruments[index].spec;
            if known != spec {
                tracing::warn!(
                    "{}: exponents {}/{} kept, {}/{} ignored",
                    spec.symbol,
                    known.price_exponent,
                    known.qty_exponent,
                    spec.price_exponent,
                    spec.qty_exponent
                );
            }
            return Ok(());
        }
        if self.config.instruments.is_empty() {
            self.add_instrument(spec.clone(), receive_ns)?;
        }
        Ok(())
    }

    /// Symbols whose order book waits for a REST snapshot.
    pub fn wanting_snapshots(&self) -> Vec<String> {
        self.instruments
            .iter()
            .filter(|i| i.book.wants_snapshot())
            .map(|i| i.spec.symbol.clone())
            .collect()
    }

    /// One frame's text as received at `receive_ns`.
    pub fn on_frame(&mut self, receive_ns: i64, text: &str) -> Result<(), WriteError> {
        let result = self.take_frame(receive_ns, text);
        // the clock is read for one frame in 16: receive → publish is a sample
        let publish_ns = self.counters.frames.is_multiple_of(16).then(self.clock);
        self.latency
            .observe(self.frame_event_ns, receive_ns, publish_ns);
        result
    }

    fn take_frame(&mut self, receive_ns: i64, text: &str) -> Result<(), WriteError> {
        self.refresh_state(receive_ns)?;
        self.counters.frames += 1;
        self.frame_event_ns = None;
        let event = match frame::parse(text) {
            Ok(event) => event,
            Err(FrameError::UnknownEvent(kind)) => {
                self.counters.unknown_events += 1;
                if self.counters.unknown_events <= 5 {
                    tracing::info!("skipping unknown event {kind:?}");
                }
                return Ok(());
            }
            Err(FrameError::Malformed(reason)) => {
                return self.skipped(0, receive_ns, Skip::Malformed(reason));
            }
        };
        self.frame_event_ns = match &event {
            Event::Trade(t) => Some(t.event_time),
            Event::AggTrade(t) => Some(t.event_time),
            Event::Depth(d) => Some(d.event_time),
            Event::BookTicker(b) => b.event_time,
            _ => None,
        }
        .map(|t| self.config.time_unit.to_ns(t));
        match event {
            Event::Trade(t) => self.frame_trade(
                t.symbol,
                FrameTrade {
                    ids: (t.trade_id, t.trade_id, t.trade_id),
                    price: t.price,
                    qty: t.qty,
                    time: t.trade_time,
                    buyer_is_maker: t.buyer_is_maker,
                    aggregate: false,
                },
                receive_ns,
            ),
            Event::AggTrade(t) => self.frame_trade(
                t.symbol,
                FrameTrade {
                    ids: (t.agg_id, t.first_id, t.last_id),
                    price: t.price,
                    qty: t.qty,
                    time: t.trade_time,
                    buyer_is_maker: t.buyer_is_maker,
                    aggregate: true,
                },
                receive_ns,
            ),
            Event::BookTicker(b) => self.with_instrument(b.symbol, receive_ns, |n, i| {
                let spec = &n.instruments[i].spec;
                let (pe, qe) = (spec.price_exponent, spec.qty_exponent);
                let quote = Quote {
                    instrument_id: n.instruments[i].id,
                    price_exponent: pe,
                    qty_exponent: qe,
                    venue_seq: b.update_id,
                    ts_exchange_ns: b.event_time.map_or(0, |t| n.config.time_unit.to_ns(t)),
                    ts_receive_ns: receive_ns,
                    ts_publish_ns: 0,
                    bid_price: mantissa(b.bid_price, pe, "bid price")?,
                    bid_qty: mantissa(b.bid_qty, qe, "bid qty")?,
                    ask_price: mantissa(b.ask_price, pe, "ask price")?,
                    ask_qty: mantissa(b.ask_qty, qe, "ask qty")?,
                };
                Ok(n.on_quote(i, quote))
            }),
            Event::Depth(d) => self.with_instrument(d.symbol, receive_ns, |n, i| {
                let spec = &n.instruments[i].spec;
                let diff = DepthDiff {
                    first_update_id: d.first_update_id,
                    final_update_id: d.final_update_id,
                    bids: levels(&d.bids, spec)?,
                    asks: levels(&d.asks, spec)?,
                };
                let exchange_ns = n.config.time_unit.to_ns(d.event_time);
                Ok(n.on_depth(i, diff, exchange_ns, receive_ns))
            }),
            Event::ServerShutdown { .. } => {
                self.counters.server_shutdowns += 1;
                Ok(())
            }
            Event::Response { .. } => Ok(()),
        }
    }

    /// A trade or aggTrade frame: venue ids checked before the values are parsed, then
    /// the common trade path.
    fn frame_trade(
        &mut self,
        symbol: &str,
        t: FrameTrade<'_>,
        receive_ns: i64,
    ) -> Result<(), WriteError> {
        self.with_instrument(symbol, receive_ns, |n, i| {
            let time_ns = n.config.time_unit.to_ns(t.time);
            let (id, first_id, last_id) = t.ids;
            match n.advance_venue_id(i, t.aggregate, id, time_ns, receive_ns) {
                Ok(true) => {}
                other => return Ok(other.map(drop)),
            }
            let spec = &n.instruments[i].spec;
            let trade = TradeIn {
                id,
                first_id,
                last_id,
                price: mantissa(t.price, spec.price_exponent, "price")?,
                qty: mantissa(t.qty, spec.qty_exponent, "qty")?,
                time_ns,
                buyer_is_maker: t.buyer_is_maker,
                aggregate: t.aggregate,
            };
            Ok(n.publish_trade(i, &trade, receive_ns))
        })
    }

    /// Runs `f` for `symbol`'s instrument; a value that cannot be used is reported.
    fn with_instrument(
        &mut self,
        symbol: &str,
        receive_ns: i64,
        f: impl FnOnce(&mut Self, usize) -> Result<Result<(), WriteError>, Skip>,
    ) -> Result<(), WriteError> {
        let Some(index) = self.instrument(symbol, receive_ns)? else {
            return Ok(());
        };
        match f(self, index) {
            Ok(written) => written,
            Err(skip) => {
                let id = self.instruments[index].id;
                self.skipped(id, receive_ns, skip)
            }
        }
    }

    fn skipped(
        &mut self,
        instrument_id: u32,
        receive_ns: i64,
        skip: Skip,
    ) -> Result<(), WriteError> {
        let (state, count, detail) = match skip {
            Skip::Malformed(detail) => {
                self.counters.malformed += 1;
                (FeedState::Malformed, self.counters.malformed, detail)
            }
            Skip::OutOfRange(detail) => {
                self.counters.out_of_range += 1;
                (
                    FeedState::ValueOutOfRange,
                    self.counters.out_of_range,
                    detail,
                )
            }
        };
        if count <= 5 {
            tracing::warn!("skipping a frame: {detail}");
        }
        if !count.is_power_of_two() {
            return Ok(());
        }
        self.status(FeedStatus {
            instrument_id,
            ts_receive_ns: receive_ns,
            count,
            state,
            detail,
            ..FeedStatus::default()
        })
    }

    fn status(&mut self, status: FeedStatus) -> Result<(), WriteError> {
        if status.instrument_id == 0 && crate::pipeline::is_standing_state(status.state) {
            self.standing = Some(status.clone());
        }
        self.status.write(&mut self.rings.ticks, status)?;
        self.counters.records += 1;
        Ok(())
    }

    /// A trade of instrument `index` (see [`Self::instrument`]): venue-id checks, the
    /// Trade record, K-lines.
    pub fn on_trade(
        &mut self,
        index: usize,
        t: &TradeIn,
        receive_ns: i64,
    ) -> Result<(), WriteError> {
        if self.advance_venue_id(index, t.aggregate, t.id, t.time_ns, receive_ns)? {
            self.publish_trade(index, t, receive_ns)?;
        }
        Ok(())
    }

    /// Checks a trade id against the last one seen: true for a new trade; a duplicate
    /// is counted (false); a skip ahead is reported as a gap with the exact count. Runs
    /// before the values are parsed, so a trade whose values cannot be used is not
    /// mistaken for a venue gap.
    fn advance_venue_id(
        &mut self,
        index: usize,
        aggregate: bool,
        id: u64,
        time_ns: i64,
        receive_ns: i64,
    ) -> Result<bool, WriteError> {
        let instrument = &mut self.instruments[index];
        let ids = if aggregate {
            &mut instrument.agg_ids
        } else {
            &mut instrument.trade_ids
        };
        let instrument_id = instrument.id;
        match ids.advance(id) {
            IdCheck::New => {}
            IdCheck::Duplicate => {
                self.counters.duplicates += 1;
                return Ok(false);
            }
            IdCheck::Gap { expected, missing } => {
                self.counters.gaps += 1;
                self.counters.missing += missing;
                self.status(FeedStatus {
                    instrument_id,
                    venue_seq: id,
                    ts_exchange_ns: time_ns,
                    ts_receive_ns: receive_ns,
                    expected_seq: expected,
                    received_seq: id,
                    count: missing,
                    state: FeedState::Gap,
                    detail: if aggregate { "aggTrade id" } else { "trade id" }.into(),
                    ..FeedStatus::default()
                })?;
            }
        }
        Ok(true)
    }

    fn publish_trade(
        &mut self,
        index: usize,
        t: &TradeIn,
        receive_ns: i64,
    ) -> Result<(), WriteError> {
        let instrument = &self.instruments[index];
        let (id, pe, qe) = (
            instrument.id,
            instrument.spec.price_exponent,
            instrument.spec.qty_exponent,
        );
        let record = Trade {
            instrument_id: id,
            price_exponent: pe,
            qty_exponent: qe,
            venue_seq: t.id,
            ts_exchange_ns: t.time_ns,
            ts_receive_ns: receive_ns,
            ts_publish_ns: (self.clock)(),
            price: t.price,
            qty: t.qty,
            trade_id: t.id,
            first_trade_id: t.first_id,
            last_trade_id: t.last_id,
            is_aggregate: t.aggregate,
            aggressor: if t.buyer_is_maker {
                Side::Sell
            } else {
                Side::Buy
            },
        };
        self.rings.ticks.append_record(&record)?;
        self.counters.records += 1;
        self.counters.trades += 1;
        let source = if t.aggregate {
            KlineSource::AggTrade
        } else {
            KlineSource::Trade
        };
        if source != self.config.kline_source {
            return Ok(());
        }
        self.counters.kline_trades += 1;
        let tick = TradeTick {
            time_ms: t.time_ns.div_euclid(1_000_000),
            first_id: i64::try_from(t.first_id).unwrap_or(i64::MAX),
            last_id: i64::try_from(t.last_id).unwrap_or(i64::MAX),
            price: t.price,
            qty: t.qty,
            buyer_is_maker: t.buyer_is_maker,
        };
        let outcome =
            self.klines
                .on_trade(&mut self.rings.klines, index, &tick, t.time_ns, receive_ns)?;
        self.counters.late_trades += u64::from(outcome.corrected || outcome.unplaced);
        self.counters.late_unplaced += u64::from(outcome.unplaced);
        self.counters.records += outcome.written;
        self.counters.klines += outcome.written;
        Ok(())
    }

    fn on_quote(&mut self, index: usize, mut quote: Quote) -> Result<(), WriteError> {
        let last = &mut self.instruments[index].last_quote_id;
        if last.is_some_and(|l| quote.venue_seq <= l) {
            self.counters.duplicates += 1;
            return Ok(());
        }
        *last = Some(quote.venue_seq);
        quote.ts_publish_ns = (self.clock)();
        self.rings.ticks.append_record(&quote)?;
        self.instruments[index].last_quote = Some(quote);
        self.counters.records += 1;
        Ok(())
    }

    fn on_depth(
        &mut self,
        index: usize,
        diff: DepthDiff,
        exchange_ns: i64,
        receive_ns: i64,
    ) -> Result<(), WriteError> {
        // the symbol's venue clock also runs on its book events (a quiet market's candles
        // close on them)
        self.klines.observe(index, exchange_ns, receive_ns);
        let mut outputs = Vec::new();
        self.instruments[index]
            .book
            .on_diff(diff, &mut |o| outputs.push(o));
        self.book_outputs(index, outputs, exchange_ns, receive_ns)
    }

    /// A REST depth snapshot for `symbol` arrived (its body text).
    pub fn on_snapshot(
        &mut self,
        receive_ns: i64,
        symbol: &str,
        text: &str,
    ) -> Result<(), WriteError> {
        let Some(index) = self.instrument(symbol, receive_ns)? else {
            return Ok(());
        };
        let snapshot = match frame::parse_depth_snapshot(text) {
            Ok(s) => s,
            Err(e) => {
                let id = self.instruments[index].id;
                return self.skipped(
                    id,
                    receive_ns,
                    Skip::Malformed(format!("depth snapshot: {e}")),
                );
            }
        };
        let spec = &self.instruments[index].spec;
        let parsed =
            levels(&snapshot.bids, spec).and_then(|b| Ok((b, levels(&snapshot.asks, spec)?)));
        let (bids, asks) = match parsed {
            Ok(levels) => levels,
            Err(skip) => {
                let id = self.instruments[index].id;
                return self.skipped(id, receive_ns, skip);
            }
        };
        let mut outputs = Vec::new();
        self.instruments[index]
            .book
            .on_snapshot(snapshot.last_update_id, &bids, &asks, &mut |o| {
                outputs.push(o)
            });
        self.book_outputs(index, outputs, 0, receive_ns)
    }

    fn book_outputs(
        &mut self,
        index: usize,
        outputs: Vec<BookOutput>,
        exchange_ns: i64,
        receive_ns: i64,
    ) -> Result<(), WriteError> {
        let instrument = &self.instruments[index];
        let (id, pe, qe) = (
            instrument.id,
            instrument.spec.price_exponent,
            instrument.spec.qty_exponent,
        );
        for output in outputs {
            let book = |first: u64, last: u64, snapshot: bool, bids: &[Level], asks: &[Level]| {
                BookUpdate {
                    instrument_id: id,
                    price_exponent: pe,
                    qty_exponent: qe,
                    is_snapshot: snapshot,
                    venue_seq: last,
                    ts_exchange_ns: exchange_ns,
                    ts_receive_ns: receive_ns,
                    ts_publish_ns: 0,
                    first_update_id: first,
                    last_update_id: last,
                    bids: price_levels(bids),
                    asks: price_levels(asks),
                }
            };
            match output {
                BookOutput::Snapshot {
                    last_update_id,
                    bids,
                    asks,
                } => {
                    let mut record = book(last_update_id, last_update_id, true, &bids, &asks);
                    record.ts_publish_ns = (self.clock)();
                    self.rings.ticks.append_record(&record)?;
                    self.counters.records += 1;
                    self.status(FeedStatus {
                        instrument_id: id,
                        venue_seq: last_update_id,
                        ts_receive_ns: receive_ns,
                        state: FeedState::ResyncDone,
                        detail: "order book synced from a snapshot".into(),
                        ..FeedStatus::default()
                    })?;
                }
                BookOutput::Delta(diff) => {
                    let mut record = book(
                        diff.first_update_id,
                        diff.final_update_id,
                        false,
                        &diff.bids,
                        &diff.asks,
                    );
                    record.ts_publish_ns = (self.clock)();
                    self.rings.ticks.append_record(&record)?;
                    self.counters.records += 1;
                }
                BookOutput::Gap { expected, received } => {
                    self.counters.gaps += 1;
                    self.counters.missing += received - expected;
                    self.status(FeedStatus {
                        instrument_id: id,
                        venue_seq: received,
                        ts_exchange_ns: exchange_ns,
                        ts_receive_ns: receive_ns,
                        expected_seq: expected,
                        received_seq: received,
                        count: received - expected,
                        state: FeedState::Gap,
                        detail: "depth update id: book discarded, resync".into(),
                        ..FeedStatus::default()
                    })?;
                    self.counters.book_resyncs += 1;
                    self.status(FeedStatus {
                        instrument_id: id,
                        ts_receive_ns: receive_ns,
                        state: FeedState::ResyncStarted,
                        ..FeedStatus::default()
                    })?;
                }
                BookOutput::StaleSnapshot {
                    last_update_id,
                    first_buffered,
                } => {
                    tracing::info!(
                        "depth snapshot at {last_update_id} is older than the first buffered update {first_buffered}: fetching again"
                    );
                }
            }
        }
        Ok(())
    }

    /// The clock moved to `now_ns` (a timer): candles whose interval ended more than
    /// `kline_close_grace_ms` ago are closed even when the market is quiet. The grace
    /// lets trades still on their way (exchange time just before the boundary) into
    /// their candle; a trade in a later interval closes the candle at once anyway.
    pub fn on_timer(&mut self, now_ns: i64) -> Result<(), WriteError> {
        // the writers' heartbeats (wall clock, also in a replay): monitoring tells a quiet
        // writer from a stuck one
        let wall = (self.clock)();
        self.rings.ticks.heartbeat(WallNs(wall));
        self.rings.klines.heartbeat(WallNs(wall));
        self.latency.flush();
        let written = self.klines.on_timer(&mut self.rings.klines, now_ns);
        self.count_klines(written)?;
        self.report_late_trades(now_ns)
    }

    /// Writes the state a late joiner needs (ADR 0016) when `state_refresh_ms` of stream
    /// time have passed since the last time: every instrument's definition (both rings),
    /// its open candles, its book as a snapshot (where synced), its latest quote. A reader joining at any
    /// moment has all of it within one period; a ring that wraps keeps it.
    pub fn refresh_state(&mut self, now_ns: i64) -> Result<(), WriteError> {
        let Some(every_ms) = self.config.state_refresh_ms else {
            return Ok(());
        };
        if now_ns.saturating_sub(self.refreshed_ns) < every_ms.saturating_mul(1_000_000) {
            return Ok(());
        }
        let first = self.refreshed_ns == i64::MIN;
        self.refreshed_ns = now_ns;
        if first {
            // the definitions were just written when the instruments were added
            return Ok(());
        }
        let publish_ns = (self.clock)();
        for index in 0..self.instruments.len() {
            let written = self
                .klines
                .refresh_open(&mut self.rings.klines, index, now_ns);
            self.count_klines(written)?;
        }
        for instrument in &self.instruments {
            let definition = InstrumentDefinition {
                ts_receive_ns: now_ns,
                ts_publish_ns: publish_ns,
                ..instrument.definition.clone()
            };
            self.rings.ticks.append_record(&definition)?;
            self.rings.klines.append_record(&definition)?;
            self.counters.records += 2;
            if let Some(id) = instrument.book.update_id() {
                let (bids, asks) = instrument.book.levels();
                self.rings.ticks.append_record(&BookUpdate {
                    instrument_id: instrument.id,
                    price_exponent: instrument.spec.price_exponent,
                    qty_exponent: instrument.spec.qty_exponent,
                    is_snapshot: true,
                    venue_seq: id,
                    ts_exchange_ns: 0,
                    ts_receive_ns: now_ns,
                    ts_publish_ns: publish_ns,
                    first_update_id: id,
                    last_update_id: id,
                    bids: price_levels(&bids),
                    asks: price_levels(&asks),
                })?;
                self.counters.records += 1;
            }
            if let Some(quote) = &instrument.last_quote {
                self.rings.ticks.append_record(&Quote {
                    ts_publish_ns: publish_ns,
                    ..*quote
                })?;
                self.counters.records += 1;
            }
        }
        if let Some(standing) = self.standing.clone() {
            self.status.write(
                &mut self.rings.ticks,
                FeedStatus {
                    ts_receive_ns: now_ns,
                    detail: if standing.detail.is_empty() {
                        "state refresh".into()
                    } else {
                        format!("state refresh: {}", standing.detail)
                    },
                    ..standing
                },
            )?;
            self.counters.records += 1;
        }
        self.counters.state_refreshes += 1;
        Ok(())
    }

    /// A connection's lag changed (see [`crate::pipeline::LagMeter`]): a FeedStatus
    /// `lagging` or `caught_up`, the lag in `count` (ms), the connection in `detail`.
    pub fn lag_changed(
        &mut self,
        now_ns: i64,
        change: crate::pipeline::LagChange,
        connection: &str,
    ) -> Result<(), WriteError> {
        let (state, lag_ms, what) = match change {
            crate::pipeline::LagChange::Lagging(lag) => (FeedState::Lagging, lag, "lagging"),
            crate::pipeline::LagChange::CaughtUp(lag) => (FeedState::CaughtUp, lag, "caught up"),
        };
        self.status(FeedStatus {
            ts_receive_ns: now_ns,
            state,
            count: lag_ms.max(0).unsigned_abs(),
            detail: format!("{connection}: {what}, events arrive {lag_ms} ms after their time"),
            ..FeedStatus::default()
        })
    }

    /// A FeedStatus `late_trades` for the trades that arrived after their candle was
    /// final since the last report (at most one a second): never silent.
    fn report_late_trades(&mut self, now_ns: i64) -> Result<(), WriteError> {
        let (reported, unplaced_reported, at) = self.late_reported;
        let (late, unplaced) = (self.counters.late_trades, self.counters.late_unplaced);
        if late == reported || now_ns.saturating_sub(at) < LATE_REPORT_EVERY_NS {
            return Ok(());
        }
        self.late_reported = (late, unplaced, now_ns);
        let (new, new_unplaced) = (late - reported, unplaced - unplaced_reported);
        self.status(FeedStatus {
            ts_receive_ns: now_ns,
            state: FeedState::LateTrades,
            count: new,
            detail: format!(
                "{new} trades arrived after their candle was final: {} corrected it, {new_unplaced} \
                 are in no candle (older than the correction window, or in an outage)",
                new - new_unplaced
            ),
            ..FeedStatus::default()
        })
    }

    /// Closes every candle whose interval ends at or before `at_ns`, without grace
    /// (the end of a history file, where no trade can still come).
    pub fn close_candles_before(&mut self, at_ns: i64) -> Result<(), WriteError> {
        let written = self.klines.close_before(&mut self.rings.klines, at_ns);
        self.count_klines(written)
    }

    /// The feed went down at `now_ns` (disconnect): FeedStatus, and candles spanning the
    /// outage are flagged, none invented.
    pub fn feed_down(&mut self, now_ns: i64, detail: &str) -> Result<(), WriteError> {
        self.status(FeedStatus {
            ts_receive_ns: now_ns,
            state: FeedState::Disconnected,
            detail: detail.into(),
            ..FeedStatus::default()
        })?;
        let written = self.klines.feed_down(&mut self.rings.klines, now_ns);
        self.count_klines(written)
    }

    /// The feed is up again at `now_ns`.
    pub fn feed_up(&mut self, now_ns: i64) -> Result<(), WriteError> {
        self.status(FeedStatus {
            ts_receive_ns: now_ns,
            state: FeedState::Connected,
            ..FeedStatus::default()
        })?;
        let written = self.klines.feed_up(&mut self.rings.klines, now_ns);
        self.count_klines(written)
    }

    fn count_klines(&mut self, written: Result<u64, WriteError>) -> Result<(), WriteError> {
        let written = written?;
        self.counters.records += written;
        self.counters.klines += written;
        Ok(())
    }
}
