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

use super::sync::{AtomicU64, Ordering, RingWords, fence, prefetch_for_write, spin_hint};
use crate::records::WordSink;
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

/// The single writer's private state.
#[derive(Debug)]
pub(crate) struct LogAppender {
    position: u64,
    next_seq: u64,
    claimed: u64,
    index_next: u64,
    last_indexed_stride: Option<u64>,
    /// The time of the last index entry (monotone).
    last_indexed_time: i64,
    /// A record body copied out to read its publish time (once per index stride).
    time_scratch: Vec<u64>,
}

impl LogAppender {
    /// Starts writing after whatever a previous writer left: at the end of the records it
    /// published (even one whose commit store it did not reach), with the sequence after
    /// theirs; a torn, unpublished record is simply overwritten. Must only be called while
    /// no other writer can run (the file lock is held).
    pub fn resume(view: LogView<'_>) -> Self {
        let p = view.positions;
        let commit = p.commit.load(Ordering::Acquire);
        let claim = p.claim.load(Ordering::Acquire).max(commit);
        let index_next = p.index_next.load(Ordering::Acquire);
        // Entries above the last one below commit were torn by the previous writer and
        // are rewritten.
        let lo = index_next.saturating_sub(view.geometry.index_slots);
        let last_entry = (lo..=index_next).rev().find_map(|n| {
            read_entry(view, n)
                .filter(|e| e.position < commit)
                .map(|e| (n, e))
        });
        let (next_seq, index_next, last_indexed_stride, last_indexed_time) = match last_entry {
            Some((n, entry)) => (
                walk_to(view, entry, commit).unwrap_or(entry.seq),
                n + 1,
                Some(entry.position >> view.geometry.stride_shift),
                entry.time_ns,
            ),
            None => (0, index_next, None, i64::MIN),
        };
        // Records published after the last commit store (the writer died between the
        // two) may already be in readers' hands: they count as committed.
        let (published, next_seq) = walk_published(view, commit, claim, next_seq);
        let mut appender = Self {
            position: published,
            next_seq,
            claimed: claim,
            index_next,
            last_indexed_stride,
            last_indexed_time,
            time_scratch: Vec::new(),
        };
        // The first unpublished word is 0 (zeroed before the last record was published),
        // so whatever a dead writer left beyond it was never visible: continue right here.
        appender.claim_to(view, published + RECORD_ALIGN);
        view.at(published).store(0, Ordering::Release);
        p.commit.store(published, Ordering::Release);
        p.next_seq.store(appender.next_seq, Ordering::Release);
        p.index_next.store(appender.index_next, Ordering::Release);
        appender
    }

    /// Position the next record will be written at (or padding before it).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Sequence number of the next record.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Makes sure `claim` covers `[.., upto)`, a chunk at a time.
    #[inline]
    fn claim_to(&mut self, view: LogView<'_>, upto: u64) {
        if upto > self.claimed {
            let chunk = view.geometry.claim_chunk();
            self.claimed = upto.div_ceil(chunk) * chunk;
            view.positions.claim.store(self.claimed, Ordering::Relaxed);
            // Pairs with the reader's fence(Acquire) before it loads `claim`.
            fence(Ordering::Release);
        }
    }

    /// Appends one record whose body is the concatenation of `parts`; returns its
    /// sequence number. Never waits for readers.
    #[inline]
    pub fn append(
        &mut self,
        view: LogView<'_>,
        kind: u16,
        parts: &[&[u8]],
    ) -> Result<u64, AppendError> {
        let mut body_len = 0u64;
        for (i, part) in parts.iter().enumerate() {
            if i + 1 < parts.len() && part.len() % 8 != 0 {
                return Err(AppendError::UnalignedPart {
                    part: i,
                    len: part.len(),
                });
            }
            body_len += part.len() as u64;
        }
        let word0 = self.make_room(view, kind, body_len)?;
        let seq = self.next_seq;
        self.publish(view, word0, seq, |body| {
            let mut words = body.iter();
            for part in parts {
                let (chunks, rest) = part.as_chunks::<8>();
                for (chunk, word) in chunks.iter().zip(&mut words) {
                    word.store(u64::from_le_bytes(*chunk), Ordering::Relaxed);
                }
                if let (false, Some(word)) = (rest.is_empty(), words.next()) {
                    let mut last = [0u8; 8];
                    last[..rest.len()].copy_from_slice(rest);
                    word.store(u64::from_le_bytes(last), Ordering::Relaxed);
                }
            }
        });
        Ok(seq)
    }

    /// Appends one record whose body is `words` (little-endian words, as a Cap'n Proto
    /// message is laid out); returns its sequence number.
    #[inline]
    pub fn append_words(
        &mut self,
        view: LogView<'_>,
        kind: u16,
        words: &[u64],
    ) -> Result<u64, AppendError> {
        self.append_with(view, kind, words.len(), |body| {
            for (word, &value) in body.iter().zip(words) {
                word.store(value, Ordering::Relaxed);
            }
        })
    }

    /// Appends one record of `body_words` words that `write_body` stores in place (into
    /// exactly that many words, the record's own, before it is published); returns its
    /// sequence number. The hot path of typed records: encoded straight into the ring.
    #[inline]
    pub fn append_with(
        &mut self,
        view: LogView<'_>,
        kind: u16,
        body_words: usize,
        write_body: impl FnOnce(&[AtomicU64]),
    ) -> Result<u64, AppendError> {
        let word0 = self.make_room(view, kind, body_words as u64 * 8)?;
        let seq = self.next_seq;
        self.publish(view, word0, seq, write_body);
        Ok(seq)
    }

    /// Checks a record of `body_len` bytes and pads to the region start if it does not fit
    /// before the end; returns the record's first word.
    #[inline]
    fn make_room(
        &mut self,
        view: LogView<'_>,
        kind: u16,
        body_len: u64,
    ) -> Result<u64, AppendError> {
        if kind == KIND_PADDING {
            return Err(AppendError::ReservedKind);
        }
        let len = RECORD_HEADER_LEN + body_len;
        let g = view.geometry;
        if len > g.max_record_len {
            return Err(AppendError::TooLarge {
                len,
                max: g.max_record_len,
            });
        }
        let offset = self.position & g.mask();
        if offset + align_record(len) > g.capacity {
            // Does not fit before the end of the region: padding, then the record at 0.
            self.pad(view, self.position + g.capacity - offset);
        }
        Ok(len | (u64::from(kind) << 32))
    }

    /// Replica: writes a raw record (header + body + pad, as read from the source ring)
    /// at its source `position`, keeping its sequence number. Anything skipped since the
    /// last record becomes padding; a skipped sequence shows readers an exact loss.
    pub fn append_raw(
        &mut self,
        view: LogView<'_>,
        position: u64,
        record: &[u8],
    ) -> Result<u64, AppendError> {
        let g = view.geometry;
        let header = RecordHeader::read_from_prefix(record)
            .map_err(|_| AppendError::BadRawRecord("shorter than a record header"))?
            .0;
        let len = u64::from(header.len);
        if header.kind == KIND_PADDING || len < RECORD_HEADER_LEN || len > g.max_record_len {
            return Err(AppendError::BadRawRecord("bad kind or length"));
        }
        if align_record(len) != record.len() as u64 {
            return Err(AppendError::BadRawRecord(
                "length disagrees with the bytes given",
            ));
        }
        if !position.is_multiple_of(RECORD_ALIGN)
            || (position & g.mask()) + record.len() as u64 > g.capacity
        {
            return Err(AppendError::BadRawRecord(
                "position unaligned or across the region end",
            ));
        }
        if position < self.position || header.seq < self.next_seq {
            return Err(AppendError::BehindReplica {
                position,
                replica_position: self.position,
            });
        }
        if position > self.position {
            self.skip_to(view, position, header.seq);
        }
        self.publish(
            view,
            u64::from_le_bytes(record[..8].try_into().unwrap_or([0; 8])),
            header.seq,
            |body| {
                let (chunks, _) = record[16..].as_chunks::<8>();
                for (word, chunk) in body.iter().zip(chunks) {
                    word.store(u64::from_le_bytes(*chunk), Ordering::Relaxed);
                }
            },
        );
        Ok(header.seq)
    }

    /// Replica: the stream continues at `position` with sequence `next_seq` (padding in
    /// the source, or a range that could not be repaired). Readers skip the padding — or,
    /// for a jump of a whole ring or more, are lapped — and see any sequence jump as an
    /// exact loss.
    pub fn skip_to(&mut self, view: LogView<'_>, position: u64, next_seq: u64) {
        if position > self.position {
            if position - self.position >= view.geometry.capacity {
                // Nothing before is kept: move the positions, readers resynchronise.
                self.claim_to(view, position + RECORD_ALIGN);
                view.at(position).store(0, Ordering::Relaxed);
                view.positions.commit.store(position, Ordering::Release);
                self.position = position;
            } else {
                self.pad(view, position);
            }
        }
        if next_seq > self.next_seq {
            self.next_seq = next_seq;
            view.positions.next_seq.store(next_seq, Ordering::Release);
        }
    }

    /// Writes the record at the current position (which has room before the region end)
    /// and publishes it: `write_body` stores the body's words (whole words, the last one
    /// zero-padded) into the slice it is given.
    #[inline]
    fn publish(
        &mut self,
        view: LogView<'_>,
        word0: u64,
        seq: u64,
        write_body: impl FnOnce(&[AtomicU64]),
    ) {
        let g = view.geometry;
        let start = self.position;
        let end = start + align_record(word0 & 0xffff_ffff);
        let p = view.positions;
        self.claim_to(view, end + RECORD_ALIGN);
        // The next record's first word: 0 until that record is published.
        view.at(end).store(0, Ordering::Relaxed);
        self.prefetch_ahead(view, end);
        view.at(start + 8).store(seq, Ordering::Relaxed);
        // the record does not wrap (make_room padded), so its words are contiguous
        let body_words = usize::try_from((end - start) / 8 - 2).unwrap_or(usize::MAX);
        write_body(view.span(start + RECORD_HEADER_LEN, body_words));
        // The record is visible from here on.
        view.at(start).store(word0, Ordering::Release);
        p.next_seq.store(seq + 1, Ordering::Relaxed);
        p.commit.store(end, Ordering::Release);
        self.position = end;
        self.next_seq = seq + 1;
        let stride = start >> g.stride_shift;
        if self.last_indexed_stride != Some(stride) {
            self.last_indexed_stride = Some(stride);
            let body = view.span(start + RECORD_HEADER_LEN, body_words);
            let time_ns = self.publish_time(word0, body).max(self.last_indexed_time);
            self.last_indexed_time = time_ns;
            self.write_entry(
                view,
                IndexEntry {
                    position: start,
                    seq,
                    time_ns,
                },
            );
        }
    }

    /// Prefetches for writing the [`PREFETCH_LINES`] lines before [`PREFETCH_AHEAD`] past
    /// `end`: with records of up to that many lines, every line gets prefetched (some
    /// twice, which costs nothing), and always the same number — no loop whose length
    /// varies by record to mispredict.
    #[inline]
    fn prefetch_ahead(&self, view: LogView<'_>, end: u64) {
        let g = view.geometry;
        if g.capacity < 4 * PREFETCH_AHEAD {
            return;
        }
        let to = end + PREFETCH_AHEAD;
        for line in 1..=PREFETCH_LINES {
            prefetch_for_write(view.at(to - line * CACHE_LINE));
        }
    }

    /// Covers `[position, to)` with padding records (split at the end of the region) and
    /// commits them.
    pub fn pad(&mut self, view: LogView<'_>, to: u64) {
        let g = view.geometry;
        self.claim_to(view, to + RECORD_ALIGN);
        view.at(to).store(0, Ordering::Relaxed);
        let mut pieces = Vec::new();
        let mut at = self.position;
        while at < to {
            let room = g.capacity - (at & g.mask());
            let len = (to - at).min(room);
            pieces.push((at, len));
            at += len;
        }
        // Last piece first, so a reader never steps from a padding onto a stale word.
        for &(at, len) in pieces.iter().rev() {
            view.at(at).store(len, Ordering::Release);
        }
        view.positions.commit.store(to, Ordering::Release);
        self.position = to;
    }

    /// The publish time of the record just written (`word0` its first header word,
    /// `body` its words), read back from its Cap'n Proto body; `i64::MIN` for kinds that
    /// carry none (control and application records) or a body that does not decode.
    /// Once per index stride, out of the hot path.
    #[cold]
    fn publish_time(&mut self, word0: u64, body: &[AtomicU64]) -> i64 {
        let kind = crate::records::RecordKind(((word0 >> 32) & 0xffff) as u16);
        if !crate::records::RecordKinds::ALL.contains(kind) {
            return i64::MIN;
        }
        self.time_scratch.clear();
        self.time_scratch
            .extend(body.iter().map(|w| w.load(Ordering::Relaxed)));
        let bytes = zerocopy::IntoBytes::as_bytes(&self.time_scratch[..]);
        crate::view::RecordView::open(kind, bytes, |v| v.ts_publish_ns())
            .ok()
            .flatten()
            .unwrap_or(i64::MIN)
    }

    fn write_entry(&mut self, view: LogView<'_>, entry: IndexEntry) {
        let n = self.index_next;
        let slot = entry_slot(view, n);
        let words = &view.index[slot..slot + INDEX_ENTRY_WORDS];
        words[0].store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        words[1].store(entry.position, Ordering::Relaxed);
        words[2].store(entry.seq, Ordering::Relaxed);
        words[3].store(entry.time_ns as u64, Ordering::Relaxed);
        words[0].store(n + 1, Ordering::Release);
        self.index_next = n + 1;
        view.positions.index_next.store(n + 1, Ordering::Release);
    }
}

/// A record body being written in place, as a [`WordSink`] for the hand-written
/// encodings: each `put` takes the next words of the body.
pub(crate) struct BodySink<'a> {
    words: &'a [AtomicU64],
}

impl<'a> BodySink<'a> {
    pub fn new(words: &'a [AtomicU64]) -> Self {
        Self { words }
    }
}

impl WordSink for BodySink<'_> {
    #[inline]
    fn put<const N: usize>(&mut self, words: [u64; N]) {
        // More words than the record announced is a bug in its encoding (the property
        // tests hold the two equal); the slice index stops it before it leaves the record.
        let (these, rest) = self.words.split_at(N);
        for (word, value) in these.iter().zip(words) {
            word.store(value.to_le(), Ordering::Relaxed);
        }
        self.words = rest;
    }
}

/// From `commit`, steps over records a dead writer published (first word set, the
/// expected sequence, inside its claim) but did not commit. Returns the published end and
/// the next sequence. The first unpublished position holds 0: every record zeroes the
/// word after it before it is published.
fn walk_published(view: LogView<'_>, commit: u64, claim: u64, mut next_seq: u64) -> (u64, u64) {
    let g = view.geometry;
    let mut at = commit;
    while at < claim {
        let word0 = view.at(at).load(Ordering::Acquire);
        let step = match classify(word0, at, g) {
            Slot::Padding { len } => len,
            Slot::Record { aligned } => {
                if view.at(at + 8).load(Ordering::Relaxed) != next_seq {
                    break;
                }
                next_seq += 1;
                aligned
            }
            Slot::Empty | Slot::Invalid(_) => break,
        };
        if at + step > claim {
            break;
        }
        at += step;
    }
    (at, next_seq)
}

/// Walks complete records from `from` (an index entry) to `to` and returns the sequence
/// number of the record at `to`. None if the walk was lapped or found garbage.
fn walk_to(view: LogView<'_>, from: IndexEntry, to: u64) -> Option<u64> {
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

fn entry_slot(view: LogView<'_>, n: u64) -> usize {
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
fn search_index(
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

/// What the reader hands its caller.
#[derive(Debug)]
pub(crate) enum LogEvent<'a> {
    Record {
        position: u64,
        header: RecordHeader,
        body: &'a [u8],
    },
    /// Records `[from_seq, to_seq)` are gone: lapped by the writer, or missing in a replica.
    Lost { from_seq: u64, to_seq: u64 },
}

/// The data is not a valid ring log (never caused by a lapping writer: validated copies only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record at position {position}: {problem}")]
pub struct CorruptRecord {
    /// Position of the bad record header.
    pub position: u64,
    /// What is wrong.
    pub problem: &'static str,
}

/// What [`LogCursor::read_raw`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRead {
    /// Whole records from the position asked for were appended; the stream continues at
    /// `next_position` (after any padding that followed them).
    Records {
        /// Where the stream continues.
        next_position: u64,
    },
    /// Padding at the position asked for: the stream continues at `next_position`.
    Skip {
        /// Where the stream continues.
        next_position: u64,
    },
    /// Nothing published at the position yet.
    Empty,
    /// The position was overwritten: the stream can be resumed at the earliest retained
    /// record.
    Unavailable {
        /// Earliest retained record boundary.
        resume_position: u64,
        /// Its sequence number.
        resume_seq: u64,
    },
    /// The ring holds something that cannot be a record.
    Corrupt(CorruptRecord),
}

/// A reader's private state: where it is and a buffer it copies validated batches into.
#[derive(Debug)]
pub(crate) struct LogCursor {
    position: u64,
    expected_seq: Option<u64>,
    skip_below: u64,
    scratch: Vec<u64>,
}

/// Initial (and usual) size of a reader's copy buffer: 64 KiB.
const SCRATCH_WORDS: usize = 8192;

impl LogCursor {
    /// A cursor at a record boundary. `expected_seq` is the sequence of the record there,
    /// if known; records with sequence below `skip_below` are consumed silently.
    pub fn new(position: u64, expected_seq: Option<u64>, skip_below: u64) -> Self {
        Self {
            position,
            expected_seq,
            skip_below,
            scratch: vec![0; SCRATCH_WORDS],
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Sequence number of the next record, when known.
    pub fn expected_seq(&self) -> Option<u64> {
        self.expected_seq
    }

    /// Bytes committed but not yet read.
    pub fn backlog(&self, view: LogView<'_>) -> u64 {
        view.positions
            .commit
            .load(Ordering::Acquire)
            .saturating_sub(self.position)
    }

    /// True when nothing is ready at the cursor: no record, and not lapped.
    #[inline]
    pub fn caught_up(&self, view: LogView<'_>) -> bool {
        let g = view.geometry;
        view.at(self.position).load(Ordering::Acquire) == 0
            && view.positions.claim.load(Ordering::Acquire) <= self.position + g.capacity
    }

    /// Delivers up to `max_records` records (and loss events) to `deliver`; returns how
    /// many records were delivered. Never blocks.
    pub fn poll(
        &mut self,
        view: LogView<'_>,
        max_records: usize,
        mut deliver: impl FnMut(LogEvent<'_>),
    ) -> Result<usize, CorruptRecord> {
        loop {
            let batch = self.copy_batch(view, max_records);
            // Validate: nothing copied may have been overwritten by a later lap.
            fence(Ordering::Acquire);
            let claim = view.positions.claim.load(Ordering::Relaxed);
            if claim > self.position + view.geometry.capacity {
                self.resync(view, &mut deliver);
                continue;
            }
            let (words, records, garbage) = batch;
            if let Some(problem) = garbage {
                return Err(CorruptRecord {
                    position: self.position_after(words),
                    problem,
                });
            }
            if records == 0 && words == 0 {
                return Ok(0);
            }
            let delivered = self.deliver_batch(words, &mut deliver)?;
            if delivered > 0 {
                return Ok(delivered);
            }
            // Only padding or skipped records (below a requested sequence): go on.
        }
    }

    /// Moves the cursor to `position`, a record boundary, forgetting the sequence.
    pub fn seek(&mut self, position: u64) {
        self.position = position;
        self.expected_seq = None;
    }

    /// For replication: appends whole raw records (header + body + pad, exactly as in the
    /// ring) starting at the cursor to `out` — at least one, then as many as fit in
    /// `max_bytes` — and skips any padding that follows them. Padding *at* the cursor is
    /// reported as [`RawRead::Skip`] on its own, so records always start at the position
    /// asked for and a replica can tell padding from loss. Moves the cursor past what it
    /// read.
    pub fn read_raw(&mut self, view: LogView<'_>, max_bytes: usize, out: &mut Vec<u8>) -> RawRead {
        let g = view.geometry;
        let start_len = out.len();
        let start = self.position;
        let mut at = start;
        let mut records = 0usize;
        let mut problem = None;
        let mut in_padding = false;
        loop {
            let word0 = view.at(at).load(Ordering::Acquire);
            let aligned = match classify(word0, at, g) {
                Slot::Empty => break,
                Slot::Invalid(why) => {
                    problem = Some(why);
                    break;
                }
                Slot::Padding { len } => {
                    at += len;
                    in_padding = true;
                    continue;
                }
                // Records after padding are not contiguous with what came before.
                Slot::Record { .. } if in_padding => break,
                Slot::Record { aligned } => aligned,
            };
            let n = usize::try_from(aligned).unwrap_or(usize::MAX);
            if records > 0 && out.len() - start_len + n > max_bytes {
                break;
            }
            out.extend_from_slice(&word0.to_le_bytes());
            for src in view.span(at + 8, n / 8 - 1) {
                out.extend_from_slice(&src.load(Ordering::Relaxed).to_le_bytes());
            }
            records += 1;
            at += aligned;
        }
        fence(Ordering::Acquire);
        let claim = view.positions.claim.load(Ordering::Relaxed);
        if claim > start + g.capacity {
            out.truncate(start_len);
            let (position, seq) = match earliest(view) {
                Some(e) => (e.position, e.seq),
                None => snapshot_tail(view),
            };
            return RawRead::Unavailable {
                resume_position: position,
                resume_seq: seq,
            };
        }
        if let Some(problem) = problem
            && records == 0
            && at == start
        {
            return RawRead::Corrupt(CorruptRecord {
                position: at,
                problem,
            });
        }
        self.position = at;
        if records > 0 {
            RawRead::Records { next_position: at }
        } else if at > start {
            RawRead::Skip { next_position: at }
        } else {
            RawRead::Empty
        }
    }

    /// Copies complete records from the cursor into the scratch buffer: (words copied,
    /// records copied, a length that cannot be a record). Paddings are copied as their
    /// first word only.
    fn copy_batch(
        &mut self,
        view: LogView<'_>,
        max_records: usize,
    ) -> (usize, usize, Option<&'static str>) {
        let g = view.geometry;
        let mut at = self.position;
        let mut words = 0usize;
        let mut records = 0usize;
        while records < max_records {
            let word0 = view.at(at).load(Ordering::Acquire);
            let aligned = match classify(word0, at, g) {
                Slot::Empty => break,
                Slot::Invalid(why) => return (words, records, Some(why)),
                Slot::Padding { len } => {
                    if words == self.scratch.len() {
                        break;
                    }
                    self.scratch[words] = word0;
                    words += 1;
                    at += len;
                    continue;
                }
                Slot::Record { aligned } => aligned,
            };
            let n = usize::try_from(aligned / 8).unwrap_or(usize::MAX);
            if words + n > self.scratch.len() {
                if words == 0 {
                    // A record larger than the buffer: grow it and copy it whole.
                    self.scratch.resize(n, 0);
                } else {
                    break;
                }
            }
            self.scratch[words] = word0;
            for (dst, src) in self.scratch[words + 1..words + n]
                .iter_mut()
                .zip(view.span(at + 8, n - 1))
            {
                *dst = src.load(Ordering::Relaxed);
            }
            words += n;
            records += 1;
            at += aligned;
        }
        (words, records, None)
    }

    /// Position reached after the first `words` words of the scratch buffer.
    fn position_after(&self, words: usize) -> u64 {
        let mut at = self.position;
        let mut offset = 0;
        while offset < words {
            let word0 = self.scratch[offset];
            let len = word0 & 0xffff_ffff;
            if is_padding(word0) {
                offset += 1;
                at += len;
            } else {
                offset += usize::try_from(align_record(len) / 8).unwrap_or(usize::MAX);
                at += align_record(len);
            }
        }
        at
    }

    fn deliver_batch(
        &mut self,
        words: usize,
        deliver: &mut impl FnMut(LogEvent<'_>),
    ) -> Result<usize, CorruptRecord> {
        let batch = self.scratch.as_bytes();
        let mut offset = 0usize;
        let mut delivered = 0usize;
        while offset < words {
            let at = self.position;
            let word0 = self.scratch[offset];
            let len = word0 & 0xffff_ffff;
            if is_padding(word0) {
                offset += 1;
                self.position += len;
                continue;
            }
            let aligned = align_record(len);
            let bytes = offset * 8;
            let header =
                RecordHeader::read_from_bytes(&batch[bytes..bytes + 16]).map_err(|_| {
                    CorruptRecord {
                        position: at,
                        problem: "short header",
                    }
                })?;
            if let Some(expected) = self.expected_seq {
                if header.seq < expected {
                    return Err(CorruptRecord {
                        position: at,
                        problem: "sequence went backwards",
                    });
                }
                if header.seq > expected {
                    deliver(LogEvent::Lost {
                        from_seq: expected,
                        to_seq: header.seq,
                    });
                }
            }
            self.expected_seq = Some(header.seq + 1);
            if header.seq >= self.skip_below {
                deliver(LogEvent::Record {
                    position: at,
                    header,
                    body: &batch[bytes + 16..bytes + len as usize],
                });
                delivered += 1;
            }
            offset += usize::try_from(aligned / 8).unwrap_or(usize::MAX);
            self.position += aligned;
        }
        Ok(delivered)
    }

    /// The writer lapped this reader: jump to a record a quarter of the ring ahead of the
    /// writer's overwrite horizon and report exactly which sequences were lost.
    fn resync(&mut self, view: LogView<'_>, deliver: &mut impl FnMut(LogEvent<'_>)) {
        let g = view.geometry;
        let claim = view.positions.claim.load(Ordering::Acquire);
        let target = claim.saturating_sub(g.capacity) + g.capacity / 4;
        let entry = search_index(view, |e| e.position >= target, false);
        let (position, seq) = match entry {
            Some(e) => (e.position, e.seq),
            None => snapshot_tail(view),
        };
        if let Some(expected) = self.expected_seq
            && seq > expected
        {
            deliver(LogEvent::Lost {
                from_seq: expected,
                to_seq: seq,
            });
        }
        self.position = position;
        self.expected_seq = Some(seq);
    }
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
