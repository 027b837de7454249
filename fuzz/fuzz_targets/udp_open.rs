//! Any datagram on a keyed channel: opening it either refuses it (bad tag, replay) or
//! yields the frame a key holder sealed — never a panic, never a forged frame accepted.
//! The input is split: a few datagrams a key holder really sealed (their frames chosen by
//! the input), then arbitrary datagrams, mutations of sealed ones among them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_protocol::udp::{ChannelKey, OpenError, TRAILER_LEN};

fuzz_target!(|input: &[u8]| {
    let key = ChannelKey::from_secret(&[0x11; 32]);
    let mut sealer = key.sealer([0x22; 16]);
    let mut opener = key.opener();
    let mut sealed = Vec::new();
    let mut genuine = std::collections::HashSet::new();
    for chunk in input.split(|&b| b == 0xff) {
        match chunk.first() {
            // a frame sealed by the key holder
            Some(0) => {
                let frame = &chunk[1..];
                let mut datagram = frame.to_vec();
                datagram.resize(frame.len() + TRAILER_LEN, 0);
                sealer.seal(&mut datagram, frame.len());
                genuine.insert(frame.to_vec());
                sealed.push(datagram);
            }
            // a sealed datagram, one byte flipped
            Some(1) if !sealed.is_empty() && chunk.len() >= 3 => {
                let mut datagram = sealed[usize::from(chunk[1]) % sealed.len()].clone();
                let at = usize::from(chunk[2]) % datagram.len();
                datagram[at] ^= 1 | chunk.get(3).copied().unwrap_or(0);
                // refused: as a bad tag, or — if it names a counter already taken — as a
                // replay (checked first: it is cheaper than decrypting)
                assert!(matches!(
                    opener.open(&mut datagram),
                    Err(OpenError::BadTag | OpenError::Replayed)
                ));
            }
            // a sealed datagram, sent (again)
            Some(2) if !sealed.is_empty() && chunk.len() >= 2 => {
                let mut datagram = sealed[usize::from(chunk[1]) % sealed.len()].clone();
                if let Ok(frame) = opener.open(&mut datagram) {
                    assert!(genuine.contains(frame), "opened to a frame nobody sealed");
                }
            }
            // anything
            _ => {
                let mut datagram = chunk.to_vec();
                assert_eq!(opener.open(&mut datagram), Err(OpenError::BadTag));
            }
        }
    }
});
