//! A local order book kept from Binance's diff-depth stream and REST snapshots, by
//! Binance's own rules (BINANCE.md): buffer diffs and remember the first `U`; a snapshot
//! whose `lastUpdateId` is below that `U` is refetched; buffered diffs with `u` ≤
//! `lastUpdateId` are dropped; then a diff with `u` ≤ the book id is ignored, one with
//! `U` > book id + 1 means updates were missed — the book is discarded and rebuilt from a
//! new snapshot — and any other is applied level by level (absolute quantities, zero
//! removes) and moves the book id to `u`.
//!
//! Sans-IO: the caller fetches snapshots when [`DepthBook::wants_snapshot`] says so and
//! hands over what arrives; prices and quantities are fixed-point mantissas.

use std::collections::{BTreeMap, VecDeque};

/// One side's change: (price, absolute quantity; 0 removes the level).
pub type Level = (i64, i64);

/// A diff-depth event, in fixed point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthDiff {
    /// First update id (`U`).
    pub first_update_id: u64,
    /// Final update id (`u`).
    pub final_update_id: u64,
    /// Bid changes.
    pub bids: Vec<Level>,
    /// Ask changes.
    pub asks: Vec<Level>,
}

/// What keeping the book produces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookOutput {
    /// The book was (re)built from a snapshot: every level, best first.
    Snapshot {
        /// The snapshot's `lastUpdateId`.
        last_update_id: u64,
        /// Bids, best (highest) first.
        bids: Vec<Level>,
        /// Asks, best (lowest) first.
        asks: Vec<Level>,
    },
    /// A diff was applied.
    Delta(DepthDiff),
    /// Updates were missed: the book is discarded until a new snapshot.
    Gap {
        /// The first update id expected.
        expected: u64,
        /// The first update id that arrived instead.
        received: u64,
    },
    /// The snapshot was older than the buffered diffs: it is refetched.
    StaleSnapshot {
        /// Its `lastUpdateId`.
        last_update_id: u64,
        /// The first buffered `U` it should have reached.
        first_buffered: u64,
    },
}

/// The book of one instrument.
#[derive(Debug, Clone, Default)]
pub struct DepthBook {
    /// The book id (`u` of the last applied diff), while synced.
    synced: Option<u64>,
    buffered: VecDeque<DepthDiff>,
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
}

/// Diffs buffered while waiting for a snapshot, at most (the oldest go first; the
/// snapshot will then be found stale and refetched).
const MAX_BUFFERED: usize = 10_000;

impl DepthBook {
    /// An empty book that wants a snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while the book waits for a REST snapshot (fetch one and call
    /// [`Self::on_snapshot`]): unsynced, and its diff stream is flowing (a diff is
    /// buffered), as Binance's procedure orders it.
    pub fn wants_snapshot(&self) -> bool {
        self.synced.is_none() && !self.buffered.is_empty()
    }

    /// The book id while synced.
    pub fn update_id(&self) -> Option<u64> {
        self.synced
    }

    /// Best bid and ask while synced.
    pub fn best(&self) -> Option<(Option<Level>, Option<Level>)> {
        self.synced?;
        Some((
            self.bids.iter().next_back().map(|(&p, &q)| (p, q)),
            self.asks.iter().next().map(|(&p, &q)| (p, q)),
        ))
    }

    /// Bids best first and asks best first (all levels known).
    pub fn levels(&self) -> (Vec<Level>, Vec<Level>) {
        (
            self.bids.iter().rev().map(|(&p, &q)| (p, q)).collect(),
            self.asks.iter().map(|(&p, &q)| (p, q)).collect(),
        )
    }

    /// A diff-depth event arrived.
    pub fn on_diff(&mut self, diff: DepthDiff, emit: &mut impl FnMut(BookOutput)) {
        let Some(id) = self.synced else {
            if self.buffered.len() == MAX_BUFFERED {
                self.buffered.pop_front();
            }
            self.buffered.push_back(diff);
            return;
        };
        if diff.final_update_id <= id {
            return;
        }
        if diff.first_update_id > id + 1 {
            emit(BookOutput::Gap {
                expected: id + 1,
                received: diff.first_update_id,
            });
            self.synced = None;
            self.bids.clear();
            self.asks.clear();
            self.buffered.clear();
            self.buffered.push_back(diff);
            return;
        }
        self.apply(diff, emit);
    }

    /// A REST snapshot arrived (`lastUpdateId` and the levels).
    pub fn on_snapshot(
        &mut self,
        last_update_id: u64,
        bids: &[Level],
        asks: &[Level],
        emit: &mut impl FnMut(BookOutput),
    ) {
        if let Some(first) = self.buffered.front()
            && last_update_id < first.first_update_id
        {
            emit(BookOutput::StaleSnapshot {
                last_update_id,
                first_buffered: first.first_update_id,
            });
            return;
        }
        let set = |side: &mut BTreeMap<i64, i64>, levels: &[Level]| {
            side.clear();
            side.extend(levels.iter().filter(|l| l.1 != 0).copied());
        };
        set(&mut self.bids, bids);
        set(&mut self.asks, asks);
        self.synced = Some(last_update_id);
        let (bids, asks) = self.levels();
        emit(BookOutput::Snapshot {
            last_update_id,
            bids,
            asks,
        });
        let buffered = std::mem::take(&mut self.buffered);
        for diff in buffered {
            // the same rules as live: old ones are dropped, a hole discards the book
            self.on_diff(diff, emit);
        }
    }

    fn apply(&mut self, diff: DepthDiff, emit: &mut impl FnMut(BookOutput)) {
        for (side, levels) in [(&mut self.bids, &diff.bids), (&mut self.asks, &diff.asks)] {
            for &(price, qty) in levels {
                if qty == 0 {
                    side.remove(&price);
                } else {
                    side.insert(price, qty);
                }
            }
        }
        self.synced = Some(diff.final_update_id);
        emit(BookOutput::Delta(diff));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn diff(first: u64, last: u64, bids: &[Level], asks: &[Level]) -> DepthDiff {
        DepthDiff {
            first_update_id: first,
            final_update_id: last,
            bids: bids.to_vec(),
            asks: asks.to_vec(),
        }
    }

    fn run(
        book: &mut DepthBook,
        f: impl FnOnce(&mut DepthBook, &mut dyn FnMut(BookOutput)),
    ) -> Vec<BookOutput> {
        let mut out = Vec::new();
        f(book, &mut |o| out.push(o));
        out
    }

    #[test]
    fn binance_sync_rules() {
        let mut book = DepthBook::new();
        assert!(!book.wants_snapshot(), "not before its diffs flow");
        // buffered: 157..160, 161..165
        run(&mut book, |b, e| {
            b.on_diff(diff(157, 160, &[(24, 10)], &[(26, 100)]), &mut |o| e(o))
        });
        run(&mut book, |b, e| {
            b.on_diff(diff(161, 165, &[(24, 0), (23, 5)], &[]), &mut |o| e(o))
        });
        // a snapshot older than the first buffered U is refetched
        let out = run(&mut book, |b, e| {
            b.on_snapshot(150, &[(20, 1)], &[], &mut |o| e(o))
        });
        assert!(matches!(
            out[..],
            [BookOutput::StaleSnapshot {
                last_update_id: 150,
                first_buffered: 157
            }]
        ));
        assert!(book.wants_snapshot());
        // snapshot at 158: the first buffered diff straddles it and applies; the second too
        let out = run(&mut book, |b, e| {
            b.on_snapshot(158, &[(24, 7), (22, 1)], &[(27, 3)], &mut |o| e(o))
        });
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(
            matches!(&out[0], BookOutput::Snapshot { last_update_id: 158, bids, .. } if bids == &[(24, 7), (22, 1)])
        );
        assert_eq!(book.update_id(), Some(165));
        assert_eq!(
            book.levels(),
            (vec![(23, 5), (22, 1)], vec![(26, 100), (27, 3)])
        );
        assert_eq!(book.best(), Some((Some((23, 5)), Some((26, 100)))));
        // old diff ignored; a hole discards the book
        assert!(
            run(&mut book, |b, e| b
                .on_diff(diff(160, 165, &[(1, 1)], &[]), &mut |o| e(o)))
            .is_empty()
        );
        let out = run(&mut book, |b, e| {
            b.on_diff(diff(170, 171, &[], &[]), &mut |o| e(o))
        });
        assert_eq!(
            out,
            [BookOutput::Gap {
                expected: 166,
                received: 170
            }]
        );
        assert!(book.wants_snapshot());
        assert_eq!(book.best(), None);
    }

    proptest! {
        /// However the diffs are cut and whenever the snapshot is taken, a synced book
        /// equals the brute-force book: all changes up to its id applied in order.
        #[test]
        fn a_synced_book_equals_the_brute_force_book(
            changes in proptest::collection::vec((any::<bool>(), 1i64..20, 0i64..4), 1..120),
            cuts in proptest::collection::vec(1usize..6, 1..60),
            snapshot_after in 0usize..40,
            snapshot_lag in 0usize..6,
        ) {
            // group the per-id changes into diffs of a few ids each
            let mut diffs = Vec::new();
            let (mut at, mut id) = (0usize, 1u64);
            for cut in cuts.iter().cycle() {
                if at >= changes.len() { break; }
                let end = (at + cut).min(changes.len());
                let mut d = diff(id, id + (end - at) as u64 - 1, &[], &[]);
                for &(bid, price, qty) in &changes[at..end] {
                    if bid { d.bids.push((price, qty)) } else { d.asks.push((price, qty)) }
                }
                id += (end - at) as u64;
                at = end;
                diffs.push(d);
            }
            let model = |upto: u64| {
                let (mut b, mut a) = (BTreeMap::new(), BTreeMap::new());
                for (i, &(bid, price, qty)) in changes.iter().enumerate() {
                    if i as u64 + 1 > upto { break; }
                    let side = if bid { &mut b } else { &mut a };
                    if qty == 0 { side.remove(&price); } else { side.insert(price, qty); }
                }
                (b, a)
            };
            let mut book = DepthBook::new();
            let split = snapshot_after.min(diffs.len());
            for d in &diffs[..split] {
                book.on_diff(d.clone(), &mut |_| {});
            }
            // the snapshot lags the stream by a few updates (it is older than the last diff)
            let snap_id = diffs[..split].last().map_or(0, |d| d.final_update_id).saturating_sub(snapshot_lag as u64);
            let (b, a) = model(snap_id);
            let bids: Vec<Level> = b.iter().map(|(&p, &q)| (p, q)).collect();
            let asks: Vec<Level> = a.iter().map(|(&p, &q)| (p, q)).collect();
            book.on_snapshot(snap_id, &bids, &asks, &mut |_| {});
            for d in &diffs[split..] {
                book.on_diff(d.clone(), &mut |_| {});
            }
            if let Some(id) = book.update_id() {
                let (b, a) = model(id);
                prop_assert_eq!(book.levels(), (
                    b.iter().rev().map(|(&p, &q)| (p, q)).collect::<Vec<_>>(),
                    a.iter().map(|(&p, &q)| (p, q)).collect::<Vec<_>>(),
                ));
                prop_assert_eq!(id, changes.len() as u64);
            } else {
                // only a stale snapshot (older than the first buffered diff) leaves it unsynced
                prop_assert!(snap_id < diffs[0].first_update_id);
            }
        }
    }
}
