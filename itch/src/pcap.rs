//! Packets as captured: classic pcap files (what tcpdump writes) and the
//! Ethernet / IPv4 / UDP framing inside them, parsed and built in user space — the same
//! parsing a kernel-bypass receiver does on raw frames.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};

/// pcap magic, microsecond timestamps.
const MAGIC_US: u32 = 0xa1b2_c3d4;
/// pcap magic, nanosecond timestamps.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// Link type Ethernet.
const LINKTYPE_ETHERNET: u32 = 1;

/// Why a pcap file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// Reading failed.
    #[error("reading the pcap file: {0}")]
    Io(#[from] io::Error),
    /// Not a pcap file (pcapng is not read).
    #[error(
        "not a pcap file (magic {0:#010x}); pcapng files can be converted with `editcap -F pcap`"
    )]
    Magic(u32),
    /// A link type other than Ethernet.
    #[error("pcap link type {0} is not Ethernet (1)")]
    LinkType(u32),
    /// A record claims more bytes than the file's snapshot length allows (a corrupt or
    /// hostile header: nothing that long is read or allocated).
    #[error("pcap record {index} claims {len} bytes, more than the capture's limit of {limit}")]
    RecordTooLong {
        /// Which record (0-based).
        index: u64,
        /// The length its header claims.
        len: u32,
        /// The snapshot length (at most [`MAX_RECORD_LEN`]).
        limit: u32,
    },
    /// A record runs past the end of the file.
    #[error("pcap record {index} is truncated")]
    Truncated {
        /// Which record (0-based).
        index: u64,
    },
}

/// One received or captured frame, borrowed from its source until the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture (or receive) time, ns since the Unix epoch.
    pub time_ns: i64,
    /// The frame's bytes (Ethernet header first).
    pub data: &'a [u8],
}

/// Reads the frames of a pcap file.
#[derive(Debug)]
pub struct PcapReader<R> {
    input: R,
    swapped: bool,
    nanos: bool,
    index: u64,
    /// The longest record accepted: the header's snapshot length, at most
    /// [`MAX_RECORD_LEN`].
    max_len: u32,
    /// The last frame's bytes (reused).
    data: Vec<u8>,
}

/// The longest captured frame read from any pcap file, whatever its header says
/// (tcpdump's largest snapshot length).
pub const MAX_RECORD_LEN: u32 = 262_144;

impl<R: Read> PcapReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut input: R) -> Result<Self, PcapError> {
        let mut header = [0u8; 24];
        input.read_exact(&mut header)?;
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let (swapped, nanos) = match magic {
            MAGIC_US => (false, false),
            MAGIC_NS => (false, true),
            m if m.swap_bytes() == MAGIC_US => (true, false),
            m if m.swap_bytes() == MAGIC_NS => (true, true),
            m => return Err(PcapError::Magic(m)),
        };
        let mut reader = Self {
            input,
            swapped,
            nanos,
            index: 0,
            max_len: MAX_RECORD_LEN,
            data: Vec::new(),
        };
        let snap_len = reader.u32_at(&header, 16);
        if snap_len != 0 {
            reader.max_len = snap_len.min(MAX_RECORD_LEN);
        }
        let link = reader.u32_at(&header, 20);
        if link != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(link));
        }
        Ok(reader)
    }

    fn u32_at(&self, bytes: &[u8], at: usize) -> u32 {
        let raw = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if self.swapped {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        }
    }

    /// The next frame, `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, PcapError> {
        let mut header = [0u8; 16];
        match self.input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let secs = i64::from(self.u32_at(&header, 0));
        let frac = i64::from(self.u32_at(&header, 4));
        let captured = self.u32_at(&header, 8);
        if captured > self.max_len {
            return Err(PcapError::RecordTooLong {
                index: self.index,
                len: captured,
                limit: self.max_len,
            });
        }
        self.data.resize(captured as usize, 0);
        self.input
            .read_exact(&mut self.data)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => PcapError::Truncated { index: self.index },
                _ => PcapError::Io(e),
            })?;
        self.index += 1;
        let time_ns = secs * 1_000_000_000 + if self.nanos { frac } else { frac * 1_000 };
        Ok(Some(Frame {
            time_ns,
            data: &self.data,
        }))
    }
}

/// Writes a pcap file (nanosecond timestamps, Ethernet).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_NS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&65_535u32.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
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
    let ip = frame.get(at + 2..)?;
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
        assert!(matches!(
            reader.next_frame(),
            Err(PcapError::Truncated { index: 0 })
        ));
    }

    proptest! {
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
