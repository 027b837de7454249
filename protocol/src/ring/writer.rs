//! The single writer of a ring.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use zerocopy::{FromZeros, IntoBytes};

use super::file::{RingFile, RingFileError, ShmDir, file_len, map_readers_file, validate_name};
use super::layout::{
    Descriptor, FLAG_CLOSED, FLAG_SUPERSEDED, HEADER_LEN, READERS_FILE_LEN, READERS_MAGIC,
    READERS_SLEEPERS, READERS_VERSION, READERS_WAKE, RING_MAGIC, RING_VERSION, ReadersDescriptor,
    WRITER_EPOCH, WRITER_EPOCH_START_POSITION, WRITER_EPOCH_START_SEQ, WRITER_FLAGS,
    WRITER_HEARTBEAT, WRITER_PID, WRITER_STARTED,
};
use super::log::{AppendError, BodySink, Geometry, LogAppender, LogView, RECORD_ALIGN};
use super::mapping::{self, HeldLock, Mapping};
use super::units::{Position, Seq};
use super::{DEFAULT_CAPACITY, MAX_CAPACITY, MIN_CAPACITY};
use crate::records::{EpochStart, RecordEncoder, RecordError, RecordKind, RecordType, SCHEMA_ID};
use crate::time::WallNs;

/// How to create (or take over) a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingOptions {
    capacity: u64,
    mode: u32,
    readers_mode: u32,
    schema_id: u64,
    replace_incompatible: bool,
    fresh: bool,
    prefault: bool,
    now_ns: i64,
}

impl Default for RingOptions {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            mode: 0o640,
            readers_mode: 0o660,
            schema_id: SCHEMA_ID,
            replace_incompatible: false,
            fresh: false,
            prefault: true,
            now_ns: 0,
        }
    }
}

impl RingOptions {
    /// Data-region bytes, a power of two from 4 KiB to 64 GiB (default 64 MiB).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// File mode of the ring (default 0640: readers in the group map it read-only).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// File mode of the readers file, which parked readers write (default 0660).
    pub fn readers_mode(mut self, mode: u32) -> Self {
        self.readers_mode = mode;
        self
    }

    /// Schema id recorded in the header (default: mdi's records schema).
    pub fn schema_id(mut self, id: u64) -> Self {
        self.schema_id = id;
        self
    }

    /// When an existing ring has another capacity or schema, replace it with a new file
    /// (its readers are told it was superseded) instead of failing.
    pub fn replace_incompatible(mut self, replace: bool) -> Self {
        self.replace_incompatible = replace;
        self
    }

    /// Start a new, empty ring even when one of that name exists (its writer gone): the
    /// old file is superseded (its readers are told to reopen) instead of continued in a
    /// new epoch. For jobs whose output stands alone, such as a replay.
    pub fn fresh(mut self, fresh: bool) -> Self {
        self.fresh = fresh;
        self
    }

    /// Fault every page of the ring in when the writer maps it (default), so the hot path
    /// never takes a first-touch page fault. Off, memory is allocated as the ring fills:
    /// for large rings whose latency does not matter (a replay that may not fill them).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// The caller's clock, ns since the Unix epoch: stored as creation time, start time and
    /// first heartbeat. (The ring never reads a clock itself.)
    pub fn now_ns(mut self, now: impl Into<WallNs>) -> Self {
        self.now_ns = now.into().get();
        self
    }

    /// The configured capacity.
    pub fn get_capacity(&self) -> u64 {
        self.capacity
    }
}

/// Why a writer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum WriterCreateError {
    /// Another live process is the ring's writer (it holds the writer lock).
    #[error("{}: another writer (pid {pid}) is live; a ring has exactly one writer", path.display())]
    WriterAlive {
        /// The ring file.
        path: PathBuf,
        /// Process id recorded by that writer.
        pid: u32,
    },
    /// The existing ring differs from the options; see `RingOptions::replace_incompatible`.
    #[error("{}: existing ring has {what} {found}, asked for {wanted} (delete it or allow replacing)", path.display())]
    Incompatible {
        /// The ring file.
        path: PathBuf,
        /// Which property differs.
        what: &'static str,
        /// Its value in the file.
        found: u64,
        /// The value asked for.
        wanted: u64,
    },
    /// The stream name is not usable as a file name.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The capacity is not a power of two in range.
    #[error("invalid ring capacity {0}: a power of two from 4 KiB to 64 GiB")]
    InvalidCapacity(u64),
    /// The existing file is not a usable ring (foreign, corrupt, truncated) or I/O failed.
    #[error(transparent)]
    File(#[from] RingFileError),
    /// Writing the epoch record failed.
    #[error("writing the epoch record: {0}")]
    EpochRecord(String),
    /// The existing ring is of the other kind: a replica (a UDP receiver writes it) where
    /// a source writer was asked for, or a ring that is no replica where a receiver wants
    /// to replicate — neither is taken over or replaced.
    #[error("{}: {reason}", path.display())]
    WrongRole {
        /// The ring file.
        path: PathBuf,
        /// What it is, and what to do.
        reason: &'static str,
    },
    /// The directory or an existing file is not safe to write through: another user owns
    /// it, or others may replace files in the directory.
    #[error("{}: {reason}; refusing to write a ring there", path.display())]
    NotOwned {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
}

/// The shm directory must be this user's (or root's), and others must not be able to
/// replace its files: not writable by group or others, unless sticky (as /dev/shm is).
fn check_dir(path: &Path) -> Result<(), WriterCreateError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).map_err(|e| RingFileError::io(path, e))?;
    let me = mapping::effective_uid();
    let reason = if meta.uid() != me && meta.uid() != 0 {
        Some(format!(
            "the directory belongs to uid {}, not to this user (uid {me})",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        Some(format!(
            "the directory's mode {:o} lets others replace files in it (chmod go-w, or +t)",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(WriterCreateError::NotOwned {
            path: path.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A file a writer takes over (ring, readers file) must be this user's: one another
/// user planted or owns stays under their control.
fn check_file_owner(path: &Path, file: &File) -> Result<(), WriterCreateError> {
    use std::os::unix::fs::MetadataExt;
    let uid = file
        .metadata()
        .map_err(|e| RingFileError::io(path, e))?
        .uid();
    let me = mapping::effective_uid();
    if uid != me {
        return Err(WriterCreateError::NotOwned {
            path: path.to_owned(),
            reason: format!("the file belongs to uid {uid}, not to this user (uid {me})"),
        });
    }
    Ok(())
}

/// Appending a typed record failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Encoding the record failed.
    #[error(transparent)]
    Encode(#[from] RecordError),
    /// The ring refused the record.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// The one writer of a ring log. Holding a `RingWriter` means holding the ring's writer
/// lock: a second writer cannot exist while this one lives, in any process.
#[derive(Debug)]
pub struct RingWriter {
    ring: RingFile,
    wakeup: Wakeup,
    /// `<name>.lock`, write-locked while this writer lives (ADR 0012).
    _writer_lock: File,
    /// Whether this writer also holds the ring file's lock (what readers who cannot open
    /// the lock file look at); a reader's read lock can keep it from that for a while.
    ring_locked: bool,
    appender: LogAppender,
    encoder: RecordEncoder,
    epoch: u64,
    name: String,
}

/// Waking parked readers: the readers file (its sleeper count and wake word) and how
/// many wake-ups in a row found nobody asleep although the sleeper count said so.
#[derive(Debug)]
struct Wakeup {
    readers: Mapping,
    /// The readers file as opened (its length is checked at each heartbeat).
    readers_file: File,
    readers_path: PathBuf,
    readers_mode: u32,
    /// How many times the readers file was found damaged and made anew.
    readers_file_replaced: u64,
    futile_wakes: u32,
}

impl Wakeup {
    fn new((readers_file, readers): (File, Mapping), path: PathBuf, mode: u32) -> Self {
        Self {
            readers,
            readers_file,
            readers_path: path,
            readers_mode: mode,
            readers_file_replaced: 0,
            futile_wakes: 0,
        }
    }

    /// Whether a reader damaged the readers file: truncated it (a lost page now reads as
    /// zeros, see `Mapping::map_guarded`; or it is merely shorter) or overwrote its magic.
    fn readers_file_damaged(&self) -> bool {
        let magic = self.readers.u64_at(0).load(Ordering::Relaxed).to_le_bytes();
        self.readers.truncated()
            || magic != READERS_MAGIC
            || self
                .readers_file
                .metadata()
                .is_ok_and(|m| m.len() < READERS_FILE_LEN)
    }

    /// Replaces a damaged readers file with a fresh one, so that readers can register and
    /// park again (those parked on the old file wake by their park timeout and poll).
    #[cold]
    fn replace_damaged_readers_file(&mut self) {
        tracing::warn!(
            path = %self.readers_path.display(),
            "the readers file was truncated or overwritten by a reader; making it anew"
        );
        // only a file we can name as the damaged one is removed: if the path now holds
        // another file, that one is validated (and refused if bad) like any other
        let _ = fs::remove_file(&self.readers_path);
        match open_readers_file(&self.readers_path, self.readers_mode) {
            Ok(fresh) => {
                (self.readers_file, self.readers) = fresh;
                self.readers_file_replaced += 1;
                self.futile_wakes = 0;
            }
            Err(e) => tracing::warn!(error = %e, "could not make the readers file anew"),
        }
    }

    /// Wakes parked readers, only if one said it sleeps — a plain load per record, no
    /// fence: a full fence here stalls on the store buffer and was measured to cut a
    /// one-reader stream from 10.7 to 6.8 M records/s. The price: a reader that registers
    /// as a sleeper in the instant this record is being published may be woken by the
    /// next record, by [`RingWriter::heartbeat`] (which does the fenced check), or by its
    /// own park timeout, whichever comes first.
    #[inline]
    fn wake_sleepers(&mut self) {
        let sleepers = self
            .readers
            .u32_at(READERS_SLEEPERS)
            .load(Ordering::Relaxed);
        if sleepers != 0 {
            self.wake_counted(sleepers);
        }
    }

    /// Wakes sleepers; a count that keeps waking nobody (a reader died while parked) is
    /// reset, so a crashed reader costs a bounded number of system calls, not one per
    /// record forever. A live reader caught between registering and sleeping by the reset
    /// sleeps until its park timeout at worst.
    #[cold]
    fn wake_counted(&mut self, sleepers: u32) {
        if self.wake_all() > 0 {
            self.futile_wakes = 0;
            return;
        }
        self.futile_wakes += 1;
        if self.futile_wakes >= STALE_SLEEPER_WAKES {
            self.futile_wakes = 0;
            let _ = self.readers.u32_at(READERS_SLEEPERS).compare_exchange(
                sleepers,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn wake_all(&self) -> u64 {
        let wake = self.readers.u32_at(READERS_WAKE);
        wake.fetch_add(1, Ordering::SeqCst);
        mapping::futex_wake_all(wake)
    }
}

/// Appends `record` (see [`RingWriter::append_record`]); wakes nobody.
#[inline]
fn append_typed<T: RecordType>(
    appender: &mut LogAppender,
    view: LogView<'_>,
    encoder: &mut RecordEncoder,
    record: &T,
) -> Result<Seq, WriteError> {
    Ok(Seq(match record.flat_words() {
        // the hot tick kinds: encoded straight into the record's words in the ring
        Some(words) => appender.append_with(view, T::KIND.0, words, |body| {
            record.write_flat(&mut BodySink::new(body));
        })?,
        None => {
            let body = encoder.encode_words(record)?;
            appender.append_words(view, T::KIND.0, body)?
        }
    }))
}

/// Records appended together ([`RingWriter::batch`]); parked readers are woken when it
/// is dropped.
#[derive(Debug)]
pub struct RecordBatch<'w> {
    view: LogView<'w>,
    appender: &'w mut LogAppender,
    encoder: &'w mut RecordEncoder,
    wakeup: &'w mut Wakeup,
    appended: bool,
}

impl RecordBatch<'_> {
    /// Encodes `record` and appends it, as [`RingWriter::append_record`] does.
    #[inline]
    pub fn append_record<T: RecordType>(&mut self, record: &T) -> Result<Seq, WriteError> {
        let seq = append_typed(self.appender, self.view, self.encoder, record)?;
        self.appended = true;
        Ok(seq)
    }
}

impl Drop for RecordBatch<'_> {
    fn drop(&mut self) {
        if self.appended {
            self.wakeup.wake_sleepers();
        }
    }
}

/// After this many wake-ups in a row that woke nobody, the sleeper count is taken to be
/// left over from a reader that died while parked, and is reset.
const STALE_SLEEPER_WAKES: u32 = 64;

impl RingWriter {
    /// Creates the ring `name` in `dir`, or takes over an existing one whose writer died
    /// (same capacity and schema): a new epoch starts where the old writer stopped, its
    /// torn record (if any) is padded over, and readers see an epoch-start record.
    pub fn create(
        dir: &ShmDir,
        name: &str,
        options: &RingOptions,
    ) -> Result<Self, WriterCreateError> {
        Self::open_writer(dir, name, options, Role::Source)
    }

    fn open_writer(
        dir: &ShmDir,
        name: &str,
        options: &RingOptions,
        role: Role,
    ) -> Result<Self, WriterCreateError> {
        validate_name(name).map_err(|reason| WriterCreateError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let capacity = options.capacity;
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(WriterCreateError::InvalidCapacity(capacity));
        }
        fs::create_dir_all(dir.path()).map_err(|e| RingFileError::io(dir.path(), e))?;
        check_dir(dir.path())?;
        let path = dir.ring_path(name);
        let writer_lock = take_writer_lock(&dir.lock_path(name), &path)?;
        let readers_path = dir.readers_path(name);
        let readers = open_readers_file(&readers_path, options.readers_mode)?;
        let mut readers = Some(Wakeup::new(readers, readers_path, options.readers_mode));
        // Bounded: each round either takes the ring or loses a creation race to a writer
        // that then holds the lock.
        for _ in 0..8 {
            let (ring, previous_epoch) = match open_existing(&path, name, options, role)? {
                Existing::TakeOver(ring) => {
                    let epoch = ring.epoch();
                    (ring, epoch)
                }
                Existing::Missing => match create_new(&path, name, options, false, role)? {
                    Some(ring) => (ring, 0),
                    None => continue,
                },
                Existing::Replace(old) => {
                    let ring = create_new(&path, name, options, true, role)?.ok_or_else(|| {
                        RingFileError::io(&path, io::ErrorKind::AlreadyExists.into())
                    })?;
                    old.map
                        .u32_at(WRITER_FLAGS)
                        .fetch_or(FLAG_SUPERSEDED | FLAG_CLOSED, Ordering::AcqRel);
                    (ring, 0)
                }
            };
            let wakeup = readers.take().expect("taken only here, once");
            return Self::start_epoch(
                ring,
                writer_lock,
                wakeup,
                name,
                previous_epoch,
                options.now_ns,
                role,
            );
        }
        Err(WriterCreateError::File(RingFileError::io(
            &path,
            io::Error::other("lost the creation race repeatedly"),
        )))
    }

    fn start_epoch(
        ring: RingFile,
        writer_lock: File,
        wakeup: Wakeup,
        name: &str,
        previous_epoch: u64,
        now_ns: i64,
        role: Role,
    ) -> Result<Self, WriterCreateError> {
        let appender = LogAppender::resume(ring.view());
        let epoch = previous_epoch + 1;
        // the ring file's own lock, for readers who cannot open the lock file: taken
        // already unless a reader's read lock is in the way (then retried by heartbeat)
        let ring_locked = mapping::try_lock_writer(&ring.file).unwrap_or(false);
        let map = &ring.map;
        map.u32_at(WRITER_PID)
            .store(std::process::id(), Ordering::Release);
        map.u32_at(WRITER_FLAGS).store(0, Ordering::Release);
        map.u64_at(WRITER_EPOCH_START_POSITION)
            .store(appender.position(), Ordering::Release);
        map.u64_at(WRITER_EPOCH_START_SEQ)
            .store(appender.next_seq(), Ordering::Release);
        map.u64_at(WRITER_STARTED)
            .store(now_ns.cast_unsigned(), Ordering::Release);
        map.u64_at(WRITER_HEARTBEAT)
            .store(now_ns.cast_unsigned(), Ordering::Release);
        map.u64_at(WRITER_EPOCH).store(epoch, Ordering::Release);
        let mut writer = Self {
            ring,
            wakeup,
            _writer_lock: writer_lock,
            ring_locked,
            appender,
            encoder: RecordEncoder::new(),
            epoch,
            name: name.to_owned(),
        };
        if matches!(role, Role::Replica { .. }) {
            return Ok(writer);
        }
        writer
            .append_record(&EpochStart {
                epoch,
                writer_pid: std::process::id(),
                started_ns: now_ns,
                previous_epoch,
            })
            .map_err(|e| WriterCreateError::EpochRecord(e.to_string()))?;
        Ok(writer)
    }

    /// Appends one record; returns its sequence number. Never blocks on readers.
    #[inline]
    pub fn append(&mut self, kind: RecordKind, body: &[u8]) -> Result<Seq, AppendError> {
        self.append_parts(kind, &[body])
    }

    /// Appends one record whose body is `parts` concatenated (every part but the last a
    /// multiple of 8 bytes long).
    #[inline]
    pub fn append_parts(&mut self, kind: RecordKind, parts: &[&[u8]]) -> Result<Seq, AppendError> {
        let seq = self.appender.append(self.ring.view(), kind.0, parts)?;
        self.wakeup.wake_sleepers();
        Ok(Seq(seq))
    }

    /// Encodes `record` as a single-segment Cap'n Proto message and appends it.
    pub fn append_record<T: RecordType>(&mut self, record: &T) -> Result<Seq, WriteError> {
        let seq = append_typed(
            &mut self.appender,
            self.ring.view(),
            &mut self.encoder,
            record,
        )?;
        self.wakeup.wake_sleepers();
        Ok(seq)
    }

    /// Starts a batch of records written together — a packet's, say: the ring is looked
    /// up once for all of them and parked readers are woken once, when the batch is
    /// dropped. Each record is still published and committed as it is appended (readers
    /// that poll see it at once).
    pub fn batch(&mut self) -> RecordBatch<'_> {
        RecordBatch {
            view: self.ring.view(),
            appender: &mut self.appender,
            encoder: &mut self.encoder,
            wakeup: &mut self.wakeup,
            appended: false,
        }
    }

    /// Readers the writer believes are parked (for tests and monitoring).
    pub fn parked_readers(&self) -> u32 {
        self.wakeup
            .readers
            .u32_at(READERS_SLEEPERS)
            .load(Ordering::Acquire)
    }

    /// How many times [`Self::heartbeat`] found the readers file truncated or overwritten
    /// by a reader and made it anew (ADR 0012).
    pub fn readers_file_replaced(&self) -> u64 {
        self.wakeup.readers_file_replaced
    }

    /// Records that the writer is alive at `now_ns` (ns since the Unix epoch). Call it from
    /// the duty cycle, at least every few hundred milliseconds when idle.
    ///
    /// Also closes the parked-reader race of [`Self::append`]: the SeqCst fence orders
    /// everything published so far before the sleeper-count load, and a parking reader
    /// does the mirror image, so one of the two always sees the other.
    pub fn heartbeat(&mut self, now: impl Into<WallNs>) {
        let now = now.into();
        self.ring
            .map
            .u64_at(WRITER_HEARTBEAT)
            .store(now.get().cast_unsigned(), Ordering::Release);
        if !self.ring_locked {
            self.ring_locked = mapping::try_lock_writer(&self.ring.file).unwrap_or(false);
        }
        if self.wakeup.readers_file_damaged() {
            self.wakeup.replace_damaged_readers_file();
        }
        fence(Ordering::SeqCst);
        let sleepers = self
            .wakeup
            .readers
            .u32_at(READERS_SLEEPERS)
            .load(Ordering::Relaxed);
        if sleepers != 0 {
            self.wakeup.wake_counted(sleepers);
        }
    }

    /// This writer's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Position of the next record.
    pub fn position(&self) -> Position {
        Position(self.appender.position())
    }

    /// Sequence number of the next record.
    pub fn next_seq(&self) -> Seq {
        Seq(self.appender.next_seq())
    }

    /// Data-region bytes.
    pub fn capacity(&self) -> u64 {
        self.ring.geometry.capacity
    }

    /// Largest record (header + body) accepted.
    pub fn max_record_len(&self) -> u64 {
        self.ring.geometry.max_record_len
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.ring.path
    }
}

/// The one writer of a **replica** of another ring (kept by the reliable-UDP receiver):
/// the same capacity as the source, records written at their source positions with
/// their sequence numbers, and no epoch record of its own — the source's epoch records
/// arrive with its stream. It can only mirror: a replica has no `append`, and a source
/// [`RingWriter`] has no raw writes, so neither can be used as the other.
#[derive(Debug)]
pub struct ReplicaWriter(RingWriter);

impl ReplicaWriter {
    /// Creates the replica `name` in `dir` of the source ring `source_ring_id` (same
    /// capacity as the source), or takes over this receiver's earlier replica of that
    /// ring (a restarted receiver resumes it). An earlier replica of another source ring
    /// (the source was recreated) is superseded — its readers are told to reopen — and a
    /// new one made. A ring that is not a replica is never touched
    /// ([`WriterCreateError::WrongRole`]).
    pub fn create(
        dir: &ShmDir,
        name: &str,
        options: &RingOptions,
        source_ring_id: u64,
    ) -> Result<Self, WriterCreateError> {
        let role = Role::Replica { source_ring_id };
        RingWriter::open_writer(dir, name, options, role).map(Self)
    }

    /// The id of the source ring this replica copies.
    pub fn source_ring_id(&self) -> u64 {
        self.0.ring.descriptor.source_ring_id
    }

    /// Writes a raw record (as [`RingReader::read_raw`] copied it from the source) at its
    /// source position, keeping its sequence number; a skipped range becomes padding and
    /// a skipped sequence an exact loss for readers.
    ///
    /// [`RingReader::read_raw`]: super::RingReader::read_raw
    pub fn append_raw(&mut self, position: Position, record: &[u8]) -> Result<Seq, AppendError> {
        let w = &mut self.0;
        let seq = w.appender.append_raw(w.ring.view(), position.0, record)?;
        w.wakeup.wake_sleepers();
        Ok(Seq(seq))
    }

    /// The source stream continues at `position` with sequence `next_seq` — padding in
    /// the source, or a range that could not be repaired (readers then see `Lost` for
    /// the sequences skipped).
    pub fn skip_to(&mut self, position: Position, next_seq: Seq) {
        let w = &mut self.0;
        w.appender.skip_to(w.ring.view(), position.0, next_seq.0);
        w.wakeup.wake_sleepers();
    }

    /// Records that the replica's keeper is alive at `now_ns` (see
    /// [`RingWriter::heartbeat`]).
    pub fn heartbeat(&mut self, now: impl Into<WallNs>) {
        self.0.heartbeat(now);
    }

    /// Readers the writer believes are parked.
    pub fn parked_readers(&self) -> u32 {
        self.0.parked_readers()
    }

    /// See [`RingWriter::readers_file_replaced`].
    pub fn readers_file_replaced(&self) -> u64 {
        self.0.readers_file_replaced()
    }

    /// The epoch of this replica's writer lock (not the source's: its epochs arrive as
    /// records).
    pub fn epoch(&self) -> u64 {
        self.0.epoch()
    }

    /// Position after the last record written.
    pub fn position(&self) -> Position {
        self.0.position()
    }

    /// Sequence number the next record of the source will have.
    pub fn next_seq(&self) -> Seq {
        self.0.next_seq()
    }

    /// Data-region bytes (the source's).
    pub fn capacity(&self) -> u64 {
        self.0.capacity()
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        self.ring
            .map
            .u32_at(WRITER_FLAGS)
            .fetch_or(FLAG_CLOSED, Ordering::AcqRel);
        // Parked readers wake up and see the writer gone.
        let _ = self.wakeup.wake_all();
    }
}

/// Whether a writer originates records or mirrors another ring's (which: the source
/// ring's id, kept in the replica's descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Replica { source_ring_id: u64 },
}

impl Role {
    /// The descriptor's `source_ring_id` of a ring this role writes.
    fn source_ring_id(self) -> u64 {
        match self {
            Self::Source => 0,
            Self::Replica { source_ring_id } => source_ring_id,
        }
    }
}

enum Existing {
    Missing,
    TakeOver(RingFile),
    Replace(RingFile),
}

fn open_existing(
    path: &Path,
    name: &str,
    options: &RingOptions,
    role: Role,
) -> Result<Existing, WriterCreateError> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(e) => return Err(RingFileError::io(path, e).into()),
    };
    check_file_owner(path, &file)?;
    if !mapping::try_lock_writer(&file).map_err(|e| RingFileError::io(path, e))? {
        match mapping::held_lock(&file).map_err(|e| RingFileError::io(path, e))? {
            // a writer of an mdi before ADR 0012 (it locks only the ring file)
            HeldLock::Write => return Err(writer_alive(path)),
            // any reader can take a read lock: the lock file decides, and it is ours
            HeldLock::Read => tracing::warn!(
                path = %path.display(),
                "a reader holds a read lock on the ring file; taking over without its lock"
            ),
            HeldLock::None => {}
        }
    }
    // a file another writer left may be sparse (an older mdi, or a copy): reserve it
    // before it is written to
    let len = file
        .metadata()
        .map_err(|e| RingFileError::io(path, e))?
        .len();
    mapping::reserve(&file, len).map_err(|e| RingFileError::io(path, no_room(path, len, e)))?;
    let ring = RingFile::from_file(path, file, true, options.prefault, Some(name))?;
    let found = ring.descriptor.source_ring_id;
    match role {
        Role::Source if found != 0 => {
            return Err(WriterCreateError::WrongRole {
                path: path.to_owned(),
                reason: "this ring is a replica (a UDP receiver writes it); a publisher does \
                         not write into it — use another name or shm directory",
            });
        }
        Role::Replica { .. } if found == 0 => {
            return Err(WriterCreateError::WrongRole {
                path: path.to_owned(),
                reason: "this ring is not a replica (a publisher's own ring, or a replica made \
                         before mdi kept the source ring's id); a receiver never replaces a \
                         ring it did not create — delete it, or replicate into another shm \
                         directory",
            });
        }
        // the source ring was recreated: a new replica replaces this receiver's old one
        Role::Replica { source_ring_id } if found != source_ring_id => {
            return Ok(Existing::Replace(ring));
        }
        _ => {}
    }
    if options.fresh {
        return Ok(Existing::Replace(ring));
    }
    let checks = [
        ("capacity", ring.geometry.capacity, options.capacity),
        ("schema id", ring.descriptor.schema_id, options.schema_id),
    ];
    for (what, found, wanted) in checks {
        if found != wanted {
            if options.replace_incompatible {
                return Ok(Existing::Replace(ring));
            }
            return Err(WriterCreateError::Incompatible {
                path: path.to_owned(),
                what,
                found,
                wanted,
            });
        }
    }
    Ok(Existing::TakeOver(ring))
}

/// A private name next to `path`: pid plus a per-process counter (no clock here).
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("ring");
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{file_name}.{}.{unique}.tmp", std::process::id()))
}

/// Writes a fully initialised file under a temporary name and links it into place, so
/// readers never see a half-made ring. Returns None if another creator won the race.
fn create_new(
    path: &Path,
    name: &str,
    options: &RingOptions,
    replace: bool,
    role: Role,
) -> Result<Option<RingFile>, WriterCreateError> {
    let geometry = Geometry::for_capacity(options.capacity);
    let len = file_len(geometry);
    let mut descriptor = Descriptor::new_zeroed();
    descriptor.magic = RING_MAGIC;
    descriptor.version = RING_VERSION;
    descriptor.header_len = HEADER_LEN as u32;
    descriptor.capacity = geometry.capacity;
    descriptor.index_offset = HEADER_LEN + geometry.capacity;
    descriptor.index_slots = geometry.index_slots;
    descriptor.stride_shift = geometry.stride_shift;
    descriptor.record_align = RECORD_ALIGN as u32;
    descriptor.max_record_len = geometry.max_record_len;
    descriptor.schema_id = options.schema_id;
    descriptor.created_ns = options.now_ns;
    descriptor.file_len = len;
    descriptor.name[..name.len()].copy_from_slice(name.as_bytes());
    descriptor.source_ring_id = role.source_ring_id();

    let tmp = temp_path(path);
    let file = create_file(&tmp, options.mode, len, descriptor.as_bytes())?;
    let locked = mapping::try_lock_writer(&file).map_err(|e| RingFileError::io(&tmp, e))?;
    debug_assert!(
        locked,
        "a fresh private file cannot be locked by anyone else"
    );
    let linked = if replace {
        fs::rename(&tmp, path).map(|()| true)
    } else {
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    };
    match linked {
        Ok(true) => Ok(Some(RingFile::from_file(
            path,
            file,
            true,
            options.prefault,
            Some(name),
        )?)),
        Ok(false) => Ok(None),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(RingFileError::io(path, e).into())
        }
    }
}

/// `error` from reserving `len` bytes at `path`, saying what to do when the filesystem is
/// full.
fn no_room(path: &Path, len: u64, error: io::Error) -> io::Error {
    if error.raw_os_error() == Some(libc::ENOSPC) {
        let dir = path.parent().unwrap_or(path);
        io::Error::new(
            error.kind(),
            format!(
                "no room for a ring of {len} bytes in {} (the filesystem is full: free space, \
                 make it larger — `mount -o remount,size=...` for a tmpfs — or choose a \
                 smaller --ring capacity)",
                dir.display()
            ),
        )
    } else {
        error
    }
}

fn create_file(path: &Path, mode: u32, len: u64, header: &[u8]) -> Result<File, RingFileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| RingFileError::io(path, e))?;
    let init = || -> io::Result<()> {
        // Exactly the mode asked for, whatever the umask.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.set_len(len)?;
        mapping::reserve(&file, len).map_err(|e| no_room(path, len, e))?;
        file.write_all_at(header, 0)
    };
    init().map_err(|e| {
        let _ = fs::remove_file(path);
        RingFileError::io(path, e)
    })?;
    Ok(file)
}

/// Takes the writer lock (ADR 0012): a write lock on `<name>.lock`, a file only this
/// user can open (mode 0600), so that no reader can hold a lock there and keep a writer
/// from taking over — as a read lock on the ring file, which every reader can take,
/// could. The kernel releases it when the writer's last descriptor closes, also on
/// SIGKILL.
fn take_writer_lock(path: &Path, ring_path: &Path) -> Result<File, WriterCreateError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| RingFileError::io(path, e))?;
    check_file_owner(path, &file)?;
    if !mapping::try_lock_writer(&file).map_err(|e| RingFileError::io(path, e))? {
        return Err(writer_alive(ring_path));
    }
    Ok(file)
}

/// The error for a ring whose writer lives, with the pid that writer recorded.
fn writer_alive(ring_path: &Path) -> WriterCreateError {
    let mut pid = [0u8; 4];
    let pid = match File::open(ring_path).and_then(|f| f.read_at(&mut pid, WRITER_PID as u64)) {
        Ok(4) => u32::from_le_bytes(pid),
        _ => 0,
    };
    WriterCreateError::WriterAlive {
        path: ring_path.to_owned(),
        pid,
    }
}

/// Opens (creating it if missing) the readers file that parked readers sleep on.
fn open_readers_file(path: &Path, mode: u32) -> Result<(File, Mapping), WriterCreateError> {
    let len = READERS_FILE_LEN;
    for _ in 0..8 {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => {
                check_file_owner(path, &file)?;
                let map = map_readers_file(path, &file, true)?;
                return Ok((file, map));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RingFileError::io(path, e).into()),
        }
        let mut descriptor = ReadersDescriptor::new_zeroed();
        descriptor.magic = READERS_MAGIC;
        descriptor.version = READERS_VERSION;
        descriptor.file_len = len;
        let tmp = temp_path(path);
        let file = create_file(&tmp, mode, len, descriptor.as_bytes())?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                let map = map_readers_file(path, &file, true)?;
                return Ok((file, map));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RingFileError::io(path, e).into()),
        }
    }
    Err(RingFileError::io(path, io::Error::other("lost the creation race repeatedly")).into())
}
