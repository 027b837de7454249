//! The reliable-UDP state machines under arbitrary datagrams (issue 19). The input is a
//! sequence of datagrams, each either a frame the real sender made (of a ring holding
//! known records) or raw fuzzer bytes (forged frames of any session), with time moving
//! on between them. Checked: no panic; the receiver never moves its replica backwards
//! nor writes a record that is not a whole ring record; what it buffers stays bounded;
//! the sender only ever sends records the ring holds, at their positions.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{
    AppendError, Position, RawRead, RecordHeader, RingOptions, RingReader, RingWriter, ShmDir,
    StartAt, align_record,
};
use mdi_protocol::udp::frame::Frame;
use mdi_protocol::udp::{Receiver, ReceiverConfig, ReplicaSink, Sender, SenderConfig};
use zerocopy::FromBytes;

/// A ring of 300 records of assorted sizes, made once per process.
fn source() -> &'static (tempfile::TempDir, RingWriter) {
    static SOURCE: OnceLock<(tempfile::TempDir, RingWriter)> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = RingWriter::create(
            &ShmDir::new(dir.path()),
            "fuzz",
            &RingOptions::default().capacity(1 << 20),
        )
        .expect("ring");
        for i in 0..300u64 {
            let len = 8 + (i * 37 % 3000) as usize;
            writer
                .append(RecordKind::APPLICATION_FIRST, &vec![i as u8; len])
                .expect("append");
        }
        (dir, writer)
    })
}

/// The replica as the receiver writes it, checked as it goes.
struct Model {
    position: u64,
    next_seq: u64,
    written: u64,
}

impl ReplicaSink for Model {
    fn append_raw(&mut self, position: u64, record: &[u8]) -> Result<u64, AppendError> {
        assert!(
            position >= self.position,
            "replica moved back: {position} < {}",
            self.position
        );
        let header = RecordHeader::read_from_prefix(record)
            .expect("a record header")
            .0;
        assert_eq!(
            align_record(u64::from(header.len)),
            record.len() as u64,
            "a whole record"
        );
        self.position = position + record.len() as u64;
        self.next_seq = header.seq + 1;
        self.written += record.len() as u64;
        Ok(header.seq)
    }

    fn skip_to(&mut self, position: u64, next_seq: u64) {
        assert!(
            position >= self.position,
            "replica skipped back: {position} < {}",
            self.position
        );
        self.position = position;
        self.next_seq = next_seq;
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

fuzz_target!(|input: &[u8]| {
    let (dir, writer) = source();
    let shm = ShmDir::new(dir.path());
    let reader = RingReader::open(&shm, "fuzz", StartAt::Earliest).expect("reader");
    let config = SenderConfig::new(9, 1, "fuzz", &reader, writer.epoch(), 1);
    let mut sender = Sender::new(config, reader, 0u64);
    let mut check = RingReader::open(&shm, "fuzz", StartAt::Earliest).expect("reader");
    let mut receiver = Receiver::new(ReceiverConfig::new(5, 1, false), 0u64);
    let mut model = Model {
        position: 0,
        next_seq: 0,
        written: 0,
    };
    let mut now = 1u64;
    let mut chunks = input.split(|&b| b == 0xfe).peekable();
    let mut rounds = 0;
    while let Some(chunk) = chunks.next() {
        rounds += 1;
        if rounds > 2_000 {
            break;
        }
        now += 1 + u64::from(chunk.first().copied().unwrap_or(0)) * 100_000;
        match chunk.first() {
            // the real sender's next frames, delivered (or dropped, by the low bits)
            Some(b) if b % 3 == 0 => {
                for k in 0..(b % 7) {
                    let Some(frame) = sender.poll_transmit(now) else {
                        break;
                    };
                    check_sent(frame, &mut check);
                    if k % 2 == 0 || b % 5 != 0 {
                        receiver.handle_datagram(now, frame, &mut model);
                    }
                }
            }
            // the receiver's NAKs and STATUS, to the sender
            Some(b) if b % 3 == 1 => {
                while let Some(frame) = receiver.poll_transmit(now) {
                    let frame = frame.to_vec();
                    sender.handle_datagram(now, &frame);
                }
                receiver.handle_timeout(now, &mut model);
            }
            // anything, to both
            _ => {
                receiver.handle_datagram(now, chunk, &mut model);
                sender.handle_datagram(now, chunk);
            }
        }
        while receiver.poll_event().is_some() {}
    }
    // nothing written beyond what the input could carry plus the ring's own bytes
    assert!(model.written <= input.len() as u64 * 64 + (2 << 20));
});

/// A DATA frame the sender sends carries the ring's own records at their positions.
fn check_sent(frame: &[u8], check: &mut RingReader) {
    let Ok(Frame::Data(data)) = Frame::parse(frame) else {
        return;
    };
    if data.body.is_fragment(data.flags) || data.body.payload.is_empty() {
        return;
    }
    let mut expected = Vec::new();
    let position = data.body.header.position.get();
    if let RawRead::Records { .. } =
        check.read_raw(Position(position), data.body.payload.len(), &mut expected)
    {
        assert_eq!(
            &expected[..data.body.payload.len().min(expected.len())],
            &data.body.payload[..data.body.payload.len().min(expected.len())],
            "the sender sent bytes that are not the ring's at {position}"
        );
    }
}
