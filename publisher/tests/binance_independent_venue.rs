//! `mdpub run` against an independent venue (issue 20): a Python `websockets` server over
//! TLS with its own certificate (`extra_ca`), speaking Binance's combined-stream format
//! (`tests/harness/ws_venue.py`), lagging as Binance does — (a) a history sent all at
//! once, (b) bursts held back 1–10 s, (c) a dropped connection whose trades come as a
//! backlog after the reconnect. Every final candle (1 s, 1 m, 5 m) whose interval ended
//! before the last trade must equal the one a brute-force model makes of the trades the
//! venue logged (the last revision, where a candle was corrected).
//!
//! Needs the venv `scripts/prepare.sh` makes (`.venv` with `websockets`): without it the
//! tests say so loudly, and fail under `CI=true`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdi_protocol::records::{Kline, RecordKind, decode};
use mdi_protocol::ring::{ReadEvent, RingReader, ShmDir, StartAt};

fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let python = std::env::var_os("MDI_PYTHON").map_or(venv, PathBuf::from);
    let ok = Command::new(&python)
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

fn no_python(test: &str) {
    let message = format!(
        "SKIPPED {test}: no Python with `websockets` (scripts/prepare.sh makes .venv; or set MDI_PYTHON)"
    );
    eprintln!("{message}");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
}

/// A child killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A trade as the venue logged it.
#[derive(Debug, Clone, Copy)]
struct Logged {
    id: i64,
    time: i64,
    price: i64,
    qty: i64,
    maker: bool,
}

fn read_log(path: &Path) -> (Vec<Logged>, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut trades = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["done"] == true {
            done = true;
            continue;
        }
        trades.push(Logged {
            id: v["id"].as_i64().unwrap(),
            time: v["time"].as_i64().unwrap(),
            price: v["price"].as_i64().unwrap(),
            qty: v["qty"].as_i64().unwrap(),
            maker: v["maker"].as_bool().unwrap(),
        });
    }
    (trades, done)
}

/// (open, high, low, close, volume, taker buy volume, raw trades, first id, last id).
type Candle = (i64, i64, i64, i64, i128, i128, u64, i64, i64);

/// The venue's candles of `interval_ms`, brute force, for every interval from the first
/// trade's to the last whole one before the last trade's.
fn model(trades: &[Logged], interval_ms: i64) -> BTreeMap<i64, Candle> {
    let mut by_bucket: BTreeMap<i64, Vec<&Logged>> = BTreeMap::new();
    for t in trades {
        by_bucket
            .entry(t.time.div_euclid(interval_ms) * interval_ms)
            .or_default()
            .push(t);
    }
    let first = *by_bucket.keys().next().unwrap();
    let last = *by_bucket.keys().next_back().unwrap();
    let mut out = BTreeMap::new();
    let mut close = 0;
    let mut open = first;
    while open < last {
        let candle = match by_bucket.get(&open) {
            None => (close, close, close, close, 0, 0, 0, -1, -1),
            Some(inside) => {
                let o = inside.iter().min_by_key(|t| t.id).unwrap();
                let c = inside.iter().max_by_key(|t| t.id).unwrap();
                (
                    o.price,
                    inside.iter().map(|t| t.price).max().unwrap(),
                    inside.iter().map(|t| t.price).min().unwrap(),
                    c.price,
                    inside.iter().map(|t| i128::from(t.qty)).sum(),
                    inside
                        .iter()
                        .filter(|t| !t.maker)
                        .map(|t| i128::from(t.qty))
                        .sum(),
                    inside.len() as u64 * 3,
                    o.id * 3,
                    c.id * 3 + 2,
                )
            }
        };
        close = candle.3;
        out.insert(open, candle);
        open += interval_ms;
    }
    out
}

/// The last revision of every final candle of `interval_ms` in the klines ring.
fn published(shm: &Path, interval_ms: u64) -> BTreeMap<i64, (Candle, u32)> {
    let mut reader = RingReader::open(&ShmDir::new(shm), "klines", StartAt::Earliest).unwrap();
    let mut out = BTreeMap::new();
    while !reader.caught_up() {
        reader
            .poll(1024, |e| {
                if let ReadEvent::Record(r) = e
                    && r.kind == RecordKind::KLINE
                {
                    let k: Kline = decode(r.body).unwrap();
                    if k.closed && k.interval_ms == interval_ms {
                        out.insert(
                            k.open_time_ms,
                            (
                                (
                                    k.open,
                                    k.high,
                                    k.low,
                                    k.close,
                                    k.volume,
                                    k.taker_buy_volume,
                                    k.trades,
                                    k.first_trade_id,
                                    k.last_trade_id,
                                ),
                                k.revision,
                            ),
                        );
                    }
                }
            })
            .unwrap();
    }
    out
}

/// Runs the venue in `mode` and `mdpub run` against it; returns the venue's trades, the
/// shm directory and mdpub's log.
fn run(test: &str, mode: &str, seconds: u64) -> Option<(Vec<Logged>, tempfile::TempDir, String)> {
    let Some(python) = python() else {
        no_python(test);
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, private) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&private, key.signing_key.serialize_pem()).unwrap();
    let (port_file, log) = (dir.path().join("port"), dir.path().join("venue.log"));
    let _venue = Reaped(
        Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/ws_venue.py"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&private)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .args([
                "--mode",
                mode,
                "--seconds",
                &seconds.to_string(),
                "--seed",
                "7",
            ])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        if let Ok(port) = std::fs::read_to_string(&port_file)
            && !port.is_empty()
        {
            break port;
        }
        assert!(Instant::now() < deadline, "the venue did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let shm = dir.path().join("shm");
    let config = dir.path().join("mdpub.toml");
    std::fs::write(
        &config,
        format!(
            "[binance]\nsymbols = [\"BTCUSDT\"]\nstreams = [\"aggTrade\"]\n\
             ws_base = \"wss://127.0.0.1:{port}\"\nrest_base = \"https://127.0.0.1:9\"\n\
             exchange_info = false\nextra_ca = {:?}\n\
             [[instruments]]\nsymbol = \"BTCUSDT\"\nprice_exponent = -2\nqty_exponent = -5\n\
             [klines]\nintervals = [\"1s\", \"1m\", \"5m\"]\nsource = \"aggTrade\"\nupdate_ms = 1000\n\
             [streams]\nticks_capacity = 16777216\nklines_capacity = 16777216\n",
            cert.display().to_string()
        ),
    )
    .unwrap();
    let mut mdpub = Reaped(
        Command::new(env!("CARGO_BIN_EXE_mdpub"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--shm-dir")
            .arg(&shm)
            .env_remove("MDI_SHM_DIR")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // until the venue is through its history, then 3 s (the last whole 1 s candles close
    // on the venue clock after their 2 s grace)
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while !read_log(&log).1 {
        assert!(Instant::now() < deadline, "the venue did not finish");
        assert!(mdpub.0.try_wait().unwrap().is_none(), "mdpub ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY-free stop: SIGINT through kill(1), as an operator would
    assert!(
        Command::new("kill")
            .args(["-INT", &mdpub.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = {
        let deadline = Instant::now() + Duration::from_secs(20);
        while mdpub.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "mdpub did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut log = String::new();
        use std::io::Read;
        mdpub
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        log
    };
    let (trades, _) = read_log(&log);
    eprintln!("{test}: the venue sent {} trades\n{output}", trades.len());
    Some((trades, dir, output))
}

/// Every final candle of the model's range equals the model's; returns the corrections.
fn check(trades: &[Logged], shm: &Path, what: &str, log: &str) -> u64 {
    let mut corrections = 0;
    for interval_ms in [1_000i64, 60_000, 300_000] {
        let want = model(trades, interval_ms);
        let got = published(shm, interval_ms as u64);
        // the 1 m and 5 m models may have no whole interval in a short run (then nothing
        // to compare); the 1 s always has
        let differ: Vec<_> = want
            .iter()
            .filter(|(open, candle)| got.get(open).map(|g| &g.0) != Some(candle))
            .map(|(open, candle)| (*open, *candle, got.get(open).copied()))
            .collect();
        assert!(
            differ.is_empty(),
            "{what}, {interval_ms} ms: {} of {} candles differ from the venue's, e.g. {:?}\n{log}",
            differ.len(),
            want.len(),
            &differ[..differ.len().min(3)]
        );
        corrections += got
            .iter()
            .filter(|(open, _)| want.contains_key(open))
            .map(|(_, (_, revision))| u64::from(*revision))
            .sum::<u64>();
        if interval_ms == 1_000 {
            assert!(
                want.len() > 5,
                "{what}: too short a run ({} candles)",
                want.len()
            );
        }
    }
    corrections
}

#[test]
fn a_history_sent_all_at_once_gives_the_venues_candles() {
    let Some((trades, dir, log)) = run(
        "a_history_sent_all_at_once_gives_the_venues_candles",
        "all",
        5,
    ) else {
        return;
    };
    assert_eq!(trades.len(), 3_000);
    let corrections = check(&trades, &dir.path().join("shm"), "all at once", &log);
    assert_eq!(corrections, 0, "nothing was late: {log}");
    assert!(
        log.contains(" 0 trades arrived after their candle was final"),
        "{log}"
    );
}

#[test]
fn bursts_held_back_are_corrected_into_the_venues_candles() {
    let Some((trades, dir, log)) = run(
        "bursts_held_back_are_corrected_into_the_venues_candles",
        "bursts",
        20,
    ) else {
        return;
    };
    let corrections = check(&trades, &dir.path().join("shm"), "bursts", &log);
    assert!(corrections > 0, "no stall outlasted the grace? {log}");
    assert!(
        !log.contains(" 0 trades arrived after their candle was final"),
        "{log}"
    );
}

#[test]
fn a_backlog_after_a_reconnect_continues_the_venues_candles() {
    let Some((trades, dir, log)) = run(
        "a_backlog_after_a_reconnect_continues_the_venues_candles",
        "reconnect",
        12,
    ) else {
        return;
    };
    check(&trades, &dir.path().join("shm"), "reconnect", &log);
    assert!(log.contains(" 1 disconnects"), "{log}");
    assert!(log.contains("0 trades in no candle"), "{log}");
}
