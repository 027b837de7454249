//! NASDAQ TotalView-ITCH 5.0 messages: every type, decoded in place.
//!
//! Each message is a type byte followed by a fixed layout (big-endian integers, ASCII
//! alphas, prices as integers with 4 implied decimals — 8 for MWCB levels — and a 6-byte
//! timestamp: nanoseconds since midnight). [`decode`] checks the type and the length and
//! returns a reference into the buffer as the matching `zerocopy` struct — nothing is
//! copied. The structs are also how messages are built (`mdfeedsim`, tests): fill one and
//! write [`IntoBytes::as_bytes`].

// zerocopy's `KnownLayout` derive adds helper types without `Debug`; every type
// written here has it.
#![allow(missing_debug_implementations)]

use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Why bytes are not an ITCH 5.0 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItchError {
    /// No bytes.
    #[error("empty ITCH message")]
    Empty,
    /// A type byte ITCH 5.0 does not define.
    #[error("unknown ITCH message type {0:?}")]
    UnknownType(char),
    /// The length is not the type's fixed length.
    #[error("ITCH message {kind:?} is {len} bytes; the type has {expected}")]
    BadLength {
        /// The type byte.
        kind: char,
        /// Bytes given.
        len: usize,
        /// The type's length.
        expected: usize,
    },
}

/// The 11 bytes every message starts with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// Message type (ASCII).
    pub kind: u8,
    /// The venue's locate code for the stock (0 for market-wide messages).
    pub stock_locate: U16,
    /// NASDAQ internal tracking number.
    pub tracking: U16,
    /// Nanoseconds since midnight, 48-bit big-endian.
    pub timestamp: [u8; 6],
}

impl Header {
    /// A header of `kind` for `stock_locate` at `ns` since midnight.
    pub fn new(kind: u8, stock_locate: u16, ns: u64) -> Self {
        let be = ns.to_be_bytes();
        Self {
            kind,
            stock_locate: U16::new(stock_locate),
            tracking: U16::new(0),
            timestamp: [be[2], be[3], be[4], be[5], be[6], be[7]],
        }
    }

    /// Nanoseconds since midnight.
    pub fn timestamp_ns(&self) -> u64 {
        let t = self.timestamp;
        u64::from_be_bytes([0, 0, t[0], t[1], t[2], t[3], t[4], t[5]])
    }
}

macro_rules! messages {
    ($(
        $(#[$doc:meta])*
        $name:ident = $code:literal, $len:literal {
            $( $(#[$fdoc:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
            #[repr(C)]
            pub struct $name {
                /// Type, stock locate, tracking number, timestamp.
                pub header: Header,
                $( $(#[$fdoc])* pub $field: $ty, )*
            }

            impl $name {
                /// The type byte.
                pub const KIND: u8 = $code;
                /// The message's fixed length.
                pub const LEN: usize = $len;
            }

            const _: () = assert!(std::mem::size_of::<$name>() == $len);
        )*

        /// A decoded message: a reference into the bytes it was decoded from.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Message<'a> {
            $( $(#[$doc])* $name(&'a $name), )*
        }

        impl<'a> Message<'a> {
            /// The header every message starts with.
            #[inline]
            pub fn header(&self) -> &'a Header {
                match self {
                    $( Self::$name(m) => &m.header, )*
                }
            }
        }

        /// The fixed length of messages of type `kind`, if ITCH 5.0 defines it.
        pub fn message_len(kind: u8) -> Option<usize> {
            match kind {
                $( $code => Some($len), )*
                _ => None,
            }
        }

        /// Decodes one message (exactly its bytes, type byte first).
        #[inline]
        pub fn decode(bytes: &[u8]) -> Result<Message<'_>, ItchError> {
            let kind = *bytes.first().ok_or(ItchError::Empty)?;
            match kind {
                $( $code => $name::ref_from_bytes(bytes).map(Message::$name).map_err(|_| {
                    ItchError::BadLength { kind: char::from(kind), len: bytes.len(), expected: $len }
                }), )*
                _ => Err(ItchError::UnknownType(char::from(kind))),
            }
        }
    };
}

messages! {
    /// System event (`S`): start/end of messages, system hours, market hours.
    SystemEvent = b'S', 12 {
        /// `O` start of messages, `S` start of system hours, `Q` start of market hours,
        /// `M` end of market hours, `E` end of system hours, `C` end of messages.
        event_code: u8,
    }
    /// Stock directory (`R`): one per stock, before its orders.
    StockDirectory = b'R', 39 {
        /// Symbol, space-padded.
        stock: [u8; 8],
        /// Listing market.
        market_category: u8,
        /// Financial status indicator.
        financial_status: u8,
        /// Round lot size in shares.
        round_lot_size: U32,
        /// `Y`: round lots only.
        round_lots_only: u8,
        /// Issue classification.
        issue_classification: u8,
        /// Issue sub-type.
        issue_subtype: [u8; 2],
        /// `P` live, `T` test.
        authenticity: u8,
        /// Reg SHO short-sale threshold.
        short_sale_threshold: u8,
        /// IPO flag.
        ipo_flag: u8,
        /// LULD reference price tier.
        luld_tier: u8,
        /// ETP flag.
        etp_flag: u8,
        /// ETP leverage factor.
        etp_leverage_factor: U32,
        /// Inverse ETP.
        inverse_indicator: u8,
    }
    /// Stock trading action (`H`): halted, paused, quotation only, trading.
    StockTradingAction = b'H', 25 {
        /// Symbol.
        stock: [u8; 8],
        /// `H` halted, `P` paused, `Q` quotation only, `T` trading.
        trading_state: u8,
        /// Reserved.
        reserved: u8,
        /// Reason code.
        reason: [u8; 4],
    }
    /// Reg SHO short-sale price test restriction (`Y`).
    RegShoRestriction = b'Y', 20 {
        /// Symbol.
        stock: [u8; 8],
        /// `0` none, `1` activated, `2` continued.
        action: u8,
    }
    /// Market participant position (`L`).
    MarketParticipantPosition = b'L', 26 {
        /// Market participant id.
        mpid: [u8; 4],
        /// Symbol.
        stock: [u8; 8],
        /// Primary market maker.
        primary_market_maker: u8,
        /// Market maker mode.
        market_maker_mode: u8,
        /// Participant state.
        participant_state: u8,
    }
    /// Market-wide circuit breaker decline levels (`V`), 8 implied decimals.
    MwcbDeclineLevel = b'V', 35 {
        /// Level 1.
        level1: U64,
        /// Level 2.
        level2: U64,
        /// Level 3.
        level3: U64,
    }
    /// Market-wide circuit breaker breached (`W`).
    MwcbStatus = b'W', 12 {
        /// The level breached.
        breached_level: u8,
    }
    /// IPO quoting period update (`K`).
    IpoQuotingPeriodUpdate = b'K', 28 {
        /// Symbol.
        stock: [u8; 8],
        /// Quotation release time (seconds since midnight).
        release_time: U32,
        /// Release qualifier.
        release_qualifier: u8,
        /// IPO price.
        ipo_price: U32,
    }
    /// LULD auction collar (`J`).
    LuldAuctionCollar = b'J', 35 {
        /// Symbol.
        stock: [u8; 8],
        /// Reference price.
        reference_price: U32,
        /// Upper collar.
        upper_price: U32,
        /// Lower collar.
        lower_price: U32,
        /// Extension count.
        extension: U32,
    }
    /// Operational halt (`h`).
    OperationalHalt = b'h', 21 {
        /// Symbol.
        stock: [u8; 8],
        /// Market code.
        market_code: u8,
        /// `H` halted, `T` resumed.
        action: u8,
    }
    /// Add order, no attribution (`A`).
    AddOrder = b'A', 36 {
        /// Order reference number (unique for the day).
        order_ref: U64,
        /// `B` buy, `S` sell.
        side: u8,
        /// Shares.
        shares: U32,
        /// Symbol.
        stock: [u8; 8],
        /// Limit price, 4 implied decimals.
        price: U32,
    }
    /// Add order with market participant attribution (`F`).
    AddOrderMpid = b'F', 40 {
        /// Order reference number.
        order_ref: U64,
        /// `B` buy, `S` sell.
        side: u8,
        /// Shares.
        shares: U32,
        /// Symbol.
        stock: [u8; 8],
        /// Limit price, 4 implied decimals.
        price: U32,
        /// Market participant id.
        attribution: [u8; 4],
    }
    /// A resting order executed, at its price (`E`).
    OrderExecuted = b'E', 31 {
        /// Order reference number.
        order_ref: U64,
        /// Shares executed.
        executed_shares: U32,
        /// Match number.
        match_number: U64,
    }
    /// A resting order executed at another price (`C`).
    OrderExecutedWithPrice = b'C', 36 {
        /// Order reference number.
        order_ref: U64,
        /// Shares executed.
        executed_shares: U32,
        /// Match number.
        match_number: U64,
        /// `Y`: print it (counts for volume); `N`: do not.
        printable: u8,
        /// Execution price, 4 implied decimals.
        execution_price: U32,
    }
    /// Part of an order cancelled (`X`).
    OrderCancel = b'X', 23 {
        /// Order reference number.
        order_ref: U64,
        /// Shares cancelled.
        cancelled_shares: U32,
    }
    /// An order deleted (`D`).
    OrderDelete = b'D', 19 {
        /// Order reference number.
        order_ref: U64,
    }
    /// An order replaced by a new one (`U`): new reference, shares and price.
    OrderReplace = b'U', 35 {
        /// The replaced order.
        original_ref: U64,
        /// The new order.
        new_ref: U64,
        /// New shares.
        shares: U32,
        /// New price.
        price: U32,
    }
    /// A trade against a non-displayed order (`P`).
    NonCrossTrade = b'P', 44 {
        /// Order reference number (0 for these).
        order_ref: U64,
        /// Side of the non-displayed order.
        side: u8,
        /// Shares.
        shares: U32,
        /// Symbol.
        stock: [u8; 8],
        /// Price.
        price: U32,
        /// Match number.
        match_number: U64,
    }
    /// A cross trade (`Q`): opening, closing, IPO, halt crosses.
    CrossTrade = b'Q', 40 {
        /// Shares (8 bytes in this message).
        shares: U64,
        /// Symbol.
        stock: [u8; 8],
        /// Cross price.
        cross_price: U32,
        /// Match number.
        match_number: U64,
        /// `O` opening, `C` closing, `H` halt/IPO, `I` intraday.
        cross_type: u8,
    }
    /// A trade broken (`B`).
    BrokenTrade = b'B', 19 {
        /// Match number of the broken trade.
        match_number: U64,
    }
    /// Net order imbalance indicator (`I`).
    Noii = b'I', 50 {
        /// Paired shares.
        paired_shares: U64,
        /// Imbalance shares.
        imbalance_shares: U64,
        /// Imbalance direction.
        imbalance_direction: u8,
        /// Symbol.
        stock: [u8; 8],
        /// Far price.
        far_price: U32,
        /// Near price.
        near_price: U32,
        /// Current reference price.
        current_reference_price: U32,
        /// Cross type.
        cross_type: u8,
        /// Price variation indicator.
        price_variation_indicator: u8,
    }
    /// Retail price improvement indicator (`N`).
    RetailInterest = b'N', 20 {
        /// Symbol.
        stock: [u8; 8],
        /// Interest flag.
        interest_flag: u8,
    }
    /// Direct listing with capital raise price discovery (`O`).
    DirectListingPriceDiscovery = b'O', 48 {
        /// Symbol.
        stock: [u8; 8],
        /// Open eligibility status.
        open_eligibility_status: u8,
        /// Minimum allowable price.
        minimum_allowable_price: U32,
        /// Maximum allowable price.
        maximum_allowable_price: U32,
        /// Near execution price.
        near_execution_price: U32,
        /// Near execution time.
        near_execution_time: U64,
        /// Lower price range collar.
        lower_price_range_collar: U32,
        /// Upper price range collar.
        upper_price_range_collar: U32,
    }
}

/// A space-padded ITCH symbol as text (trailing spaces dropped; `None` if not ASCII).
pub fn symbol(stock: &[u8; 8]) -> Option<&str> {
    let text = std::str::from_utf8(stock).ok()?;
    let text = text.trim_end_matches(' ');
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())).then_some(text)
}

/// A symbol space-padded to ITCH's 8 bytes (longer ones are cut).
pub fn stock(symbol: &str) -> [u8; 8] {
    let mut out = [b' '; 8];
    for (o, b) in out.iter_mut().zip(symbol.bytes()) {
        *o = b;
    }
    out
}

/// ITCH prices have 4 implied decimals.
pub const PRICE_EXPONENT: i8 = -4;

/// Reads an ITCH file: each message behind a 2-byte big-endian length (NASDAQ's files) —
/// or behind a zero prefix, as some sample files have, in which case the type's fixed
/// length is used. Yields messages until the end; a truncated or unknown message ends it
/// with an error.
#[derive(Debug)]
pub struct FileMessages<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> FileMessages<'a> {
    /// Messages of a whole file's bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> usize {
        self.at
    }
}

/// Why a file's message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ITCH file at byte {offset}: {problem}")]
pub struct FileError {
    /// Where the message starts (its length prefix).
    pub offset: usize,
    /// What is wrong.
    pub problem: String,
}

impl<'a> Iterator for FileMessages<'a> {
    type Item = Result<&'a [u8], FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            return None;
        }
        let offset = self.at;
        let fail = |problem: String| Some(Err(FileError { offset, problem }));
        if rest.len() < 3 {
            self.at = self.bytes.len();
            return fail(format!("{} trailing bytes", rest.len()));
        }
        let prefix = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(len) = message_len(rest[2]) else {
            self.at = self.bytes.len();
            return fail(format!("unknown message type {:?}", char::from(rest[2])));
        };
        if prefix != 0 && prefix != len {
            self.at = self.bytes.len();
            return fail(format!(
                "length prefix {prefix} for a {:?} message of {len} bytes",
                char::from(rest[2])
            ));
        }
        if rest.len() < 2 + len {
            self.at = self.bytes.len();
            return fail(format!("truncated {:?} message", char::from(rest[2])));
        }
        self.at += 2 + len;
        Some(Ok(&rest[2..2 + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/itch/ex20101224.TEST_ITCH_50.gz"
        );
        let file = std::fs::File::open(path).expect("the ITCH sample in itch/data/itch");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(file), &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_sample_file_decodes_to_its_documented_counts() {
        let bytes = sample();
        assert_eq!(bytes.len(), 465_048);
        let mut counts = std::collections::BTreeMap::new();
        for message in FileMessages::new(&bytes) {
            let message = message.unwrap();
            let decoded = decode(message).unwrap();
            assert_eq!(decoded.header().kind, message[0]);
            *counts.entry(char::from(message[0])).or_insert(0) += 1;
        }
        let expected = [
            ('A', 4_997),
            ('D', 1_745),
            ('E', 198),
            ('F', 3),
            ('H', 3),
            ('P', 5_000),
            ('R', 3),
            ('S', 6),
            ('U', 12),
            ('X', 45),
        ];
        assert_eq!(counts.into_iter().collect::<Vec<_>>(), expected);
        let directory: Vec<&str> = FileMessages::new(&bytes)
            .filter_map(|m| match decode(m.unwrap()) {
                Ok(Message::StockDirectory(r)) => symbol(&r.stock),
                _ => None,
            })
            .collect();
        assert_eq!(directory, ["ALC", "BOB", "CHAR"]);
    }

    #[test]
    fn lengths_and_types_are_checked() {
        let add = AddOrder {
            header: Header::new(b'A', 7, 34_200_000_000_123),
            order_ref: U64::new(42),
            side: b'B',
            shares: U32::new(100),
            stock: stock("MSFT"),
            price: U32::new(2_501_000),
        };
        let bytes = add.as_bytes();
        assert_eq!(decode(bytes), Ok(Message::AddOrder(&add)));
        assert_eq!(add.header.timestamp_ns(), 34_200_000_000_123);
        assert_eq!(symbol(&add.stock), Some("MSFT"));
        assert_eq!(
            decode(&bytes[..35]),
            Err(ItchError::BadLength {
                kind: 'A',
                len: 35,
                expected: 36
            })
        );
        assert_eq!(decode(b"zzz"), Err(ItchError::UnknownType('z')));
        assert_eq!(decode(b""), Err(ItchError::Empty));
        // a file: NASDAQ's length prefix, then a truncated message
        let mut file = vec![0, 36];
        file.extend_from_slice(bytes);
        file.extend_from_slice(&[0, 36]);
        file.extend_from_slice(&bytes[..10]);
        let mut messages = FileMessages::new(&file);
        assert_eq!(messages.next(), Some(Ok(bytes)));
        assert!(matches!(
            messages.next(),
            Some(Err(FileError { offset: 38, .. }))
        ));
        assert_eq!(messages.next(), None);
        let wrong_prefix = [&[0u8, 35][..], bytes].concat();
        assert!(FileMessages::new(&wrong_prefix).next().unwrap().is_err());
    }

    proptest! {
        #[test]
        fn every_type_decodes_exactly_its_length(kind: u8, extra in 0usize..3, fill: u8) {
            if let Some(len) = message_len(kind) {
                let mut bytes = vec![fill; len + extra];
                bytes[0] = kind;
                let decoded = decode(&bytes);
                if extra == 0 {
                    prop_assert_eq!(decoded.map(|m| m.header().kind), Ok(kind));
                } else {
                    let bad = ItchError::BadLength { kind: char::from(kind), len: len + extra, expected: len };
                    prop_assert_eq!(decoded, Err(bad));
                }
                let short = decode(&bytes[..len - 1]);
                prop_assert!(
                    matches!(short, Err(ItchError::BadLength { .. })),
                    "{:?}",
                    short
                );
            } else {
                let bytes = [kind, 0, 0];
                prop_assert_eq!(decode(&bytes), Err(ItchError::UnknownType(char::from(kind))));
            }
        }

        #[test]
        fn files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut read = 0;
            for m in FileMessages::new(&bytes) {
                if let Ok(m) = m {
                    prop_assert!(decode(m).is_ok());
                }
                read += 1;
                prop_assert!(read <= bytes.len());
            }
        }
    }
}
