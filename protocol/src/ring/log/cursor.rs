//! The reader's cursor: batches copied out and validated against the writer's claim,
//! loss reported exactly, raw reads for replication.

use super::super::sync::{Ordering, fence};
use super::*;
use zerocopy::{FromBytes, IntoBytes};

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
pub(crate) const SCRATCH_WORDS: usize = 8192;

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
