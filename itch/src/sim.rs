//! A synthetic ITCH 5.0 feed on MoldUDP64 (what `mdfeedsim` sends or writes): a stock
//! directory first, then adds, cancels, executions, replaces, deletes and hidden trades
//! across many symbols, then the end of the day. Deterministic for a seed.
//!
//! Each stock's book behaves like a real one: orders join at or near the best (half
//! within two ticks, the rest within ten), executions take the best bid or offer oldest
//! order first, the price moves a tick at a time by trading through the orders in its
//! way (a sweep of executions), so the book is never crossed, and the number of live
//! orders settles around [`BOOK_ORDERS`] per stock instead of growing all day.

use std::net::{Ipv4Addr, SocketAddrV4};

use zerocopy::IntoBytes;
use zerocopy::byteorder::big_endian::{U32, U64};

use crate::message::{
    AddOrder, Header, NonCrossTrade, OrderCancel, OrderDelete, OrderExecuted, OrderReplace,
    StockDirectory, SystemEvent, stock,
};
use crate::mold::{SessionId, write_packet};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Order messages after the directory.
    pub messages: u64,
    /// Stocks.
    pub symbols: u16,
    /// Seed.
    pub seed: u64,
    /// MoldUDP64 session.
    pub session: SessionId,
    /// Largest MoldUDP64 payload.
    pub max_packet: usize,
    /// Start time, ns since midnight (09:30 by default).
    pub start_ns: u64,
    /// Mean time between messages (ns).
    pub gap_ns: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            messages: 100_000,
            symbols: 8,
            seed: 1,
            session: crate::mold::session_id("MDISIM0001"),
            max_packet: 1_400,
            start_ns: 34_200_000_000_000,
            gap_ns: 2_000,
        }
    }
}

/// SplitMix64: small, fast, and the same everywhere for a seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The symbol of stock `i` (`SIM0`, `SIM1`, …).
pub fn symbol_of(i: u16) -> String {
    format!("SIM{i}")
}

/// A price tick: one cent at ITCH's four decimals.
const TICK: u32 = 100;
/// The lowest a simulated price goes.
const MIN_MID: u32 = 10 * TICK;
/// Live orders per stock the book settles around.
pub const BOOK_ORDERS: usize = 300;

/// One simulated stock: bids rest at or below `mid`, asks above it, so its book is never
/// crossed; the live orders are (reference, buy, price, shares) in arrival order.
struct SimStock {
    mid: u32,
    orders: Vec<(u64, bool, u32, u32)>,
}

impl SimStock {
    /// Does this order rest on the wrong side of a mid at `mid`?
    fn crosses(mid: u32, &(_, buy, price, _): &(u64, bool, u32, u32)) -> bool {
        if buy { price > mid } else { price <= mid }
    }

    /// Orders a move of the mid to `mid` trades with.
    fn sweep_count(&self, mid: u32) -> u64 {
        self.orders.iter().filter(|o| Self::crosses(mid, o)).count() as u64
    }

    /// Takes out the orders a move to `mid` trades with: (reference, shares), oldest first.
    fn sweep(&mut self, mid: u32) -> Vec<(u64, u32)> {
        let mut swept = Vec::new();
        self.orders.retain(|o| {
            let crosses = Self::crosses(mid, o);
            if crosses {
                swept.push((o.0, o.3));
            }
            !crosses
        });
        swept
    }
}

/// The index of the oldest order at the best bid (`buy`) or offer, if that side has any.
fn best_order(orders: &[(u64, bool, u32, u32)], buy: bool) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, &(_, b, price, _)) in orders.iter().enumerate() {
        let better = match best {
            None => true,
            Some((_, p)) => (buy && price > p) || (!buy && price < p),
        };
        if b == buy && better {
            best = Some((i, price));
        }
    }
    best.map(|(i, _)| i)
}

/// What a simulated message does.
#[derive(Debug, Clone, Copy)]
enum Action {
    Add,
    Execute,
    Cancel,
    Delete,
    Replace,
    HiddenTrade,
}

impl Action {
    /// The action other than an add for a roll in `0..55`.
    fn from_roll(roll: u64) -> Self {
        match roll {
            0..=14 => Self::Execute,
            15..=24 => Self::Cancel,
            25..=44 => Self::Delete,
            45..=52 => Self::Replace,
            _ => Self::HiddenTrade,
        }
    }
}

/// Order references and match numbers handed out so far.
struct Ids {
    order: u64,
    matched: u64,
}

impl Ids {
    /// An execution of `shares` of order `order_ref`, with the next match number.
    fn executed(&mut self, locate: u16, now: u64, order_ref: u64, shares: u32) -> Vec<u8> {
        self.matched += 1;
        OrderExecuted {
            header: Header::new(b'E', locate, now),
            order_ref: U64::new(order_ref),
            executed_shares: U32::new(shares),
            match_number: U64::new(self.matched - 1),
        }
        .as_bytes()
        .to_vec()
    }
}

/// Generates the feed's messages (each a whole ITCH message), in order.
pub fn messages(config: &SimConfig) -> Vec<Vec<u8>> {
    let mut rng = Rng(config.seed);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut now = config.start_ns;
    let system = |code: u8, now: u64| {
        SystemEvent {
            header: Header::new(b'S', 0, now),
            event_code: code,
        }
        .as_bytes()
        .to_vec()
    };
    out.push(system(b'O', now));
    for locate in 1..=config.symbols {
        out.push(
            StockDirectory {
                header: Header::new(b'R', locate, now),
                stock: stock(&symbol_of(locate - 1)),
                market_category: b'Q',
                financial_status: b'N',
                round_lot_size: U32::new(100),
                round_lots_only: b'N',
                issue_classification: b'C',
                issue_subtype: *b"Z ",
                authenticity: b'P',
                short_sale_threshold: b'N',
                ipo_flag: b' ',
                luld_tier: b'1',
                etp_flag: b'N',
                etp_leverage_factor: U32::new(0),
                inverse_indicator: b'N',
            }
            .as_bytes()
            .to_vec(),
        );
    }
    out.push(system(b'S', now));
    out.push(system(b'Q', now));
    let mut stocks: Vec<SimStock> = (0..config.symbols)
        .map(|i| SimStock {
            mid: 1_000_000 + u32::from(i) * 10_000,
            orders: Vec::new(),
        })
        .collect();
    let mut ids = Ids {
        order: 1,
        matched: 1,
    };
    let mut left = config.messages;
    while left > 0 {
        now += 1 + rng.below(2 * config.gap_ns);
        let s = rng.below(u64::from(config.symbols)) as usize;
        let locate = u16::try_from(s + 1).unwrap_or(u16::MAX);
        let book = &mut stocks[s];
        if rng.below(50) == 0 {
            // the price moves a tick: the orders it moves through trade (a sweep), as far
            // as the messages left allow — the book never crosses
            let up = rng.below(2) == 0;
            let mid = if up {
                book.mid + TICK
            } else {
                book.mid.saturating_sub(TICK).max(MIN_MID)
            };
            let swept = book.sweep_count(mid);
            if mid != book.mid && swept < left {
                for (r, shares) in book.sweep(mid) {
                    out.push(ids.executed(locate, now, r, shares));
                    left -= 1;
                }
                book.mid = mid;
            }
        }
        let orders = &mut book.orders;
        // adds outnumber removals while the book is thin, and not once it is deep: the
        // book's size stays steady however long the day
        let adds = if orders.len() < BOOK_ORDERS { 45 } else { 30 };
        let pick = if orders.is_empty() {
            None
        } else {
            Some(rng.below(orders.len() as u64) as usize)
        };
        // the other actions keep their proportions: executions 15, cancels 10, deletes
        // 20, replaces 8, hidden trades 2
        let action = match pick {
            Some(_) if rng.below(100) >= adds => Action::from_roll(rng.below(55)),
            _ => Action::Add,
        };
        let message = match (action, pick) {
            (Action::Add, _) | (_, None) => {
                let buy = rng.below(2) == 0;
                // most orders join at or near the best, some further back
                let ticks = if rng.below(2) == 0 {
                    rng.below(3)
                } else {
                    rng.below(10)
                } as u32;
                let price = if buy {
                    book.mid.saturating_sub(ticks * TICK)
                } else {
                    book.mid + TICK + ticks * TICK
                };
                let shares = 100 * (1 + rng.below(10) as u32);
                orders.push((ids.order, buy, price, shares));
                ids.order += 1;
                AddOrder {
                    header: Header::new(b'A', locate, now),
                    order_ref: U64::new(ids.order - 1),
                    side: if buy { b'B' } else { b'S' },
                    shares: U32::new(shares),
                    stock: stock(&symbol_of(locate - 1)),
                    price: U32::new(price),
                }
                .as_bytes()
                .to_vec()
            }
            (Action::Execute, Some(_)) => {
                // executions take the best bid or offer, oldest order first
                let Some(at) = best_order(orders, rng.below(2) == 0) else {
                    continue;
                };
                let (r, _, _, shares) = orders[at];
                // whole lots while it has them, else what is left
                let lots = u64::from(shares / 100).max(1);
                let executed = (100 * (1 + rng.below(lots) as u32)).min(shares);
                if executed >= shares {
                    orders.remove(at);
                } else {
                    orders[at].3 -= executed;
                }
                ids.executed(locate, now, r, executed)
            }
            (Action::Cancel, Some(at)) => {
                let (r, _, _, shares) = orders[at];
                let cancelled = (shares / 2).max(1);
                orders[at].3 -= cancelled;
                if orders[at].3 == 0 {
                    orders.remove(at);
                }
                OrderCancel {
                    header: Header::new(b'X', locate, now),
                    order_ref: U64::new(r),
                    cancelled_shares: U32::new(cancelled),
                }
                .as_bytes()
                .to_vec()
            }
            (Action::Delete, Some(at)) => {
                let (r, ..) = orders.remove(at);
                OrderDelete {
                    header: Header::new(b'D', locate, now),
                    order_ref: U64::new(r),
                }
                .as_bytes()
                .to_vec()
            }
            (Action::Replace, Some(at)) => {
                // a tick further from the other side: never crosses
                let (r, buy, price, shares) = orders.remove(at);
                let price = if buy {
                    price.saturating_sub(TICK)
                } else {
                    price + TICK
                };
                orders.push((ids.order, buy, price, shares));
                ids.order += 1;
                OrderReplace {
                    header: Header::new(b'U', locate, now),
                    original_ref: U64::new(r),
                    new_ref: U64::new(ids.order - 1),
                    shares: U32::new(shares),
                    price: U32::new(price),
                }
                .as_bytes()
                .to_vec()
            }
            (Action::HiddenTrade, Some(_)) => {
                ids.matched += 1;
                NonCrossTrade {
                    header: Header::new(b'P', locate, now),
                    order_ref: U64::new(0),
                    side: if rng.below(2) == 0 { b'B' } else { b'S' },
                    shares: U32::new(100),
                    stock: stock(&symbol_of(locate - 1)),
                    price: U32::new(book.mid),
                    match_number: U64::new(ids.matched - 1),
                }
                .as_bytes()
                .to_vec()
            }
        };
        out.push(message);
        left -= 1;
    }
    for code in [b'M', b'E', b'C'] {
        out.push(system(code, now));
    }
    out
}

/// Packs messages into MoldUDP64 packets of at most `max_packet` bytes, sequence numbers
/// from 1; the last packet is the end of session. Returns (first sequence, packet).
pub fn packets(config: &SimConfig, messages: &[Vec<u8>]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seq = 1u64;
    let mut at = 0;
    while at < messages.len() {
        let mut size = crate::mold::HEADER_LEN;
        let mut end = at;
        while end < messages.len()
            && (end == at || size + 2 + messages[end].len() <= config.max_packet)
        {
            size += 2 + messages[end].len();
            end += 1;
        }
        let refs: Vec<&[u8]> = messages[at..end].iter().map(Vec::as_slice).collect();
        let mut packet = Vec::with_capacity(size);
        write_packet(&mut packet, &config.session, seq, &refs);
        out.push((seq, packet));
        seq += (end - at) as u64;
        at = end;
    }
    out.push((
        seq,
        crate::mold::header_only(&config.session, seq, crate::mold::END_OF_SESSION).to_vec(),
    ));
    out
}

/// The default source address frames are stamped with.
pub const SOURCE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 26_400);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Applied, Books};
    use crate::message::decode;
    use crate::mold::Packet;

    #[test]
    fn the_feed_decodes_books_stay_consistent_and_packets_carry_every_message() {
        let config = SimConfig {
            messages: 20_000,
            symbols: 5,
            seed: 7,
            ..SimConfig::default()
        };
        let messages = messages(&config);
        assert_eq!(
            messages,
            super::messages(&config),
            "deterministic for a seed"
        );
        let mut books = Books::new();
        let mut kinds = std::collections::BTreeMap::new();
        let mut applied = Applied::default();
        for m in &messages {
            let decoded = decode(m).unwrap();
            *kinds.entry(m[0]).or_insert(0u64) += 1;
            books.apply(&decoded, &mut applied);
            // a real book is never crossed: the price moves by trading through
            if let Some(level) = applied.levels().first() {
                let (bid, ask) = books.book(level.locate).unwrap().best();
                if let (Some((bid, _)), Some((ask, _))) = (bid, ask) {
                    assert!(bid < ask, "crossed book: bid {bid} ask {ask}");
                }
            }
        }
        assert_eq!(
            messages.len() as u64,
            config.messages + u64::from(config.symbols) + 6,
            "the directory, four system events, the order messages asked for"
        );
        // the book settles around its size instead of growing all day
        let live = books.orders();
        assert!(
            live <= usize::from(config.symbols) * BOOK_ORDERS * 2,
            "{live} live orders"
        );
        assert_eq!(
            books.counters(),
            Default::default(),
            "every order message is about a live order"
        );
        let mut executed_nothing = 0;
        for m in &messages {
            if let Ok(crate::message::Message::OrderExecuted(e)) = decode(m) {
                executed_nothing += u32::from(e.executed_shares.get() == 0);
            }
        }
        assert_eq!(executed_nothing, 0);
        for kind in [b'A', b'E', b'X', b'D', b'U', b'P', b'R', b'S'] {
            assert!(
                kinds.get(&kind).copied().unwrap_or(0) > 0,
                "{}",
                char::from(kind)
            );
        }
        let packets = packets(&config, &messages);
        let mut carried = Vec::new();
        for (seq, p) in &packets {
            assert!(p.len() <= config.max_packet);
            let parsed = Packet::parse(p).unwrap();
            assert_eq!(parsed.sequence, *seq);
            carried.extend(parsed.messages().map(<[u8]>::to_vec));
        }
        assert_eq!(carried, messages);
    }
}
