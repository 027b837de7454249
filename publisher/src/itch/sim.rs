//! A synthetic ITCH 5.0 feed on MoldUDP64 (what `mdfeedsim` sends or writes): a stock
//! directory first, then adds, cancels, executions, replaces, deletes and hidden trades
//! across many symbols around a drifting price, then the end of the day. Deterministic
//! for a seed.

use std::net::{Ipv4Addr, SocketAddrV4};

use zerocopy::IntoBytes;
use zerocopy::byteorder::big_endian::{U32, U64};

use super::message::{
    AddOrder, Header, NonCrossTrade, OrderCancel, OrderDelete, OrderExecuted, OrderReplace,
    StockDirectory, SystemEvent, stock,
};
use super::mold::{SessionId, write_packet};

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
            session: super::mold::session_id("MDISIM0001"),
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
    // live orders per stock: (ref, buy, price, shares)
    let mut live: Vec<Vec<(u64, bool, u32, u32)>> = vec![Vec::new(); usize::from(config.symbols)];
    let mut mid: Vec<u32> = (0..config.symbols)
        .map(|i| 1_000_000 + u32::from(i) * 10_000)
        .collect();
    let mut next_ref = 1u64;
    let mut next_match = 1u64;
    for _ in 0..config.messages {
        now += 1 + rng.below(2 * config.gap_ns);
        let s = rng.below(u64::from(config.symbols)) as usize;
        let locate = u16::try_from(s + 1).unwrap_or(u16::MAX);
        if rng.below(50) == 0 {
            // the mid drifts a tick
            mid[s] = if rng.below(2) == 0 {
                mid[s] + 100
            } else {
                mid[s].saturating_sub(100).max(100)
            };
        }
        let orders = &mut live[s];
        let roll = rng.below(100);
        let pick = if orders.is_empty() {
            None
        } else {
            Some(rng.below(orders.len() as u64) as usize)
        };
        let message = match (roll, pick) {
            (0..=44, _) | (_, None) => {
                let buy = rng.below(2) == 0;
                let offset = 100 * (1 + rng.below(10) as u32);
                let price = if buy {
                    mid[s].saturating_sub(offset)
                } else {
                    mid[s] + offset
                };
                let shares = 100 * (1 + rng.below(10) as u32);
                orders.push((next_ref, buy, price, shares));
                next_ref += 1;
                AddOrder {
                    header: Header::new(b'A', locate, now),
                    order_ref: U64::new(next_ref - 1),
                    side: if buy { b'B' } else { b'S' },
                    shares: U32::new(shares),
                    stock: stock(&symbol_of(locate - 1)),
                    price: U32::new(price),
                }
                .as_bytes()
                .to_vec()
            }
            (45..=59, Some(at)) => {
                let (r, _, _, shares) = orders[at];
                // whole lots while it has them, else what is left
                let lots = u64::from(shares / 100).max(1);
                let executed = (100 * (1 + rng.below(lots) as u32)).min(shares);
                next_match += 1;
                if executed >= shares {
                    orders.remove(at);
                } else {
                    orders[at].3 -= executed;
                }
                OrderExecuted {
                    header: Header::new(b'E', locate, now),
                    order_ref: U64::new(r),
                    executed_shares: U32::new(executed),
                    match_number: U64::new(next_match - 1),
                }
                .as_bytes()
                .to_vec()
            }
            (60..=69, Some(at)) => {
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
            (70..=89, Some(at)) => {
                let (r, ..) = orders.remove(at);
                OrderDelete {
                    header: Header::new(b'D', locate, now),
                    order_ref: U64::new(r),
                }
                .as_bytes()
                .to_vec()
            }
            (90..=97, Some(at)) => {
                let (r, buy, price, shares) = orders.remove(at);
                let price = if buy {
                    price.saturating_sub(100)
                } else {
                    price + 100
                };
                orders.push((next_ref, buy, price, shares));
                next_ref += 1;
                OrderReplace {
                    header: Header::new(b'U', locate, now),
                    original_ref: U64::new(r),
                    new_ref: U64::new(next_ref - 1),
                    shares: U32::new(shares),
                    price: U32::new(price),
                }
                .as_bytes()
                .to_vec()
            }
            _ => {
                next_match += 1;
                NonCrossTrade {
                    header: Header::new(b'P', locate, now),
                    order_ref: U64::new(0),
                    side: if rng.below(2) == 0 { b'B' } else { b'S' },
                    shares: U32::new(100),
                    stock: stock(&symbol_of(locate - 1)),
                    price: U32::new(mid[s]),
                    match_number: U64::new(next_match - 1),
                }
                .as_bytes()
                .to_vec()
            }
        };
        out.push(message);
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
        let mut size = super::mold::HEADER_LEN;
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
        super::mold::header_only(&config.session, seq, super::mold::END_OF_SESSION).to_vec(),
    ));
    out
}

/// The default source address frames are stamped with.
pub const SOURCE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 26_400);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::itch::book::{Applied, Books};
    use crate::itch::message::decode;
    use crate::itch::mold::Packet;

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
        for m in &messages {
            let decoded = decode(m).unwrap();
            *kinds.entry(m[0]).or_insert(0u64) += 1;
            books.apply(&decoded, &mut Applied::default());
        }
        assert_eq!(
            books.counters(),
            Default::default(),
            "every order message is about a live order"
        );
        let mut executed_nothing = 0;
        for m in &messages {
            if let Ok(crate::itch::message::Message::OrderExecuted(e)) = decode(m) {
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
