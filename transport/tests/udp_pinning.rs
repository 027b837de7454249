//! A receiver follows one session from the address its SETUP came from (issue 19): a
//! stray or forged frame from a third socket is counted and dropped — it neither reaches
//! the replica nor redirects NAKs and STATUS (which used to follow the source of the last
//! DATA frame of any session, sending repair requests, and the session id, to the stray).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::udp::Channel;
use mdi_protocol::udp::frame::FrameWriter;
use mdi_transport::receiver::{UdpReceiver, UdpReceiverOptions};
use mdi_transport::sender::{UdpSender, UdpSenderOptions};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn drive(receiver: &mut UdpReceiver, sender: &mut UdpSender, how_long: Duration) {
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        sender.poll().unwrap();
        receiver.poll(Duration::from_millis(1)).unwrap();
    }
}

#[test]
fn a_stray_frame_from_a_third_socket_is_dropped_and_does_not_redirect_repair() {
    let source_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let src = ShmDir::new(source_dir.path());
    let mut writer =
        RingWriter::create(&src, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    let port = free_port();
    let channel = Channel::parse(&format!("udp://127.0.0.1:{port}")).unwrap();
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
    writer
        .append(RecordKind::APPLICATION_FIRST, b"first")
        .unwrap();
    drive(&mut receiver, &mut sender, Duration::from_millis(300));
    let joined_at = receiver.stats()[0].position.expect("joined");

    // a third socket sends frames of every session id it might guess, past the frontier
    let stray = UdpSocket::bind("127.0.0.1:0").unwrap();
    stray.set_nonblocking(true).unwrap();
    for session in [0u32, 1, 2, 0xffff_ffff] {
        let mut forged = FrameWriter::new(1408, session, 1);
        let frame = forged.heartbeat(joined_at + 4096).to_vec();
        stray.send_to(&frame, ("127.0.0.1", port)).unwrap();
    }
    // then more records, and time for several STATUS rounds
    for _ in 0..50 {
        writer
            .append(RecordKind::APPLICATION_FIRST, b"more")
            .unwrap();
    }
    drive(&mut receiver, &mut sender, Duration::from_millis(1_500));

    assert_eq!(receiver.foreign(), 4, "every stray frame counted");
    let mut buf = [0u8; 2048];
    assert!(
        stray.recv_from(&mut buf).is_err(),
        "the stray socket received a NAK or STATUS (with the session id)"
    );
    assert_eq!(
        receiver.stats()[0].position,
        Some(writer.position().get()),
        "replication went on"
    );
}
