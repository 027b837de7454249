//! Criterion micro-benchmarks: encoding and decoding each record kind, decimal parsing and
//! formatting, and a ring append + poll round trip in one thread.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mdi_protocol::decimal::{Decimal, parse_i64};
use mdi_protocol::records::{
    BookUpdate, FeedState, FeedStatus, InstrumentDefinition, InstrumentKind, Kline, PriceLevel,
    Quote, RecordEncoder, RecordType, Side, Trade, decode, records_capnp,
};
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use zerocopy::IntoBytes;

fn trade() -> Trade {
    Trade {
        instrument_id: 1,
        price_exponent: -2,
        qty_exponent: -8,
        aggressor: Side::Buy,
        venue_seq: 3_912_312_331,
        ts_exchange_ns: 1_700_000_000_000_000_000,
        ts_receive_ns: 1_700_000_000_000_100_000,
        ts_publish_ns: 1_700_000_000_000_101_000,
        price: 2_712_345,
        qty: 1_500_000,
        trade_id: 3_912_312_331,
        first_trade_id: 3_912_312_331,
        last_trade_id: 3_912_312_331,
        is_aggregate: false,
    }
}

/// A record value the encode benchmark can encode without knowing its type.
trait Encodable {
    fn encode_len(&self, encoder: &mut RecordEncoder) -> usize;
    /// The encoded body as aligned words (what a ring reader hands out).
    fn encode_words(&self, encoder: &mut RecordEncoder) -> Vec<u64>;
}

impl<T: RecordType> Encodable for T {
    fn encode_len(&self, encoder: &mut RecordEncoder) -> usize {
        encoder.encode(self).expect("encode").len()
    }

    fn encode_words(&self, encoder: &mut RecordEncoder) -> Vec<u64> {
        let body = encoder.encode(self).expect("encode");
        let mut words = vec![0u64; body.len() / 8];
        words.as_mut_bytes().copy_from_slice(body);
        words
    }
}

/// One value of every record kind.
fn sample_values() -> Vec<(&'static str, Box<dyn Encodable>)> {
    vec![
        ("trade", Box::new(trade())),
        (
            "quote",
            Box::new(Quote {
                instrument_id: 1,
                bid_price: 2_712_345,
                bid_qty: 10,
                ask_price: 2_712_346,
                ask_qty: 12,
                ..Quote::default()
            }),
        ),
        (
            "book_update_10x10",
            Box::new(BookUpdate {
                instrument_id: 1,
                first_update_id: 100,
                last_update_id: 120,
                bids: vec![PriceLevel { price: 1, qty: 2 }; 10],
                asks: vec![PriceLevel { price: 3, qty: 4 }; 10],
                ..BookUpdate::default()
            }),
        ),
        (
            "kline",
            Box::new(Kline {
                instrument_id: 1,
                interval_ms: 60_000,
                volume: 1 << 70,
                quote_volume: 1 << 90,
                trades: 1000,
                ..Kline::default()
            }),
        ),
        (
            "instrument_definition",
            Box::new(InstrumentDefinition {
                instrument_id: 1,
                kind: InstrumentKind::Spot,
                venue: "binance".into(),
                symbol: "BTCUSDT".into(),
                base_asset: "BTC".into(),
                quote_asset: "USDT".into(),
                ..InstrumentDefinition::default()
            }),
        ),
        (
            "feed_status",
            Box::new(FeedStatus {
                state: FeedState::Gap,
                expected_seq: 1,
                received_seq: 5,
                count: 4,
                venue: "binance".into(),
                ..FeedStatus::default()
            }),
        ),
    ]
}

/// Every sample value, encoded.
fn encoded_samples(encoder: &mut RecordEncoder) -> Vec<(&'static str, Vec<u64>)> {
    sample_values()
        .into_iter()
        .map(|(name, value)| (name, value.encode_words(encoder)))
        .collect()
}

fn encode_decode(c: &mut Criterion) {
    let mut encoder = RecordEncoder::new();
    let mut group = c.benchmark_group("encode");
    let values = sample_values();
    for (name, value) in &values {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(value.encode_len(&mut encoder)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode_owned");
    for (name, words) in encoded_samples(&mut encoder) {
        let bytes = words.as_bytes();
        group.bench_with_input(BenchmarkId::from_parameter(name), bytes, |b, bytes| {
            b.iter(|| match name {
                "trade" => black_box(decode::<Trade>(bytes).is_ok()),
                "quote" => black_box(decode::<Quote>(bytes).is_ok()),
                "book_update_10x10" => black_box(decode::<BookUpdate>(bytes).is_ok()),
                "kline" => black_box(decode::<Kline>(bytes).is_ok()),
                "instrument_definition" => black_box(decode::<InstrumentDefinition>(bytes).is_ok()),
                _ => black_box(decode::<FeedStatus>(bytes).is_ok()),
            })
        });
    }
    group.finish();

    // Zero-copy: read two fields through the generated reader, no allocation.
    let words = encoded_samples(&mut encoder).swap_remove(0).1;
    c.bench_function("decode_zero_copy/trade_price_qty", |b| {
        b.iter(|| {
            let message =
                mdi_protocol::records::open_body(black_box(words.as_bytes())).expect("open");
            let trade = message
                .get_root::<records_capnp::trade::Reader<'_>>()
                .expect("root");
            black_box(trade.get_price() + trade.get_qty())
        })
    });
}

fn decimals(c: &mut Criterion) {
    c.bench_function("decimal/parse_binance_price", |b| {
        b.iter(|| black_box(parse_i64(black_box("27123.45000000"), -2)))
    });
    c.bench_function("decimal/format_qty", |b| {
        let mut out = String::with_capacity(32);
        b.iter(|| {
            use std::fmt::Write;
            out.clear();
            let _ = write!(out, "{}", Decimal::new(black_box(150_000_000i64), -8));
            black_box(out.len())
        })
    });
}

fn ring_round_trip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = ShmDir::new(dir.path());
    let mut writer =
        RingWriter::create(&shm, "bench", &RingOptions::default().capacity(1 << 24)).expect("ring");
    let mut reader = RingReader::open(&shm, "bench", StartAt::Latest).expect("reader");
    let payload = [7u8; 48];
    c.bench_function("ring/append_poll_64B_record", |b| {
        b.iter(|| {
            writer
                .append(
                    mdi_protocol::records::RecordKind::APPLICATION_FIRST,
                    &payload,
                )
                .expect("append");
            let mut got = 0;
            reader
                .poll(1, |e| {
                    if let ReadEvent::Record(r) = e {
                        got = r.body.len();
                    }
                })
                .expect("poll");
            black_box(got)
        })
    });
}

criterion_group!(benches, encode_decode, decimals, ring_round_trip);
criterion_main!(benches);
