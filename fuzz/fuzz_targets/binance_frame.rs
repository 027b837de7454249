//! Any text as a Binance WebSocket frame: decoding never panics, and the normalizer takes
//! whatever decodes (or is refused) without panicking or failing — bad input is counted
//! and skipped, the feed goes on.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_publisher::binance::frame;
use mdi_publisher::binance::normalize::{Normalizer, NormalizerConfig};
use mdi_publisher::pipeline::Rings;

fn normalizer() -> &'static Mutex<Normalizer> {
    static NORMALIZER: OnceLock<Mutex<Normalizer>> = OnceLock::new();
    NORMALIZER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mdi-fuzz-{}", std::process::id()));
        let shm = ShmDir::new(&dir);
        let options = RingOptions::default().capacity(1 << 20).fresh(true);
        let rings = Rings {
            ticks: RingWriter::create(&shm, "ticks", &options).expect("ticks"),
            klines: RingWriter::create(&shm, "klines", &options).expect("klines"),
        };
        Mutex::new(Normalizer::new(NormalizerConfig::default(), rings, || 0).expect("normalizer"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = frame::parse(text);
    let _ = frame::parse_serde_json(text);
    let _ = frame::parse_depth_snapshot(text);
    let mut n = normalizer().lock().expect("lock");
    n.on_frame(1, text)
        .expect("a frame never fails the normalizer");
    n.on_snapshot(2, "BTCUSDT", text)
        .expect("nor does a snapshot");
});
