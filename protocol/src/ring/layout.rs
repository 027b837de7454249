//! Byte layout of the ring file and the readers file (see `docs/formats/ring-log.md`).
//!
//! ```text
//! ring file <name>.ring
//! 0     +---------------------------------------------------------------+
//!       | Descriptor (256 B, immutable once the file is published)      |
//! 256   | Writer block: pid u32, flags u32, epoch u64, heartbeat_ns i64,|
//!       |   epoch_start_position u64, epoch_start_seq u64, started_ns   |
//! 384   | Positions (own cache lines): claim, commit, next_seq,         |
//!       |   index_next (u64 each)                                       |
//! 512   | reserved, zero                                                |
//! 4096  +---------------------------------------------------------------+
//!       | data region: `capacity` bytes (power of two), 8-byte aligned  |
//!       | records                                                       |
//!       +---------------------------------------------------------------+
//!       | sparse index: `index_slots` × 32 B (tag, position, seq, time) |
//!       +---------------------------------------------------------------+
//! ```

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First bytes of every ring file.
pub const RING_MAGIC: [u8; 8] = *b"MDIRING\0";
/// Ring layout version this build reads and writes. 2: index entries carry the indexed
/// record's publish time (a start by time is a binary search); 1 left that word spare.
/// A ring of another version is refused with both versions named (ADR 0008).
pub const RING_VERSION: u32 = 2;
/// Bytes before the data region.
pub const HEADER_LEN: u64 = 4096;
/// Longest stream name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Offset of the writer block.
pub(crate) const WRITER_BLOCK: usize = 256;
pub(crate) const WRITER_PID: usize = WRITER_BLOCK;
pub(crate) const WRITER_FLAGS: usize = WRITER_BLOCK + 4;
pub(crate) const WRITER_EPOCH: usize = WRITER_BLOCK + 8;
pub(crate) const WRITER_HEARTBEAT: usize = WRITER_BLOCK + 16;
pub(crate) const WRITER_EPOCH_START_POSITION: usize = WRITER_BLOCK + 24;
pub(crate) const WRITER_EPOCH_START_SEQ: usize = WRITER_BLOCK + 32;
pub(crate) const WRITER_STARTED: usize = WRITER_BLOCK + 40;
/// Offset of the positions block (its own 128 bytes: no false sharing with the writer block,
/// nor with the neighbouring line the adjacent-line prefetcher pulls in).
pub(crate) const POSITIONS: usize = 384;

/// Writer flag: the writer closed the ring cleanly.
pub(crate) const FLAG_CLOSED: u32 = 1;
/// Writer flag: the file was replaced by a new ring of the same name; reopen it.
pub(crate) const FLAG_SUPERSEDED: u32 = 2;

/// The immutable part of the ring header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Descriptor {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_len: u32,
    pub capacity: u64,
    pub index_offset: u64,
    pub index_slots: u64,
    pub stride_shift: u32,
    pub record_align: u32,
    pub max_record_len: u64,
    pub schema_id: u64,
    pub created_ns: i64,
    pub file_len: u64,
    pub name: [u8; 64],
    /// For a replica (written by a UDP receiver): the id of the source ring it copies
    /// (its `created_ns`); 0 for a ring whose writer originates its records.
    pub source_ring_id: u64,
    pub reserved: [u8; 104],
}

const _: () = assert!(size_of::<Descriptor>() == WRITER_BLOCK);
const _: () = assert!(WRITER_STARTED + 8 <= POSITIONS);
const _: () = assert!(POSITIONS.is_multiple_of(128));
const _: () = assert!(POSITIONS + size_of::<super::log::Positions>() <= 512);

impl Descriptor {
    pub fn name(&self) -> &str {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        std::str::from_utf8(&self.name[..end]).unwrap_or("<not utf-8>")
    }
}

/// First bytes of every readers file.
pub const READERS_MAGIC: [u8; 8] = *b"MDIRDRS\0";
/// Readers file layout version.
pub const READERS_VERSION: u32 = 1;
/// Size of the readers file.
pub const READERS_FILE_LEN: u64 = 4096;
/// Count of readers asleep on the futex (AtomicU32), own cache line.
pub(crate) const READERS_SLEEPERS: usize = 128;
/// The futex word the writer bumps to wake sleepers (AtomicU32), own cache line.
pub(crate) const READERS_WAKE: usize = 256;

/// Header of the readers file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ReadersDescriptor {
    pub magic: [u8; 8],
    pub version: u32,
    pub reserved0: u32,
    pub file_len: u64,
    pub reserved: [u8; 104],
}

const _: () = assert!(size_of::<ReadersDescriptor>() == READERS_SLEEPERS);
