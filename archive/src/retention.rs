//! Retention: whole sealed segments are deleted, oldest first, when they are older than
//! the age kept or the stream's archive is larger than the size kept. The active
//! segment and anything unsealed are never touched.

use std::path::{Path, PathBuf};

use crate::recorder::segments;
use crate::segment::{ArchiveError, SegmentReader};

/// What to keep of each stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    /// Segments whose last record is older than this (ns) are deleted.
    pub max_age_ns: Option<i64>,
    /// The oldest segments are deleted while the stream's segments take more bytes.
    pub max_bytes: Option<u64>,
}

/// Applies `keep` to `archive/<stream>/` at `now_ns`; returns the segments deleted.
pub fn apply_retention(
    archive: &Path,
    stream: &str,
    keep: Keep,
    now_ns: i64,
) -> Result<Vec<PathBuf>, ArchiveError> {
    let dir = archive.join(stream);
    let list = segments(&dir)?;
    let mut sizes = Vec::with_capacity(list.len());
    for (_, path) in &list {
        sizes.push(std::fs::metadata(path).map_or(0, |m| m.len()));
    }
    let mut total: u64 = sizes.iter().sum();
    let mut deleted = Vec::new();
    // never the last segment (the active one, or the newest sealed, which a restarted
    // recorder continues after)
    for (i, (_, path)) in list.iter().enumerate().take(list.len().saturating_sub(1)) {
        let reader = SegmentReader::open(path)?;
        if !reader.header().sealed {
            break;
        }
        let last_time = reader.chunks().last().map_or(i64::MIN, |c| c.last_time_ns);
        let too_old = keep
            .max_age_ns
            .is_some_and(|age| last_time < now_ns.saturating_sub(age));
        let too_big = keep.max_bytes.is_some_and(|max| total > max);
        if !too_old && !too_big {
            break;
        }
        std::fs::remove_file(path).map_err(|source| ArchiveError::Io {
            path: path.clone(),
            source,
        })?;
        total -= sizes[i];
        deleted.push(path.clone());
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{Fsync, Recorder, RecorderOptions};
    use crate::testing::*;
    use crate::{ArchiveReader, ArchiveStart};

    #[test]
    fn whole_sealed_segments_go_oldest_first_and_the_rest_still_reads() {
        let f = fixture();
        let mut w = writer(&f, 1 << 22);
        for n in 0..8000 {
            w.append_record(&trade(n)).unwrap();
        }
        let options = RecorderOptions {
            segment_bytes: 96 << 10,
            fsync: Fsync::None,
            ..RecorderOptions::default()
        };
        let mut r = Recorder::open(&f.shm, "ticks", &f.archive, options).unwrap();
        while r.poll(10_000).unwrap() > 0 {}
        let dir = f.archive.join("ticks");
        let before = segments(&dir).unwrap();
        assert!(before.len() >= 5);
        // by size: keep about three segments' worth
        let keep = Keep {
            max_age_ns: None,
            max_bytes: Some(3 * (96 << 10)),
        };
        let deleted = apply_retention(&f.archive, "ticks", keep, 0).unwrap();
        let after = segments(&dir).unwrap();
        assert_eq!(deleted.len() + after.len(), before.len());
        assert_eq!(after.len(), 3);
        assert_eq!(after[..], before[before.len() - 3..]);
        // by age: records are 1 us apart from t = 1 ms; keeping 1 us keeps only the last
        let keep = Keep {
            max_age_ns: Some(1_000),
            max_bytes: None,
        };
        apply_retention(&f.archive, "ticks", keep, trade(7999).ts_publish_ns).unwrap();
        assert_eq!(segments(&dir).unwrap()[..], before[before.len() - 1..]);
        // what is left reads from its start, and the recorder goes on after it
        let mut reader = ArchiveReader::open(&f.archive, "ticks", ArchiveStart::Earliest).unwrap();
        let mut last = 0;
        while reader
            .poll(|rec| {
                last = rec.seq;
                true
            })
            .unwrap()
            > 0
        {}
        assert_eq!(Some(last), r.last_seq());
        w.append_record(&trade(8000)).unwrap();
        assert_eq!(r.poll(10).unwrap(), 1);
    }
}
