//! Reader registration: a reader may publish where it is — position, sequence, losses,
//! a heartbeat — in the ring's readers file, so that operators (`mdstat`) see slow and
//! stuck consumers. Optional per reader; the ring itself is never touched (readers map it
//! read-only), and the writer never looks: a registered reader cannot slow it down.
//!
//! Layout (`docs/formats/ring-log.md`): 56 slots of 64 bytes from offset 512 of the
//! readers file, each eight little-endian u64 words: owner pid (0 = free), position,
//! next sequence, records lost, heartbeat (ns since the Unix epoch), then 24 bytes of
//! name (UTF-8, zero-padded). A slot is claimed by compare-and-swap of the owner word
//! (0 → pid, or a dead pid → pid) and freed on drop.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;

use super::file::{RingFileError, ShmDir, map_readers_file};
use super::mapping::Mapping;
use super::units::{Position, Seq};
use crate::time::WallNs;

/// First byte of the slots in the readers file.
pub const SLOTS_OFFSET: usize = 512;
/// Bytes per slot.
pub const SLOT_LEN: usize = 64;
/// Slots in a readers file.
pub const SLOTS: usize = (super::layout::READERS_FILE_LEN as usize - SLOTS_OFFSET) / SLOT_LEN;
/// Longest reader name kept (bytes).
pub const NAME_LEN: usize = 24;

const OWNER: usize = 0;
const POSITION: usize = 8;
const NEXT_SEQ: usize = 16;
const LOST: usize = 24;
const HEARTBEAT: usize = 32;
const NAME: usize = 40;

/// Registering failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The readers file could not be opened for writing (permissions: it is 0660).
    #[error(transparent)]
    File(#[from] RingFileError),
    /// Every slot is taken by a live reader.
    #[error("all {SLOTS} reader slots of stream {0:?} are taken by live readers")]
    Full(String),
}

/// What a registered reader last published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderSlot {
    /// Slot index.
    pub slot: usize,
    /// The reader's process id.
    pub pid: u32,
    /// That process exists.
    pub alive: bool,
    /// The name it registered with.
    pub name: String,
    /// Its stream position.
    pub position: u64,
    /// The sequence number it expects next.
    pub next_seq: u64,
    /// Records it lost (lapped), in total.
    pub lost: u64,
    /// Its last heartbeat (ns since the Unix epoch).
    pub heartbeat_ns: i64,
}

/// A reader's slot; freed on drop.
#[derive(Debug)]
pub struct Registration {
    map: Mapping,
    offset: usize,
    pid: u64,
}

/// Whether a process with this pid exists (for registered readers, UDP status files).
pub fn process_alive(pid: u32) -> bool {
    super::mapping::process_exists(pid)
}

fn word(map: &Mapping, offset: usize) -> &std::sync::atomic::AtomicU64 {
    map.u64_at(offset)
}

impl Registration {
    /// Claims a slot in `stream`'s readers file under `name`.
    pub fn claim(
        dir: &ShmDir,
        stream: &str,
        name: &str,
        now: impl Into<WallNs>,
    ) -> Result<Self, RegisterError> {
        let now = now.into();
        let path = dir.readers_path(stream);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| RingFileError::io(&path, e))?;
        let map = map_readers_file(&path, &file, true)?;
        let pid = u64::from(std::process::id());
        for slot in 0..SLOTS {
            let offset = SLOTS_OFFSET + slot * SLOT_LEN;
            let owner = word(&map, offset + OWNER);
            let current = owner.load(Ordering::Acquire);
            let free = current == 0 || !process_alive(u32::try_from(current).unwrap_or(0));
            if free
                && owner
                    .compare_exchange(current, pid, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                let mut bytes = [0u8; NAME_LEN];
                let take = name.len().min(NAME_LEN);
                bytes[..take].copy_from_slice(&name.as_bytes()[..take]);
                for (i, chunk) in bytes.chunks_exact(8).enumerate() {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(chunk);
                    word(&map, offset + NAME + i * 8)
                        .store(u64::from_le_bytes(w), Ordering::Relaxed);
                }
                let registration = Self { map, offset, pid };
                registration.publish(Position(0), Seq(0), 0, now);
                return Ok(registration);
            }
        }
        Err(RegisterError::Full(stream.to_owned()))
    }

    /// Publishes the reader's progress (a few relaxed stores; cheap enough for every
    /// poll).
    #[inline]
    pub fn publish(&self, position: Position, next_seq: Seq, lost: u64, now: impl Into<WallNs>) {
        let (position, next_seq, now_ns) = (position.get(), next_seq.get(), now.into().get());
        word(&self.map, self.offset + POSITION).store(position, Ordering::Relaxed);
        word(&self.map, self.offset + NEXT_SEQ).store(next_seq, Ordering::Relaxed);
        word(&self.map, self.offset + LOST).store(lost, Ordering::Relaxed);
        word(&self.map, self.offset + HEARTBEAT).store(now_ns.cast_unsigned(), Ordering::Release);
    }

    /// The slot index.
    pub fn slot(&self) -> usize {
        (self.offset - SLOTS_OFFSET) / SLOT_LEN
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = word(&self.map, self.offset + OWNER).compare_exchange(
            self.pid,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// The readers registered on `stream` (slots of dead processes included, marked).
pub fn registered_readers(dir: &ShmDir, stream: &str) -> Result<Vec<ReaderSlot>, RingFileError> {
    let path = dir.readers_path(stream);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| RingFileError::io(&path, e))?;
    let map = map_readers_file(&path, &file, false)?;
    let mut out = Vec::new();
    for slot in 0..SLOTS {
        let offset = SLOTS_OFFSET + slot * SLOT_LEN;
        let owner = word(&map, offset + OWNER).load(Ordering::Acquire);
        if owner == 0 {
            continue;
        }
        let pid = u32::try_from(owner).unwrap_or(0);
        let mut name = Vec::with_capacity(NAME_LEN);
        for i in 0..NAME_LEN / 8 {
            name.extend_from_slice(
                &word(&map, offset + NAME + i * 8)
                    .load(Ordering::Relaxed)
                    .to_le_bytes(),
            );
        }
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(ReaderSlot {
            slot,
            pid,
            alive: process_alive(pid),
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
            position: word(&map, offset + POSITION).load(Ordering::Relaxed),
            next_seq: word(&map, offset + NEXT_SEQ).load(Ordering::Relaxed),
            lost: word(&map, offset + LOST).load(Ordering::Relaxed),
            heartbeat_ns: word(&map, offset + HEARTBEAT)
                .load(Ordering::Acquire)
                .cast_signed(),
        });
    }
    Ok(out)
}
