//! `mdarchive verify`: every segment of a stream read whole — headers, chunk checksums,
//! record framing, footers — and the sequence checked across segments: each record once,
//! in order, every missing range covered by a gap marker, times monotone.

use std::path::Path;

use crate::recorder::segments;
use crate::segment::{ArchiveError, SegmentReader, check_segment};

/// What verifying one stream's archive found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// The stream.
    pub stream: String,
    /// Segments, and how many are sealed.
    pub segments: usize,
    /// Sealed segments.
    pub sealed: usize,
    /// Records (not counting gap markers).
    pub records: u64,
    /// The first and last sequence archived.
    pub first_seq: Option<u64>,
    /// The last sequence archived (a trailing gap's last).
    pub last_seq: Option<u64>,
    /// The first and last publish time.
    pub first_time_ns: Option<i64>,
    /// The last publish time.
    pub last_time_ns: Option<i64>,
    /// Ranges `from..to` the archive says it does not have (gap markers).
    pub gaps: Vec<(u64, u64)>,
    /// Bytes on disk.
    pub bytes: u64,
    /// Notes that do not make the archive unsound (a torn tail the recorder will cut).
    pub notes: Vec<String>,
    /// What is wrong: the archive is unsound when this is not empty.
    pub problems: Vec<String>,
}

impl StreamReport {
    /// Sound: nothing wrong (gaps are said, not wrong).
    pub fn sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies `archive/<stream>/`.
pub fn verify_stream(archive: &Path, stream: &str) -> Result<StreamReport, ArchiveError> {
    let dir = archive.join(stream);
    let mut report = StreamReport {
        stream: stream.to_owned(),
        ..StreamReport::default()
    };
    let list = segments(&dir)?;
    report.segments = list.len();
    let mut expected: Option<u64> = None;
    let mut last_time = i64::MIN;
    for (i, (first, path)) in list.iter().enumerate() {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        report.bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let check = match check_segment(path) {
            Ok(check) => check,
            Err(e) => {
                report.problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let h = &check.header;
        if h.stream != stream {
            report
                .problems
                .push(format!("{name}: belongs to stream {:?}", h.stream));
        }
        if h.first_seq != *first {
            report.problems.push(format!(
                "{name}: its header begins at sequence {}",
                h.first_seq
            ));
        }
        if h.schema_id != crate::recorder::SCHEMA_ID {
            report.problems.push(format!(
                "{name}: records of schema {:#018x}, not mdi's {:#018x}",
                h.schema_id,
                crate::recorder::SCHEMA_ID
            ));
        }
        if h.sealed {
            report.sealed += 1;
            if check.end != h.used {
                report.problems.push(format!(
                    "{name}: sealed with {} bytes used, but its whole chunks end at byte {}",
                    h.used, check.end
                ));
            }
            if check.footer_ok != Some(true) {
                report.problems.push(format!(
                    "{name}: sealed, but its footer index does not match its chunks"
                ));
            }
        } else if i + 1 < list.len() {
            report
                .problems
                .push(format!("{name}: not sealed, yet a later segment follows"));
        }
        if check.torn_bytes > 0 {
            let note = format!(
                "{name}: {} bytes after the last whole chunk (a write cut short; the recorder cuts them when it reopens the segment)",
                check.torn_bytes
            );
            if h.sealed {
                report.problems.push(note);
            } else {
                report.notes.push(note);
            }
        }
        let mut problems = Vec::new();
        let mut reader = match SegmentReader::open(path) {
            Ok(reader) => reader,
            Err(e) => {
                report.problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut records = 0u64;
        let mut gaps = Vec::new();
        let read = reader.read_chunks(0, |r| {
            let end = r.gap_end().unwrap_or(r.seq + 1);
            if let Some(want) = expected
                && r.seq != want
                && problems.len() < 10
            {
                problems.push(if r.seq < want {
                    format!("{name}: sequence {} again (expected {want})", r.seq)
                } else {
                    format!(
                        "{name}: sequences {want}..{} missing without a gap marker",
                        r.seq
                    )
                });
            }
            if r.publish_ns < last_time && problems.len() < 10 {
                problems.push(format!("{name}: time goes back at sequence {}", r.seq));
            }
            if end <= r.seq && problems.len() < 10 {
                problems.push(format!("{name}: an empty gap marker at {}", r.seq));
            }
            if r.gap_end().is_some() {
                gaps.push((r.seq, end));
            } else {
                records += 1;
            }
            last_time = last_time.max(r.publish_ns);
            report.first_seq.get_or_insert(r.seq);
            report.first_time_ns.get_or_insert(r.publish_ns);
            report.last_seq = Some(end - 1);
            report.last_time_ns = Some(r.publish_ns);
            expected = Some(end);
            true
        });
        if let Err(e) = read {
            problems.push(format!("{name}: {e}"));
        }
        report.records += records;
        report.gaps.extend(gaps);
        report.problems.extend(problems);
    }
    Ok(report)
}

/// The streams archived in `archive` (its subdirectories holding segments).
pub fn archived_streams(archive: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(archive)? {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{Fsync, Recorder, RecorderOptions};
    use crate::testing::*;

    #[test]
    fn a_sound_archive_passes_and_damage_is_named() {
        let f = fixture();
        let mut w = writer(&f, 1 << 16);
        let options = RecorderOptions {
            segment_bytes: 96 << 10,
            fsync: Fsync::None,
            ..RecorderOptions::default()
        };
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        for n in 0..3000 {
            w.append_record(&trade(n)).unwrap();
            if n % 7 == 0 {
                r.poll(10_000).unwrap();
            }
        }
        for n in 3000..6000 {
            w.append_record(&trade(n)).unwrap(); // laps the recorder
        }
        while r.poll(10_000).unwrap() > 0 {}
        let counts = r.close().unwrap();
        let report = verify_stream(&f.archive, "ticks").unwrap();
        assert!(report.sound(), "{report:?}");
        assert_eq!(report.records, counts.records);
        assert_eq!(report.gaps.len() as u64, counts.gaps);
        assert_eq!(
            report.gaps.iter().map(|g| g.1 - g.0).sum::<u64>(),
            counts.lost
        );
        assert!(counts.lost > 0);
        assert!(report.sealed >= 2 && report.sealed + 1 == report.segments);
        assert_eq!(archived_streams(&f.archive).unwrap(), ["ticks"]);

        // one flipped byte in a sealed segment's chunk: named, unsound
        let segs = segments(&f.archive.join("ticks")).unwrap();
        let mut bytes = std::fs::read(&segs[0].1).unwrap();
        bytes[crate::HEADER_LEN as usize + crate::CHUNK_HEADER + 40] ^= 0x10;
        std::fs::write(&segs[0].1, &bytes).unwrap();
        let report = verify_stream(&f.archive, "ticks").unwrap();
        assert!(!report.sound());
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("whole chunks end at byte")),
            "{:?}",
            report.problems
        );
    }
}
