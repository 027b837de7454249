//! Frames forged with the session id (it travels in clear) must not move a receiver's
//! stream where the sender never took it (issue 19): an empty DATA cannot jump the
//! frontier, an END cannot end the replica short of what was sent, an UNAVAILABLE
//! cannot claim more loss than the bytes it skips could hold, and a SETUP with an
//! absurd capacity or positions near 2^64 is refused before any arithmetic on them.

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReplicaWriter, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::frame::{FrameWriter, SetupBody, UnavailableBody, encode_stream_name};
use mdi_protocol::udp::{Receiver, ReceiverConfig, ReceiverEvent, Sender, SenderConfig};
use zerocopy::byteorder::little_endian::{U32, U64};

const SESSION: u32 = 31;

struct Joined {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    writer: RingWriter,
    sender: Sender<RingReader>,
    receiver: Receiver,
    replica: ReplicaWriter,
    now: u64,
}

impl Joined {
    /// A sender and a receiver that has joined and taken `records` records.
    fn new(records: u64) -> Self {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let options = RingOptions::default().capacity(1 << 20);
        let writer = RingWriter::create(&ShmDir::new(src.path()), "ticks", &options).unwrap();
        let reader =
            RingReader::open(&ShmDir::new(src.path()), "ticks", StartAt::Earliest).unwrap();
        let config = SenderConfig::new(SESSION, 1, "ticks", &reader, writer.epoch(), 42);
        let sender = Sender::new(config, reader, 0u64);
        let replica =
            ReplicaWriter::create(&ShmDir::new(dst.path()), "ticks", &options, 42).unwrap();
        let receiver = Receiver::new(ReceiverConfig::new(5, 1, false), 0u64);
        let mut joined = Self {
            _dirs: (src, dst),
            writer,
            sender,
            receiver,
            replica,
            now: 1,
        };
        joined.append(records);
        joined
    }

    fn append(&mut self, records: u64) {
        for i in 0..records {
            self.writer
                .append(RecordKind::APPLICATION_FIRST, &[i as u8; 100])
                .unwrap();
        }
        self.exchange();
    }

    /// Frames both ways until nothing more is due.
    fn exchange(&mut self) {
        for _ in 0..10_000 {
            self.now += 1_000;
            let mut moved = false;
            while let Some(frame) = self.sender.poll_transmit(self.now) {
                let frame = frame.to_vec();
                self.receiver
                    .handle_datagram(self.now, &frame, &mut self.replica);
                moved = true;
            }
            while let Some(frame) = self.receiver.poll_transmit(self.now) {
                let frame = frame.to_vec();
                self.sender.handle_datagram(self.now, &frame);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    fn forge(&mut self, frame: &[u8]) {
        self.receiver
            .handle_datagram(self.now, frame, &mut self.replica);
    }

    fn events(&mut self) -> Vec<ReceiverEvent> {
        std::iter::from_fn(|| self.receiver.poll_event()).collect()
    }
}

#[test]
fn an_empty_data_frame_cannot_move_the_frontier() {
    let mut j = Joined::new(20);
    let at = j.receiver.position().unwrap();
    assert_eq!(at, j.writer.position().get());
    let rejected = j.receiver.counters().rejected;
    let mut forger = FrameWriter::new(1408, SESSION, 1);
    j.forge(forger.data(at, at + 500_000, &[]));
    assert_eq!(j.receiver.position(), Some(at), "the frontier jumped");
    assert_eq!(j.receiver.counters().rejected, rejected + 1);
    // the real stream goes on
    j.append(10);
    assert_eq!(j.receiver.position(), Some(j.writer.position().get()));
}

#[test]
fn an_end_below_what_was_sent_is_refused() {
    let mut j = Joined::new(20);
    j.events();
    let at = j.receiver.position().unwrap();
    let mut forger = FrameWriter::new(1408, SESSION, 1);
    j.forge(forger.end(at - 256, 3));
    assert!(
        !j.events()
            .iter()
            .any(|e| matches!(e, ReceiverEvent::Ended { .. })),
        "ended short of what was sent"
    );
    assert!(j.receiver.counters().rejected >= 1);
    // the real end is taken
    j.sender.close(j.now);
    for _ in 0..200 {
        j.now += 10_000_000;
        j.exchange();
    }
    assert!(
        j.events()
            .iter()
            .any(|e| matches!(e, ReceiverEvent::Ended { .. }))
    );
}

#[test]
fn an_unavailable_cannot_claim_more_loss_than_its_bytes_hold() {
    let mut j = Joined::new(20);
    // a gap: the receiver misses frames, then sees the tail
    let at = j.receiver.position().unwrap();
    for i in 0..20u64 {
        j.writer
            .append(RecordKind::APPLICATION_FIRST, &[i as u8; 100])
            .unwrap();
    }
    while j.sender.poll_transmit(j.now).is_some() {}
    let mut forger = FrameWriter::new(1408, SESSION, 1);
    j.forge(forger.heartbeat(j.writer.position().get()));
    j.events();
    j.forge(forger.unavailable(&UnavailableBody {
        from_position: U64::new(at),
        resume_position: U64::new(at + 256),
        resume_seq: U64::new(1 << 40),
        reserved: U64::new(0),
    }));
    assert!(
        !j.events()
            .iter()
            .any(|e| matches!(e, ReceiverEvent::Lost { .. })),
        "a forged loss was reported"
    );
    assert_eq!(j.receiver.position(), Some(at));
    assert_eq!(j.receiver.counters().lost_records, 0);
}

#[test]
fn a_setup_with_an_absurd_capacity_is_refused_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ReplicaWriter::create(
        &ShmDir::new(dir.path()),
        "ticks",
        &RingOptions::default().capacity(1 << 20),
        42,
    )
    .unwrap();
    for capacity in [0, 8, u64::MAX] {
        let mut receiver = Receiver::new(ReceiverConfig::new(5, 1, false), 0u64);
        let body = SetupBody {
            epoch: U64::new(1),
            ring_id: U64::new(9),
            capacity: U64::new(capacity),
            initial_position: U64::new(u64::MAX - 8),
            initial_seq: U64::new(0),
            retained_from: U64::new(0),
            tail_position: U64::new(u64::MAX),
            mtu: U32::new(1408),
            reserved: U32::new(0),
            stream_name: encode_stream_name("ticks").unwrap(),
        };
        let mut forger = FrameWriter::new(1408, SESSION, 1);
        receiver.handle_datagram(1u64, forger.setup(0, &body), &mut sink);
        receiver.handle_datagram(2u64, forger.heartbeat(u64::MAX), &mut sink);
        receiver.handle_datagram(3u64, forger.data(u64::MAX - 8, u64::MAX, &[]), &mut sink);
        while receiver.poll_transmit(4u64).is_some() {}
        assert_eq!(receiver.position(), None, "capacity {capacity} joined");
        assert!(receiver.counters().rejected >= 1);
    }
}
