//! Real sockets on loopback: a ring served by `UdpSender` over unicast UDP, replicated by
//! the SDK's `UdpReceiver`, with 5 % of datagrams dropped on each side by the loss
//! generators. The replica must equal the source.

use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::udp::{Channel, ReceiverEvent};
use mdi_transport::receiver::{UdpReceiver, UdpReceiverOptions};
use mdi_transport::sender::{UdpSender, UdpSenderOptions};

mod common;
use common::{contents, free_port};

#[test]
fn unicast_on_loopback_with_loss_on_both_sides_replicates_exactly() {
    let source_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let src = ShmDir::new(source_dir.path());
    let dst = ShmDir::new(replica_dir.path());
    let options = RingOptions::default()
        .capacity(4 << 20)
        .now_ns(1_700_000_000_000_000_000);
    let writer = RingWriter::create(&src, "ticks", &options).unwrap();
    let channel = Channel::parse(&format!("udp://127.0.0.1:{}", free_port())).unwrap();

    let mut receiver = UdpReceiver::new(
        channel,
        dst.clone(),
        UdpReceiverOptions {
            debug_drop_rate: 0.05,
            debug_seed: 7,
            ..UdpReceiverOptions::default()
        },
    )
    .unwrap();
    let mut sender = UdpSender::new(
        channel,
        &src,
        &["ticks".to_string()],
        &UdpSenderOptions {
            linger: Duration::from_millis(300),
            debug_drop_rate: 0.05,
            debug_seed: 3,
        },
    )
    .unwrap();

    let records = 20_000u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    let mut writer = Some(writer);
    let mut closing = false;
    let mut ended = false;
    let mut events = Vec::new();
    while !ended {
        assert!(
            Instant::now() < deadline,
            "replication did not finish in time"
        );
        if let Some(w) = &mut writer {
            for _ in 0..200 {
                if written < records {
                    let body: Vec<u8> = (0..(8 + written % 200) as usize)
                        .map(|k| (written as u8) ^ k as u8)
                        .collect();
                    w.append(RecordKind::APPLICATION_FIRST, &body).unwrap();
                    written += 1;
                }
            }
            if written == records {
                writer = None;
            }
        }
        sender.poll().unwrap();
        if !closing && writer.is_none() && !sender.has_work() {
            closing = true;
            sender.close();
        }
        receiver.poll(Duration::from_micros(200)).unwrap();
        for event in receiver.take_events() {
            if matches!(event.event, ReceiverEvent::Ended { .. }) {
                ended = true;
            }
            events.push(event);
        }
    }
    let source = contents(&src, "ticks");
    let replica = contents(&dst, "ticks");
    assert_eq!(source.len() as u64, records + 1);
    assert_eq!(replica.len(), source.len());
    assert!(replica == source, "replica differs from source");
    let counters = &receiver.stats()[0].counters;
    assert!(
        counters.naks > 0,
        "5 % loss must have been repaired: {counters:?}"
    );
    assert!(receiver.debug_dropped() > 0 && sender.debug_dropped() > 0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, ReceiverEvent::Joined { .. }))
    );
}

#[test]
fn two_streams_on_one_channel_each_get_their_own_replica() {
    let source_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let src = ShmDir::new(source_dir.path());
    let dst = ShmDir::new(replica_dir.path());
    let names = ["klines".to_string(), "ticks".to_string()];
    let mut writers: Vec<RingWriter> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let options = RingOptions::default()
                .capacity(1 << 20)
                .now_ns(1_000 + i as i64);
            RingWriter::create(&src, name, &options).unwrap()
        })
        .collect();
    let channel = Channel::parse(&format!("udp://127.0.0.1:{}", free_port())).unwrap();
    let mut receiver = UdpReceiver::new(
        channel,
        dst.clone(),
        UdpReceiverOptions {
            debug_drop_rate: 0.03,
            ..UdpReceiverOptions::default()
        },
    )
    .unwrap();
    let mut sender = UdpSender::new(
        channel,
        &src,
        &names,
        &UdpSenderOptions {
            linger: Duration::from_millis(300),
            ..UdpSenderOptions::default()
        },
    )
    .unwrap();
    // Different content and pace per stream.
    for i in 0..3_000u64 {
        writers[0]
            .append(RecordKind::KLINE, &i.to_le_bytes())
            .unwrap();
        for _ in 0..3 {
            writers[1]
                .append(RecordKind::TRADE, &[i as u8; 40])
                .unwrap();
        }
        if i % 50 == 0 {
            sender.poll().unwrap();
            receiver.poll(Duration::ZERO).unwrap();
        }
    }
    drop(writers);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut closing = false;
    while !receiver.all_ended() {
        assert!(
            Instant::now() < deadline,
            "replication did not finish in time"
        );
        sender.poll().unwrap();
        if !closing && !sender.has_work() {
            closing = true;
            sender.close();
        }
        receiver.poll(Duration::from_micros(200)).unwrap();
    }
    let mut streams: Vec<String> = receiver.stats().into_iter().map(|s| s.stream).collect();
    streams.sort();
    assert_eq!(streams, names.to_vec());
    for name in &names {
        let source = contents(&src, name);
        let replica = contents(&dst, name);
        assert!(!source.is_empty());
        assert!(replica == source, "stream {name}: replica differs");
    }
    assert_eq!(contents(&dst, "ticks").len(), 9_001);
    assert_eq!(contents(&dst, "klines").len(), 3_001);
}
