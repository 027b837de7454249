//! Any datagram: the frame decoder returns a frame or an error, never panics, and a DATA
//! frame it accepts is a sequence of whole records filling the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_protocol::ring::align_record;
use mdi_protocol::udp::frame::Frame;

fuzz_target!(|datagram: &[u8]| {
    if let Ok(Frame::Data(data)) = Frame::parse(datagram) {
        if !data.body.is_fragment(data.flags) {
            let total: u64 = data
                .body
                .records()
                .map(|(_, header)| align_record(u64::from(header.len)))
                .sum();
            assert_eq!(total, data.body.payload.len() as u64);
        }
    }
});
