//! A SETUP can come from anyone (issue 19): the receiver makes a replica only for the
//! streams it accepts, up to the capacity it allows, never replaces a ring whose writer
//! lives, and counts what it refuses instead of exiting; a flood of stream ids cannot
//! grow its stream table without bound.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::udp::Channel;
use mdi_protocol::udp::frame::{FrameWriter, SetupBody, encode_stream_name};
use mdi_transport::receiver::{UdpReceiver, UdpReceiverOptions};
use zerocopy::byteorder::little_endian::{U32, U64};

fn receiver(options: UdpReceiverOptions) -> (tempfile::TempDir, UdpReceiver, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = Channel::parse(&format!("udp://127.0.0.1:{port}")).unwrap();
    let receiver = UdpReceiver::new(channel, ShmDir::new(dir.path()), options).unwrap();
    (dir, receiver, port)
}

fn setup(stream_id: u32, name: &str, capacity: u64) -> Vec<u8> {
    let body = SetupBody {
        epoch: U64::new(1),
        ring_id: U64::new(7),
        capacity: U64::new(capacity),
        initial_position: U64::new(0),
        initial_seq: U64::new(0),
        retained_from: U64::new(0),
        tail_position: U64::new(0),
        mtu: U32::new(1408),
        reserved: U32::new(0),
        stream_name: encode_stream_name(name).unwrap(),
    };
    FrameWriter::new(1408, 99, stream_id)
        .setup(0, &body)
        .to_vec()
}

/// Sends `frames` to the receiver and polls it until they are handled (bounded).
fn deliver(receiver: &mut UdpReceiver, port: u16, frames: &[Vec<u8>]) {
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for frame in frames {
        forger.send_to(frame, ("127.0.0.1", port)).unwrap();
    }
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        receiver
            .poll(Duration::from_millis(1))
            .expect("a refused SETUP is never an error");
    }
}

fn files(dir: &tempfile::TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.contains(".udp-"))
        .collect();
    names.sort();
    names
}

#[test]
fn only_accepted_streams_within_the_capacity_limit_get_a_replica() {
    let (dir, mut receiver, port) = receiver(UdpReceiverOptions {
        accept_streams: Some(vec!["ticks".into()]),
        max_capacity: 4 << 20,
        ..UdpReceiverOptions::default()
    });
    deliver(
        &mut receiver,
        port,
        &[
            setup(1, "evil", 1 << 20),
            setup(2, "ticks", 1 << 30),
            setup(3, "../../etc", 1 << 20),
        ],
    );
    assert_eq!(files(&dir), Vec::<String>::new(), "no replica was made");
    assert_eq!(receiver.setups_refused(), 3);
    // the one it accepts, within the limit
    deliver(&mut receiver, port, &[setup(4, "ticks", 1 << 20)]);
    assert!(
        files(&dir).iter().any(|f| f.starts_with("ticks")),
        "{:?}",
        files(&dir)
    );
}

#[test]
fn a_ring_whose_writer_lives_is_not_replaced_and_the_receiver_goes_on() {
    let (dir, mut receiver, port) = receiver(UdpReceiverOptions::default());
    // a publisher's own ring of that name, alive, of another capacity
    let _writer = RingWriter::create(
        &ShmDir::new(dir.path()),
        "ticks",
        &RingOptions::default().capacity(2 << 20),
    )
    .unwrap();
    let ring = dir.path().join("ticks.ring");
    let before = std::fs::read(&ring).unwrap();
    deliver(&mut receiver, port, &[setup(1, "ticks", 1 << 20)]);
    assert_eq!(receiver.setups_refused(), 1);
    assert!(
        std::fs::read(&ring).unwrap() == before,
        "the live ring is untouched"
    );
}

#[test]
fn a_flood_of_stream_ids_is_bounded() {
    let (_dir, mut receiver, port) = receiver(UdpReceiverOptions {
        max_streams: 8,
        ..UdpReceiverOptions::default()
    });
    let frames: Vec<Vec<u8>> = (0..500u32)
        .map(|id| FrameWriter::new(1408, 5, id + 1).heartbeat(0).to_vec())
        .collect();
    deliver(&mut receiver, port, &frames);
    assert_eq!(receiver.streams_refused(), 492);
}
