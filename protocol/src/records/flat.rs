//! Hand-written encodings of the hot tick records — [`Trade`], [`Quote`] and
//! [`BookUpdate`] — byte for byte what the Cap'n Proto builder writes for them (the
//! property tests below hold the two to that), without the builder's set-up, its segment
//! bookkeeping and the copy out of its scratch space. A publisher writes one of these per
//! venue message; at ten million a second the builder alone would take the whole core.
//!
//! The layouts come from the schema's field placement (`schema/records.capnp`, as the
//! generated code spells them out): data words first, then the pointer section, then the
//! lists in the order they are initialised. A body is the segment table (one segment)
//! followed by the segment, whose first word is the root struct pointer.

use std::hint::select_unpredictable;

use super::{BookUpdate, PriceLevel, Quote, Side, Trade};

/// Data words of `Trade`, `Quote`, `BookUpdate` and `PriceLevel` in the schema.
const TRADE_DATA_WORDS: u16 = 11;
const QUOTE_DATA_WORDS: u16 = 9;
const BOOK_UPDATE_DATA_WORDS: u16 = 7;
const BOOK_UPDATE_POINTERS: u16 = 2;
const PRICE_LEVEL_WORDS: u64 = 2;

/// Largest list a list pointer can describe: its word count has 29 bits.
const MAX_LIST_WORDS: u64 = (1 << 29) - 1;

/// The segment table of a one-segment message of `words` words.
fn segment_table(words: u64) -> u64 {
    words << 32
}

/// A struct pointer: `offset` words from the end of the pointer to the struct.
fn struct_pointer(offset: u64, data_words: u16, pointers: u16) -> u64 {
    (offset << 2) | (u64::from(data_words) << 32) | (u64::from(pointers) << 48)
}

/// A list pointer to an inline-composite list (element size 7) of `words` words, not
/// counting its tag word, `offset` words from the end of the pointer.
fn composite_list_pointer(offset: u64, words: u64) -> u64 {
    1 | (offset << 2) | ((7 | (words << 3)) << 32)
}

/// The first data word every tick shares: instrument id (bytes 0-3), price exponent
/// (byte 4), quantity exponent (byte 5), and the kind's own bytes 6-7.
fn head(instrument_id: u32, price_exponent: i8, qty_exponent: i8, bytes_6_7: u16) -> u64 {
    u64::from(instrument_id)
        | (u64::from(price_exponent.cast_unsigned()) << 32)
        | (u64::from(qty_exponent.cast_unsigned()) << 40)
        | (u64::from(bytes_6_7) << 48)
}

/// The schema's `Side` ordinals.
fn side_ordinal(side: Side) -> u16 {
    match side {
        Side::Unknown => 0,
        Side::Buy => 1,
        Side::Sell => 2,
    }
}

/// Where a hand-written encoding puts its words, in order: the encoder's buffer, or a
/// ring record's body in shared memory (written in place, no copy in between).
pub trait WordSink {
    /// Appends `words` (host order; the sink stores them little-endian).
    fn put<const N: usize>(&mut self, words: [u64; N]);
}

impl WordSink for Vec<u64> {
    #[inline]
    fn put<const N: usize>(&mut self, words: [u64; N]) {
        self.extend_from_slice(&words.map(u64::to_le));
    }
}

/// Body words of a Trade: segment table, root pointer, data.
pub(super) fn trade_words(_: &Trade) -> Option<usize> {
    Some(2 + usize::from(TRADE_DATA_WORDS))
}

pub(super) fn trade(t: &Trade, out: &mut impl WordSink) {
    out.put([
        segment_table(1 + u64::from(TRADE_DATA_WORDS)),
        struct_pointer(0, TRADE_DATA_WORDS, 0),
        head(
            t.instrument_id,
            t.price_exponent,
            t.qty_exponent,
            side_ordinal(t.aggressor),
        ),
        t.venue_seq,
        t.ts_exchange_ns.cast_unsigned(),
        t.ts_receive_ns.cast_unsigned(),
        t.ts_publish_ns.cast_unsigned(),
        t.price.cast_unsigned(),
        t.qty.cast_unsigned(),
        t.trade_id,
        t.first_trade_id,
        t.last_trade_id,
        u64::from(t.is_aggregate),
    ]);
}

/// Body words of a Quote: segment table, root pointer, data.
pub(super) fn quote_words(_: &Quote) -> Option<usize> {
    Some(2 + usize::from(QUOTE_DATA_WORDS))
}

pub(super) fn quote(q: &Quote, out: &mut impl WordSink) {
    out.put([
        segment_table(1 + u64::from(QUOTE_DATA_WORDS)),
        struct_pointer(0, QUOTE_DATA_WORDS, 0),
        head(q.instrument_id, q.price_exponent, q.qty_exponent, 0),
        q.venue_seq,
        q.ts_exchange_ns.cast_unsigned(),
        q.ts_receive_ns.cast_unsigned(),
        q.ts_publish_ns.cast_unsigned(),
        q.bid_price.cast_unsigned(),
        q.bid_qty.cast_unsigned(),
        q.ask_price.cast_unsigned(),
        q.ask_qty.cast_unsigned(),
    ]);
}

/// Words of a BookUpdate's root struct with its pointer: data, two list pointers.
const BOOK_UPDATE_ROOT_WORDS: u64 = 1 + BOOK_UPDATE_DATA_WORDS as u64 + BOOK_UPDATE_POINTERS as u64;

/// Body words of a BookUpdate: segment table, root, and each level list with its tag
/// word. `None` when a level list is too long for a list pointer (the builder then
/// reports it).
pub(super) fn book_update_words(b: &BookUpdate) -> Option<usize> {
    let bid_words = b.bids.len() as u64 * PRICE_LEVEL_WORDS;
    let ask_words = b.asks.len() as u64 * PRICE_LEVEL_WORDS;
    if bid_words > MAX_LIST_WORDS || ask_words > MAX_LIST_WORDS {
        return None;
    }
    usize::try_from(1 + BOOK_UPDATE_ROOT_WORDS + 1 + bid_words + 1 + ask_words).ok()
}

/// Writes a BookUpdate whose lists [`book_update_words`] accepted.
pub(super) fn book_update(b: &BookUpdate, out: &mut impl WordSink) {
    let bid_words = b.bids.len() as u64 * PRICE_LEVEL_WORDS;
    let ask_words = b.asks.len() as u64 * PRICE_LEVEL_WORDS;
    out.put([
        segment_table(BOOK_UPDATE_ROOT_WORDS + 1 + bid_words + 1 + ask_words),
        struct_pointer(0, BOOK_UPDATE_DATA_WORDS, BOOK_UPDATE_POINTERS),
        head(
            b.instrument_id,
            b.price_exponent,
            b.qty_exponent,
            u16::from(b.is_snapshot),
        ),
        b.venue_seq,
        b.ts_exchange_ns.cast_unsigned(),
        b.ts_receive_ns.cast_unsigned(),
        b.ts_publish_ns.cast_unsigned(),
        b.first_update_id,
        b.last_update_id,
        // bids: right after the asks pointer; asks: after the bids list
        composite_list_pointer(1, bid_words),
        composite_list_pointer(1 + bid_words, ask_words),
    ]);
    if b.bids.len() + b.asks.len() == 1 {
        one_level(b, out);
    } else {
        levels(&b.bids, out);
        levels(&b.asks, out);
    }
}

/// The two lists of a BookUpdate with a single level (the usual one: a packet touched
/// the stock once): four words whichever side it is on, chosen without a branch on the
/// side — the side of the next update is as good as random, a branch on it (or a loop
/// over each side's levels) is mispredicted half the time.
#[inline]
fn one_level(b: &BookUpdate, out: &mut impl WordSink) {
    let bid = b.bids.len() == 1;
    let level = select_unpredictable(bid, &b.bids, &b.asks)[0];
    let tag = |len: u64| struct_pointer(len, PRICE_LEVEL_WORDS as u16, 0);
    let (price, qty) = (level.price.cast_unsigned(), level.qty.cast_unsigned());
    // bids: [tag 1, price, qty, tag 0]; asks: [tag 0, tag 1, price, qty]
    out.put([
        select_unpredictable(bid, tag(1), tag(0)),
        select_unpredictable(bid, price, tag(1)),
        select_unpredictable(bid, qty, price),
        select_unpredictable(bid, tag(0), qty),
    ]);
}

/// A composite list's tag word and elements.
#[inline]
fn levels(levels: &[PriceLevel], out: &mut impl WordSink) {
    out.put([struct_pointer(
        levels.len() as u64,
        PRICE_LEVEL_WORDS as u16,
        0,
    )]);
    for level in levels {
        out.put([level.price.cast_unsigned(), level.qty.cast_unsigned()]);
    }
}

#[cfg(test)]
mod tests {
    use capnp::message::{self, HeapAllocator};
    use proptest::prelude::*;
    use zerocopy::IntoBytes;

    use super::super::{RecordType, decode};
    use super::*;

    /// The body the Cap'n Proto builder writes (segment table + its one segment).
    fn built<T: RecordType>(record: &T) -> Vec<u8> {
        let mut builder = message::Builder::new(HeapAllocator::new().first_segment_words(1 << 16));
        record
            .build(builder.init_root::<capnp::any_pointer::Builder<'_>>())
            .unwrap();
        let segments = builder.get_segments_for_output();
        assert_eq!(segments.len(), 1);
        let mut body = ((segments[0].len() as u64 / 8) << 32)
            .to_le_bytes()
            .to_vec();
        body.extend_from_slice(segments[0]);
        body
    }

    fn flat<T: RecordType>(record: &T) -> Vec<u64> {
        let words = record.flat_words().expect("no hand layout");
        let mut out = Vec::new();
        record.write_flat(&mut out);
        assert_eq!(
            out.len(),
            words,
            "the words written are the words announced"
        );
        out
    }

    fn same_as_builder<T: RecordType + PartialEq + std::fmt::Debug>(record: &T) {
        let words = flat(record);
        assert_eq!(words.as_bytes(), &built(record)[..], "{record:?}");
        assert_eq!(&decode::<T>(words.as_bytes()).unwrap(), record);
    }

    fn side() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Unknown), Just(Side::Buy), Just(Side::Sell)]
    }

    fn level() -> impl Strategy<Value = PriceLevel> {
        (any::<i64>(), any::<i64>()).prop_map(|(price, qty)| PriceLevel { price, qty })
    }

    prop_compose! {
        fn tick_head()(id: u32, pe: i8, qe: i8, seq: u64, te: i64, tr: i64, tp: i64)
            -> (u32, i8, i8, u64, i64, i64, i64) {
            (id, pe, qe, seq, te, tr, tp)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn trades_are_encoded_as_the_builder_does(
            h in tick_head(), aggressor in side(), price: i64, qty: i64,
            ids: (u64, u64, u64), is_aggregate: bool,
        ) {
            same_as_builder(&Trade {
                instrument_id: h.0, price_exponent: h.1, qty_exponent: h.2, aggressor,
                venue_seq: h.3, ts_exchange_ns: h.4, ts_receive_ns: h.5, ts_publish_ns: h.6,
                price, qty, trade_id: ids.0, first_trade_id: ids.1, last_trade_id: ids.2,
                is_aggregate,
            });
        }

        #[test]
        fn quotes_are_encoded_as_the_builder_does(h in tick_head(), sides: (i64, i64, i64, i64)) {
            same_as_builder(&Quote {
                instrument_id: h.0, price_exponent: h.1, qty_exponent: h.2,
                venue_seq: h.3, ts_exchange_ns: h.4, ts_receive_ns: h.5, ts_publish_ns: h.6,
                bid_price: sides.0, bid_qty: sides.1, ask_price: sides.2, ask_qty: sides.3,
            });
        }

        #[test]
        fn book_updates_are_encoded_as_the_builder_does(
            h in tick_head(), is_snapshot: bool, ids: (u64, u64),
            bids in proptest::collection::vec(level(), 0..40),
            asks in proptest::collection::vec(level(), 0..40),
        ) {
            same_as_builder(&BookUpdate {
                instrument_id: h.0, price_exponent: h.1, qty_exponent: h.2, is_snapshot,
                venue_seq: h.3, ts_exchange_ns: h.4, ts_receive_ns: h.5, ts_publish_ns: h.6,
                first_update_id: ids.0, last_update_id: ids.1, bids, asks,
            });
        }

        /// Short lists — a single level on either side takes its own path — as the builder.
        #[test]
        fn short_book_updates_are_encoded_as_the_builder_does(
            h in tick_head(),
            bids in proptest::collection::vec(level(), 0..3),
            asks in proptest::collection::vec(level(), 0..3),
        ) {
            same_as_builder(&BookUpdate {
                instrument_id: h.0, price_exponent: h.1, qty_exponent: h.2, is_snapshot: false,
                venue_seq: h.3, ts_exchange_ns: h.4, ts_receive_ns: h.5, ts_publish_ns: h.6,
                first_update_id: h.3, last_update_id: h.3, bids, asks,
            });
        }
    }

    #[test]
    fn a_big_snapshot_is_encoded_as_the_builder_does() {
        same_as_builder(&BookUpdate {
            is_snapshot: true,
            bids: vec![PriceLevel { price: 1, qty: 2 }; 5000],
            asks: vec![PriceLevel { price: 3, qty: 4 }; 4999],
            ..BookUpdate::default()
        });
    }
}
