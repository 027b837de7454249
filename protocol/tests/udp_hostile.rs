//! Hostile NAKs at the sender (issue 19): a NAK that does not start on a record boundary
//! is refused and counted — its bytes would otherwise be read as a record header and sent
//! as records — and one NAK can never ask for more than `max_nak_bytes` (a NAK of
//! u32::MAX bytes used to resend the whole ring).

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::frame::FrameWriter;
use mdi_protocol::udp::{Sender, SenderConfig};

const SESSION: u32 = 77;

/// A sender over a ring of `records` records of 200 bytes, everything sent live.
fn sent_sender(
    records: u64,
) -> (
    tempfile::TempDir,
    RingWriter,
    Sender<RingReader>,
    u64,
    Vec<u64>,
) {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut writer =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(8 << 20)).unwrap();
    let reader = RingReader::open(&shm, "ticks", StartAt::Earliest).unwrap();
    let mut config = SenderConfig::new(SESSION, 1, "ticks", &reader, writer.epoch(), 42);
    config.retransmit_bytes_per_s = 1 << 40; // no rate cap: count what a NAK asks for
    config.flow_window_bytes = u64::MAX; // no receivers here: send everything live
    let mut sender = Sender::new(config, reader, 0u64);
    let mut boundaries = Vec::new();
    for i in 0..records {
        boundaries.push(writer.position().get());
        writer
            .append(RecordKind::APPLICATION_FIRST, &[i as u8; 200])
            .unwrap();
    }
    let mut now = 1u64;
    for _ in 0..1_000_000 {
        if sender.poll_transmit(now).is_none() {
            break;
        }
        now += 1;
    }
    // the epoch-start record, then the records
    assert_eq!(
        sender.counters().data_bytes,
        writer.position().get(),
        "everything was sent live"
    );
    (dir, writer, sender, now, boundaries)
}

/// Drains the sender for a while; the frames it sent.
fn drain(sender: &mut Sender<RingReader>, now: &mut u64) -> usize {
    let mut frames = 0;
    for _ in 0..1_000_000 {
        *now += 1_000;
        if sender.poll_transmit(*now).is_none() {
            break;
        }
        frames += 1;
    }
    frames
}

#[test]
fn a_nak_inside_a_record_is_refused_and_counted() {
    let (_dir, _writer, mut sender, mut now, boundaries) = sent_sender(50);
    let mut receiver = FrameWriter::new(1408, SESSION, 1);
    for inside in [
        boundaries[10] + 8,
        boundaries[20] + 64,
        boundaries[30] + 200,
    ] {
        sender.handle_datagram(now, receiver.nak(0, 5, inside, 400));
    }
    drain(&mut sender, &mut now);
    let c = sender.counters();
    assert_eq!(c.naks, 3);
    assert_eq!(c.naks_refused, 3, "{c:?}");
    assert_eq!(c.retransmit_bytes, 0, "nothing resent from inside a record");
    // the same NAK on the boundary is answered
    sender.handle_datagram(now, receiver.nak(0, 5, boundaries[10], 400));
    drain(&mut sender, &mut now);
    assert!(sender.counters().retransmit_bytes >= 400);
}

#[test]
fn one_nak_resends_at_most_max_nak_bytes() {
    // ~2.2 MB of records sent
    let (_dir, writer, mut sender, mut now, boundaries) = sent_sender(10_000);
    assert!(writer.position().get() - boundaries[0] > 2 << 20);
    let mut receiver = FrameWriter::new(1408, SESSION, 1);
    sender.handle_datagram(now, receiver.nak(0, 5, boundaries[0], u32::MAX));
    drain(&mut sender, &mut now);
    let c = sender.counters();
    assert!(
        c.retransmit_bytes <= (1 << 20) + 1408,
        "one NAK resent {} bytes",
        c.retransmit_bytes
    );
    assert!(c.retransmit_bytes >= 1 << 19, "{c:?}");
}

#[test]
fn a_flood_of_naks_for_ranges_no_longer_held_costs_a_bounded_number_of_replies() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut writer =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(64 << 10)).unwrap();
    let reader = RingReader::open(&shm, "ticks", StartAt::Earliest).unwrap();
    let config = SenderConfig::new(SESSION, 1, "ticks", &reader, writer.epoch(), 42);
    let mut sender = Sender::new(config, reader, 0u64);
    let mut now = 1u64;
    // 400 KB through a 64 KiB ring, sent live as it is written
    for i in 0..2_000u64 {
        writer
            .append(RecordKind::APPLICATION_FIRST, &[i as u8; 200])
            .unwrap();
        if i % 20 == 0 {
            drain(&mut sender, &mut now);
        }
    }
    drain(&mut sender, &mut now);
    let mut receiver = FrameWriter::new(1408, SESSION, 1);
    for k in 0..10_000u64 {
        sender.handle_datagram(now, receiver.nak(0, 5, k * 8, 100));
    }
    drain(&mut sender, &mut now);
    let c = sender.counters();
    assert!(c.unavailable <= 64, "{c:?}");
    assert!(c.naks_refused > 9_000, "{c:?}");
    // live data still flows
    let before = c.data_bytes;
    writer
        .append(RecordKind::APPLICATION_FIRST, &[1u8; 200])
        .unwrap();
    drain(&mut sender, &mut now);
    assert!(sender.counters().data_bytes > before);
}
