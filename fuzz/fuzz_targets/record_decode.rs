//! Any record body: decoding every record kind returns a value or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_protocol::records::{
    BookUpdate, EpochStart, FeedStatus, InstrumentDefinition, Kline, Quote, Trade, decode,
};

fuzz_target!(|bytes: &[u8]| {
    // Ring readers hand out 8-byte-aligned bodies; do the same.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (i, b) in bytes.iter().enumerate() {
        words[i / 8] |= u64::from(*b) << (8 * (i % 8));
    }
    let aligned: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let body = &aligned[..bytes.len()];
    let _ = decode::<Trade>(body);
    let _ = decode::<Quote>(body);
    let _ = decode::<BookUpdate>(body);
    let _ = decode::<Kline>(body);
    let _ = decode::<InstrumentDefinition>(body);
    let _ = decode::<FeedStatus>(body);
    let _ = decode::<EpochStart>(body);
});
