//! `mdpub replay` as a user runs it: history files in, rings out, served over reliable
//! UDP while they are written; bad input refused with a clear message.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mdi_protocol::records::{Kline, RecordKind, Trade, decode};
use mdi_protocol::ring::{ShmDir, WriterState};
use mdi_protocol::udp::Channel;
use mdi_transport::receiver::{UdpReceiver, UdpReceiverOptions};

mod common;
use common::{contents, free_port};

fn mdpub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdpub"))
        .args(args)
        .env_remove("MDI_SHM_DIR")
        .output()
        .expect("run mdpub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Two hours of aggTrades with a quiet quarter hour, in a file named as
/// data.binance.vision names it.
fn write_agg_trades(dir: &Path, name: &str, rows: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let start = 1_709_596_800_000u64; // 2024-03-05T00:00:00Z
    for i in 0..rows {
        let mut time = start + i * 7_200_000 / rows;
        if (3_600_000..4_500_000).contains(&(time - start)) {
            time += 900_000;
        }
        let price = 350_000 + (i * 7919 % 400);
        writeln!(
            file,
            "{},{}.{:02}000000,0.{:08},{},{},{},{},true",
            5_000 + i,
            price / 100,
            price % 100,
            1 + i * 37 % 900,
            20_000 + 2 * i,
            20_001 + 2 * i,
            time,
            i % 3 == 0
        )
        .unwrap();
    }
    drop(file);
    path
}

#[test]
fn replay_writes_rings_and_serves_them_over_udp_until_the_end() {
    let input = tempfile::tempdir().unwrap();
    let source_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let file = write_agg_trades(input.path(), "ETHUSDT-aggTrades-2024-03-05.csv", 5_000);
    let channel = format!("udp://127.0.0.1:{}", free_port());
    let mut receiver = UdpReceiver::new(
        Channel::parse(&channel).unwrap(),
        ShmDir::new(replica_dir.path()),
        UdpReceiverOptions {
            debug_drop_rate: 0.05,
            debug_seed: 11,
            ..UdpReceiverOptions::default()
        },
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mdpub"))
        .args(["replay", "--input"])
        .arg(&file)
        .arg("--shm-dir")
        .arg(source_dir.path())
        .args([
            "--capacity",
            "4194304",
            "--linger-ms",
            "300",
            "--udp",
            &channel,
        ])
        .args(["--debug-drop-rate", "0.05", "--debug-seed", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mdpub");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !receiver.all_ended() {
        assert!(
            Instant::now() < deadline,
            "the replicas did not end in time"
        );
        receiver.poll(Duration::from_millis(1)).unwrap();
        receiver.take_events();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("5000 trades"), "{stderr}");

    let src = ShmDir::new(source_dir.path());
    let dst = ShmDir::new(replica_dir.path());
    for stream in ["ticks", "klines"] {
        let source = contents(&src, stream);
        assert!(source.len() > 100, "{stream}: {} records", source.len());
        assert!(
            contents(&dst, stream) == source,
            "{stream}: the replica differs from the source"
        );
    }
    // the replay closed its rings: readers see the writer gone, not dead
    let info = mdi_protocol::ring::inspect(&src, "klines").unwrap();
    assert_ne!(info.writer_pid, 0);
    let reader =
        mdi_protocol::ring::RingReader::open(&src, "klines", mdi_protocol::ring::StartAt::Earliest)
            .unwrap();
    assert_eq!(reader.writer_status(0).state, WriterState::Closed);
}

#[test]
fn replay_starts_fresh_rings_unless_told_to_append() {
    let input = tempfile::tempdir().unwrap();
    let shm_dir = tempfile::tempdir().unwrap();
    let file = write_agg_trades(input.path(), "BTCUSDT-aggTrades-2024-03-05.csv", 300);
    let shm = shm_dir.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--input",
            file.to_str().unwrap(),
            "--shm-dir",
            shm,
            "--capacity",
            "4194304",
        ];
        args.extend_from_slice(extra);
        let output = mdpub(&args);
        assert!(output.status.success(), "{}", text(&output.stderr));
    };
    let trades = || {
        contents(&ShmDir::new(shm_dir.path()), "ticks")
            .iter()
            .filter(|r| RecordKind(r.2) == RecordKind::TRADE)
            .count()
    };
    run(&[]);
    assert_eq!(trades(), 300);
    run(&[]);
    assert_eq!(
        trades(),
        300,
        "a second replay must not pile onto the first"
    );
    run(&["--append"]);
    assert_eq!(trades(), 600);
}

#[test]
fn trades_files_replay_too_and_paced_replays_stamp_receive_times() {
    let input = tempfile::tempdir().unwrap();
    let shm_dir = tempfile::tempdir().unwrap();
    // data.binance.vision trades: id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch —
    // no date in the name and a header row, as futures files have
    let file = input.path().join("trades.csv");
    std::fs::write(
        &file,
        "id,price,qty,quote_qty,time,is_buyer_maker\n\
         7,100.5,2,201,1709596800000,true\n\
         8,100.7,1,100.7,1709596800500,false\n\
         9,oops,1,1,1709596801000,false\n\
         10,100.6,3,301.8,1709596801000,false\n",
    )
    .unwrap();
    let output = mdpub(&[
        "replay",
        "--input",
        file.to_str().unwrap(),
        "--symbol",
        "SOLUSDT",
        "--speed",
        "100x",
        "--price-exponent",
        "-2",
        "--qty-exponent",
        "0",
        "--intervals",
        "1s",
        "--capacity",
        "67108864",
        "--shm-dir",
        shm_dir.path().to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 trades") && stderr.contains("1 malformed"),
        "{stderr}"
    );
    let shm = ShmDir::new(shm_dir.path());
    let records = contents(&shm, "ticks");
    let trades: Vec<Trade> = records
        .iter()
        .filter(|r| RecordKind(r.2) == RecordKind::TRADE)
        .map(|r| decode::<Trade>(&r.3).unwrap())
        .collect();
    assert_eq!(
        trades
            .iter()
            .map(|t| (t.trade_id, t.price, t.qty, t.is_aggregate))
            .collect::<Vec<_>>(),
        [
            (7, 10_050, 2, false),
            (8, 10_070, 1, false),
            (10, 10_060, 3, false)
        ]
    );
    // paced at 100x: the trades 1 s apart arrive ≥ 10 ms apart
    assert!(trades[2].ts_receive_ns - trades[0].ts_receive_ns >= 9_000_000);
    let klines: Vec<Kline> = contents(&shm, "klines")
        .iter()
        .filter(|r| RecordKind(r.2) == RecordKind::KLINE)
        .map(|r| decode::<Kline>(&r.3).unwrap())
        .collect();
    // the whole day in 1 s candles; the first holds trades 7 and 8
    assert_eq!(klines.len(), 86_400);
    assert_eq!(
        (
            klines[0].open,
            klines[0].close,
            klines[0].volume,
            klines[0].trades
        ),
        (10_050, 10_070, 3, 2)
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("shm");
    let shm = shm.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "replay",
                "--input",
                "/nonexistent/BTCUSDT-aggTrades-2024-01-01.csv",
            ],
            "/nonexistent/BTCUSDT-aggTrades-2024-01-01.csv",
        ),
        (
            &["replay", "--input", "x.csv", "--speed", "fast"],
            "is not a speed",
        ),
        (&["replay", "--input", "x.csv", "--intervals", "7m"], "7m"),
        (&["serve", "--debug-drop-rate", "2"], "between 0 and 1"),
        (&["serve", "--shm-dir", shm], "--udp"),
    ];
    for (args, expected) in cases {
        let output = mdpub(args);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // configurations: missing, and with a mistake
    let output = mdpub(&["run", "--config", "/nonexistent/feed.toml"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("/nonexistent/feed.toml"),
        "{}",
        text(&output.stderr)
    );
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "[binance]\nsymbols = [\"BTCUSDT\"]\nstreams = [\"trades\"]\n",
    )
    .unwrap();
    let output = mdpub(&["run", "--config", typo.to_str().unwrap(), "--shm-dir", shm]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("typo.toml") && stderr.contains("\"trades\" is not one of"),
        "{stderr}"
    );
    // a file whose format cannot be told
    let odd = dir.path().join("data.csv");
    std::fs::write(&odd, "1,2,3\n").unwrap();
    let output = mdpub(&["replay", "--input", odd.to_str().unwrap(), "--shm-dir", shm]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--format"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn zip_and_zstd_inputs_are_read_as_they_come() {
    let input = tempfile::tempdir().unwrap();
    let csv = write_agg_trades(input.path(), "plain.csv", 200);
    let rows = std::fs::read(&csv).unwrap();
    let zst = input.path().join("BTCUSDT-aggTrades-2024-03-05.csv.zst");
    std::fs::write(&zst, zstd::encode_all(&rows[..], 3).unwrap()).unwrap();
    let zip_path = input.path().join("BTCUSDT-aggTrades-2024-03-05.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    zip.start_file::<_, ()>(
        "BTCUSDT-aggTrades-2024-03-05.csv",
        zip::write::FileOptions::default(),
    )
    .unwrap();
    zip.write_all(&rows).unwrap();
    zip.finish().unwrap();
    for file in [zst, zip_path] {
        let shm = tempfile::tempdir().unwrap();
        let output = mdpub(&[
            "replay",
            "--input",
            file.to_str().unwrap(),
            "--capacity",
            "4194304",
            "--shm-dir",
            shm.path().to_str().unwrap(),
        ]);
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{}: {stderr}", file.display());
        assert!(
            stderr.contains("200 trades, "),
            "{}: {stderr}",
            file.display()
        );
    }
}

fn count_kinds(shm: &ShmDir, stream: &str) -> std::collections::HashMap<u16, usize> {
    let mut kinds = std::collections::HashMap::new();
    for record in contents(shm, stream) {
        *kinds.entry(record.2).or_insert(0) += 1;
    }
    kinds
}

fn feed_states(shm: &ShmDir) -> Vec<mdi_protocol::records::FeedState> {
    contents(shm, "ticks")
        .iter()
        .filter(|r| RecordKind(r.2) == RecordKind::FEED_STATUS)
        .map(|r| {
            decode::<mdi_protocol::records::FeedStatus>(&r.3)
                .unwrap()
                .state
        })
        .collect()
}

#[test]
fn demo_loops_the_bundled_capture_with_ids_that_continue() {
    let shm_dir = tempfile::tempdir().unwrap();
    // 120 s of capture per pass at 1000x: a pass takes 0.12 s paced, more if the CPU
    // is slower (a debug build on a busy CI host), so 4 s is room for two passes
    let output = mdpub(&[
        "demo",
        "--no-udp",
        "--speed",
        "1000x",
        "--duration",
        "4",
        "--shm-dir",
        shm_dir.path().to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("mdtail --shm-dir"), "{stderr}");
    let passes: u64 = stderr
        .split("demo done: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(passes >= 2, "{stderr}");
    let shm = ShmDir::new(shm_dir.path());
    let ticks = count_kinds(&shm, "ticks");
    for kind in [
        RecordKind::TRADE,
        RecordKind::QUOTE,
        RecordKind::BOOK_UPDATE,
    ] {
        assert!(
            ticks.get(&kind.0).copied().unwrap_or(0) > 100,
            "{kind:?}: {ticks:?}"
        );
    }
    assert!(count_kinds(&shm, "klines")[&RecordKind::KLINE.0] > 100);
    // both books synced once and never lost a step across passes; no trade-id gaps
    use mdi_protocol::records::FeedState;
    assert_eq!(
        feed_states(&shm),
        [FeedState::ResyncDone, FeedState::ResyncDone],
        "{stderr}"
    );
}

#[test]
fn a_capture_replays_through_the_live_path() {
    let input = tempfile::tempdir().unwrap();
    let shm_dir = tempfile::tempdir().unwrap();
    let file = input.path().join("demo.capture.zst");
    let output = mdpub(&["demo", "--write-capture", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines =
        String::from_utf8(zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap()).unwrap();
    let trade_lines = lines.lines().filter(|l| l.contains("@trade")).count();
    // a garbage line and a garbage frame in the middle are counted and skipped
    let mut edited: Vec<&str> = lines.lines().collect();
    edited.insert(
        500,
        "1767225605000000000 {\"stream\":\"btcusdt@trade\",\"data\":{\"e\":",
    );
    edited.insert(700, "no stamp here");
    let plain = input.path().join("edited.capture");
    std::fs::write(&plain, edited.join("\n")).unwrap();
    let output = mdpub(&[
        "replay",
        "--input",
        plain.to_str().unwrap(),
        "--capacity",
        "67108864",
        "--shm-dir",
        shm_dir.path().to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{trade_lines} trades")),
        "{stderr}"
    );
    assert!(stderr.contains("2 malformed"), "{stderr}");
    let shm = ShmDir::new(shm_dir.path());
    let ticks = count_kinds(&shm, "ticks");
    assert_eq!(ticks[&RecordKind::TRADE.0], trade_lines);
    use mdi_protocol::records::FeedState;
    assert_eq!(
        feed_states(&shm),
        [
            FeedState::ResyncDone,
            FeedState::ResyncDone,
            FeedState::Malformed
        ]
    );
    // receive times are the capture's own
    let first_trade = contents(&shm, "ticks")
        .into_iter()
        .find(|r| RecordKind(r.2) == RecordKind::TRADE)
        .map(|r| decode::<Trade>(&r.3).unwrap())
        .unwrap();
    assert!(
        (1_767_225_600_000_000_000..1_767_225_720_000_000_000).contains(&first_trade.ts_receive_ns)
    );
}

#[test]
fn record_a_live_feed_then_replay_it_to_the_same_records() {
    use common::servers::{Seen, Step, rest_server, tls, trade, ws_server};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = tls(dir.path());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let book = |first: u64, last: u64| {
        format!(
            r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1790649900000,"s":"BTCUSDT","U":{first},"u":{last},"b":[["83034.28","1.5"]],"a":[]}}}}"#
        )
    };
    let ws = ws_server(
        acceptor.clone(),
        Arc::new(move |_| {
            let mut steps = vec![Step::Send(book(10, 12)), Step::Pause(300)];
            steps.extend((1..=20).map(|i| Step::Send(trade(i))));
            steps.push(Step::Send(book(13, 14)));
            steps
        }),
        Arc::new(|_, _| String::new()),
        Arc::clone(&seen),
    );
    let rest = rest_server(
        acceptor,
        Arc::new(|_, line| {
            if line.contains("exchangeInfo") {
                r#"{"symbols":[{"symbol":"BTCUSDT","filters":[{"filterType":"PRICE_FILTER","tickSize":"0.01000000"},{"filterType":"LOT_SIZE","stepSize":"0.00001000"}]}]}"#.into()
            } else {
                r#"{"lastUpdateId":11,"bids":[["83034.27","2"]],"asks":[["83034.30","3"]]}"#.into()
            }
        }),
        Arc::clone(&seen),
    );
    let config = dir.path().join("feed.toml");
    std::fs::write(
        &config,
        format!(
            "[binance]\nsymbols = [\"BTCUSDT\"]\nstreams = [\"trade\", \"depth@100ms\"]\nws_base = \"wss://{ws}\"\nrest_base = \"https://{rest}\"\nextra_ca = \"{}\"\n[streams]\nticks_capacity = 4194304\nklines_capacity = 4194304\n",
            ca.display()
        ),
    )
    .unwrap();
    let live_shm = dir.path().join("live");
    let capture = dir.path().join("feed.capture.zst");
    let output = mdpub(&[
        "record",
        "--config",
        config.to_str().unwrap(),
        "--out",
        capture.to_str().unwrap(),
        "--duration",
        "2",
        "--shm-dir",
        live_shm.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("20 trades"), "{stderr}");
    let requests = seen.lock().unwrap().requests.clone();
    assert!(
        requests[0].contains("/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22%5D"),
        "{requests:?}"
    );

    let replay_shm = dir.path().join("replay");
    let output = mdpub(&[
        "replay",
        "--input",
        capture.to_str().unwrap(),
        "--capacity",
        "4194304",
        "--shm-dir",
        replay_shm.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // the same trades and books, at exchangeInfo's exponents (recorded in the capture),
    // with the same receive times
    let records = |dir: &Path| -> Vec<(u16, Vec<u8>)> {
        contents(&ShmDir::new(dir), "ticks")
            .into_iter()
            .filter(|r| [RecordKind::TRADE, RecordKind::BOOK_UPDATE].contains(&RecordKind(r.2)))
            .map(|r| {
                // publish times differ (when each run wrote): compare without them
                let mut body = r.3;
                if RecordKind(r.2) == RecordKind::TRADE {
                    let mut t = decode::<Trade>(&body).unwrap();
                    t.ts_publish_ns = 0;
                    body = format!("{t:?}").into_bytes();
                } else {
                    let mut b = decode::<mdi_protocol::records::BookUpdate>(&body).unwrap();
                    b.ts_publish_ns = 0;
                    body = format!("{b:?}").into_bytes();
                }
                (r.2, body)
            })
            .collect()
    };
    let live = records(&live_shm);
    assert_eq!(
        live.iter()
            .filter(|r| RecordKind(r.0) == RecordKind::TRADE)
            .count(),
        20
    );
    assert!(
        live.iter()
            .any(|r| RecordKind(r.0) == RecordKind::BOOK_UPDATE)
    );
    let first = decode_first_trade(&live_shm);
    assert_eq!(
        (first.price_exponent, first.qty_exponent, first.price),
        (-2, -5, 8_303_429)
    );
    assert!(
        records(&replay_shm) == live,
        "the replay differs from the live run"
    );
}

fn decode_first_trade(dir: &Path) -> Trade {
    contents(&ShmDir::new(dir), "ticks")
        .into_iter()
        .find(|r| RecordKind(r.2) == RecordKind::TRADE)
        .map(|r| decode::<Trade>(&r.3).unwrap())
        .unwrap()
}

/// A capture of aggTrades only: by default (`--kline-source auto`) its K-lines are built
/// from them; told `trade`, mdpub builds none and says so instead of nothing (issue 21).
#[test]
fn kline_source_auto_takes_agg_trades_and_an_empty_source_is_said() {
    let input = tempfile::tempdir().unwrap();
    let start = 1_767_225_600_000i64;
    let lines: String = (0..200i64)
        .map(|i| {
            let t = start + i * 1_000;
            format!(
                "{} {{\"stream\":\"btcusdt@aggTrade\",\"data\":{{\"e\":\"aggTrade\",\"E\":{t},\"s\":\"BTCUSDT\",\"a\":{},\"p\":\"100.{:02}\",\"q\":\"1.5\",\"f\":{},\"l\":{},\"T\":{t},\"m\":false,\"M\":true}}}}\n",
                (t + 5) * 1_000_000,
                1_000 + i,
                i % 100,
                3 * i,
                3 * i + 2
            )
        })
        .collect();
    let file = input.path().join("aggs.capture");
    std::fs::write(&file, lines).unwrap();
    let run = |extra: &[&str]| {
        let shm_dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "replay",
            "--input",
            file.to_str().unwrap(),
            "--capacity",
            "16777216",
            "--shm-dir",
            shm_dir.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = mdpub(&args);
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let klines = count_kinds(&ShmDir::new(shm_dir.path()), "klines")
            .get(&RecordKind::KLINE.0)
            .copied()
            .unwrap_or(0);
        (klines, stderr)
    };
    let (klines, stderr) = run(&[]);
    assert!(klines > 3, "{klines} K-lines: {stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (klines, stderr) = run(&["--kline-source", "trade"]);
    assert_eq!(klines, 0, "{stderr}");
    assert!(
        stderr.contains("warning: no raw trades (@trade) in the input, so no K-lines were built from its 200 trades"),
        "{stderr}"
    );
}

/// Logs that speak (issue 24): without `RUST_LOG` the malformed lines of a replay are
/// warned about (the first few, with their line numbers), every one is counted — a
/// line of words after the first too — and a log into a pipe has no colour codes;
/// `--log-format json` writes one JSON object per line.
#[test]
fn malformed_lines_are_counted_and_warned_about_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_agg_trades(dir.path(), "good.csv", 50);
    let lines: Vec<String> = std::fs::read_to_string(&good)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let path = dir.path().join("BTCUSDT-aggTrades-2024-03-05.csv");
    let mut text_out = String::from(
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n",
    );
    for (i, line) in lines.iter().enumerate() {
        text_out.push_str(line);
        text_out.push('\n');
        match i {
            10 => text_out.push_str("1,2,3\n"),
            20 => text_out.push_str("garbage\n"),
            30 => text_out.push_str("5,notaprice,1,1,1,1,true,true\n"),
            _ => {}
        }
    }
    std::fs::write(&path, text_out).unwrap();
    let shm = dir.path().join("shm");
    for format in ["text", "json"] {
        let output = Command::new(env!("CARGO_BIN_EXE_mdpub"))
            .args(["--log-format", format, "replay", "--input"])
            .arg(&path)
            .arg("--shm-dir")
            .arg(&shm)
            .args(["--capacity", "1048576"])
            .env_remove("RUST_LOG")
            .env_remove("MDI_SHM_DIR")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(stderr.contains("3 malformed"), "{format}: {stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "{format}: colour codes into a pipe"
        );
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 3, "{format}: {stderr}");
        // line numbers: the header is line 1, the bad lines 13, 24 and 35
        for line in [13, 24, 35] {
            assert!(
                warnings.iter().any(|w| w.contains(&format!("line {line}"))),
                "{format}: line {line}: {stderr}"
            );
        }
        if format == "json" {
            for w in &warnings {
                let v: serde_json::Value = serde_json::from_str(w).expect("a JSON log line");
                assert_eq!(v["level"], "WARN");
            }
        }
    }
}

/// `mdpub --metrics ADDR` (issue 24): the demo's rings and UDP sender as Prometheus
/// metrics while it runs, in a format promtool accepts.
#[test]
fn the_demo_serves_prometheus_metrics() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_mdpub"))
        .args([
            "--metrics",
            &format!("127.0.0.1:{port}"),
            "demo",
            "--shm-dir",
        ])
        .arg(dir.path())
        .args([
            "--udp",
            &format!("udp://127.0.0.1:{udp}"),
            "--duration",
            "20",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let body = loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
                let mut text = String::new();
                s.read_to_string(&mut text).ok()?;
                Some(text)
            })
            .unwrap_or_default();
        if got.contains("mdi_udp_send_data_frames_total")
            && got.contains("mdi_ring_records_total")
            && got.contains("mdi_feed_latency_seconds_bucket")
        {
            break got.split_once("\r\n\r\n").unwrap().1.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no metrics: {got}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = demo.kill();
    demo.wait().unwrap();
    assert!(
        body.contains("mdi_ring_writer_up{stream=\"ticks\"} 1.0"),
        "{body}"
    );
    assert!(
        body.contains("mdi_feed_latency_seconds_count{stage=\"exchange_to_receive\"}")
            && body.contains("mdi_feed_latency_seconds_count{stage=\"receive_to_publish\"}"),
        "{body}"
    );
    // the dashboard's latency panel queries what mdpub exports
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/mdi.json"
    ))
    .unwrap();
    assert!(dashboard.contains("mdi_feed_latency_seconds_bucket"));
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool missing (apt-get install prometheus)"
            );
            eprintln!(
                "\n!!! SKIPPED the promtool check: promtool missing (apt-get install prometheus)\n"
            );
        }
    }
}

/// Progress of a long replay (issue 24): into a pipe (not a terminal), a line every 5 s
/// with the share done, the rate and the time left.
#[test]
fn a_long_replay_says_how_far_it_is() {
    let dir = tempfile::tempdir().unwrap();
    // two hours of trades at 1000x: about 7 s
    let path = write_agg_trades(dir.path(), "BTCUSDT-aggTrades-2024-03-05.csv", 4_000);
    let output = Command::new(env!("CARGO_BIN_EXE_mdpub"))
        .args([
            "replay",
            "--speed",
            "1000x",
            "--capacity",
            "1048576",
            "--input",
        ])
        .arg(&path)
        .arg("--shm-dir")
        .arg(dir.path().join("shm"))
        .env_remove("MDI_SHM_DIR")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("mdpub: replaying") && l.contains("% ("))
        .unwrap_or_else(|| panic!("no progress line in {stderr}"));
    assert!(
        line.contains("MB of") && line.contains("MB/s") && line.contains("ETA"),
        "{line}"
    );
    assert!(!stderr.contains('\u{1b}'), "no terminal codes into a pipe");
}

#[test]
fn a_replay_larger_than_its_ring_is_archived_whole_and_without_an_archive_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // ~100 bytes a record: 60 000 trades are hundreds of times a 16 KiB ring, which a
    // recorder sleeping 1 ms when idle would be lapped by, were it not waited for
    // a day of trades 1.44 s apart, no quiet spell: no input line makes more than a few
    // records (a long quiet spell, or a day's unfilled end, closes thousands of empty
    // 1 s candles at once, more than such a ring holds: no gate between lines helps)
    let input = dir.path().join("BTCUSDT-aggTrades-2024-03-05.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..60_000u64 {
        writeln!(
            file,
            "{},3500.{:02}000000,0.{:08},{},{},{},{},true",
            5_000 + i,
            i * 7919 % 100,
            1 + i * 37 % 900,
            20_000 + i,
            20_000 + i,
            1_709_596_800_000 + i * 1_440,
            i % 3 == 0
        )
        .unwrap();
    }
    drop(file);
    let shm = dir.path().join("shm");
    let archive = dir.path().join("archive");
    let out = mdpub(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--shm-dir",
        shm.to_str().unwrap(),
        "--capacity",
        "16384",
        "--archive",
        archive.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("will not fit"),
        "{}",
        text(&out.stderr)
    );
    // the replay waited for the recorder: every trade is in the archive, no gap
    let report = mdi_archive::verify_stream(&archive, "ticks").unwrap();
    assert!(report.sound() && report.gaps.is_empty(), "{report:?}");
    let mut reader =
        mdi_archive::ArchiveReader::open(&archive, "ticks", mdi_archive::ArchiveStart::Earliest)
            .unwrap();
    let mut trades = 0;
    while reader
        .poll(|r| {
            trades += u64::from(r.kind == RecordKind::TRADE.0);
            true
        })
        .unwrap()
        > 0
    {}
    assert_eq!(trades, 60_000);
    let klines = mdi_archive::verify_stream(&archive, "klines").unwrap();
    assert!(
        klines.sound() && klines.gaps.is_empty() && klines.records > 0,
        "{klines:?}"
    );
    // the ring itself kept only its end; without --archive the replay says what happens
    let out = mdpub(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--shm-dir",
        dir.path().join("shm2").to_str().unwrap(),
        "--capacity",
        "1048576",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("will not fit the rings"),
        "{}",
        text(&out.stderr)
    );
}
