//! A late joiner sees the whole market (issue 21): a Binance feed with books writes into a
//! small ring that wraps many times; a subscriber joins at `latest` at a random moment.
//! Every record it gets names its symbol, its books are never wrong (a valid book equals
//! the publisher's at that point of the stream), and within one state-refresh period (1 s
//! of stream time) it holds every book. The same for ITCH, and for both over UDP.

use std::collections::BTreeMap;

use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_publisher::binance::normalize::{InstrumentSpec, Normalizer, NormalizerConfig};
use mdi_publisher::pipeline::Rings;
use mdi_subscriber::{Books, Event, Subscriber};

const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];

/// The publisher's books as its frames build them (price → qty mantissas, exponent −2
/// and −3), per symbol.
type Side = BTreeMap<i64, i64>;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[test]
fn a_subscriber_joining_at_any_moment_resolves_symbols_and_holds_exact_books() {
    for seed in 0..3u64 {
        joins_at_a_random_moment(seed);
    }
}

fn joins_at_a_random_moment(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(256 << 10))
            .unwrap(),
        klines: RingWriter::create(&shm, "klines", &RingOptions::default().capacity(1 << 20))
            .unwrap(),
    };
    let config = NormalizerConfig {
        instruments: SYMBOLS
            .iter()
            .map(|s| InstrumentSpec {
                symbol: (*s).into(),
                price_exponent: -2,
                qty_exponent: -3,
            })
            .collect(),
        kline_update_ms: None,
        ..NormalizerConfig::default()
    };
    let mut n = Normalizer::new(config, rings, || 5).unwrap();
    let t0 = 1_790_000_000_000i64; // ms
    // the feed's standing state: connected (a late joiner must learn it too)
    n.feed_up(t0 * 1_000_000).unwrap();
    let mut books: Vec<(Side, Side)> = vec![Default::default(); 2];
    let mut ids = [100u64, 500];
    // each book as Binance's procedure syncs it: a first diff buffered, then a REST
    // snapshot at least as new (the diff is in it)
    for (i, symbol) in SYMBOLS.iter().enumerate() {
        let first = ids[i] + 1;
        n.on_frame(
            t0 * 1_000_000,
            &diff(symbol, first, t0, &[(true, 9_000, 10)]),
        )
        .unwrap();
        n.on_snapshot(
            t0 * 1_000_000,
            symbol,
            &format!(
                r#"{{"lastUpdateId":{first},"bids":[["90.00","0.010"]],"asks":[["91.00","5"]]}}"#
            ),
        )
        .unwrap();
        books[i].0.insert(9_000, 10);
        books[i].1.insert(9_100, 5_000);
        ids[i] = first;
    }
    let steps = 30_000u64; // 5 ms apart: 150 s of stream time
    let join_at = 10_000 + splitmix(seed) % 15_000;
    let mut subscriber: Option<(Subscriber, i64)> = None;
    let mut sdk = Books::new();
    let mut all_valid_at: Option<i64> = None;
    let mut delivered = 0u64;
    let mut connected_seen = false;
    for k in 0..steps {
        let t = t0 + 1 + k as i64 * 5;
        let i = (splitmix(seed ^ k) % 2) as usize;
        let r = splitmix(seed.wrapping_mul(31) ^ k);
        let bid = r.is_multiple_of(2);
        let price = if bid {
            8_900 + (r >> 8) % 100
        } else {
            9_100 + (r >> 8) % 100
        } as i64;
        let qty = ((r >> 20) % 4) as i64 * 1_000; // 0: remove
        let side = if bid {
            &mut books[i].0
        } else {
            &mut books[i].1
        };
        if qty == 0 {
            side.remove(&price);
        } else {
            side.insert(price, qty);
        }
        ids[i] += 1;
        n.on_frame(
            t * 1_000_000,
            &diff(SYMBOLS[i], ids[i], t, &[(bid, price, qty)]),
        )
        .unwrap();
        if k == join_at {
            let s = Subscriber::builder()
                .shm_dir(dir.path())
                .stream("ticks")
                .open()
                .unwrap();
            subscriber = Some((s, t));
        }
        let Some((s, joined_at)) = &mut subscriber else {
            continue;
        };
        s.poll(usize::MAX, |event| {
            if let Event::Record { record, symbol, .. } = &event {
                if let mdi_subscriber::Record::Status(s) = record {
                    // the whole feed's state (instrument 0) has no symbol
                    connected_seen |= s.state == mdi_protocol::records::FeedState::Connected;
                } else {
                    assert!(
                        symbol.is_some(),
                        "seed {seed}: a record without its symbol: {record:?}"
                    );
                }
                delivered += 1;
            }
            sdk.on_event(&event);
        })
        .unwrap();
        // valid books are the publisher's, now
        let mut valid = 0;
        for (i, _) in SYMBOLS.iter().enumerate() {
            if let Some(book) = sdk.book(i as u32 + 1)
                && book.is_valid()
            {
                let (bids, asks) = book.raw_levels();
                assert_eq!(
                    (bids, asks),
                    (&books[i].0, &books[i].1),
                    "seed {seed}, step {k}"
                );
                valid += 1;
            }
        }
        if valid == SYMBOLS.len() && all_valid_at.is_none() {
            all_valid_at = Some(t - *joined_at);
        }
    }
    let waited = all_valid_at.expect("the late joiner never held every book");
    assert!(
        waited <= 1_000,
        "seed {seed}: books whole {waited} ms after joining"
    );
    assert!(
        connected_seen,
        "seed {seed}: the late joiner never learnt that the feed is connected"
    );
    assert!(delivered > 1_000);
}

/// A diff-depth frame of `symbol` with update id `id`, at `t` ms.
fn diff(symbol: &str, id: u64, t: i64, changes: &[(bool, i64, i64)]) -> String {
    let level = |&(_, price, qty): &(bool, i64, i64)| {
        format!(
            "[\"{}.{:02}\",\"{}.{:03}\"]",
            price / 100,
            price % 100,
            qty / 1_000,
            qty % 1_000
        )
    };
    let bids: Vec<String> = changes.iter().filter(|c| c.0).map(level).collect();
    let asks: Vec<String> = changes.iter().filter(|c| !c.0).map(level).collect();
    format!(
        r#"{{"stream":"{}@depth","data":{{"e":"depthUpdate","E":{t},"s":"{symbol}","U":{id},"u":{id},"b":[{}],"a":[{}]}}}}"#,
        symbol.to_lowercase(),
        bids.join(","),
        asks.join(",")
    )
}

/// The same for an ITCH feed (a state refresh spread over the stocks): a subscriber
/// joining at a random packet of a simulated session names every stock on its first
/// record, never holds a wrong book, and holds every stock's book within 1 s of
/// exchange time.
#[test]
fn a_late_joiner_to_an_itch_feed_holds_every_book_within_a_second() {
    use mdi_itch::mold::{Session, SessionConfig};
    use mdi_itch::sim::{SimConfig, messages, packets};
    use mdi_protocol::time::MonoNs;
    use mdi_publisher::itch::feed::{ItchFeed, SessionClock};
    // 40 000 messages 1 ms apart: 40 s of a session, 8 stocks
    let config = SimConfig {
        messages: 40_000,
        symbols: 8,
        seed: 9,
        gap_ns: 1_000_000,
        ..SimConfig::default()
    };
    let packets = packets(&config, &messages(&config));
    for seed in 0..2u64 {
        let dir = tempfile::tempdir().unwrap();
        let shm = ShmDir::new(dir.path());
        let rings = Rings {
            ticks: RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(512 << 10))
                .unwrap(),
            klines: RingWriter::create(&shm, "klines", &RingOptions::default().capacity(1 << 20))
                .unwrap(),
        };
        let mut feed = ItchFeed::new(rings, SessionClock::parse("2024-01-02"), || 5);
        let mut session = Session::new(SessionConfig::default());
        let join_at = packets.len() / 3 + (splitmix(seed) as usize % (packets.len() / 3));
        let mut subscriber: Option<(Subscriber, i64)> = None;
        let mut sdk = Books::new();
        let mut whole_after: Option<i64> = None;
        let mut trading_seen = false;
        for (i, (_, bytes)) in packets.iter().enumerate() {
            session.on_packet(MonoNs(i as u64), bytes, &mut |output| {
                feed.on_output(0, output).unwrap();
            });
            feed.end_packet(0).unwrap();
            let now = feed.latest_exchange_ns();
            if i == join_at {
                let s = Subscriber::builder()
                    .shm_dir(dir.path())
                    .stream("ticks")
                    .open()
                    .unwrap();
                subscriber = Some((s, now));
            }
            let Some((s, joined)) = &mut subscriber else {
                continue;
            };
            s.poll(usize::MAX, |event| {
                if let Event::Record { record, symbol, .. } = &event {
                    // (a status of the whole feed, instrument 0, has no symbol)
                    let whole_feed =
                        matches!(record, mdi_subscriber::Record::Status(s) if s.instrument_id == 0);
                    if let mdi_subscriber::Record::Status(s) = record
                        && s.instrument_id == 0
                        && s.state == mdi_protocol::records::FeedState::Trading
                    {
                        trading_seen = true;
                    }
                    assert!(
                        whole_feed || symbol.is_some(),
                        "seed {seed}: no symbol for {record:?}"
                    );
                }
                sdk.on_event(&event);
            })
            .unwrap();
            let whole = itch_books_held(&feed, &sdk, 8, &format!("seed {seed}, packet {i}"));
            if whole == 8 && whole_after.is_none() {
                whole_after = Some(now - *joined);
            }
        }
        let waited = whole_after.expect("the late joiner never held every book");
        assert!(
            waited <= 1_000_000_000,
            "seed {seed}: every book after {waited} ns"
        );
        assert!(
            trading_seen,
            "seed {seed}: the late joiner never learnt the market is open"
        );
    }
}

/// Whether the SDK's book of stock `locate` is valid and equals the publisher's: `None`
/// when it holds no valid book, else whether the levels are equal.
fn itch_book_equal(
    feed: &mdi_publisher::itch::feed::ItchFeed,
    sdk: &Books,
    locate: u16,
) -> Option<bool> {
    let book = sdk.book(u32::from(locate)).filter(|b| b.is_valid())?;
    let want = feed
        .books()
        .book(locate)
        .map_or_else(Default::default, |b| {
            let side = |l: &mdi_itch::book::Ladder| -> BTreeMap<i64, i64> {
                l.iter().map(|(p, q)| (i64::from(p), q as i64)).collect()
            };
            (side(&b.bids), side(&b.asks))
        });
    Some(book.raw_levels() == (&want.0, &want.1))
}

/// How many of the stocks `1..=stocks` the SDK holds a valid book of; panics when a valid
/// book differs from the publisher's (a wrong level is never allowed).
fn itch_books_held(
    feed: &mdi_publisher::itch::feed::ItchFeed,
    sdk: &Books,
    stocks: u16,
    at: &str,
) -> usize {
    (1..=stocks)
        .filter(|&locate| match itch_book_equal(feed, sdk, locate) {
            None => false,
            Some(equal) => {
                assert!(
                    equal,
                    "{at}, stock {locate}: {:?}",
                    sdk.book(u32::from(locate)).map(|b| b.raw_levels())
                );
                true
            }
        })
        .count()
}

/// An ITCH late joiner over UDP: a subscriber joins a publisher's `ticks` served on
/// loopback in the middle of a simulated session. Every record names its stock, a valid
/// book is never wrong, every book is whole within 1 s of exchange time after its first
/// record, and at the end they are the publisher's.
#[test]
fn an_itch_late_joiner_over_udp_holds_every_book_within_a_second() {
    use std::time::{Duration, Instant};

    use mdi_itch::mold::{Session, SessionConfig};
    use mdi_itch::sim::{SimConfig, messages, packets};
    use mdi_protocol::time::MonoNs;
    use mdi_protocol::udp::Channel;
    use mdi_publisher::itch::feed::{ItchFeed, SessionClock};
    use mdi_transport::sender::{UdpSender, UdpSenderOptions};
    // 30 000 messages 1 ms apart: 30 s of a session, 8 stocks, sent over about 3 s
    let config = SimConfig {
        messages: 30_000,
        symbols: 8,
        seed: 21,
        gap_ns: 1_000_000,
        ..SimConfig::default()
    };
    let packets = packets(&config, &messages(&config));
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20))
            .unwrap(),
        klines: RingWriter::create(&shm, "klines", &RingOptions::default().capacity(1 << 20))
            .unwrap(),
    };
    let mut feed = ItchFeed::new(rings, SessionClock::parse("2024-01-02"), || 5);
    let mut session = Session::new(SessionConfig::default());
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = Channel::parse(&format!("udp://127.0.0.1:{port}")).unwrap();
    let mut sender = UdpSender::new(
        channel,
        &shm,
        &["ticks".to_owned()],
        &UdpSenderOptions::default(),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            mdi_transport::sender::serve(
                std::slice::from_mut(&mut sender),
                &stop,
                mdi_transport::sender::ServeUntil {
                    duration: Some(Duration::from_secs(60)),
                    writers_exit: false,
                },
            )
            .unwrap();
        })
    };
    let join_at = packets.len() * 2 / 5;
    let mut subscriber: Option<Subscriber> = None;
    let mut sdk = Books::new();
    // exchange times (the publisher's latest) at the first record and when every book
    // was whole
    let mut first_record: Option<i64> = None;
    let mut whole_at: Option<i64> = None;
    let pause_every = (packets.len() / 3_000).max(1);
    for (i, (_, bytes)) in packets.iter().enumerate() {
        session.on_packet(MonoNs(i as u64), bytes, &mut |output| {
            feed.on_output(0, output).unwrap();
        });
        feed.end_packet(0).unwrap();
        let now = feed.latest_exchange_ns();
        if i == join_at {
            subscriber = Some(
                Subscriber::builder()
                    .udp(channel)
                    .stream("ticks")
                    .open()
                    .unwrap(),
            );
        }
        if i % pause_every == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let Some(s) = &mut subscriber else {
            continue;
        };
        s.poll(usize::MAX, |event| {
            if let Event::Record { record, symbol, .. } = &event {
                let whole_feed =
                    matches!(record, mdi_subscriber::Record::Status(s) if s.instrument_id == 0);
                assert!(whole_feed || symbol.is_some(), "no symbol for {record:?}");
                first_record.get_or_insert(now);
            }
            sdk.on_event(&event);
        })
        .unwrap();
        // (a book the subscriber holds may lag the publisher's by what is in flight:
        // compared once the stream stops)
        let whole = (1..=8u32)
            .filter(|&id| sdk.book(id).is_some_and(|b| b.is_valid()))
            .count();
        if whole == 8 && whole_at.is_none() {
            whole_at = Some(now);
        }
    }
    // the stream stops; what is in flight arrives, then the books are the publisher's
    let s = subscriber.as_mut().expect("joined");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && !(1..=8).all(|locate| itch_book_equal(&feed, &sdk, locate) == Some(true))
    {
        s.poll(usize::MAX, |event| {
            sdk.on_event(&event);
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(itch_books_held(&feed, &sdk, 8, "at the end"), 8);
    let waited = whole_at.expect("every book whole") - first_record.expect("a record");
    assert!(
        waited <= 1_000_000_000,
        "every book {waited} ns of exchange time after the first record"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    serving.join().unwrap();
}

/// Over UDP (issue 21): a subscriber joins a publisher's `ticks` served on loopback
/// while it runs; every record names its symbol, its books become whole within the
/// refresh period of its first record, and at the end they are the publisher's.
#[test]
fn a_late_joiner_over_udp_holds_the_publishers_books() {
    use std::time::{Duration, Instant};

    use mdi_protocol::udp::Channel;
    use mdi_transport::sender::{UdpSender, UdpSenderOptions};
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20))
            .unwrap(),
        klines: RingWriter::create(&shm, "klines", &RingOptions::default().capacity(1 << 20))
            .unwrap(),
    };
    let config = NormalizerConfig {
        instruments: SYMBOLS
            .iter()
            .map(|s| InstrumentSpec {
                symbol: (*s).into(),
                price_exponent: -2,
                qty_exponent: -3,
            })
            .collect(),
        kline_update_ms: None,
        ..NormalizerConfig::default()
    };
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    };
    let mut n = Normalizer::new(config, rings, || 5).unwrap();
    let mut books: Vec<(Side, Side)> = vec![Default::default(); 2];
    let mut ids = [100u64, 500];
    for (i, symbol) in SYMBOLS.iter().enumerate() {
        let first = ids[i] + 1;
        let t = wall();
        n.on_frame(t, &diff(symbol, first, t / 1_000_000, &[(true, 9_000, 10)]))
            .unwrap();
        n.on_snapshot(
            t,
            symbol,
            &format!(
                r#"{{"lastUpdateId":{first},"bids":[["90.00","0.010"]],"asks":[["91.00","5"]]}}"#
            ),
        )
        .unwrap();
        books[i].0.insert(9_000, 10);
        books[i].1.insert(9_100, 5_000);
        ids[i] = first;
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = Channel::parse(&format!("udp://127.0.0.1:{port}")).unwrap();
    let mut sender = UdpSender::new(
        channel,
        &shm,
        &["ticks".to_owned()],
        &UdpSenderOptions::default(),
    )
    .unwrap();
    // the sender serves on a thread of its own, as in mdpub
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            mdi_transport::sender::serve(
                std::slice::from_mut(&mut sender),
                &stop,
                mdi_transport::sender::ServeUntil {
                    duration: Some(Duration::from_secs(60)),
                    writers_exit: false,
                },
            )
            .unwrap();
        })
    };
    let mut sdk = Books::new();
    let mut subscriber: Option<Subscriber> = None;
    let started = Instant::now();
    let mut k = 0u64;
    let mut first_record_at: Option<Instant> = None;
    let mut whole_at: Option<Instant> = None;
    // 4 s of a live feed: the subscriber joins after 1.5 s
    while started.elapsed() < Duration::from_secs(4) {
        let i = (splitmix(k) % 2) as usize;
        let r = splitmix(k.wrapping_mul(7) ^ 99);
        let bid = r.is_multiple_of(2);
        let price = if bid {
            8_900 + (r >> 8) % 100
        } else {
            9_100 + (r >> 8) % 100
        } as i64;
        let qty = ((r >> 20) % 4) as i64 * 1_000;
        let side = if bid {
            &mut books[i].0
        } else {
            &mut books[i].1
        };
        if qty == 0 {
            side.remove(&price);
        } else {
            side.insert(price, qty);
        }
        ids[i] += 1;
        let t = wall();
        n.on_frame(
            t,
            &diff(SYMBOLS[i], ids[i], t / 1_000_000, &[(bid, price, qty)]),
        )
        .unwrap();
        k += 1;
        if subscriber.is_none() && started.elapsed() >= Duration::from_millis(1_500) {
            subscriber = Some(
                Subscriber::builder()
                    .udp(channel)
                    .stream("ticks")
                    .open()
                    .unwrap(),
            );
        }
        if let Some(s) = &mut subscriber {
            s.poll(usize::MAX, |event| {
                if let Event::Record { record, symbol, .. } = &event {
                    assert!(symbol.is_some(), "no symbol for {record:?}");
                    first_record_at.get_or_insert_with(Instant::now);
                }
                sdk.on_event(&event);
            })
            .unwrap();
            let whole = (1..=2u32).all(|id| sdk.book(id).is_some_and(|b| b.is_valid()));
            if whole && whole_at.is_none() {
                whole_at = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    // the stream stops; what is in flight arrives
    let s = subscriber.as_mut().expect("joined");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        s.poll(usize::MAX, |event| {
            sdk.on_event(&event);
        })
        .unwrap();
        let caught_up = (0..2).all(|i| {
            sdk.book(i as u32 + 1)
                .is_some_and(|b| b.is_valid() && b.raw_levels() == (&books[i].0, &books[i].1))
        });
        if caught_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (i, _) in SYMBOLS.iter().enumerate() {
        let book = sdk.book(i as u32 + 1).expect("a book");
        assert!(book.is_valid());
        assert_eq!(book.raw_levels(), (&books[i].0, &books[i].1), "symbol {i}");
    }
    let waited = whole_at.unwrap().duration_since(first_record_at.unwrap());
    assert!(
        waited <= Duration::from_millis(1_500),
        "books whole {waited:?} after the first record"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    serving.join().unwrap();
}

/// The open candles (issue 21): a symbol trades once and then is quiet while the book
/// moves; a late joiner to `klines` gets that symbol's open candle of every interval
/// within one refresh period of joining, with the trade in it.
#[test]
fn a_late_joiner_to_klines_gets_the_open_candles_of_a_quiet_symbol() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20))
            .unwrap(),
        klines: RingWriter::create(&shm, "klines", &RingOptions::default().capacity(1 << 20))
            .unwrap(),
    };
    let config = NormalizerConfig {
        instruments: vec![InstrumentSpec {
            symbol: "BTCUSDT".into(),
            price_exponent: -2,
            qty_exponent: -3,
        }],
        ..NormalizerConfig::default()
    };
    let intervals = config.intervals.len();
    assert!(intervals > 1);
    let mut n = Normalizer::new(config, rings, || 5).unwrap();
    let t0 = 1_790_000_040_000i64; // ms, 40 s into a minute
    n.on_frame(
        t0 * 1_000_000,
        &format!(
            r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t0},"s":"BTCUSDT","t":7,"p":"90.50","q":"0.250","T":{t0},"m":true,"M":true}}}}"#
        ),
    )
    .unwrap();
    let mut subscriber: Option<(Subscriber, i64)> = None;
    let mut open = std::collections::HashMap::new();
    let mut seen_at: Option<i64> = None;
    // 10 s of depth only, 10 ms apart (the minute candle stays open: 50 s)
    for k in 1..=1_000i64 {
        let t = t0 + k * 10;
        n.on_frame(
            t * 1_000_000,
            &diff("BTCUSDT", 100 + k as u64, t, &[(true, 9_000, k)]),
        )
        .unwrap();
        n.on_timer(t * 1_000_000).unwrap();
        if k == 500 {
            let s = Subscriber::builder()
                .shm_dir(dir.path())
                .stream("klines")
                .open()
                .unwrap();
            subscriber = Some((s, t));
        }
        let Some((s, joined)) = &mut subscriber else {
            continue;
        };
        s.poll(usize::MAX, |event| {
            if let Event::Record {
                record: mdi_subscriber::Record::Kline(kline),
                ..
            } = &event
                && !kline.closed
            {
                assert_eq!((kline.open, kline.close), (9_050, 9_050), "{kline:?}");
                // a candle that began after the trade is empty, its prices carried
                let traded = u64::from(kline.interval_ms >= 60_000);
                assert_eq!(
                    (kline.trades, kline.volume),
                    (traded, i128::from(traded) * 250)
                );
                open.insert(kline.interval_ms, *kline.clone());
            }
        })
        .unwrap();
        if open.len() == intervals && seen_at.is_none() {
            seen_at = Some(t - *joined);
        }
    }
    let waited = seen_at.expect("the late joiner never got every open candle");
    assert!(waited <= 1_000, "open candles {waited} ms after joining");
}
