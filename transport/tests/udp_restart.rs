//! Restarts on either side of a UDP link (issue 19): a recreated source ring is followed
//! (the replica is replaced, its readers told to reopen, replication goes on); a
//! restarted receiver resumes its replica where the source still holds its position and
//! otherwise reports exactly what it lost; a receiver never replaces a ring it did not
//! create; and a forged SETUP of another session cannot take a stream over while its
//! source is heard.
//!
//! Seen failing before the change: the replica of a recreated ring stopped following
//! (and a restarted receiver dropped the new ring's records below its old position as
//! duplicates); a receiver replaced a publisher's own ring of the same name; a forged
//! SETUP switched the stream to the forger's session.
#![allow(clippy::disallowed_methods)] // tests may use clocks and threads

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{
    ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt, WriterState,
};
use mdi_protocol::time::WallNs;
use mdi_protocol::udp::frame::{FrameWriter, SetupBody};
use mdi_protocol::udp::{Channel, ReceiverEvent};
use mdi_transport::receiver::{SOURCE_SILENCE, StreamEvent, UdpReceiver, UdpReceiverOptions};
use mdi_transport::sender::{UdpSender, UdpSenderOptions};
use zerocopy::FromZeros;
use zerocopy::byteorder::little_endian::{U32, U64};

const APP: RecordKind = RecordKind::APPLICATION_FIRST;

fn channel() -> Channel {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Channel::parse(&format!("udp://127.0.0.1:{port}")).unwrap()
}

fn ring(shm: &ShmDir, capacity: u64, fresh: bool) -> RingWriter {
    let options = RingOptions::default()
        .capacity(capacity)
        .fresh(fresh)
        .now_ns(WallNs(now_ns()));
    RingWriter::create(shm, "ticks", &options).unwrap()
}

fn now_ns() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_nanos()).unwrap()
}

fn write(writer: &mut RingWriter, from: u32, count: u32) {
    for i in from..from + count {
        let body: Vec<u8> = (0..8 + i % 120).map(|b| (b ^ i) as u8).collect();
        writer.append(APP, &body).unwrap();
    }
}

fn receiver(channel: Channel, dir: &Path) -> UdpReceiver {
    UdpReceiver::new(channel, ShmDir::new(dir), UdpReceiverOptions::default()).unwrap()
}

fn sender(channel: Channel, dir: &Path) -> UdpSender {
    UdpSender::new(
        channel,
        &ShmDir::new(dir),
        &["ticks".to_string()],
        &UdpSenderOptions::default(),
    )
    .unwrap()
}

/// Polls both until `done` or `limit`; returns the receiver's events.
fn drive(
    receiver: &mut UdpReceiver,
    senders: &mut [&mut UdpSender],
    limit: Duration,
    mut done: impl FnMut(&UdpReceiver) -> bool,
) -> Vec<StreamEvent> {
    let end = Instant::now() + limit;
    let mut events = Vec::new();
    while Instant::now() < end {
        for sender in senders.iter_mut() {
            sender.poll().unwrap();
        }
        receiver.poll(Duration::from_millis(1)).unwrap();
        events.extend(receiver.take_events());
        if done(receiver) {
            break;
        }
    }
    events
}

/// A record as read: (position, sequence, body).
type Seen = (u64, u64, Vec<u8>);

/// Every record of `ticks` in `dir`, and the losses seen (sequence ranges).
fn contents(dir: &Path) -> (Vec<Seen>, Vec<(u64, u64)>) {
    let mut reader = RingReader::open(&ShmDir::new(dir), "ticks", StartAt::Earliest).unwrap();
    let (mut records, mut lost) = (Vec::new(), Vec::new());
    while !reader.caught_up() {
        reader
            .poll(1024, |event| match event {
                ReadEvent::Record(r) => {
                    records.push((r.position.get(), r.seq.get(), r.body.to_vec()))
                }
                ReadEvent::Lost { from_seq, to_seq } => lost.push((from_seq.get(), to_seq.get())),
                ReadEvent::EpochStarted { .. } => {}
            })
            .unwrap();
    }
    (records, lost)
}

fn caught_up_to(writer: &RingWriter) -> impl FnMut(&UdpReceiver) -> bool + '_ {
    move |r| r.stats().first().and_then(|s| s.position) == Some(writer.position().get())
}

#[test]
fn a_recreated_source_ring_served_on_is_followed_by_a_new_replica() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shm = ShmDir::new(src.path());
    let channel = channel();
    let mut writer = ring(&shm, 1 << 20, false);
    let mut rx = receiver(channel, dst.path());
    let mut tx = sender(channel, src.path());
    write(&mut writer, 0, 3_000);
    drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(10),
        caught_up_to(&writer),
    );
    assert_eq!(contents(dst.path()).0, contents(src.path()).0);
    let old_replica = RingReader::open(&ShmDir::new(dst.path()), "ticks", StartAt::Latest).unwrap();

    // `mdpub replay` afresh: a new ring of the same name; this sender serves on
    drop(writer);
    let mut writer = ring(&shm, 1 << 20, true);
    write(&mut writer, 10_000, 500);
    let events = drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(10),
        caught_up_to(&writer),
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, ReceiverEvent::NewRing { .. })),
        "{events:?}"
    );
    assert_eq!(
        old_replica.writer_status(WallNs(now_ns())).state,
        WriterState::Superseded,
        "readers of the old replica are told to reopen"
    );
    let (replica, lost) = contents(dst.path());
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(replica.len(), 500);
    assert!(
        replica == contents(src.path()).0,
        "the new replica differs from the new ring"
    );
}

#[test]
fn a_publisher_restarted_elsewhere_is_followed_once_the_old_one_is_silent() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shm = ShmDir::new(src.path());
    let channel = channel();
    let mut writer = ring(&shm, 1 << 20, false);
    let mut rx = receiver(channel, dst.path());
    let mut tx = sender(channel, src.path());
    write(&mut writer, 0, 1_000);
    drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(10),
        caught_up_to(&writer),
    );
    // The old source was last heard at or before this moment (frames still queued only
    // move it later); what follows until the receiver switches counts as its silence.
    let silent_since = Instant::now();
    drop(tx); // the publisher dies (no END)

    // it restarts on a new ring, from another socket
    drop(writer);
    let mut writer = ring(&shm, 1 << 20, true);
    let mut tx = sender(channel, src.path());
    write(&mut writer, 50_000, 700);
    let events = drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(15),
        caught_up_to(&writer),
    );
    // The last frame of the old source may have been handled a little before
    // `silent_since` (a starved machine stretches that): a quarter of the silence is the
    // slack. Following at once, the failure this guards against, takes milliseconds.
    let waited = silent_since.elapsed();
    assert!(
        waited >= SOURCE_SILENCE * 3 / 4,
        "followed {waited:?} after the old source was last heard, before it was silent"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, ReceiverEvent::NewRing { .. })),
        "{events:?}"
    );
    let (replica, lost) = contents(dst.path());
    assert!(lost.is_empty(), "{lost:?}");
    assert!(
        replica == contents(src.path()).0,
        "the replica differs from the new ring"
    );
}

#[test]
fn a_restarted_receiver_resumes_and_a_recreated_ring_is_not_taken_for_duplicates() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shm = ShmDir::new(src.path());
    let channel = channel();
    let mut writer = ring(&shm, 1 << 20, false);
    let mut tx = sender(channel, src.path());
    {
        let mut rx = receiver(channel, dst.path());
        write(&mut writer, 0, 2_000);
        drive(
            &mut rx,
            &mut [&mut tx],
            Duration::from_secs(10),
            caught_up_to(&writer),
        );
    }
    // the receiver is down; the stream goes on
    write(&mut writer, 2_000, 1_000);
    for _ in 0..100 {
        tx.poll().unwrap();
    }
    {
        let mut rx = receiver(channel, dst.path());
        let events = drive(
            &mut rx,
            &mut [&mut tx],
            Duration::from_secs(10),
            caught_up_to(&writer),
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.event, ReceiverEvent::Lost { .. })),
            "{events:?}"
        );
    }
    let (replica, lost) = contents(dst.path());
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(
        replica.len(),
        3_000,
        "resumed where it stopped, nothing lost"
    );
    assert!(replica == contents(src.path()).0);

    // down again; the source ring is recreated with less than the replica holds
    drop(writer);
    drop(tx);
    let mut writer = ring(&shm, 1 << 20, true);
    let mut tx = sender(channel, src.path());
    write(&mut writer, 90_000, 300);
    let mut rx = receiver(channel, dst.path());
    drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(10),
        caught_up_to(&writer),
    );
    let (replica, lost) = contents(dst.path());
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(
        replica.len(),
        300,
        "the new ring's records, not dropped as duplicates"
    );
    assert!(replica == contents(src.path()).0);
}

#[test]
fn a_restarted_receiver_behind_what_the_source_holds_reports_the_exact_loss() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shm = ShmDir::new(src.path());
    let channel = channel();
    let mut writer = ring(&shm, 64 << 10, false);
    let mut tx = sender(channel, src.path());
    {
        let mut rx = receiver(channel, dst.path());
        write(&mut writer, 0, 200);
        drive(
            &mut rx,
            &mut [&mut tx],
            Duration::from_secs(10),
            caught_up_to(&writer),
        );
    }
    let (before, _) = contents(dst.path());
    let resume_seq = before.last().unwrap().1 + 1;
    // while it is down the source laps its ring several times
    for round in 0..10 {
        write(&mut writer, 1_000 + round * 1_000, 1_000);
        for _ in 0..50 {
            tx.poll().unwrap();
        }
    }
    let retained = contents(src.path()).0;
    let first_retained = retained.first().unwrap().1;
    assert!(
        first_retained > resume_seq,
        "the source no longer holds the replica's position"
    );
    let mut rx = receiver(channel, dst.path());
    let events = drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(10),
        caught_up_to(&writer),
    );
    let lost: Vec<_> = events
        .iter()
        .filter_map(|e| match e.event {
            ReceiverEvent::Lost { from_seq, to_seq } => Some((from_seq, to_seq)),
            _ => None,
        })
        .collect();
    let total: u64 = lost.iter().map(|(a, b)| b - a).sum();
    assert_eq!(lost.first().map(|l| l.0), Some(resume_seq), "{lost:?}");
    // everything between the replica's position and what the sender could retransmit
    // is reported, nothing more
    let (replica, replica_lost) = contents(dst.path());
    let replica_records: Vec<_> = replica.iter().filter(|r| r.1 >= resume_seq).collect();
    let got = replica_records.len() as u64;
    assert_eq!(
        got + total,
        writer.next_seq().get() - resume_seq,
        "every sequence since the restart is either in the replica or reported lost"
    );
    // (the replica has lapped its own ring since: its readers no longer see that loss)
    assert!(replica_lost.is_empty(), "{replica_lost:?}");
    let tail: Vec<_> = retained
        .iter()
        .filter(|r| r.1 >= replica_records[0].1)
        .collect();
    assert!(
        replica_records.iter().zip(&tail).all(|(a, b)| a == b),
        "what was repaired equals the source"
    );
}

#[test]
fn a_ring_that_is_not_a_replica_is_never_replaced_by_a_receiver() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let channel = channel();
    // a publisher's own "ticks" in the receiver's directory
    let mut own = ring(&ShmDir::new(dst.path()), 1 << 20, false);
    write(&mut own, 0, 10);
    drop(own);
    let before = contents(dst.path()).0;
    let mut writer = ring(&ShmDir::new(src.path()), 1 << 20, false);
    let mut rx = receiver(channel, dst.path());
    let mut tx = sender(channel, src.path());
    write(&mut writer, 0, 100);
    drive(&mut rx, &mut [&mut tx], Duration::from_millis(500), |_| {
        false
    });
    assert!(rx.setups_refused() > 0);
    assert_eq!(
        contents(dst.path()).0,
        before,
        "the publisher's ring was touched"
    );
}

#[test]
fn a_forged_setup_of_another_session_does_not_take_a_heard_stream() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shm = ShmDir::new(src.path());
    let channel = channel();
    let mut writer = ring(&shm, 1 << 20, false);
    let mut rx = receiver(channel, dst.path());
    let mut tx = sender(channel, src.path());
    write(&mut writer, 0, 100);
    drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(10),
        caught_up_to(&writer),
    );
    let ring_id = RingReader::open(&shm, "ticks", StartAt::Latest)
        .unwrap()
        .info()
        .created_ns
        .cast_unsigned();

    // the forger knows the ring id (SETUP travels in clear): same ring, its own session,
    // and for good measure another ring
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = match channel.endpoint {
        mdi_protocol::udp::Endpoint::Unicast { addr } => addr,
        _ => unreachable!(),
    };
    for (session, forged_ring) in [(0x0bad_0001u32, ring_id), (0x0bad_0002, ring_id ^ 1)] {
        let mut body = SetupBody::new_zeroed();
        body.ring_id = U64::new(forged_ring);
        body.capacity = U64::new(1 << 20);
        body.initial_position = U64::new(0);
        body.tail_position = U64::new(1 << 16);
        body.mtu = U32::new(1408);
        body.stream_name[..5].copy_from_slice(b"ticks");
        let mut frames = FrameWriter::new(1408, session, 1);
        forger.send_to(frames.setup(0, &body), target).unwrap();
    }
    write(&mut writer, 100, 1_000);
    let events = drive(
        &mut rx,
        &mut [&mut tx],
        Duration::from_secs(10),
        caught_up_to(&writer),
    );
    assert!(
        !events.iter().any(|e| matches!(
            e.event,
            ReceiverEvent::NewRing { .. } | ReceiverEvent::NewSession { .. }
        )),
        "{events:?}"
    );
    assert!(rx.foreign() >= 2, "the forged SETUPs are counted");
    let (replica, lost) = contents(dst.path());
    assert!(lost.is_empty());
    assert!(replica == contents(src.path()).0);
}
