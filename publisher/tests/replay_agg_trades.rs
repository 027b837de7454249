//! An aggTrades file through the replay path into real rings: trades and K-lines, empty
//! candles included, malformed rows counted and skipped.

use mdi_protocol::records::{Kline, RecordKind, Trade, decode};
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_publisher::binance::history::{HistoryFormat, replay_history};
use mdi_publisher::binance::normalize::{
    InstrumentSpec, KlineSource, Normalizer, NormalizerConfig,
};
use mdi_publisher::kline::Interval;
use mdi_publisher::pipeline::Rings;

fn records(dir: &ShmDir, name: &str, kind: RecordKind) -> Vec<Vec<u8>> {
    let mut reader = RingReader::open(dir, name, StartAt::Earliest).expect("open");
    let mut out = Vec::new();
    // a poll delivers one batch: read until nothing is left
    while reader
        .poll(usize::MAX, |event| {
            if let ReadEvent::Record(r) = event
                && r.kind == kind
            {
                out.push(r.body.to_vec());
            }
        })
        .expect("poll")
        > 0
    {}
    out
}

#[test]
fn agg_trades_become_trades_and_binance_klines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = ShmDir::new(tmp.path());
    let options = RingOptions::default().capacity(1 << 20);
    let ticks = RingWriter::create(&dir, "ticks", &options).expect("ticks");
    let klines = RingWriter::create(&dir, "klines", &options).expect("klines");
    // 2024-01-01 00:00:10 and :20 (ms), a malformed row, then 00:02:05 (µs, as 2025+
    // files are): minute 00:01 has no trade and must still have its candle
    let csv = "\
100,42000.10000000,0.50000000,1000,1001,1704067210000,true,true
101,42001.00000000,0.25000000,1002,1002,1704067220000,false,true
102,not-a-price,1,1003,1003,1704067221000,false,true
103,41999.50000000,1.00000000,1003,1005,1704067325000000,false,true
";
    let config = NormalizerConfig {
        instruments: vec![InstrumentSpec::binance_default("BTCUSDT")],
        intervals: vec![Interval::parse("1m").unwrap()],
        kline_source: KlineSource::AggTrade,
        kline_update_ms: None,
        ..NormalizerConfig::default()
    };
    let mut normalizer =
        Normalizer::new(config, Rings { ticks, klines }, || 9).expect("normalizer");
    let counts = replay_history(
        csv.as_bytes(),
        HistoryFormat::AggTrades,
        &mut normalizer,
        0,
        -8,
        -8,
        |_| Some(7),
    )
    .expect("replay");
    assert_eq!((counts.rows, counts.malformed), (3, 1));
    let klines_written = normalizer.counters().klines;
    drop(normalizer);

    let trades: Vec<Trade> = records(&dir, "ticks", RecordKind::TRADE)
        .iter()
        .map(|b| decode::<Trade>(b).expect("trade"))
        .collect();
    assert_eq!(trades.len(), 3);
    assert_eq!(trades[2].ts_exchange_ns, 1_704_067_325_000_000_000);

    let candles: Vec<Kline> = records(&dir, "klines", RecordKind::KLINE)
        .iter()
        .map(|b| decode::<Kline>(b).expect("kline"))
        .collect();
    // the whole UTC day is closed: 1440 one-minute candles
    assert_eq!(candles.len(), 1440);
    assert_eq!(klines_written, 1440);
    let (first, quiet, third) = (&candles[0], &candles[1], &candles[2]);
    assert_eq!(
        (first.open_time_ms, first.close_time_ms),
        (1_704_067_200_000, 1_704_067_259_999)
    );
    assert_eq!(
        (first.open, first.high, first.low, first.close),
        (
            4_200_010_000_000,
            4_200_100_000_000,
            4_200_010_000_000,
            4_200_100_000_000
        )
    );
    assert_eq!(
        (first.trades, first.first_trade_id, first.last_trade_id),
        (3, 1000, 1002)
    );
    assert_eq!(first.volume, 75_000_000);
    assert_eq!(first.taker_buy_volume, 25_000_000);
    assert!(first.closed);
    assert_eq!(
        (quiet.open, quiet.close, quiet.trades, quiet.first_trade_id),
        (4_200_100_000_000, 4_200_100_000_000, 0, -1)
    );
    assert_eq!(
        (third.open_time_ms, third.trades, third.close),
        (1_704_067_320_000, 3, 4_199_950_000_000)
    );
    assert!(candles.iter().all(|c| c.closed && c.interval_ms == 60_000));
}
