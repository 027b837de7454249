//! The ring log: a one-writer, many-reader log of records in shared memory.
//!
//! A ring is a file `<shm dir>/<name>.ring` (header page, power-of-two data region,
//! sparse index) plus `<name>.readers` (the futex readers sleep on). The writer never
//! waits for readers; a reader that falls a whole ring behind is told exactly which
//! sequence numbers it lost and carries on. Positions are byte offsets that never wrap
//! (for the life of the file, across writer restarts); sequence numbers count records.
//!
//! ```
//! use mdi_protocol::records::RecordKind;
//! use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let shm = ShmDir::new(dir.path());
//! let mut writer = RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 16)).unwrap();
//! writer.append(RecordKind::APPLICATION_FIRST, b"hello").unwrap();
//!
//! let mut reader = RingReader::open(&shm, "ticks", StartAt::Earliest).unwrap();
//! let mut bodies = Vec::new();
//! reader.poll(16, |event| {
//!     if let ReadEvent::Record(record) = event {
//!         bodies.push(record.body[..5].to_vec());
//!     }
//! }).unwrap();
//! assert_eq!(bodies, vec![b"hello".to_vec()]);
//! ```

pub(crate) mod log;
mod sync;
mod units;

#[cfg(not(loom))]
mod file;
#[cfg(not(loom))]
mod layout;
#[cfg(not(loom))]
mod mapping;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
pub mod registry;
#[cfg(not(loom))]
mod writer;

#[cfg(not(loom))]
pub use file::{FileProblem, RingFileError, RingInfo, ShmDir, inspect};
#[cfg(not(loom))]
pub use layout::{HEADER_LEN, MAX_NAME_LEN, RING_MAGIC, RING_VERSION};
pub use log::{
    AppendError, CorruptRecord, RECORD_ALIGN, RECORD_HEADER_LEN, RawRead, RecordHeader,
    align_record,
};
#[cfg(not(loom))]
pub use mapping::prefetch;
#[cfg(not(loom))]
pub use reader::{
    ReadEvent, ReaderOpenError, RingReader, RingRecord, StartAt, WaitError, WaitStrategy,
    WriterState, WriterStatus,
};
#[cfg(not(loom))]
pub use registry::{ReaderSlot, RegisterError, Registration, registered_readers};
pub use units::{Position, Seq};
#[cfg(not(loom))]
pub use writer::{
    RecordBatch, ReplicaWriter, RingOptions, RingWriter, WriteError, WriterCreateError,
};

/// Default data-region size: 64 MiB, about a day of a busy symbol's trades and quotes.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// Smallest data region accepted.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest data region accepted (64 GiB).
pub const MAX_CAPACITY: u64 = 64 << 30;
/// Default shared-memory directory.
pub const DEFAULT_SHM_DIR: &str = "/dev/shm/mdi";
/// Environment variable that overrides the shared-memory directory.
pub const SHM_DIR_ENV: &str = "MDI_SHM_DIR";

#[cfg(all(test, loom))]
mod loom_tests;
