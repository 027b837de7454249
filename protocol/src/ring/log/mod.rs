//! The claim/commit protocol over a data region of atomic words — the part of the ring
//! log that loom model-checks. No files, no clock, no unsafe: the file layer in
//! [`super::mapping`] hands in views of the mapped memory.
//!
//! # Protocol (see `docs/formats/ring-log.md` for the full argument)
//!
//! A record's first word (`len | kind << 32`) is its commit flag: it is never 0 for a
//! record, and the writer zeroes the word where the *next* record will start before it
//! publishes the current one, so a reader at a record boundary sees 0 (nothing yet) or a
//! complete record. This is Aeron's term-buffer idea; readers poll the data itself and
//! never touch a line the writer stores on every record.
//!
//! Writer, per record at `[start, end)`:
//! 1. if `end + 8 > claim`: `claim := end + 8` rounded up to a claim chunk (Relaxed),
//!    then `fence(Release)` — claim moves once per chunk, not once per record;
//! 2. zero the word at `end`; write the sequence and body words (Relaxed);
//! 3. store the first word at `start` (Release) — the record is visible;
//! 4. `commit := end` (Release), for tail snapshots, monitoring and parked readers.
//!
//! Reader, per batch starting at record boundary `pos`:
//! 1. for each record: first word (Acquire); 0 ends the batch; else copy the record's
//!    words (Relaxed) into a private buffer;
//! 2. `fence(Acquire)`, then `claim` (Relaxed): if `claim > pos + capacity` the writer
//!    may have overwritten part of what was copied (or of the word that looked like a
//!    header), so the batch is discarded (**lapped**); otherwise every copied word was
//!    written before the writer claimed past it, and the copy is exact. The fences pair
//!    like a seqlock's: if a copied word came from a store after the writer's
//!    `fence(Release)` of a later claim, that claim is visible here.

#![cfg_attr(loom, allow(dead_code))]

mod append;
mod cursor;
mod index;

#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use append::{BodySink, LogAppender};
pub use cursor::{CorruptRecord, RawRead};
pub(crate) use cursor::{LogCursor, LogEvent};
use index::*;
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use index::{
    IndexEntry, SeqLookup, TimeLookup, earliest, is_record_boundary, read_entry, seek_seq,
    seek_time, snapshot_tail,
};

use super::sync::{AtomicU64, RingWords};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// How far ahead of its position the writer prefetches the data region for writing, every
/// line of it: past the 4 KiB page boundaries where the hardware prefetcher stops, so new
/// pages do not start with stores that miss. Measured (`mdbench itch`, 64 MiB ring, best
/// of 5): none 7.5, one line per record 8 KiB ahead 8.7–9.0 (4 KiB or 16–64 KiB ahead
/// less), every line 9.2 M ITCH messages/s (4–16 KiB ahead alike; a fixed three lines per
/// record, no loop, a little more). Rings smaller than four times this get no prefetch.
const PREFETCH_AHEAD: u64 = 8 << 10;
/// Lines prefetched per record.
const PREFETCH_LINES: u64 = 3;
/// Cache line bytes.
const CACHE_LINE: u64 = 64;

/// Record alignment in the data region.
pub const RECORD_ALIGN: u64 = 8;
/// Size of [`RecordHeader`].
pub const RECORD_HEADER_LEN: u64 = 16;
/// Words per sparse-index entry: tag (`n + 1`, 0 while being written), position, sequence,
/// publish time (layout version 2).
pub(crate) const INDEX_ENTRY_WORDS: usize = 4;
/// Kind of padding records (never delivered).
pub(crate) const KIND_PADDING: u16 = 0;

/// The fixed header in front of every record, little-endian.
///
/// ```text
///  0       4       6       8                16
///  +-------+-------+-------+----------------+------------------
///  | len   | kind  | flags | sequence       | body (len - 16 bytes), zero-padded to 8
///  +-------+-------+-------+----------------+------------------
/// ```
/// `len` counts header and body, not the alignment padding. A padding record has
/// kind 0 and only its first 8 bytes are meaningful (it may be just 8 bytes long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RecordHeader {
    /// Header + body length in bytes, before alignment.
    pub len: u32,
    /// [`crate::records::RecordKind`] value.
    pub kind: u16,
    /// Reserved flags, 0.
    pub flags: u16,
    /// Per-stream sequence number (not meaningful for padding).
    pub seq: u64,
}

const _: () = assert!(size_of::<RecordHeader>() as u64 == RECORD_HEADER_LEN);

/// The writer's shared positions, all on one cache line (as Aeron's broadcast buffer keeps
/// its tail-intent and tail counters): a reader that loads `commit` usually finds `claim`
/// in the same line when it validates.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// Bytes the writer may be writing, exclusive end (the "intent").
    pub claim: AtomicU64,
    /// Bytes complete and readable, exclusive end.
    pub commit: AtomicU64,
    /// Sequence number of the next record.
    pub next_seq: AtomicU64,
    /// Number of sparse-index entries ever written.
    pub index_next: AtomicU64,
}

/// Sizes that never change for a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Data region bytes, a power of two.
    pub capacity: u64,
    /// Sparse-index entries.
    pub index_slots: u64,
    /// log2 of the bytes between index entries.
    pub stride_shift: u32,
    /// Largest record (header + body) accepted.
    pub max_record_len: u64,
}

/// Claim moves in steps of this fraction of the capacity (at most 64 KiB): readers lose
/// at most that much of their window, and the claim line is written once per step.
const CLAIM_CHUNK_DIVISOR: u64 = 16;
const MAX_CLAIM_CHUNK: u64 = 64 << 10;

impl Geometry {
    /// The geometry mdi uses for a data region of `capacity` bytes (a power of two).
    pub fn for_capacity(capacity: u64) -> Self {
        let log2 = capacity.trailing_zeros();
        // About 16 Ki entries: a 64 MiB ring gets one every 4 KiB, a 1 GiB ring every 64 KiB.
        let stride_shift = log2.saturating_sub(14).max(6);
        Self {
            capacity,
            index_slots: (capacity >> stride_shift) + 2,
            stride_shift,
            max_record_len: (capacity / 4).min(u64::from(u32::MAX)),
        }
    }

    fn mask(self) -> u64 {
        self.capacity - 1
    }

    fn claim_chunk(self) -> u64 {
        (self.capacity / CLAIM_CHUNK_DIVISOR).clamp(RECORD_ALIGN, MAX_CLAIM_CHUNK)
    }
}

/// A view of one ring's shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogView<'a> {
    pub positions: &'a Positions,
    /// The whole data region (`geometry.capacity` bytes, checked in [`LogView::new`]).
    data: RingWords<'a>,
    pub index: &'a [AtomicU64],
    pub geometry: Geometry,
}

impl<'a> LogView<'a> {
    /// A view of a log whose data region is `data`, which must be the whole region of
    /// `geometry` (asserted: positions are taken modulo the region by its size).
    #[inline]
    pub fn new(
        positions: &'a Positions,
        data: RingWords<'a>,
        index: &'a [AtomicU64],
        geometry: Geometry,
    ) -> Self {
        if data.len() as u64 * 8 != geometry.capacity {
            region_mismatch();
        }
        Self {
            positions,
            data,
            index,
            geometry,
        }
    }

    /// The data word at `position` (modulo the capacity).
    #[inline]
    fn at(self, position: u64) -> &'a AtomicU64 {
        self.data.at(position)
    }

    /// The `words` data words from `position`, which must not cross the region's end
    /// (checked).
    #[inline]
    fn span(self, position: u64, words: usize) -> &'a [AtomicU64] {
        self.data.span(position, words)
    }
}

#[cold]
#[inline(never)]
fn region_mismatch() -> ! {
    panic!("ring log data region does not match its geometry");
}

/// Rounds up to the record alignment.
pub const fn align_record(len: u64) -> u64 {
    (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// What the first word at a record boundary says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Nothing published here yet.
    Empty,
    /// Padding: the stream continues `len` bytes on.
    Padding { len: u64 },
    /// A record occupying `aligned` bytes.
    Record { aligned: u64 },
    /// Not something a writer wrote here: a later lap, or corruption.
    Invalid(&'static str),
}

/// Classifies the first word `word0` found at position `at`: the one place that knows
/// what a valid padding or record header looks like.
#[inline]
fn classify(word0: u64, at: u64, g: Geometry) -> Slot {
    if word0 == 0 {
        return Slot::Empty;
    }
    let len = word0 & 0xffff_ffff;
    let room = g.capacity - (at & g.mask());
    if is_padding(word0) {
        if len < RECORD_ALIGN || !len.is_multiple_of(RECORD_ALIGN) || len > room {
            Slot::Invalid("bad padding length")
        } else {
            Slot::Padding { len }
        }
    } else {
        let aligned = align_record(len);
        if len < RECORD_HEADER_LEN || len > g.max_record_len || aligned > room {
            Slot::Invalid("bad record length")
        } else {
            Slot::Record { aligned }
        }
    }
}

/// Is this first word a padding's?
#[inline]
fn is_padding(word0: u64) -> bool {
    (word0 >> 32) as u16 == KIND_PADDING
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The record is larger than the ring accepts (a quarter of its capacity).
    #[error("record of {len} bytes exceeds the ring's maximum of {max} bytes")]
    TooLarge {
        /// Header + body length asked for.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// A body part other than the last is not a multiple of 8 bytes long.
    #[error("body part {part} is {len} bytes; every part but the last must be a multiple of 8")]
    UnalignedPart {
        /// Index of the part.
        part: usize,
        /// Its length.
        len: usize,
    },
    /// Kind 0 is reserved for padding.
    #[error("record kind 0 is reserved for padding")]
    ReservedKind,
    /// A replica record that is not a whole, valid ring record.
    #[error("raw record refused: {0}")]
    BadRawRecord(&'static str),
    /// A replica record behind what the replica already holds.
    #[error("raw record at position {position} is behind the replica (at {replica_position})")]
    BehindReplica {
        /// Position of the record offered.
        position: u64,
        /// The replica's position.
        replica_position: u64,
    },
}

/// A ring's shared memory on the heap, for unit tests and the loom model.
#[cfg(test)]
pub(crate) struct HeapLog {
    pub positions: Positions,
    pub data: Vec<AtomicU64>,
    pub index: Vec<AtomicU64>,
    pub geometry: Geometry,
}

#[cfg(test)]
impl HeapLog {
    pub fn new(geometry: Geometry) -> Self {
        let words = |n: u64| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Self {
            positions: Positions {
                claim: AtomicU64::new(0),
                commit: AtomicU64::new(0),
                next_seq: AtomicU64::new(0),
                index_next: AtomicU64::new(0),
            },
            data: words(geometry.capacity / 8),
            index: words(geometry.index_slots * INDEX_ENTRY_WORDS as u64),
            geometry,
        }
    }

    pub fn view(&self) -> LogView<'_> {
        let data = RingWords::new(&self.data).expect("a power-of-two capacity");
        LogView::new(&self.positions, data, &self.index, self.geometry)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::sync::Ordering;
    use super::*;

    fn read_all(cursor: &mut LogCursor, view: LogView<'_>) -> Vec<u64> {
        let mut seqs = Vec::new();
        for _ in 0..16 {
            cursor
                .poll(view, 64, |event| match event {
                    LogEvent::Record { header, .. } => seqs.push(header.seq),
                    LogEvent::Lost { from_seq, to_seq } => panic!("lost {from_seq}..{to_seq}"),
                })
                .expect("no corruption");
        }
        seqs
    }

    /// A writer that died after publishing a record but before storing `commit`: readers
    /// may already have the record, so the next writer must continue after it.
    #[test]
    fn takeover_keeps_records_published_but_not_committed() {
        let memory = HeapLog::new(Geometry::for_capacity(4096));
        let view = memory.view();
        let mut writer = LogAppender::resume(view);
        for i in 0..3u64 {
            writer.append(view, 0x8000, &[&i.to_le_bytes()]).unwrap();
        }
        let commit_before = memory.positions.commit.load(Ordering::Acquire);
        writer.append(view, 0x8000, &[&3u64.to_le_bytes()]).unwrap();
        // The commit store of record 3 never happened.
        memory
            .positions
            .commit
            .store(commit_before, Ordering::Release);
        let mut reader = LogCursor::new(0, Some(0), 0);
        assert_eq!(read_all(&mut reader, view), vec![0, 1, 2, 3]);

        let mut next_writer = LogAppender::resume(view);
        assert_eq!(next_writer.next_seq(), 4);
        next_writer
            .append(view, 0x8000, &[&4u64.to_le_bytes()])
            .unwrap();
        assert_eq!(read_all(&mut reader, view), vec![4]);
        // A reader opening now sees the same tail.
        assert_eq!(snapshot_tail(view).1, 5);
    }

    /// A writer that died mid-record (body written, first word not yet): the torn bytes
    /// were never visible, are overwritten, and never delivered.
    #[test]
    fn takeover_overwrites_a_torn_record() {
        let memory = HeapLog::new(Geometry::for_capacity(4096));
        let view = memory.view();
        let mut writer = LogAppender::resume(view);
        writer.append(view, 0x8000, &[&0u64.to_le_bytes()]).unwrap();
        let torn_at = writer.position();
        // Torn: claim covers it, sequence and body written, first word still 0.
        memory
            .positions
            .claim
            .store(torn_at + 512, Ordering::Release);
        memory.view().at(torn_at + 8).store(1, Ordering::Relaxed);
        memory
            .view()
            .at(torn_at + 16)
            .store(0xdead, Ordering::Relaxed);
        let mut reader = LogCursor::new(0, Some(0), 0);
        assert_eq!(read_all(&mut reader, view), vec![0]);

        let mut next_writer = LogAppender::resume(view);
        assert_eq!(next_writer.next_seq(), 1);
        assert_eq!(next_writer.position(), torn_at);
        next_writer.append(view, 0x8000, &[&[7u8; 16]]).unwrap();
        let mut bodies = Vec::new();
        reader
            .poll(view, 8, |event| {
                if let LogEvent::Record { header, body, .. } = event {
                    bodies.push((header.seq, body.to_vec()));
                }
            })
            .unwrap();
        assert_eq!(bodies, vec![(1, vec![7u8; 16])]);
    }
}
