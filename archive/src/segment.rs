//! One segment file (ADR 0017):
//!
//! ```text
//! header    4096 bytes  magic "MDIARCH1", version, stream, epoch, first seq and time,
//!                       schema id, capacity, sealed, bytes used (rewritten at seal)
//! chunk*    48-byte header: magic, payload length, record count, first and last seq,
//!                       first and last publish time, CRC32C of the payload
//!           payload: records, each 8-aligned: length (u32, of the whole record),
//!                       kind (u16), 2 zero bytes, body length (u32), 4 zero bytes,
//!                       seq (u64), publish ns (i64), body
//! zeros     the rest of the preallocated file
//! ```
//!
//! Every length and position read from a file is bounded before it is used: a corrupt or
//! hostile file ends the valid prefix, it never allocates or reads out of bounds.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use zerocopy::IntoBytes;

/// Segment magic.
const MAGIC: &[u8; 8] = b"MDIARCH1";
/// Format version.
const VERSION: u32 = 1;
/// Header bytes (the first chunk starts here).
pub const HEADER_LEN: u64 = 4096;
/// Chunk header bytes.
pub const CHUNK_HEADER: usize = 48;
/// Chunk magic.
const CHUNK_MAGIC: u32 = 0x4b4e_4843; // "CHNK"
/// A chunk's payload is at most this long (a larger record gets a chunk of its own up to
/// `MAX_RECORD`).
pub const CHUNK_PAYLOAD: usize = 64 << 10;
/// The longest record kept (a ring record is far smaller).
pub const MAX_RECORD: usize = 1 << 20;
/// Record header bytes before the body.
const RECORD_HEADER: usize = 32;
/// The kind of a gap marker: sequences `seq..body as u64` never reached the archive.
pub const GAP_KIND: u16 = 0xffff;
/// Stream names are at most this long in the header.
const MAX_STREAM: usize = 64;

/// Why a segment cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The operating system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No room for a new segment (the disk is full, or nearly).
    #[error("{}: no room for a segment of {capacity} bytes: {source}", path.display())]
    NoRoom {
        /// The segment that could not be made.
        path: PathBuf,
        /// Its size.
        capacity: u64,
        /// What the filesystem said.
        source: io::Error,
    },
    /// Not a segment file, or one this version does not read.
    #[error("{}: not an mdi archive segment: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A record larger than [`MAX_RECORD`].
    #[error("a record of {0} bytes is larger than the archive keeps ({MAX_RECORD})")]
    RecordTooLarge(usize),
    /// The segment is sealed: nothing more is appended.
    #[error("the segment is sealed")]
    Sealed,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a segment's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The ring's stream name.
    pub stream: String,
    /// The ring's epoch when the segment was begun.
    pub epoch: u64,
    /// The first sequence number it holds.
    pub first_seq: u64,
    /// The first record's publish time (ns).
    pub first_time_ns: i64,
    /// The records schema's identity (a reader refuses records of another).
    pub schema_id: u64,
    /// The file's size.
    pub capacity: u64,
    /// Sealed: complete, read-only.
    pub sealed: bool,
    /// Bytes used (header included), as of the seal.
    pub used: u64,
}

impl SegmentHeader {
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let name = self.stream.as_bytes();
        let len = name.len().min(MAX_STREAM);
        b[12..14].copy_from_slice(&(len as u16).to_le_bytes());
        b[16..16 + len].copy_from_slice(&name[..len]);
        let at = 16 + MAX_STREAM;
        b[at..at + 8].copy_from_slice(&self.epoch.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&self.first_seq.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&self.first_time_ns.to_le_bytes());
        b[at + 24..at + 32].copy_from_slice(&self.schema_id.to_le_bytes());
        b[at + 32..at + 40].copy_from_slice(&self.capacity.to_le_bytes());
        b[at + 40] = u8::from(self.sealed);
        b[at + 48..at + 56].copy_from_slice(&self.used.to_le_bytes());
        let crc = crc32c::crc32c(&b[..at + 56]);
        b[at + 56..at + 60].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8], path: &Path) -> Result<Self, ArchiveError> {
        let invalid = |problem: &str| ArchiveError::Invalid {
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        if b.len() < HEADER_LEN as usize || &b[0..8] != MAGIC {
            return Err(invalid("bad magic"));
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(invalid(&format!("version {version}, this reads {VERSION}")));
        }
        let at = 16 + MAX_STREAM;
        let crc = u32::from_le_bytes(b[at + 56..at + 60].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&b[..at + 56]) {
            return Err(invalid("header checksum"));
        }
        let len = usize::from(u16::from_le_bytes([b[12], b[13]])).min(MAX_STREAM);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Self {
            stream: String::from_utf8_lossy(&b[16..16 + len]).into_owned(),
            epoch: u64_at(at),
            first_seq: u64_at(at + 8),
            first_time_ns: u64_at(at + 16) as i64,
            schema_id: u64_at(at + 24),
            capacity: u64_at(at + 32),
            sealed: b[at + 40] != 0,
            used: u64_at(at + 48),
        })
    }
}

/// One archived record (or gap marker), borrowed from its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveRecord<'a> {
    /// The ring record's kind ([`GAP_KIND`]: a gap marker).
    pub kind: u16,
    /// Its sequence number (a gap marker: the first missing).
    pub seq: u64,
    /// Its publish time (ns).
    pub publish_ns: i64,
    /// Its body (a gap marker: the sequence after the gap, 8 bytes).
    pub body: &'a [u8],
}

impl ArchiveRecord<'_> {
    /// The bytes it takes in a chunk (8-aligned).
    fn framed_len(&self) -> usize {
        (RECORD_HEADER + self.body.len()).next_multiple_of(8)
    }

    /// A gap marker: sequences `from..to` are not in the archive.
    pub fn gap(from: u64, to: u64, publish_ns: i64, scratch: &mut [u8; 8]) -> ArchiveRecord<'_> {
        *scratch = to.to_le_bytes();
        ArchiveRecord {
            kind: GAP_KIND,
            seq: from,
            publish_ns,
            body: scratch,
        }
    }

    /// For a gap marker, the sequence after the gap.
    pub fn gap_end(&self) -> Option<u64> {
        (self.kind == GAP_KIND && self.body.len() == 8)
            .then(|| u64::from_le_bytes(self.body.try_into().expect("8 bytes")))
    }
}

/// A chunk's header as found in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Where it starts in the file.
    pub offset: u64,
    /// Payload bytes.
    pub len: u32,
    /// Records (and gap markers) in it.
    pub count: u32,
    /// First and last sequence.
    pub first_seq: u64,
    /// Last sequence (a gap marker counts as its last missing one).
    pub last_seq: u64,
    /// First publish time.
    pub first_time_ns: i64,
    /// Last publish time.
    pub last_time_ns: i64,
    crc: u32,
}

impl ChunkHeader {
    fn encode(&self) -> [u8; CHUNK_HEADER] {
        let mut b = [0u8; CHUNK_HEADER];
        b[0..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.last_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_time_ns.to_le_bytes());
        b[40..48].copy_from_slice(&self.last_time_ns.to_le_bytes());
        b
    }

    fn decode(offset: u64, b: &[u8; CHUNK_HEADER]) -> Option<Self> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        (u32_at(0) == CHUNK_MAGIC).then(|| Self {
            offset,
            len: u32_at(4),
            count: u32_at(8),
            crc: u32_at(12),
            first_seq: u64_at(16),
            last_seq: u64_at(24),
            first_time_ns: u64_at(32) as i64,
            last_time_ns: u64_at(40) as i64,
        })
    }
}

/// Walks the chunks of a segment from its first: the valid prefix, and where it ends.
/// `check_payloads`: each payload is read and its CRC checked (the writer's recovery);
/// otherwise only the headers are read (a reader, which checks each payload when it reads
/// it), from `at` on.
fn valid_chunks(
    file: &File,
    path: &Path,
    capacity: u64,
    check_payloads: bool,
    mut at: u64,
) -> Result<(Vec<ChunkHeader>, u64), ArchiveError> {
    let mut chunks = Vec::new();
    let mut payload = Vec::new();
    while at + CHUNK_HEADER as u64 <= capacity {
        let mut raw = [0u8; CHUNK_HEADER];
        file.read_exact_at(&mut raw, at).map_err(io_error(path))?;
        let Some(header) = ChunkHeader::decode(at, &raw) else {
            break;
        };
        let len = header.len as usize;
        let end = at + CHUNK_HEADER as u64 + len as u64;
        // bounded before anything is read: within the file and the largest chunk
        if len > MAX_RECORD.max(CHUNK_PAYLOAD) + RECORD_HEADER
            || end > capacity
            || header.count == 0
        {
            break;
        }
        if check_payloads {
            payload.resize(len, 0);
            file.read_exact_at(&mut payload, at + CHUNK_HEADER as u64)
                .map_err(io_error(path))?;
            if crc32c::crc32c(&payload) != header.crc || !records_hold(&payload, header.count) {
                break;
            }
        }
        if chunks.last().is_some_and(|p: &ChunkHeader| {
            header.first_seq <= p.last_seq || header.first_time_ns < p.last_time_ns
        }) || header.first_seq > header.last_seq
        {
            break; // out of order: not a chunk this writer wrote after the last
        }
        chunks.push(header);
        at = end;
    }
    Ok((chunks, at))
}

/// The payload parses into exactly `count` records.
fn records_hold(payload: &[u8], count: u32) -> bool {
    let mut n = 0u32;
    let mut ok = true;
    each_record(payload, |_| n += 1, &mut ok);
    ok && n == count
}

/// Calls `f` with each record of a chunk's payload; `ok` false if a frame does not hold.
fn each_record<'a>(payload: &'a [u8], mut f: impl FnMut(ArchiveRecord<'a>), ok: &mut bool) {
    let mut at = 0;
    while at < payload.len() {
        let Some(head) = payload.get(at..at + RECORD_HEADER) else {
            *ok = false;
            return;
        };
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        if len < RECORD_HEADER || !len.is_multiple_of(8) || at + len > payload.len() {
            *ok = false;
            return;
        }
        let body_len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
        if RECORD_HEADER + body_len > len {
            *ok = false;
            return;
        }
        f(ArchiveRecord {
            kind: u16::from_le_bytes([head[4], head[5]]),
            seq: u64::from_le_bytes(head[16..24].try_into().expect("8 bytes")),
            publish_ns: i64::from_le_bytes(head[24..32].try_into().expect("8 bytes")),
            body: &payload[at + RECORD_HEADER..at + RECORD_HEADER + body_len],
        });
        at += len;
    }
}

/// What opening a segment for appending found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Valid chunks.
    pub chunks: usize,
    /// The last sequence archived (a gap marker's last missing one), if any.
    pub last_seq: Option<u64>,
    /// The last record's publish time.
    pub last_time_ns: Option<i64>,
    /// Where appending resumes.
    pub end: u64,
    /// Bytes after the valid prefix that were not zero: a torn chunk, cut.
    pub torn: bool,
}

/// Appends records to a segment, a chunk at a time.
#[derive(Debug)]
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    header: SegmentHeader,
    /// Where the next chunk goes.
    end: u64,
    /// The chunk being filled: its header's room, then the records' bytes.
    chunk: Vec<u8>,
    /// Chunks written by a thread of their own ([`Self::write_behind`]).
    io: Option<WriteBehind>,
    count: u32,
    first: Option<(u64, i64)>,
    last: Option<(u64, i64)>,
    /// The chunks written (the footer index at seal).
    chunks: Vec<ChunkHeader>,
}

impl SegmentWriter {
    /// Creates `path` at its full size (`header.capacity`); no room is an error now,
    /// never later. The file is made under a staging name (`….seg.creating`, which
    /// listings ignore) and renamed to `path` only once its header is written: a recorder
    /// killed while creating it (preallocating a segment takes a while) leaves no segment
    /// without a header, which a restart would have to refuse; a staging file such a
    /// crash left is replaced.
    pub fn create(path: &Path, header: SegmentHeader) -> Result<Self, ArchiveError> {
        if header.capacity < HEADER_LEN + (CHUNK_HEADER + CHUNK_PAYLOAD) as u64 {
            return Err(ArchiveError::Invalid {
                path: path.to_owned(),
                problem: format!("capacity {} is too small for a chunk", header.capacity),
            });
        }
        let mut staging = path.as_os_str().to_owned();
        staging.push(".creating");
        let staging = std::path::PathBuf::from(staging);
        match std::fs::remove_file(&staging) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error(&staging)(e));
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&staging)
            .map_err(io_error(&staging))?;
        let made = file
            .set_len(header.capacity)
            .map_err(io_error(&staging))
            .and_then(|()| {
                reserve(&file, header.capacity).map_err(|source| ArchiveError::NoRoom {
                    path: path.to_owned(),
                    capacity: header.capacity,
                    source,
                })
            })
            .and_then(|()| {
                file.write_all_at(&header.encode(), 0)
                    .map_err(io_error(&staging))
            })
            .and_then(|()| {
                // never over an existing segment (one recorder writes a stream's
                // directory: it holds the directory's recorder lock)
                if path.exists() {
                    return Err(io_error(path)(io::ErrorKind::AlreadyExists.into()));
                }
                std::fs::rename(&staging, path).map_err(io_error(path))
            });
        if made.is_err() {
            let _ = std::fs::remove_file(&staging);
        }
        made?;
        Ok(Self {
            file,
            path: path.to_owned(),
            header,
            end: HEADER_LEN,
            chunk: empty_chunk(),
            io: None,
            count: 0,
            first: None,
            last: None,
            chunks: Vec::new(),
        })
    }

    /// Opens an unsealed segment to append after its valid prefix (a torn chunk after it
    /// is cleared).
    pub fn open_append(path: &Path) -> Result<(Self, Recovered), ArchiveError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        let mut raw = vec![0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut raw, 0).map_err(io_error(path))?;
        let header = SegmentHeader::decode(&raw, path)?;
        if header.sealed {
            return Err(ArchiveError::Sealed);
        }
        let capacity = file
            .metadata()
            .map_err(io_error(path))?
            .len()
            .min(header.capacity);
        let (chunks, end) = valid_chunks(&file, path, capacity, true, HEADER_LEN)?;
        // whatever follows the valid prefix (a torn chunk) is zeroed
        let tail = (capacity - end).min((CHUNK_HEADER + MAX_RECORD + CHUNK_PAYLOAD) as u64);
        let mut rest = vec![0u8; tail as usize];
        file.read_exact_at(&mut rest, end).map_err(io_error(path))?;
        let torn = rest.iter().any(|&b| b != 0);
        if torn {
            file.write_all_at(&vec![0u8; rest.len()], end)
                .map_err(io_error(path))?;
        }
        let last = chunks.last().map(|c| (c.last_seq, c.last_time_ns));
        let recovered = Recovered {
            chunks: chunks.len(),
            last_seq: last.map(|l| l.0),
            last_time_ns: last.map(|l| l.1),
            end,
            torn,
        };
        Ok((
            Self {
                file,
                path: path.to_owned(),
                header,
                end,
                chunk: empty_chunk(),
                io: None,
                count: 0,
                first: None,
                last: None,
                chunks,
            },
            recovered,
        ))
    }

    /// The segment's header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Appends one record to the current chunk (written when full or on
    /// [`Self::flush`]). `Ok(false)`: the segment has no room for it — seal it and begin
    /// the next.
    pub fn append(&mut self, record: &ArchiveRecord<'_>) -> Result<bool, ArchiveError> {
        if self.append_to_chunk(record) {
            return Ok(true);
        }
        let framed = record.framed_len();
        if framed > MAX_RECORD {
            return Err(ArchiveError::RecordTooLarge(record.body.len()));
        }
        let payload = self.chunk.len() - CHUNK_HEADER;
        if payload > 0 && payload + framed > CHUNK_PAYLOAD {
            // a full chunk: its last partial page may wait for the next chunk
            self.flush_chunk(false)?;
        }
        // room for the chunk, and for the footer index at seal
        let needed =
            self.end + (self.chunk.len() + framed) as u64 + footer_len(self.chunks.len() + 1);
        if needed > self.header.capacity {
            return Ok(false);
        }
        self.put(record, framed);
        Ok(true)
    }

    /// The common case of [`Self::append`], kept small enough to inline into a
    /// recorder's loop: the record fits in the current chunk, which has records already
    /// (so the segment's room for it was checked when its first came). False: nothing
    /// done, take the general path.
    #[inline]
    pub fn append_to_chunk(&mut self, record: &ArchiveRecord<'_>) -> bool {
        let framed = record.framed_len();
        let payload = self.chunk.len() - CHUNK_HEADER;
        // room in the segment for the whole chunk at its largest, and the footer
        let fits = payload > 0
            && payload + framed <= CHUNK_PAYLOAD
            && self.end + (CHUNK_HEADER + CHUNK_PAYLOAD) as u64 + footer_len(self.chunks.len() + 1)
                <= self.header.capacity;
        if fits {
            self.put(record, framed);
        }
        fits
    }

    /// Frames `record` (`framed` bytes) at the end of the chunk.
    #[inline]
    fn put(&mut self, record: &ArchiveRecord<'_>, framed: usize) {
        // the record header as four little-endian words: framed length and kind; body
        // length; sequence; publish time
        let head = [
            framed as u64 | u64::from(record.kind) << 32,
            record.body.len() as u64,
            record.seq,
            record.publish_ns as u64,
        ];
        let mut bytes = [0u8; RECORD_HEADER];
        for (out, word) in bytes.chunks_exact_mut(8).zip(head) {
            out.copy_from_slice(&word.to_le_bytes());
        }
        self.chunk.extend_from_slice(&bytes);
        self.chunk.extend_from_slice(record.body);
        let pad = framed - RECORD_HEADER - record.body.len();
        self.chunk.extend_from_slice(&[0u8; 8][..pad]);
        self.count += 1;
        let last_seq = record
            .gap_end()
            .map_or(record.seq, |end| end.saturating_sub(1));
        if self.first.is_none() {
            self.first = Some((record.seq, record.publish_ns));
        }
        self.last = Some((last_seq, record.publish_ns));
    }

    /// Writes the current chunk (its header and payload: one positioned write), if it
    /// has records — with write-behind, whole: readers see every record appended.
    pub fn flush(&mut self) -> Result<(), ArchiveError> {
        self.flush_chunk(true)
    }

    /// Writes the current chunk; `complete: false` lets the write-behind thread hold its
    /// last partial page back until the next chunk fills it (page-aligned writes: a
    /// write into part of a page the cache does not hold costs the kernel a zeroing of
    /// the rest, most of the copy again).
    fn flush_chunk(&mut self, complete: bool) -> Result<(), ArchiveError> {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            // nothing new: what the thread holds back is written all the same
            if complete && let Some(io) = &mut self.io {
                io.write(Vec::new(), self.end, true)
                    .map_err(io_error(&self.path))?;
            }
            return Ok(());
        };
        let header = ChunkHeader {
            offset: self.end,
            len: (self.chunk.len() - CHUNK_HEADER) as u32,
            count: self.count,
            first_seq: first.0,
            last_seq: last.0,
            first_time_ns: first.1,
            last_time_ns: last.1,
            crc: crc32c::crc32c(&self.chunk[CHUNK_HEADER..]),
        };
        self.chunk[..CHUNK_HEADER].copy_from_slice(&header.encode());
        let len = self.chunk.len() as u64;
        match &mut self.io {
            Some(io) => {
                let spare = io.spare().map_err(io_error(&self.path))?;
                let full = std::mem::replace(&mut self.chunk, spare);
                io.write(full, self.end, complete)
                    .map_err(io_error(&self.path))?;
            }
            None => {
                self.file
                    .write_all_at(&self.chunk, self.end)
                    .map_err(io_error(&self.path))?;
            }
        }
        self.end += len;
        self.chunks.push(header);
        self.chunk.truncate(CHUNK_HEADER);
        self.count = 0;
        self.first = None;
        self.last = None;
        Ok(())
    }

    /// Flushes the chunk and asks the disk to keep what was written.
    pub fn sync(&mut self) -> Result<(), ArchiveError> {
        self.flush()?;
        self.drain()?;
        self.file.sync_data().map_err(io_error(&self.path))
    }

    /// Hands full chunks to a thread of its own that writes them, in order, while this
    /// one fills the next (the copy into the page cache overlaps the reading of the
    /// ring). A write's error comes back at a later flush, sync or seal; sync and seal
    /// wait for every chunk handed over.
    pub fn write_behind(mut self) -> Result<Self, ArchiveError> {
        let file = self.file.try_clone().map_err(io_error(&self.path))?;
        self.io = Some(WriteBehind::start(file));
        Ok(self)
    }

    /// Waits until every chunk handed to the write-behind thread is written (readers
    /// see them).
    pub fn drain(&mut self) -> Result<(), ArchiveError> {
        match &mut self.io {
            Some(io) => io.drain().map_err(io_error(&self.path)),
            None => Ok(()),
        }
    }

    /// Flushes, marks the segment sealed (complete, read-only) and syncs it.
    pub fn seal(mut self) -> Result<SegmentHeader, ArchiveError> {
        self.flush()?;
        self.drain()?;
        // the footer: the chunk headers again, so that a reader indexes in one read
        let mut footer = Vec::with_capacity(footer_len(self.chunks.len()) as usize);
        footer.extend_from_slice(&FOOTER_MAGIC.to_le_bytes());
        footer.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        footer.extend_from_slice(&[0u8; 8]);
        for c in &self.chunks {
            footer.extend_from_slice(&c.encode());
        }
        let crc = crc32c::crc32c(&footer[FOOTER_HEADER..]);
        footer[8..12].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&footer, self.end)
            .map_err(io_error(&self.path))?;
        self.file.sync_data().map_err(io_error(&self.path))?;
        self.header.sealed = true;
        self.header.used = self.end;
        self.file
            .write_all_at(&self.header.encode(), 0)
            .map_err(io_error(&self.path))?;
        self.file.sync_all().map_err(io_error(&self.path))?;
        Ok(self.header)
    }
}

/// What a full check of a segment found (`mdarchive verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// The header.
    pub header: SegmentHeader,
    /// The chunks whose headers, CRCs and records hold, in order.
    pub chunks: Vec<ChunkHeader>,
    /// Where they end.
    pub end: u64,
    /// Non-zero bytes after them (a torn chunk: cut when the recorder reopens it).
    pub torn_bytes: u64,
    /// A sealed segment's footer index: present and equal to the chunks.
    pub footer_ok: Option<bool>,
}

/// Reads every chunk of `path` and checks it (CRC, record framing, order).
pub fn check_segment(path: &Path) -> Result<SegmentCheck, ArchiveError> {
    let header = SegmentReader::open_header(path)?;
    let file = File::open(path).map_err(io_error(path))?;
    let file_len = file.metadata().map_err(io_error(path))?.len();
    let capacity = file_len.min(header.capacity);
    let (chunks, end) = valid_chunks(&file, path, capacity, true, HEADER_LEN)?;
    let footer_ok = header
        .sealed
        .then(|| read_footer(&file, &header, capacity).is_some_and(|f| f == chunks));
    // the bytes after the valid prefix (after the footer of a sealed one) should be zero
    let after = if header.sealed && footer_ok == Some(true) {
        end + footer_len(chunks.len())
    } else {
        end
    };
    let mut torn_bytes = 0u64;
    let mut at = after;
    let mut buf = vec![0u8; 1 << 16];
    while at < capacity {
        let n = ((capacity - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)
            .map_err(io_error(path))?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            torn_bytes = at + last as u64 + 1 - after;
        }
        at += n as u64;
    }
    Ok(SegmentCheck {
        header,
        chunks,
        end,
        torn_bytes,
        footer_ok,
    })
}

/// Chunks handed over and not yet written, at most.
const WRITE_BEHIND_DEPTH: usize = 4;

/// The write-behind thread of a segment writer: chunks in, written in order, buffers
/// (or the first error) back.
#[derive(Debug)]
struct WriteBehind {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    done: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    in_flight: usize,
    /// The last chunk handed over may have left a partial page held back.
    holding: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A chunk for the write-behind thread: its bytes, where they go, and whether all of
/// them must be written now (else a last partial page may wait for the next chunk).
type Job = (Vec<u8>, u64, bool);

/// The page size writes are aligned to.
const PAGE: u64 = 4096;

/// Writes `data` at `at` after what `carry` holds back (from `carry_at`), in whole pages
/// where it can: the last partial page is kept in `carry` unless `complete`.
fn write_in_pages(
    file: &File,
    carry: &mut Vec<u8>,
    carry_at: &mut u64,
    mut data: &[u8],
    mut at: u64,
    complete: bool,
) -> io::Result<()> {
    if !carry.is_empty() && *carry_at + carry.len() as u64 != at {
        // not a continuation (never met: chunks follow one another)
        file.write_all_at(carry, *carry_at)?;
        carry.clear();
    }
    if !carry.is_empty() {
        // the held-back page, filled from the data's start
        let page_end = (*carry_at / PAGE + 1) * PAGE;
        let fill = ((page_end - at) as usize).min(data.len());
        carry.extend_from_slice(&data[..fill]);
        data = &data[fill..];
        at += fill as u64;
        if at == page_end || complete {
            file.write_all_at(carry, *carry_at)?;
            carry.clear();
        }
    }
    if data.is_empty() {
        return Ok(());
    }
    let end = at + data.len() as u64;
    let upto = if complete {
        end
    } else {
        (end / PAGE * PAGE).max(at)
    };
    let (now, later) = data.split_at((upto - at) as usize);
    if !now.is_empty() {
        file.write_all_at(now, at)?;
    }
    if !later.is_empty() {
        carry.extend_from_slice(later);
        *carry_at = upto;
    }
    Ok(())
}

/// Starts the disk writing what the write-behind thread wrote, a stretch at a time
/// (`sync_file_range(WRITE)`: asynchronous, nothing waited for), as RocksDB's
/// `bytes_per_sync` does: dirty pages do not pile up until the kernel's thresholds or
/// an fsync stall the recorder on all of them at once — a sync (periodic, at close or
/// seal) finds most of them written already.
#[derive(Debug, Default)]
struct Writeback {
    /// Writeback was started below this offset.
    started_to: u64,
}

/// Bytes written between two starts of writeback.
pub const WRITEBACK_STRETCH: u64 = 1 << 20;

impl Writeback {
    /// The file is written up to `end`.
    fn written(&mut self, file: &File, end: u64) {
        let to = end / PAGE * PAGE;
        if to < self.started_to + WRITEBACK_STRETCH {
            return;
        }
        start_writeback(file, self.started_to, to - self.started_to);
        self.started_to = to;
    }
}

/// Starts the disk writing `len` bytes of `file` from `from`, without waiting:
/// `sync_file_range(fd, from, len, SYNC_FILE_RANGE_WRITE)`. A failure is ignored (a
/// filesystem without it: the pages are written at the next sync, as without this).
/// Public for the benchmark's floor with the same writeback.
#[allow(unsafe_code)]
pub fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (libc::off64_t::try_from(from), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: a syscall on a descriptor we own, with plain integers; it touches no memory
    // of ours.
    let _ =
        unsafe { libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
}

impl WriteBehind {
    fn start(file: File) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(WRITE_BEHIND_DEPTH);
        let (back, done) = std::sync::mpsc::sync_channel(WRITE_BEHIND_DEPTH + 2);
        let thread = std::thread::Builder::new()
            .name("mdi-archive-io".into())
            .spawn(move || {
                let mut carry = Vec::with_capacity(PAGE as usize);
                let mut carry_at = 0u64;
                let mut writeback = Writeback::default();
                for (chunk, at, complete) in queue {
                    let written =
                        write_in_pages(&file, &mut carry, &mut carry_at, &chunk, at, complete)
                            .map(|()| chunk);
                    if written.is_ok() {
                        writeback
                            .written(&file, at + written.as_ref().map_or(0, |c| c.len() as u64));
                    }
                    let failed = written.is_err();
                    if back.send(written).is_err() || failed {
                        return; // after an error nothing more is written: order holds
                    }
                }
                // the writer went without a complete flush (dropped): what it handed
                // over is written whole all the same
                if !carry.is_empty() {
                    let _ = file.write_all_at(&carry, carry_at);
                }
            })
            .expect("spawning the archive's write-behind thread");
        Self {
            jobs: Some(jobs),
            done,
            in_flight: 0,
            holding: false,
            thread: Some(thread),
        }
    }

    /// An empty chunk buffer: one the thread gave back, or a new one while fewer than
    /// the depth are out.
    fn spare(&mut self) -> io::Result<Vec<u8>> {
        let back = if self.in_flight >= WRITE_BEHIND_DEPTH {
            Some(self.done.recv().map_err(|_| gone())?)
        } else {
            self.done.try_recv().ok()
        };
        match back {
            Some(result) => {
                self.in_flight -= 1;
                let mut chunk = result?;
                if chunk.capacity() < CHUNK_HEADER + CHUNK_PAYLOAD {
                    // (the empty buffer of a flush that only wrote what was held back)
                    return Ok(empty_chunk());
                }
                chunk.truncate(CHUNK_HEADER);
                Ok(chunk)
            }
            None => Ok(empty_chunk()),
        }
    }

    /// Hands `chunk` over to be written at `at` (`complete`: every byte of it, and what
    /// was held back, now). An empty complete chunk is sent only when something is held.
    fn write(&mut self, chunk: Vec<u8>, at: u64, complete: bool) -> io::Result<()> {
        if chunk.is_empty() && !self.holding {
            return Ok(());
        }
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send((chunk, at, complete))
            .map_err(|_| gone())?;
        self.in_flight += 1;
        self.holding = !complete;
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            let result = self.done.recv().map_err(|_| gone())?;
            self.in_flight -= 1;
            result?;
        }
        Ok(())
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        // what was handed over is written before the writer goes
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the archive's write-behind thread stopped after an error")
}

/// A chunk buffer: room for the header, then the largest payload.
fn empty_chunk() -> Vec<u8> {
    let mut chunk = Vec::with_capacity(CHUNK_HEADER + CHUNK_PAYLOAD + MAX_RECORD);
    chunk.resize(CHUNK_HEADER, 0);
    chunk
}

/// Footer magic ("INDX").
const FOOTER_MAGIC: u32 = 0x5844_4e49;
/// Footer header bytes: magic, chunk count, CRC32C of the headers, 4 zero bytes.
const FOOTER_HEADER: usize = 16;

/// Bytes of a footer index of `chunks` chunks.
fn footer_len(chunks: usize) -> u64 {
    (FOOTER_HEADER + chunks * CHUNK_HEADER) as u64
}

/// A sealed segment's footer index, if it is there and holds; `None` sends the reader
/// to walk the chunks instead.
fn read_footer(file: &File, header: &SegmentHeader, file_len: u64) -> Option<Vec<ChunkHeader>> {
    let at = header.used;
    let mut head = [0u8; FOOTER_HEADER];
    if at < HEADER_LEN || at + FOOTER_HEADER as u64 > file_len {
        return None;
    }
    file.read_exact_at(&mut head, at).ok()?;
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let count = u32_at(4) as u64;
    // bounded by the file before anything is allocated
    if u32_at(0) != FOOTER_MAGIC || at + footer_len(count as usize) > file_len {
        return None;
    }
    let mut raw = vec![0u8; count as usize * CHUNK_HEADER];
    file.read_exact_at(&mut raw, at + FOOTER_HEADER as u64)
        .ok()?;
    if crc32c::crc32c(&raw) != u32_at(8) {
        return None;
    }
    let mut chunks = Vec::with_capacity(count as usize);
    let mut expect = HEADER_LEN;
    for b in raw.chunks_exact(CHUNK_HEADER) {
        let c = ChunkHeader::decode(expect, b.try_into().expect("48 bytes"))?;
        if chunks
            .last()
            .is_some_and(|p: &ChunkHeader| c.first_seq <= p.last_seq)
        {
            return None;
        }
        expect += (CHUNK_HEADER + c.len as usize) as u64;
        chunks.push(c);
    }
    (expect == at).then_some(chunks)
}

/// Reserves the file's blocks now (a full disk is an error here, not at a later write);
/// a filesystem that cannot reserve is left as it is.
fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    match nix::fcntl::posix_fallocate(file, 0, len) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Reads a segment: its chunks (the valid prefix; the footer of a sealed one is the same
/// array), records from a sequence or a time found by binary search over them.
#[derive(Debug)]
pub struct SegmentReader {
    file: File,
    path: PathBuf,
    header: SegmentHeader,
    chunks: Vec<ChunkHeader>,
    /// Where the indexed chunks end.
    end: u64,
    /// The chunk read last, in words: record bodies are 8-aligned (Cap'n Proto reads
    /// them in place).
    payload: Vec<u64>,
}

impl SegmentReader {
    /// Opens `path` and indexes its valid chunks.
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        let file = File::open(path).map_err(io_error(path))?;
        let header = read_header(&file, path)?;
        let file_len = file.metadata().map_err(io_error(path))?.len();
        let capacity = file_len.min(header.capacity);
        let footer = if header.sealed {
            read_footer(&file, &header, capacity)
        } else {
            None
        };
        let (chunks, end) = match footer {
            Some(chunks) => (chunks, header.used),
            None => valid_chunks(&file, path, capacity, false, HEADER_LEN)?,
        };
        Ok(Self {
            file,
            path: path.to_owned(),
            header,
            chunks,
            end,
            payload: Vec::new(),
        })
    }

    /// Indexes the chunks written since it was opened (or last refreshed) and notes a
    /// seal; returns how many chunks are new. For following the active segment.
    pub fn refresh(&mut self) -> Result<usize, ArchiveError> {
        if self.header.sealed {
            return Ok(0);
        }
        let mut raw = vec![0u8; HEADER_LEN as usize];
        self.file
            .read_exact_at(&mut raw, 0)
            .map_err(io_error(&self.path))?;
        // a header being rewritten at seal may not hold for a moment: try again later
        if let Ok(header) = SegmentHeader::decode(&raw, &self.path) {
            self.header = header;
        }
        let capacity = self.header.capacity;
        let (mut more, end) = valid_chunks(&self.file, &self.path, capacity, false, self.end)?;
        if let (Some(last), Some(first)) = (self.chunks.last(), more.first())
            && first.first_seq <= last.last_seq
        {
            return Ok(0);
        }
        let n = more.len();
        self.chunks.append(&mut more);
        self.end = end;
        Ok(n)
    }

    /// The header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The valid chunks' headers, in order.
    pub fn chunks(&self) -> &[ChunkHeader] {
        &self.chunks
    }

    /// The first chunk that may hold `seq` or later (binary search).
    pub fn chunk_for_seq(&self, seq: u64) -> usize {
        self.chunks.partition_point(|c| c.last_seq < seq)
    }

    /// The first chunk that may hold a record published at or after `time_ns`.
    pub fn chunk_for_time(&self, time_ns: i64) -> usize {
        self.chunks.partition_point(|c| c.last_time_ns < time_ns)
    }

    /// Calls `f` with every record of chunks `from..` in order; `f` returns false to stop.
    pub fn read_chunks(
        &mut self,
        from: usize,
        mut f: impl FnMut(ArchiveRecord<'_>) -> bool,
    ) -> Result<(), ArchiveError> {
        let mut go = true;
        let mut i = from;
        while go && i < self.chunks.len() {
            self.read_chunk(i, |r| {
                if go {
                    go = f(r);
                }
            })?;
            i += 1;
        }
        Ok(())
    }

    /// Calls `f` with every record of chunk `i` (its CRC checked again: a file changed
    /// since it was indexed is not trusted). The active segment's newest chunk, caught
    /// while it is being written, is dropped from the index until it is whole.
    pub fn read_chunk(
        &mut self,
        i: usize,
        f: impl FnMut(ArchiveRecord<'_>),
    ) -> Result<(), ArchiveError> {
        let Some(&c) = self.chunks.get(i) else {
            return Ok(());
        };
        let len = c.len as usize;
        self.payload.resize(len.div_ceil(8), 0);
        let payload = &mut self.payload.as_mut_bytes()[..len];
        self.file
            .read_exact_at(payload, c.offset + CHUNK_HEADER as u64)
            .map_err(io_error(&self.path))?;
        if crc32c::crc32c(payload) != c.crc {
            if !self.header.sealed && i + 1 == self.chunks.len() {
                self.chunks.pop();
                self.end = c.offset;
                return Ok(());
            }
            return Err(ArchiveError::Invalid {
                path: self.path.clone(),
                problem: format!("chunk at byte {} changed since it was indexed", c.offset),
            });
        }
        let mut ok = true;
        each_record(&self.payload.as_bytes()[..len], f, &mut ok);
        Ok(())
    }

    /// Reads only a segment's header.
    pub fn open_header(path: &Path) -> Result<SegmentHeader, ArchiveError> {
        let file = File::open(path).map_err(io_error(path))?;
        read_header(&file, path)
    }
}

/// The header of the segment open as `file`.
fn read_header(file: &File, path: &Path) -> Result<SegmentHeader, ArchiveError> {
    let mut raw = vec![0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut raw, 0)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ArchiveError::Invalid {
                path: path.to_owned(),
                problem: "shorter than a header".into(),
            },
            _ => ArchiveError::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
    SegmentHeader::decode(&raw, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(capacity: u64) -> SegmentHeader {
        SegmentHeader {
            stream: "ticks".into(),
            epoch: 1,
            first_seq: 1,
            first_time_ns: 100,
            schema_id: 0x8bee_8940_8990_cda8,
            capacity,
            sealed: false,
            used: 0,
        }
    }

    fn body(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    fn read_all(path: &Path) -> Vec<(u16, u64, i64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut reader = SegmentReader::open(path).unwrap();
        reader
            .read_chunks(0, |r| {
                out.push((r.kind, r.seq, r.publish_ns, r.body.to_vec()));
                true
            })
            .unwrap();
        out
    }

    #[test]
    fn records_round_trip_seal_and_seek_by_sequence_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg");
        let mut w = SegmentWriter::create(&path, header(4 << 20)).unwrap();
        let mut want = Vec::new();
        for seq in 1..=20_000u64 {
            let b = body(seq, 40 + (seq as usize % 90));
            let r = ArchiveRecord {
                kind: 16,
                seq,
                publish_ns: 100 + seq as i64 * 10,
                body: &b,
            };
            assert!(w.append(&r).unwrap());
            want.push((16u16, seq, 100 + seq as i64 * 10, b));
        }
        let mut scratch = [0u8; 8];
        w.append(&ArchiveRecord::gap(20_001, 20_051, 300_000, &mut scratch))
            .unwrap();
        let sealed = w.seal().unwrap();
        assert!(sealed.sealed);
        let got = read_all(&path);
        assert_eq!(got.len(), 20_001);
        assert_eq!(&got[..20_000], &want[..]);
        assert_eq!(got[20_000].0, GAP_KIND);
        let reader = SegmentReader::open(&path).unwrap();
        assert!(reader.header().sealed);
        assert!(reader.chunks().len() > 10);
        // seek: the chunk found holds the sequence / time, the one before does not
        for seq in [1u64, 777, 12_345, 20_000] {
            let i = reader.chunk_for_seq(seq);
            let c = reader.chunks()[i];
            assert!(c.first_seq <= seq && seq <= c.last_seq, "{seq}: {c:?}");
        }
        let i = reader.chunk_for_time(100 + 5_000 * 10);
        let c = reader.chunks()[i];
        assert!(c.first_time_ns <= 50_100 && 50_100 <= c.last_time_ns);
        assert_eq!(reader.chunks().last().unwrap().last_seq, 20_050);
    }

    #[test]
    fn a_full_segment_says_so_and_a_hostile_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.seg");
        let capacity = HEADER_LEN + 2 * (CHUNK_HEADER + CHUNK_PAYLOAD) as u64;
        let mut w = SegmentWriter::create(&path, header(capacity)).unwrap();
        let b = vec![7u8; 1000];
        let mut n = 0u64;
        while w
            .append(&ArchiveRecord {
                kind: 16,
                seq: n + 1,
                publish_ns: n as i64,
                body: &b,
            })
            .unwrap()
        {
            n += 1;
        }
        assert!(n > 100);
        w.seal().unwrap();
        assert_eq!(read_all(&path).len() as u64, n);
        let junk = dir.path().join("junk.seg");
        std::fs::write(&junk, vec![0xa5u8; 8192]).unwrap();
        assert!(matches!(
            SegmentReader::open(&junk),
            Err(ArchiveError::Invalid { .. })
        ));
        // the sealed segment is indexed by its footer; a footer that does not hold is
        // passed over for the chunk walk
        let chunks = SegmentReader::open(&path).unwrap().chunks().to_vec();
        let mut bytes = std::fs::read(&path).unwrap();
        let used = SegmentReader::open(&path).unwrap().header().used as usize;
        bytes[used + FOOTER_HEADER + 20] ^= 1;
        std::fs::write(&junk, &bytes).unwrap();
        assert_eq!(SegmentReader::open(&junk).unwrap().chunks(), &chunks[..]);
        // a chunk header claiming 4 GiB is the end of the valid prefix, nothing read
        let at = HEADER_LEN as usize;
        bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&junk, &bytes).unwrap();
        assert!(SegmentReader::open(&junk).unwrap().chunks().is_empty());
        // a footer claiming more chunks than the file holds is refused before allocating
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[used + 4..used + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&junk, &bytes).unwrap();
        assert_eq!(SegmentReader::open(&junk).unwrap().chunks(), &chunks[..]);
    }

    proptest! {
        /// Chunks written in pages (the last partial page held back unless complete):
        /// the file ends equal to the chunks one after another; what is held back is
        /// the end of what was handed over, within one page; after a complete write
        /// nothing is held back and the file holds everything.
        #[test]
        fn writes_in_pages_lose_nothing_and_hold_back_at_most_a_page(
            chunks in proptest::collection::vec((1usize..20_000, any::<bool>()), 1..30),
            start in 0u64..9000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = File::options()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let (mut carry, mut carry_at) = (Vec::new(), 0u64);
            let mut expected = vec![0u8; start as usize];
            let mut at = start;
            for (n, (len, complete)) in chunks.iter().enumerate() {
                let data: Vec<u8> = (0..*len).map(|i| (i * 7 + n * 13) as u8 | 1).collect();
                write_in_pages(&file, &mut carry, &mut carry_at, &data, at, *complete).unwrap();
                expected.extend_from_slice(&data);
                at += *len as u64;
                prop_assert!(carry.len() < PAGE as usize);
                if *complete {
                    prop_assert!(carry.is_empty());
                    let on_disk = std::fs::read(&path).unwrap();
                    prop_assert_eq!(&on_disk[..], &expected[..]);
                } else if !carry.is_empty() {
                    // the end of what was handed over, within one page
                    prop_assert_eq!(carry_at + carry.len() as u64, at);
                    prop_assert_eq!(carry_at / PAGE, (at - 1) / PAGE);
                }
            }
            write_in_pages(&file, &mut carry, &mut carry_at, &[], at, true).unwrap();
            prop_assert!(carry.is_empty());
            prop_assert_eq!(std::fs::read(&path).unwrap(), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any appends and flushes, then a crash at any byte of the writes (the file
        /// holds every write before, a prefix of the one in flight, zeros after):
        /// reopening finds exactly the records of the whole chunks, each once, in
        /// order; appending after that and reading gives that prefix and the new ones.
        #[test]
        fn a_crash_at_any_byte_leaves_a_prefix_each_record_once(
            sizes in proptest::collection::vec(0usize..600, 1..400),
            flush_every in 1usize..60,
            cut_fraction in 0.0f64..1.0,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.seg");
            let capacity = HEADER_LEN + 8 * (CHUNK_HEADER + CHUNK_PAYLOAD) as u64;
            let mut w = SegmentWriter::create(&path, header(capacity)).unwrap();
            // the crash comes while chunk k + 1 is written: the file after chunk k (k = 0:
            // none yet) and after chunk k + 1 are kept, and the records each completed
            let flushes = (1..=sizes.len())
                .filter(|&n| n % flush_every == 0 || n == sizes.len())
                .count();
            let k = ((flushes as f64) * cut_fraction) as usize % flushes;
            let mut before = std::fs::read(&path).unwrap();
            let mut after = before.clone();
            let (mut done_before, mut done_after) = (0usize, 0usize);
            let mut flushed = 0;
            for (i, &len) in sizes.iter().enumerate() {
                let seq = i as u64 + 1;
                let b = body(seq, len);
                w.append(&ArchiveRecord { kind: 16, seq, publish_ns: seq as i64, body: &b }).unwrap();
                if (i + 1) % flush_every == 0 || i + 1 == sizes.len() {
                    w.flush().unwrap();
                    flushed += 1;
                    if flushed == k {
                        before = std::fs::read(&path).unwrap();
                        done_before = i + 1;
                    }
                    if flushed == k + 1 {
                        after = std::fs::read(&path).unwrap();
                        done_after = i + 1;
                        break;
                    }
                }
            }
            drop(w);
            let changed = before.iter().zip(&after).rposition(|(a, b)| a != b).map_or(0, |p| p + 1);
            let first_change = before.iter().zip(&after).position(|(a, b)| a != b).unwrap_or(0);
            let cut = first_change + ((changed.saturating_sub(first_change)) as f64 * cut_fraction) as usize;
            let mut crashed = before.clone();
            crashed[..cut].copy_from_slice(&after[..cut]);
            std::fs::write(&path, &crashed).unwrap();
            let (mut w, recovered) = SegmentWriter::open_append(&path).unwrap();
            // whole chunks only: those before the crash, or the one in flight if the cut
            // completed it
            let whole = if crashed == after { done_after } else { done_before };
            prop_assert_eq!(recovered.last_seq, (whole > 0).then_some(whole as u64));
            let got = read_all(&path);
            prop_assert_eq!(got.len(), whole);
            for (i, r) in got.iter().enumerate() {
                prop_assert_eq!(r.1, i as u64 + 1);
                prop_assert_eq!(&r.3, &body(i as u64 + 1, sizes[i]));
            }
            // appending resumes right after the prefix
            let next = whole as u64 + 1;
            let b = body(next, 33);
            w.append(&ArchiveRecord { kind: 16, seq: next, publish_ns: next as i64, body: &b }).unwrap();
            w.flush().unwrap();
            let got = read_all(&path);
            prop_assert_eq!(got.len(), whole + 1);
            prop_assert_eq!(got[whole].1, next);
        }
    }

    #[test]
    fn a_segment_is_never_made_over_another_and_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg");
        let mut w = SegmentWriter::create(&path, header(1 << 20)).unwrap();
        w.append(&ArchiveRecord {
            kind: 7,
            seq: 1,
            publish_ns: 5,
            body: &[1; 40],
        })
        .unwrap();
        w.flush().unwrap();
        let again = SegmentWriter::create(&path, header(1 << 20)).unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["00000000000000000001.seg"]);
        // the first is untouched
        let reader = SegmentReader::open(&path).unwrap();
        assert_eq!(reader.chunks().len(), 1);
    }
}
