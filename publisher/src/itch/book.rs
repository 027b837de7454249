//! Order books per stock from ITCH order messages: add (with or without attribution),
//! executed (at the order's price or another), cancel, delete, replace.
//!
//! [`Books::apply`] takes one decoded message and reports what changed: the new total
//! shares at each price level it touched ([`BookEvent::Level`]) and executions
//! ([`BookEvent::Execution`]). Orders are keyed by their reference number, which ITCH
//! makes unique for the day across all stocks. A message about an order the books do not
//! know (the feed was joined late, or messages were lost) is counted and skipped.

use std::collections::{BTreeMap, HashMap};

use mdi_protocol::records::Side;

use super::message::Message;

/// A resting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Order {
    locate: u16,
    side: Side,
    price: u32,
    shares: u32,
}

/// A price level: (price with 4 implied decimals, total shares).
pub type Level = (u32, u64);

/// One stock's price levels: price → total shares resting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    /// Bids by price.
    pub bids: BTreeMap<u32, u64>,
    /// Asks by price.
    pub asks: BTreeMap<u32, u64>,
}

impl Book {
    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<u32, u64> {
        match side {
            Side::Buy => &mut self.bids,
            _ => &mut self.asks,
        }
    }

    /// Best bid and best ask.
    pub fn best(&self) -> (Option<Level>, Option<Level>) {
        (
            self.bids.last_key_value().map(|(&p, &q)| (p, q)),
            self.asks.first_key_value().map(|(&p, &q)| (p, q)),
        )
    }
}

/// What a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookEvent {
    /// The total shares now resting at a price (0: the level is gone).
    Level {
        /// Stock locate.
        locate: u16,
        /// Bid or ask.
        side: Side,
        /// Price (4 implied decimals).
        price: u32,
        /// Total shares now at the level.
        shares: u64,
    },
    /// A resting order executed.
    Execution {
        /// Stock locate.
        locate: u16,
        /// The resting order's side (the aggressor was on the other).
        resting_side: Side,
        /// Execution price.
        price: u32,
        /// Shares executed.
        shares: u32,
        /// The venue's match number.
        match_number: u64,
        /// Counts for volume (`C` messages may say no).
        printable: bool,
    },
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
    orders: HashMap<u64, Order, RefHash>,
    books: Vec<Book>,
    counters: BookCounters,
}

/// Order references are dense sequence numbers chosen by the venue: a multiply spreads
/// them well enough, and SipHash costs more than the lookup.
#[derive(Debug, Clone, Copy, Default)]
struct RefHash;

#[derive(Debug, Default)]
struct RefHasher(u64);

impl std::hash::Hasher for RefHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl std::hash::BuildHasher for RefHash {
    type Hasher = RefHasher;

    fn build_hasher(&self) -> RefHasher {
        RefHasher(0)
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

    /// What was refused so far.
    pub fn counters(&self) -> BookCounters {
        self.counters
    }

    /// Live orders.
    pub fn orders(&self) -> usize {
        self.orders.len()
    }

    /// The book of `locate` (empty if nothing was added for it).
    pub fn book(&self, locate: u16) -> Option<&Book> {
        self.books.get(usize::from(locate))
    }

    fn book_mut(&mut self, locate: u16) -> &mut Book {
        let at = usize::from(locate);
        if at >= self.books.len() {
            self.books.resize_with(at + 1, Book::default);
        }
        &mut self.books[at]
    }

    /// Adds `delta` shares (may be negative) at a level and reports its new total.
    fn change(&mut self, order: Order, delta: i64, out: &mut impl FnMut(BookEvent)) {
        let levels = self.book_mut(order.locate).side_mut(order.side);
        let shares = {
            let level = levels.entry(order.price).or_insert(0);
            *level = level.saturating_add_signed(delta);
            *level
        };
        if shares == 0 {
            levels.remove(&order.price);
        }
        out(BookEvent::Level {
            locate: order.locate,
            side: order.side,
            price: order.price,
            shares,
        });
    }

    fn add(&mut self, order_ref: u64, order: Order, out: &mut impl FnMut(BookEvent)) {
        if let Some(old) = self.orders.insert(order_ref, order) {
            self.counters.duplicate_refs += 1;
            self.change(old, -i64::from(old.shares), out);
        }
        self.change(order, i64::from(order.shares), out);
    }

    /// Takes `shares` from an order (`None`: all of it), removing it when nothing is
    /// left; returns the order as it was and the shares taken, or `None` for an unknown
    /// reference.
    fn reduce(
        &mut self,
        order_ref: u64,
        shares: Option<u32>,
        out: &mut impl FnMut(BookEvent),
    ) -> Option<(Order, u32)> {
        let Some(order) = self.orders.get_mut(&order_ref) else {
            self.counters.unknown_orders += 1;
            return None;
        };
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
            self.orders.remove(&order_ref);
        }
        self.change(before, -i64::from(taken), out);
        Some((before, taken))
    }

    /// Applies one message; reports level changes and executions to `out`. Messages that
    /// are not about orders are ignored.
    pub fn apply(&mut self, message: &Message<'_>, out: &mut impl FnMut(BookEvent)) {
        match *message {
            Message::AddOrder(m) => {
                let order = Order {
                    locate: m.header.stock_locate.get(),
                    side: side_of(m.side),
                    price: m.price.get(),
                    shares: m.shares.get(),
                };
                self.add(m.order_ref.get(), order, out);
            }
            Message::AddOrderMpid(m) => {
                let order = Order {
                    locate: m.header.stock_locate.get(),
                    side: side_of(m.side),
                    price: m.price.get(),
                    shares: m.shares.get(),
                };
                self.add(m.order_ref.get(), order, out);
            }
            Message::OrderExecuted(m) => {
                if let Some((order, taken)) =
                    self.reduce(m.order_ref.get(), Some(m.executed_shares.get()), out)
                {
                    out(BookEvent::Execution {
                        locate: order.locate,
                        resting_side: order.side,
                        price: order.price,
                        shares: taken,
                        match_number: m.match_number.get(),
                        printable: true,
                    });
                }
            }
            Message::OrderExecutedWithPrice(m) => {
                if let Some((order, taken)) =
                    self.reduce(m.order_ref.get(), Some(m.executed_shares.get()), out)
                {
                    out(BookEvent::Execution {
                        locate: order.locate,
                        resting_side: order.side,
                        price: m.execution_price.get(),
                        shares: taken,
                        match_number: m.match_number.get(),
                        printable: m.printable == b'Y',
                    });
                }
            }
            Message::OrderCancel(m) => {
                let _ = self.reduce(m.order_ref.get(), Some(m.cancelled_shares.get()), out);
            }
            Message::OrderDelete(m) => {
                let _ = self.reduce(m.order_ref.get(), None, out);
            }
            Message::OrderReplace(m) => {
                if let Some((old, _)) = self.reduce(m.original_ref.get(), None, out) {
                    let order = Order {
                        price: m.price.get(),
                        shares: m.shares.get(),
                        ..old
                    };
                    self.add(m.new_ref.get(), order, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::itch::message::*;
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
                books.apply(&message, &mut |e| match e {
                    BookEvent::Level { locate, side, price, shares } => {
                        reported.insert((locate, side as u8, price), shares);
                    }
                    BookEvent::Execution { shares, .. } => executed += u64::from(shares),
                });
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
                        for (&p, &q) in &book.bids { held.insert((locate, Side::Buy as u8, p), q); }
                        for (&p, &q) in &book.asks { held.insert((locate, Side::Sell as u8, p), q); }
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
            books.apply(&decode(bytes.as_bytes()).unwrap(), &mut |_| {});
        }
        assert_eq!(
            books.book(1).unwrap().best(),
            (Some((101, 100)), Some((102, 100)))
        );
        let delete = OrderDelete {
            header: header(b'D', 1),
            order_ref: U64::new(77),
        };
        let mut events = Vec::new();
        books.apply(&decode(delete.as_bytes()).unwrap(), &mut |e| events.push(e));
        assert!(events.is_empty());
        assert_eq!(books.counters().unknown_orders, 1);
    }
}
