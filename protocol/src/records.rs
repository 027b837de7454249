//! The records mdi distributes, as Cap'n Proto messages (`schema/records.capnp`).
//!
//! A ring-log record is a fixed [`crate::ring::RecordHeader`] followed by one
//! single-segment Cap'n Proto message (segment table + one segment). The header's
//! [`RecordKind`] says which struct the message holds.
//!
//! Two ways to use them:
//! - the generated zero-copy readers and builders in [`records_capnp`];
//! - the owned Rust values ([`Trade`], [`Quote`], ...) with [`RecordEncoder`] to write
//!   them and [`decode`] to read them back, for code that prefers plain structs.

use std::fmt;

use capnp::message::{self, ReaderOptions, ScratchSpaceHeapAllocator};
use capnp::serialize::{self, NoAllocSliceSegments};
use zerocopy::IntoBytes;

/// Code generated from `schema/records.capnp`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    unsafe_code,
    unused_qualifications
)]
pub mod records_capnp {
    // generated from schema/records.capnp and committed (ADR 0009); the test
    // `generated_code_is_what_the_schema_generates` keeps it so
    include!("records/records_capnp.rs");
}

use records_capnp as rc;

mod flat;
mod single_segment;

pub use flat::WordSink;
pub(crate) use single_segment::SingleSegment;

/// The Cap'n Proto file id of `records.capnp`, stored as the ring header's schema id.
pub const SCHEMA_ID: u64 = 0x8bee_8940_8990_cda8;

/// What a ring record holds. Stored as a `u16` in the record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKind(pub u16);

impl RecordKind {
    /// Filler to the end of the data region (or over a dead writer's torn claim); never delivered.
    pub const PADDING: Self = Self(0);
    /// Control record opening an epoch ([`records_capnp::epoch_start`]).
    pub const EPOCH_START: Self = Self(1);
    /// [`records_capnp::trade`].
    pub const TRADE: Self = Self(16);
    /// [`records_capnp::quote`] (best bid/offer).
    pub const QUOTE: Self = Self(17);
    /// [`records_capnp::book_update`].
    pub const BOOK_UPDATE: Self = Self(18);
    /// [`records_capnp::kline`].
    pub const KLINE: Self = Self(19);
    /// [`records_capnp::instrument_definition`].
    pub const INSTRUMENT_DEFINITION: Self = Self(20);
    /// [`records_capnp::feed_status`].
    pub const FEED_STATUS: Self = Self(21);
    /// First kind free for application payloads that are not mdi records (tests, benchmarks).
    pub const APPLICATION_FIRST: Self = Self(0x8000);

    /// The kind's name as tools print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PADDING => "padding",
            Self::EPOCH_START => "epoch_start",
            Self::TRADE => "trade",
            Self::QUOTE => "quote",
            Self::BOOK_UPDATE => "book",
            Self::KLINE => "kline",
            Self::INSTRUMENT_DEFINITION => "instrument",
            Self::FEED_STATUS => "status",
            Self(k) if k >= Self::APPLICATION_FIRST.0 => "application",
            _ => "unknown",
        }
    }
}

impl RecordKind {
    /// The six mdi record kinds, in the order of their numbers.
    pub const RECORDS: [Self; 6] = [
        Self::TRADE,
        Self::QUOTE,
        Self::BOOK_UPDATE,
        Self::KLINE,
        Self::INSTRUMENT_DEFINITION,
        Self::FEED_STATUS,
    ];

    /// The record kind a tool's name stands for (`trade`, `quote`, `book`, `kline`,
    /// `instrument`, `status`; plurals too); `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::RECORDS.into_iter().find(|k| {
            let n = k.name();
            n == name || name.strip_suffix('s') == Some(n) || name.strip_suffix("es") == Some(n)
        })
    }
}

/// A set of mdi record kinds: which kinds a subscriber, `mdtail` or an export takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordKinds(u32);

impl RecordKinds {
    /// No kind.
    pub const NONE: Self = Self(0);
    /// Every market-data kind: trades, quotes, book updates, K-lines, feed status (not
    /// instrument definitions, which resolve symbols either way).
    pub const MARKET_DATA: Self = Self::NONE
        .with(RecordKind::TRADE)
        .with(RecordKind::QUOTE)
        .with(RecordKind::BOOK_UPDATE)
        .with(RecordKind::KLINE)
        .with(RecordKind::FEED_STATUS);
    /// Every mdi record kind.
    pub const ALL: Self = Self::MARKET_DATA.with(RecordKind::INSTRUMENT_DEFINITION);

    /// The bit of `kind` (mdi record kinds are numbered 16 on); none for other kinds.
    const fn bit(kind: RecordKind) -> u32 {
        match kind.0.checked_sub(RecordKind::TRADE.0) {
            Some(i) if i < 32 => 1 << i,
            _ => 0,
        }
    }

    /// Just `kind`.
    pub const fn only(kind: RecordKind) -> Self {
        Self(Self::bit(kind))
    }

    /// This set and `kind`.
    #[must_use]
    pub const fn with(self, kind: RecordKind) -> Self {
        Self(self.0 | Self::bit(kind))
    }

    /// Both sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True if `kind` is in the set (never for control or application kinds).
    pub const fn contains(self, kind: RecordKind) -> bool {
        let bit = Self::bit(kind);
        bit != 0 && self.0 & bit == bit
    }

    /// The kinds in the set, in the order of their numbers.
    pub fn iter(self) -> impl Iterator<Item = RecordKind> {
        RecordKind::RECORDS
            .into_iter()
            .filter(move |&k| self.contains(k))
    }

    /// How many kinds are in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::str::FromStr for RecordKinds {
    type Err = String;

    /// A comma-separated list of kind names (`trade,kline`; plurals too), as tools take
    /// them.
    fn from_str(list: &str) -> Result<Self, String> {
        let mut kinds = Self::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = RecordKind::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = RecordKind::RECORDS.iter().map(|k| k.name()).collect();
                format!(
                    "unknown kind {name:?} (expected some of {})",
                    names.join(",")
                )
            })?;
            kinds = kinds.with(kind);
        }
        if kinds.is_empty() {
            return Err("no kinds given".into());
        }
        Ok(kinds)
    }
}

impl fmt::Display for RecordKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(RecordKind::name).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

/// Why a record body could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The Cap'n Proto message is malformed.
    #[error("malformed Cap'n Proto record: {0}")]
    Capnp(#[from] capnp::Error),
    /// A text field is not valid UTF-8.
    #[error("text field is not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// An enum value this build does not know.
    #[error("unknown enum value in record: {0}")]
    UnknownEnum(#[from] capnp::NotInSchema),
    /// The body holds more than one segment; mdi writes single-segment messages only.
    #[error("record body has {segments} segments; mdi records are single-segment")]
    MultiSegment {
        /// How many segments were found.
        segments: usize,
    },
    /// A list of price levels whose elements take no bytes: a hostile body could claim
    /// millions of them in a few words and have every reader loop and allocate for each.
    #[error("{levels} price levels of no size (every level written has a price and a quantity)")]
    EmptyLevels {
        /// How many levels the list claims.
        levels: u32,
    },
    /// The record kind is not the one asked for.
    #[error("record kind {found} is not {expected}")]
    WrongKind {
        /// The kind asked for.
        expected: RecordKind,
        /// The kind in the header.
        found: RecordKind,
    },
}

/// Options for reading records: ring records are small, so the traversal limit is tight.
pub fn reader_options() -> ReaderOptions {
    *ReaderOptions::new()
        .traversal_limit_in_words(Some(1 << 22))
        .nesting_limit(16)
}

/// Opens a record body as a Cap'n Proto message without copying. `body` must be 8-byte
/// aligned (ring readers hand out aligned bodies).
pub fn open_body(body: &[u8]) -> Result<message::Reader<NoAllocSliceSegments<'_>>, RecordError> {
    let mut slice = body;
    let reader = serialize::read_message_from_flat_slice_no_alloc(&mut slice, reader_options())?;
    Ok(reader)
}

/// An owned record value that can be written as and read from a Cap'n Proto message.
pub trait RecordType: Sized {
    /// The kind stored in the ring record header.
    const KIND: RecordKind;
    /// Fills a fresh message root.
    fn build(&self, root: capnp::any_pointer::Builder<'_>) -> Result<(), RecordError>;
    /// Reads the value back from a message root.
    fn read(root: capnp::any_pointer::Reader<'_>) -> Result<Self, RecordError>;
    /// Words of the body's hand-written encoding: the hot tick kinds have
    /// one, tested byte for byte against [`Self::build`]. `None`: use the builder.
    fn flat_words(&self) -> Option<usize> {
        None
    }
    /// Writes the whole body (segment table + segment), exactly [`Self::flat_words`]
    /// words, without the builder — into the encoder's buffer or straight into a ring.
    /// Only called when [`Self::flat_words`] is `Some`.
    fn write_flat(&self, _out: &mut impl WordSink) {}
}

/// The `ts_publish_ns` of a record body of `kind`, `len` words long, word `i` given by
/// `word(i)`: read straight from the root struct's data section, nothing decoded or
/// copied (the ring's index reads it once per stride). `None` for kinds without one
/// (control, application), or a body that is not a single-segment message with a struct
/// root inside it; 0 (the field's default) for a struct too short to hold the field, as
/// a record of an older schema would be.
pub fn publish_time_of(kind: RecordKind, len: usize, word: impl Fn(usize) -> u64) -> Option<i64> {
    // where `tsPublishNs` sits in each kind's data section, in words (the schema's
    // layout; a test checks it against the generated readers)
    let field = match kind {
        RecordKind::TRADE
        | RecordKind::QUOTE
        | RecordKind::BOOK_UPDATE
        | RecordKind::KLINE
        | RecordKind::FEED_STATUS => 4,
        RecordKind::INSTRUMENT_DEFINITION => 2,
        _ => return None,
    };
    if len < 2 {
        return None;
    }
    let table = word(0);
    let segment_words = usize::try_from(table >> 32).ok()?;
    if table & 0xffff_ffff != 0 || segment_words + 1 > len {
        return None; // not one segment, or longer than the body
    }
    let root = word(1);
    if root & 3 != 0 {
        return None; // not a struct pointer
    }
    // signed 30-bit offset in words from the end of the pointer
    let offset = i64::from((root as u32).cast_signed() >> 2);
    let data_words = ((root >> 32) & 0xffff) as usize;
    if field >= data_words {
        return Some(0);
    }
    let at = 2 + offset + i64::try_from(field).ok()?;
    let at = usize::try_from(at)
        .ok()
        .filter(|&at| at < segment_words + 1)?;
    Some(word(at).cast_signed())
}

/// Decodes a record body of kind `T::KIND`.
pub fn decode<T: RecordType>(body: &[u8]) -> Result<T, RecordError> {
    let message = open_body(body)?;
    T::read(message.get_root::<capnp::any_pointer::Reader<'_>>()?)
}

/// Encodes records as single-segment Cap'n Proto messages, reusing its buffers.
///
/// ```
/// use mdi_protocol::records::{decode, RecordEncoder, Side, Trade};
/// let trade = Trade { instrument_id: 7, price: 2_712_345, qty: 150, aggressor: Side::Buy, ..Trade::default() };
/// let mut encoder = RecordEncoder::new();
/// let body = encoder.encode(&trade).unwrap().to_vec();
/// let mut aligned = vec![0u64; body.len() / 8];
/// zerocopy::IntoBytes::as_mut_bytes(&mut aligned[..]).copy_from_slice(&body);
/// assert_eq!(decode::<Trade>(zerocopy::IntoBytes::as_bytes(&aligned[..])).unwrap(), trade);
/// ```
#[derive(Debug, Default)]
pub struct RecordEncoder {
    scratch: Vec<u64>,
    out: Vec<u64>,
}

/// First-segment size the encoder starts with, in words.
const INITIAL_SCRATCH_WORDS: usize = 64;

impl RecordEncoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self {
            scratch: vec![0; INITIAL_SCRATCH_WORDS],
            out: Vec::with_capacity(INITIAL_SCRATCH_WORDS + 1),
        }
    }

    /// Encodes `record`; the returned body (segment table + segment) is valid until the next call.
    pub fn encode<T: RecordType>(&mut self, record: &T) -> Result<&[u8], RecordError> {
        Ok(self.encode_words(record)?.as_bytes())
    }

    /// [`Self::encode`], as the body's little-endian words.
    pub fn encode_words<T: RecordType>(&mut self, record: &T) -> Result<&[u64], RecordError> {
        if let Some(words) = record.flat_words() {
            self.out.clear();
            self.out.reserve(words);
            record.write_flat(&mut self.out);
            return Ok(&self.out);
        }
        loop {
            if self.scratch.len() < INITIAL_SCRATCH_WORDS {
                self.scratch.resize(INITIAL_SCRATCH_WORDS, 0);
            }
            let words = {
                let allocator = ScratchSpaceHeapAllocator::new(self.scratch.as_mut_bytes());
                let mut builder = message::Builder::new(allocator);
                record.build(builder.init_root::<capnp::any_pointer::Builder<'_>>())?;
                let segments = builder.get_segments_for_output();
                if segments.len() == 1 {
                    let segment = segments[0];
                    self.out.clear();
                    // Segment table: (segment count - 1) = 0, then the segment's length in words.
                    let len_words = u32::try_from(segment.len() / 8).unwrap_or(u32::MAX);
                    self.out.push((u64::from(len_words) << 32).to_le());
                    let start = self.out.len();
                    self.out.resize(start + segment.len() / 8, 0);
                    self.out.as_mut_bytes()[start * 8..].copy_from_slice(segment);
                    None
                } else {
                    Some(segments.iter().map(|s| s.len() / 8).sum::<usize>())
                }
            };
            match words {
                None => return Ok(&self.out),
                // Too big for one scratch segment: grow and encode again (rare: big book snapshots).
                Some(words) => self.scratch.resize(words + 16, 0),
            }
        }
    }
}

/// The aggressor side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Side {
    /// Not known.
    #[default]
    Unknown,
    /// The aggressor bought.
    Buy,
    /// The aggressor sold.
    Sell,
}

impl From<rc::Side> for Side {
    fn from(side: rc::Side) -> Self {
        match side {
            rc::Side::Unknown => Self::Unknown,
            rc::Side::Buy => Self::Buy,
            rc::Side::Sell => Self::Sell,
        }
    }
}

impl From<Side> for rc::Side {
    fn from(side: Side) -> Self {
        match side {
            Side::Unknown => Self::Unknown,
            Side::Buy => Self::Buy,
            Side::Sell => Self::Sell,
        }
    }
}

/// Implements `build`/`read` for a struct whose scalar fields map one to one on the schema.
macro_rules! scalar_record {
    (
        $(#[$doc:meta])*
        $name:ident, $module:ident, $kind:expr,
        { $( $(#[$fdoc:meta])* $field:ident : $ty:ty => $get:ident / $set:ident ),* $(,)? }
        $( extra { $( $(#[$xdoc:meta])* $xfield:ident : $xty:ty ),* $(,)? } )?
        $( build_extra($bself:ident, $bb:ident) $bextra:block read_extra($rr:ident) $rextra:block )?
        $( flat($flat_words:path, $flat:path) )?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $ty, )*
            $( $( $(#[$xdoc])* pub $xfield: $xty, )* )?
        }

        impl RecordType for $name {
            const KIND: RecordKind = $kind;

            fn build(&self, root: capnp::any_pointer::Builder<'_>) -> Result<(), RecordError> {
                let mut b = root.init_as::<rc::$module::Builder<'_>>();
                $( b.$set(self.$field); )*
                $( { let $bself = self; let $bb = &mut b; $bextra } )?
                Ok(())
            }

            fn read(root: capnp::any_pointer::Reader<'_>) -> Result<Self, RecordError> {
                Self::from_reader(root.get_as::<rc::$module::Reader<'_>>()?)
            }

            $(
                #[inline]
                fn flat_words(&self) -> Option<usize> {
                    $flat_words(self)
                }

                #[inline]
                fn write_flat(&self, out: &mut impl WordSink) {
                    $flat(self, out)
                }
            )?
        }

        impl $name {
            /// Copies the value out of a zero-copy reader (see [`crate::view`]).
            pub fn from_reader(r: rc::$module::Reader<'_>) -> Result<Self, RecordError> {
                #[allow(unused_mut)]
                #[allow(clippy::needless_update)]
                let mut value = Self {
                    $( $field: r.$get(), )*
                    ..Self::default()
                };
                $( { let $rr = (&r, &mut value); $rextra } )?
                Ok(value)
            }
        }
    };
}

scalar_record!(
    /// A trade (Binance trade or aggTrade, ITCH execution).
    Trade, trade, RecordKind::TRADE,
    {
        /// mdi instrument id.
        instrument_id: u32 => get_instrument_id / set_instrument_id,
        /// Exponent of `price`.
        price_exponent: i8 => get_price_exponent / set_price_exponent,
        /// Exponent of `qty`.
        qty_exponent: i8 => get_qty_exponent / set_qty_exponent,
        /// Venue sequence.
        venue_seq: u64 => get_venue_seq / set_venue_seq,
        /// Venue event time (ns).
        ts_exchange_ns: i64 => get_ts_exchange_ns / set_ts_exchange_ns,
        /// Receive time (ns).
        ts_receive_ns: i64 => get_ts_receive_ns / set_ts_receive_ns,
        /// Publish time (ns).
        ts_publish_ns: i64 => get_ts_publish_ns / set_ts_publish_ns,
        /// Price mantissa.
        price: i64 => get_price / set_price,
        /// Quantity mantissa.
        qty: i64 => get_qty / set_qty,
        /// Venue trade id.
        trade_id: u64 => get_trade_id / set_trade_id,
        /// First raw trade id covered.
        first_trade_id: u64 => get_first_trade_id / set_first_trade_id,
        /// Last raw trade id covered.
        last_trade_id: u64 => get_last_trade_id / set_last_trade_id,
        /// An aggregated trade.
        is_aggregate: bool => get_is_aggregate / set_is_aggregate,
    }
    extra {
        /// Aggressor side.
        aggressor: Side,
    }
    build_extra(this, b) { b.set_aggressor(this.aggressor.into()); }
    read_extra(rv) { rv.1.aggressor = rv.0.get_aggressor()?.into(); }
    flat(flat::trade_words, flat::trade)
);

scalar_record!(
    /// Best bid and offer.
    Quote, quote, RecordKind::QUOTE,
    {
        /// mdi instrument id.
        instrument_id: u32 => get_instrument_id / set_instrument_id,
        /// Exponent of prices.
        price_exponent: i8 => get_price_exponent / set_price_exponent,
        /// Exponent of quantities.
        qty_exponent: i8 => get_qty_exponent / set_qty_exponent,
        /// Venue sequence (book update id).
        venue_seq: u64 => get_venue_seq / set_venue_seq,
        /// Venue event time (ns).
        ts_exchange_ns: i64 => get_ts_exchange_ns / set_ts_exchange_ns,
        /// Receive time (ns).
        ts_receive_ns: i64 => get_ts_receive_ns / set_ts_receive_ns,
        /// Publish time (ns).
        ts_publish_ns: i64 => get_ts_publish_ns / set_ts_publish_ns,
        /// Best bid price mantissa.
        bid_price: i64 => get_bid_price / set_bid_price,
        /// Best bid quantity mantissa.
        bid_qty: i64 => get_bid_qty / set_bid_qty,
        /// Best ask price mantissa.
        ask_price: i64 => get_ask_price / set_ask_price,
        /// Best ask quantity mantissa.
        ask_qty: i64 => get_ask_qty / set_ask_qty,
    }
    flat(flat::quote_words, flat::quote)
);

/// One price level of a book update; `qty == 0` removes the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PriceLevel {
    /// Price mantissa.
    pub price: i64,
    /// Quantity mantissa (0 = remove).
    pub qty: i64,
}

fn build_levels(
    mut list: capnp::struct_list::Builder<'_, rc::price_level::Owned>,
    levels: &[PriceLevel],
) {
    for (i, level) in levels.iter().enumerate() {
        let mut b = list.reborrow().get(u32::try_from(i).unwrap_or(u32::MAX));
        b.set_price(level.price);
        b.set_qty(level.qty);
    }
}

/// A list of price levels as read from a body, refused when its elements take no bytes.
///
/// Cap'n Proto allows a list of empty structs: a pointer that claims up to 2^29 elements
/// and takes no room in the segment. Every level a writer writes has a price and a
/// quantity, so such a list is hostile. With it refused, a list's length is bounded by
/// the body it sits in (a level takes at least a byte: a list of bytes may be read as
/// levels of one byte each), and so is what any reader spends.
pub(crate) fn price_levels<'a>(
    list: capnp::Result<capnp::struct_list::Reader<'a, rc::price_level::Owned>>,
) -> Result<capnp::struct_list::Reader<'a, rc::price_level::Owned>, RecordError> {
    use capnp::traits::IntoInternalStructReader;
    let list = list?;
    // every element of a list has the same size: the first one's says it
    if let Some(first) = list.try_get(0) {
        let level = first.into_internal_struct_reader();
        if level.get_data_section_size() == 0 && level.get_pointer_section_size() == 0 {
            return Err(RecordError::EmptyLevels { levels: list.len() });
        }
    }
    Ok(list)
}

fn read_levels(
    list: capnp::Result<capnp::struct_list::Reader<'_, rc::price_level::Owned>>,
) -> Result<Vec<PriceLevel>, RecordError> {
    Ok(price_levels(list)?
        .iter()
        .map(|l| PriceLevel {
            price: l.get_price(),
            qty: l.get_qty(),
        })
        .collect())
}

fn list_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

scalar_record!(
    /// Price-level deltas or a whole-book snapshot.
    BookUpdate, book_update, RecordKind::BOOK_UPDATE,
    {
        /// mdi instrument id.
        instrument_id: u32 => get_instrument_id / set_instrument_id,
        /// Exponent of prices.
        price_exponent: i8 => get_price_exponent / set_price_exponent,
        /// Exponent of quantities.
        qty_exponent: i8 => get_qty_exponent / set_qty_exponent,
        /// The levels replace the whole book.
        is_snapshot: bool => get_is_snapshot / set_is_snapshot,
        /// Venue sequence (= last update id).
        venue_seq: u64 => get_venue_seq / set_venue_seq,
        /// Venue event time (ns).
        ts_exchange_ns: i64 => get_ts_exchange_ns / set_ts_exchange_ns,
        /// Receive time (ns).
        ts_receive_ns: i64 => get_ts_receive_ns / set_ts_receive_ns,
        /// Publish time (ns).
        ts_publish_ns: i64 => get_ts_publish_ns / set_ts_publish_ns,
        /// Venue's first update id in this event.
        first_update_id: u64 => get_first_update_id / set_first_update_id,
        /// Venue's last update id in this event.
        last_update_id: u64 => get_last_update_id / set_last_update_id,
    }
    extra {
        /// Bid levels.
        bids: Vec<PriceLevel>,
        /// Ask levels.
        asks: Vec<PriceLevel>,
    }
    build_extra(this, b) {
        build_levels(b.reborrow().init_bids(list_len(this.bids.len())), &this.bids);
        build_levels(b.reborrow().init_asks(list_len(this.asks.len())), &this.asks);
    }
    read_extra(rv) {
        rv.1.bids = read_levels(rv.0.get_bids())?;
        rv.1.asks = read_levels(rv.0.get_asks())?;
    }
    flat(flat::book_update_words, flat::book_update)
);

scalar_record!(
    /// A K-line (candlestick) with every Binance kline field.
    Kline, kline, RecordKind::KLINE,
    {
        /// mdi instrument id.
        instrument_id: u32 => get_instrument_id / set_instrument_id,
        /// Exponent of prices.
        price_exponent: i8 => get_price_exponent / set_price_exponent,
        /// Exponent of quantities.
        qty_exponent: i8 => get_qty_exponent / set_qty_exponent,
        /// Final candle.
        closed: bool => get_closed / set_closed,
        /// The feed was unhealthy during part of the interval.
        spans_outage: bool => get_spans_outage / set_spans_outage,
        /// Last trade id included.
        venue_seq: u64 => get_venue_seq / set_venue_seq,
        /// Exchange time of the last trade included (ns).
        ts_exchange_ns: i64 => get_ts_exchange_ns / set_ts_exchange_ns,
        /// Receive time (ns).
        ts_receive_ns: i64 => get_ts_receive_ns / set_ts_receive_ns,
        /// Publish time (ns).
        ts_publish_ns: i64 => get_ts_publish_ns / set_ts_publish_ns,
        /// Interval length in ms.
        interval_ms: u64 => get_interval_ms / set_interval_ms,
        /// Open time (ms).
        open_time_ms: i64 => get_open_time_ms / set_open_time_ms,
        /// Close time (ms) = open + interval - 1.
        close_time_ms: i64 => get_close_time_ms / set_close_time_ms,
        /// Open price mantissa.
        open: i64 => get_open / set_open,
        /// High price mantissa.
        high: i64 => get_high / set_high,
        /// Low price mantissa.
        low: i64 => get_low / set_low,
        /// Close price mantissa.
        close: i64 => get_close / set_close,
        /// Raw trade count.
        trades: u64 => get_trades / set_trades,
        /// First trade id, -1 if none.
        first_trade_id: i64 => get_first_trade_id / set_first_trade_id,
        /// Last trade id, -1 if none.
        last_trade_id: i64 => get_last_trade_id / set_last_trade_id,
        /// 0 for a candle as first published (open updates, then final); n > 0 for its
        /// nth correction, a final candle changed by a trade that arrived late.
        revision: u32 => get_revision / set_revision,
    }
    extra {
        /// Base volume (exponent `qty_exponent`).
        volume: i128,
        /// Quote volume (exponent `price_exponent + qty_exponent`).
        quote_volume: i128,
        /// Taker-buy base volume.
        taker_buy_volume: i128,
        /// Taker-buy quote volume.
        taker_buy_quote_volume: i128,
    }
    build_extra(this, b) {
        let (hi, lo) = crate::decimal::split_i128(this.volume);
        b.set_volume_hi(hi);
        b.set_volume_lo(lo);
        let (hi, lo) = crate::decimal::split_i128(this.quote_volume);
        b.set_quote_volume_hi(hi);
        b.set_quote_volume_lo(lo);
        let (hi, lo) = crate::decimal::split_i128(this.taker_buy_volume);
        b.set_taker_buy_volume_hi(hi);
        b.set_taker_buy_volume_lo(lo);
        let (hi, lo) = crate::decimal::split_i128(this.taker_buy_quote_volume);
        b.set_taker_buy_quote_volume_hi(hi);
        b.set_taker_buy_quote_volume_lo(lo);
    }
    read_extra(rv) {
        let (r, v) = rv;
        v.volume = crate::decimal::join_i128(r.get_volume_hi(), r.get_volume_lo());
        v.quote_volume = crate::decimal::join_i128(r.get_quote_volume_hi(), r.get_quote_volume_lo());
        v.taker_buy_volume =
            crate::decimal::join_i128(r.get_taker_buy_volume_hi(), r.get_taker_buy_volume_lo());
        v.taker_buy_quote_volume = crate::decimal::join_i128(
            r.get_taker_buy_quote_volume_hi(),
            r.get_taker_buy_quote_volume_lo(),
        );
    }
);

/// The kind of an instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InstrumentKind {
    /// Not known.
    #[default]
    Unknown,
    /// Spot pair.
    Spot,
    /// Cash equity.
    Equity,
    /// Dated future.
    Future,
    /// Perpetual swap.
    Perpetual,
    /// Option.
    Option,
}

impl From<rc::InstrumentKind> for InstrumentKind {
    fn from(kind: rc::InstrumentKind) -> Self {
        match kind {
            rc::InstrumentKind::Unknown => Self::Unknown,
            rc::InstrumentKind::Spot => Self::Spot,
            rc::InstrumentKind::Equity => Self::Equity,
            rc::InstrumentKind::Future => Self::Future,
            rc::InstrumentKind::Perpetual => Self::Perpetual,
            rc::InstrumentKind::Option => Self::Option,
        }
    }
}

impl From<InstrumentKind> for rc::InstrumentKind {
    fn from(kind: InstrumentKind) -> Self {
        match kind {
            InstrumentKind::Unknown => Self::Unknown,
            InstrumentKind::Spot => Self::Spot,
            InstrumentKind::Equity => Self::Equity,
            InstrumentKind::Future => Self::Future,
            InstrumentKind::Perpetual => Self::Perpetual,
            InstrumentKind::Option => Self::Option,
        }
    }
}

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, RecordError> {
    Ok(reader?.to_string()?)
}

scalar_record!(
    /// What an instrument id means: venue, symbol, exponents.
    InstrumentDefinition, instrument_definition, RecordKind::INSTRUMENT_DEFINITION,
    {
        /// mdi instrument id.
        instrument_id: u32 => get_instrument_id / set_instrument_id,
        /// Exponent of prices.
        price_exponent: i8 => get_price_exponent / set_price_exponent,
        /// Exponent of quantities.
        qty_exponent: i8 => get_qty_exponent / set_qty_exponent,
        /// Receive time (ns).
        ts_receive_ns: i64 => get_ts_receive_ns / set_ts_receive_ns,
        /// Publish time (ns).
        ts_publish_ns: i64 => get_ts_publish_ns / set_ts_publish_ns,
        /// Tick size mantissa at `price_exponent`.
        tick_size: i64 => get_tick_size / set_tick_size,
        /// Step size mantissa at `qty_exponent`.
        step_size: i64 => get_step_size / set_step_size,
    }
    extra {
        /// Instrument kind.
        kind: InstrumentKind,
        /// Venue name.
        venue: String,
        /// Venue symbol.
        symbol: String,
        /// Base asset.
        base_asset: String,
        /// Quote asset.
        quote_asset: String,
    }
    build_extra(this, b) {
        b.set_kind(this.kind.into());
        b.set_venue(this.venue.as_str());
        b.set_symbol(this.symbol.as_str());
        b.set_base_asset(this.base_asset.as_str());
        b.set_quote_asset(this.quote_asset.as_str());
    }
    read_extra(rv) {
        let (r, v) = rv;
        v.kind = r.get_kind()?.into();
        v.venue = text(r.get_venue())?;
        v.symbol = text(r.get_symbol())?;
        v.base_asset = text(r.get_base_asset())?;
        v.quote_asset = text(r.get_quote_asset())?;
    }
);

/// The state a [`FeedStatus`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FeedState {
    /// Connected to the venue.
    #[default]
    Connected,
    /// Disconnected from the venue.
    Disconnected,
    /// Reconnecting.
    Reconnecting,
    /// Venue sequence gap.
    Gap,
    /// Book resynchronisation started.
    ResyncStarted,
    /// Book resynchronised.
    ResyncDone,
    /// Trading halted.
    Halted,
    /// Trading (resumed).
    Trading,
    /// End of the venue's session.
    EndOfSession,
    /// Malformed frames counted and skipped.
    Malformed,
    /// Values that did not fit fixed point.
    ValueOutOfRange,
    /// Events arrive late (receive − event time over the limit for a while); `count`:
    /// the lag in ms.
    Lagging,
    /// The lag is back under the limit; `count`: the lag in ms.
    CaughtUp,
    /// Trades arrived after their candle was final; `count`: how many since the last
    /// report, `detail`: how many corrected candles and how many could not be placed.
    LateTrades,
}

macro_rules! mirror_enum {
    ($ours:ident, $theirs:path, [$($v:ident),*]) => {
        impl From<$theirs> for $ours {
            fn from(value: $theirs) -> Self {
                match value { $( <$theirs>::$v => Self::$v, )* }
            }
        }
        impl From<$ours> for $theirs {
            fn from(value: $ours) -> Self {
                match value { $( $ours::$v => Self::$v, )* }
            }
        }
    };
}

mirror_enum!(
    FeedState,
    rc::FeedState,
    [
        Connected,
        Disconnected,
        Reconnecting,
        Gap,
        ResyncStarted,
        ResyncDone,
        Halted,
        Trading,
        EndOfSession,
        Malformed,
        ValueOutOfRange,
        Lagging,
        CaughtUp,
        LateTrades
    ]
);

scalar_record!(
    /// Feed health: connection changes, gaps, resyncs, halts, malformed input.
    FeedStatus, feed_status, RecordKind::FEED_STATUS,
    {
        /// mdi instrument id, 0 for the whole feed.
        instrument_id: u32 => get_instrument_id / set_instrument_id,
        /// Venue sequence.
        venue_seq: u64 => get_venue_seq / set_venue_seq,
        /// Venue event time (ns).
        ts_exchange_ns: i64 => get_ts_exchange_ns / set_ts_exchange_ns,
        /// Receive time (ns).
        ts_receive_ns: i64 => get_ts_receive_ns / set_ts_receive_ns,
        /// Publish time (ns).
        ts_publish_ns: i64 => get_ts_publish_ns / set_ts_publish_ns,
        /// Gap: first missing venue sequence.
        expected_seq: u64 => get_expected_seq / set_expected_seq,
        /// Gap: the sequence that arrived instead.
        received_seq: u64 => get_received_seq / set_received_seq,
        /// Gap: missing events; malformed/out of range: how many.
        count: u64 => get_count / set_count,
    }
    extra {
        /// The state reported.
        state: FeedState,
        /// Venue name.
        venue: String,
        /// Free text for operators.
        detail: String,
    }
    build_extra(this, b) {
        b.set_state(this.state.into());
        b.set_venue(this.venue.as_str());
        b.set_detail(this.detail.as_str());
    }
    read_extra(rv) {
        let (r, v) = rv;
        v.state = r.get_state()?.into();
        v.venue = text(r.get_venue())?;
        v.detail = text(r.get_detail())?;
    }
);

scalar_record!(
    /// Control record: the first record a writer commits in a new epoch.
    EpochStart, epoch_start, RecordKind::EPOCH_START,
    {
        /// The new epoch.
        epoch: u64 => get_epoch / set_epoch,
        /// The writer's process id.
        writer_pid: u32 => get_writer_pid / set_writer_pid,
        /// When the writer started (ns since the Unix epoch, 0 if unknown).
        started_ns: i64 => get_started_ns / set_started_ns,
        /// The epoch it replaces, 0 for a new ring.
        previous_epoch: u64 => get_previous_epoch / set_previous_epoch,
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ADR 0008's schema rule: a record written by a newer schema (a field added: one
    /// more data word) decodes here with the fields this build knows; one written by an
    /// older schema (the last data word not there yet) decodes with that word's fields
    /// at their defaults.
    #[test]
    fn records_of_a_newer_or_older_schema_still_decode() {
        let trade = Trade {
            instrument_id: 7,
            price_exponent: -2,
            qty_exponent: -3,
            aggressor: Side::Sell,
            venue_seq: 11,
            ts_exchange_ns: 12,
            ts_receive_ns: 13,
            ts_publish_ns: 14,
            price: 15,
            qty: 16,
            trade_id: 17,
            first_trade_id: 18,
            last_trade_id: 19,
            is_aggregate: true,
        };
        let mut encoder = RecordEncoder::new();
        let words = encoder.encode_words(&trade).unwrap().to_vec();
        // [segment table][root struct pointer][data words][pointer words][...]
        let root = words[1];
        let data_words = usize::try_from((root >> 32) & 0xffff).unwrap();
        let with_data_words = |mut w: Vec<u64>, delta: i64| {
            w[1] = (root & !(0xffff << 32)) | (((data_words as i64 + delta) as u64) << 32);
            w[0] = (w[0] & 0xffff_ffff) | (((w.len() - 1) as u64) << 32);
            w
        };

        let mut newer = words.clone();
        newer.insert(2 + data_words, 0x5eed_f00d_dead_beef);
        let newer = with_data_words(newer, 1);
        assert_eq!(decode::<Trade>(newer.as_bytes()).unwrap(), trade);

        let mut older = words.clone();
        older.remove(1 + data_words);
        let older = with_data_words(older, -1);
        let back: Trade = decode(older.as_bytes()).unwrap();
        // every field is as written, or — if it lived in the missing word — its default
        let default = Trade::default();
        macro_rules! as_written_or_default {
            ($($field:ident),*) => {$(
                assert!(
                    back.$field == trade.$field || back.$field == default.$field,
                    "{}: {:?}", stringify!($field), back.$field
                );
            )*};
        }
        as_written_or_default!(
            instrument_id,
            price_exponent,
            qty_exponent,
            aggressor,
            venue_seq,
            ts_exchange_ns,
            ts_receive_ns,
            ts_publish_ns,
            price,
            qty,
            trade_id,
            first_trade_id,
            last_trade_id,
            is_aggregate
        );
        assert_ne!(back, trade, "a missing word reads as defaults");
    }

    /// The publish time read straight from the bytes is what the generated readers
    /// decode, for every kind, every encoding (builder or hand-written), any values.
    #[test]
    fn publish_times_read_in_place_equal_the_decoded_ones() {
        fn check<T: RecordType>(record: &T) {
            let mut encoder = RecordEncoder::new();
            let words = encoder.encode_words(record).unwrap().to_vec();
            let fast = publish_time_of(T::KIND, words.len(), |i| words[i]);
            let decoded =
                crate::view::RecordView::open(T::KIND, words.as_bytes(), |v| v.ts_publish_ns())
                    .unwrap();
            assert_eq!(fast, decoded, "{}", T::KIND);
            assert!(fast.is_some());
        }
        proptest!(|(t in any::<i64>(), n in any::<u64>(), text in "[A-Z]{0,12}")| {
            check(&Trade { ts_publish_ns: t, trade_id: n, ..Trade::default() });
            check(&Quote { ts_publish_ns: t, venue_seq: n, ..Quote::default() });
            check(&BookUpdate {
                ts_publish_ns: t,
                bids: vec![PriceLevel { price: n as i64, qty: 1 }; (n % 4) as usize],
                ..BookUpdate::default()
            });
            check(&Kline { ts_publish_ns: t, trades: n, ..Kline::default() });
            check(&InstrumentDefinition {
                ts_publish_ns: t,
                symbol: text.clone(),
                ..InstrumentDefinition::default()
            });
            check(&FeedStatus { ts_publish_ns: t, detail: text, ..FeedStatus::default() });
        });
        assert_eq!(publish_time_of(RecordKind::EPOCH_START, 4, |_| 0), None);
        assert_eq!(
            publish_time_of(RecordKind::APPLICATION_FIRST, 4, |_| 0),
            None
        );
        assert_eq!(
            publish_time_of(RecordKind::TRADE, 1, |_| 0),
            None,
            "too short"
        );
        // a segment table claiming more words than the body holds
        assert_eq!(
            publish_time_of(RecordKind::TRADE, 3, |i| [99 << 32, 0, 0][i]),
            None
        );
    }

    #[test]
    fn kind_sets_hold_exactly_their_kinds() {
        for kind in RecordKind::RECORDS {
            let set = RecordKinds::only(kind);
            assert_eq!(set.len(), 1);
            assert!(set.contains(kind));
            assert_eq!(RecordKind::from_name(kind.name()), Some(kind));
            assert_eq!(set.to_string().parse::<RecordKinds>(), Ok(set));
            for other in RecordKind::RECORDS.into_iter().filter(|&o| o != kind) {
                assert!(!set.contains(other), "{kind} holds {other}");
            }
        }
        assert_eq!(RecordKinds::ALL.len(), 6);
        assert!(!RecordKinds::MARKET_DATA.contains(RecordKind::INSTRUMENT_DEFINITION));
        for outside in [
            RecordKind::PADDING,
            RecordKind::EPOCH_START,
            RecordKind(15),
            RecordKind(48),
            RecordKind::APPLICATION_FIRST,
            RecordKind(u16::MAX),
        ] {
            assert!(!RecordKinds::ALL.contains(outside), "{outside}");
            assert_eq!(RecordKinds::ALL.with(outside), RecordKinds::ALL);
        }
        assert_eq!(
            "trades, klines".parse::<RecordKinds>(),
            Ok(RecordKinds::only(RecordKind::TRADE).with(RecordKind::KLINE))
        );
        assert_eq!(
            "statuses".parse::<RecordKinds>(),
            Ok(RecordKinds::only(RecordKind::FEED_STATUS))
        );
        assert!(
            "trade,candles"
                .parse::<RecordKinds>()
                .unwrap_err()
                .contains("candles")
        );
        assert!("".parse::<RecordKinds>().is_err());
    }

    fn roundtrip<T: RecordType + PartialEq + fmt::Debug>(value: &T) {
        let mut encoder = RecordEncoder::new();
        let body = encoder.encode(value).expect("encode");
        assert_eq!(body.len() % 8, 0);
        let mut aligned = vec![0u64; body.len() / 8];
        aligned.as_mut_bytes().copy_from_slice(body);
        let back: T = decode(aligned.as_bytes()).expect("decode");
        assert_eq!(&back, value);
    }

    #[test]
    fn every_kind_roundtrips() {
        roundtrip(&Trade {
            instrument_id: 1,
            price_exponent: -2,
            qty_exponent: -8,
            aggressor: Side::Sell,
            venue_seq: 99,
            ts_exchange_ns: 1,
            ts_receive_ns: 2,
            ts_publish_ns: 3,
            price: -5,
            qty: 7,
            trade_id: 99,
            first_trade_id: 90,
            last_trade_id: 99,
            is_aggregate: true,
        });
        roundtrip(&Quote {
            instrument_id: 2,
            bid_price: 10,
            ask_price: 11,
            bid_qty: 1,
            ask_qty: 2,
            ..Quote::default()
        });
        roundtrip(&BookUpdate {
            instrument_id: 3,
            is_snapshot: true,
            first_update_id: 5,
            last_update_id: 9,
            bids: vec![PriceLevel { price: 1, qty: 2 }; 3],
            asks: vec![PriceLevel { price: 4, qty: 0 }],
            ..BookUpdate::default()
        });
        roundtrip(&Kline {
            instrument_id: 4,
            interval_ms: 60_000,
            volume: i128::MAX,
            quote_volume: -1,
            taker_buy_volume: 1 << 70,
            taker_buy_quote_volume: i128::MIN,
            first_trade_id: -1,
            last_trade_id: -1,
            ..Kline::default()
        });
        roundtrip(&InstrumentDefinition {
            instrument_id: 5,
            kind: InstrumentKind::Spot,
            venue: "binance".into(),
            symbol: "BTCUSDT".into(),
            base_asset: "BTC".into(),
            quote_asset: "USDT".into(),
            ..InstrumentDefinition::default()
        });
        roundtrip(&FeedStatus {
            state: FeedState::Gap,
            expected_seq: 10,
            received_seq: 15,
            count: 5,
            venue: "binance".into(),
            detail: "depth U/u gap".into(),
            ..FeedStatus::default()
        });
        roundtrip(&EpochStart {
            epoch: 3,
            writer_pid: 42,
            started_ns: 5,
            previous_epoch: 2,
        });
    }

    #[test]
    fn large_book_is_still_one_segment() {
        let book = BookUpdate {
            bids: vec![PriceLevel { price: 1, qty: 2 }; 5000],
            ..BookUpdate::default()
        };
        roundtrip(&book);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = [0xffu64; 4];
        assert!(decode::<Trade>(garbage.as_bytes()).is_err());
        assert!(decode::<Trade>(&[]).is_err());
    }

    proptest! {
        #[test]
        fn decoder_never_panics(words in proptest::collection::vec(any::<u64>(), 0..64)) {
            let _ = decode::<BookUpdate>(words.as_bytes());
            let _ = decode::<Kline>(words.as_bytes());
            let _ = decode::<FeedStatus>(words.as_bytes());
        }

        #[test]
        fn trades_roundtrip(price: i64, qty: i64, id: u64, ts: i64) {
            roundtrip(&Trade { price, qty, trade_id: id, ts_exchange_ns: ts, ..Trade::default() });
        }
    }
}
