//! `mdtail` as users run it. The end-to-end check: a history file through `mdpub replay`,
//! read back with `mdtail klines --from earliest --no-follow --format jsonl`, equals a
//! brute-force model of Binance's K-lines, candle for candle (empty ones included).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mdi_protocol::decimal::Decimal;

fn mdtail(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdtail"))
        .args(args)
        .env_remove("MDI_SHM_DIR")
        .output()
        .expect("run mdtail")
}

/// `mdpub` is another package's binary: built next to `mdtail` by a workspace build.
fn mdpub() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_mdtail")).with_file_name("mdpub");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --workspace) before this test",
        path.display()
    );
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One aggTrade as the model sees it (8-decimal mantissas).
struct Row {
    time_ms: i64,
    price: i64,
    qty: i64,
    first: i64,
    last: i64,
    buyer_is_maker: bool,
}

/// A day of aggTrades with quiet stretches (whole empty minutes and 5-minute spans),
/// prices with long decimals, and a malformed row.
fn agg_trades(dir: &Path) -> (PathBuf, Vec<Row>) {
    let day = 1_704_153_600_000i64; // 2024-01-02T00:00:00Z
    let mut rows = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut time, mut price, mut id) = (day, 4_200_012_345_678i64, 1_000i64);
    while rows.len() < 20_000 {
        time += (next() % 9_000) as i64;
        if next() % 500 == 0 {
            time += 420_000; // seven quiet minutes
        }
        if time >= day + 86_400_000 {
            break;
        }
        price += (next() % 2_001) as i64 - 1_000;
        let n = 1 + (next() % 4) as i64;
        rows.push(Row {
            time_ms: time,
            price,
            qty: 1 + (next() % 300_000_000) as i64,
            first: id,
            last: id + n - 1,
            buyer_is_maker: next() % 2 == 0,
        });
        id += n;
    }
    let path = dir.join("BTCUSDT-aggTrades-2024-01-02.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for (i, r) in rows.iter().enumerate() {
        if i == 77 {
            writeln!(file, "999,not,a,row").unwrap();
        }
        writeln!(
            file,
            "{},{},{},{},{},{},{},true",
            500 + i,
            Decimal::new(r.price, -8),
            Decimal::new(r.qty, -8),
            r.first,
            r.last,
            r.time_ms,
            r.buyer_is_maker
        )
        .unwrap();
    }
    drop(file);
    (path, rows)
}

/// Binance's candle of `[open, open + interval)`, computed the slow way, and its close;
/// `previous` is the close carried into an empty interval.
fn model_candle(
    rows: &[Row],
    open: i64,
    interval: i64,
    previous: i64,
) -> (BTreeMap<&'static str, String>, i64) {
    let inside: Vec<&Row> = rows
        .iter()
        .filter(|r| r.time_ms >= open && r.time_ms < open + interval)
        .collect();
    let dec = |m: i128, e: i8| Decimal::new(m, e).to_string();
    let quote = |m: i128| Decimal::new(m, -16).trimmed_to(-8).to_string();
    let mut c = BTreeMap::new();
    c.insert("open_time_ms", open.to_string());
    c.insert("close_time_ms", (open + interval - 1).to_string());
    let prices: Vec<i64> = inside.iter().map(|r| r.price).collect();
    let (o, h, l, cl) = if prices.is_empty() {
        (previous, previous, previous, previous)
    } else {
        (
            prices[0],
            *prices.iter().max().unwrap(),
            *prices.iter().min().unwrap(),
            prices[prices.len() - 1],
        )
    };
    for (k, v) in [("open", o), ("high", h), ("low", l), ("close", cl)] {
        c.insert(k, dec(v.into(), -8));
    }
    let sum = |f: &dyn Fn(&Row) -> i128, taker_buy: bool| -> i128 {
        inside
            .iter()
            .filter(|r| !taker_buy || !r.buyer_is_maker)
            .map(|r| f(r))
            .sum()
    };
    let qty = |r: &Row| i128::from(r.qty);
    let notional = |r: &Row| i128::from(r.price) * i128::from(r.qty);
    c.insert("volume", dec(sum(&qty, false), -8));
    c.insert("quote_volume", quote(sum(&notional, false)));
    c.insert("taker_buy_volume", dec(sum(&qty, true), -8));
    c.insert("taker_buy_quote_volume", quote(sum(&notional, true)));
    let trades: i64 = inside.iter().map(|r| r.last - r.first + 1).sum();
    c.insert("trades", trades.to_string());
    c.insert(
        "first_trade_id",
        inside.first().map_or(-1, |r| r.first).to_string(),
    );
    c.insert(
        "last_trade_id",
        inside.last().map_or(-1, |r| r.last).to_string(),
    );
    (c, cl)
}

fn field(value: &serde_json::Value, key: &str) -> String {
    match &value[key] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn replayed_klines_equal_a_brute_force_model_candle_for_candle() {
    let input = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir().unwrap();
    let shm_path = shm.path().to_str().unwrap();
    let (file, rows) = agg_trades(input.path());
    let replay = Command::new(mdpub())
        .args([
            "replay",
            "--input",
            file.to_str().unwrap(),
            "--shm-dir",
            shm_path,
        ])
        .args(["--capacity", "67108864"])
        .output()
        .unwrap();
    let stderr = text(&replay.stderr);
    assert!(replay.status.success(), "{stderr}");
    assert!(stderr.contains("1 malformed"), "{stderr}");

    let tail = mdtail(&[
        "klines",
        "--from",
        "earliest",
        "--no-follow",
        "--format",
        "jsonl",
        "--shm-dir",
        shm_path,
    ]);
    assert!(tail.status.success(), "{}", text(&tail.stderr));
    let candles: Vec<serde_json::Value> = text(&tail.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let day = 1_704_153_600_000i64;
    for (name, interval) in [("1m", 60_000i64), ("5m", 300_000)] {
        let got: Vec<&serde_json::Value> =
            candles.iter().filter(|c| c["interval"] == name).collect();
        assert_eq!(got.len() as i64, 86_400_000 / interval, "{name} candles");
        let mut previous = rows[0].price;
        let mut empty = 0;
        for (i, candle) in got.iter().enumerate() {
            let open = day + i as i64 * interval;
            let (want, close) = model_candle(&rows, open, interval, previous);
            for (key, value) in &want {
                assert_eq!(&field(candle, key), value, "{name} candle at {open}: {key}");
            }
            assert_eq!(candle["symbol"], "BTCUSDT");
            assert_eq!(candle["closed"], true);
            assert!(candle["seq"].as_u64().is_some());
            empty += usize::from(want["trades"] == "0");
            previous = close;
        }
        assert!(empty > 0, "{name}: the model day must have empty candles");
    }
}

/// A ring with an instrument definition and `n` trades.
fn trades_ring(dir: &Path, n: u64) {
    use mdi_protocol::records::{InstrumentDefinition, Side, Trade};
    use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
    let shm = ShmDir::new(dir);
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(64 << 20)).unwrap();
    for (id, symbol) in [(1, "BTCUSDT"), (2, "ETHUSDT")] {
        ring.append_record(&InstrumentDefinition {
            instrument_id: id,
            price_exponent: -2,
            qty_exponent: -3,
            venue: "binance".into(),
            symbol: symbol.into(),
            ..InstrumentDefinition::default()
        })
        .unwrap();
    }
    for i in 0..n {
        ring.append_record(&Trade {
            instrument_id: 1 + (i % 2) as u32,
            price_exponent: -2,
            qty_exponent: -3,
            price: 4_200_000 + i as i64,
            qty: 1_500,
            trade_id: i,
            aggressor: if i % 3 == 0 { Side::Sell } else { Side::Buy },
            ts_exchange_ns: 1_704_153_600_000_000_000 + i as i64,
            ts_publish_ns: 1_704_153_600_000_000_000 + i as i64,
            ..Trade::default()
        })
        .unwrap();
    }
}

#[test]
fn trades_print_in_every_format_with_filters_and_counts() {
    let shm = tempfile::tempdir().unwrap();
    trades_ring(shm.path(), 10);
    let dir = shm.path().to_str().unwrap();
    let base = ["--shm-dir", dir, "--from", "earliest", "--no-follow"];
    let run = |extra: &[&str]| {
        let output = mdtail(&[&base[..], extra].concat());
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let jsonl = run(&["--format", "jsonl", "--symbol", "ethusdt"]);
    let trades: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trades.len(), 5);
    let first = &trades[0];
    for key in [
        "symbol",
        "price",
        "qty",
        "side",
        "trade_id",
        "ts_exchange_ns",
        "ts_receive_ns",
        "ts_publish_ns",
        "seq",
    ] {
        assert!(!first[key].is_null(), "{key} missing: {first}");
    }
    assert_eq!(
        (
            &first["symbol"],
            &first["price"],
            &first["qty"],
            &first["side"]
        ),
        (
            &serde_json::json!("ETHUSDT"),
            &serde_json::json!("42000.01"),
            &serde_json::json!("1.500"),
            &serde_json::json!("buy")
        )
    );
    let csv = run(&["--format", "csv", "--kind", "trade", "--count", "3"]);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("kind,symbol,instrument_id,stream,price,qty,side,"));
    // a mix of kinds in one CSV (a header row each) is refused, saying what to do
    for kinds in [&[][..], &["--kind", "trade,kline"][..]] {
        let output = mdtail(&[&base[..], &["--format", "csv"], kinds].concat());
        assert!(!output.status.success());
        assert!(
            text(&output.stderr).contains("--kind"),
            "{}",
            text(&output.stderr)
        );
    }
    let table = run(&["--count", "2"]);
    assert!(
        table.contains("2024-01-02T00:00:00.000000Z  BTCUSDT"),
        "{table}"
    );
    assert!(!table.contains('\x1b'), "no colour into a pipe");
    assert_eq!(run(&["--kind", "kline"]), "");
    assert_eq!(run(&["--kind", "instrument"]).lines().count(), 2);
}

#[test]
fn a_closed_pipe_ends_mdtail_quietly() {
    let shm = tempfile::tempdir().unwrap();
    trades_ring(shm.path(), 200_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdtail"))
        .args(["--from", "earliest", "--format", "jsonl", "--shm-dir"])
        .arg(shm.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout); // like `| head -c 64`
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(text(&output.stderr), "");
}

#[test]
fn bad_arguments_and_odd_shm_dirs_get_clear_messages() {
    let shm = tempfile::tempdir().unwrap();
    let dir = shm.path().to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--from", "yesterday", "--shm-dir", dir],
            "earliest, latest, seq:N or time:T",
        ),
        (&["--kind", "candles", "--shm-dir", dir], "unknown kind"),
        (&["--format", "xml", "--shm-dir", dir], "xml"),
        (
            &["--shm-dir", "/nonexistent/mdi"],
            "no shm directory /nonexistent/mdi",
        ),
        (&["--shm-dir", dir], "no streams in"),
    ];
    for (args, expected) in cases {
        let output = mdtail(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // a stream that is not there, and a foreign file posing as a ring
    let output = mdtail(&["nope", "--shm-dir", dir]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("nope"),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(shm.path().join("junk.ring"), vec![7u8; 8192]).unwrap();
    let output = mdtail(&["--no-follow", "--shm-dir", dir]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("junk.ring") && stderr.contains("not"),
        "{stderr}"
    );
}

#[test]
fn stats_and_chart_modes() {
    let shm = tempfile::tempdir().unwrap();
    trades_ring(shm.path(), 1_000);
    let dir = shm.path().to_str().unwrap();
    let output = mdtail(&[
        "--stats",
        "--from",
        "earliest",
        "--no-follow",
        "--shm-dir",
        dir,
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    let lines: Vec<&str> = report.lines().collect();
    assert!(
        lines[0].starts_with("STREAM") && lines[0].contains("P99 µs"),
        "{report}"
    );
    let ticks = lines
        .iter()
        .find(|l| l.starts_with("ticks"))
        .expect("a ticks row");
    // 2 definitions + 1000 trades, no gaps
    assert_eq!(ticks.split_whitespace().nth(1), Some("1002"), "{report}");
    let output = mdtail(&["--chart", "BTCUSDT", "--shm-dir", dir]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("terminal"),
        "{}",
        text(&output.stderr)
    );
    let output = mdtail(&["--stats", "--format", "jsonl", "--shm-dir", dir]);
    assert!(!output.status.success(), "--stats prints no records");
}

#[test]
fn a_start_at_a_time() {
    let shm = tempfile::tempdir().unwrap();
    trades_ring(shm.path(), 1_000);
    let dir = shm.path().to_str().unwrap();
    // the trades are 1 ns apart from 2024-01-02T00:00:00Z
    let output = mdtail(&[
        "--from",
        "time:2024-01-02T00:00:00.0000005Z",
        "--no-follow",
        "--format",
        "jsonl",
        "--shm-dir",
        dir,
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["trade_id"].as_u64(), first["symbol"].as_str()),
        (Some(500), Some("BTCUSDT"))
    );
    assert_eq!(out.lines().count(), 500);
    let output = mdtail(&["--from", "time:2024-02-30T99", "--shm-dir", dir]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("time: wants a valid time"));
}
