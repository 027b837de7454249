//! The subscriber against real rings, written by this process and by others: records
//! with symbols, filters, exact loss, restarts, and writers that close or die.

use std::process::Command;
use std::time::Duration;

use mdi_protocol::records::{InstrumentDefinition, Kline, RecordKind, Side, Trade};
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir, WriterState};
use mdi_protocol::view::RecordView;
use mdi_subscriber::{Event, Record, RecordKinds, Subscriber, TradeExt, ViewEvent};

fn definition(id: u32, symbol: &str) -> InstrumentDefinition {
    InstrumentDefinition {
        instrument_id: id,
        price_exponent: -2,
        qty_exponent: -3,
        venue: "binance".into(),
        symbol: symbol.into(),
        ..InstrumentDefinition::default()
    }
}

fn trade(id: u32, n: u64) -> Trade {
    Trade {
        instrument_id: id,
        price_exponent: -2,
        qty_exponent: -3,
        price: 4_200_000 + n as i64,
        qty: 1_500,
        trade_id: n,
        aggressor: Side::Buy,
        ..Trade::default()
    }
}

/// Child role: write two definitions and `MDI_TEST_TRADES` trades to `ticks`, then close
/// (or, with `MDI_TEST_DIE`, abort without closing).
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var("MDI_TEST_WRITER_DIR") else {
        return;
    };
    let shm = ShmDir::new(dir);
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    ring.append_record(&definition(1, "BTCUSDT")).unwrap();
    ring.append_record(&definition(2, "ETHUSDT")).unwrap();
    let trades: u64 = std::env::var("MDI_TEST_TRADES").unwrap().parse().unwrap();
    for n in 0..trades {
        ring.append_record(&trade(1 + (n % 2) as u32, n)).unwrap();
    }
    if std::env::var("MDI_TEST_DIE").is_ok() {
        std::process::abort();
    }
}

fn write_in_another_process(dir: &std::path::Path, trades: u64, die: bool) {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "child_writer", "--test-threads=1", "--quiet"])
        .env("MDI_TEST_WRITER_DIR", dir)
        .env("MDI_TEST_TRADES", trades.to_string());
    if die {
        child.env("MDI_TEST_DIE", "1");
    }
    let status = child.status().unwrap();
    assert_eq!(status.success(), !die, "{status:?}");
}

/// A subscriber of `ticks` in `dir`, from the earliest record.
fn ticks_from_earliest(dir: &std::path::Path) -> Subscriber {
    Subscriber::builder()
        .shm_dir(dir)
        .stream("ticks")
        .from_earliest()
        .open()
        .unwrap()
}

fn drain(subscriber: &mut Subscriber) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = subscriber.next(Duration::from_millis(50)).unwrap() {
        events.push(event);
    }
    events
}

#[test]
fn records_from_another_process_with_symbols_then_the_writer_closing() {
    let dir = tempfile::tempdir().unwrap();
    write_in_another_process(dir.path(), 100, false);
    let mut subscriber = Subscriber::builder()
        .shm_dir(dir.path())
        .from_earliest()
        .open()
        .unwrap();
    assert_eq!(subscriber.streams().collect::<Vec<_>>(), ["ticks"]);
    let events = drain(&mut subscriber);
    let trades: Vec<(&str, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Record {
                record: Record::Trade(t),
                symbol,
                ..
            } => Some((symbol.as_deref().unwrap(), t.trade_id)),
            _ => None,
        })
        .collect();
    assert_eq!(trades.len(), 100);
    assert_eq!(trades[..2], [("BTCUSDT", 0), ("ETHUSDT", 1)]);
    assert_eq!(
        events.last(),
        Some(&Event::WriterGone {
            stream: "ticks",
            state: WriterState::Closed
        })
    );
    // reported once
    assert_eq!(subscriber.next(Duration::from_millis(20)).unwrap(), None);
}

#[test]
fn views_read_in_place_what_owned_events_copy_out() {
    let dir = tempfile::tempdir().unwrap();
    write_in_another_process(dir.path(), 50, false);
    let owned: Vec<Event> = drain(&mut ticks_from_earliest(dir.path()));
    let mut by_view = Vec::new();
    let mut views = ticks_from_earliest(dir.path());
    let mut decimals = Vec::new();
    for _ in 0..100 {
        views
            .poll_views(7, |event| match event {
                ViewEvent::Record {
                    record,
                    stream,
                    seq,
                    symbol,
                } => {
                    if let RecordView::Trade(t) = record {
                        decimals.push((t.price().to_string(), t.qty().to_string(), t.side()));
                    }
                    let record = Record::from_view(record).unwrap();
                    by_view.push(Event::Record {
                        stream,
                        seq,
                        record,
                        symbol,
                    });
                }
                ViewEvent::Notice(event) => by_view.push(event),
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(by_view, owned);
    assert_eq!(decimals.len(), 50);
    assert_eq!(
        decimals[1],
        ("42000.01".to_owned(), "1.500".to_owned(), Side::Buy)
    );
}

#[test]
fn a_record_that_does_not_decode_is_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 16)).unwrap();
    ring.append_record(&trade(1, 1)).unwrap();
    // a trade whose body is not a Cap'n Proto message
    ring.append(RecordKind::TRADE, &[0xff; 24]).unwrap();
    ring.append_record(&trade(1, 2)).unwrap();
    let mut owned = ticks_from_earliest(dir.path());
    let mut ids = Vec::new();
    owned
        .poll(100, |e| {
            if let Event::Record {
                record: Record::Trade(t),
                ..
            } = e
            {
                ids.push(t.trade_id);
            }
        })
        .unwrap();
    assert_eq!((ids, owned.undecodable()), (vec![1, 2], 1));
    let mut views = ticks_from_earliest(dir.path());
    let mut ids = Vec::new();
    views
        .poll_views(100, |e| {
            if let ViewEvent::Record {
                record: RecordView::Trade(t),
                ..
            } = e
            {
                ids.push(t.get_trade_id());
            }
        })
        .unwrap();
    assert_eq!((ids, views.undecodable()), (vec![1, 2], 1));
}

/// CPU time this thread has used, in clock ticks (utime + stime of /proc/thread-self/stat).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // fields after the command's closing parenthesis: state is field 3; utime 14, stime 15
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn waiting_on_a_closed_stream_sleeps_rather_than_spins() {
    let dir = tempfile::tempdir().unwrap();
    write_in_another_process(dir.path(), 3, false);
    let mut subscriber = ticks_from_earliest(dir.path());
    // read everything, including the writer-gone event
    let events = drain(&mut subscriber);
    assert!(events.iter().any(|e| matches!(e, Event::WriterGone { .. })));
    let before = thread_cpu_ticks();
    for _ in 0..3 {
        assert_eq!(subscriber.next(Duration::from_millis(100)).unwrap(), None);
    }
    // 300 ms of waiting: a spinning loop burns ~30 ticks (100 Hz), a sleeping one ~0
    let used = thread_cpu_ticks() - before;
    assert!(used < 10, "waiting used {used} ticks of CPU");
}

#[test]
fn a_writer_that_dies_is_reported_dead() {
    let dir = tempfile::tempdir().unwrap();
    write_in_another_process(dir.path(), 10, true);
    let mut subscriber = ticks_from_earliest(dir.path());
    let events = drain(&mut subscriber);
    assert!(
        events.contains(&Event::WriterGone {
            stream: "ticks",
            state: WriterState::Dead
        }),
        "{:?}",
        events.last()
    );
}

#[test]
fn symbols_and_kinds_filter_and_decimals_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    ring.append_record(&definition(1, "BTCUSDT")).unwrap();
    ring.append_record(&definition(2, "ETHUSDT")).unwrap();
    for n in 0..10 {
        ring.append_record(&trade(1 + (n % 2) as u32, n)).unwrap();
    }
    ring.append_record(&Kline {
        instrument_id: 2,
        ..Kline::default()
    })
    .unwrap();
    let mut eth = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .symbols(["ethusdt"])
        .kinds(RecordKinds::only(RecordKind::TRADE))
        .from_earliest()
        .open()
        .unwrap();
    let mut seen = Vec::new();
    eth.poll(usize::MAX, |e| seen.push(e)).unwrap();
    let trades: Vec<Trade> = seen
        .into_iter()
        .filter_map(|e| match e {
            Event::Record {
                record: Record::Trade(t),
                ..
            } => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(
        trades.iter().map(|t| t.trade_id).collect::<Vec<_>>(),
        [1, 3, 5, 7, 9]
    );
    assert_eq!(trades[0].price_decimal().to_string(), "42000.01");
    assert_eq!(trades[0].qty_decimal().to_string(), "1.500");
}

#[test]
fn a_lapped_reader_gets_the_exact_loss_and_a_restart_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let options = RingOptions::default().capacity(4096);
    let mut ring = RingWriter::create(&shm, "ticks", &options).unwrap();
    let mut subscriber = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .kinds(RecordKinds::ALL)
        .from_earliest()
        .open()
        .unwrap();
    // far more than 4 KiB before the reader looks: it is lapped
    for n in 0..500 {
        ring.append_record(&trade(1, n)).unwrap();
    }
    let mut lost = 0;
    let mut delivered = 0;
    let mut last_id = None;
    subscriber
        .poll(usize::MAX, |e| match e {
            Event::Lost { count, .. } => lost += count,
            Event::Record {
                record: Record::Trade(t),
                ..
            } => {
                delivered += 1;
                last_id = Some(t.trade_id);
            }
            _ => {}
        })
        .unwrap();
    while subscriber
        .poll(usize::MAX, |e| match e {
            Event::Lost { count, .. } => lost += count,
            Event::Record {
                record: Record::Trade(t),
                ..
            } => {
                delivered += 1;
                last_id = Some(t.trade_id);
            }
            _ => {}
        })
        .unwrap()
        > 0
    {}
    assert!(lost > 0);
    // every record is either delivered or counted lost: the epoch start (seq 1) + 500
    assert_eq!(lost + delivered, 501, "lost {lost}, delivered {delivered}");
    assert_eq!(last_id, Some(499));
    // the writer restarts: a new epoch
    drop(ring);
    let mut ring = RingWriter::create(&shm, "ticks", &options).unwrap();
    ring.append_record(&trade(1, 500)).unwrap();
    let events = drain(&mut subscriber);
    assert!(
        matches!(
            events.as_slice(),
            [Event::Restarted { epoch: 2, previous_epoch: 1, .. }, Event::Record { record: Record::Trade(t), .. }] if t.trade_id == 500
        ) || matches!(
            events.as_slice(),
            [Event::WriterGone { .. }, Event::Restarted { epoch: 2, previous_epoch: 1, .. }, Event::Record { record: Record::Trade(t), .. }] if t.trade_id == 500
        ),
        "{events:?}"
    );
}

#[test]
fn missing_streams_and_foreign_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let err = Subscriber::builder()
        .shm_dir(dir.path())
        .open()
        .unwrap_err();
    assert!(err.to_string().contains("no streams in"), "{err}");
    let err = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .open()
        .unwrap_err();
    assert!(err.to_string().contains("ticks"), "{err}");
    std::fs::write(dir.path().join("junk.ring"), vec![1u8; 8192]).unwrap();
    let err = Subscriber::builder()
        .shm_dir(dir.path())
        .open()
        .unwrap_err();
    assert!(err.to_string().contains("junk"), "{err}");
}

#[test]
fn a_registered_subscriber_shows_its_position_and_losses() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(4096)).unwrap();
    let mut subscriber = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .from_earliest()
        .register("strategy-a")
        .open()
        .unwrap();
    for n in 0..500 {
        ring.append_record(&trade(1, n)).unwrap();
    }
    let mut lost = 0;
    while subscriber
        .poll(usize::MAX, |e| {
            if let Event::Lost { count, .. } = e {
                lost += count;
            }
        })
        .unwrap()
        > 0
    {}
    let readers = mdi_protocol::ring::registered_readers(&shm, "ticks").unwrap();
    assert_eq!(readers.len(), 1);
    let r = &readers[0];
    assert_eq!(r.name, "strategy-a");
    assert_eq!(
        (r.position, r.next_seq, r.lost),
        (ring.position().get(), ring.next_seq().get(), lost)
    );
    assert!(lost > 0 && r.heartbeat_ns > 0);
    drop(subscriber);
    assert!(
        mdi_protocol::ring::registered_readers(&shm, "ticks")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_late_joiner_resolves_symbols_defined_before_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    // a ring whose sparse index is coarser than these few records: a start at a sequence
    // begins scanning from an earlier index entry
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(16 << 20)).unwrap();
    ring.append_record(&definition(1, "BTCUSDT")).unwrap();
    ring.append_record(&definition(2, "ETHUSDT")).unwrap();
    for n in 0..10 {
        ring.append_record(&trade(1 + (n % 2) as u32, n)).unwrap();
    }
    for start in [None, Some(8)] {
        let builder = Subscriber::builder()
            .shm_dir(dir.path())
            .stream("ticks")
            .symbols(["ETHUSDT"]);
        let mut late = match start {
            None => builder.from_latest(),
            Some(seq) => builder.from_sequence(seq),
        }
        .open()
        .unwrap();
        ring.append_record(&trade(2, 100)).unwrap();
        let events = drain(&mut late);
        let symbols: Vec<Option<&str>> = events
            .iter()
            .filter_map(|e| match e {
                Event::Record { symbol, .. } => Some(symbol.as_deref()),
                _ => None,
            })
            .collect();
        assert!(!symbols.is_empty(), "{start:?}: {events:?}");
        assert!(
            symbols.iter().all(|s| *s == Some("ETHUSDT")),
            "{start:?}: {symbols:?}"
        );
    }
}

/// A ring that wrapped, read from its earliest record: the first records come before
/// the next refresh of their definitions, and get their symbols all the same (looked
/// ahead for, ADR 0016); an instrument never defined has none, and is looked for once.
#[test]
fn records_before_their_definitions_in_a_wrapped_ring_get_their_symbols() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    // a refresh every 5000 trades; instrument 3 is never defined
    let mut n = 0u64;
    while ring.position().get() < 3 * ring.capacity() || n % 5000 != 2500 {
        if n.is_multiple_of(5000) {
            ring.append_record(&definition(1, "BTCUSDT")).unwrap();
            ring.append_record(&definition(2, "ETHUSDT")).unwrap();
        }
        ring.append_record(&trade(1 + (n % 3) as u32, n)).unwrap();
        n += 1;
    }
    for symbols in [None, Some("ETHUSDT")] {
        let mut builder = Subscriber::builder()
            .shm_dir(dir.path())
            .stream("ticks")
            .from_earliest();
        if let Some(symbol) = symbols {
            builder = builder.symbols([symbol]);
        }
        let events = drain(&mut builder.open().unwrap());
        let trades: Vec<(u64, Option<&str>)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Record {
                    record: Record::Trade(t),
                    symbol,
                    ..
                } => Some((t.trade_id, symbol.as_deref())),
                _ => None,
            })
            .collect();
        // the window begins 2500 trades or more before a refresh
        let first = trades.first().expect("trades").0;
        assert!(
            !first.is_multiple_of(5000) && first > 5000,
            "{symbols:?}: first trade {first}"
        );
        let expected = |id: u64| match id % 3 {
            0 => Some("BTCUSDT"),
            1 => Some("ETHUSDT"),
            _ => None,
        };
        let wanted: Vec<(u64, Option<&str>)> = (first..n)
            .map(|id| (id, expected(id)))
            .filter(|(_, s)| symbols.is_none() || *s == symbols)
            .collect();
        assert_eq!(trades.len(), wanted.len(), "{symbols:?}");
        let wrong = trades.iter().zip(&wanted).find(|(a, b)| a != b);
        assert!(wrong.is_none(), "{symbols:?}: got, wanted {wrong:?}");
    }
}

#[test]
fn a_start_at_a_time_reads_past_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    ring.append_record(&definition(1, "BTCUSDT")).unwrap();
    for n in 0..10 {
        ring.append_record(&Trade {
            ts_publish_ns: 1_000 * n as i64,
            ..trade(1, n)
        })
        .unwrap();
    }
    let mut subscriber = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .from_time(4_500)
        .open()
        .unwrap();
    let events = drain(&mut subscriber);
    let trades: Vec<(u64, Option<&str>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Record {
                record: Record::Trade(t),
                symbol,
                ..
            } => Some((t.trade_id, *symbol)),
            _ => None,
        })
        .collect();
    assert_eq!(trades.first(), Some(&(5, Some("BTCUSDT"))));
    assert_eq!(trades.len(), 5);
}

/// Feature `tokio` (scripts/test.sh runs it with the feature on).
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "current_thread")]
async fn events_as_an_async_stream() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    ring.append_record(&definition(1, "BTCUSDT")).unwrap();
    let subscriber = Subscriber::builder()
        .shm_dir(dir.path())
        .stream("ticks")
        .kinds(RecordKinds::only(RecordKind::TRADE))
        .from_earliest()
        .open()
        .unwrap();
    let mut events = std::pin::pin!(mdi_subscriber::stream::events(
        subscriber,
        Duration::from_micros(100)
    ));
    // records written while the stream waits arrive in order
    let writer = std::thread::spawn(move || {
        for n in 0..50 {
            ring.append_record(&trade(1, n)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        ring
    });
    let mut ids = Vec::new();
    while ids.len() < 50 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if let Event::Record {
            record: Record::Trade(t),
            ..
        } = event
        {
            ids.push(t.trade_id);
        }
    }
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    drop(writer.join().unwrap());
}
