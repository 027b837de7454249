//! Typed zero-copy views of records: read a field straight from the record's bytes,
//! nothing decoded that is not asked for, nothing allocated.
//!
//! A view wraps the Cap'n Proto reader generated for its struct (every `get_*` method is
//! there through `Deref`) and adds what the raw reader lacks: exact decimals with the
//! record's own exponents, the aggressor side and feed state as plain enums, text as
//! `&str`, and the time a record stands for. [`RecordView::open`] opens a ring record's
//! body of any mdi kind; the view lives as long as the body it reads.
//!
//! ```
//! use mdi_protocol::records::{RecordEncoder, RecordKind, Side, Trade};
//! use mdi_protocol::view::RecordView;
//!
//! let trade = Trade { instrument_id: 7, price: 2_712_345, price_exponent: -2, qty: 150,
//!     qty_exponent: -3, aggressor: Side::Buy, ..Trade::default() };
//! let mut encoder = RecordEncoder::new();
//! let bytes = encoder.encode(&trade).unwrap();
//! let mut aligned = vec![0u64; bytes.len() / 8]; // ring bodies are 8-byte aligned
//! zerocopy::IntoBytes::as_mut_bytes(&mut aligned[..]).copy_from_slice(bytes);
//! let body = zerocopy::IntoBytes::as_bytes(&aligned[..]);
//!
//! let printed = RecordView::open(RecordKind::TRADE, body, |view| match view {
//!     RecordView::Trade(t) => format!("{} {} @ {}", t.side(), t.qty(), t.price()),
//!     _ => unreachable!(),
//! });
//! assert_eq!(printed.unwrap(), Some("buy 0.150 @ 27123.45".to_owned()));
//! ```

use std::fmt;
use std::ops::Deref;

use crate::decimal::{Decimal, join_i128};
use crate::interval::Interval;
use crate::records::records_capnp as rc;
use crate::records::{
    BookUpdate, FeedState, FeedStatus, InstrumentDefinition, InstrumentKind, Kline, PriceLevel,
    Quote, RecordError, RecordKind, Side, SingleSegment, Trade, open_body, price_levels,
};

macro_rules! view {
    ($(#[$doc:meta])* $view:ident, $module:ident, $owned:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $view<'a>(rc::$module::Reader<'a>);

        impl<'a> Deref for $view<'a> {
            type Target = rc::$module::Reader<'a>;

            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl<'a> $view<'a> {
            /// A view of `reader`.
            pub fn new(reader: rc::$module::Reader<'a>) -> Self {
                Self(reader)
            }

            /// Copies the record out as an owned value.
            pub fn to_record(&self) -> Result<$owned, RecordError> {
                $owned::from_reader(self.0)
            }
        }

        impl fmt::Debug for $view<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.to_record() {
                    Ok(record) => fmt::Debug::fmt(&record, f),
                    Err(e) => write!(f, "{}(<{e}>)", stringify!($view)),
                }
            }
        }
    };
}

view!(
    /// A trade.
    TradeView, trade, Trade
);
view!(
    /// Best bid and offer.
    QuoteView, quote, Quote
);
view!(
    /// Price-level deltas or a whole-book snapshot.
    BookView, book_update, BookUpdate
);
view!(
    /// A K-line.
    KlineView, kline, Kline
);
view!(
    /// Feed health.
    StatusView, feed_status, FeedStatus
);
view!(
    /// What an instrument id means.
    InstrumentView, instrument_definition, InstrumentDefinition
);

/// The venue's time, else the receive time.
fn event_time(exchange_ns: i64, receive_ns: i64) -> i64 {
    if exchange_ns != 0 {
        exchange_ns
    } else {
        receive_ns
    }
}

fn text<'a>(reader: capnp::Result<capnp::text::Reader<'a>>) -> Result<&'a str, RecordError> {
    Ok(reader?.to_str()?)
}

impl TradeView<'_> {
    /// The price, exact.
    pub fn price(&self) -> Decimal {
        Decimal::new(self.get_price(), self.get_price_exponent())
    }

    /// The quantity, exact.
    pub fn qty(&self) -> Decimal {
        Decimal::new(self.get_qty(), self.get_qty_exponent())
    }

    /// Who was the aggressor ([`Side::Unknown`] for a value this build does not know).
    pub fn side(&self) -> Side {
        self.get_aggressor().map_or(Side::Unknown, Side::from)
    }
}

impl QuoteView<'_> {
    /// Best bid price.
    pub fn bid_price(&self) -> Decimal {
        Decimal::new(self.get_bid_price(), self.get_price_exponent())
    }

    /// Quantity at the best bid.
    pub fn bid_qty(&self) -> Decimal {
        Decimal::new(self.get_bid_qty(), self.get_qty_exponent())
    }

    /// Best ask price.
    pub fn ask_price(&self) -> Decimal {
        Decimal::new(self.get_ask_price(), self.get_price_exponent())
    }

    /// Quantity at the best ask.
    pub fn ask_qty(&self) -> Decimal {
        Decimal::new(self.get_ask_qty(), self.get_qty_exponent())
    }
}

/// The bid or ask levels of a [`BookView`], read in place.
#[derive(Clone, Copy)]
pub struct Levels<'a> {
    list: capnp::struct_list::Reader<'a, rc::price_level::Owned>,
    price_exponent: i8,
    qty_exponent: i8,
}

impl<'a> Levels<'a> {
    /// How many levels.
    pub fn len(&self) -> usize {
        self.list.len() as usize
    }

    /// No levels.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The levels as mantissas (quantity 0 removes a level).
    pub fn iter(&self) -> impl Iterator<Item = PriceLevel> + 'a {
        self.list.iter().map(|l| PriceLevel {
            price: l.get_price(),
            qty: l.get_qty(),
        })
    }

    /// The levels as exact (price, quantity) decimals.
    pub fn decimals(&self) -> impl Iterator<Item = (Decimal, Decimal)> + 'a {
        let (pe, qe) = (self.price_exponent, self.qty_exponent);
        self.iter()
            .map(move |l| (Decimal::new(l.price, pe), Decimal::new(l.qty, qe)))
    }
}

impl fmt::Debug for Levels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> BookView<'a> {
    fn levels(
        &self,
        list: capnp::Result<capnp::struct_list::Reader<'a, rc::price_level::Owned>>,
    ) -> Result<Levels<'a>, RecordError> {
        Ok(Levels {
            list: price_levels(list)?,
            price_exponent: self.get_price_exponent(),
            qty_exponent: self.get_qty_exponent(),
        })
    }

    /// Bid levels.
    pub fn bids(&self) -> Result<Levels<'a>, RecordError> {
        self.levels(self.0.get_bids())
    }

    /// Ask levels.
    pub fn asks(&self) -> Result<Levels<'a>, RecordError> {
        self.levels(self.0.get_asks())
    }
}

impl KlineView<'_> {
    fn price(&self, mantissa: i64) -> Decimal {
        Decimal::new(mantissa, self.get_price_exponent())
    }

    /// The interval (`None` for a length Binance does not have).
    pub fn interval(&self) -> Option<Interval> {
        Interval::from_ms(self.get_interval_ms())
    }

    /// Open price.
    pub fn open(&self) -> Decimal {
        self.price(self.get_open())
    }

    /// High price.
    pub fn high(&self) -> Decimal {
        self.price(self.get_high())
    }

    /// Low price.
    pub fn low(&self) -> Decimal {
        self.price(self.get_low())
    }

    /// Close price.
    pub fn close(&self) -> Decimal {
        self.price(self.get_close())
    }

    /// Base volume.
    pub fn volume(&self) -> Decimal {
        let m = join_i128(self.get_volume_hi(), self.get_volume_lo());
        Decimal::new(m, self.get_qty_exponent())
    }

    /// Taker-buy base volume.
    pub fn taker_buy_volume(&self) -> Decimal {
        let m = join_i128(
            self.get_taker_buy_volume_hi(),
            self.get_taker_buy_volume_lo(),
        );
        Decimal::new(m, self.get_qty_exponent())
    }

    /// Quote volume, written as the venue writes it: the exponent is price + quantity,
    /// and trailing zeros below the finer of the two are dropped (exact, never rounded).
    pub fn quote_volume(&self) -> Decimal {
        self.quote(join_i128(
            self.get_quote_volume_hi(),
            self.get_quote_volume_lo(),
        ))
    }

    /// Taker-buy quote volume, written like [`Self::quote_volume`].
    pub fn taker_buy_quote_volume(&self) -> Decimal {
        self.quote(join_i128(
            self.get_taker_buy_quote_volume_hi(),
            self.get_taker_buy_quote_volume_lo(),
        ))
    }

    fn quote(&self, mantissa: i128) -> Decimal {
        let (pe, qe) = (self.get_price_exponent(), self.get_qty_exponent());
        Decimal::new(mantissa, pe.saturating_add(qe)).trimmed_to(pe.min(qe))
    }
}

impl<'a> StatusView<'a> {
    /// The state reported (`Err` for a value this build does not know).
    pub fn state(&self) -> Result<FeedState, RecordError> {
        Ok(self.get_state()?.into())
    }

    /// The venue.
    pub fn venue(&self) -> Result<&'a str, RecordError> {
        text(self.0.get_venue())
    }

    /// Free text for operators.
    pub fn detail(&self) -> Result<&'a str, RecordError> {
        text(self.0.get_detail())
    }
}

impl<'a> InstrumentView<'a> {
    /// The venue's symbol.
    pub fn symbol(&self) -> Result<&'a str, RecordError> {
        text(self.0.get_symbol())
    }

    /// The venue.
    pub fn venue(&self) -> Result<&'a str, RecordError> {
        text(self.0.get_venue())
    }

    /// Base asset.
    pub fn base_asset(&self) -> Result<&'a str, RecordError> {
        text(self.0.get_base_asset())
    }

    /// Quote asset.
    pub fn quote_asset(&self) -> Result<&'a str, RecordError> {
        text(self.0.get_quote_asset())
    }

    /// The instrument's kind.
    pub fn kind(&self) -> InstrumentKind {
        self.get_kind().map_or(InstrumentKind::Unknown, Into::into)
    }

    /// Tick size.
    pub fn tick_size(&self) -> Decimal {
        Decimal::new(self.get_tick_size(), self.get_price_exponent())
    }

    /// Step size.
    pub fn step_size(&self) -> Decimal {
        Decimal::new(self.get_step_size(), self.get_qty_exponent())
    }
}

/// A view of a record of any mdi kind.
#[derive(Debug, Clone, Copy)]
pub enum RecordView<'a> {
    /// A trade.
    Trade(TradeView<'a>),
    /// Best bid and offer.
    Quote(QuoteView<'a>),
    /// Book levels.
    Book(BookView<'a>),
    /// A K-line.
    Kline(KlineView<'a>),
    /// Feed health.
    Status(StatusView<'a>),
    /// An instrument definition.
    Instrument(InstrumentView<'a>),
}

/// A record copied out of its view: owned, kept, sent across threads. The frequent
/// kinds are inline; the large, rarer ones are boxed so that every value stays small to
/// move (measured in the subscriber: a 192-byte enum made each event cost ~100 ns more
/// than the raw read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A trade.
    Trade(Trade),
    /// Best bid and offer.
    Quote(Quote),
    /// Book levels (deltas or a snapshot).
    Book(Box<BookUpdate>),
    /// A K-line.
    Kline(Box<Kline>),
    /// Feed health.
    Status(Box<FeedStatus>),
    /// An instrument definition.
    Instrument(Box<InstrumentDefinition>),
}

impl Record {
    /// Copies a record out of its zero-copy view.
    pub fn from_view(view: RecordView<'_>) -> Result<Self, RecordError> {
        Ok(match view {
            RecordView::Trade(v) => Self::Trade(v.to_record()?),
            RecordView::Quote(v) => Self::Quote(v.to_record()?),
            RecordView::Book(v) => Self::Book(Box::new(v.to_record()?)),
            RecordView::Kline(v) => Self::Kline(Box::new(v.to_record()?)),
            RecordView::Status(v) => Self::Status(Box::new(v.to_record()?)),
            RecordView::Instrument(v) => Self::Instrument(Box::new(v.to_record()?)),
        })
    }

    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Self::Trade(_) => RecordKind::TRADE,
            Self::Quote(_) => RecordKind::QUOTE,
            Self::Book(_) => RecordKind::BOOK_UPDATE,
            Self::Kline(_) => RecordKind::KLINE,
            Self::Status(_) => RecordKind::FEED_STATUS,
            Self::Instrument(_) => RecordKind::INSTRUMENT_DEFINITION,
        }
    }

    /// The instrument the record is about (0: the whole feed).
    pub fn instrument_id(&self) -> u32 {
        match self {
            Self::Trade(r) => r.instrument_id,
            Self::Quote(r) => r.instrument_id,
            Self::Book(r) => r.instrument_id,
            Self::Kline(r) => r.instrument_id,
            Self::Status(r) => r.instrument_id,
            Self::Instrument(r) => r.instrument_id,
        }
    }
}

impl RecordView<'_> {
    /// Opens `body`, a record of `kind`, and hands its view to `f`: `Ok(None)` for kinds
    /// that are not mdi records (control and application records), `Err` for a body that
    /// is not a well-formed Cap'n Proto message. The view borrows the message, which
    /// lives on this call's stack — hence the closure.
    pub fn open<R>(
        kind: RecordKind,
        body: &[u8],
        f: impl FnOnce(RecordView<'_>) -> R,
    ) -> Result<Option<R>, RecordError> {
        if !matches!(
            kind,
            RecordKind::TRADE
                | RecordKind::QUOTE
                | RecordKind::BOOK_UPDATE
                | RecordKind::KLINE
                | RecordKind::FEED_STATUS
                | RecordKind::INSTRUMENT_DEFINITION
        ) {
            return Ok(None);
        }
        // what mdi writers write: one segment, opened without the general reader's set-up
        if let Some(segment) = SingleSegment::of(body) {
            return Ok(Some(f(Self::of(kind, segment.root()?)?)));
        }
        let message = open_body(body)?;
        let root = message.get_root::<capnp::any_pointer::Reader<'_>>()?;
        Ok(Some(f(Self::of(kind, root)?)))
    }

    /// The view of `root`, a record of mdi kind `kind`.
    fn of<'a>(
        kind: RecordKind,
        root: capnp::any_pointer::Reader<'a>,
    ) -> Result<RecordView<'a>, RecordError> {
        Ok(match kind {
            RecordKind::TRADE => RecordView::Trade(TradeView(root.get_as()?)),
            RecordKind::QUOTE => RecordView::Quote(QuoteView(root.get_as()?)),
            RecordKind::BOOK_UPDATE => RecordView::Book(BookView(root.get_as()?)),
            RecordKind::KLINE => RecordView::Kline(KlineView(root.get_as()?)),
            RecordKind::FEED_STATUS => RecordView::Status(StatusView(root.get_as()?)),
            _ => RecordView::Instrument(InstrumentView(root.get_as()?)),
        })
    }

    /// The record kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Self::Trade(_) => RecordKind::TRADE,
            Self::Quote(_) => RecordKind::QUOTE,
            Self::Book(_) => RecordKind::BOOK_UPDATE,
            Self::Kline(_) => RecordKind::KLINE,
            Self::Status(_) => RecordKind::FEED_STATUS,
            Self::Instrument(_) => RecordKind::INSTRUMENT_DEFINITION,
        }
    }

    /// The instrument the record is about (0: the whole feed).
    pub fn instrument_id(&self) -> u32 {
        match self {
            Self::Trade(r) => r.get_instrument_id(),
            Self::Quote(r) => r.get_instrument_id(),
            Self::Book(r) => r.get_instrument_id(),
            Self::Kline(r) => r.get_instrument_id(),
            Self::Status(r) => r.get_instrument_id(),
            Self::Instrument(r) => r.get_instrument_id(),
        }
    }

    /// When the record was committed to its ring (ns since the Unix epoch; 0 if not
    /// stamped).
    pub fn ts_publish_ns(&self) -> i64 {
        match self {
            Self::Trade(r) => r.get_ts_publish_ns(),
            Self::Quote(r) => r.get_ts_publish_ns(),
            Self::Book(r) => r.get_ts_publish_ns(),
            Self::Kline(r) => r.get_ts_publish_ns(),
            Self::Status(r) => r.get_ts_publish_ns(),
            Self::Instrument(r) => r.get_ts_publish_ns(),
        }
    }

    /// When the record happened: the venue's time, else the receive time; for a K-line
    /// the end of its interval. (Instrument definitions: `None`.)
    pub fn time_ns(&self) -> Option<i64> {
        Some(match self {
            Self::Trade(r) => event_time(r.get_ts_exchange_ns(), r.get_ts_receive_ns()),
            Self::Quote(r) => event_time(r.get_ts_exchange_ns(), r.get_ts_receive_ns()),
            Self::Book(r) => event_time(r.get_ts_exchange_ns(), r.get_ts_receive_ns()),
            Self::Kline(r) => r.get_close_time_ms().saturating_mul(1_000_000),
            Self::Status(r) => event_time(r.get_ts_exchange_ns(), r.get_ts_receive_ns()),
            Self::Instrument(_) => return None,
        })
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Side {
    /// `buy`, `sell` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
            Self::Unknown => "unknown",
        }
    }
}

impl FeedState {
    /// The state's name as tools print it (`resync_started`, `end_of_session`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Reconnecting => "reconnecting",
            Self::Gap => "gap",
            Self::ResyncStarted => "resync_started",
            Self::ResyncDone => "resync_done",
            Self::Halted => "halted",
            Self::Trading => "trading",
            Self::EndOfSession => "end_of_session",
            Self::Malformed => "malformed",
            Self::ValueOutOfRange => "value_out_of_range",
            Self::Lagging => "lagging",
            Self::CaughtUp => "caught_up",
            Self::LateTrades => "late_trades",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{RecordEncoder, RecordType};
    use proptest::prelude::*;
    use zerocopy::IntoBytes;

    fn aligned<T: RecordType>(record: &T) -> Vec<u64> {
        let bytes = RecordEncoder::new().encode(record).unwrap().to_vec();
        let mut words = vec![0u64; bytes.len() / 8];
        words.as_mut_bytes().copy_from_slice(&bytes);
        words
    }

    fn open<T: RecordType, R>(record: &T, f: impl FnOnce(RecordView<'_>) -> R) -> R {
        let words = aligned(record);
        RecordView::open(T::KIND, words.as_bytes(), f)
            .unwrap()
            .unwrap()
    }

    /// A book update whose bids are a million empty structs in four words: Cap'n Proto
    /// reads it (within the traversal limit); the levels are refused, not handed out.
    #[test]
    fn a_list_of_levels_of_no_size_is_refused() {
        let claimed: u64 = 1 << 20;
        let words: [u64; 5] = [
            4 << 32,              // segment table: one segment of four words
            2 << 48,              // root: a struct of no data and two pointers (bids, asks)
            1 | 1 << 2 | 7 << 32, // bids: a list of structs, its tag one word on, 0 words
            0,                    // asks: null
            claimed << 2,         // the tag: `claimed` elements of no data and no pointers
        ];
        let body = words.as_bytes();
        let bids = RecordView::open(RecordKind::BOOK_UPDATE, body, |view| match view {
            RecordView::Book(b) => b.bids().map(|l| l.len()),
            _ => unreachable!(),
        })
        .unwrap()
        .unwrap();
        assert!(
            matches!(bids, Err(RecordError::EmptyLevels { levels }) if u64::from(levels) == claimed),
            "{bids:?}"
        );
        let decoded = crate::records::decode::<BookUpdate>(body);
        assert!(
            matches!(decoded, Err(RecordError::EmptyLevels { .. })),
            "{decoded:?}"
        );
    }

    #[test]
    fn views_read_every_kind_as_written() {
        let kline = Kline {
            instrument_id: 1,
            price_exponent: -8,
            qty_exponent: -8,
            interval_ms: 60_000,
            close_time_ms: 59_999,
            open: 2_763_101_000_000,
            close: 2_763_100_000_000,
            volume: 23_040_000,
            quote_volume: 63_661_825_100_000_000_000,
            taker_buy_quote_volume: -5,
            ..Kline::default()
        };
        open(&kline, |v| {
            let RecordView::Kline(k) = v else { panic!() };
            assert_eq!(k.to_record().unwrap(), kline);
            assert_eq!(k.open().to_string(), "27631.01000000");
            assert_eq!(k.volume().to_string(), "0.23040000");
            assert_eq!(k.quote_volume().to_string(), "6366.18251000");
            assert_eq!(
                k.taker_buy_quote_volume().to_string(),
                "-0.0000000000000005"
            );
            assert_eq!(k.interval().map(Interval::name), Some("1m"));
            assert_eq!(v.time_ns(), Some(59_999_000_000));
        });
        let book = BookUpdate {
            instrument_id: 3,
            price_exponent: -2,
            qty_exponent: 0,
            bids: vec![PriceLevel { price: 101, qty: 5 }],
            asks: vec![
                PriceLevel { price: 102, qty: 0 },
                PriceLevel { price: 103, qty: 2 },
            ],
            ts_receive_ns: 9,
            ..BookUpdate::default()
        };
        open(&book, |v| {
            let RecordView::Book(b) = v else { panic!() };
            assert_eq!(b.to_record().unwrap(), book);
            let asks = b.asks().unwrap();
            assert_eq!(asks.len(), 2);
            let text: Vec<String> = asks.decimals().map(|(p, q)| format!("{q}@{p}")).collect();
            assert_eq!(text, ["0@1.02", "2@1.03"]);
            assert_eq!(v.time_ns(), Some(9));
            assert_eq!(v.instrument_id(), 3);
        });
        let def = InstrumentDefinition {
            instrument_id: 4,
            symbol: "BTCUSDT".into(),
            venue: "binance".into(),
            tick_size: 1,
            price_exponent: -2,
            kind: InstrumentKind::Spot,
            ..InstrumentDefinition::default()
        };
        open(&def, |v| {
            let RecordView::Instrument(d) = v else {
                panic!()
            };
            assert_eq!(d.symbol().unwrap(), "BTCUSDT");
            assert_eq!(d.tick_size().to_string(), "0.01");
            assert_eq!(d.kind(), InstrumentKind::Spot);
            assert_eq!(v.time_ns(), None);
        });
        let status = FeedStatus {
            state: FeedState::Gap,
            detail: "trade ids 5..9".into(),
            ts_exchange_ns: 7,
            ts_publish_ns: 8,
            ..FeedStatus::default()
        };
        open(&status, |v| {
            let RecordView::Status(s) = v else { panic!() };
            assert_eq!(s.state().unwrap(), FeedState::Gap);
            assert_eq!(s.state().unwrap().name(), "gap");
            assert_eq!(s.detail().unwrap(), "trade ids 5..9");
            assert_eq!(v.ts_publish_ns(), 8);
            assert_eq!(v.time_ns(), Some(7));
        });
    }

    #[test]
    fn other_kinds_and_bad_bodies() {
        assert!(matches!(
            RecordView::open(RecordKind::EPOCH_START, &[0; 16], |_| ()),
            Ok(None)
        ));
        assert!(RecordView::open(RecordKind::TRADE, &[1, 2, 3], |_| ()).is_err());
    }

    /// A body opened as `RecordView::open` opens it, and by the general reader: what
    /// each view reads (its record, or that it is damaged), or that it did not open.
    fn both_ways(kind: RecordKind, body: &[u8]) -> (Option<String>, Option<String>) {
        let fast = RecordView::open(kind, body, |v| format!("{v:?}"))
            .ok()
            .flatten();
        let general = open_body(body).ok().and_then(|message| {
            let root = message.get_root::<capnp::any_pointer::Reader<'_>>().ok()?;
            RecordView::of(kind, root).ok().map(|v| format!("{v:?}"))
        });
        (fast, general)
    }

    proptest! {
        /// Every kind, written and then damaged anywhere (bytes changed, the body cut or
        /// lengthened): the one-segment path reads what the general reader reads, and
        /// refuses what it refuses.
        #[test]
        fn the_one_segment_path_reads_what_the_general_reader_reads(
            which in 0usize..6, n: u64, text in "[a-z]{0,20}",
            damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in 0usize..3, extra in 0usize..2,
        ) {
            let (kind, words) = match which {
                0 => (RecordKind::TRADE, aligned(&Trade { trade_id: n, price: n as i64,
                    ..Trade::default() })),
                1 => (RecordKind::QUOTE, aligned(&Quote { venue_seq: n, ..Quote::default() })),
                2 => (RecordKind::BOOK_UPDATE, aligned(&BookUpdate {
                    bids: vec![PriceLevel { price: n as i64, qty: 1 }; (n % 5) as usize],
                    asks: vec![PriceLevel { price: 7, qty: n as i64 }; (n % 3) as usize],
                    ..BookUpdate::default()
                })),
                3 => (RecordKind::KLINE, aligned(&Kline { trades: n, ..Kline::default() })),
                4 => (RecordKind::INSTRUMENT_DEFINITION, aligned(&InstrumentDefinition {
                    symbol: text.clone(), venue: text.to_uppercase(),
                    ..InstrumentDefinition::default()
                })),
                _ => (RecordKind::FEED_STATUS, aligned(&FeedStatus { detail: text,
                    ..FeedStatus::default() })),
            };
            let mut bytes = words.as_bytes().to_vec();
            let intact = both_ways(kind, &bytes);
            prop_assert!(intact.0.is_some());
            prop_assert_eq!(&intact.0, &intact.1);
            for (at, value) in damage {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            bytes.truncate(bytes.len() - 8 * cut.min(bytes.len() / 8));
            bytes.extend(std::iter::repeat_n(0, 8 * extra));
            // ring bodies are 8-byte aligned
            let mut words = vec![0u64; bytes.len() / 8];
            words.as_mut_bytes().copy_from_slice(&bytes);
            let (fast, general) = both_ways(kind, words.as_bytes());
            prop_assert_eq!(fast, general);
        }

        #[test]
        fn trade_views_agree_with_owned_decoding(
            price: i64, qty: i64, pe in -18i8..=0, qe in -18i8..=0, id: u64, side in 0u8..3,
        ) {
            let aggressor = [Side::Unknown, Side::Buy, Side::Sell][usize::from(side)];
            let trade = Trade { price, qty, price_exponent: pe, qty_exponent: qe, trade_id: id,
                aggressor, ..Trade::default() };
            open(&trade, |v| {
                let RecordView::Trade(t) = v else { panic!() };
                prop_assert_eq!(t.to_record().unwrap(), trade.clone());
                prop_assert_eq!(t.price(), Decimal::new(price, pe));
                prop_assert_eq!(t.qty(), Decimal::new(qty, qe));
                prop_assert_eq!(t.side(), aggressor);
                prop_assert_eq!(t.get_trade_id(), id);
                Ok(())
            })?;
        }
    }
}
