//! Reading a stream's archive: from a sequence or a time (binary search over the
//! segments, then over their chunk headers — never a scan), record after record across
//! segments, and on into what the recorder appends while it is read.

use std::path::{Path, PathBuf};

use crate::recorder::segments;
use crate::segment::{ArchiveError, ArchiveRecord, SegmentReader};

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveStart {
    /// The oldest record archived.
    Earliest,
    /// The first record with this sequence number or higher.
    Sequence(u64),
    /// The first record published at or after this time (ns since the Unix epoch).
    Time(i64),
}

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveReadError {
    /// A segment could not be read.
    #[error(transparent)]
    Segment(#[from] ArchiveError),
    /// The stream has no archive.
    #[error("no archive of stream {stream:?} in {}", dir.display())]
    NoArchive {
        /// The stream.
        stream: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
}

/// Reads one stream's archive in sequence order.
#[derive(Debug)]
pub struct ArchiveReader {
    dir: PathBuf,
    stream: String,
    /// The segments by first sequence, as last listed.
    segments: Vec<(u64, PathBuf)>,
    /// The open segment and its index in `segments`.
    current: Option<(usize, SegmentReader)>,
    /// The next chunk to read of the open segment.
    chunk: usize,
    /// Records before this sequence or time are passed over (the start).
    skip_seq: u64,
    skip_time: i64,
    /// The sequence after the last record or gap delivered.
    next_seq: Option<u64>,
    /// Segments opened before (their chunk index read once), by index in `segments`.
    cache: std::collections::HashMap<usize, SegmentReader>,
    /// The segments' first publish times, read once each.
    first_times: Vec<Option<i64>>,
}

/// At most this many segments' indexes are kept open.
const CACHED_SEGMENTS: usize = 64;

impl ArchiveReader {
    /// Opens `archive/<stream>/` at `start`.
    pub fn open(
        archive: &Path,
        stream: &str,
        start: ArchiveStart,
    ) -> Result<Self, ArchiveReadError> {
        let dir = archive.join(stream);
        let list = segments(&dir)?;
        if list.is_empty() {
            return Err(ArchiveReadError::NoArchive {
                stream: stream.to_owned(),
                dir: archive.to_owned(),
            });
        }
        let mut reader = Self {
            dir,
            stream: stream.to_owned(),
            segments: list,
            current: None,
            chunk: 0,
            skip_seq: 0,
            skip_time: i64::MIN,
            next_seq: None,
            cache: std::collections::HashMap::new(),
            first_times: Vec::new(),
        };
        reader.seek(start)?;
        Ok(reader)
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The sequence after the last record (or gap) delivered: where a live ring takes
    /// over. `None` before anything was delivered.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Moves to `start`: binary search over the segments (by name for a sequence, by
    /// their headers' first times for a time), then over the chosen segment's chunks.
    pub fn seek(&mut self, start: ArchiveStart) -> Result<(), ArchiveReadError> {
        self.next_seq = None;
        let (index, skip_seq, skip_time) = match start {
            ArchiveStart::Earliest => (0, 0, i64::MIN),
            ArchiveStart::Sequence(seq) => {
                let i = self.segments.partition_point(|(first, _)| *first <= seq);
                (i.saturating_sub(1), seq, i64::MIN)
            }
            ArchiveStart::Time(t) => {
                // the last segment that begins at or before t (headers read as needed)
                let (mut lo, mut hi) = (0, self.segments.len());
                self.first_times.resize(self.segments.len(), None);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    let first_time = match self.first_times[mid] {
                        Some(t) => t,
                        None => {
                            let t =
                                SegmentReader::open_header(&self.segments[mid].1)?.first_time_ns;
                            self.first_times[mid] = Some(t);
                            t
                        }
                    };
                    if first_time <= t {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                (lo.saturating_sub(1), 0, t)
            }
        };
        self.put_back();
        let mut segment = self.segment(index)?;
        self.chunk = match start {
            ArchiveStart::Earliest => 0,
            ArchiveStart::Sequence(seq) => segment.chunk_for_seq(seq),
            ArchiveStart::Time(t) => segment.chunk_for_time(t),
        };
        segment.refresh()?;
        self.current = Some((index, segment));
        self.skip_seq = skip_seq;
        self.skip_time = skip_time;
        Ok(())
    }

    /// Delivers the records (and gap markers) of the next chunk — `f` returns false to
    /// stop early (the rest of the chunk is read again at the next poll) — and returns
    /// how many it delivered; 0 at the end of what is archived now (poll again to follow
    /// the recorder).
    pub fn poll(
        &mut self,
        mut f: impl FnMut(ArchiveRecord<'_>) -> bool,
    ) -> Result<usize, ArchiveReadError> {
        for _ in 0..4 {
            let Some((index, segment)) = &mut self.current else {
                return Ok(0);
            };
            if self.chunk >= segment.chunks().len() {
                segment.refresh()?;
            }
            if self.chunk < segment.chunks().len() {
                let mut delivered = 0;
                let mut stopped = false;
                let (skip_seq, skip_time) = (self.skip_seq, self.skip_time);
                let mut next_seq = self.next_seq;
                segment.read_chunk(self.chunk, |r| {
                    let end = r.gap_end().unwrap_or(r.seq + 1);
                    if stopped || end <= skip_seq || r.publish_ns < skip_time {
                        return;
                    }
                    if next_seq.is_some_and(|n| end <= n) {
                        return; // delivered before this poll stopped early
                    }
                    if !f(r) {
                        stopped = true;
                        return;
                    }
                    delivered += 1;
                    next_seq = Some(end);
                })?;
                self.next_seq = next_seq;
                if self.chunk >= segment.chunks().len() {
                    // it was the active segment's newest chunk, caught half-written:
                    // dropped from the index, read again when it is whole
                    return Ok(delivered);
                }
                if !stopped {
                    self.chunk += 1;
                    if delivered > 0 {
                        // once past the start, times no longer filter (they are monotone)
                        self.skip_time = i64::MIN;
                    }
                }
                if delivered > 0 || stopped {
                    return Ok(delivered);
                }
                continue;
            }
            // the end of this segment: on to the next, if the recorder began one
            if *index + 1 >= self.segments.len() {
                let list = segments(&self.dir)?;
                if list.len() > self.segments.len() {
                    self.segments = list;
                }
            }
            let next = *index + 1;
            if next >= self.segments.len() {
                return Ok(0);
            }
            // the old one may have had chunks added before its seal
            if segment.refresh()? > 0 {
                continue;
            }
            let segment = match self.segment(next) {
                Ok(segment) => segment,
                // the recorder's newest segment, caught before its header is written
                Err(ArchiveError::Invalid { .. }) if next + 1 == self.segments.len() => {
                    return Ok(0);
                }
                Err(e) => return Err(e.into()),
            };
            self.put_back();
            self.current = Some((next, segment));
            self.chunk = 0;
        }
        Ok(0)
    }

    /// Segment `index`, from the cache (refreshed) or opened.
    fn segment(&mut self, index: usize) -> Result<SegmentReader, ArchiveError> {
        match self.cache.remove(&index) {
            Some(mut segment) => {
                segment.refresh()?;
                Ok(segment)
            }
            None => SegmentReader::open(&self.segments[index].1),
        }
    }

    /// The open segment back into the cache.
    fn put_back(&mut self) {
        if let Some((index, segment)) = self.current.take() {
            if self.cache.len() >= CACHED_SEGMENTS {
                self.cache.clear();
            }
            self.cache.insert(index, segment);
        }
    }

    /// The first and the last sequence archived (a trailing gap counts as archived).
    pub fn bounds(&self) -> Result<Option<(u64, u64)>, ArchiveReadError> {
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else {
            return Ok(None);
        };
        let last = SegmentReader::open(&last.1)?;
        Ok(last.chunks().last().map(|c| (first.0, c.last_seq)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{Fsync, Recorder, RecorderOptions};
    use crate::testing::*;
    use mdi_protocol::records::RecordKind;

    fn read_from(f: &Fixture, start: ArchiveStart, max: usize) -> Vec<(u64, i64)> {
        let mut reader = ArchiveReader::open(&f.archive, "ticks", start).unwrap();
        let mut out = Vec::new();
        while out.len() < max {
            let n = reader
                .poll(|r| {
                    if r.kind == RecordKind::TRADE.0 {
                        out.push((r.seq, r.publish_ns));
                    }
                    true
                })
                .unwrap();
            if n == 0 {
                break;
            }
        }
        out.truncate(max);
        out
    }

    #[test]
    fn reads_from_any_sequence_or_time_across_segments_and_follows_the_recorder() {
        let f = fixture();
        let mut w = writer(&f, 1 << 22);
        let mut all = Vec::new();
        for n in 0..6000 {
            let seq = w.append_record(&trade(n)).unwrap().0;
            all.push((seq, trade(n).ts_publish_ns));
        }
        let options = RecorderOptions {
            segment_bytes: 96 << 10,
            fsync: Fsync::None,
            ..RecorderOptions::default()
        };
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        while r.poll(700).unwrap() > 0 {}
        assert!(crate::segments(&f.archive.join("ticks")).unwrap().len() > 4);
        assert_eq!(read_from(&f, ArchiveStart::Earliest, usize::MAX), all);
        for k in [0usize, 1, 17, 999, 1000, 2500, 4095, 5999] {
            let (seq, time) = all[k];
            assert_eq!(
                read_from(&f, ArchiveStart::Sequence(seq), 50),
                all[k..(k + 50).min(6000)]
            );
            assert_eq!(
                read_from(&f, ArchiveStart::Time(time), 50),
                all[k..(k + 50).min(6000)]
            );
            // a time between two records starts at the later
            if k + 1 < all.len() {
                assert_eq!(
                    read_from(&f, ArchiveStart::Time(time + 1), 1),
                    all[k + 1..k + 2]
                );
            }
        }
        assert!(read_from(&f, ArchiveStart::Sequence(all[5999].0 + 1), 10).is_empty());
        assert_eq!(read_from(&f, ArchiveStart::Time(0), 1), all[..1]);
        // a reader at the end sees what the recorder appends next, in the active segment
        // and in segments begun after it opened
        let mut reader =
            ArchiveReader::open(&f.archive, "ticks", ArchiveStart::Sequence(all[5990].0)).unwrap();
        let mut got = Vec::new();
        let read = |reader: &mut ArchiveReader, got: &mut Vec<u64>| {
            while reader
                .poll(|r| {
                    got.push(r.seq);
                    true
                })
                .unwrap()
                > 0
            {}
        };
        read(&mut reader, &mut got);
        assert_eq!(got.len(), 10);
        for n in 6000..9000 {
            let seq = w.append_record(&trade(n)).unwrap().0;
            all.push((seq, trade(n).ts_publish_ns));
        }
        while r.poll(500).unwrap() > 0 {}
        read(&mut reader, &mut got);
        let want: Vec<u64> = all[5990..].iter().map(|a| a.0).collect();
        assert_eq!(got, want);
        assert_eq!(reader.next_seq(), Some(all.last().unwrap().0 + 1));
    }

    #[test]
    fn a_chunk_caught_half_written_is_read_when_whole_not_skipped() {
        use crate::segment::{SegmentHeader, SegmentWriter};
        let dir = tempfile::tempdir().unwrap();
        let stream_dir = dir.path().join("ticks");
        std::fs::create_dir_all(&stream_dir).unwrap();
        let path = stream_dir.join(format!("{:020}.seg", 1));
        let header = SegmentHeader {
            stream: "ticks".into(),
            epoch: 1,
            first_seq: 1,
            first_time_ns: 1,
            schema_id: crate::recorder::SCHEMA_ID,
            capacity: 1 << 20,
            sealed: false,
            used: 0,
        };
        let mut w = SegmentWriter::create(&path, header).unwrap();
        let body = [7u8; 40];
        let append = |w: &mut SegmentWriter, seqs: std::ops::Range<u64>| {
            for seq in seqs {
                let r = crate::ArchiveRecord {
                    kind: 16,
                    seq,
                    publish_ns: seq as i64,
                    body: &body,
                };
                assert!(w.append(&r).unwrap());
            }
            w.flush().unwrap();
        };
        append(&mut w, 1..101);
        let first = std::fs::read(&path).unwrap();
        append(&mut w, 101..201);
        let whole = std::fs::read(&path).unwrap();
        // the second chunk's header is there, its payload only half
        let end = first.iter().zip(&whole).rposition(|(a, b)| a != b).unwrap() + 1;
        let start = first.iter().zip(&whole).position(|(a, b)| a != b).unwrap();
        let mut half = whole.clone();
        half[start + (end - start) / 2..end]
            .copy_from_slice(&first[start + (end - start) / 2..end]);
        std::fs::write(&path, &half).unwrap();
        let mut reader = ArchiveReader::open(dir.path(), "ticks", ArchiveStart::Earliest).unwrap();
        let mut got = Vec::new();
        let poll = |reader: &mut ArchiveReader, got: &mut Vec<u64>| {
            for _ in 0..10 {
                reader
                    .poll(|r| {
                        got.push(r.seq);
                        true
                    })
                    .unwrap();
            }
        };
        poll(&mut reader, &mut got);
        assert_eq!(got, (1..101).collect::<Vec<_>>());
        std::fs::write(&path, &whole).unwrap();
        poll(&mut reader, &mut got);
        assert_eq!(
            got,
            (1..201).collect::<Vec<_>>(),
            "the chunk read once it is whole"
        );
    }

    #[test]
    fn a_missing_archive_says_so() {
        let f = fixture();
        let err = ArchiveReader::open(&f.archive, "ticks", ArchiveStart::Earliest).unwrap_err();
        assert!(
            err.to_string().contains("no archive of stream \"ticks\""),
            "{err}"
        );
    }
}
