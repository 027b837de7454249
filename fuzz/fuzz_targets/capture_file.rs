//! Any bytes as a capture file (pcap or pcapng, by their magic): read frame by frame,
//! each frame's datagram found whatever its link layer. Never a panic, never an
//! allocation beyond the record bound; an error ends the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_itch::pcap::{MAX_RECORD_LEN, PcapReader};

fuzz_target!(|bytes: &[u8]| {
    let Ok(mut reader) = PcapReader::new(bytes) else {
        return;
    };
    for _ in 0..100_000 {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                assert!(frame.data.len() <= MAX_RECORD_LEN as usize);
                let _ = frame.datagram();
            }
            Ok(None) | Err(_) => break,
        }
    }
});
