//! # mdi-archive
//!
//! The tick archive's segment files (ADR 0017): preallocated files of checksummed
//! chunks of ring records, written with positioned writes, crash-safe — at open, the
//! valid prefix is found and appending resumes after it — and found by sequence or time
//! through their chunk headers. Lean on purpose: the SDK and `mdtail` can read
//! segments without Arrow or Parquet (those live in the exporter).

pub mod reader;
pub mod recorder;
pub mod retention;
pub mod segment;
#[cfg(test)]
mod testing;
pub mod verify;

pub use reader::{ArchiveReadError, ArchiveReader, ArchiveStart};
pub use recorder::{Fsync, RecordError, Recorder, RecorderCounts, RecorderOptions, segments};
pub use retention::{Keep, apply_retention};
pub use segment::{
    ArchiveError, ArchiveRecord, CHUNK_HEADER, GAP_KIND, HEADER_LEN, Recovered, SegmentCheck,
    SegmentHeader, SegmentReader, SegmentWriter, WRITEBACK_STRETCH, check_segment, start_writeback,
};
pub use verify::{StreamReport, archived_streams, verify_stream};
