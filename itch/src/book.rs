//! Order books per stock from ITCH order messages: add (with or without attribution),
//! executed (at the order's price or another), cancel, delete, replace.
//!
//! [`Books::apply`] takes one decoded message (or, for a caller that matches on the
//! message itself, one of the per-type methods such as [`Books::add_order`]) and fills in
//! what changed ([`Applied`], kept by the caller): the new total shares at each price
//! level it touched ([`LevelChange`]) and the execution ([`Execution`]), if any — data,
//! not a callback, so the whole path inlines into the caller's loop. Orders are keyed by
//! their reference number, which ITCH makes unique for the day across all stocks, and
//! point at their price level's slot, so a cancel or execution needs no price search. A
//! message about an order the books do not know (the feed was joined late, or messages
//! were lost) is counted and skipped.

use mdi_protocol::records::Side;
use mdi_protocol::ring::prefetch;
use zerocopy::byteorder::big_endian::U32;

use crate::message::{
    AddOrder, AddOrderMpid, Header, Message, OrderCancel, OrderDelete, OrderExecuted,
    OrderExecutedWithPrice, OrderReplace,
};

/// Where every order message carries its order reference (the original one for a
/// replace): right after the header.
const ORDER_REF_AT: usize = std::mem::size_of::<Header>();
/// Where a replace carries its new reference.
const NEW_REF_AT: usize = std::mem::offset_of!(OrderReplace, new_ref);
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(AddOrder, order_ref) == ORDER_REF_AT);
    assert!(offset_of!(AddOrderMpid, order_ref) == ORDER_REF_AT);
    assert!(offset_of!(OrderExecuted, order_ref) == ORDER_REF_AT);
    assert!(offset_of!(OrderExecutedWithPrice, order_ref) == ORDER_REF_AT);
    assert!(offset_of!(OrderCancel, order_ref) == ORDER_REF_AT);
    assert!(offset_of!(OrderDelete, order_ref) == ORDER_REF_AT);
    assert!(offset_of!(OrderReplace, original_ref) == ORDER_REF_AT);
};

/// A resting order: its stock, side, shares, and the slot of its price level in that
/// side's [`Ladder`] — a reduce goes straight to the level, no price search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Order {
    locate: u16,
    side: Side,
    shares: u32,
    level: u32,
}

/// A price level: (price with 4 implied decimals, total shares).
pub type Level = (u32, u64);

/// One side of a book. The levels live in slots that never move while the level exists
/// (orders point at them); `sorted` orders them by price so that the best is last (bids
/// ascending, asks descending), found by bisection when an order is added at a price.
/// Opening or closing a level moves only the entries above it, usually few: most
/// levels open and close near the best.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ladder {
    /// (sort key, slot), by key ascending; the key is the price for bids and its bitwise
    /// complement for asks, so the best level has the largest key either way.
    sorted: Vec<(u32, u32)>,
    /// Level slots: (price, total shares); free ones are listed in `free`.
    slots: Vec<Level>,
    free: Vec<u32>,
    asks: bool,
}

impl Ladder {
    fn new(side: Side) -> Self {
        Self {
            asks: side != Side::Buy,
            ..Self::default()
        }
    }

    fn key(&self, price: u32) -> u32 {
        if self.asks { !price } else { price }
    }

    /// Adds `shares` (not 0) at `price`; returns the level's slot, its new total and
    /// whether it is the best (the best bid or offer changed).
    #[inline]
    fn add(&mut self, price: u32, shares: u64) -> (u32, u64, bool) {
        let key = self.key(price);
        let len = self.sorted.len();
        let (slot, at_best) = match self.sorted.binary_search_by_key(&key, |l| l.0) {
            Ok(i) => (self.sorted[i].1, i + 1 == len),
            Err(i) => (self.open(i, key, price), i == len),
        };
        let level = &mut self.slots[slot as usize];
        level.1 = level.1.saturating_add(shares);
        (slot, level.1, at_best)
    }

    /// Takes `shares` from the level in `slot`, closing it at 0; returns its price, its
    /// new total and whether it is or was the best.
    #[inline(always)]
    fn take(&mut self, slot: u32, shares: u64) -> (u32, u64, bool) {
        let at_best = self.sorted.last().is_some_and(|l| l.1 == slot);
        let level = &mut self.slots[slot as usize];
        level.1 = level.1.saturating_sub(shares);
        let (price, left) = *level;
        if left == 0 {
            self.close(slot, price);
        }
        (price, left, at_best)
    }

    /// A new level at sorted position `i`; returns its slot.
    #[inline(never)]
    fn open(&mut self, i: usize, key: u32, price: u32) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = (price, 0);
                slot
            }
            None => {
                self.slots.push((price, 0));
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.sorted.insert(i, (key, slot));
        slot
    }

    #[inline(never)]
    fn close(&mut self, slot: u32, price: u32) {
        if let Ok(i) = self.sorted.binary_search_by_key(&self.key(price), |l| l.0) {
            self.sorted.remove(i);
        }
        self.free.push(slot);
    }

    /// The best level.
    pub fn best(&self) -> Option<Level> {
        self.sorted
            .last()
            .map(|&(_, slot)| self.slots[slot as usize])
    }

    /// The levels, best first.
    pub fn iter(&self) -> impl Iterator<Item = Level> + '_ {
        self.sorted
            .iter()
            .rev()
            .map(|&(_, slot)| self.slots[slot as usize])
    }
}

/// One stock's price levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// Bids.
    pub bids: Ladder,
    /// Asks.
    pub asks: Ladder,
}

impl Default for Book {
    fn default() -> Self {
        Self {
            bids: Ladder::new(Side::Buy),
            asks: Ladder::new(Side::Sell),
        }
    }
}

impl Book {
    fn side_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            _ => &mut self.asks,
        }
    }

    /// Best bid and best ask.
    pub fn best(&self) -> (Option<Level>, Option<Level>) {
        (self.bids.best(), self.asks.best())
    }
}

/// A price level's new total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LevelChange {
    /// Stock locate.
    pub locate: u16,
    /// Bid or ask.
    pub side: Side,
    /// Price (4 implied decimals).
    pub price: u32,
    /// Total shares now at the level (0: the level is gone).
    pub shares: u64,
    /// The level is or was its side's best: the best bid or offer may have changed.
    pub at_best: bool,
}

/// A resting order executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    /// Stock locate.
    pub locate: u16,
    /// The resting order's side (the aggressor was on the other).
    pub resting_side: Side,
    /// Execution price.
    pub price: u32,
    /// Shares executed.
    pub shares: u32,
    /// The venue's match number.
    pub match_number: u64,
    /// Counts for volume (`C` messages may say no).
    pub printable: bool,
}

/// Levels one message can change: a replace leaves one level and joins another, and its
/// new reference may still be live (the old order then goes too).
const MAX_LEVEL_CHANGES: usize = 3;

/// What one message did to the books. The caller keeps one and hands it to every
/// [`Books::apply`] (or per-type method), which resets it (two stores, where returning a
/// fresh one costs a copy of every slot per message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    levels: [LevelChange; MAX_LEVEL_CHANGES],
    len: usize,
    /// The execution, for `E` and `C` messages about a live order.
    pub execution: Option<Execution>,
}

impl Applied {
    /// The levels changed, in the order changed.
    #[inline]
    pub fn levels(&self) -> &[LevelChange] {
        &self.levels[..self.len]
    }

    /// Nothing changed (yet).
    #[inline]
    fn clear(&mut self) {
        self.len = 0;
        self.execution = None;
    }

    #[inline]
    fn push(&mut self, level: LevelChange) {
        if let Some(slot) = self.levels.get_mut(self.len) {
            *slot = level;
            self.len += 1;
        }
    }
}

/// What the books refused, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookCounters {
    /// Messages about an order reference the books do not hold.
    pub unknown_orders: u64,
    /// Adds reusing a reference still live (the old order is replaced).
    pub duplicate_refs: u64,
    /// Executions or cancels of more shares than the order had (clamped).
    pub oversized: u64,
}

/// Order books for every stock; see the module docs.
#[derive(Debug, Default)]
pub struct Books {
    orders: OrderTable,
    books: Vec<Book>,
    counters: BookCounters,
}

/// Live orders by reference: open addressing with linear probing, at most half full, so
/// a lookup is usually one cache line — the order's slot — where a general-purpose map
/// touches its control bytes first. References are spread by Fibonacci hashing (the
/// venue numbers them densely; the multiply scatters neighbours). Removal shifts the
/// following run back (no tombstones), so lookups stay short however long the day.
#[derive(Debug, Default)]
struct OrderTable {
    slots: Vec<Slot>,
    len: usize,
    /// 64 - log2(slots), for the hash.
    shift: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    order_ref: u64,
    order: Order,
    used: bool,
}

/// Slots of a fresh table (tiny under test, so the tests grow it and wrap around it).
const MIN_SLOTS: usize = if cfg!(test) { 8 } else { 1 << 12 };

impl OrderTable {
    #[inline]
    fn home(&self, order_ref: u64) -> usize {
        // the top bits of the product: truncation to the table size is the point
        #[allow(clippy::cast_possible_truncation)]
        let home = (order_ref.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        home
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Prefetches the home slot of `order_ref` (where a look-up or insert starts).
    #[inline]
    fn prefetch(&self, order_ref: u64) {
        if let Some(slot) = self.slots.get(self.home(order_ref)) {
            prefetch(slot);
        }
    }

    /// The slot holding `order_ref`, if any.
    #[inline]
    fn find(&self, order_ref: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(order_ref);
        loop {
            let slot = &self.slots[i];
            if !slot.used {
                return None;
            }
            if slot.order_ref == order_ref {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts or overwrites; returns the order it replaced.
    #[inline]
    fn insert(&mut self, order_ref: u64, order: Order) -> Option<Order> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(order_ref);
        let slot = Slot {
            order_ref,
            order,
            used: true,
        };
        loop {
            let at = &mut self.slots[i];
            if !at.used {
                *at = slot;
                self.len += 1;
                return None;
            }
            if at.order_ref == order_ref {
                let old = at.order;
                *at = slot;
                return Some(old);
            }
            i = (i + 1) & mask;
        }
    }

    /// Empties slot `i`, moving back the entries after it that may live there.
    #[inline(always)]
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if !self.slots[j].used {
                break;
            }
            let home = self.home(self.slots[j].order_ref);
            // j may move to i if its home is not in (i, j] (cyclically)
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.slots[i] = self.slots[j];
                i = j;
            }
        }
        self.slots[i].used = false;
        self.len -= 1;
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        self.shift = 64 - size.trailing_zeros();
        self.len = 0;
        for slot in old.into_iter().filter(|s| s.used) {
            self.insert(slot.order_ref, slot.order);
        }
    }
}

/// The order references an order message is about, read straight from its bytes — no
/// dispatch on the type (a jump to mispredict) and no length check per type: the
/// reference (the original one of a replace) follows the header in every order message,
/// and a replace's new one follows that. `None` for bytes too short or not about an order.
#[inline]
fn order_refs(message: &[u8]) -> [Option<u64>; 2] {
    let at = |offset: usize| {
        let bytes = message.get(offset..offset + 8)?;
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    };
    match message.first() {
        Some(b'A' | b'F' | b'E' | b'C' | b'X' | b'D') => [at(ORDER_REF_AT), None],
        Some(b'U') => [at(ORDER_REF_AT), at(NEW_REF_AT)],
        _ => [None, None],
    }
}

fn side_of(byte: u8) -> Side {
    match byte {
        b'B' => Side::Buy,
        b'S' => Side::Sell,
        _ => Side::Unknown,
    }
}

impl Books {
    /// Empty books.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prefetches what `message` (its bytes, type byte first) will look up: the order
    /// table's home slot of each order it is about. A hint: bytes that are not an order
    /// message are passed over.
    #[inline]
    pub fn prefetch(&self, message: &[u8]) {
        let [order_ref, new_ref] = order_refs(message);
        if let Some(order_ref) = order_ref {
            self.orders.prefetch(order_ref);
        }
        if let Some(new_ref) = new_ref {
            self.orders.prefetch(new_ref);
        }
    }

    /// What was refused so far.
    pub fn counters(&self) -> BookCounters {
        self.counters
    }

    /// Live orders.
    pub fn orders(&self) -> usize {
        self.orders.len
    }

    /// The book of `locate` (empty if nothing was added for it).
    pub fn book(&self, locate: u16) -> Option<&Book> {
        self.books.get(usize::from(locate))
    }

    #[inline(always)]
    fn book_mut(&mut self, locate: u16) -> &mut Book {
        let at = usize::from(locate);
        if at >= self.books.len() {
            self.add_books(at);
        }
        &mut self.books[at]
    }

    /// Books up to `locate` (a stock seen for the first time).
    #[cold]
    #[inline(never)]
    fn add_books(&mut self, locate: usize) {
        self.books.resize_with(locate + 1, Book::default);
    }

    /// Adds an order of `shares` at `price`; reports the level's new total. An add of no
    /// shares changes nothing and is not kept (ITCH sends none).
    #[inline(always)]
    fn add(
        &mut self,
        order_ref: u64,
        (locate, side, price, shares): (u16, Side, u32, u32),
        out: &mut Applied,
    ) {
        if shares == 0 {
            return;
        }
        let (level, total, at_best) = self
            .book_mut(locate)
            .side_mut(side)
            .add(price, u64::from(shares));
        out.push(LevelChange {
            locate,
            side,
            price,
            shares: total,
            at_best,
        });
        let order = Order {
            locate,
            side,
            shares,
            level,
        };
        if let Some(old) = self.orders.insert(order_ref, order) {
            self.counters.duplicate_refs += 1;
            self.take(old, old.shares, out);
        }
    }

    /// Takes `shares` from `order`'s level; reports its new total; returns its price.
    #[inline(always)]
    fn take(&mut self, order: Order, shares: u32, out: &mut Applied) -> u32 {
        let (price, total, at_best) = self
            .book_mut(order.locate)
            .side_mut(order.side)
            .take(order.level, u64::from(shares));
        out.push(LevelChange {
            locate: order.locate,
            side: order.side,
            price,
            shares: total,
            at_best,
        });
        price
    }

    /// Takes `shares` from an order (`None`: all of it), removing it when nothing is
    /// left; returns the order as it was, its price and the shares taken, or `None` for
    /// an unknown reference.
    #[inline(always)]
    fn reduce(
        &mut self,
        order_ref: u64,
        shares: Option<u32>,
        out: &mut Applied,
    ) -> Option<(Order, u32, u32)> {
        let Some(at) = self.orders.find(order_ref) else {
            self.counters.unknown_orders += 1;
            return None;
        };
        let order = &mut self.orders.slots[at].order;
        let before = *order;
        let taken = match shares {
            Some(shares) if shares > order.shares => {
                self.counters.oversized += 1;
                order.shares
            }
            Some(shares) => shares,
            None => order.shares,
        };
        order.shares -= taken;
        if order.shares == 0 {
            self.orders.remove_at(at);
        }
        let price = self.take(before, taken, out);
        Some((before, price, taken))
    }

    /// Applies one message; `out` is set to the levels it changed and its execution.
    /// Messages that are not about orders change nothing. (A caller that matches on the
    /// message itself calls the per-type methods below and saves a second dispatch.)
    #[inline]
    pub fn apply(&mut self, message: &Message<'_>, out: &mut Applied) {
        match *message {
            Message::AddOrder(m) => self.add_order(m, out),
            Message::AddOrderMpid(m) => self.add_order_mpid(m, out),
            Message::OrderExecuted(m) => self.order_executed(m, out),
            Message::OrderExecutedWithPrice(m) => self.order_executed_with_price(m, out),
            Message::OrderCancel(m) => self.order_cancel(m, out),
            Message::OrderDelete(m) => self.order_delete(m, out),
            Message::OrderReplace(m) => self.order_replace(m, out),
            _ => out.clear(),
        }
    }

    /// Add order (`A`).
    #[inline]
    pub fn add_order(&mut self, m: &AddOrder, out: &mut Applied) {
        self.order_added(
            &m.header,
            m.order_ref.get(),
            m.side,
            (m.price, m.shares),
            out,
        );
    }

    /// Add order with attribution (`F`): the attribution does not change the book.
    #[inline]
    pub fn add_order_mpid(&mut self, m: &AddOrderMpid, out: &mut Applied) {
        self.order_added(
            &m.header,
            m.order_ref.get(),
            m.side,
            (m.price, m.shares),
            out,
        );
    }

    /// The fields both adds carry.
    #[inline(always)]
    fn order_added(
        &mut self,
        header: &Header,
        order_ref: u64,
        side: u8,
        (price, shares): (U32, U32),
        out: &mut Applied,
    ) {
        out.clear();
        let order = (
            header.stock_locate.get(),
            side_of(side),
            price.get(),
            shares.get(),
        );
        self.add(order_ref, order, out);
    }

    /// Order executed (`E`), at the order's price.
    #[inline]
    pub fn order_executed(&mut self, m: &OrderExecuted, out: &mut Applied) {
        let shares = m.executed_shares.get();
        self.executed(m.order_ref.get(), shares, m.match_number.get(), None, out);
    }

    /// Order executed with price (`C`), printable or not.
    #[inline]
    pub fn order_executed_with_price(&mut self, m: &OrderExecutedWithPrice, out: &mut Applied) {
        let (shares, printable) = (m.executed_shares.get(), m.printable == b'Y');
        let price = Some((m.execution_price.get(), printable));
        self.executed(m.order_ref.get(), shares, m.match_number.get(), price, out);
    }

    /// `shares` of an order executed in match `match_number`, at the order's price or at
    /// `price` (with whether it prints).
    #[inline(always)]
    fn executed(
        &mut self,
        order_ref: u64,
        shares: u32,
        match_number: u64,
        price: Option<(u32, bool)>,
        out: &mut Applied,
    ) {
        out.clear();
        if let Some((order, order_price, taken)) = self.reduce(order_ref, Some(shares), out) {
            let (price, printable) = price.unwrap_or((order_price, true));
            out.execution = Some(Execution {
                locate: order.locate,
                resting_side: order.side,
                price,
                shares: taken,
                match_number,
                printable,
            });
        }
    }

    /// Order cancel (`X`): some of its shares.
    #[inline]
    pub fn order_cancel(&mut self, m: &OrderCancel, out: &mut Applied) {
        out.clear();
        let _ = self.reduce(m.order_ref.get(), Some(m.cancelled_shares.get()), out);
    }

    /// Order delete (`D`).
    #[inline]
    pub fn order_delete(&mut self, m: &OrderDelete, out: &mut Applied) {
        out.clear();
        let _ = self.reduce(m.order_ref.get(), None, out);
    }

    /// Order replace (`U`): the old order goes, the new one (same stock and side) joins.
    #[inline]
    pub fn order_replace(&mut self, m: &OrderReplace, out: &mut Applied) {
        out.clear();
        if let Some((old, ..)) = self.reduce(m.original_ref.get(), None, out) {
            let order = (old.locate, old.side, m.price.get(), m.shares.get());
            self.add(m.new_ref.get(), order, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::message::*;
    use proptest::prelude::*;
    use zerocopy::IntoBytes;
    use zerocopy::byteorder::big_endian::{U32, U64};

    /// An order operation for the model test.
    #[derive(Debug, Clone)]
    enum Op {
        Add {
            locate: u16,
            buy: bool,
            price: u32,
            shares: u32,
        },
        Execute {
            pick: usize,
            shares: u32,
            at_price: Option<u32>,
        },
        Cancel {
            pick: usize,
            shares: u32,
        },
        Delete {
            pick: usize,
        },
        Replace {
            pick: usize,
            price: u32,
            shares: u32,
        },
        Unknown,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u16..4, any::<bool>(), 100u32..110, 1u32..500)
                .prop_map(|(locate, buy, price, shares)| Op::Add { locate, buy, price, shares }),
            2 => (any::<usize>(), 1u32..600, proptest::option::of(90u32..120))
                .prop_map(|(pick, shares, at_price)| Op::Execute { pick, shares, at_price }),
            1 => (any::<usize>(), 1u32..600).prop_map(|(pick, shares)| Op::Cancel { pick, shares }),
            1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
            1 => (any::<usize>(), 100u32..110, 1u32..500)
                .prop_map(|(pick, price, shares)| Op::Replace { pick, price, shares }),
            1 => Just(Op::Unknown),
        ]
    }

    fn header(kind: u8, locate: u16) -> Header {
        Header::new(kind, locate, 1)
    }

    proptest! {
        /// Any sequence of adds, executions, cancels, deletes and replaces: the books and
        /// the reported level totals equal a brute-force model that keeps every live order
        /// and sums them.
        #[test]
        fn books_match_a_brute_force_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut books = Books::new();
            // model: live orders (ref, locate, side, price, shares)
            let mut live: Vec<(u64, u16, Side, u32, u32)> = Vec::new();
            let mut next_ref = 1u64;
            let mut reported: BTreeMap<(u16, u8, u32), u64> = BTreeMap::new();
            let mut executed = 0u64;
            let mut model_executed = 0u64;
            for op in ops {
                let mut bytes = Vec::new();
                match op {
                    Op::Add { locate, buy, price, shares } => {
                        let side = if buy { b'B' } else { b'S' };
                        bytes.extend_from_slice(AddOrder {
                            header: header(b'A', locate), order_ref: U64::new(next_ref), side,
                            shares: U32::new(shares), stock: stock("X"), price: U32::new(price),
                        }.as_bytes());
                        live.push((next_ref, locate, side_of(side), price, shares));
                        next_ref += 1;
                    }
                    Op::Execute { pick, shares, at_price } if !live.is_empty() => {
                        let at = pick % live.len();
                        let r = live[at].0;
                        let taken = shares.min(live[at].4);
                        model_executed += u64::from(taken);
                        live[at].4 -= taken;
                        match at_price {
                            None => bytes.extend_from_slice(OrderExecuted {
                                header: header(b'E', live[at].1), order_ref: U64::new(r),
                                executed_shares: U32::new(shares), match_number: U64::new(9),
                            }.as_bytes()),
                            Some(p) => bytes.extend_from_slice(OrderExecutedWithPrice {
                                header: header(b'C', live[at].1), order_ref: U64::new(r),
                                executed_shares: U32::new(shares), match_number: U64::new(9),
                                printable: b'Y', execution_price: U32::new(p),
                            }.as_bytes()),
                        }
                        if live[at].4 == 0 { live.remove(at); }
                    }
                    Op::Cancel { pick, shares } if !live.is_empty() => {
                        let at = pick % live.len();
                        bytes.extend_from_slice(OrderCancel {
                            header: header(b'X', live[at].1), order_ref: U64::new(live[at].0),
                            cancelled_shares: U32::new(shares),
                        }.as_bytes());
                        live[at].4 -= shares.min(live[at].4);
                        if live[at].4 == 0 { live.remove(at); }
                    }
                    Op::Delete { pick } if !live.is_empty() => {
                        let at = pick % live.len();
                        bytes.extend_from_slice(OrderDelete {
                            header: header(b'D', live[at].1), order_ref: U64::new(live[at].0),
                        }.as_bytes());
                        live.remove(at);
                    }
                    Op::Replace { pick, price, shares } if !live.is_empty() => {
                        let at = pick % live.len();
                        let (r, locate, side, _, _) = live.remove(at);
                        bytes.extend_from_slice(OrderReplace {
                            header: header(b'U', locate), original_ref: U64::new(r),
                            new_ref: U64::new(next_ref), shares: U32::new(shares), price: U32::new(price),
                        }.as_bytes());
                        live.push((next_ref, locate, side, price, shares));
                        next_ref += 1;
                    }
                    _ => {
                        // an order nobody added
                        bytes.extend_from_slice(OrderDelete {
                            header: header(b'D', 1), order_ref: U64::new(1 << 40),
                        }.as_bytes());
                    }
                }
                let message = decode(&bytes).unwrap();
                let mut applied = Applied::default();
                books.apply(&message, &mut applied);
                for l in applied.levels() {
                    reported.insert((l.locate, l.side as u8, l.price), l.shares);
                }
                if let Some(e) = applied.execution {
                    executed += u64::from(e.shares);
                }
                // the model's levels
                let mut model: BTreeMap<(u16, u8, u32), u64> = BTreeMap::new();
                for &(_, locate, side, price, shares) in &live {
                    if shares > 0 {
                        *model.entry((locate, side as u8, price)).or_default() += u64::from(shares);
                    }
                }
                let mut held: BTreeMap<(u16, u8, u32), u64> = BTreeMap::new();
                for locate in 0..4u16 {
                    if let Some(book) = books.book(locate) {
                        for (p, q) in book.bids.iter() { held.insert((locate, Side::Buy as u8, p), q); }
                        for (p, q) in book.asks.iter() { held.insert((locate, Side::Sell as u8, p), q); }
                    }
                }
                prop_assert_eq!(&held, &model);
                reported.retain(|_, q| *q > 0);
                prop_assert_eq!(&reported, &model);
                prop_assert_eq!(books.orders(), live.len());
            }
            prop_assert_eq!(executed, model_executed);
        }
    }

    proptest! {
        /// The order table against a std map: inserts, overwrites, lookups and removals
        /// (which shift runs back) on a table small enough to wrap and grow.
        #[test]
        fn the_order_table_agrees_with_a_map(
            ops in proptest::collection::vec((0u8..3, 0u64..64, any::<u32>()), 1..400),
        ) {
            let mut table = OrderTable::default();
            let mut model = std::collections::HashMap::new();
            for (op, order_ref, shares) in ops {
                // refs spread over the whole u64 range as well as dense small ones
                let order_ref = if order_ref % 2 == 0 { order_ref } else { order_ref.wrapping_mul(0x0123_4567_89ab_cdef) };
                let order = Order { locate: 1, side: Side::Buy, shares, level: 7 };
                match op {
                    0 => prop_assert_eq!(table.insert(order_ref, order), model.insert(order_ref, order)),
                    1 => {
                        let at = table.find(order_ref);
                        prop_assert_eq!(at.map(|i| table.slots[i].order), model.remove(&order_ref));
                        if let Some(i) = at { table.remove_at(i); }
                    }
                    _ => prop_assert_eq!(table.find(order_ref).map(|i| table.slots[i].order), model.get(&order_ref).copied()),
                }
                prop_assert_eq!(table.len, model.len());
            }
            for (&order_ref, order) in &model {
                prop_assert_eq!(table.find(order_ref).map(|i| table.slots[i].order), Some(*order));
            }
        }

        /// A ladder against a sorted map: adds at prices far apart and close together,
        /// takes from levels by their slot (as orders do), levels closing and their slots
        /// reused; the best is reported whenever it moves.
        #[test]
        fn a_ladder_agrees_with_a_sorted_map(
            buy: bool,
            changes in proptest::collection::vec((0u32..40, -300i64..300), 1..300),
        ) {
            let side = if buy { Side::Buy } else { Side::Sell };
            let mut ladder = Ladder::new(side);
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut slot_of: BTreeMap<u32, u32> = BTreeMap::new();
            for (tick, delta) in changes {
                let price = 1_000 + tick * 100;
                let best_before = ladder.best();
                let (reported, at_best) = if delta > 0 {
                    let (slot, total, at_best) = ladder.add(price, delta.unsigned_abs());
                    if let Some(&known) = slot_of.get(&price) {
                        prop_assert_eq!(slot, known, "a level keeps its slot");
                    }
                    slot_of.insert(price, slot);
                    *model.entry(price).or_insert(0) += delta.unsigned_abs();
                    (total, at_best)
                } else if let Some(&slot) = slot_of.get(&price) {
                    let (at, total, at_best) = ladder.take(slot, delta.unsigned_abs());
                    prop_assert_eq!(at, price);
                    let level = model.get_mut(&price).unwrap();
                    *level = level.saturating_sub(delta.unsigned_abs());
                    if *level == 0 {
                        model.remove(&price);
                        slot_of.remove(&price);
                    }
                    (total, at_best)
                } else {
                    continue;
                };
                prop_assert_eq!(reported, model.get(&price).copied().unwrap_or(0));
                // reported at the best whenever the best moved
                if ladder.best() != best_before {
                    prop_assert!(at_best, "best moved from {:?} to {:?} unreported", best_before, ladder.best());
                }
                let best_first: Vec<Level> = if buy {
                    model.iter().rev().map(|(&p, &q)| (p, q)).collect()
                } else {
                    model.iter().map(|(&p, &q)| (p, q)).collect()
                };
                prop_assert_eq!(ladder.iter().collect::<Vec<_>>(), best_first.clone());
                prop_assert_eq!(ladder.best(), best_first.first().copied());
            }
        }
    }

    proptest! {
        /// The references read for prefetching are the ones the decoder reads, for every
        /// order message; none for the others, nor for cut-off bytes.
        #[test]
        fn order_refs_are_read_as_the_decoder_reads_them(
            kind in proptest::sample::select(b"AFECXDUPSR".to_vec()),
            refs: (u64, u64),
            cut in 0usize..40,
        ) {
            let h = header(kind, 1);
            let (r, new) = (U64::new(refs.0), U64::new(refs.1));
            let (s, p) = (U32::new(100), U32::new(5));
            let bytes = match kind {
                b'A' => AddOrder { header: h, order_ref: r, side: b'B', shares: s, stock: stock("X"), price: p }.as_bytes().to_vec(),
                b'F' => AddOrderMpid { header: h, order_ref: r, side: b'S', shares: s, stock: stock("X"), price: p, attribution: *b"MPID" }.as_bytes().to_vec(),
                b'E' => OrderExecuted { header: h, order_ref: r, executed_shares: s, match_number: new }.as_bytes().to_vec(),
                b'C' => OrderExecutedWithPrice { header: h, order_ref: r, executed_shares: s, match_number: new, printable: b'Y', execution_price: p }.as_bytes().to_vec(),
                b'X' => OrderCancel { header: h, order_ref: r, cancelled_shares: s }.as_bytes().to_vec(),
                b'D' => OrderDelete { header: h, order_ref: r }.as_bytes().to_vec(),
                b'U' => OrderReplace { header: h, original_ref: r, new_ref: new, shares: s, price: p }.as_bytes().to_vec(),
                // not about an order: an order message's bytes under another type
                other => { let mut b = OrderDelete { header: h, order_ref: r }.as_bytes().to_vec(); b[0] = other; b }
            };
            let decoded = match decode(&bytes).ok() {
                Some(Message::AddOrder(m)) => [Some(m.order_ref.get()), None],
                Some(Message::AddOrderMpid(m)) => [Some(m.order_ref.get()), None],
                Some(Message::OrderExecuted(m)) => [Some(m.order_ref.get()), None],
                Some(Message::OrderExecutedWithPrice(m)) => [Some(m.order_ref.get()), None],
                Some(Message::OrderCancel(m)) => [Some(m.order_ref.get()), None],
                Some(Message::OrderDelete(m)) => [Some(m.order_ref.get()), None],
                Some(Message::OrderReplace(m)) => [Some(m.original_ref.get()), Some(m.new_ref.get())],
                _ => [None, None],
            };
            prop_assert_eq!(order_refs(&bytes), decoded);
            // cut short: nothing read past the end (a hint may still use what is there)
            let short = &bytes[..bytes.len().saturating_sub(cut)];
            for (i, r) in order_refs(short).into_iter().enumerate() {
                let end = if i == 0 { ORDER_REF_AT + 8 } else { NEW_REF_AT + 8 };
                prop_assert!(r.is_none() || short.len() >= end);
            }
            Books::new().prefetch(short);
        }
    }

    #[test]
    fn an_add_of_no_shares_changes_nothing_and_is_not_kept() {
        let mut books = Books::new();
        let mut applied = Applied::default();
        let add = AddOrder {
            header: header(b'A', 1),
            order_ref: U64::new(5),
            side: b'B',
            shares: U32::new(0),
            stock: stock("ALC"),
            price: U32::new(100),
        };
        books.apply(&decode(add.as_bytes()).unwrap(), &mut applied);
        assert_eq!(applied, Applied::default());
        assert_eq!(books.orders(), 0);
        assert!(books.book(1).is_none_or(|b| b.best() == (None, None)));
        let delete = OrderDelete {
            header: header(b'D', 1),
            order_ref: U64::new(5),
        };
        books.apply(&decode(delete.as_bytes()).unwrap(), &mut applied);
        assert_eq!(books.counters().unknown_orders, 1);
    }

    #[test]
    fn best_prices_and_unknown_orders() {
        let mut books = Books::new();
        let add = |r: u64, side: u8, price: u32| AddOrder {
            header: header(b'A', 1),
            order_ref: U64::new(r),
            side,
            shares: U32::new(100),
            stock: stock("ALC"),
            price: U32::new(price),
        };
        for (r, side, price) in [
            (1, b'B', 100),
            (2, b'B', 101),
            (3, b'S', 103),
            (4, b'S', 102),
        ] {
            let bytes = add(r, side, price);
            books.apply(&decode(bytes.as_bytes()).unwrap(), &mut Applied::default());
        }
        assert_eq!(
            books.book(1).unwrap().best(),
            (Some((101, 100)), Some((102, 100)))
        );
        let delete = OrderDelete {
            header: header(b'D', 1),
            order_ref: U64::new(77),
        };
        let mut applied = Applied::default();
        books.apply(&decode(delete.as_bytes()).unwrap(), &mut applied);
        assert_eq!(applied, Applied::default());
        assert_eq!(books.counters().unknown_orders, 1);
    }
}
