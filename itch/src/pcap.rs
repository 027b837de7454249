//! Packets as captured: pcap and pcapng files (what tcpdump and Wireshark write), told
//! apart by their magic bytes and read with the maintained `pcap-parser` crate, and the
//! link layers inside them — Ethernet, Linux cooked capture (SLL and SLL2, what
//! `tcpdump -i any` writes) and raw IPv4 — down to the UDP datagram, parsed in user space
//! (the same parsing a kernel-bypass receiver does on raw frames).

use std::io::{self, Chain, Cursor, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};

use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, LegacyPcapReader, Linktype, PcapBlockOwned, PcapNGReader};

/// pcap magic, microsecond timestamps (as written; byte-swapped files are read too).
const MAGIC_US: u32 = 0xa1b2_c3d4;
/// pcap magic, nanosecond timestamps.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// pcapng's section header block type (the same in either byte order).
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;
/// Link type Ethernet.
const LINKTYPE_ETHERNET: u32 = 1;

/// What a capture file is, from its first four bytes; `None` for anything else.
pub fn capture_format(first: [u8; 4]) -> Option<CaptureFormat> {
    let magic = u32::from_le_bytes(first);
    match magic {
        PCAPNG_MAGIC => Some(CaptureFormat::PcapNg),
        m if [MAGIC_US, MAGIC_NS].contains(&m)
            || [MAGIC_US, MAGIC_NS].contains(&m.swap_bytes()) =>
        {
            Some(CaptureFormat::Pcap)
        }
        _ => None,
    }
}

/// A capture file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic pcap (libpcap's, either byte order, µs or ns timestamps).
    Pcap,
    /// pcapng (Wireshark's default).
    PcapNg,
}

/// The link layer of a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II (link type 1).
    Ethernet,
    /// Linux cooked capture v1 (113): a 16-byte header.
    LinuxSll,
    /// Linux cooked capture v2 (276): a 20-byte header.
    LinuxSll2,
    /// Raw IPv4 (228, or raw IP 101 carrying IPv4).
    RawIp,
}

impl LinkType {
    fn from_linktype(link: Linktype) -> Option<Self> {
        match link.0 {
            1 => Some(Self::Ethernet),
            113 => Some(Self::LinuxSll),
            276 => Some(Self::LinuxSll2),
            101 | 228 => Some(Self::RawIp),
            _ => None,
        }
    }
}

/// Why a capture cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// Reading failed.
    #[error("reading the capture: {0}")]
    Io(#[from] io::Error),
    /// Neither pcap nor pcapng.
    #[error("not a pcap or pcapng capture (its first bytes are {0:#010x})")]
    Magic(u32),
    /// A link type this reader does not take.
    #[error(
        "capture link type {0} is not one of Ethernet (1), Linux cooked SLL (113) or SLL2 (276), raw IP (101, 228)"
    )]
    LinkType(u32),
    /// A record claims more bytes than the capture's snapshot length allows (a corrupt
    /// or hostile header: nothing that long is read or allocated).
    #[error(
        "record {index} at byte {offset} claims {len} bytes, more than the capture's limit of {limit}"
    )]
    RecordTooLong {
        /// Which record (0-based, packets only).
        index: u64,
        /// Where its block starts in the file.
        offset: u64,
        /// The length its header claims.
        len: u32,
        /// The snapshot length (at most [`MAX_RECORD_LEN`]).
        limit: u32,
    },
    /// The file ends inside a block.
    #[error(
        "the capture is truncated: it ends inside the block at byte {offset}, after {index} packets"
    )]
    Truncated {
        /// Packets read before.
        index: u64,
        /// Where the cut block starts.
        offset: u64,
    },
    /// A block that does not parse.
    #[error("the capture is corrupt at byte {offset} (after {index} packets): {detail}")]
    Corrupt {
        /// Packets read before.
        index: u64,
        /// Where the bad block starts.
        offset: u64,
        /// What the parser said.
        detail: String,
    },
    /// A packet of an interface the file never described.
    #[error(
        "packet {index} at byte {offset} names interface {interface}, which the capture does not describe"
    )]
    UnknownInterface {
        /// Which packet.
        index: u64,
        /// Where.
        offset: u64,
        /// The interface id it names.
        interface: u32,
    },
}

/// One received or captured frame, borrowed from its source until the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture (or receive) time, ns since the Unix epoch.
    pub time_ns: i64,
    /// The frame's bytes (its link-layer header first).
    pub data: &'a [u8],
    /// Its link layer.
    pub link: LinkType,
}

impl<'a> Frame<'a> {
    /// The UDP datagram this frame carries (IPv4), whatever its link layer; `None` for
    /// anything else.
    pub fn datagram(&self) -> Option<Datagram<'a>> {
        match self.link {
            LinkType::Ethernet => udp_datagram(self.data),
            LinkType::LinuxSll => {
                // packet type, ARPHRD, address length, 8 address bytes, protocol
                let protocol = u16::from_be_bytes([*self.data.get(14)?, *self.data.get(15)?]);
                (protocol == 0x0800).then_some(())?;
                ipv4_udp(self.data.get(16..)?)
            }
            LinkType::LinuxSll2 => {
                // protocol first, then reserved, interface, ARPHRD, type, address
                let protocol = u16::from_be_bytes([*self.data.first()?, *self.data.get(1)?]);
                (protocol == 0x0800).then_some(())?;
                ipv4_udp(self.data.get(20..)?)
            }
            LinkType::RawIp => ipv4_udp(self.data),
        }
    }
}

/// The longest captured frame read from any capture, whatever its header says
/// (tcpdump's largest snapshot length).
pub const MAX_RECORD_LEN: u32 = 262_144;

/// The parser's buffer: the longest record and its block header fit, many times over.
const BUFFER: usize = 1 << 20;

type Input<R> = Full<Chain<Cursor<[u8; 4]>, R>>;

/// Reads until the buffer is full or the input ends: the parser reads the file header in
/// a single `read`, which must not stop at the four magic bytes put back in front.
#[derive(Debug)]
struct Full<R>(R);

impl<R: Read> Read for Full<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.0.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 => {
                    // said on the next call
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

enum Parser<R: Read> {
    Legacy(LegacyPcapReader<Input<R>>),
    Ng(PcapNGReader<Input<R>>),
}

impl<R: Read> std::fmt::Debug for Parser<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Legacy(_) => "pcap",
            Self::Ng(_) => "pcapng",
        })
    }
}

/// What a pcapng interface description says.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: Option<LinkType>,
    link_raw: u32,
    /// Timestamp units per second, and offset (s).
    resolution: u64,
    offset: i64,
    snap_len: u32,
    /// Legacy pcap: its record headers are big-endian.
    big_endian: bool,
}

/// Reads the frames of a pcap or pcapng capture (told apart by its magic bytes).
#[derive(Debug)]
pub struct PcapReader<R: Read> {
    parser: Parser<R>,
    format: CaptureFormat,
    /// Legacy pcap: its link type, timestamp unit and snapshot length.
    legacy: Option<Interface>,
    /// pcapng: the interfaces of the current section.
    interfaces: Vec<Interface>,
    index: u64,
    /// The last frame's bytes (reused).
    data: Vec<u8>,
}

impl<R: Read> PcapReader<R> {
    /// Reads the magic bytes and the file header.
    pub fn new(mut input: R) -> Result<Self, PcapError> {
        let mut first = [0u8; 4];
        input.read_exact(&mut first)?;
        let format = capture_format(first).ok_or(PcapError::Magic(u32::from_le_bytes(first)))?;
        let input = Full(Cursor::new(first).chain(input));
        let corrupt = |e: pcap_parser::PcapError<&'static [u8]>| match e {
            pcap_parser::PcapError::Incomplete(_) | pcap_parser::PcapError::UnexpectedEof => {
                PcapError::Truncated {
                    index: 0,
                    offset: 0,
                }
            }
            other => PcapError::Corrupt {
                index: 0,
                offset: 0,
                detail: format!("{other:?}"),
            },
        };
        let parser = match format {
            CaptureFormat::Pcap => {
                Parser::Legacy(LegacyPcapReader::new(BUFFER, input).map_err(corrupt)?)
            }
            CaptureFormat::PcapNg => Parser::Ng(PcapNGReader::new(BUFFER, input).map_err(corrupt)?),
        };
        let mut reader = Self {
            parser,
            format,
            legacy: None,
            interfaces: Vec::new(),
            index: 0,
            data: Vec::new(),
        };
        if format == CaptureFormat::Pcap {
            // the file header comes first: its link type is checked now
            match reader.step()? {
                Step::Header => {}
                _ => {
                    return Err(PcapError::Corrupt {
                        index: 0,
                        offset: 0,
                        detail: "no file header".into(),
                    });
                }
            }
        }
        Ok(reader)
    }

    /// The capture's format.
    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// The next frame, `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, PcapError> {
        loop {
            match self.step()? {
                Step::End => return Ok(None),
                Step::Header => {}
                Step::Packet(time_ns, link) => {
                    return Ok(Some(Frame {
                        time_ns,
                        data: &self.data,
                        link,
                    }));
                }
            }
        }
    }

    /// One block: a header or description taken in, a packet copied to `self.data`.
    fn step(&mut self) -> Result<Step, PcapError> {
        let index = self.index;
        loop {
            let (iterator, consumed): (&mut dyn PcapReaderIterator, u64) = match &mut self.parser {
                Parser::Legacy(r) => {
                    let c = r.consumed() as u64;
                    (r, c)
                }
                Parser::Ng(r) => {
                    let c = r.consumed() as u64;
                    (r, c)
                }
            };
            let offset = consumed;
            // a pcap record longer than the snapshot length is refused from its header,
            // before its bytes are waited for
            if let Some(interface) = self.legacy
                && let Some(b) = iterator.data().get(8..12)
            {
                let raw = [b[0], b[1], b[2], b[3]];
                let len = if interface.big_endian {
                    u32::from_be_bytes(raw)
                } else {
                    u32::from_le_bytes(raw)
                };
                if len > interface.snap_len {
                    return Err(PcapError::RecordTooLong {
                        index,
                        offset,
                        len,
                        limit: interface.snap_len,
                    });
                }
            }
            let step = match iterator.next() {
                Ok((size, block)) => {
                    let step = take_block(
                        block,
                        &mut self.legacy,
                        &mut self.interfaces,
                        &mut self.data,
                        index,
                        offset,
                    );
                    iterator.consume(size);
                    step?
                }
                Err(pcap_parser::PcapError::Eof) => return Ok(Step::End),
                Err(pcap_parser::PcapError::Incomplete(_)) => {
                    if iterator.reader_exhausted() {
                        return Err(PcapError::Truncated { index, offset });
                    }
                    iterator.refill().map_err(|e| PcapError::Corrupt {
                        index,
                        offset,
                        detail: format!("{e:?}"),
                    })?;
                    continue;
                }
                Err(pcap_parser::PcapError::UnexpectedEof) => {
                    return Err(PcapError::Truncated { index, offset });
                }
                Err(pcap_parser::PcapError::BufferTooSmall) => {
                    // a block longer than the parser's buffer: its length as claimed
                    // (a pcap record's captured length, a pcapng block's total length)
                    let at = if self.format == CaptureFormat::Pcap {
                        8
                    } else {
                        4
                    };
                    let claimed = iterator.data().get(at..at + 4).map_or(u32::MAX, |b| {
                        let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        let be = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        le.min(be)
                    });
                    return Err(PcapError::RecordTooLong {
                        index,
                        offset,
                        len: claimed,
                        limit: self.legacy.map_or(MAX_RECORD_LEN, |i| i.snap_len),
                    });
                }
                Err(e) => {
                    return Err(PcapError::Corrupt {
                        index,
                        offset,
                        detail: format!("{e:?}"),
                    });
                }
            };
            match step {
                Some(Step::Packet(t, l)) => {
                    self.index += 1;
                    return Ok(Step::Packet(t, l));
                }
                Some(other) => return Ok(other),
                None => continue,
            }
        }
    }
}

/// What one block was.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A file or section header (or an interface description).
    Header,
    /// A packet, copied out: its time and link layer.
    Packet(i64, LinkType),
    /// The end of the file.
    End,
}

/// Takes one parsed block: `Some(step)` for what the reader reports, `None` for blocks
/// it skips (statistics, name resolution, ...).
fn take_block(
    block: PcapBlockOwned<'_>,
    legacy: &mut Option<Interface>,
    interfaces: &mut Vec<Interface>,
    data: &mut Vec<u8>,
    index: u64,
    offset: u64,
) -> Result<Option<Step>, PcapError> {
    let check_len = |len: u32, limit: u32| {
        if len > limit {
            Err(PcapError::RecordTooLong {
                index,
                offset,
                len,
                limit,
            })
        } else {
            Ok(())
        }
    };
    match block {
        PcapBlockOwned::LegacyHeader(header) => {
            let link = LinkType::from_linktype(header.network);
            if link.is_none() {
                return Err(PcapError::LinkType(header.network.0 as u32));
            }
            *legacy = Some(Interface {
                link,
                link_raw: header.network.0 as u32,
                resolution: if header.is_nanosecond_precision() {
                    1_000_000_000
                } else {
                    1_000_000
                },
                offset: 0,
                snap_len: if header.snaplen == 0 {
                    MAX_RECORD_LEN
                } else {
                    header.snaplen.min(MAX_RECORD_LEN)
                },
                big_endian: header.is_bigendian(),
            });
            Ok(Some(Step::Header))
        }
        PcapBlockOwned::Legacy(packet) => {
            let Some(interface) = *legacy else {
                return Err(PcapError::Corrupt {
                    index,
                    offset,
                    detail: "a packet before the file header".into(),
                });
            };
            check_len(packet.caplen, interface.snap_len)?;
            let frac = i64::from(packet.ts_usec);
            let frac_ns = if interface.resolution == 1_000_000_000 {
                frac
            } else {
                frac * 1_000
            };
            let time_ns = i64::from(packet.ts_sec) * 1_000_000_000 + frac_ns;
            data.clear();
            data.extend_from_slice(packet.data);
            Ok(Some(Step::Packet(
                time_ns,
                interface.link.unwrap_or(LinkType::Ethernet),
            )))
        }
        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
            // a new section: its interfaces are numbered afresh
            interfaces.clear();
            Ok(Some(Step::Header))
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
            interfaces.push(Interface {
                link: LinkType::from_linktype(idb.linktype),
                link_raw: idb.linktype.0 as u32,
                resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                offset: idb.ts_offset(),
                snap_len: if idb.snaplen == 0 {
                    MAX_RECORD_LEN
                } else {
                    idb.snaplen.min(MAX_RECORD_LEN)
                },
                big_endian: false,
            });
            Ok(Some(Step::Header))
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
            let Some(interface) = interfaces.get(epb.if_id as usize).copied() else {
                return Err(PcapError::UnknownInterface {
                    index,
                    offset,
                    interface: epb.if_id,
                });
            };
            let link = interface
                .link
                .ok_or(PcapError::LinkType(interface.link_raw))?;
            check_len(epb.caplen, interface.snap_len)?;
            let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            let secs = units / interface.resolution;
            let rest = units % interface.resolution;
            let nanos = u128::from(rest) * 1_000_000_000 / u128::from(interface.resolution);
            let time_ns = i64::try_from(secs)
                .unwrap_or(i64::MAX / 1_000_000_000)
                .saturating_add(interface.offset)
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::try_from(nanos).unwrap_or(0));
            data.clear();
            data.extend_from_slice(epb.data);
            Ok(Some(Step::Packet(time_ns, link)))
        }
        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
            let Some(interface) = interfaces.first().copied() else {
                return Err(PcapError::UnknownInterface {
                    index,
                    offset,
                    interface: 0,
                });
            };
            let link = interface
                .link
                .ok_or(PcapError::LinkType(interface.link_raw))?;
            check_len(spb.data.len() as u32, interface.snap_len)?;
            data.clear();
            data.extend_from_slice(spb.data);
            // a simple packet has no time
            Ok(Some(Step::Packet(0, link)))
        }
        PcapBlockOwned::NG(_) => Ok(None),
    }
}

impl LinkType {
    /// Its number in the link-type registry.
    pub fn number(self) -> u32 {
        match self {
            Self::Ethernet => LINKTYPE_ETHERNET,
            Self::LinuxSll => 113,
            Self::LinuxSll2 => 276,
            Self::RawIp => 228,
        }
    }
}

/// Writes a pcap file (nanosecond timestamps, Ethernet unless told).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header (Ethernet frames).
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_link(out, LinkType::Ethernet)
    }

    /// Writes the file header for frames of `link`.
    pub fn with_link(mut out: W, link: LinkType) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_NS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&65_535u32.to_le_bytes());
        header.extend_from_slice(&link.number().to_le_bytes());
        out.write_all(&header)?;
        Ok(Self { out })
    }

    /// Writes one frame captured at `time_ns`.
    pub fn write_frame(&mut self, time_ns: i64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let secs = u32::try_from(time_ns.div_euclid(1_000_000_000)).unwrap_or(0);
        let nanos = u32::try_from(time_ns.rem_euclid(1_000_000_000)).unwrap_or(0);
        for v in [secs, nanos, len, len] {
            self.out.write_all(&v.to_le_bytes())?;
        }
        self.out.write_all(frame)
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a pcapng file: one section, one interface of `link` with nanosecond
/// timestamps, enhanced packet blocks (what Wireshark and `tcpdump -i any` write,
/// for tests and tools that make captures).
#[derive(Debug)]
pub struct PcapNgWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the section header and the interface description.
    pub fn new(mut out: W, link: LinkType) -> io::Result<Self> {
        let mut shb = Vec::with_capacity(28);
        shb.extend_from_slice(&PCAPNG_MAGIC.to_le_bytes());
        shb.extend_from_slice(&28u32.to_le_bytes());
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        shb.extend_from_slice(&28u32.to_le_bytes());
        out.write_all(&shb)?;
        // interface: link type, snapshot length, if_tsresol = 9 (ns), end of options
        let mut idb = Vec::with_capacity(32);
        idb.extend_from_slice(&1u32.to_le_bytes());
        idb.extend_from_slice(&32u32.to_le_bytes());
        idb.extend_from_slice(&u16::try_from(link.number()).unwrap_or(0).to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&MAX_RECORD_LEN.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]);
        idb.extend_from_slice(&[0, 0, 0, 0]);
        idb.extend_from_slice(&32u32.to_le_bytes());
        out.write_all(&idb)?;
        Ok(Self { out })
    }

    /// Writes one frame captured at `time_ns` (an enhanced packet block).
    pub fn write_frame(&mut self, time_ns: i64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let padded = frame.len().next_multiple_of(4);
        let total = u32::try_from(32 + padded).unwrap_or(u32::MAX);
        let units = u64::try_from(time_ns).unwrap_or(0);
        let mut block = Vec::with_capacity(32 + padded);
        for v in [6, total, 0, (units >> 32) as u32, units as u32, len, len] {
            block.extend_from_slice(&v.to_le_bytes());
        }
        block.extend_from_slice(frame);
        block.resize(28 + padded, 0);
        block.extend_from_slice(&total.to_le_bytes());
        self.out.write_all(&block)
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The same IPv4 packet as an Ethernet frame's, behind a Linux cooked capture header
/// (v1, 16 bytes) instead — what `tcpdump -i any` records; `None` if `frame` carries
/// no IPv4.
pub fn ethernet_to_sll(frame: &[u8], v2: bool) -> Option<Vec<u8>> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let mut out = Vec::with_capacity(ip.len() + 20);
    if v2 {
        // protocol, reserved, interface index, ARPHRD_ETHER, packet type (multicast = 2),
        // address length, address (8 bytes)
        out.extend_from_slice(&[0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 2, 6]);
        out.extend_from_slice(&frame[6..12]);
        out.extend_from_slice(&[0, 0]);
    } else {
        // packet type (multicast = 2), ARPHRD_ETHER, address length, address, protocol
        out.extend_from_slice(&[0, 2, 0, 1, 0, 6]);
        out.extend_from_slice(&frame[6..12]);
        out.extend_from_slice(&[0, 0, 0x08, 0x00]);
    }
    out.extend_from_slice(ip);
    Some(out)
}

/// A UDP datagram found in an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Sender.
    pub source: SocketAddrV4,
    /// Destination (the multicast group and port for a feed).
    pub destination: SocketAddrV4,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// The UDP datagram in an Ethernet II frame carrying IPv4 (an 802.1Q tag is skipped);
/// `None` for anything else — other protocols, fragments, bad lengths.
pub fn udp_datagram(frame: &[u8]) -> Option<Datagram<'_>> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    if ethertype == 0x8100 {
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    if ethertype != 0x0800 {
        return None;
    }
    ipv4_udp(frame.get(at + 2..)?)
}

/// The UDP datagram in an IPv4 packet; `None` for anything else.
fn ipv4_udp(ip: &[u8]) -> Option<Datagram<'_>> {
    let version_ihl = *ip.first()?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]);
    // more fragments, or an offset: not a whole datagram
    if fragment & 0x3fff != 0 || ip[9] != 17 || total < ihl + 8 || ip.len() < total {
        return None;
    }
    let source_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let destination_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    Some(Datagram {
        source: SocketAddrV4::new(source_ip, u16::from_be_bytes([udp[0], udp[1]])),
        destination: SocketAddrV4::new(destination_ip, u16::from_be_bytes([udp[2], udp[3]])),
        payload: &udp[8..udp_len],
    })
}

/// An Ethernet II / IPv4 / UDP frame carrying `payload` (IPv4 header checksum set, UDP
/// checksum 0 = none; multicast destinations get their multicast MAC address).
pub fn udp_frame(source: SocketAddrV4, destination: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42 + payload.len());
    let dst = destination.ip().octets();
    let dst_mac = if destination.ip().is_multicast() {
        [0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]]
    } else {
        [0x02, 0, dst[0], dst[1], dst[2], dst[3]]
    };
    let src = source.ip().octets();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&[0x02, 0, src[0], src[1], src[2], src[3]]);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = u16::try_from(28 + payload.len()).unwrap_or(u16::MAX);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 32; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let checksum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&source.port().to_be_bytes());
    frame.extend_from_slice(&destination.port().to_be_bytes());
    frame.extend_from_slice(&(total - 20).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

fn ipv4_checksum(header: &[u8; 20]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record header that claims more than the snapshot length (here 4 GiB − 1) is an
    /// error naming the record, and nothing of that size is allocated.
    #[test]
    fn a_record_longer_than_the_snapshot_length_is_refused() {
        let mut file = Vec::new();
        PcapWriter::new(&mut file)
            .unwrap()
            .write_frame(1_000, &[0u8; 60])
            .unwrap();
        let good = file.clone();
        // the second record claims u32::MAX captured bytes
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(&[0u8; 64]);
        let mut reader = PcapReader::new(&file[..]).unwrap();
        assert_eq!(reader.next_frame().unwrap().unwrap().data.len(), 60);
        match reader.next_frame() {
            Err(PcapError::RecordTooLong {
                index: 1,
                len,
                limit,
                ..
            }) => {
                assert_eq!((len, limit), (u32::MAX, 65_535));
            }
            other => panic!("{other:?}"),
        }
        assert!(reader.data.capacity() < 1 << 20, "nothing large allocated");
        // a header with no snapshot length still bounds records
        let mut no_snap = good.clone();
        no_snap[16..20].copy_from_slice(&0u32.to_le_bytes());
        no_snap.extend_from_slice(&1u32.to_le_bytes());
        no_snap.extend_from_slice(&0u32.to_le_bytes());
        no_snap.extend_from_slice(&(MAX_RECORD_LEN + 1).to_le_bytes());
        no_snap.extend_from_slice(&(MAX_RECORD_LEN + 1).to_le_bytes());
        let mut reader = PcapReader::new(&no_snap[..]).unwrap();
        reader.next_frame().unwrap();
        assert!(matches!(
            reader.next_frame(),
            Err(PcapError::RecordTooLong {
                limit: MAX_RECORD_LEN,
                ..
            })
        ));
    }

    #[test]
    fn frames_round_trip_through_a_pcap_file() {
        let source = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000);
        let group = SocketAddrV4::new(Ipv4Addr::new(233, 54, 12, 1), 26_400);
        let mut writer = PcapWriter::new(Vec::new()).unwrap();
        writer
            .write_frame(
                1_700_000_000_123_456_789,
                &udp_frame(source, group, b"hello"),
            )
            .unwrap();
        let bytes = writer.finish().unwrap();
        let mut reader = PcapReader::new(bytes.as_slice()).unwrap();
        let frame = reader.next_frame().unwrap().unwrap();
        assert_eq!(frame.time_ns, 1_700_000_000_123_456_789);
        let datagram = udp_datagram(frame.data).unwrap();
        assert_eq!(
            (datagram.source, datagram.destination, datagram.payload),
            (source, group, &b"hello"[..])
        );
        assert_eq!(&frame.data[..6], &[0x01, 0x00, 0x5e, 54, 12, 1]);
        // the IPv4 header checksums to zero with its checksum in place
        let mut header = [0u8; 20];
        header.copy_from_slice(&frame.data[14..34]);
        assert_eq!(ipv4_checksum(&header), 0);
        assert!(reader.next_frame().unwrap().is_none());
        assert!(matches!(
            PcapReader::new(&[0u8; 24][..]),
            Err(PcapError::Magic(0))
        ));
        let cut = &bytes[..bytes.len() - 2];
        let mut reader = PcapReader::new(cut).unwrap();
        // where: the cut record starts after the 24-byte file header
        assert!(matches!(
            reader.next_frame(),
            Err(PcapError::Truncated {
                index: 0,
                offset: 24
            })
        ));
    }

    /// One datagram through every container and link layer read: pcap and pcapng,
    /// Ethernet, SLL, SLL2; the format by its magic bytes; a cut pcapng says where.
    #[test]
    fn pcapng_and_linux_cooked_captures_give_the_same_datagrams() {
        let source = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000);
        let group = SocketAddrV4::new(Ipv4Addr::new(233, 54, 12, 1), 26_400);
        let frames: Vec<Vec<u8>> = (0..5u8)
            .map(|i| udp_frame(source, group, &vec![i; 7 + usize::from(i)]))
            .collect();
        let t0 = 1_704_205_800_123_456_789i64;
        let mut files = Vec::new();
        for link in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2] {
            let frame_of = |f: &Vec<u8>| match link {
                LinkType::Ethernet => f.clone(),
                LinkType::LinuxSll => ethernet_to_sll(f, false).unwrap(),
                _ => ethernet_to_sll(f, true).unwrap(),
            };
            let mut ng = PcapNgWriter::new(Vec::new(), link).unwrap();
            let mut classic = PcapWriter::with_link(Vec::new(), link).unwrap();
            for (i, f) in frames.iter().enumerate() {
                ng.write_frame(t0 + i as i64, &frame_of(f)).unwrap();
                classic.write_frame(t0 + i as i64, &frame_of(f)).unwrap();
            }
            files.push((link, CaptureFormat::PcapNg, ng.finish().unwrap()));
            files.push((link, CaptureFormat::Pcap, classic.finish().unwrap()));
        }
        for (link, format, bytes) in &files {
            assert_eq!(
                capture_format([bytes[0], bytes[1], bytes[2], bytes[3]]),
                Some(*format)
            );
            let mut reader = PcapReader::new(bytes.as_slice()).unwrap();
            assert_eq!(reader.format(), *format);
            for (i, f) in frames.iter().enumerate() {
                let frame = reader.next_frame().unwrap().unwrap();
                assert_eq!((frame.link, frame.time_ns), (*link, t0 + i as i64));
                let got = frame.datagram().unwrap();
                let want = udp_datagram(f).unwrap();
                assert_eq!(got, want, "{link:?} {format:?} frame {i}");
            }
            assert!(reader.next_frame().unwrap().is_none());
        }
        // a pcapng cut inside its third packet block: the error names that block's byte
        let (_, _, ng) = &files[0];
        let third = 28 + 32 + 2 * (32 + frames[0].len().next_multiple_of(4));
        let mut reader = PcapReader::new(&ng[..third + 10]).unwrap();
        reader.next_frame().unwrap().unwrap();
        reader.next_frame().unwrap().unwrap();
        match reader.next_frame() {
            Err(e @ PcapError::Truncated { index: 2, offset }) => {
                assert_eq!(offset as usize, third);
                assert!(e.to_string().contains(&format!("at byte {third}")), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // a packet of an interface never described
        let mut bad = ng.clone();
        bad[28 + 32 + 8] = 3;
        let mut reader = PcapReader::new(bad.as_slice()).unwrap();
        assert!(matches!(
            reader.next_frame(),
            Err(PcapError::UnknownInterface { interface: 3, .. })
        ));
    }

    proptest! {
        /// Any bytes after a pcap or pcapng header: frames or an error, never a panic,
        /// never a frame beyond the bound.
        #[test]
        fn any_capture_bytes_read_or_fail_cleanly(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            ng in any::<bool>(),
        ) {
            let mut file = if ng {
                PcapNgWriter::new(Vec::new(), LinkType::LinuxSll2).unwrap().finish().unwrap()
            } else {
                PcapWriter::new(Vec::new()).unwrap().finish().unwrap()
            };
            file.extend_from_slice(&body);
            if let Ok(mut reader) = PcapReader::new(file.as_slice()) {
                for _ in 0..1_000 {
                    match reader.next_frame() {
                        Ok(Some(frame)) => {
                            prop_assert!(frame.data.len() <= MAX_RECORD_LEN as usize);
                            let _ = frame.datagram();
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }

        #[test]
        fn parsing_never_panics_and_finds_what_was_built(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = udp_datagram(&bytes);
            let a = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 1);
            let b = SocketAddrV4::new(Ipv4Addr::new(239, 1, 2, 3), 2);
            let frame = udp_frame(a, b, &payload);
            prop_assert_eq!(udp_datagram(&frame).map(|d| d.payload.to_vec()), Some(payload.clone()));
            // every truncation is refused, never misread
            for cut in 0..frame.len() {
                prop_assert!(udp_datagram(&frame[..cut]).is_none());
            }
        }
    }
}
