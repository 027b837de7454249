//! Any bytes as the ITCH path sees them: a MoldUDP64 packet through the session, its
//! messages decoded and applied to order books; an ITCH file; an Ethernet frame. Never a
//! panic, and the session delivers each sequence at most once, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_itch::book::{Applied, Books};
use mdi_itch::message::{FileMessages, decode};
use mdi_itch::mold::{Output, Session, SessionConfig};
use mdi_itch::pcap::udp_datagram;
use mdi_protocol::time::MonoNs;

fuzz_target!(|bytes: &[u8]| {
    let mut books = Books::new();
    let mut session = Session::new(SessionConfig {
        start: Some(1),
        max_buffered_packets: 64,
        max_buffered_bytes: 16 << 10,
        ..SessionConfig::default()
    });
    let mut last = 0u64;
    // the input as a few packets (split at 0xFF 0xFE, an arbitrary marker)
    for (now, packet) in bytes.split(|&b| b == 0xfe).enumerate() {
        session.on_packet(MonoNs(now as u64), packet, &mut |output| match output {
            Output::Delivering(packet) => {
                for message in packet.messages() {
                    books.prefetch(message);
                }
            }
            Output::Message { seq, message } => {
                assert!(seq > last, "sequence {seq} after {last}");
                last = seq;
                if let Ok(m) = decode(message) {
                    books.apply(&m, &mut Applied::default());
                }
            }
            _ => {}
        });
        session.on_timer(MonoNs(now as u64 * 100_000_000), &mut |_| {});
    }
    session.finish(&mut |_| {});
    for m in FileMessages::new(bytes).take(10_000) {
        if let Ok(m) = m {
            let _ = decode(m);
        }
    }
    let _ = udp_datagram(bytes);
});
