//! How a stream ends (found by the UDP fault soak on a starved machine): the sender
//! lingers while a receiver heard from reports less than was sent — NAKs or not (they
//! pause while it works through a backlog, or while it still asks a dead session it
//! followed until that fell silent) — and sends END at once when every one has
//! everything; never longer than its stretched linger, nor for a receiver no longer
//! heard from. END is then repeated until every receiver heard from says in its STATUS
//! that it saw END (a receiver that had everything missed all five ENDs in a loss
//! burst, and waited forever), at most `receiver_timeout_ns`. And a receiver that
//! follows a restarted publisher's new session asks it at once for every gap: it had
//! NAKed its hole to the session that died, then followed the new one only after the old
//! one's 2 s silence, with its NAKs backed off and its NAK budget held by what it had
//! asked of the dead sender.

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReplicaWriter, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::frame::{FLAG_END_SEEN, Frame, FrameWriter, StatusBody};
use mdi_protocol::udp::{Receiver, ReceiverConfig, ReceiverEvent, Sender, SenderConfig};
use zerocopy::byteorder::little_endian::U64;

const MS: u64 = 1_000_000;

fn sender(dir: &std::path::Path, tune: impl FnOnce(&mut SenderConfig)) -> Sender<RingReader> {
    sender_of(7, dir, tune)
}

/// A sender of session `session` serving `ticks` in `dir` from its earliest record.
fn sender_of(
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

/// A source ring, a replica of it and a receiver that has not joined yet (the
/// directories are kept by the caller).
fn link() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    RingWriter,
    ReplicaWriter,
    Receiver,
) {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = RingOptions::default().capacity(1 << 20);
    let writer = RingWriter::create(&ShmDir::new(src.path()), "ticks", &options).unwrap();
    let replica = ReplicaWriter::create(&ShmDir::new(dst.path()), "ticks", &options, 42).unwrap();
    let receiver = Receiver::new(ReceiverConfig::new(5, 1, false), 0u64);
    (src, dst, writer, replica, receiver)
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

fn ends(frames: &[Vec<u8>]) -> bool {
    frames
        .iter()
        .any(|f| matches!(Frame::parse(f), Ok(Frame::End(_))))
}

fn status(session: u32, receiver_id: u64, position: u64) -> Vec<u8> {
    status_flagged(session, receiver_id, position, 0)
}

fn status_flagged(session: u32, receiver_id: u64, position: u64, flags: u16) -> Vec<u8> {
    FrameWriter::new(1408, session, 1)
        .status(
            flags,
            &StatusBody {
                receiver_id: U64::new(receiver_id),
                position: U64::new(position),
                high_water_mark: U64::new(position),
                lost_records: U64::new(0),
            },
        )
        .to_vec()
}

/// A sender that has sent 100 records and is closed at 3 ms; its linger is 50 ms.
fn closed_sender(
    dir: &std::path::Path,
    receiver_timeout_ns: u64,
) -> (RingWriter, Sender<RingReader>, u64) {
    let options = RingOptions::default().capacity(1 << 20);
    let mut writer = RingWriter::create(&ShmDir::new(dir), "ticks", &options).unwrap();
    let mut sender = sender(dir, |c| {
        c.linger_ns = 50 * MS;
        c.receiver_timeout_ns = receiver_timeout_ns;
    });
    append(&mut writer, 100);
    drain(&mut sender, MS);
    let sent = sender.position();
    assert_eq!(sent, writer.position().get());
    (writer, sender, sent)
}

#[test]
fn the_sender_lingers_while_a_receiver_reports_it_is_behind_though_it_sends_no_nak() {
    let dir = tempfile::tempdir().unwrap();
    let (_writer, mut sender, sent) = closed_sender(dir.path(), 2_000 * MS);
    sender.handle_datagram(2 * MS, &status(7, 1, sent)); // one receiver has everything
    sender.handle_datagram(2 * MS, &status(7, 2, sent / 2)); // one is half way
    sender.close(3 * MS);
    // no NAK comes (its repeats wait behind a backlog, say), its STATUS does
    for now in [60 * MS, 120 * MS, 300 * MS] {
        sender.handle_datagram(now, &status(7, 2, sent / 2));
        assert!(
            !ends(&drain(&mut sender, now)),
            "END at {now} ns while a receiver is behind"
        );
    }
    // it has the whole stream: END at once
    sender.handle_datagram(301 * MS, &status(7, 2, sent));
    assert!(ends(&drain(&mut sender, 301 * MS)));
}

#[test]
fn a_receiver_behind_holds_the_sender_at_most_its_stretched_linger() {
    let dir = tempfile::tempdir().unwrap();
    let (_writer, mut sender, sent) = closed_sender(dir.path(), 2_000 * MS);
    sender.close(3 * MS);
    let mut ended_at = None;
    for now in (10..1_000).map(|ms| ms * MS) {
        sender.handle_datagram(now, &status(7, 2, sent / 2));
        if ends(&drain(&mut sender, now)) {
            ended_at = Some(now);
            break;
        }
    }
    // ten lingers after the close
    assert_eq!(ended_at, Some(503 * MS));
}

#[test]
fn a_receiver_behind_that_falls_silent_holds_the_sender_no_longer() {
    let dir = tempfile::tempdir().unwrap();
    let (_writer, mut sender, sent) = closed_sender(dir.path(), 100 * MS);
    sender.handle_datagram(2 * MS, &status(7, 2, sent / 2));
    sender.close(3 * MS);
    // heard from 2 ms: held past the linger (53 ms)…
    assert!(!ends(&drain(&mut sender, 80 * MS)));
    // …until it is no longer heard from (102 ms)
    assert!(ends(&drain(&mut sender, 110 * MS)));
}

#[test]
fn end_is_repeated_until_every_receiver_heard_from_says_it_saw_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_writer, mut sender, sent) = closed_sender(dir.path(), 2_000 * MS);
    // two receivers with everything: END at once
    sender.handle_datagram(2 * MS, &status(7, 1, sent));
    sender.handle_datagram(2 * MS, &status(7, 2, sent));
    sender.close(3 * MS);
    let mut end_frames = 0;
    for now in (3..200).map(|ms| ms * MS) {
        if now == 150 * MS {
            // receiver 1 saw one; receiver 2 (all its ENDs lost) still says nothing
            sender.handle_datagram(now, &status_flagged(7, 1, sent, FLAG_END_SEEN));
        }
        let frames = drain(&mut sender, now);
        end_frames += frames
            .iter()
            .filter(|f| matches!(Frame::parse(f), Ok(Frame::End(_))))
            .count();
        sender.handle_datagram(now, &status(7, 2, sent));
    }
    assert!(
        !sender.is_closed(),
        "closed while a receiver has not seen END"
    );
    assert!(end_frames > 5, "END repeated: {end_frames}");
    // receiver 2 finally sees one
    sender.handle_datagram(200 * MS, &status_flagged(7, 2, sent, FLAG_END_SEEN));
    drain(&mut sender, 210 * MS);
    assert!(sender.is_closed());
}

#[test]
fn end_waits_for_a_receiver_that_never_says_it_saw_it_at_most_the_receiver_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_writer, mut sender, sent) = closed_sender(dir.path(), 500 * MS);
    sender.close(3 * MS);
    // it keeps saying it has everything, never that it saw END (its downlink is dead)
    let mut closed_at = None;
    for now in (3..2_000).map(|ms| ms * MS) {
        sender.handle_datagram(now, &status(7, 2, sent));
        drain(&mut sender, now);
        if sender.is_closed() {
            closed_at = Some(now);
            break;
        }
    }
    assert_eq!(
        closed_at,
        Some(503 * MS),
        "the receiver timeout after the first END"
    );
}

#[test]
fn a_receiver_that_missed_every_end_ends_on_a_repeat_and_says_so() {
    let (src, _dst, mut writer, mut replica, mut receiver) = link();
    let mut sender = sender(src.path(), |_| {});
    append(&mut writer, 50);
    let mut ended_at = None;
    for now in (1..1_000).map(|ms| ms * MS) {
        if now == 10 * MS {
            sender.close(now);
        }
        for frame in drain(&mut sender, now) {
            // a loss burst swallows everything the receiver is sent from 10 to 80 ms:
            // more than the first five ENDs
            if !(10 * MS..80 * MS).contains(&now) {
                receiver.handle_datagram(now, &frame, &mut replica);
            }
        }
        while let Some(event) = receiver.poll_event() {
            if matches!(event, ReceiverEvent::Ended { .. }) {
                ended_at = Some(now);
            }
        }
        while let Some(frame) = receiver.poll_transmit(now) {
            let frame = frame.to_vec();
            sender.handle_datagram(now, &frame);
        }
        if sender.is_closed() {
            break;
        }
    }
    let ended_at = ended_at.expect("the receiver saw an END");
    assert!(ended_at >= 80 * MS, "{ended_at}");
    assert!(sender.is_closed(), "the receiver's STATUS said it saw END");
    assert_eq!(receiver.position(), Some(writer.position().get()));
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
    let (src, _dst, mut writer, mut replica, mut receiver) = link();
    let mut old = sender_of(100, src.path(), |_| {});
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
    let options = RingOptions::default().capacity(1 << 20);
    let mut writer = RingWriter::create(&ShmDir::new(src.path()), "ticks", &options).unwrap();
    append(&mut writer, 5);
    let mut new = sender_of(101, src.path(), |_| {});
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
