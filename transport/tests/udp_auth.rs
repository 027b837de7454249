//! Optional authentication (issue 19): a channel with `?key=FILE` seals every datagram
//! (AES-128-GCM under the sending party's subkey, ADR 0014) and takes only datagrams that
//! open. Forged frames from a third socket — unsealed, sealed with another key, or a
//! sealed one sent again — are counted and have no effect, on a receiver and on a
//! sender; both ends must hold the same key.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::frame::{FLAG_REPEAT, FrameWriter};
use mdi_protocol::udp::{Channel, ChannelKey, FrameSealer, TRAILER_LEN};
use mdi_transport::receiver::{UdpReceiver, UdpReceiverOptions};
use mdi_transport::sender::{UdpSender, UdpSenderOptions};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{byte:02x}").repeat(32)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn drive(receiver: &mut UdpReceiver, sender: &mut UdpSender, how_long: Duration) {
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        sender.poll().unwrap();
        receiver.poll(Duration::from_millis(1)).unwrap();
    }
}

/// Every record of `stream` in `dir`: (position, sequence, kind, body).
fn contents(dir: &Path, stream: &str) -> Vec<(u64, u64, u16, Vec<u8>)> {
    let mut reader = RingReader::open(&ShmDir::new(dir), stream, StartAt::Earliest).unwrap();
    let mut out = Vec::new();
    while !reader.caught_up() {
        reader
            .poll(1024, |event| match event {
                ReadEvent::Record(r) => {
                    out.push((r.position.get(), r.seq.get(), r.kind.0, r.body.to_vec()));
                }
                ReadEvent::Lost { from_seq, to_seq } => panic!("loss {from_seq}..{to_seq}"),
                ReadEvent::EpochStarted { .. } => {}
            })
            .unwrap();
    }
    out
}

/// Records of many sizes, some larger than a datagram (fragmented).
fn write_records(writer: &mut RingWriter, count: u32) {
    for i in 0..count {
        let len = 8 + (i as usize * 37) % (if i % 50 == 0 { 5000 } else { 300 });
        let body: Vec<u8> = (0..len).map(|b| (b as u32 ^ i) as u8).collect();
        writer.append(RecordKind::APPLICATION_FIRST, &body).unwrap();
    }
}

/// Frames a forger can make: a heartbeat far ahead, an END, a SETUP-request answer are
/// all the same to the tag check; heartbeats and ENDs of guessed sessions suffice.
fn forged_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for session in [0u32, 1, 0xdead_beef] {
        let mut forged = FrameWriter::new(1408, session, 1);
        frames.push(forged.heartbeat(1 << 20).to_vec());
        frames.push(forged.end(1 << 20, 1_000_000).to_vec());
    }
    frames
}

#[test]
fn a_keyed_link_replicates_exactly_and_refuses_forged_frames() {
    let keys = tempfile::tempdir().unwrap();
    let right = key_file(keys.path(), "link.key", 0x42);
    let source_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let src = ShmDir::new(source_dir.path());
    let mut writer =
        RingWriter::create(&src, "ticks", &RingOptions::default().capacity(4 << 20)).unwrap();
    let port = free_port();
    let channel =
        Channel::parse(&format!("udp://127.0.0.1:{port}?key={}", right.display())).unwrap();
    assert!(channel.key.is_some());
    let mut receiver = UdpReceiver::new(
        channel,
        ShmDir::new(replica_dir.path()),
        UdpReceiverOptions::default(),
    )
    .unwrap();
    let mut sender = UdpSender::new(
        channel,
        &src,
        &["ticks".to_string()],
        &UdpSenderOptions::default(),
    )
    .unwrap();
    write_records(&mut writer, 10);
    drive(&mut receiver, &mut sender, Duration::from_millis(300));
    assert!(
        receiver.stats()[0].position.is_some(),
        "joined over the keyed link"
    );

    // a forger: the frames unsealed, and sealed with another key
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut other = ChannelKey::from_secret(&[0x43; 32]).sealer([3; 16]);
    let seal = |sealer: &mut FrameSealer, frame: &[u8]| {
        let mut datagram = frame.to_vec();
        datagram.resize(frame.len() + TRAILER_LEN, 0);
        sealer.seal(&mut datagram, frame.len());
        datagram
    };
    let mut sent = 0;
    for frame in forged_frames() {
        let sealed = seal(&mut other, &frame);
        for datagram in [&frame, &sealed] {
            forger.send_to(datagram, ("127.0.0.1", port)).unwrap();
            sent += 1;
        }
    }
    // and NAKs for everything, to the sender
    let sender_addr = sender.local_addr().unwrap();
    let mut nak = FrameWriter::new(1408, 0, 1);
    let nak = nak.nak(FLAG_REPEAT, 7, 0, 1 << 20).to_vec();
    forger.send_to(&nak, sender_addr).unwrap();
    forger
        .send_to(&seal(&mut other, &nak), sender_addr)
        .unwrap();
    // a holder of the key sends one sealed datagram twice: the second is a replay
    let mut holder = channel.key.unwrap().sealer([4; 16]);
    let mut frames = FrameWriter::new(1408, 0x1234, 99);
    let once = seal(&mut holder, frames.heartbeat(0));
    forger.send_to(&once, ("127.0.0.1", port)).unwrap();
    forger.send_to(&once, ("127.0.0.1", port)).unwrap();

    write_records(&mut writer, 2_000);
    drive(&mut receiver, &mut sender, Duration::from_millis(1_500));

    assert_eq!(receiver.bad_tags(), sent, "every forged frame counted");
    assert_eq!(
        receiver.replayed(),
        1,
        "the datagram sent again is a replay"
    );
    assert_eq!(sender.bad_tags(), 2, "both forged NAKs counted");
    assert_eq!(
        receiver.foreign(),
        0,
        "refused before anything else looked at them"
    );
    let stats = &sender.stats()[0].counters;
    assert_eq!(
        stats.retransmit_frames, 0,
        "a forged NAK retransmitted something"
    );
    assert_eq!(
        receiver.stats()[0].position,
        Some(writer.position().get()),
        "replication went on"
    );
    let source = contents(source_dir.path(), "ticks");
    assert_eq!(source.len(), 2_010);
    assert!(
        contents(replica_dir.path(), "ticks") == source,
        "the replica differs from its source"
    );
}

#[test]
fn a_receiver_without_the_right_key_takes_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let right = key_file(keys.path(), "right.key", 1);
    let wrong = key_file(keys.path(), "wrong.key", 2);
    let source_dir = tempfile::tempdir().unwrap();
    let src = ShmDir::new(source_dir.path());
    let mut writer =
        RingWriter::create(&src, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    write_records(&mut writer, 100);
    for receiver_key in [Some(&wrong), None] {
        let port = free_port();
        let uri = |key: Option<&PathBuf>| match key {
            Some(key) => format!("udp://127.0.0.1:{port}?key={}", key.display()),
            None => format!("udp://127.0.0.1:{port}"),
        };
        let replica_dir = tempfile::tempdir().unwrap();
        let mut receiver = UdpReceiver::new(
            Channel::parse(&uri(receiver_key)).unwrap(),
            ShmDir::new(replica_dir.path()),
            UdpReceiverOptions::default(),
        )
        .unwrap();
        let mut sender = UdpSender::new(
            Channel::parse(&uri(Some(&right))).unwrap(),
            &src,
            &["ticks".to_string()],
            &UdpSenderOptions::default(),
        )
        .unwrap();
        drive(&mut receiver, &mut sender, Duration::from_millis(500));
        assert!(receiver.stats().is_empty(), "{receiver_key:?}: joined");
        match receiver_key {
            // sealed with another key: bad tags
            Some(_) => assert!(receiver.bad_tags() > 0),
            // a sealed datagram to an unkeyed receiver: not a frame (encrypted)
            None => assert!(receiver.malformed() > 0 && receiver.bad_tags() == 0),
        }
        assert_eq!(std::fs::read_dir(replica_dir.path()).unwrap().count(), 0);
    }
}
