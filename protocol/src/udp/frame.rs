//! Frames of mdi's reliable-UDP protocol (wire version 1); see `docs/protocol.md`.
//!
//! One frame per datagram. Every frame starts with a 16-byte [`FrameHeader`]; fields are
//! little-endian and every frame's length is a multiple of 8. Parsing never panics: any
//! datagram is either a [`Frame`] or a [`FrameError`] saying what is wrong, so a receiver
//! can count and drop it.

use std::fmt;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::ring::{RECORD_HEADER_LEN, RecordHeader, align_record};

/// Wire version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Default datagram size limit (as Aeron's), bytes of UDP payload.
pub const DEFAULT_MTU: usize = 1408;
/// Smallest MTU accepted: a DATA header plus one minimal record.
pub const MIN_MTU: usize = 128;
/// Largest MTU accepted (a UDP datagram without IP fragmentation on jumbo frames).
pub const MAX_MTU: usize = 8960;
/// Bytes of a stream name carried in SETUP.
pub const STREAM_NAME_LEN: usize = 64;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Sender → receivers: session description (join).
    Setup = 1,
    /// Sender → receivers: whole ring records, or a fragment of one.
    Data = 2,
    /// Sender → receivers: the tail position while idle.
    Heartbeat = 3,
    /// Receiver → sender: retransmit a range.
    Nak = 4,
    /// Receiver → sender: position and liveness.
    Status = 5,
    /// Sender → receivers: a range is older than the sender retains.
    Unavailable = 6,
    /// Sender → receivers: the stream ended cleanly.
    End = 7,
}

impl FrameType {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Setup,
            2 => Self::Data,
            3 => Self::Heartbeat,
            4 => Self::Nak,
            5 => Self::Status,
            6 => Self::Unavailable,
            7 => Self::End,
            _ => return None,
        })
    }
}

/// DATA flag: the payload is a fragment of one record larger than a datagram.
pub const FLAG_FRAGMENT: u16 = 0x1;
/// SETUP flag: the session has ended; `tail_position` is its final position.
pub const FLAG_ENDED: u16 = 0x1;
/// STATUS flag: the receiver has no SETUP for this session and asks for one.
pub const FLAG_SETUP_REQUEST: u16 = 0x1;
/// STATUS flag: the receiver saw the session's END and has everything up to it (or
/// gave up, as exact losses, what was not repaired in time): it needs nothing more, and
/// the sender stops repeating END for it.
pub const FLAG_END_SEEN: u16 = 0x2;
/// NAK flag: the receiver asked for this range before and waited a repair round trip
/// in vain (the retransmission was lost); a sender answers it even if it just
/// retransmitted the range for someone else.
pub const FLAG_REPEAT: u16 = 0x1;
/// Stream positions stay below this (at 10 GB/s a stream reaches it in 14 years); a
/// frame claiming more is forged or corrupt, and refused before any arithmetic on it.
pub const MAX_POSITION: u64 = 1 << 62;
/// No ring is larger than this (bytes); a SETUP claiming more is refused.
pub const MAX_CAPACITY: u64 = 1 << 40;
/// The most one NAK asks for (bytes); a longer gap is asked for piece by piece.
pub const MAX_NAK_BYTES: u64 = 1 << 20;

/// The 16 bytes in front of every frame.
///
/// ```text
///  0         1         2                   4                   8                  12                  16
///  +---------+---------+-------------------+-------------------+-------------------+-------------------+
///  | version | type    | flags (u16)       | frame length (u32)| session id (u32)  | stream id (u32)   |
///  +---------+---------+-------------------+-------------------+-------------------+-------------------+
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    /// [`WIRE_VERSION`].
    pub version: u8,
    /// [`FrameType`] as a byte.
    pub frame_type: u8,
    /// Per-type flags.
    pub flags: U16,
    /// Length of the whole frame in bytes, a multiple of 8.
    pub frame_len: U32,
    /// The sender instance (random per sender start).
    pub session_id: U32,
    /// The stream within a channel.
    pub stream_id: U32,
}

/// Length of [`FrameHeader`].
pub const HEADER_LEN: usize = 16;
const _: () = assert!(size_of::<FrameHeader>() == HEADER_LEN);

/// SETUP body: what a receiver needs to build a replica.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SetupBody {
    /// The source ring's writer epoch.
    pub epoch: U64,
    /// Identifies the source ring file (its creation time, ns): a new id means a new ring.
    pub ring_id: U64,
    /// The source ring's data-region bytes; a replica has the same, so positions match.
    pub capacity: U64,
    /// First position this session serves.
    pub initial_position: U64,
    /// Sequence number of the record at `initial_position`.
    pub initial_seq: U64,
    /// Earliest position the sender can still retransmit.
    pub retained_from: U64,
    /// Next position the sender will send.
    pub tail_position: U64,
    /// The sender's MTU.
    pub mtu: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Stream name, NUL-padded.
    pub stream_name: [u8; STREAM_NAME_LEN],
}

/// DATA body header; the payload follows.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DataBody {
    /// Stream position of the first payload byte (a record boundary, or the start of the
    /// fragmented record).
    pub position: U64,
    /// Where the stream continues after this frame (padding in the source ring skipped).
    pub next_position: U64,
    /// For a fragment: offset of the payload within the record; else 0.
    pub fragment_offset: U32,
    /// For a fragment: the record's aligned length; else 0.
    pub record_len: U32,
}

/// HEARTBEAT body.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HeartbeatBody {
    /// Everything below this position has been sent.
    pub tail_position: U64,
}

/// NAK body.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct NakBody {
    /// The receiver asking.
    pub receiver_id: U64,
    /// First missing position.
    pub position: U64,
    /// Missing bytes from there.
    pub length: U32,
    /// Reserved, zero.
    pub reserved: U32,
}

/// STATUS body.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StatusBody {
    /// The receiver reporting.
    pub receiver_id: U64,
    /// Everything below this position is in the receiver's replica.
    pub position: U64,
    /// Highest position seen in any frame.
    pub high_water_mark: U64,
    /// Records the receiver reported lost (unrecoverable), in total.
    pub lost_records: U64,
}

/// UNAVAILABLE body.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct UnavailableBody {
    /// The position asked for.
    pub from_position: U64,
    /// Where the stream can be resumed: the earliest retained record boundary.
    pub resume_position: U64,
    /// Sequence number of the record at `resume_position`.
    pub resume_seq: U64,
    /// Reserved, zero.
    pub reserved: U64,
}

/// END body.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EndBody {
    /// The stream's final position.
    pub final_position: U64,
    /// Sequence number the next record would have had.
    pub final_seq: U64,
}

/// Fixed length of each frame type (DATA: without payload).
fn fixed_len(frame_type: FrameType) -> usize {
    HEADER_LEN
        + match frame_type {
            FrameType::Setup => size_of::<SetupBody>(),
            FrameType::Data => size_of::<DataBody>(),
            FrameType::Heartbeat => size_of::<HeartbeatBody>(),
            FrameType::Nak => size_of::<NakBody>(),
            FrameType::Status => size_of::<StatusBody>(),
            FrameType::Unavailable => size_of::<UnavailableBody>(),
            FrameType::End => size_of::<EndBody>(),
        }
}

/// Length of a DATA frame without payload.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + size_of::<DataBody>();

const _: () =
    assert!(size_of::<SetupBody>().is_multiple_of(8) && size_of::<DataBody>().is_multiple_of(8));

/// Why a datagram is not a valid frame. Receivers count these by kind and drop the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the frame header or than its type's fixed part.
    #[error("truncated frame: {len} bytes, need {need}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the frame needs.
        need: usize,
    },
    /// Another wire version.
    #[error("wire version {0}, this build speaks version 1")]
    UnsupportedVersion(u8),
    /// Unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The header's length disagrees with the datagram, or is not a multiple of 8.
    #[error("frame length {declared} does not match the datagram's {actual} bytes")]
    LengthMismatch {
        /// Length in the header.
        declared: u32,
        /// Datagram length.
        actual: usize,
    },
    /// A DATA payload that is not a sequence of whole records (or a valid fragment).
    #[error("malformed DATA payload: {0}")]
    BadPayload(&'static str),
}

/// A parsed frame, borrowing the datagram.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// SETUP.
    Setup(Addressed<&'a SetupBody>),
    /// DATA: whole records, or a fragment of one.
    Data(Addressed<Data<'a>>),
    /// HEARTBEAT.
    Heartbeat(Addressed<&'a HeartbeatBody>),
    /// NAK.
    Nak(Addressed<&'a NakBody>),
    /// STATUS.
    Status(Addressed<&'a StatusBody>),
    /// UNAVAILABLE.
    Unavailable(Addressed<&'a UnavailableBody>),
    /// END.
    End(Addressed<&'a EndBody>),
}

/// A frame body with the session and stream it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Addressed<T> {
    /// Session id from the header.
    pub session_id: u32,
    /// Stream id from the header.
    pub stream_id: u32,
    /// Header flags.
    pub flags: u16,
    /// The body.
    pub body: T,
}

/// A DATA frame's content.
#[derive(Clone, Copy)]
pub struct Data<'a> {
    /// The fixed part.
    pub header: &'a DataBody,
    /// Whole records (header + body, each padded to 8), or one fragment's bytes.
    pub payload: &'a [u8],
}

impl fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("position", &self.header.position.get())
            .field("next_position", &self.header.next_position.get())
            .field("fragment_offset", &self.header.fragment_offset.get())
            .field("record_len", &self.header.record_len.get())
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Data<'_> {
    /// Is this a fragment of one large record?
    pub fn is_fragment(&self, flags: u16) -> bool {
        flags & FLAG_FRAGMENT != 0
    }

    /// The whole records of a non-fragment payload: (offset in payload, header).
    pub fn records(&self) -> impl Iterator<Item = (usize, RecordHeader)> + '_ {
        let mut offset = 0usize;
        std::iter::from_fn(move || {
            let header = RecordHeader::read_from_prefix(self.payload.get(offset..)?)
                .ok()?
                .0;
            let at = offset;
            offset += usize::try_from(align_record(u64::from(header.len))).ok()?;
            Some((at, header))
        })
    }
}

impl<'a> Frame<'a> {
    /// Parses one datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, FrameError> {
        let (header, rest) =
            FrameHeader::ref_from_prefix(datagram).map_err(|_| FrameError::Truncated {
                len: datagram.len(),
                need: HEADER_LEN,
            })?;
        if header.version != WIRE_VERSION {
            return Err(FrameError::UnsupportedVersion(header.version));
        }
        let frame_type = FrameType::from_u8(header.frame_type)
            .ok_or(FrameError::UnknownType(header.frame_type))?;
        let declared = header.frame_len.get();
        if usize::try_from(declared).ok() != Some(datagram.len()) || declared % 8 != 0 {
            return Err(FrameError::LengthMismatch {
                declared,
                actual: datagram.len(),
            });
        }
        let need = fixed_len(frame_type);
        if datagram.len() < need || (frame_type != FrameType::Data && datagram.len() != need) {
            return Err(FrameError::Truncated {
                len: datagram.len(),
                need,
            });
        }
        let flags = header.flags.get();
        let meta = Addressed {
            session_id: header.session_id.get(),
            stream_id: header.stream_id.get(),
            flags,
            body: (),
        };
        let len = datagram.len();
        Ok(match frame_type {
            FrameType::Setup => Frame::Setup(meta.with(body(rest, len, need)?)),
            FrameType::Heartbeat => Frame::Heartbeat(meta.with(body(rest, len, need)?)),
            FrameType::Nak => Frame::Nak(meta.with(body(rest, len, need)?)),
            FrameType::Status => Frame::Status(meta.with(body(rest, len, need)?)),
            FrameType::Unavailable => Frame::Unavailable(meta.with(body(rest, len, need)?)),
            FrameType::End => Frame::End(meta.with(body(rest, len, need)?)),
            FrameType::Data => {
                let (header, payload) = DataBody::ref_from_prefix(rest)
                    .map_err(|_| FrameError::Truncated { len, need })?;
                let data = Data { header, payload };
                validate_data(&data, flags)?;
                Frame::Data(meta.with(data))
            }
        })
    }
}

impl Addressed<()> {
    fn with<T>(self, body: T) -> Addressed<T> {
        Addressed {
            session_id: self.session_id,
            stream_id: self.stream_id,
            flags: self.flags,
            body,
        }
    }
}

/// A fixed-size body occupying all of `rest`.
fn body<T: FromBytes + KnownLayout + Immutable>(
    rest: &[u8],
    len: usize,
    need: usize,
) -> Result<&T, FrameError> {
    T::ref_from_bytes(rest).map_err(|_| FrameError::Truncated { len, need })
}

fn validate_data(data: &Data<'_>, flags: u16) -> Result<(), FrameError> {
    let position = data.header.position.get();
    let next = data.header.next_position.get();
    let payload_len = data.payload.len() as u64;
    if !position.is_multiple_of(8) || !next.is_multiple_of(8) {
        return Err(FrameError::BadPayload("positions must be 8-byte aligned"));
    }
    if flags & FLAG_FRAGMENT != 0 {
        let offset = u64::from(data.header.fragment_offset.get());
        let record_len = u64::from(data.header.record_len.get());
        if record_len < RECORD_HEADER_LEN || record_len % 8 != 0 {
            return Err(FrameError::BadPayload(
                "fragment of a record with a bad length",
            ));
        }
        if payload_len == 0 || offset % 8 != 0 || offset + payload_len > record_len {
            return Err(FrameError::BadPayload(
                "fragment outside its record or unaligned",
            ));
        }
        if offset == 0 {
            let header = RecordHeader::read_from_prefix(data.payload)
                .map_err(|_| FrameError::BadPayload("first fragment shorter than a record header"))?
                .0;
            if align_record(u64::from(header.len)) != record_len {
                return Err(FrameError::BadPayload(
                    "first fragment's record header disagrees with its length",
                ));
            }
        }
        if next.checked_sub(position).is_none_or(|d| d < record_len) {
            return Err(FrameError::BadPayload(
                "next position inside the fragmented record",
            ));
        }
        return Ok(());
    }
    if data.header.fragment_offset.get() != 0 || data.header.record_len.get() != 0 {
        return Err(FrameError::BadPayload(
            "fragment fields set without the fragment flag",
        ));
    }
    let mut offset = 0u64;
    while offset < payload_len {
        let rest = &data.payload[usize::try_from(offset).unwrap_or(usize::MAX)..];
        let header = RecordHeader::read_from_prefix(rest)
            .map_err(|_| FrameError::BadPayload("record header cut short"))?
            .0;
        let len = u64::from(header.len);
        if len < RECORD_HEADER_LEN || header.kind == 0 {
            return Err(FrameError::BadPayload("record with a bad length or kind"));
        }
        let aligned = align_record(len);
        if offset + aligned > payload_len {
            return Err(FrameError::BadPayload("record runs past the payload"));
        }
        offset += aligned;
    }
    if next.checked_sub(position).is_none_or(|d| d < payload_len) {
        return Err(FrameError::BadPayload("next position inside the payload"));
    }
    Ok(())
}

/// Writes the frames of one stream of one session into a reusable buffer. Each frame
/// method clears the buffer and leaves one complete frame in it.
#[derive(Debug)]
pub struct FrameWriter {
    buf: Vec<u8>,
    session_id: u32,
    stream_id: u32,
}

impl FrameWriter {
    /// A writer for `stream_id` of `session_id`, with room for one `mtu`-byte datagram.
    pub fn new(mtu: usize, session_id: u32, stream_id: u32) -> Self {
        Self {
            buf: Vec::with_capacity(mtu),
            session_id,
            stream_id,
        }
    }

    /// Addresses later frames to another session (a receiver that joins a new one).
    pub fn set_session(&mut self, session_id: u32) {
        self.session_id = session_id;
    }

    /// The frame written last.
    pub fn frame(&self) -> &[u8] {
        &self.buf
    }

    fn start(&mut self, frame_type: FrameType, flags: u16) {
        self.buf.clear();
        let header = FrameHeader {
            version: WIRE_VERSION,
            frame_type: frame_type as u8,
            flags: U16::new(flags),
            frame_len: U32::new(0),
            session_id: U32::new(self.session_id),
            stream_id: U32::new(self.stream_id),
        };
        self.buf.extend_from_slice(header.as_bytes());
    }

    fn finish(&mut self) -> &[u8] {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[4..8].copy_from_slice(&len.to_le_bytes());
        &self.buf
    }

    /// SETUP (`flags`: [`FLAG_ENDED`] once the session has ended).
    pub fn setup(&mut self, flags: u16, body: &SetupBody) -> &[u8] {
        self.start(FrameType::Setup, flags);
        self.buf.extend_from_slice(body.as_bytes());
        self.finish()
    }

    /// DATA with whole records (`records`: raw ring records, each padded to 8 bytes).
    pub fn data(&mut self, position: u64, next_position: u64, records: &[u8]) -> &[u8] {
        self.start(FrameType::Data, 0);
        let body = DataBody {
            position: U64::new(position),
            next_position: U64::new(next_position),
            fragment_offset: U32::new(0),
            record_len: U32::new(0),
        };
        self.buf.extend_from_slice(body.as_bytes());
        self.buf.extend_from_slice(records);
        self.finish()
    }

    /// DATA carrying bytes `[offset, offset + bytes.len())` of the record at `position`.
    pub fn fragment(
        &mut self,
        position: u64,
        next_position: u64,
        record_len: u32,
        offset: u32,
        bytes: &[u8],
    ) -> &[u8] {
        self.start(FrameType::Data, FLAG_FRAGMENT);
        let body = DataBody {
            position: U64::new(position),
            next_position: U64::new(next_position),
            fragment_offset: U32::new(offset),
            record_len: U32::new(record_len),
        };
        self.buf.extend_from_slice(body.as_bytes());
        self.buf.extend_from_slice(bytes);
        self.finish()
    }

    /// HEARTBEAT.
    pub fn heartbeat(&mut self, tail_position: u64) -> &[u8] {
        self.start(FrameType::Heartbeat, 0);
        self.buf.extend_from_slice(
            HeartbeatBody {
                tail_position: U64::new(tail_position),
            }
            .as_bytes(),
        );
        self.finish()
    }

    /// NAK.
    pub fn nak(&mut self, flags: u16, receiver_id: u64, position: u64, length: u32) -> &[u8] {
        self.start(FrameType::Nak, flags);
        self.buf.extend_from_slice(
            NakBody {
                receiver_id: U64::new(receiver_id),
                position: U64::new(position),
                length: U32::new(length),
                reserved: U32::new(0),
            }
            .as_bytes(),
        );
        self.finish()
    }

    /// STATUS.
    pub fn status(&mut self, flags: u16, body: &StatusBody) -> &[u8] {
        self.start(FrameType::Status, flags);
        self.buf.extend_from_slice(body.as_bytes());
        self.finish()
    }

    /// UNAVAILABLE.
    pub fn unavailable(&mut self, body: &UnavailableBody) -> &[u8] {
        self.start(FrameType::Unavailable, 0);
        self.buf.extend_from_slice(body.as_bytes());
        self.finish()
    }

    /// END.
    pub fn end(&mut self, final_position: u64, final_seq: u64) -> &[u8] {
        self.start(FrameType::End, 0);
        self.buf.extend_from_slice(
            EndBody {
                final_position: U64::new(final_position),
                final_seq: U64::new(final_seq),
            }
            .as_bytes(),
        );
        self.finish()
    }
}

/// The stream name carried in SETUP, NUL-padded; None if it does not fit.
pub fn encode_stream_name(name: &str) -> Option<[u8; STREAM_NAME_LEN]> {
    let mut out = [0u8; STREAM_NAME_LEN];
    if name.len() >= STREAM_NAME_LEN {
        return None;
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Some(out)
}

/// The stream name in a SETUP, if it is UTF-8.
pub fn decode_stream_name(raw: &[u8; STREAM_NAME_LEN]) -> Option<&str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    std::str::from_utf8(&raw[..end]).ok()
}
