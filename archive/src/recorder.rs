//! The recorder: follows one ring as a reader (the writer never waits for it) and
//! appends every record — with its sequence and publish time — to the stream's segments
//! in `ARCHIVE/<stream>/`. Restarted, it continues right after the last archived
//! record; a ring that lapped it (or no longer holds where it stopped) leaves a gap
//! marker with the exact missing range.

use std::path::{Path, PathBuf};

use mdi_protocol::records::{RecordKind, publish_time_of};
use mdi_protocol::ring::{ReadEvent, ReaderOpenError, RingReader, Seq, ShmDir, StartAt};

use crate::segment::{ArchiveError, ArchiveRecord, SegmentHeader, SegmentReader, SegmentWriter};

/// The records schema's identity written into every segment (the schema file's id).
pub const SCHEMA_ID: u64 = 0x8bee_8940_8990_cda8;

/// When the archive asks the disk to keep what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Never (the page cache; the fastest, a machine crash loses what was not written
    /// back).
    #[default]
    None,
    /// At most every this many ms.
    Periodic(u64),
    /// After every poll that wrote something.
    Batch,
}

/// How a recorder writes.
#[derive(Debug, Clone, Copy)]
pub struct RecorderOptions {
    /// Each segment's size.
    pub segment_bytes: u64,
    /// When to fsync.
    pub fsync: Fsync,
    /// Chunks written by a thread of their own while the next is filled
    /// ([`SegmentWriter::write_behind`]).
    pub write_behind: bool,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 256 << 20,
            fsync: Fsync::None,
            write_behind: true,
        }
    }
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A segment could not be written or read.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The ring could not be opened.
    #[error("ring {stream:?}: {source}")]
    Ring {
        /// The stream.
        stream: String,
        /// Why.
        source: ReaderOpenError,
    },
    /// Reading the ring failed (a corrupt record).
    #[error("ring {stream:?}: {detail}")]
    Read {
        /// The stream.
        stream: String,
        /// What the ring said.
        detail: String,
    },
    /// Making the stream's archive directory failed.
    #[error("{}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another recorder is writing this stream's archive (two would interleave their
    /// segments).
    #[error("{}: another recorder ({holder}) is recording stream {stream:?} into it", path.display())]
    Busy {
        /// The stream's archive directory.
        path: PathBuf,
        /// The stream.
        stream: String,
        /// Who holds it, as its lock file says.
        holder: String,
    },
}

/// What a recorder has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderCounts {
    /// Records archived.
    pub records: u64,
    /// Gap markers written, and the records they stand for.
    pub gaps: u64,
    /// Records lost (in gap markers).
    pub lost: u64,
    /// Segments begun.
    pub segments: u64,
}

/// The segments of a stream's archive directory, by first sequence (file names sort so).
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ArchiveError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ArchiveError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
        else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Takes `dir`'s recorder lock (`.recorder.lock`, an exclusive `flock`): one recorder
/// per stream's archive. The holder's pid is written into the file for the message of
/// the one refused.
fn lock_stream_dir(
    dir: &Path,
    stream: &str,
) -> Result<nix::fcntl::Flock<std::fs::File>, RecordError> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek, Write};
    let path = dir.join(".recorder.lock");
    let io = |source| RecordError::Dir {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            locked.set_len(0).map_err(io)?;
            locked.rewind().map_err(io)?;
            write!(locked, "pid {}", std::process::id()).map_err(io)?;
            Ok(locked)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            holder.truncate(64);
            Err(RecordError::Busy {
                path: dir.to_owned(),
                stream: stream.to_owned(),
                holder: if holder.is_empty() {
                    "pid unknown".to_owned()
                } else {
                    holder
                },
            })
        }
        Err((_, errno)) => Err(io(errno.into())),
    }
}

/// Removes the staging files of segments whose creation a crash cut short (see
/// [`SegmentWriter::create`]): only the holder of the directory's lock calls this.
fn remove_staging_files(dir: &Path) -> Result<(), RecordError> {
    let read = std::fs::read_dir(dir).map_err(|source| RecordError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    for entry in read.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".seg.creating"))
        {
            tracing::info!(
                "{}: removing a segment whose creation was cut short",
                path.display()
            );
            std::fs::remove_file(&path).map_err(|source| RecordError::Dir { path, source })?;
        }
    }
    Ok(())
}

/// Records one ring into an archive.
#[derive(Debug)]
pub struct Recorder {
    reader: RingReader,
    sink: Sink,
}

/// The writing half: segments, position, counts (apart from the reader so that records
/// go from the ring's mapping straight into a chunk, no copy between).
#[derive(Debug)]
struct Sink {
    stream: String,
    dir: PathBuf,
    /// The stream's archive is this recorder's while it holds this (released on drop,
    /// or by the kernel when the process dies).
    _lock: nix::fcntl::Flock<std::fs::File>,
    writer: Option<SegmentWriter>,
    options: RecorderOptions,
    /// The last sequence archived (a gap's last missing one).
    last_seq: Option<u64>,
    last_time_ns: i64,
    epoch: u64,
    counts: RecorderCounts,
    last_sync: std::time::Instant,
}

impl Recorder {
    /// Opens `stream` of `shm` and its archive in `archive/<stream>/`, continuing after
    /// the last archived record (from the ring's earliest for a new archive).
    pub fn open(
        shm: &ShmDir,
        stream: &str,
        archive: &Path,
        options: RecorderOptions,
    ) -> Result<Self, RecordError> {
        let dir = archive.join(stream);
        std::fs::create_dir_all(&dir).map_err(|source| RecordError::Dir {
            path: dir.clone(),
            source,
        })?;
        let lock = lock_stream_dir(&dir, stream)?;
        remove_staging_files(&dir)?;
        let ring_error = |source| RecordError::Ring {
            stream: stream.to_owned(),
            source,
        };
        // the active (last, unsealed) segment: recovered, appended to
        let mut writer = None;
        let mut last: Option<(u64, i64)> = None;
        let mut epoch = 0;
        if let Some((_, path)) = segments(&dir)?.last() {
            match SegmentWriter::open_append(path) {
                Ok((w, recovered)) => {
                    epoch = w.header().epoch;
                    last = recovered.last_seq.zip(recovered.last_time_ns);
                    if last.is_none() {
                        // an empty active segment begins at its header's sequence
                        last = Some((
                            w.header().first_seq.saturating_sub(1),
                            w.header().first_time_ns,
                        ));
                    }
                    writer = Some(if options.write_behind {
                        w.write_behind()?
                    } else {
                        w
                    });
                }
                Err(ArchiveError::Sealed) => {
                    let reader = SegmentReader::open(path)?;
                    epoch = reader.header().epoch;
                    last = reader.chunks().last().map(|c| (c.last_seq, c.last_time_ns));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let reader = match last {
            None => {
                RingReader::open_with(shm, stream, StartAt::Earliest, true).map_err(ring_error)?
            }
            Some((seq, _)) => {
                match RingReader::open_with(shm, stream, StartAt::Sequence(Seq(seq + 1)), true) {
                    Ok(r) => r,
                    // the ring moved on while the recorder was down
                    Err(ReaderOpenError::SequenceOverwritten { .. }) => {
                        RingReader::open_with(shm, stream, StartAt::Earliest, true)
                            .map_err(ring_error)?
                    }
                    Err(e) => return Err(ring_error(e)),
                }
            }
        };
        let mut recorder = Self {
            reader,
            sink: Sink {
                stream: stream.to_owned(),
                dir,
                _lock: lock,
                writer,
                options,
                last_seq: last.map(|l| l.0),
                last_time_ns: last.map_or(0, |l| l.1),
                epoch,
                counts: RecorderCounts::default(),
                last_sync: std::time::Instant::now(),
            },
        };
        // where the ring starts now, past what was archived: a gap, said exactly
        if let (Some(done), Some(next)) = (recorder.sink.last_seq, recorder.reader.next_seq())
            && next.0 > done + 1
        {
            recorder.sink.gap(done + 1, next.0)?;
            recorder.sink.flush()?;
        }
        Ok(recorder)
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.sink.stream
    }

    /// What it has done.
    pub fn counts(&self) -> RecorderCounts {
        self.sink.counts
    }

    /// The last sequence archived.
    pub fn last_seq(&self) -> Option<u64> {
        self.sink.last_seq
    }

    /// True when it has read everything the ring holds now.
    pub fn caught_up(&self) -> bool {
        self.reader.caught_up()
    }

    /// Its status as `key value` lines (`<shm dir>/<stream>.archive`, shown by mdstat
    /// and exported as `mdi_archive_*` metrics): counts, the last sequence archived and
    /// how far behind the ring it is.
    pub fn status_lines(&self) -> Vec<(String, String)> {
        let c = self.sink.counts;
        let ring_next = self.reader.tail().1.0;
        let archived_next = self.sink.last_seq.map_or(0, |s| s + 1);
        vec![
            ("archive".into(), self.sink.dir.display().to_string()),
            ("records".into(), c.records.to_string()),
            ("gaps".into(), c.gaps.to_string()),
            ("lost_records".into(), c.lost.to_string()),
            ("segments".into(), c.segments.to_string()),
            (
                "last_seq".into(),
                self.sink.last_seq.map_or(-1, |s| s as i64).to_string(),
            ),
            (
                "lag_records".into(),
                ring_next.saturating_sub(archived_next).to_string(),
            ),
            ("lag_bytes".into(), self.reader.backlog().to_string()),
        ]
    }

    /// The ring position it has read up to.
    pub fn position(&self) -> u64 {
        self.reader.position().0
    }

    /// Bytes the ring holds that the recorder has not read (its lag).
    pub fn backlog(&self) -> u64 {
        self.reader.backlog()
    }

    /// Archives what the ring holds now (at most `max` records and markers); returns how
    /// many. When it has caught up with the ring, every record archived is written
    /// (readers of the archive see it); before, up to a few chunks may still be on
    /// their way. An error stops the recorder: what was archived before it stays (a full disk:
    /// the last segment was sealed before a new one was refused).
    pub fn poll(&mut self, max: usize) -> Result<usize, RecordError> {
        let sink = &mut self.sink;
        let mut failed = None;
        let n = self
            .reader
            .poll(max, |event| {
                if failed.is_none()
                    && let Err(e) = sink.event(event)
                {
                    failed = Some(e);
                }
            })
            .map_err(|e| RecordError::Read {
                stream: sink.stream.clone(),
                detail: e.to_string(),
            })?;
        if let Some(e) = failed {
            // what was appended before the failure is kept
            let _ = sink.flush();
            return Err(e);
        }
        if n > 0 {
            // a part-filled chunk is written when the ring has nothing more for now:
            // while there is a backlog, chunks fill up (and the write-behind thread
            // writes them while the next fills)
            if self.reader.caught_up() {
                sink.flush()?;
            }
            let due = match sink.options.fsync {
                Fsync::None => false,
                Fsync::Batch => true,
                Fsync::Periodic(ms) => {
                    sink.last_sync.elapsed() >= std::time::Duration::from_millis(ms)
                }
            };
            if due {
                sink.sync()?;
            }
        }
        Ok(n)
    }

    /// Writes what is buffered and syncs it (a clean stop; the segment stays active).
    pub fn close(mut self) -> Result<RecorderCounts, RecordError> {
        self.sink.flush()?;
        self.sink.sync()?;
        Ok(self.sink.counts)
    }
}

impl Sink {
    fn event(&mut self, event: ReadEvent<'_>) -> Result<(), RecordError> {
        match event {
            ReadEvent::Record(r) => {
                let words = r.body.len() / 8;
                let word = |i: usize| {
                    u64::from_le_bytes(r.body[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
                };
                // records without a time of their own take the last one (times stay
                // monotone: the index by time is a binary search)
                let time = publish_time_of(r.kind, words, word)
                    .unwrap_or(self.last_time_ns)
                    .max(self.last_time_ns);
                let record = ArchiveRecord {
                    kind: r.kind.0,
                    seq: r.seq.0,
                    publish_ns: time,
                    body: r.body,
                };
                // the common case inline: the record fits in the chunk being filled
                if self
                    .writer
                    .as_mut()
                    .is_some_and(|w| w.append_to_chunk(&record))
                {
                    self.appended(&record);
                } else {
                    self.append(&record)?;
                }
                self.counts.records += 1;
            }
            ReadEvent::Lost { from_seq, to_seq } => self.gap(from_seq.0, to_seq.0)?,
            ReadEvent::EpochStarted {
                epoch,
                previous_epoch,
                writer_pid,
                seq,
            } => {
                self.epoch = epoch;
                let mut body = [0u8; 24];
                body[..8].copy_from_slice(&epoch.to_le_bytes());
                body[8..16].copy_from_slice(&previous_epoch.to_le_bytes());
                body[16..].copy_from_slice(&u64::from(writer_pid).to_le_bytes());
                self.append(&ArchiveRecord {
                    kind: RecordKind::EPOCH_START.0,
                    seq: seq.0,
                    publish_ns: self.last_time_ns,
                    body: &body,
                })?;
                self.counts.records += 1;
            }
        }
        Ok(())
    }

    fn gap(&mut self, from: u64, to: u64) -> Result<(), RecordError> {
        let mut scratch = [0u8; 8];
        let marker = ArchiveRecord::gap(from, to, self.last_time_ns, &mut scratch);
        self.append(&marker)?;
        self.counts.gaps += 1;
        self.counts.lost += to - from;
        Ok(())
    }

    fn append(&mut self, record: &ArchiveRecord<'_>) -> Result<(), RecordError> {
        loop {
            if self.writer.is_none() {
                let path = self.dir.join(format!("{:020}.seg", record.seq));
                let created = SegmentWriter::create(
                    &path,
                    SegmentHeader {
                        stream: self.stream.clone(),
                        epoch: self.epoch,
                        first_seq: record.seq,
                        first_time_ns: record.publish_ns,
                        schema_id: SCHEMA_ID,
                        capacity: self.options.segment_bytes,
                        sealed: false,
                        used: 0,
                    },
                )?;
                self.writer = Some(if self.options.write_behind {
                    created.write_behind()?
                } else {
                    created
                });
                self.counts.segments += 1;
            }
            let writer = self.writer.as_mut().expect("made above");
            if writer.append(record)? {
                break;
            }
            // full: sealed, the next one begun
            self.writer.take().expect("there").seal()?;
        }
        self.appended(record);
        Ok(())
    }

    /// `record` is in the archive now.
    #[inline]
    fn appended(&mut self, record: &ArchiveRecord<'_>) {
        self.last_seq = Some(record.gap_end().map_or(record.seq, |end| end - 1));
        self.last_time_ns = record.publish_ns;
    }

    /// Writes the chunk being filled; when it returns, readers see every record
    /// archived so far (chunks handed to the write-behind thread are written).
    fn flush(&mut self) -> Result<(), RecordError> {
        if let Some(w) = &mut self.writer {
            w.flush()?;
            w.drain()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), RecordError> {
        if let Some(w) = &mut self.writer {
            w.sync()?;
        }
        self.last_sync = std::time::Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::GAP_KIND;

    use crate::testing::*;

    /// Every record and gap marker archived for "ticks", in order: (kind, seq, time, gap end).
    fn archived(f: &Fixture) -> Vec<(u16, u64, i64, Option<u64>)> {
        let mut out = Vec::new();
        for (_, path) in segments(&f.archive.join("ticks")).unwrap() {
            let mut reader = SegmentReader::open(&path).unwrap();
            reader
                .read_chunks(0, |r| {
                    out.push((r.kind, r.seq, r.publish_ns, r.gap_end()));
                    true
                })
                .unwrap();
        }
        out
    }

    /// The trades' sequence numbers, and the gaps, of an archive.
    fn trades_and_gaps(f: &Fixture) -> (Vec<u64>, Vec<(u64, u64)>) {
        let mut trades = Vec::new();
        let mut gaps = Vec::new();
        for (kind, seq, _, end) in archived(f) {
            match kind {
                GAP_KIND => gaps.push((seq, end.unwrap())),
                k if k == RecordKind::TRADE.0 => trades.push(seq),
                _ => {}
            }
        }
        (trades, gaps)
    }

    fn drain(recorder: &mut Recorder) {
        for _ in 0..10_000 {
            if recorder.poll(4096).unwrap() == 0 && recorder.caught_up() {
                return;
            }
        }
        panic!("the recorder did not catch up");
    }

    #[test]
    fn a_restarted_recorder_continues_after_the_last_archived_record() {
        let f = fixture();
        let mut w = writer(&f, 1 << 22);
        let mut seqs = Vec::new();
        for n in 0..3000 {
            seqs.push(w.append_record(&trade(n)).unwrap().0);
        }
        let options = RecorderOptions {
            segment_bytes: 128 << 10,
            fsync: Fsync::Batch,
            ..RecorderOptions::default()
        };
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        drain(&mut r);
        assert_eq!(r.last_seq(), seqs.last().copied());
        drop(r); // no close: as after a kill between polls
        for n in 3000..9000 {
            seqs.push(w.append_record(&trade(n)).unwrap().0);
        }
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        drain(&mut r);
        let counts = r.close().unwrap();
        assert_eq!(counts.gaps, 0);
        let (trades, gaps) = trades_and_gaps(&f);
        assert_eq!(trades, seqs, "each record once, in order");
        assert!(gaps.is_empty());
        // several segments, all but the last sealed, times monotone
        let segs = segments(&f.archive.join("ticks")).unwrap();
        assert!(segs.len() > 3, "{} segments", segs.len());
        for (i, (first, path)) in segs.iter().enumerate() {
            let reader = SegmentReader::open(path).unwrap();
            assert_eq!(reader.header().first_seq, *first);
            assert_eq!(reader.header().sealed, i + 1 < segs.len());
            assert_eq!(reader.header().schema_id, SCHEMA_ID);
        }
        let times: Vec<i64> = archived(&f).iter().map(|a| a.2).collect();
        assert!(times.windows(2).all(|t| t[0] <= t[1]));
        assert_eq!(times.last(), Some(&trade(8999).ts_publish_ns));
    }

    #[test]
    fn a_lapped_recorder_leaves_the_exact_gap() {
        let f = fixture();
        let mut w = writer(&f, 1 << 16);
        let options = RecorderOptions {
            segment_bytes: 1 << 20,
            fsync: Fsync::None,
            ..RecorderOptions::default()
        };
        let mut seqs = Vec::new();
        for n in 0..100 {
            seqs.push(w.append_record(&trade(n)).unwrap().0);
        }
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        drain(&mut r);
        // the ring wraps many times while the recorder reads nothing
        for n in 100..20_000 {
            seqs.push(w.append_record(&trade(n)).unwrap().0);
        }
        drain(&mut r);
        // and again while it is stopped
        drop(r);
        for n in 20_000..40_000 {
            seqs.push(w.append_record(&trade(n)).unwrap().0);
        }
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        drain(&mut r);
        let counts = r.counts();
        let (trades, gaps) = trades_and_gaps(&f);
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        // archived + lost = everything, each once, the gaps exactly what is missing
        let mut covered: Vec<u64> = trades.clone();
        for (from, to) in &gaps {
            covered.extend(*from..*to);
        }
        covered.sort();
        let mut all: Vec<u64> = (seqs[0]..=*seqs.last().unwrap()).collect();
        all.sort();
        assert_eq!(
            covered, all,
            "no record both archived and lost, none missing"
        );
        for (from, to) in &gaps {
            assert!(!trades.iter().any(|s| (*from..*to).contains(s)));
        }
        assert_eq!(counts.lost, gaps[1].1 - gaps[1].0);
        assert_eq!(trades.last(), seqs.last());
    }
    #[test]
    fn a_second_recorder_of_the_same_stream_and_archive_is_refused() {
        let f = fixture();
        let mut w = writer(&f, 1 << 20);
        w.append_record(&trade(0)).unwrap();
        let options = RecorderOptions::default();
        let first = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        let second = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap_err();
        let said = second.to_string();
        assert!(
            matches!(second, RecordError::Busy { .. })
                && said.contains(&format!("pid {}", std::process::id()))
                && said.contains("\"ticks\""),
            "{said}"
        );
        // released with the first
        drop(first);
        Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
    }

    #[test]
    fn a_segment_whose_creation_was_cut_short_is_made_again() {
        // killed while preallocating a segment: only its staging file is there, without
        // a header (before, the segment itself was, and a restart refused it: bad magic)
        let f = fixture();
        let mut w = writer(&f, 1 << 20);
        let mut seqs = Vec::new();
        for n in 0..100 {
            seqs.push(w.append_record(&trade(n)).unwrap().0);
        }
        let dir = f.archive.join("ticks");
        std::fs::create_dir_all(&dir).unwrap();
        let staging = dir.join("00000000000000000007.seg.creating");
        std::fs::write(&staging, vec![0u8; 4096]).unwrap();
        let options = RecorderOptions {
            segment_bytes: 1 << 20,
            ..RecorderOptions::default()
        };
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        drain(&mut r);
        r.close().unwrap();
        assert!(!staging.exists());
        let (trades, gaps) = trades_and_gaps(&f);
        assert_eq!(trades, seqs);
        assert!(gaps.is_empty());
    }
}
