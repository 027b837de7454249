//! Binance frames through the normalizer into real rings: exact fixed point, venue-id
//! gaps and duplicates, malformed and out-of-range input counted and reported, books
//! synced from snapshots and resynced on a gap.

use mdi_protocol::records::{
    BookUpdate, FeedState, FeedStatus, Kline, PriceLevel, Quote, RecordKind, Side, Trade, decode,
};
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_publisher::binance::normalize::{InstrumentSpec, Normalizer, NormalizerConfig};
use mdi_publisher::kline::Interval;
use mdi_publisher::pipeline::Rings;

fn records(dir: &ShmDir, name: &str) -> Vec<(RecordKind, Vec<u8>)> {
    let mut reader = RingReader::open(dir, name, StartAt::Earliest).expect("open");
    let mut out = Vec::new();
    while reader
        .poll(usize::MAX, |event| {
            if let ReadEvent::Record(r) = event {
                out.push((r.kind, r.body.to_vec()));
            }
        })
        .expect("poll")
        > 0
    {}
    out
}

fn of<T: mdi_protocol::records::RecordType>(all: &[(RecordKind, Vec<u8>)]) -> Vec<T> {
    all.iter()
        .filter(|(k, _)| *k == T::KIND)
        .map(|(_, b)| decode::<T>(b).expect("decode"))
        .collect()
}

fn normalizer(dir: &ShmDir, config: NormalizerConfig) -> Normalizer {
    let options = RingOptions::default().capacity(1 << 20);
    let rings = Rings {
        ticks: RingWriter::create(dir, "ticks", &options).unwrap(),
        klines: RingWriter::create(dir, "klines", &options).unwrap(),
    };
    Normalizer::new(config, rings, || 5).unwrap()
}

fn trade(id: u64, price: &str, qty: &str, time: i64, maker: bool) -> String {
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{time},"s":"BTCUSDT","t":{id},"p":"{price}","q":"{qty}","T":{time},"m":{maker},"M":true}}}}"#
    )
}

#[test]
fn trades_quotes_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShmDir::new(tmp.path());
    let config = NormalizerConfig {
        instruments: vec![InstrumentSpec {
            symbol: "BTCUSDT".into(),
            price_exponent: -2,
            qty_exponent: -5,
        }],
        intervals: vec![Interval::parse("1m").unwrap()],
        kline_update_ms: None,
        ..NormalizerConfig::default()
    };
    let mut n = normalizer(&dir, config);
    let t0 = 1_790_649_900_000i64;
    let frames = [
        trade(100, "83034.29000000", "0.00062000", t0, true),
        trade(101, "83034.30000000", "0.00100000", t0 + 5, false),
        trade(101, "83034.30000000", "0.00100000", t0 + 5, false), // duplicate
        trade(105, "83034.31000000", "0.01000000", t0 + 9, false), // 102..=104 missing
        trade(106, "83034.315", "1", t0 + 10, false),              // finer than a cent
        "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"tr".into(), // truncated
        "garbage".into(),
        r#"{"e":"24hrTicker","E":1,"s":"BTCUSDT"}"#.into(),
        r#"{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":1,"p":"1","q":"1","T":1,"m":true,"M":true}}"#.into(),
        r#"{"stream":"btcusdt@bookTicker","data":{"u":400,"s":"BTCUSDT","b":"83034.29000000","B":"1.50000000","a":"83034.30000000","A":"0.25000000"}}"#.into(),
        r#"{"stream":"btcusdt@bookTicker","data":{"u":399,"s":"BTCUSDT","b":"1","B":"1","a":"1","A":"1"}}"#.into(),
        trade(107, "83034.32", "0.5", t0 + 60_001, true), // closes the first minute
    ];
    for (i, frame) in frames.iter().enumerate() {
        n.on_frame(1_000 + i as i64, frame).unwrap();
    }
    let c = n.counters();
    assert_eq!(c.frames, frames.len() as u64);
    assert_eq!((c.trades, c.duplicates, c.gaps, c.missing), (4, 2, 1, 3));
    assert_eq!(
        (
            c.malformed,
            c.out_of_range,
            c.unknown_events,
            c.unknown_symbols
        ),
        (2, 1, 1, 1)
    );
    drop(n);

    let ticks = records(&dir, "ticks");
    let trades: Vec<Trade> = of(&ticks);
    assert_eq!(
        trades
            .iter()
            .map(|t| (t.trade_id, t.price, t.qty, t.aggressor))
            .collect::<Vec<_>>(),
        [
            (100, 8_303_429, 62, Side::Sell),
            (101, 8_303_430, 100, Side::Buy),
            (105, 8_303_431, 1_000, Side::Buy),
            (107, 8_303_432, 50_000, Side::Sell),
        ]
    );
    let t = &trades[0];
    assert_eq!(
        (
            t.instrument_id,
            t.price_exponent,
            t.qty_exponent,
            t.venue_seq
        ),
        (1, -2, -5, 100)
    );
    assert_eq!(
        (t.ts_exchange_ns, t.ts_receive_ns, t.ts_publish_ns),
        (t0 * 1_000_000, 1_000, 5)
    );
    let status: Vec<FeedStatus> = of(&ticks);
    let gap = status.iter().find(|s| s.state == FeedState::Gap).unwrap();
    assert_eq!(
        (gap.expected_seq, gap.received_seq, gap.count),
        (102, 105, 3)
    );
    // malformed reported at counts 1 and 2; out of range at 1
    let counts = |state| {
        status
            .iter()
            .filter(|s| s.state == state)
            .map(|s| s.count)
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(FeedState::Malformed), [1, 2]);
    assert_eq!(counts(FeedState::ValueOutOfRange), [1]);
    let quotes: Vec<Quote> = of(&ticks);
    assert_eq!(quotes.len(), 1, "the older bookTicker is a duplicate");
    assert_eq!(
        (
            quotes[0].bid_price,
            quotes[0].bid_qty,
            quotes[0].ask_price,
            quotes[0].ask_qty
        ),
        (8_303_429, 150_000, 8_303_430, 25_000)
    );
    // the first minute's candle: trades 100, 101, 105 (the gap does not stop candles)
    let candles: Vec<Kline> = of(&records(&dir, "klines"));
    assert_eq!(candles.len(), 1);
    assert_eq!(
        (
            candles[0].open,
            candles[0].close,
            candles[0].volume,
            candles[0].trades
        ),
        (8_303_429, 8_303_431, 1_162, 3)
    );
}

#[test]
fn books_sync_from_snapshots_and_resync_on_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShmDir::new(tmp.path());
    let mut n = normalizer(&dir, NormalizerConfig::default());
    let depth = |first: u64, last: u64, bids: &str, asks: &str| {
        format!(
            r#"{{"stream":"bnbbtc@depth@100ms","data":{{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":{first},"u":{last},"b":{bids},"a":{asks}}}}}"#
        )
    };
    n.on_frame(
        1,
        &depth(157, 160, r#"[["0.0024","10"]]"#, r#"[["0.0026","100"]]"#),
    )
    .unwrap();
    assert_eq!(n.wanting_snapshots(), ["BNBBTC"]);
    n.on_snapshot(
        2,
        "BNBBTC",
        r#"{"lastUpdateId":158,"bids":[["0.0024","7"],["0.0023","1"]],"asks":[["0.0027","3"]]}"#,
    )
    .unwrap();
    assert!(n.wanting_snapshots().is_empty());
    n.on_frame(3, &depth(161, 162, r#"[["0.0023","0"]]"#, "[]"))
        .unwrap();
    n.on_frame(4, &depth(170, 171, "[]", "[]")).unwrap(); // 163..=169 missed
    assert_eq!(n.wanting_snapshots(), ["BNBBTC"]);
    n.on_snapshot(5, "BNBBTC", "{\"lastUpdateId\":").unwrap(); // truncated body
    assert_eq!(n.counters().malformed, 1);
    drop(n);

    let ticks = records(&dir, "ticks");
    let books: Vec<BookUpdate> = of(&ticks);
    let level = |price, qty| PriceLevel { price, qty };
    assert_eq!(books.len(), 3, "{books:?}");
    assert!(books[0].is_snapshot && books[0].last_update_id == 158);
    assert_eq!(
        books[0].bids,
        [level(240_000, 700_000_000), level(230_000, 100_000_000)]
    );
    // the buffered diff 157..160 straddles the snapshot and applies
    assert_eq!(
        (
            books[1].first_update_id,
            books[1].last_update_id,
            books[1].is_snapshot
        ),
        (157, 160, false)
    );
    assert_eq!(books[2].bids, [level(230_000, 0)]);
    let states: Vec<FeedState> = of::<FeedStatus>(&ticks).iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            FeedState::ResyncDone,
            FeedState::Gap,
            FeedState::ResyncStarted,
            FeedState::Malformed
        ]
    );
    let gap = of::<FeedStatus>(&ticks)[1].clone();
    assert_eq!(
        (gap.expected_seq, gap.received_seq, gap.count),
        (163, 170, 7)
    );
}

#[test]
fn a_quiet_candle_waits_for_trades_still_on_their_way() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShmDir::new(tmp.path());
    let config = NormalizerConfig {
        intervals: vec![Interval::parse("1m").unwrap()],
        kline_update_ms: None,
        ..NormalizerConfig::default()
    };
    let mut n = normalizer(&dir, config);
    let minute = 1_790_649_900_000i64; // a minute boundary
    let ms = |t: i64| t * 1_000_000;
    n.on_frame(
        ms(minute + 59_990),
        &trade(1, "1.0", "1", minute + 59_990, false),
    )
    .unwrap();
    // the minute is over by the local clock, but within the grace
    n.on_timer(ms(minute + 60_500)).unwrap();
    // a trade of that minute arrives late (network), then the timer moves past the grace
    // — on the symbol's venue clock, which runs 605 ms behind the wall clock since that
    // trade: the minute closes at wall time 62.605 s, not 62 s
    n.on_frame(
        ms(minute + 60_600),
        &trade(2, "2.0", "1", minute + 59_995, false),
    )
    .unwrap();
    n.on_timer(ms(minute + 62_500)).unwrap();
    assert_eq!(
        of::<Kline>(&records(&dir, "klines")).len(),
        0,
        "not yet closed"
    );
    n.on_timer(ms(minute + 62_700)).unwrap();
    assert_eq!(n.counters().late_trades, 0);
    drop(n);
    let candles: Vec<Kline> = of(&records(&dir, "klines"));
    assert_eq!(candles.len(), 1, "{candles:?}");
    assert_eq!((candles[0].trades, candles[0].close), (2, 200_000_000));
}
