//! The sender's retransmit pool: the ranges NAKed and not resent yet, merged, and the
//! ranges resent lately, each lingering so that first NAKs for them are absorbed.
//!
//! Why a first NAK for a range resent lately is redundant: every receiver listening
//! when the range was resent gets the retransmission (multicast, or the one unicast
//! receiver) behind the frame that showed it the gap, so it NAKs before it can see the
//! repair. A receiver whose copy of the repair was lost asks again after its repair
//! timeout, flagged [`FLAG_REPEAT`](super::frame::FLAG_REPEAT), and a repeat is always
//! answered.

use std::collections::{BTreeMap, VecDeque};

/// What became of a NAK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// (Part of) the range is queued for retransmission.
    Queued,
    /// All of it is queued already or was resent within the linger.
    Absorbed,
    /// The pool is full: refused.
    Full,
}

/// Ranges queued at most (merged); a flood of NAKs for scattered records stops here.
const MAX_PENDING: usize = 16_384;
/// Resent ranges remembered at most; the oldest are forgotten first.
const MAX_RECENT: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct RetransmitPool {
    /// Disjoint ranges to resend: start → end. Each start is a record boundary.
    pending: BTreeMap<u64, u64>,
    /// Ranges resent within the linger: start → (end, when).
    recent: BTreeMap<u64, (u64, u64)>,
    /// `recent` in the order it was sent, to forget it: (when, start).
    recent_order: VecDeque<(u64, u64)>,
    /// The longest range in `recent` (bounds the search for overlaps).
    longest_recent: u64,
}

impl RetransmitPool {
    /// A NAK for `[start, end)` (`start` a record boundary). A first NAK asks only for
    /// what was not resent within the linger; a repeat for all of it. What is asked
    /// for joins the pending ranges, merged with those it touches (so a merged range
    /// still starts on a record boundary: the earliest start).
    pub fn ask(&mut self, start: u64, end: u64, repeat: bool) -> Asked {
        let pieces = if repeat {
            vec![(start, end)]
        } else {
            self.not_resent_lately(start, end)
        };
        let mut queued = false;
        for (s, e) in pieces {
            queued |= self.queue(s, e);
            if self.pending.len() > MAX_PENDING {
                self.pending.remove(&s);
                return Asked::Full;
            }
        }
        if queued {
            Asked::Queued
        } else {
            Asked::Absorbed
        }
    }

    /// `[start, end)` minus the ranges resent within the linger. Every piece starts at
    /// `start` or where a resent range ended — record boundaries both.
    fn not_resent_lately(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let from = start.saturating_sub(self.longest_recent);
        let mut pieces = Vec::new();
        let mut cursor = start;
        for (&s, &(e, _)) in self.recent.range(from..end) {
            if e <= cursor {
                continue;
            }
            if s > cursor {
                pieces.push((cursor, s));
            }
            cursor = cursor.max(e);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            pieces.push((cursor, end));
        }
        pieces
    }

    /// Queues `[start, end)`; false if it was all queued already.
    fn queue(&mut self, mut start: u64, mut end: u64) -> bool {
        // the pending range starting at or before `start`, if it reaches it
        if let Some((&s, &e)) = self.pending.range(..=start).next_back()
            && e >= start
        {
            if e >= end {
                return false;
            }
            self.pending.remove(&s);
            start = s;
        }
        // ranges starting inside [start, end] merge in
        while let Some((&s, &e)) = self.pending.range(start..=end).next() {
            self.pending.remove(&s);
            end = end.max(e);
        }
        self.pending.insert(start, end);
        true
    }

    /// The first pending range, taken out of the pool.
    pub fn take_first(&mut self) -> Option<(u64, u64)> {
        self.pending.pop_first()
    }

    /// Puts back what is left of a range (from a record boundary).
    pub fn put_back(&mut self, start: u64, end: u64) {
        if start < end {
            self.queue(start, end);
        }
    }

    /// `[start, end)` was resent at `now_ns`.
    pub fn resent(&mut self, start: u64, end: u64, now_ns: u64) {
        self.recent.insert(start, (end, now_ns));
        self.recent_order.push_back((now_ns, start));
        self.longest_recent = self.longest_recent.max(end - start);
        if self.recent_order.len() > MAX_RECENT
            && let Some((at, s)) = self.recent_order.pop_front()
        {
            self.forget(at, s);
        }
    }

    /// Forgets what was resent more than `linger_ns` before `now_ns`.
    pub fn expire(&mut self, now_ns: u64, linger_ns: u64) {
        while let Some(&(at, s)) = self.recent_order.front() {
            if now_ns.saturating_sub(at) < linger_ns {
                break;
            }
            self.recent_order.pop_front();
            self.forget(at, s);
        }
        if self.recent.is_empty() {
            self.longest_recent = 0;
        }
    }

    fn forget(&mut self, at: u64, start: u64) {
        // a range resent again since keeps its newer entry
        if self.recent.get(&start).is_some_and(|&(_, when)| when == at) {
            self.recent.remove(&start);
        }
    }

    /// Nothing waits to be resent.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naks_merge_and_repeats_of_queued_ranges_are_absorbed() {
        let mut pool = RetransmitPool::default();
        assert_eq!(pool.ask(100, 200, false), Asked::Queued);
        assert_eq!(pool.ask(100, 150, false), Asked::Absorbed);
        assert_eq!(pool.ask(120, 260, false), Asked::Queued);
        assert_eq!(pool.ask(300, 400, false), Asked::Queued);
        assert_eq!(pool.ask(260, 300, true), Asked::Queued);
        assert_eq!(pool.take_first(), Some((100, 400)));
        assert!(pool.is_empty());
    }

    #[test]
    fn first_naks_for_what_was_just_resent_are_absorbed_and_repeats_answered() {
        let mut pool = RetransmitPool::default();
        pool.resent(100, 200, 10);
        pool.resent(200, 300, 10);
        assert_eq!(pool.ask(100, 300, false), Asked::Absorbed);
        // only the part not resent
        assert_eq!(pool.ask(100, 350, false), Asked::Queued);
        assert_eq!(pool.take_first(), Some((300, 350)));
        // a receiver that lost the retransmission asks again: answered
        assert_eq!(pool.ask(100, 200, true), Asked::Queued);
        assert_eq!(pool.take_first(), Some((100, 200)));
        // after the linger, a first NAK is answered too
        pool.expire(1_000, 500);
        assert_eq!(pool.ask(200, 300, false), Asked::Queued);
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = RetransmitPool::default();
        let mut full = false;
        for i in 0..(MAX_PENDING as u64 + 10) {
            if pool.ask(i * 100, i * 100 + 50, false) == Asked::Full {
                full = true;
            }
        }
        assert!(full);
        assert!(pool.pending.len() <= MAX_PENDING);
        for i in 0..(MAX_RECENT as u64 + 10) {
            pool.resent(i * 8, i * 8 + 8, i);
        }
        assert!(pool.recent.len() <= MAX_RECENT);
    }
}
