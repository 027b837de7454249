//! `mdbench itch`: ITCH 5.0 over MoldUDP64 on one core — a synthetic feed's packets
//! (generated first, in memory) through the session, the decoder, the order books and
//! the normalizer into the `ticks` ring (records committed to shared memory). Also the
//! decode + book stage alone, to show where the time goes.

use std::time::Instant;

use anyhow::{Context, Result};
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_publisher::itch::book::Books;
use mdi_publisher::itch::feed::ItchFeed;
use mdi_publisher::itch::message::decode;
use mdi_publisher::itch::mold::{Packet, Session, SessionConfig};
use mdi_publisher::itch::sim::{SimConfig, messages, packets};
use mdi_publisher::normalize::Rings;

use crate::harness::{ResultLine, msgs_per_s, nanos, pin};

/// Runs `mdbench itch`.
pub fn run(quick: bool) -> Result<()> {
    let count: u64 = if quick { 1_000_000 } else { 10_000_000 };
    let config = SimConfig {
        messages: count,
        symbols: 100,
        seed: 3,
        ..SimConfig::default()
    };
    let messages = messages(&config);
    let packets = packets(&config, &messages);
    pin(0);

    // decode + books only
    let mut books = Books::new();
    let mut events = 0u64;
    let started = Instant::now();
    for (_, bytes) in &packets {
        let packet = Packet::parse(bytes).context("a generated packet")?;
        for message in packet.messages() {
            if let Ok(m) = decode(message) {
                books.apply(&m, &mut |_| events += 1);
            }
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(events);
    ResultLine::new("itch-book", "mdi")
        .field("messages", messages.len())
        .field(
            "msgs_per_s",
            msgs_per_s(messages.len() as u64, nanos(elapsed)),
        )
        .print();

    // the whole path: session, decode, books, records committed to the ring
    let dir = tempfile::tempdir_in("/dev/shm").context("a shm directory")?;
    let shm = ShmDir::new(dir.path());
    let options = RingOptions::default().capacity(1 << 30);
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", &options)?,
        klines: RingWriter::create(&shm, "klines", &RingOptions::default())?,
    };
    let mut feed = ItchFeed::new(rings, Some(0), || 0);
    let mut session = Session::new(SessionConfig::default());
    let mut failed = None;
    let started = Instant::now();
    for (i, (_, bytes)) in packets.iter().enumerate() {
        let now = i as i64;
        session.on_packet(now, bytes, &mut |output| {
            if let Err(e) = feed.on_output(now, output) {
                failed.get_or_insert(e);
            }
        });
        feed.end_packet(now)?;
    }
    let elapsed = started.elapsed();
    if let Some(e) = failed {
        return Err(e.into());
    }
    let counters = feed.counters();
    anyhow::ensure!(
        counters.messages == messages.len() as u64,
        "messages went missing"
    );
    ResultLine::new("itch-pipeline", "mdi")
        .field("messages", counters.messages)
        .field("records", counters.records)
        .field("msgs_per_s", msgs_per_s(counters.messages, nanos(elapsed)))
        .print();
    Ok(())
}
