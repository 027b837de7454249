//! The sparse index: entries by position, sequence and publish time, written like a
//! seqlock; binary searches for a sequence, a time, the earliest record and the tail.

use super::super::sync::{Ordering, fence, spin_hint};
use super::*;

/// One sparse-index entry: the first record starting in a stride of the data region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub position: u64,
    pub seq: u64,
    /// The record's publish time (ns since the Unix epoch), made monotone: the largest
    /// publish time indexed so far (records without one, or with an earlier one, carry
    /// the previous entry's). Entries are ordered by it as by position and sequence.
    pub time_ns: i64,
}

/// Walks complete records from `from` (an index entry) to `to` and returns the sequence
/// number of the record at `to`. None if the walk was lapped or found garbage.
pub(crate) fn walk_to(view: LogView<'_>, from: IndexEntry, to: u64) -> Option<u64> {
    let g = view.geometry;
    let mut at = from.position;
    let mut next_seq = from.seq;
    while at < to {
        let word0 = view.at(at).load(Ordering::Acquire);
        at += match classify(word0, at, g) {
            Slot::Padding { len } => len,
            Slot::Record { aligned } => {
                next_seq = view.at(at + 8).load(Ordering::Relaxed) + 1;
                aligned
            }
            // Lapped while walking, or garbage: the caller retries.
            Slot::Empty | Slot::Invalid(_) => return None,
        };
    }
    fence(Ordering::Acquire);
    let claim = view.positions.claim.load(Ordering::Relaxed);
    (at == to && claim <= from.position + g.capacity).then_some(next_seq)
}

/// True if a record (or padding) of this stream starts at `position` and is still
/// retained: found from the index entry at or before it, walking at most one stride.
pub(crate) fn is_record_boundary(view: LogView<'_>, position: u64) -> bool {
    search_index(view, |e| e.position > position, true)
        .is_some_and(|entry| walk_to(view, entry, position).is_some())
}

pub(crate) fn entry_slot(view: LogView<'_>, n: u64) -> usize {
    usize::try_from(n % view.geometry.index_slots).unwrap_or(0) * INDEX_ENTRY_WORDS
}

/// Reads index entry `n` if it is complete and still holds entry `n` (seqlock read).
pub(crate) fn read_entry(view: LogView<'_>, n: u64) -> Option<IndexEntry> {
    let slot = entry_slot(view, n);
    let words = view.index.get(slot..slot + INDEX_ENTRY_WORDS)?;
    let tag = words[0].load(Ordering::Acquire);
    if tag != n + 1 {
        return None;
    }
    let position = words[1].load(Ordering::Relaxed);
    let seq = words[2].load(Ordering::Relaxed);
    let time_ns = words[3].load(Ordering::Relaxed) as i64;
    fence(Ordering::Acquire);
    (words[0].load(Ordering::Relaxed) == tag).then_some(IndexEntry {
        position,
        seq,
        time_ns,
    })
}

/// Binary search over the live index entries. Returns the first entry for which
/// `after_target` holds (entries are ordered by position and by sequence), or the last
/// entry before it when `last_before` is set.
pub(crate) fn search_index(
    view: LogView<'_>,
    after_target: impl Fn(IndexEntry) -> bool,
    last_before: bool,
) -> Option<IndexEntry> {
    let hi = view.positions.index_next.load(Ordering::Acquire);
    let lo = hi.saturating_sub(view.geometry.index_slots);
    // Entries overwritten by newer ones are a prefix: find the first still-valid one.
    let (mut a, mut b) = (lo, hi);
    while a < b {
        let mid = a + (b - a) / 2;
        if read_entry(view, mid).is_some() {
            b = mid;
        } else {
            a = mid + 1;
        }
    }
    let first_valid = a;
    let (mut a, mut b) = (first_valid, hi);
    while a < b {
        let mid = a + (b - a) / 2;
        match read_entry(view, mid) {
            Some(entry) if !after_target(entry) => a = mid + 1,
            _ => b = mid,
        }
    }
    if last_before {
        a.checked_sub(1)
            .filter(|&n| n >= first_valid)
            .and_then(|n| read_entry(view, n))
    } else {
        (a < hi).then(|| read_entry(view, a)).flatten()
    }
}

/// A consistent (commit position, next sequence) pair: from the last index entry below
/// commit, walk at most one stride of complete records.
pub(crate) fn snapshot_tail(view: LogView<'_>) -> (u64, u64) {
    loop {
        let commit = view.positions.commit.load(Ordering::Acquire);
        let Some(entry) = search_index(view, |e| e.position >= commit, true) else {
            // Nothing indexed yet below commit: only padding (a ring being created).
            return (commit, view.positions.next_seq.load(Ordering::Acquire));
        };
        if let Some(next_seq) = walk_to(view, entry, commit) {
            return (commit, next_seq);
        }
        spin_hint();
    }
}

/// Where the oldest retained record starts (within one index stride of the oldest byte).
pub(crate) fn earliest(view: LogView<'_>) -> Option<IndexEntry> {
    let claim = view.positions.claim.load(Ordering::Acquire);
    let horizon = claim.saturating_sub(view.geometry.capacity);
    search_index(view, |e| e.position >= horizon, false)
}

/// Result of looking up a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqLookup {
    /// Start reading here; records below the requested sequence are skipped.
    At(IndexEntry),
    /// The sequence is no longer retained; the earliest retained one is given.
    Overwritten { earliest_seq: u64 },
    /// The sequence has not been written yet: start at the tail.
    Future,
}

/// Finds where to start reading for the first record with sequence ≥ `seq`, without
/// scanning: binary search of the sparse index, then at most one stride forward.
pub(crate) fn seek_seq(view: LogView<'_>, seq: u64) -> SeqLookup {
    let (_, next_seq) = snapshot_tail(view);
    if seq >= next_seq {
        return SeqLookup::Future;
    }
    let Some(oldest) = earliest(view) else {
        return SeqLookup::Future;
    };
    if seq < oldest.seq {
        return SeqLookup::Overwritten {
            earliest_seq: oldest.seq,
        };
    }
    match search_index(view, |e| e.seq > seq, true) {
        Some(entry) if entry.seq >= oldest.seq => SeqLookup::At(entry),
        _ => SeqLookup::At(oldest),
    }
}

/// Result of looking up a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeLookup {
    /// Start reading here (at most one index stride before the first record published
    /// at or after the time); records published before it are skipped.
    At(IndexEntry),
    /// Nothing retained yet: start at the tail.
    Empty,
}

/// Finds where to start reading for the first record published at or after `time_ns`,
/// without scanning: binary search of the sparse index by time (its times are
/// monotone), then at most one stride forward. A time before everything retained starts
/// at the earliest record; a time after everything, at the last index entry (the
/// records from there are read past).
pub(crate) fn seek_time(view: LogView<'_>, time_ns: i64) -> TimeLookup {
    let Some(oldest) = earliest(view) else {
        return TimeLookup::Empty;
    };
    match search_index(view, |e| e.time_ns >= time_ns, true) {
        Some(entry) if entry.seq >= oldest.seq => TimeLookup::At(entry),
        _ => TimeLookup::At(oldest),
    }
}
