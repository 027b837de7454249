//! The live Binance path against local servers speaking TLS with a self-signed
//! certificate: a WebSocket server playing scripted connections (pings, garbage,
//! abrupt drops, serverShutdown, overlapping replacement connections) and a REST server
//! serving depth snapshots. What reaches the rings is checked record by record.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdi_protocol::records::{BookUpdate, FeedState, FeedStatus, RecordKind, Trade, decode};
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_publisher::binance::live::{self, LiveConfig, LiveCounters};
use mdi_publisher::binance::normalize::{Normalizer, NormalizerConfig};
use mdi_publisher::pipeline::Rings;
use mdi_transport::wall_clock_ns;

mod common;
use common::servers::{Scripts, Seen, Step, Streamer, rest_server, tls, trade, ws_server};

fn config(
    ws: SocketAddr,
    rest: Option<SocketAddr>,
    ca: &std::path::Path,
    streams: &[&str],
) -> LiveConfig {
    let mut c = LiveConfig::binance(streams.iter().map(|s| (*s).to_owned()).collect());
    c.ws_base = format!("wss://{ws}");
    c.rest_base = rest.map_or_else(|| "https://127.0.0.1:9".into(), |r| format!("https://{r}"));
    c.extra_ca = Some(ca.to_owned());
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(5);
    c
}

struct Run {
    _dir: tempfile::TempDir,
    shm: ShmDir,
    counters: LiveCounters,
}

/// Runs the feed until `done(trade ids so far, statuses so far)` or 20 s; the feed's
/// status file goes to the shm directory.
fn run_feed(mut config: LiveConfig, done: impl Fn(&[u64], &ShmDir) -> bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    config.status_dir = Some(dir.path().to_owned());
    let shm = ShmDir::new(dir.path());
    let options = RingOptions::default().capacity(4 << 20);
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", &options).unwrap(),
        klines: RingWriter::create(&shm, "klines", &options).unwrap(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let feed = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut normalizer =
                Normalizer::new(NormalizerConfig::default(), rings, wall_clock_ns).unwrap();
            live::run(&config, &mut normalizer, None, &stop).unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let ids: Vec<u64> = of::<Trade>(&shm).iter().map(|t| t.trade_id).collect();
        if done(&ids, &shm) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the feed did not get there in time: trades {ids:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let counters = feed.join().unwrap();
    Run {
        _dir: dir,
        shm,
        counters,
    }
}

fn of<T: mdi_protocol::records::RecordType>(shm: &ShmDir) -> Vec<T> {
    let Ok(mut reader) = RingReader::open(shm, "ticks", StartAt::Earliest) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while reader
        .poll(usize::MAX, |e| {
            if let ReadEvent::Record(r) = e
                && r.kind == T::KIND
            {
                out.push(decode::<T>(r.body).unwrap());
            }
        })
        .unwrap()
        > 0
    {}
    out
}

fn states(shm: &ShmDir) -> Vec<FeedState> {
    of::<FeedStatus>(shm).iter().map(|s| s.state).collect()
}

#[test]
fn pings_garbage_and_an_abrupt_drop_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls(dir.path());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let scripts: Scripts = Arc::new(|k| match k {
        1 => vec![
            Step::Ping("hello"),
            Step::Send(trade(1)),
            Step::Send(trade(2)),
            Step::Send("not json at all".into()),
            Step::Send(trade(3)[..40].to_owned()),
            Step::Send(r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}"#.into()),
            Step::Send(r#"{"e":"24hrTicker","E":1,"s":"BTCUSDT"}"#.into()),
            Step::Send(trade(3)),
            Step::Pause(100),
            Step::Drop,
        ],
        // the replacement replays the last trades (overlap) and goes on
        _ => vec![
            Step::Send(trade(2)),
            Step::Send(trade(3)),
            Step::Send(trade(4)),
            Step::Send(trade(5)),
        ],
    });
    let addr = ws_server(
        acceptor,
        scripts,
        Arc::new(|_, _| String::new()),
        Arc::clone(&seen),
    );
    let run = run_feed(config(addr, None, &ca, &["btcusdt@trade"]), |ids, _| {
        ids.len() >= 5
    });
    let ids: Vec<u64> = of::<Trade>(&run.shm).iter().map(|t| t.trade_id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "every trade once, in order");
    assert_eq!(
        seen.lock().unwrap().pongs,
        ["hello"],
        "the ping was answered with its payload"
    );
    let c = run.counters;
    assert_eq!((c.connects, c.disconnects, c.pings), (2, 1, 1), "{c:?}");
    let n = c.normalizer;
    assert_eq!(
        (n.malformed, n.unknown_events, n.duplicates, n.gaps),
        (2, 2, 2, 0),
        "{n:?}"
    );
    let s = states(&run.shm);
    let down = s
        .iter()
        .position(|&x| x == FeedState::Disconnected)
        .expect("disconnect reported");
    assert!(s[down..].contains(&FeedState::Connected), "{s:?}");
}

#[test]
fn books_sync_from_the_rest_snapshot_and_resync_after_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls(dir.path());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let depth = |first: u64, last: u64| {
        format!(
            r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1790649900000,"s":"BTCUSDT","U":{first},"u":{last},"b":[["83034.29000000","1.00000000"]],"a":[]}}}}"#
        )
    };
    let scripts: Scripts = Arc::new(move |_| {
        vec![
            Step::Send(depth(101, 105)),
            Step::Pause(300), // the snapshot (at 103) arrives meanwhile
            Step::Send(depth(106, 110)),
            Step::Send(depth(120, 125)), // 111..=119 missed: resync
            Step::Pause(300),
            Step::Send(depth(126, 130)),
        ]
    });
    let ws = ws_server(
        acceptor.clone(),
        scripts,
        Arc::new(|_, _| String::new()),
        Arc::clone(&seen),
    );
    let rest = rest_server(
        acceptor,
        Arc::new(|n, _| {
            let id = if n == 1 { 103 } else { 124 };
            format!(
                r#"{{"lastUpdateId":{id},"bids":[["83034.28000000","2.00000000"]],"asks":[["83034.30000000","3.00000000"]]}}"#
            )
        }),
        Arc::clone(&seen),
    );
    let run = run_feed(
        config(ws, Some(rest), &ca, &["btcusdt@depth@100ms"]),
        |_, shm| {
            of::<BookUpdate>(shm)
                .iter()
                .any(|b| b.last_update_id == 130)
        },
    );
    let requests = seen.lock().unwrap().requests.clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[0].starts_with("GET /api/v3/depth?symbol=BTCUSDT&limit=5000 "),
        "{requests:?}"
    );
    let books: Vec<(bool, u64, u64)> = of::<BookUpdate>(&run.shm)
        .iter()
        .map(|b| (b.is_snapshot, b.first_update_id, b.last_update_id))
        .collect();
    assert_eq!(
        books,
        [
            (true, 103, 103),
            (false, 101, 105),
            (false, 106, 110),
            (true, 124, 124),
            (false, 120, 125),
            (false, 126, 130)
        ]
    );
    let gap = of::<FeedStatus>(&run.shm)
        .into_iter()
        .find(|s| s.state == FeedState::Gap)
        .unwrap();
    assert_eq!(
        (gap.expected_seq, gap.received_seq, gap.count),
        (111, 120, 9)
    );
    assert_eq!(run.counters.snapshots, 2);
}

#[test]
fn rollover_and_server_shutdown_overlap_connections_and_lose_or_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls(dir.path());
    let seen = Arc::new(Mutex::new(Seen::default()));
    // one venue sequence; every connection streams all of it from where it joins — a
    // few trades before the newest sent so far, the overlap two Binance connections show
    let newest = Arc::new(AtomicU64::new(0));
    let starts = Arc::new(Mutex::new(std::collections::HashMap::<u64, u64>::new()));
    let streamer: Streamer = Arc::new(move |k, n| {
        let start = *starts
            .lock()
            .unwrap()
            .entry(k)
            .or_insert_with(|| newest.load(Ordering::SeqCst).saturating_sub(3).max(2));
        let id = start + n - 1;
        newest.fetch_max(id, Ordering::SeqCst);
        trade(id)
    });
    let scripts: Scripts = Arc::new(move |k| match k {
        1 => vec![
            Step::Send(trade(1)),
            Step::Pause(100),
            Step::Send(r#"{"e":"serverShutdown","E":1790649900000}"#.into()),
            Step::Stream { every_ms: 5 },
        ],
        _ => vec![Step::Stream { every_ms: 5 }],
    });
    let addr = ws_server(acceptor, scripts, streamer, Arc::clone(&seen));
    let mut c = config(addr, None, &ca, &["btcusdt@trade"]);
    c.max_connection_age = Duration::from_millis(400);
    c.rollover_overlap = Duration::from_millis(50);
    let run = run_feed(c, |ids, _| ids.len() >= 250);
    let ids: Vec<u64> = of::<Trade>(&run.shm).iter().map(|t| t.trade_id).collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(
        ids, expected,
        "gapless and without duplicates across connections"
    );
    let c = run.counters;
    assert!(c.rollovers >= 2, "{c:?}");
    assert_eq!(
        c.disconnects, 0,
        "replaced connections are closed by us, not lost: {c:?}"
    );
    assert!(
        c.normalizer.duplicates > 0,
        "the overlap was deduplicated: {c:?}"
    );
    assert_eq!(c.normalizer.gaps, 0);
    let seen = seen.lock().unwrap();
    assert!(seen.connections >= 3, "{seen:?}");
    assert!(
        seen.closed_by_client >= 2,
        "old connections closed by the client: {seen:?}"
    );
    assert!(!states(&run.shm).contains(&FeedState::Disconnected));
    let _ = RecordKind::TRADE;
}

/// A trade frame of `id` whose event and trade time are `behind_ms` before now.
fn trade_behind(id: u64, behind_ms: i64) -> String {
    let t = wall_clock_ns() / 1_000_000 - behind_ms;
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":{id},"p":"83034.29000000","q":"0.00062000","T":{t},"m":true,"M":true}}}}"#
    )
}

/// A connection whose events arrive 3 s after their time for a while is reported
/// lagging, then caught up; its lag is in the feed's status file for mdstat while it
/// runs, and in the counters (issue 20).
#[test]
fn a_lagging_connection_is_reported_and_its_lag_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls(dir.path());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let scripts: Scripts = Arc::new(|_| vec![Step::Stream { every_ms: 50 }]);
    // frames 1..=20 three seconds late, then on time
    let streamer: Streamer = Arc::new(|_, n| trade_behind(n, if n <= 20 { 3_000 } else { 0 }));
    let addr = ws_server(acceptor, scripts, streamer, Arc::clone(&seen));
    let mut c = config(addr, None, &ca, &["btcusdt@trade"]);
    c.lag_limit = Duration::from_millis(1_000);
    c.lag_sustain = Duration::from_millis(300);
    let status_seen = Arc::new(Mutex::new(String::new()));
    let run = {
        let status_seen = Arc::clone(&status_seen);
        run_feed(c, move |_, shm| {
            if let Ok(text) = std::fs::read_to_string(shm.path().join("ticks.feed")) {
                *status_seen.lock().unwrap() = text;
            }
            states(shm).contains(&FeedState::CaughtUp)
        })
    };
    let statuses = of::<FeedStatus>(&run.shm);
    let lagging = statuses
        .iter()
        .find(|s| s.state == FeedState::Lagging)
        .expect("lagging reported");
    assert!(lagging.count >= 3_000, "{lagging:?}");
    assert!(lagging.detail.contains("lagging"), "{lagging:?}");
    let caught_up = statuses
        .iter()
        .position(|s| s.state == FeedState::CaughtUp)
        .unwrap();
    assert!(
        statuses
            .iter()
            .position(|s| s.state == FeedState::Lagging)
            .unwrap()
            < caught_up
    );
    assert!(run.counters.max_lag_ms >= 3_000, "{:?}", run.counters);
    assert_eq!(run.counters.lagging_reports, 1);
    let status = status_seen.lock().unwrap().clone();
    assert!(
        status.contains("connection wss://") && status.contains("max_lag_ms="),
        "{status}"
    );
    assert!(
        !run.shm.path().join("ticks.feed").exists(),
        "the status file is removed at the end"
    );
}
