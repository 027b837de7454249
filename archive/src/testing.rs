//! Test fixtures: a ring in a temporary shm directory, trades with publish times.

use std::path::PathBuf;

use mdi_protocol::records::Trade;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub shm: ShmDir,
    pub archive: PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path().join("shm"));
    let archive = dir.path().join("archive");
    Fixture {
        _dir: dir,
        shm,
        archive,
    }
}

pub fn writer(f: &Fixture, capacity: u64) -> RingWriter {
    RingWriter::create(
        &f.shm,
        "ticks",
        &RingOptions::default().capacity(capacity).prefault(false),
    )
    .unwrap()
}

pub fn trade(n: u64) -> Trade {
    Trade {
        instrument_id: 1,
        price: n as i64,
        qty: 1,
        venue_seq: n,
        ts_publish_ns: 1_000_000 + n as i64 * 1000,
        ..Trade::default()
    }
}
