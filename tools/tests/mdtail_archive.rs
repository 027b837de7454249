//! `mdtail --archive`: history older than the ring, read from the tick archive and on
//! into the ring, printed exactly as mdtail prints a ring that still holds everything;
//! `--from` and `--to` by sequence and time.

use std::path::Path;
use std::process::{Command, Output};

use mdi_archive::{Fsync, Recorder, RecorderOptions};
use mdi_protocol::records::{InstrumentDefinition, Side, Trade};
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};

fn mdtail(shm: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdtail"))
        .arg("--shm-dir")
        .arg(shm)
        .args(args)
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

const T0: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00:00Z

#[test]
fn history_from_the_archive_prints_as_the_whole_ring_would() {
    let dir = tempfile::tempdir().unwrap();
    // the same records into a 64 KiB ring (wraps ~25 times; archived) and a ring that
    // holds them all (the reference)
    let small = ShmDir::new(dir.path().join("small"));
    let whole = ShmDir::new(dir.path().join("whole"));
    let archive = dir.path().join("archive");
    let mut rings = [
        RingWriter::create(
            &small,
            "ticks",
            &RingOptions::default().capacity(1 << 16).prefault(false),
        )
        .unwrap(),
        RingWriter::create(
            &whole,
            "ticks",
            &RingOptions::default().capacity(16 << 20).prefault(false),
        )
        .unwrap(),
    ];
    let options = RecorderOptions {
        segment_bytes: 1 << 20,
        fsync: Fsync::None,
        ..RecorderOptions::default()
    };
    let mut recorder = Recorder::open(&small, "ticks", &archive, options).unwrap();
    let n = 20_000u64;
    let definition = InstrumentDefinition {
        instrument_id: 1,
        price_exponent: -2,
        qty_exponent: -3,
        venue: "binance".into(),
        symbol: "BTCUSDT".into(),
        ..InstrumentDefinition::default()
    };
    for i in 0..n {
        // as the publisher does: the definition again every second of stream time
        if i % 1000 == 0 {
            for ring in &mut rings {
                ring.append_record(&InstrumentDefinition {
                    ts_publish_ns: T0 + i as i64 * 1_000_000,
                    ..definition.clone()
                })
                .unwrap();
            }
        }
        let trade = Trade {
            instrument_id: 1,
            price_exponent: -2,
            qty_exponent: -3,
            price: 4_200_000 + (i % 977) as i64,
            qty: 1 + (i % 31) as i64,
            aggressor: if i % 3 == 0 { Side::Sell } else { Side::Buy },
            trade_id: 1000 + i,
            venue_seq: i,
            ts_exchange_ns: T0 + i as i64 * 1_000_000,
            ts_receive_ns: T0 + i as i64 * 1_000_000 + 500,
            ts_publish_ns: T0 + i as i64 * 1_000_000 + 900,
            ..Trade::default()
        };
        for ring in &mut rings {
            ring.append_record(&trade).unwrap();
        }
        if i % 100 == 0 {
            recorder.poll(1 << 16).unwrap();
        }
    }
    while recorder.poll(1 << 16).unwrap() > 0 {}
    assert_eq!(recorder.counts().gaps, 0);
    let archive = archive.to_str().unwrap();
    let base = [
        "ticks",
        "--no-follow",
        "--format",
        "jsonl",
        "--kind",
        "trade",
    ];
    let want = lines(&mdtail(
        whole.path(),
        &[&base[..], &["--from", "earliest"]].concat(),
    ));
    assert_eq!(want.len() as u64, n);
    // without the archive the small ring has only its last records
    let ring_only = lines(&mdtail(
        small.path(),
        &[&base[..], &["--from", "earliest"]].concat(),
    ));
    assert!(ring_only.len() < 1000, "{}", ring_only.len());
    let got = lines(&mdtail(
        small.path(),
        &[&base[..], &["--from", "earliest", "--archive", archive]].concat(),
    ));
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the archive and the ring print the same lines");
    // a sequence range, and a time range (1 ms apart: records 5000..=5999)
    let seq_of = |line: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["seq"].as_u64().unwrap()
    };
    let first = seq_of(&want[3000]);
    let last = seq_of(&want[3099]);
    let got = lines(&mdtail(
        small.path(),
        &[
            &base[..],
            &[
                "--from",
                &format!("seq:{first}"),
                "--to",
                &format!("seq:{last}"),
                "--archive",
                archive,
            ],
        ]
        .concat(),
    ));
    assert_eq!(got, want[3000..3100]);
    let from = format!("time:{}ns", T0 + 5000 * 1_000_000 + 900);
    let to = format!("time:{}ns", T0 + 5999 * 1_000_000 + 900);
    let got = lines(&mdtail(
        small.path(),
        &[
            &base[..],
            &["--from", &from, "--to", &to, "--archive", archive],
        ]
        .concat(),
    ));
    assert_eq!(got, want[5000..6000]);
}
