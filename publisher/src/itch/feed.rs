//! ITCH messages to mdi records, in the rings and schema of the Binance path.
//!
//! - Stock directory → InstrumentDefinition (instrument id = the stock locate; prices
//!   at ITCH's 4 decimals, quantities in shares; venue `nasdaq`).
//! - Executions (`E`, printable `C`) → Trade: the resting order's price (or the
//!   execution price), the aggressor on the other side, the match number as trade id.
//!   Non-displayed trades (`P`) and crosses (`Q`, aggressor unknown) → Trade too.
//! - Book changes are conflated per packet: one BookUpdate per stock per packet, each
//!   level with its total shares after the packet (0 removes it) — exact, fewer records;
//!   a Quote when a stock's best bid or offer changed over the packet.
//! - System events and trading actions → FeedStatus (`trading`, `halted`,
//!   `end_of_session`, …); MoldUDP64 gaps → `resync_started` / `resync_done`, and
//!   messages lost for good → `gap` with the exact count.
//!
//! Order look-ups: when the session announces a packet ([`Output::Delivering`]), the
//! books prefetch the order-table slots of all its order messages, so the lines are on
//! their way while the first messages are applied (the table is megabytes; the ring's
//! stream keeps pushing it out of L2).
//!
//! Times: ITCH stamps nanoseconds since midnight; `midnight_ns` (the session date's
//! midnight in the venue's time zone, as ns since the Unix epoch) is added to make
//! exchange times. The publish time is read once per packet (per receive burst with
//! DPDK), when its first record is written: a packet's records are committed together,
//! microseconds apart (its BookUpdates and Quotes as one ring batch, parked readers woken
//! once after them), and a clock read costs as much as writing a record.

use mdi_protocol::records::{
    BookUpdate, FeedState, FeedStatus, InstrumentDefinition, InstrumentKind, PriceLevel, Quote,
    Side, Trade,
};
use mdi_protocol::ring::WriteError;

use crate::kline::{Interval, TradeTick};
use crate::pipeline::{KlineConfig, KlineStage, Rings};
use mdi_itch::book::{Applied, Books, LevelChange};
use mdi_itch::message::{self, Header, Message, PRICE_EXPONENT};
use mdi_itch::mold::{Output, Packet};

/// The venue name on every record.
pub const VENUE: &str = "nasdaq";

/// ITCH times: nanoseconds since midnight of the session date, read on the venue's
/// clock — New York time, daylight saving included. A timestamp `t` is the local time of
/// day `t`; on the two days a year the offset changes (at 02:00 local), times from 02:00
/// on take the new offset. Built from jiff's bundled time-zone data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClock {
    /// The session date's midnight in New York, ns since the Unix epoch.
    midnight_utc_ns: i64,
    /// On a day the offset changes: from this local time of day (ns) on, add this (ns).
    shift: Option<(i64, i64)>,
}

/// The venue's time zone.
pub const VENUE_TIME_ZONE: &str = "America/New_York";

impl SessionClock {
    /// The clock of the session on `date` (New York).
    pub fn new_york(date: jiff::civil::Date) -> Option<Self> {
        let tz = jiff::tz::TimeZone::get(VENUE_TIME_ZONE).ok()?;
        // a local time as an instant: in a gap (spring forward) the later offset, when
        // repeated (fall back) the earlier
        let at = |hour: i8| {
            tz.to_ambiguous_timestamp(date.at(hour, 0, 0, 0))
                .compatible()
                .ok()
        };
        let offset_ns = |ts: jiff::Timestamp| i64::from(tz.to_offset(ts).seconds()) * 1_000_000_000;
        let midnight = at(0)?;
        let midnight_utc_ns = i64::try_from(midnight.as_nanosecond()).ok()?;
        let shift = (1..24).find_map(|hour| {
            let ts = at(hour)?;
            let delta = offset_ns(midnight) - offset_ns(ts);
            (delta != 0).then_some((i64::from(hour) * 3_600_000_000_000, delta))
        });
        Some(Self {
            midnight_utc_ns,
            shift,
        })
    }

    /// The clock of the session on `YYYY-MM-DD`; `None` if it is not a date.
    pub fn parse(date: &str) -> Option<Self> {
        let text = date.trim();
        (text.len() == 10).then_some(())?;
        Self::new_york(text.parse().ok()?)
    }

    /// The clock of the session going on at `ns` (its New York date).
    pub fn at(ns: i64) -> Option<Self> {
        let tz = jiff::tz::TimeZone::get(VENUE_TIME_ZONE).ok()?;
        let ts = jiff::Timestamp::from_nanosecond(i128::from(ns)).ok()?;
        Self::new_york(tz.to_datetime(ts).date())
    }

    /// A clock counting from `midnight_utc_ns` with no time zone (synthetic feeds whose
    /// times are UTC).
    pub fn from_utc_midnight(midnight_utc_ns: i64) -> Self {
        Self {
            midnight_utc_ns,
            shift: None,
        }
    }

    /// The session's midnight (ns since the Unix epoch).
    pub fn midnight_ns(&self) -> i64 {
        self.midnight_utc_ns
    }

    /// The venue's UTC offset at the session's midnight (ms; New York: −5 h or −4 h):
    /// K-lines bucketed on time + this make a day candle the venue's session day.
    pub fn utc_offset_ms(&self) -> i64 {
        let day = 86_400_000_000_000;
        (self.midnight_utc_ns.div_euclid(day) * day - self.midnight_utc_ns) / 1_000_000
    }

    /// An ITCH timestamp (ns since midnight) as ns since the Unix epoch.
    #[inline]
    pub fn to_utc_ns(&self, since_midnight_ns: i64) -> i64 {
        let mut ns = self.midnight_utc_ns + since_midnight_ns;
        if let Some((from, delta)) = self.shift
            && since_midnight_ns >= from
        {
            ns += delta;
        }
        ns
    }
}

/// The session's midnight in New York of a session date `YYYY-MM-DD`; `None` if it is
/// not one.
pub fn session_midnight(date: &str) -> Option<i64> {
    SessionClock::parse(date).map(|c| c.midnight_ns())
}

/// What the feed saw and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCounters {
    /// Messages taken.
    pub messages: u64,
    /// Messages that did not decode (counted, skipped).
    pub malformed: u64,
    /// Records written.
    pub records: u64,
    /// Trade records.
    pub trades: u64,
    /// K-line records (open updates, final candles and corrections).
    pub klines: u64,
    /// Stocks whose state (definition, book, best bid and offer) was written again.
    pub state_refreshes: u64,
    /// BookUpdate records.
    pub book_updates: u64,
    /// Quote records.
    pub quotes: u64,
    /// Executions marked non-printable (book updated, no Trade).
    pub non_printable: u64,
    /// Broken-trade messages (reported in the log; the Trade stays in the ring).
    pub broken_trades: u64,
    /// Messages lost for good on the MoldUDP64 session.
    pub lost: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bbo {
    bid: (u32, u64),
    ask: (u32, u64),
}

/// A packet's book changes: per stock, in the order first touched, the BookUpdate being
/// built — each level once with its total shares after the packet. The updates (and
/// their level lists' allocations) are kept from packet to packet.
#[derive(Debug, Default)]
struct PacketChanges {
    /// Per locate: 1 + its index in `stocks` if touched in this packet, else 0.
    index_of: Vec<u32>,
    /// The stocks' changes; those from `len` on are spare.
    stocks: Vec<StockChanges>,
    len: usize,
}

#[derive(Debug, Default)]
struct StockChanges {
    /// The stock's BookUpdate (instrument id = locate).
    update: BookUpdate,
    /// A change was at the best bid or offer: the stock may need a Quote.
    at_best: bool,
}

impl PacketChanges {
    /// A level's new total (0: gone).
    #[inline(always)]
    fn level(&mut self, change: &LevelChange) {
        let at = usize::from(change.locate);
        if at >= self.index_of.len() {
            self.add_stocks(at);
        }
        let index = match self.index_of[at] {
            0 => {
                if self.len == self.stocks.len() {
                    self.stocks.push(StockChanges::default());
                }
                let stock = &mut self.stocks[self.len];
                stock.update.instrument_id = u32::from(change.locate);
                stock.update.bids.clear();
                stock.update.asks.clear();
                stock.at_best = false;
                self.len += 1;
                self.index_of[at] = u32::try_from(self.len).unwrap_or(u32::MAX);
                self.len - 1
            }
            n => n as usize - 1,
        };
        let stock = &mut self.stocks[index];
        stock.at_best |= change.at_best;
        let levels = if change.side == Side::Buy {
            &mut stock.update.bids
        } else {
            &mut stock.update.asks
        };
        let price = i64::from(change.price);
        let qty = i64::try_from(change.shares).unwrap_or(i64::MAX);
        match levels.iter_mut().find(|l| l.price == price) {
            Some(level) => level.qty = qty,
            None => levels.push(PriceLevel { price, qty }),
        }
    }

    /// Room for stocks up to `locate` (one seen for the first time).
    #[cold]
    #[inline(never)]
    fn add_stocks(&mut self, locate: usize) {
        self.index_of.resize(locate + 1, 0);
    }

    /// Forgets the packet (keeping the allocations).
    fn clear(&mut self) {
        for stock in &self.stocks[..self.len] {
            if let Some(at) = self.index_of.get_mut(stock.update.instrument_id as usize) {
                *at = 0;
            }
        }
        self.len = 0;
    }
}

/// The best bid and offer of `locate` if it differs from the one last quoted (which it
/// then becomes).
fn moved_bbo(books: &Books, quoted: &mut Vec<Option<Bbo>>, locate: u16) -> Option<Bbo> {
    let (bid, ask) = books.book(locate)?.best();
    let bbo = Bbo {
        bid: bid.unwrap_or((0, 0)),
        ask: ask.unwrap_or((0, 0)),
    };
    let at = usize::from(locate);
    if at >= quoted.len() {
        quoted.resize(at + 1, None);
    }
    if quoted[at] == Some(bbo) {
        return None;
    }
    quoted[at] = Some(bbo);
    Some(bbo)
}

/// ITCH to records; see the module docs.
#[derive(Debug)]
pub struct ItchFeed {
    rings: Rings,
    books: Books,
    /// The session's clock (its date's midnight in New York); `None` until known.
    session: Option<SessionClock>,
    clock: fn() -> i64,
    /// The packet's publish time: the clock is read once per packet, when its first
    /// record is written (a clock read costs as much as writing a record).
    packet_publish_ns: Option<i64>,
    counters: FeedCounters,
    /// Levels changed in the current packet.
    changes: PacketChanges,
    /// What the books did with the message being handled (kept: reset, not rebuilt).
    applied: Applied,
    /// Last published best bid/offer per locate.
    quoted: Vec<Option<Bbo>>,
    /// The packet's last venue sequence and exchange time.
    packet_seq: u64,
    packet_ts: i64,
    /// K-lines of the executions and trades, per stock (by locate), bucketed on the
    /// session's New York time; `None` until the session is known.
    klines: Option<KlineStage>,
    /// The K-line stage's index of each locate that traded.
    kline_index: Vec<u32>,
    /// When the K-line timer last ran (wall ns).
    kline_timer_ns: i64,
    /// Latency histograms, per packet that wrote records.
    latency: crate::pipeline::LatencyMeter,
    /// Definitions by locate, written again by the state refresh.
    definitions: Vec<Option<InstrumentDefinition>>,
    /// The state refresh (ADR 0016): the round now going (its start, stream ns) and the
    /// next locate it writes.
    refresh: Option<(i64, usize)>,
    /// A whole round of the refresh takes this long of stream time (ns); 0: no refresh.
    refresh_period_ns: i64,
    /// The latest standing state (trading, halted, ...) by instrument (0: the whole
    /// feed), written again by the state refresh.
    standing: Vec<Option<(FeedState, String)>>,
}

/// The state refresh's period by default: every stock once a second of stream time.
pub const STATE_REFRESH_NS: i64 = 1_000_000_000;

/// No K-line index for a locate yet.
const NO_KLINES: u32 = u32::MAX;
/// The K-line timer (quiet candles closing) runs at most this often (ns).
const KLINE_TIMER_NS: i64 = 100_000_000;

/// The K-line stage of an ITCH session: the default intervals, open candles updated at
/// most once a second, buckets on New York time.
fn itch_klines(session: &SessionClock, clock: fn() -> i64) -> KlineStage {
    let mut config = KlineConfig::new(Interval::DEFAULTS.to_vec(), Some(1_000));
    config.bucket_shift_ms = session.utc_offset_ms();
    KlineStage::new(config, clock)
}

impl ItchFeed {
    /// A feed writing to `rings`, ITCH times read on `session` (`None`: the session of
    /// the first [`Self::date_from`]); `clock` gives publish times.
    pub fn new(rings: Rings, session: Option<SessionClock>, clock: fn() -> i64) -> Self {
        Self {
            klines: session.as_ref().map(|s| itch_klines(s, clock)),
            kline_index: Vec::new(),
            kline_timer_ns: i64::MIN,
            latency: crate::pipeline::LatencyMeter::default(),
            definitions: Vec::new(),
            refresh: None,
            refresh_period_ns: STATE_REFRESH_NS,
            standing: Vec::new(),
            rings,
            books: Books::new(),
            session,
            clock,
            packet_publish_ns: None,
            counters: FeedCounters::default(),
            changes: PacketChanges::default(),
            applied: Applied::default(),
            quoted: Vec::new(),
            packet_seq: 0,
            packet_ts: 0,
        }
    }

    /// Takes the session date from a capture time (its New York date), unless it is
    /// known already.
    pub fn date_from(&mut self, capture_ns: i64) {
        if self.session.is_none() {
            self.session = SessionClock::at(capture_ns);
            self.klines = self.session.as_ref().map(|s| itch_klines(s, self.clock));
        }
    }

    /// What was seen and written.
    pub fn counters(&self) -> FeedCounters {
        self.counters
    }

    /// The order books.
    pub fn books(&self) -> &Books {
        &self.books
    }

    /// The rings, to close them.
    pub fn into_rings(self) -> Rings {
        self.rings
    }

    /// Takes what a MoldUDP64 session says (messages, gaps, the end), received at
    /// `receive_ns`. Call [`Self::end_packet`] after each packet's outputs.
    pub fn on_output(&mut self, receive_ns: i64, output: Output<'_>) -> Result<(), WriteError> {
        match output {
            Output::Delivering(packet) => {
                self.prefetch(&packet);
                Ok(())
            }
            Output::Message { seq, message } => self.on_message(receive_ns, seq, message),
            Output::Request { .. } => Ok(()),
            Output::GapOpened { from_seq, count } => self.status(
                receive_ns,
                0,
                FeedState::ResyncStarted,
                (from_seq, from_seq + count, count),
                "MoldUDP64 gap: re-requesting",
            ),
            Output::GapRepaired => self.status(
                receive_ns,
                0,
                FeedState::ResyncDone,
                (0, 0, 0),
                "MoldUDP64 gap repaired",
            ),
            Output::Lost { from_seq, count } => {
                self.counters.lost += count;
                self.status(
                    receive_ns,
                    0,
                    FeedState::Gap,
                    (from_seq, from_seq + count, count),
                    "MoldUDP64 messages lost: re-requests unanswered",
                )
            }
            Output::EndOfSession => self.status(
                receive_ns,
                0,
                FeedState::EndOfSession,
                (0, 0, 0),
                "MoldUDP64 end of session",
            ),
        }
    }

    /// Prefetches the orders `packet`'s messages are about, fetched while the first are
    /// applied. Out of line: the per-message path through [`Self::on_output`] stays lean.
    #[inline(never)]
    fn prefetch(&self, packet: &Packet<'_>) {
        for message in packet.messages() {
            self.books.prefetch(message);
        }
    }

    /// Takes message `seq` (its bytes, type byte first).
    #[inline]
    pub fn on_message(
        &mut self,
        receive_ns: i64,
        seq: u64,
        bytes: &[u8],
    ) -> Result<(), WriteError> {
        self.counters.messages += 1;
        let message = match message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.counters.malformed += 1;
                // reported at 1, 2, 4, 8, …: a flood of garbage cannot flood the ring
                if self.counters.malformed.is_power_of_two() {
                    let count = self.counters.malformed;
                    return self.status(
                        receive_ns,
                        0,
                        FeedState::Malformed,
                        (seq, seq, count),
                        &e.to_string(),
                    );
                }
                return Ok(());
            }
        };
        // One dispatch on the type: each arm reads the header itself and the order arms
        // call the books' method for that type, so no shared step sits between decoding
        // and the arms (the compiler jumps from the type byte straight to the arm).
        match message {
            Message::AddOrder(m) => {
                self.stamp(seq, &m.header);
                self.books.add_order(m, &mut self.applied);
                self.book_changed();
            }
            Message::AddOrderMpid(m) => {
                self.stamp(seq, &m.header);
                self.books.add_order_mpid(m, &mut self.applied);
                self.book_changed();
            }
            Message::OrderCancel(m) => {
                self.stamp(seq, &m.header);
                self.books.order_cancel(m, &mut self.applied);
                self.book_changed();
            }
            Message::OrderDelete(m) => {
                self.stamp(seq, &m.header);
                self.books.order_delete(m, &mut self.applied);
                self.book_changed();
            }
            Message::OrderReplace(m) => {
                self.stamp(seq, &m.header);
                self.books.order_replace(m, &mut self.applied);
                self.book_changed();
            }
            Message::OrderExecuted(m) => {
                let ts = self.stamp(seq, &m.header).1;
                self.books.order_executed(m, &mut self.applied);
                self.book_changed();
                self.executed(receive_ns, seq, ts)?;
            }
            Message::OrderExecutedWithPrice(m) => {
                let ts = self.stamp(seq, &m.header).1;
                self.books.order_executed_with_price(m, &mut self.applied);
                self.book_changed();
                self.executed(receive_ns, seq, ts)?;
            }
            Message::StockDirectory(r) => {
                let (locate, _) = self.stamp(seq, &r.header);
                let Some(symbol) = message::symbol(&r.stock) else {
                    self.counters.malformed += 1;
                    return Ok(());
                };
                let publish_ns = self.publish_ns();
                let definition = InstrumentDefinition {
                    instrument_id: u32::from(locate),
                    price_exponent: PRICE_EXPONENT,
                    qty_exponent: 0,
                    kind: InstrumentKind::Equity,
                    ts_receive_ns: receive_ns,
                    ts_publish_ns: publish_ns,
                    tick_size: 1,
                    step_size: 1,
                    venue: VENUE.into(),
                    symbol: symbol.into(),
                    base_asset: symbol.into(),
                    quote_asset: "USD".into(),
                };
                self.rings.ticks.append_record(&definition)?;
                self.rings.klines.append_record(&definition)?;
                self.counters.records += 2;
                let at = usize::from(locate);
                if self.definitions.len() <= at {
                    self.definitions.resize(at + 1, None);
                }
                self.definitions[at] = Some(definition);
            }
            Message::SystemEvent(m) => {
                let ts = self.stamp(seq, &m.header).1;
                let (state, detail) = match m.event_code {
                    b'O' => (FeedState::Connected, "start of messages"),
                    b'S' => (FeedState::Connected, "start of system hours"),
                    b'Q' => (FeedState::Trading, "start of market hours"),
                    b'M' => (FeedState::Halted, "end of market hours"),
                    b'E' => (FeedState::Halted, "end of system hours"),
                    b'C' => (FeedState::EndOfSession, "end of messages"),
                    _ => (FeedState::Connected, "system event"),
                };
                self.status_at(receive_ns, ts, 0, state, (seq, seq, 0), detail)?;
            }
            Message::StockTradingAction(m) => {
                let (locate, ts) = self.stamp(seq, &m.header);
                let state = if m.trading_state == b'T' {
                    FeedState::Trading
                } else {
                    FeedState::Halted
                };
                let reason = String::from_utf8_lossy(&m.reason);
                let detail = format!(
                    "trading state {} reason {}",
                    char::from(m.trading_state),
                    reason.trim()
                );
                self.status_at(
                    receive_ns,
                    ts,
                    u32::from(locate),
                    state,
                    (seq, seq, 0),
                    &detail,
                )?;
            }
            Message::NonCrossTrade(m) => {
                let (locate, ts) = self.stamp(seq, &m.header);
                // the side is the non-displayed resting order's: the aggressor was opposite
                let aggressor = match m.side {
                    b'B' => Side::Sell,
                    b'S' => Side::Buy,
                    _ => Side::Unknown,
                };
                let shares = i64::from(m.shares.get());
                self.trade(
                    receive_ns,
                    seq,
                    ts,
                    locate,
                    (m.price.get(), shares),
                    aggressor,
                    m.match_number.get(),
                )?;
            }
            Message::CrossTrade(m) => {
                let (locate, ts) = self.stamp(seq, &m.header);
                let shares = i64::try_from(m.shares.get()).unwrap_or(i64::MAX);
                if shares > 0 {
                    self.trade(
                        receive_ns,
                        seq,
                        ts,
                        locate,
                        (m.cross_price.get(), shares),
                        Side::Unknown,
                        m.match_number.get(),
                    )?;
                }
            }
            Message::BrokenTrade(m) => {
                self.stamp(seq, &m.header);
                self.counters.broken_trades += 1;
                tracing::info!(match_number = m.match_number.get(), "ITCH broken trade");
            }
            // messages about neither orders nor trades: their time still stamps the
            // packet's records
            _ => {
                self.stamp(seq, message.header());
            }
        }
        Ok(())
    }

    /// Takes message `seq`'s header: it is the packet's latest. Returns its stock locate
    /// and exchange time.
    #[inline]
    fn stamp(&mut self, seq: u64, header: &Header) -> (u16, i64) {
        let since = i64::try_from(header.timestamp_ns()).unwrap_or(0);
        let ts = self.session.map_or(since, |s| s.to_utc_ns(since));
        self.packet_seq = seq;
        self.packet_ts = ts;
        (header.stock_locate.get(), ts)
    }

    /// Notes the levels the books just changed.
    #[inline(always)]
    fn book_changed(&mut self) {
        for level in self.applied.levels() {
            self.changes.level(level);
        }
    }

    /// The Trade of the execution the books just reported (message `seq` at `ts`), if
    /// the order was live and the execution printable.
    #[inline]
    fn executed(&mut self, receive_ns: i64, seq: u64, ts: i64) -> Result<(), WriteError> {
        let Some(execution) = self.applied.execution else {
            return Ok(());
        };
        if !execution.printable {
            self.counters.non_printable += 1;
            return Ok(());
        }
        let aggressor = match execution.resting_side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
            Side::Unknown => Side::Unknown,
        };
        self.trade(
            receive_ns,
            seq,
            ts,
            execution.locate,
            (execution.price, i64::from(execution.shares)),
            aggressor,
            execution.match_number,
        )
    }

    /// Ends a packet: one BookUpdate per stock whose levels changed (in the order the
    /// stocks were first touched), and a Quote where the best bid or offer moved — written
    /// as one batch (parked readers are woken once, after the last).
    pub fn end_packet(&mut self, receive_ns: i64) -> Result<(), WriteError> {
        if self.changes.len > 0 {
            let publish_ns = self.publish_ns();
            let Self {
                rings,
                books,
                changes,
                quoted,
                counters,
                packet_seq,
                packet_ts,
                ..
            } = self;
            let mut batch = rings.ticks.batch();
            for stock in &mut changes.stocks[..changes.len] {
                let update = &mut stock.update;
                update.price_exponent = PRICE_EXPONENT;
                update.qty_exponent = 0;
                update.is_snapshot = false;
                update.venue_seq = *packet_seq;
                update.ts_exchange_ns = *packet_ts;
                update.ts_receive_ns = receive_ns;
                update.ts_publish_ns = publish_ns;
                update.first_update_id = *packet_seq;
                update.last_update_id = *packet_seq;
                batch.append_record(&*update)?;
                counters.book_updates += 1;
                counters.records += 1;
                // the best bid and offer cannot have moved unless a change was at one of them
                if !stock.at_best {
                    continue;
                }
                let locate = u16::try_from(update.instrument_id).unwrap_or(u16::MAX);
                if let Some(bbo) = moved_bbo(books, quoted, locate) {
                    let qty = |q: u64| i64::try_from(q).unwrap_or(i64::MAX);
                    batch.append_record(&Quote {
                        instrument_id: u32::from(locate),
                        price_exponent: PRICE_EXPONENT,
                        qty_exponent: 0,
                        venue_seq: *packet_seq,
                        ts_exchange_ns: *packet_ts,
                        ts_receive_ns: receive_ns,
                        ts_publish_ns: publish_ns,
                        bid_price: i64::from(bbo.bid.0),
                        bid_qty: qty(bbo.bid.1),
                        ask_price: i64::from(bbo.ask.0),
                        ask_qty: qty(bbo.ask.1),
                    })?;
                    counters.quotes += 1;
                    counters.records += 1;
                }
            }
        }
        self.changes.clear();
        if let Some(publish_ns) = self.packet_publish_ns.take() {
            self.latency
                .observe(Some(self.packet_ts), receive_ns, Some(publish_ns));
        }
        self.refresh_state(receive_ns)?;
        // quiet candles close on their stock's venue clock (at most every 100 ms)
        self.on_timer(receive_ns)
    }

    /// Sets how long a whole round of the state refresh takes (stream ns); 0: none.
    pub fn set_state_refresh(&mut self, period_ns: i64) {
        self.refresh_period_ns = period_ns;
    }

    /// The state refresh (ADR 0016), spread round-robin over its period so that no packet
    /// carries every stock's: after each packet, the stocks due by now in this round get
    /// their definition (both rings), their open candles, their book as a snapshot and
    /// their best bid and offer again — the book as it stands after the packet.
    fn refresh_state(&mut self, receive_ns: i64) -> Result<(), WriteError> {
        let period = self.refresh_period_ns;
        let now = self.packet_ts;
        if period <= 0 || self.definitions.is_empty() {
            return Ok(());
        }
        let (start, mut next) = *self.refresh.get_or_insert((now, 0));
        let stocks = self.definitions.len();
        let elapsed = now.saturating_sub(start).clamp(0, period);
        let due = usize::try_from(i128::from(elapsed) * stocks as i128 / i128::from(period))
            .unwrap_or(stocks);
        let publish_ns = (self.clock)();
        if next == 0 && due > 0 {
            // a round starts: the whole feed's standing state first
            self.refresh_standing(0, receive_ns)?;
        }
        while next < due.min(stocks) {
            self.refresh_stock(next, receive_ns, publish_ns)?;
            next += 1;
        }
        self.refresh = Some(if next >= stocks && elapsed >= period {
            (now, 0)
        } else {
            (start, next)
        });
        Ok(())
    }

    fn refresh_stock(
        &mut self,
        at: usize,
        receive_ns: i64,
        publish_ns: i64,
    ) -> Result<(), WriteError> {
        let Some(definition) = &self.definitions[at] else {
            return Ok(());
        };
        let definition = InstrumentDefinition {
            ts_receive_ns: receive_ns,
            ts_publish_ns: publish_ns,
            ..definition.clone()
        };
        self.rings.ticks.append_record(&definition)?;
        self.rings.klines.append_record(&definition)?;
        self.counters.records += 2;
        if let (Some(klines), Some(&index)) = (&mut self.klines, self.kline_index.get(at))
            && index != NO_KLINES
        {
            let written =
                klines.refresh_open(&mut self.rings.klines, index as usize, receive_ns)?;
            self.counters.klines += written;
            self.counters.records += written;
        }
        let locate = u16::try_from(at).unwrap_or(u16::MAX);
        let qty = |q: u64| i64::try_from(q).unwrap_or(i64::MAX);
        let levels = |side: &mdi_itch::book::Ladder| -> Vec<PriceLevel> {
            side.iter()
                .map(|(price, shares)| PriceLevel {
                    price: i64::from(price),
                    qty: qty(shares),
                })
                .collect()
        };
        let (bids, asks) = self
            .books
            .book(locate)
            .map_or((Vec::new(), Vec::new()), |b| {
                (levels(&b.bids), levels(&b.asks))
            });
        self.rings.ticks.append_record(&BookUpdate {
            instrument_id: u32::from(locate),
            price_exponent: PRICE_EXPONENT,
            qty_exponent: 0,
            is_snapshot: true,
            venue_seq: self.packet_seq,
            ts_exchange_ns: self.packet_ts,
            ts_receive_ns: receive_ns,
            ts_publish_ns: publish_ns,
            first_update_id: self.packet_seq,
            last_update_id: self.packet_seq,
            bids,
            asks,
        })?;
        self.counters.records += 1;
        if let Some(Some(bbo)) = self.quoted.get(at) {
            self.rings.ticks.append_record(&Quote {
                instrument_id: u32::from(locate),
                price_exponent: PRICE_EXPONENT,
                qty_exponent: 0,
                venue_seq: self.packet_seq,
                ts_exchange_ns: self.packet_ts,
                ts_receive_ns: receive_ns,
                ts_publish_ns: publish_ns,
                bid_price: i64::from(bbo.bid.0),
                bid_qty: qty(bbo.bid.1),
                ask_price: i64::from(bbo.ask.0),
                ask_qty: qty(bbo.ask.1),
            })?;
            self.counters.records += 1;
        }
        if at != 0 {
            self.refresh_standing(at, receive_ns)?;
        }
        self.counters.state_refreshes += 1;
        Ok(())
    }

    /// Writes the standing state of instrument `at` (0: the whole feed) again, if any.
    fn refresh_standing(&mut self, at: usize, receive_ns: i64) -> Result<(), WriteError> {
        let Some(Some((state, detail))) = self.standing.get(at).cloned() else {
            return Ok(());
        };
        let seq = self.packet_seq;
        self.status_at(
            receive_ns,
            self.packet_ts,
            u32::try_from(at).unwrap_or(0),
            state,
            (seq, seq, 0),
            &format!("state refresh: {detail}"),
        )
    }

    /// The publish time of the current packet's records.
    #[inline]
    fn publish_ns(&mut self) -> i64 {
        *self.packet_publish_ns.get_or_insert_with(self.clock)
    }

    #[allow(clippy::too_many_arguments)]
    fn trade(
        &mut self,
        receive_ns: i64,
        seq: u64,
        ts: i64,
        locate: u16,
        (price, shares): (u32, i64),
        aggressor: Side,
        match_number: u64,
    ) -> Result<(), WriteError> {
        let publish_ns = self.publish_ns();
        self.rings.ticks.append_record(&Trade {
            instrument_id: u32::from(locate),
            price_exponent: PRICE_EXPONENT,
            qty_exponent: 0,
            aggressor,
            venue_seq: seq,
            ts_exchange_ns: ts,
            ts_receive_ns: receive_ns,
            ts_publish_ns: publish_ns,
            price: i64::from(price),
            qty: shares,
            trade_id: match_number,
            first_trade_id: match_number,
            last_trade_id: match_number,
            is_aggregate: false,
        })?;
        self.counters.trades += 1;
        self.counters.records += 1;
        self.trade_klines(
            receive_ns,
            ts,
            locate,
            price,
            shares,
            aggressor,
            match_number,
        )
    }

    /// A trade into the K-lines of its stock (its instrument added on its first trade).
    #[allow(clippy::too_many_arguments)]
    fn trade_klines(
        &mut self,
        receive_ns: i64,
        ts: i64,
        locate: u16,
        price: u32,
        shares: i64,
        aggressor: Side,
        match_number: u64,
    ) -> Result<(), WriteError> {
        let Some(klines) = &mut self.klines else {
            return Ok(());
        };
        let slot = usize::from(locate);
        if self.kline_index.len() <= slot {
            self.kline_index.resize(slot + 1, NO_KLINES);
        }
        if self.kline_index[slot] == NO_KLINES {
            let index = klines.add_instrument(u32::from(locate), PRICE_EXPONENT, 0);
            self.kline_index[slot] = u32::try_from(index).unwrap_or(NO_KLINES);
        }
        let id = i64::try_from(match_number).unwrap_or(i64::MAX);
        let tick = TradeTick {
            time_ms: ts.div_euclid(1_000_000),
            first_id: id,
            last_id: id,
            price: i64::from(price),
            qty: shares,
            // a cross has no aggressor: its volume is not a taker buy
            buyer_is_maker: aggressor != Side::Buy,
        };
        let outcome = klines.on_trade(
            &mut self.rings.klines,
            self.kline_index[slot] as usize,
            &tick,
            ts,
            receive_ns,
        )?;
        self.counters.klines += outcome.written;
        self.counters.records += outcome.written;
        Ok(())
    }

    /// The wall clock moved to `now_ns`: quiet candles whose interval is over on their
    /// stock's venue clock close (runs at most every 100 ms).
    pub fn on_timer(&mut self, now_ns: i64) -> Result<(), WriteError> {
        if now_ns.saturating_sub(self.kline_timer_ns) < KLINE_TIMER_NS {
            return Ok(());
        }
        self.kline_timer_ns = now_ns;
        self.latency.flush();
        if let Some(klines) = &mut self.klines {
            let written = klines.on_timer(&mut self.rings.klines, now_ns)?;
            self.counters.klines += written;
            self.counters.records += written;
        }
        Ok(())
    }

    /// The latest exchange time of the messages taken (ns), 0 before any.
    pub fn latest_exchange_ns(&self) -> i64 {
        self.packet_ts
    }

    /// Closes every candle whose interval ended at or before `at_ns` (the end of a
    /// replay: no trade can still come).
    pub fn close_candles_before(&mut self, at_ns: i64) -> Result<(), WriteError> {
        if let Some(klines) = &mut self.klines {
            let written = klines.close_before(&mut self.rings.klines, at_ns)?;
            self.counters.klines += written;
            self.counters.records += written;
        }
        Ok(())
    }

    fn status(
        &mut self,
        receive_ns: i64,
        instrument_id: u32,
        state: FeedState,
        seqs: (u64, u64, u64),
        detail: &str,
    ) -> Result<(), WriteError> {
        self.status_at(receive_ns, 0, instrument_id, state, seqs, detail)
    }

    fn status_at(
        &mut self,
        receive_ns: i64,
        exchange_ns: i64,
        instrument_id: u32,
        state: FeedState,
        (expected_seq, received_seq, count): (u64, u64, u64),
        detail: &str,
    ) -> Result<(), WriteError> {
        if crate::pipeline::is_standing_state(state) {
            let at = instrument_id as usize;
            if self.standing.len() <= at {
                self.standing.resize(at + 1, None);
            }
            self.standing[at] = Some((state, detail.to_owned()));
        }
        let publish_ns = self.publish_ns();
        self.rings.ticks.append_record(&FeedStatus {
            instrument_id,
            state,
            venue_seq: received_seq,
            ts_exchange_ns: exchange_ns,
            ts_receive_ns: receive_ns,
            ts_publish_ns: publish_ns,
            expected_seq,
            received_seq,
            count,
            venue: VENUE.into(),
            detail: detail.into(),
        })?;
        self.counters.records += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> i64 {
        mdi_transport::time::parse_utc(text).unwrap()
    }

    const H: i64 = 3_600_000_000_000;

    #[test]
    fn itch_times_are_new_york_time_with_daylight_saving() {
        // winter (EST, UTC-5) and summer (EDT, UTC-4): 09:30 is the open either way
        let winter = SessionClock::parse("2024-01-02").unwrap();
        assert_eq!(winter.midnight_ns(), utc("2024-01-02T05:00:00Z"));
        assert_eq!(winter.to_utc_ns(9 * H + H / 2), utc("2024-01-02T14:30:00Z"));
        let summer = SessionClock::parse("2024-07-01").unwrap();
        assert_eq!(summer.to_utc_ns(9 * H + H / 2), utc("2024-07-01T13:30:00Z"));
        assert_eq!(
            session_midnight("2024-07-01"),
            Some(utc("2024-07-01T04:00:00Z"))
        );
    }

    #[test]
    fn the_two_days_the_offset_changes() {
        // 2024-03-10: at 02:00 EST clocks go to 03:00 EDT
        let spring = SessionClock::parse("2024-03-10").unwrap();
        assert_eq!(spring.midnight_ns(), utc("2024-03-10T05:00:00Z"));
        assert_eq!(spring.to_utc_ns(H + H / 2), utc("2024-03-10T06:30:00Z"));
        assert_eq!(spring.to_utc_ns(3 * H), utc("2024-03-10T07:00:00Z"));
        assert_eq!(spring.to_utc_ns(9 * H + H / 2), utc("2024-03-10T13:30:00Z"));
        // 2024-11-03: at 02:00 EDT clocks go back to 01:00 EST (01:xx is read as EDT)
        let fall = SessionClock::parse("2024-11-03").unwrap();
        assert_eq!(fall.midnight_ns(), utc("2024-11-03T04:00:00Z"));
        assert_eq!(fall.to_utc_ns(H + H / 2), utc("2024-11-03T05:30:00Z"));
        assert_eq!(fall.to_utc_ns(2 * H + H / 2), utc("2024-11-03T07:30:00Z"));
        assert_eq!(fall.to_utc_ns(9 * H + H / 2), utc("2024-11-03T14:30:00Z"));
        // the day after each runs on one offset again
        assert_eq!(
            SessionClock::parse("2024-03-11")
                .unwrap()
                .to_utc_ns(9 * H + H / 2),
            utc("2024-03-11T13:30:00Z")
        );
    }

    #[test]
    fn a_capture_time_picks_the_new_york_date_and_bad_dates_are_refused() {
        // 2024-01-03 02:00 UTC is still 2024-01-02 in New York
        let clock = SessionClock::at(utc("2024-01-03T02:00:00Z")).unwrap();
        assert_eq!(clock, SessionClock::parse("2024-01-02").unwrap());
        for bad in ["2024-02-30", "2024-1-2", "yesterday", "2024-01-02T00:00"] {
            assert_eq!(SessionClock::parse(bad), None, "{bad}");
        }
    }
}
