//! The single writer: appending records (claim, write, publish, commit), padding,
//! index entries, the replica's raw writes, and resuming after a dead writer.

use super::super::sync::{AtomicU64, Ordering, fence, prefetch_for_write};
use super::*;
use crate::records::WordSink;
use zerocopy::FromBytes;

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
    /// `body` its words), read in place (`records::publish_time_of`); `i64::MIN` for
    /// kinds that carry none (control and application records) or a body that is not a
    /// well-formed message. Once per index stride.
    #[inline]
    fn publish_time(&self, word0: u64, body: &[AtomicU64]) -> i64 {
        let kind = crate::records::RecordKind(((word0 >> 32) & 0xffff) as u16);
        crate::records::publish_time_of(kind, body.len(), |i| body[i].load(Ordering::Relaxed))
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
pub(crate) fn walk_published(
    view: LogView<'_>,
    commit: u64,
    claim: u64,
    mut next_seq: u64,
) -> (u64, u64) {
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
