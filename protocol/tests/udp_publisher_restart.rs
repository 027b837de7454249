//! A publisher restarted while a receiver is still repairing (found by the UDP fault
//! soak on a starved machine: a receiver back from a 2 s link outage had NAKed its hole
//! to the publisher that was then killed; it followed the restarted one only after the
//! old one's silence, its gap NAKs backed off and its NAK budget held by what it had
//! asked of the dead sender; the new sender, hearing no NAK for a linger period, ended
//! the stream while that receiver's STATUS still said it was behind; the receiver gave
//! the hole up as lost although the ring held all of it).
//!
//! The receiver asks the new session for every gap at once (the sender's side of it,
//! lingering while a receiver reports it is behind, is in `udp_end.rs`).

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReplicaWriter, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::frame::{Frame, FrameWriter};
use mdi_protocol::udp::{Receiver, ReceiverConfig, ReceiverEvent, Sender, SenderConfig};

const MS: u64 = 1_000_000;

fn sender(
    session: u32,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut SenderConfig),
) -> Sender<RingReader> {
    let reader = RingReader::open(&ShmDir::new(dir), "ticks", StartAt::Earliest).unwrap();
    let mut config = SenderConfig::new(session, 1, "ticks", &reader, 1, 42);
    tune(&mut config);
    Sender::new(config, reader, 0u64)
}

fn append(writer: &mut RingWriter, records: u64) {
    for i in 0..records {
        writer
            .append(RecordKind::APPLICATION_FIRST, &[i as u8; 100])
            .unwrap();
    }
}

/// Every frame the sender has due at `now`.
fn drain(sender: &mut Sender<RingReader>, now: u64) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some(frame) = sender.poll_transmit(now) {
        frames.push(frame.to_vec());
        assert!(frames.len() < 100_000, "the sender never stops");
    }
    frames
}

fn naks(frames: &[Vec<u8>]) -> Vec<(u32, u64)> {
    frames
        .iter()
        .filter_map(|f| match Frame::parse(f) {
            Ok(Frame::Nak(nak)) => Some((nak.session_id, nak.body.position.get())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_receiver_asks_a_new_session_at_once_for_what_it_asked_of_the_dead_one() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = RingOptions::default().capacity(1 << 20);
    let mut writer = RingWriter::create(&ShmDir::new(src.path()), "ticks", &options).unwrap();
    let mut replica =
        ReplicaWriter::create(&ShmDir::new(dst.path()), "ticks", &options, 42).unwrap();
    let mut receiver = Receiver::new(ReceiverConfig::new(5, 1, false), 0u64);
    let mut old = sender(100, src.path(), |_| {});
    append(&mut writer, 50);
    // the receiver joins and takes the first frames; the rest is lost on the way
    let frames = drain(&mut old, MS);
    let (head, tail) = frames.split_at(frames.len() / 2);
    for frame in head {
        receiver.handle_datagram(MS, frame, &mut replica);
    }
    let hole = receiver.position().unwrap();
    receiver.handle_datagram(
        MS,
        FrameWriter::new(1408, 100, 1).heartbeat(writer.position().get()),
        &mut replica,
    );
    assert!(!tail.is_empty());
    let mut asked = Vec::new();
    while let Some(frame) = receiver.poll_transmit(2 * MS) {
        asked.push(frame.to_vec());
    }
    assert_eq!(
        naks(&asked),
        [(100, hole)],
        "the hole is NAKed to the old session"
    );

    // that publisher dies before it answers; one restarted on the same ring takes over
    drop(old);
    drop(writer);
    let mut writer = RingWriter::create(&ShmDir::new(src.path()), "ticks", &options).unwrap();
    append(&mut writer, 5);
    let mut new = sender(101, src.path(), |_| {});
    let now = 2 * MS + 100_000; // well within the old NAK's repeat timeout
    for frame in drain(&mut new, now) {
        receiver.handle_datagram(now, &frame, &mut replica);
    }
    let events: Vec<_> = std::iter::from_fn(|| receiver.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            ReceiverEvent::NewSession {
                session_id: 101,
                ..
            }
        )),
        "{events:?}"
    );
    let mut asked = Vec::new();
    while let Some(frame) = receiver.poll_transmit(now) {
        asked.push(frame.to_vec());
    }
    assert_eq!(
        naks(&asked).first(),
        Some(&(101, hole)),
        "the hole is asked of the new session at once"
    );
    // and repaired from it: the replica is whole
    for frame in &asked {
        new.handle_datagram(now, frame);
    }
    for step in 1..100 {
        let now = now + step * MS;
        for frame in drain(&mut new, now) {
            receiver.handle_datagram(now, &frame, &mut replica);
        }
        while let Some(frame) = receiver.poll_transmit(now) {
            let frame = frame.to_vec();
            new.handle_datagram(now, &frame);
        }
    }
    assert_eq!(receiver.position(), Some(writer.position().get()));
    assert_eq!(receiver.counters().lost_records, 0);
}
