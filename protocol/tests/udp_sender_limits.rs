//! What the sender holds back (issue 19): new records beyond the flow control window,
//! SETUPs asked for by a flood of STATUS, retransmitted fragments beyond the rate cap,
//! and first NAKs for a range it just resent — while a repeat is answered.

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::frame::{FLAG_REPEAT, FLAG_SETUP_REQUEST, Frame, FrameWriter, StatusBody};
use mdi_protocol::udp::{Sender, SenderConfig};
use zerocopy::byteorder::little_endian::U64;

const SESSION: u32 = 77;
const MS: u64 = 1_000_000;

struct Setup {
    _dir: tempfile::TempDir,
    writer: RingWriter,
    sender: Sender<RingReader>,
}

fn sender_over(records: u64, len: usize, tune: impl FnOnce(&mut SenderConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut writer =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(16 << 20)).unwrap();
    let reader = RingReader::open(&shm, "ticks", StartAt::Earliest).unwrap();
    let mut config = SenderConfig::new(SESSION, 1, "ticks", &reader, writer.epoch(), 42);
    tune(&mut config);
    let sender = Sender::new(config, reader, 0u64);
    for i in 0..records {
        writer
            .append(RecordKind::APPLICATION_FIRST, &vec![i as u8; len])
            .unwrap();
    }
    Setup {
        _dir: dir,
        writer,
        sender,
    }
}

/// Polls until the sender has nothing more at `now`; the frames it sent.
fn drain_at(sender: &mut Sender<RingReader>, now: u64) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some(frame) = sender.poll_transmit(now) {
        frames.push(frame.to_vec());
        assert!(frames.len() < 1_000_000, "the sender never stops");
    }
    frames
}

fn status(high_water: u64, flags: u16) -> Vec<u8> {
    FrameWriter::new(1408, SESSION, 1)
        .status(
            flags,
            &StatusBody {
                receiver_id: U64::new(9),
                position: U64::new(0),
                high_water_mark: U64::new(high_water),
                lost_records: U64::new(0),
            },
        )
        .to_vec()
}

#[test]
fn new_records_stay_within_a_window_of_the_furthest_receiver() {
    // ~4.4 MB of records in the ring, 1 MiB window
    let mut s = sender_over(20_000, 200, |_| {});
    let window = 1u64 << 20;
    drain_at(&mut s.sender, 1);
    // no receiver yet, a young session: one window
    let first = s.sender.position();
    assert!(
        (window..window + 2_000).contains(&first),
        "sent {first} before any receiver"
    );
    // a receiver reports 2 MiB reached: up to 3 MiB
    s.sender.handle_datagram(2, &status(2 << 20, 0));
    drain_at(&mut s.sender, 3);
    let second = s.sender.position();
    assert!((3 << 20..(3 << 20) + 2_000).contains(&second), "{second}");
    assert_eq!(s.sender.counters().flow_blocked, 2);
    // the receiver goes silent, and no other appears: after the receiver timeout the
    // sender sends everything
    let later = 10_000 * MS;
    drain_at(&mut s.sender, later);
    assert_eq!(s.sender.position(), s.writer.position().get());
}

#[test]
fn a_flood_of_setup_requests_gets_one_setup_per_interval() {
    let mut s = sender_over(10, 100, |c| c.flow_window_bytes = u64::MAX);
    drain_at(&mut s.sender, 1);
    let mut setups = 0;
    // 1000 requests in 10 ms
    for k in 0..1_000u64 {
        let now = 2 + k * 10_000;
        s.sender
            .handle_datagram(now, &status(0, FLAG_SETUP_REQUEST));
        setups += drain_at(&mut s.sender, now)
            .iter()
            .filter(|f| matches!(Frame::parse(f), Ok(Frame::Setup(_))))
            .count();
    }
    // one per 1 ms (the first at once)
    assert!(
        (9..=11).contains(&setups),
        "{setups} SETUPs for 1000 requests"
    );
}

#[test]
fn retransmitted_fragments_take_from_the_rate_cap_each() {
    // records of 20 KB (15 fragments each), retransmits capped at 1 MB/s
    let mut s = sender_over(40, 20_000, |c| {
        c.flow_window_bytes = u64::MAX;
        c.retransmit_bytes_per_s = 1_000_000;
    });
    drain_at(&mut s.sender, 1);
    let sent = s.sender.counters().data_bytes;
    assert!(sent > 700_000);
    let mut receiver = FrameWriter::new(1408, SESSION, 1);
    // a repeat: answered whatever was resent before
    s.sender
        .handle_datagram(2, receiver.nak(FLAG_REPEAT, 5, 0, 500_000));
    // 10 ms at 1 MB/s: 10 KB, plus the bucket's burst of 10 KB and a frame
    for t in 0..100u64 {
        drain_at(&mut s.sender, 2 + t * 100_000);
    }
    let resent = s.sender.counters().retransmit_bytes;
    assert!(resent > 5_000, "{resent}");
    assert!(resent <= 22_000, "{resent} bytes resent in 10 ms at 1 MB/s");
}

#[test]
fn a_first_nak_for_a_range_just_resent_is_absorbed_and_a_repeat_answered() {
    let mut s = sender_over(100, 100, |c| c.flow_window_bytes = u64::MAX);
    drain_at(&mut s.sender, 1);
    let mut receiver = FrameWriter::new(1408, SESSION, 1);
    s.sender.handle_datagram(2, receiver.nak(0, 5, 0, 1_000));
    drain_at(&mut s.sender, 2);
    let once = s.sender.counters().retransmit_bytes;
    assert!(once >= 1_000);
    // another receiver's first NAK for the same range, 1 ms later: on its way already
    s.sender.handle_datagram(MS, receiver.nak(0, 6, 0, 1_000));
    drain_at(&mut s.sender, MS);
    assert_eq!(s.sender.counters().retransmit_bytes, once);
    assert_eq!(s.sender.counters().naks_coalesced, 1);
    // a receiver that waited its repair timeout in vain asks again: answered
    s.sender
        .handle_datagram(2 * MS, receiver.nak(FLAG_REPEAT, 6, 0, 1_000));
    drain_at(&mut s.sender, 2 * MS);
    assert_eq!(s.sender.counters().retransmit_bytes, 2 * once);
}

#[test]
fn live_records_go_out_while_a_large_retransmission_waits_for_the_rate_cap() {
    // 20 KB records, retransmits at 100 kB/s: one record's repair takes ~0.2 s
    let mut s = sender_over(10, 20_000, |c| {
        c.flow_window_bytes = u64::MAX;
        c.retransmit_bytes_per_s = 100_000;
    });
    drain_at(&mut s.sender, 1);
    let mut receiver = FrameWriter::new(1408, SESSION, 1);
    s.sender
        .handle_datagram(2, receiver.nak(FLAG_REPEAT, 5, 0, 20_000));
    // tokens for the first fragment: the repair has started, and now waits
    drain_at(&mut s.sender, 10 * MS);
    let started = s.sender.counters().retransmit_bytes;
    assert!(started > 0 && started < 20_000, "{started}");
    let live_before = s.sender.counters().data_bytes;
    // new small records while the repair waits for tokens: they go out at once
    for i in 0..50u8 {
        s.writer
            .append(RecordKind::APPLICATION_FIRST, &[i; 64])
            .unwrap();
    }
    drain_at(&mut s.sender, 11 * MS);
    assert_eq!(
        s.sender.position(),
        s.writer.position().get(),
        "live records waited behind a retransmission"
    );
    assert!(s.sender.counters().data_bytes > live_before);
    assert!(
        s.sender.counters().retransmit_bytes < 20_000,
        "the repair is still rate-limited"
    );
}
