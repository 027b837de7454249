//! Readers of a ring: any number, in any process, mapping the ring read-only.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::file::{RingFile, RingFileError, RingInfo, ShmDir, map_readers_file, validate_name};
use super::layout::{FLAG_CLOSED, FLAG_SUPERSEDED, READERS_SLEEPERS, READERS_WAKE};
use super::log::{self, CorruptRecord, LogCursor, LogEvent, RawRead, SeqLookup, TimeLookup};
use super::mapping::{self, Mapping};
use super::units::{Position, Seq};
use crate::records::{EpochStart, RecordKind, decode};
use crate::time::WallNs;

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The oldest record still retained (within one index stride of the oldest byte).
    Earliest,
    /// After the last committed record: only new records.
    #[default]
    Latest,
    /// The first record with this sequence number or higher. Found through the sparse
    /// index without scanning; fails if already overwritten.
    Sequence(Seq),
    /// The first record published at or after this time (ns since the Unix epoch; the
    /// records' `ts_publish_ns`, monotone per ring as the writer indexes them). Found by
    /// binary search of the sparse index's times, then at most one index stride read
    /// past; a time before everything retained starts at the earliest record. Records
    /// that carry no publish time (application kinds) are read past until the first
    /// record at or after the time.
    Time(WallNs),
}

/// Why a reader could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ReaderOpenError {
    /// The stream name is not usable as a file name.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The ring file is missing, foreign, corrupt, truncated, or unreadable.
    #[error(transparent)]
    File(#[from] RingFileError),
    /// The requested sequence number was already overwritten.
    #[error("{}: sequence {requested} is no longer retained; the earliest retained is {earliest}", path.display())]
    SequenceOverwritten {
        /// The ring file.
        path: PathBuf,
        /// Sequence asked for.
        requested: u64,
        /// Earliest sequence still in the ring.
        earliest: u64,
    },
}

/// A record as delivered to a reader: validated (never torn) and 8-byte aligned.
#[derive(Debug, Clone, Copy)]
pub struct RingRecord<'a> {
    /// Byte position of the record in the stream.
    pub position: Position,
    /// Sequence number.
    pub seq: Seq,
    /// What the body holds.
    pub kind: RecordKind,
    /// Record flags (reserved, 0).
    pub flags: u16,
    /// The body: a single-segment Cap'n Proto message for mdi record kinds.
    pub body: &'a [u8],
}

/// What [`RingReader::poll`] delivers.
#[derive(Debug, Clone, Copy)]
pub enum ReadEvent<'a> {
    /// A record.
    Record(RingRecord<'a>),
    /// Records with sequence numbers `from_seq..to_seq` will never be delivered: the
    /// writer lapped this reader (or a replica could not repair a gap). Exact.
    Lost {
        /// First lost sequence.
        from_seq: Seq,
        /// One past the last lost sequence.
        to_seq: Seq,
    },
    /// A writer started a new epoch (the first writer starts epoch 1; a restarted writer
    /// starts the next). Records after this come from the new writer.
    EpochStarted {
        /// The new epoch.
        epoch: u64,
        /// The epoch before, 0 for a new ring.
        previous_epoch: u64,
        /// The new writer's process id.
        writer_pid: u32,
        /// Sequence number of the epoch-start record.
        seq: Seq,
    },
}

impl ReadEvent<'_> {
    /// For `Lost`, the number of records lost.
    pub fn lost_count(&self) -> u64 {
        match self {
            Self::Lost { from_seq, to_seq } => from_seq.count_to(*to_seq),
            _ => 0,
        }
    }
}

/// How a reader waits for the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin on the commit position (lowest latency, burns a core).
    BusySpin,
    /// Yield the CPU between looks.
    Yield,
    /// Sleep on a futex until the writer commits, at most `timeout`. The writer makes the
    /// wake-up system call only while some reader sleeps.
    Park {
        /// Longest sleep.
        timeout: Duration,
    },
}

/// Waiting failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// Parking needs write access to the readers file.
    #[error("cannot park: {0}")]
    ParkUnavailable(RingFileError),
}

/// Is the ring's writer there?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterState {
    /// A process holds the writer lock.
    Alive,
    /// The writer closed the ring and exited cleanly.
    Closed,
    /// The writer died without closing (crash, SIGKILL): a new writer may take over.
    Dead,
    /// The file was replaced by a new ring of the same name: reopen it.
    Superseded,
}

/// Writer liveness as a reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStatus {
    /// Alive, closed, dead or superseded.
    pub state: WriterState,
    /// Process id of the (last) writer.
    pub pid: u32,
    /// Its epoch.
    pub epoch: u64,
    /// `now_ns` minus its last heartbeat.
    pub heartbeat_age_ns: i64,
}

/// A reader of one ring. Maps the ring read-only: it cannot disturb the writer or other
/// readers.
#[derive(Debug)]
pub struct RingReader {
    ring: RingFile,
    readers: Option<Mapping>,
    readers_path: PathBuf,
    cursor: LogCursor,
    name: String,
    /// Read past records published before this time (a [`StartAt::Time`] start), until
    /// the first at or after it.
    skip_before_ns: Option<i64>,
}

/// What the log's cursor found, as a reader delivers it: an epoch-start record becomes
/// [`ReadEvent::EpochStarted`], other records and losses carry typed numbers.
#[inline(always)]
fn read_event(event: LogEvent<'_>) -> ReadEvent<'_> {
    match event {
        LogEvent::Record {
            position,
            header,
            body,
        } => {
            let kind = RecordKind(header.kind);
            if kind == RecordKind::EPOCH_START
                && let Ok(start) = decode::<EpochStart>(body)
            {
                return ReadEvent::EpochStarted {
                    epoch: start.epoch,
                    previous_epoch: start.previous_epoch,
                    writer_pid: start.writer_pid,
                    seq: Seq(header.seq),
                };
            }
            ReadEvent::Record(RingRecord {
                position: Position(position),
                seq: Seq(header.seq),
                kind,
                flags: header.flags,
                body,
            })
        }
        LogEvent::Lost { from_seq, to_seq } => ReadEvent::Lost {
            from_seq: Seq(from_seq),
            to_seq: Seq(to_seq),
        },
    }
}

impl RingReader {
    /// Opens stream `name` in `dir` at `start`, its pages mapped in now (no page fault
    /// on the hot path later).
    pub fn open(dir: &ShmDir, name: &str, start: StartAt) -> Result<Self, ReaderOpenError> {
        Self::open_with(dir, name, start, true)
    }

    /// Like [`Self::open`]; with `prefault` false the pages are mapped as they are read
    /// (a one-pass read of part of a large ring: mapping a 1 GiB ring's pages at open
    /// takes about 0.1 s, and as long again to unmap).
    pub fn open_with(
        dir: &ShmDir,
        name: &str,
        start: StartAt,
        prefault: bool,
    ) -> Result<Self, ReaderOpenError> {
        validate_name(name).map_err(|reason| ReaderOpenError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let path = dir.ring_path(name);
        let ring = RingFile::open(&path, false, prefault, Some(name))?;
        let view = ring.view();
        let mut skip_before_ns = None;
        let cursor = match start {
            StartAt::Latest => {
                let (position, next_seq) = log::snapshot_tail(view);
                LogCursor::new(position, Some(next_seq), 0)
            }
            StartAt::Earliest => match log::earliest(view) {
                Some(entry) => LogCursor::new(entry.position, Some(entry.seq), 0),
                None => {
                    let (position, next_seq) = log::snapshot_tail(view);
                    LogCursor::new(position, Some(next_seq), 0)
                }
            },
            StartAt::Sequence(Seq(seq)) => match log::seek_seq(view, seq) {
                SeqLookup::At(entry) => LogCursor::new(entry.position, Some(entry.seq), seq),
                SeqLookup::Future => {
                    let (position, next_seq) = log::snapshot_tail(view);
                    LogCursor::new(position, Some(next_seq), seq)
                }
                SeqLookup::Overwritten { earliest_seq } => {
                    return Err(ReaderOpenError::SequenceOverwritten {
                        path,
                        requested: seq,
                        earliest: earliest_seq,
                    });
                }
            },
            StartAt::Time(WallNs(time_ns)) => {
                skip_before_ns = Some(time_ns);
                match log::seek_time(view, time_ns) {
                    TimeLookup::At(entry) => LogCursor::new(entry.position, Some(entry.seq), 0),
                    TimeLookup::Empty => {
                        let (position, next_seq) = log::snapshot_tail(view);
                        LogCursor::new(position, Some(next_seq), 0)
                    }
                }
            }
        };
        Ok(Self {
            ring,
            readers: None,
            readers_path: dir.readers_path(name),
            cursor,
            name: name.to_owned(),
            skip_before_ns,
        })
    }

    /// Delivers up to `max_records` records, plus any loss or epoch events, to `on_event`;
    /// returns the number of records delivered (0: nothing new). Never blocks.
    ///
    /// Records are copied out of shared memory in batches and validated before delivery,
    /// so a record overwritten while being read is never delivered: it becomes
    /// [`ReadEvent::Lost`].
    #[inline]
    pub fn poll(
        &mut self,
        max_records: usize,
        mut on_event: impl FnMut(ReadEvent<'_>),
    ) -> Result<usize, CorruptRecord> {
        let view = self.ring.view();
        if let Some(before_ns) = self.skip_before_ns {
            return self.poll_skipping(before_ns, max_records, on_event);
        }
        self.cursor
            .poll(view, max_records, |event| on_event(read_event(event)))
    }

    /// [`Self::poll`] while records published before `before_ns` are read past: loss and
    /// epoch events are delivered, records only from the first one at or after the time.
    #[cold]
    fn poll_skipping(
        &mut self,
        before_ns: i64,
        max_records: usize,
        mut on_event: impl FnMut(ReadEvent<'_>),
    ) -> Result<usize, CorruptRecord> {
        let view = self.ring.view();
        let mut reached = false;
        let mut delivered = 0;
        self.cursor.poll(view, max_records, |event| {
            let event = read_event(event);
            if let ReadEvent::Record(r) = &event {
                if !reached {
                    let (words, _) = r.body.as_chunks::<8>();
                    let published = crate::records::publish_time_of(r.kind, words.len(), |i| {
                        u64::from_le_bytes(words[i])
                    });
                    match published {
                        Some(t) if t >= before_ns => reached = true,
                        _ => return,
                    }
                }
                delivered += 1;
            }
            on_event(event);
        })?;
        if reached {
            self.skip_before_ns = None;
        }
        Ok(delivered)
    }

    /// For replication: moves to `position` (a record boundary this stream had, e.g. a
    /// replica's position) and appends whole raw records from there to `out`, at least
    /// one and then as many as fit in `max_bytes`. Padding at `position` is reported as
    /// [`RawRead::Skip`]; padding after the records is skipped. The reader stays after
    /// what it read, so repeated calls walk the stream.
    pub fn read_raw(&mut self, position: Position, max_bytes: usize, out: &mut Vec<u8>) -> RawRead {
        self.cursor.seek(position.0);
        self.cursor.read_raw(self.ring.view(), max_bytes, out)
    }

    /// The oldest retained record: (position, sequence); None for an empty ring.
    pub fn earliest(&self) -> Option<(Position, Seq)> {
        log::earliest(self.ring.view()).map(|e| (Position(e.position), Seq(e.seq)))
    }

    /// The tail: (position after the last committed record, the next sequence number).
    pub fn tail(&self) -> (Position, Seq) {
        let (position, next_seq) = log::snapshot_tail(self.ring.view());
        (Position(position), Seq(next_seq))
    }

    /// True if a record of this stream starts at `position` and is still retained (a
    /// replication request must start on one: a position inside a record would have its
    /// bytes read as a header).
    pub fn is_record_boundary(&self, position: Position) -> bool {
        log::is_record_boundary(self.ring.view(), position.get())
    }

    /// The ring's data-region size (a replica must have the same).
    pub fn capacity(&self) -> u64 {
        self.ring.geometry.capacity
    }

    /// True when nothing beyond this reader's position is committed.
    #[inline]
    pub fn caught_up(&self) -> bool {
        self.cursor.caught_up(self.ring.view())
    }

    /// Waits once according to `strategy`; returns true when a record is ready to poll.
    /// Callers loop with their own deadline (the ring reads no clock).
    pub fn wait(&mut self, strategy: WaitStrategy) -> Result<bool, WaitError> {
        match strategy {
            WaitStrategy::BusySpin => std::hint::spin_loop(),
            WaitStrategy::Yield => std::thread::yield_now(),
            WaitStrategy::Park { timeout } => self.park(timeout)?,
        }
        Ok(!self.caught_up())
    }

    fn park(&mut self, timeout: Duration) -> Result<(), WaitError> {
        if self.readers.is_none() {
            let path = &self.readers_path;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| WaitError::ParkUnavailable(RingFileError::io(path, e)))?;
            self.readers =
                Some(map_readers_file(path, &file, true).map_err(WaitError::ParkUnavailable)?);
        }
        let Some(readers) = &self.readers else {
            return Ok(());
        };
        let sleepers = readers.u32_at(READERS_SLEEPERS);
        let wake = readers.u32_at(READERS_WAKE);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let ticket = wake.load(Ordering::SeqCst);
        // Our registration is ordered before the look at the ring (the writer's side:
        // publish, then look at the sleeper count; see RingWriter::wake_sleepers).
        std::sync::atomic::fence(Ordering::SeqCst);
        let writer_gone = self.ring.writer_flags() & FLAG_CLOSED != 0;
        if self.cursor.caught_up(self.ring.view()) && !writer_gone {
            mapping::futex_wait(wake, ticket, timeout);
        }
        // Saturating: the writer may have reset a count it judged stale.
        let _ = sleepers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        Ok(())
    }

    /// The writer's liveness: lock held (alive), closed cleanly, died, or superseded.
    pub fn writer_status(&self, now: impl Into<WallNs>) -> WriterStatus {
        let now_ns = now.into().get();
        let flags = self.ring.writer_flags();
        let state = if flags & FLAG_SUPERSEDED != 0 {
            WriterState::Superseded
        } else if self
            .ring
            .writer_lock_held()
            .unwrap_or_else(|_| mapping::process_exists(self.ring.writer_pid()))
        {
            WriterState::Alive
        } else if flags & FLAG_CLOSED != 0 {
            WriterState::Closed
        } else {
            WriterState::Dead
        };
        WriterStatus {
            state,
            pid: self.ring.writer_pid(),
            epoch: self.ring.epoch(),
            heartbeat_age_ns: now_ns.saturating_sub(self.ring.heartbeat_ns()),
        }
    }

    /// Byte position of the next record to read.
    pub fn position(&self) -> Position {
        Position(self.cursor.position())
    }

    /// Sequence number of the next record to read.
    pub fn next_seq(&self) -> Option<Seq> {
        self.cursor.expected_seq().map(Seq)
    }

    /// Bytes committed but not yet read.
    pub fn backlog(&self) -> u64 {
        self.cursor.backlog(self.ring.view())
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.ring.path
    }

    /// A snapshot of the ring header.
    pub fn info(&self) -> RingInfo {
        self.ring.info()
    }
}
