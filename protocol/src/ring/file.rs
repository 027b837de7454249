//! Finding, validating and mapping ring files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zerocopy::FromBytes;

use super::layout::{
    Descriptor, FLAG_CLOSED, FLAG_SUPERSEDED, HEADER_LEN, MAX_NAME_LEN, POSITIONS,
    READERS_FILE_LEN, READERS_MAGIC, READERS_VERSION, RING_MAGIC, RING_VERSION, ReadersDescriptor,
    WRITER_BLOCK, WRITER_EPOCH, WRITER_EPOCH_START_POSITION, WRITER_EPOCH_START_SEQ, WRITER_FLAGS,
    WRITER_HEARTBEAT, WRITER_PID, WRITER_STARTED,
};
use super::log::{Geometry, INDEX_ENTRY_WORDS, LogView, RECORD_ALIGN};
use super::mapping::{self, HeldLock, LogRegions, Mapping};
use super::{DEFAULT_SHM_DIR, MAX_CAPACITY, MIN_CAPACITY, SHM_DIR_ENV};
use std::sync::atomic::Ordering;

/// The directory rings live in: `--shm-dir`, else `$MDI_SHM_DIR`, else `/dev/shm/mdi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmDir {
    path: PathBuf,
}

impl ShmDir {
    /// A specific directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `explicit` if given, else `$MDI_SHM_DIR`, else `/dev/shm/mdi`.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        match explicit {
            Some(path) => Self::new(path),
            None => match std::env::var_os(SHM_DIR_ENV) {
                Some(path) if !path.is_empty() => Self::new(path),
                _ => Self::new(DEFAULT_SHM_DIR),
            },
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/<name>.ring`.
    pub fn ring_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.ring"))
    }

    /// `<dir>/<name>.lock`: the writer lock, a file only its owner can open (ADR 0012).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.lock"))
    }

    /// `<dir>/<name>.readers`.
    pub fn readers_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.readers"))
    }

    /// Names of the streams in the directory (files ending in `.ring`), sorted.
    pub fn streams(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if let Some(stem) = file_name.strip_suffix(".ring")
                && validate_name(stem).is_ok()
            {
                names.push(stem.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Stream names: 1–63 bytes of `[A-Za-z0-9_.-]`, not starting with '.'.
pub(crate) fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("a stream name is 1 to 63 bytes long");
    }
    if name.starts_with('.') {
        return Err("a stream name does not start with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("a stream name has only letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// What is wrong with a ring file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    /// The file does not start with the expected magic: not an mdi file of this kind.
    #[error(
        "not an mdi {what} (magic {found:02x?}, expected {:?})",
        String::from_utf8_lossy(expected)
    )]
    BadMagic {
        /// What the file should have been ("ring log", "readers file").
        what: &'static str,
        /// The first 8 bytes (zero-filled if the file is shorter).
        found: [u8; 8],
        /// The magic expected.
        expected: [u8; 8],
    },
    /// Written by an mdi with another layout version.
    #[error("ring layout version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// Shorter than its header says.
    #[error("truncated: {actual} bytes, the header needs {expected}")]
    Truncated {
        /// Bytes the layout needs.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// A header field is impossible.
    #[error("inconsistent header: {0}")]
    Inconsistent(&'static str),
    /// The header names another stream than the file name.
    #[error("header names stream {in_header:?}, file is named {in_path:?}")]
    NameMismatch {
        /// Name in the header.
        in_header: String,
        /// Name from the path.
        in_path: String,
    },
}

/// Opening or validating a ring file failed.
#[derive(Debug, thiserror::Error)]
pub enum RingFileError {
    /// The file does not exist.
    #[error("{}: no such ring (is the publisher running, and is the shm dir right? --shm-dir / $MDI_SHM_DIR)", path.display())]
    NotFound {
        /// The path looked at.
        path: PathBuf,
    },
    /// The file exists but is not a valid ring.
    #[error("{}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: FileProblem,
    },
    /// The operating system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl RingFileError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::NotFound {
                path: path.to_owned(),
            }
        } else if source.raw_os_error() == Some(libc::ELOOP) {
            Self::Io {
                path: path.to_owned(),
                source: io::Error::new(
                    source.kind(),
                    "a symbolic link: refused (ring files are opened without following links, \
                     so a link cannot point a writer or reader at another file)",
                ),
            }
        } else {
            Self::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// Checks that `file` starts with `magic`; returns its length.
fn check_magic(
    path: &Path,
    file: &File,
    magic: [u8; 8],
    what: &'static str,
) -> Result<u64, RingFileError> {
    let actual = file
        .metadata()
        .map_err(|e| RingFileError::io(path, e))?
        .len();
    let mut found = [0u8; 8];
    let read = file
        .read_at(&mut found, 0)
        .map_err(|e| RingFileError::io(path, e))?;
    if read < found.len() || found != magic {
        return Err(RingFileError::Invalid {
            path: path.to_owned(),
            problem: FileProblem::BadMagic {
                what,
                found,
                expected: magic,
            },
        });
    }
    Ok(actual)
}

/// Validates and maps a readers file (`<name>.readers`).
pub(crate) fn map_readers_file(
    path: &Path,
    file: &File,
    writable: bool,
) -> Result<Mapping, RingFileError> {
    let invalid = |problem| RingFileError::Invalid {
        path: path.to_owned(),
        problem,
    };
    let actual = check_magic(path, file, READERS_MAGIC, "readers file")?;
    let mut head = [0u8; size_of::<ReadersDescriptor>()];
    let read = file
        .read_at(&mut head, 0)
        .map_err(|e| RingFileError::io(path, e))?;
    let descriptor = ReadersDescriptor::read_from_bytes(&head)
        .ok()
        .filter(|_| read == head.len())
        .ok_or_else(|| {
            invalid(FileProblem::Truncated {
                expected: READERS_FILE_LEN,
                actual,
            })
        })?;
    if descriptor.version != READERS_VERSION {
        return Err(invalid(FileProblem::UnsupportedVersion {
            found: descriptor.version,
            supported: READERS_VERSION,
        }));
    }
    if actual < READERS_FILE_LEN || descriptor.file_len != READERS_FILE_LEN {
        return Err(invalid(FileProblem::Truncated {
            expected: READERS_FILE_LEN,
            actual,
        }));
    }
    // every reader can write the readers file, hence truncate it: guarded, so that a
    // truncation costs its mappers their view of it, not their lives (ADR 0012)
    Mapping::map_guarded(file, READERS_FILE_LEN as usize, writable)
        .map_err(|e| RingFileError::io(path, e))
}

/// An open, validated, mapped ring file.
#[derive(Debug)]
pub(crate) struct RingFile {
    pub path: PathBuf,
    pub file: File,
    pub map: Mapping,
    pub descriptor: Descriptor,
    pub geometry: Geometry,
    /// Where the log's parts are in `map`, checked once: a view is taken per record.
    regions: LogRegions,
    /// For a reader: the ring's writer-lock file, if this user may open it (see
    /// [`Self::writer_lock_held`]).
    writer_lock: Option<File>,
}

/// Bytes a ring with this geometry occupies.
pub(crate) fn file_len(geometry: Geometry) -> u64 {
    let index = geometry.index_slots * (INDEX_ENTRY_WORDS as u64) * 8;
    HEADER_LEN + geometry.capacity + index.div_ceil(4096) * 4096
}

impl RingFile {
    /// Opens and validates `path`; `expected_name` is checked against the header.
    pub fn open(
        path: &Path,
        writable: bool,
        populate: bool,
        expected_name: Option<&str>,
    ) -> Result<Self, RingFileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| RingFileError::io(path, e))?;
        Self::from_file(path, file, writable, populate, expected_name)
    }

    pub fn from_file(
        path: &Path,
        file: File,
        writable: bool,
        populate: bool,
        expected_name: Option<&str>,
    ) -> Result<Self, RingFileError> {
        let invalid = |problem| RingFileError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let actual = check_magic(path, &file, RING_MAGIC, "ring log")?;
        if actual < HEADER_LEN {
            return Err(invalid(FileProblem::Truncated {
                expected: HEADER_LEN,
                actual,
            }));
        }
        let header_map = Mapping::map(&file, HEADER_LEN as usize, false, false)
            .map_err(|e| RingFileError::io(path, e))?;
        let mut words = [0u64; WRITER_BLOCK / 8];
        header_map.load_words(0, &mut words);
        drop(header_map);
        let descriptor = Descriptor::read_from_bytes(zerocopy::IntoBytes::as_bytes(&words[..]))
            .map_err(|_| invalid(FileProblem::Inconsistent("descriptor size")))?;
        if descriptor.version != RING_VERSION {
            return Err(invalid(FileProblem::UnsupportedVersion {
                found: descriptor.version,
                supported: RING_VERSION,
            }));
        }
        let capacity = descriptor.capacity;
        if u64::from(descriptor.header_len) != HEADER_LEN {
            return Err(invalid(FileProblem::Inconsistent(
                "header length is not 4096",
            )));
        }
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(invalid(FileProblem::Inconsistent(
                "capacity is not a power of two between 4 KiB and 64 GiB",
            )));
        }
        let geometry = Geometry::for_capacity(capacity);
        if u64::from(descriptor.record_align) != RECORD_ALIGN
            || descriptor.index_slots != geometry.index_slots
            || descriptor.stride_shift != geometry.stride_shift
            || descriptor.max_record_len != geometry.max_record_len
            || descriptor.index_offset != HEADER_LEN + capacity
        {
            return Err(invalid(FileProblem::Inconsistent(
                "index or record geometry does not match the capacity",
            )));
        }
        let expected_len = file_len(geometry);
        if descriptor.file_len != expected_len {
            return Err(invalid(FileProblem::Inconsistent(
                "recorded file length does not match the capacity",
            )));
        }
        if actual < expected_len {
            return Err(invalid(FileProblem::Truncated {
                expected: expected_len,
                actual,
            }));
        }
        if let Some(name) = expected_name
            && descriptor.name() != name
        {
            return Err(invalid(FileProblem::NameMismatch {
                in_header: descriptor.name().to_owned(),
                in_path: name.to_owned(),
            }));
        }
        let len = usize::try_from(expected_len)
            .map_err(|_| invalid(FileProblem::Inconsistent("file too large to map")))?;
        let map =
            Mapping::map(&file, len, writable, populate).map_err(|e| RingFileError::io(path, e))?;
        let regions = map
            .log_regions(
                POSITIONS,
                (
                    HEADER_LEN as usize,
                    usize::try_from(geometry.capacity / 8).unwrap_or(0),
                ),
                (
                    usize::try_from(descriptor.index_offset).unwrap_or(0),
                    usize::try_from(geometry.index_slots).unwrap_or(0) * INDEX_ENTRY_WORDS,
                ),
            )
            .ok_or_else(|| invalid(FileProblem::Inconsistent("log regions outside the file")))?;
        // a reader looks at the writer lock through the lock file where it may open it
        // (only the writer's user can); a writer holds its own
        let writer_lock = (!writable)
            .then(|| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(path.with_extension("lock"))
                    .ok()
            })
            .flatten();
        Ok(Self {
            path: path.to_owned(),
            file,
            map,
            descriptor,
            geometry,
            regions,
            writer_lock,
        })
    }

    #[inline]
    pub fn view(&self) -> LogView<'_> {
        let (positions, data, index) = self.map.log_parts(&self.regions);
        LogView::new(positions, data, index, self.geometry)
    }

    pub fn writer_pid(&self) -> u32 {
        self.map.u32_at(WRITER_PID).load(Ordering::Acquire)
    }

    pub fn writer_flags(&self) -> u32 {
        self.map.u32_at(WRITER_FLAGS).load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> u64 {
        self.map.u64_at(WRITER_EPOCH).load(Ordering::Acquire)
    }

    pub fn heartbeat_ns(&self) -> i64 {
        // Stored as the bits of an i64.
        self.map
            .u64_at(WRITER_HEARTBEAT)
            .load(Ordering::Acquire)
            .cast_signed()
    }

    pub fn epoch_start(&self) -> (u64, u64) {
        (
            self.map
                .u64_at(WRITER_EPOCH_START_POSITION)
                .load(Ordering::Acquire),
            self.map
                .u64_at(WRITER_EPOCH_START_SEQ)
                .load(Ordering::Acquire),
        )
    }

    pub fn writer_started_ns(&self) -> i64 {
        self.map
            .u64_at(WRITER_STARTED)
            .load(Ordering::Acquire)
            .cast_signed()
    }

    /// Whether a live process holds the writer lock (ADR 0012): the lock file's write
    /// lock where this user can open that file; else the ring file's, which the writer
    /// also takes when it can — if a reader's read lock keeps it from that, the recorded
    /// writer process's existence decides.
    pub fn writer_lock_held(&self) -> io::Result<bool> {
        if let Some(lock) = &self.writer_lock {
            return Ok(mapping::held_lock(lock)? == HeldLock::Write);
        }
        Ok(match mapping::held_lock(&self.file)? {
            HeldLock::Write => true,
            HeldLock::Read => mapping::process_exists(self.writer_pid()),
            HeldLock::None => false,
        })
    }

    pub fn info(&self) -> RingInfo {
        let p = self.view().positions;
        let (epoch_start_position, epoch_start_seq) = self.epoch_start();
        let flags = self.writer_flags();
        RingInfo {
            path: self.path.clone(),
            name: self.descriptor.name().to_owned(),
            capacity: self.geometry.capacity,
            max_record_len: self.geometry.max_record_len,
            schema_id: self.descriptor.schema_id,
            created_ns: self.descriptor.created_ns,
            source_ring_id: self.descriptor.source_ring_id,
            writer_pid: self.writer_pid(),
            writer_alive: self.writer_lock_held().unwrap_or(false),
            closed_cleanly: flags & FLAG_CLOSED != 0,
            superseded: flags & FLAG_SUPERSEDED != 0,
            epoch: self.epoch(),
            epoch_start_position,
            epoch_start_seq,
            writer_started_ns: self.writer_started_ns(),
            heartbeat_ns: self.heartbeat_ns(),
            claim: p.claim.load(Ordering::Acquire),
            commit: p.commit.load(Ordering::Acquire),
            next_seq: p.next_seq.load(Ordering::Acquire),
        }
    }
}

/// A snapshot of a ring's header, for tools like `mdstat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingInfo {
    /// The file.
    pub path: PathBuf,
    /// Stream name.
    pub name: String,
    /// Data region bytes.
    pub capacity: u64,
    /// Largest record accepted.
    pub max_record_len: u64,
    /// Schema id of the records.
    pub schema_id: u64,
    /// When the file was created (ns since the Unix epoch).
    pub created_ns: i64,
    /// For a replica: the id of the source ring it copies; 0 for a source ring.
    pub source_ring_id: u64,
    /// Process id of the last writer.
    pub writer_pid: u32,
    /// A process holds the writer lock now.
    pub writer_alive: bool,
    /// The last writer closed the ring cleanly.
    pub closed_cleanly: bool,
    /// The file was replaced by a new ring of the same name.
    pub superseded: bool,
    /// Writer epoch (1 for the first writer, +1 per takeover).
    pub epoch: u64,
    /// Position where this epoch began.
    pub epoch_start_position: u64,
    /// Sequence of this epoch's first record.
    pub epoch_start_seq: u64,
    /// When the current writer started (ns since the Unix epoch).
    pub writer_started_ns: i64,
    /// Last writer heartbeat (ns since the Unix epoch).
    pub heartbeat_ns: i64,
    /// Claim position.
    pub claim: u64,
    /// Commit position.
    pub commit: u64,
    /// Sequence of the next record.
    pub next_seq: u64,
}

/// Reads a ring's header without becoming a reader: for monitoring.
pub fn inspect(dir: &ShmDir, name: &str) -> Result<RingInfo, RingFileError> {
    let path = dir.ring_path(name);
    Ok(RingFile::open(&path, false, false, Some(name))?.info())
}
