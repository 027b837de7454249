//! `mdpub demo`: a small bundled capture of Binance frames, replayed in a loop through
//! the live path with its clock and venue ids moved forward on every pass, so that
//! `mdtail` shows live-looking data on a machine with no network.
//!
//! The bundled capture (`data/demo.capture.zst`) is synthetic — a seeded random walk of
//! two symbols in Binance's exact frame formats (trade, bookTicker, diff depth, with a
//! REST snapshot per book) — made by [`generate`]; a test checks that the bundled file
//! is what `generate` makes, so the two cannot drift apart.

use std::io::{self, Write};

use serde_json::Value;

use crate::binance::capture::{CaptureLine, CaptureWriter, parse_line};

/// The bundled capture (zstd).
pub const BUNDLED: &[u8] = include_bytes!("../../data/demo.capture.zst");

/// Generator settings of the bundled capture.
pub const SEED: u64 = 20_261_121;
/// Its length in seconds.
pub const SECONDS: u64 = 120;
/// Its first receive time: 2026-01-01T00:00:00Z.
pub const START_NS: i64 = 1_767_225_600_000_000_000;

struct Walk {
    state: u64,
}

impl Walk {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Market {
    symbol: &'static str,
    stream: String,
    /// Mid price in ticks of 0.01.
    mid: i64,
    trade_id: u64,
    update_id: u64,
    last_diff_id: u64,
}

fn price(ticks: i64) -> String {
    format!("{}.{:02}000000", ticks / 100, ticks % 100)
}

fn qty(steps: u64) -> String {
    format!("{}.{:05}000", steps / 100_000, steps % 100_000)
}

/// Writes the demo capture: `seconds` of two symbols' trades, best bid/offer and diff
/// depth, starting at `start_ns`, from `seed`.
pub fn generate(seed: u64, seconds: u64, start_ns: i64, out: &mut CaptureWriter) -> io::Result<()> {
    // (receive time, snapshot symbol or "", text), written in time order at the end
    let mut lines: Vec<(i64, &'static str, String)> = Vec::new();
    let mut walk = Walk { state: seed | 1 };
    let mut markets = [
        Market {
            symbol: "BTCUSDT",
            stream: "btcusdt".into(),
            mid: 9_700_000,
            trade_id: 5_100_000_000,
            update_id: 70_000_000_000,
            last_diff_id: 70_000_000_000,
        },
        Market {
            symbol: "ETHUSDT",
            stream: "ethusdt".into(),
            mid: 310_000,
            trade_id: 2_400_000_000,
            update_id: 50_000_000_000,
            last_diff_id: 50_000_000_000,
        },
    ];
    let step_ns = 10_000_000; // 10 ms
    let steps = seconds * 100;
    for step in 0..steps {
        let now_ns = start_ns + (step * step_ns) as i64;
        let now_ms = now_ns / 1_000_000;
        for m in &mut markets {
            // a diff-depth event every 100 ms; the first one comes before the snapshot,
            // which then straddles it, as Binance's sync procedure expects
            if step % 10 == 0 {
                // diffs cover every update id, best-bid/offer changes included
                let first = m.last_diff_id + 1;
                let changes = 1 + walk.below(4);
                m.update_id += changes;
                m.last_diff_id = m.update_id;
                let mut bids = Vec::new();
                let mut asks = Vec::new();
                for _ in 0..changes {
                    let depth = 1 + walk.below(8) as i64;
                    let q = if walk.below(5) == 0 {
                        0
                    } else {
                        1 + walk.below(300_000)
                    };
                    if walk.below(2) == 0 {
                        bids.push(format!("[\"{}\",\"{}\"]", price(m.mid - depth), qty(q)));
                    } else {
                        asks.push(format!("[\"{}\",\"{}\"]", price(m.mid + depth), qty(q)));
                    }
                }
                let frame = format!(
                    r#"{{"stream":"{}@depth@100ms","data":{{"e":"depthUpdate","E":{now_ms},"s":"{}","U":{first},"u":{},"b":[{}],"a":[{}]}}}}"#,
                    m.stream,
                    m.symbol,
                    m.update_id,
                    bids.join(","),
                    asks.join(",")
                );
                lines.push((now_ns, "", frame));
                if step == 0 {
                    let levels = |side: i64| {
                        (1..=10)
                            .map(|d| {
                                format!(
                                    "[\"{}\",\"{}\"]",
                                    price(m.mid + side * d),
                                    qty(100_000 * d as u64)
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let body = format!(
                        r#"{{"lastUpdateId":{},"bids":[{}],"asks":[{}]}}"#,
                        first,
                        levels(-1),
                        levels(1)
                    );
                    lines.push((now_ns + 200_000_000, m.symbol, body));
                }
            }
            // trades: a few per second, in bursts
            if walk.below(100) < 8 {
                let burst = 1 + walk.below(3);
                for _ in 0..burst {
                    let delta = walk.below(5) as i64 - 2;
                    m.mid = (m.mid + delta).max(100);
                    m.trade_id += 1;
                    let maker = walk.below(2) == 0;
                    let frame = format!(
                        r#"{{"stream":"{}@trade","data":{{"e":"trade","E":{now_ms},"s":"{}","t":{},"p":"{}","q":"{}","T":{now_ms},"m":{maker},"M":true}}}}"#,
                        m.stream,
                        m.symbol,
                        m.trade_id,
                        price(m.mid),
                        qty(1 + walk.below(200_000)),
                    );
                    lines.push((now_ns + 150_000, "", frame));
                }
                m.update_id += 1;
                let frame = format!(
                    r#"{{"stream":"{}@bookTicker","data":{{"u":{},"s":"{}","b":"{}","B":"{}","a":"{}","A":"{}"}}}}"#,
                    m.stream,
                    m.update_id,
                    m.symbol,
                    price(m.mid - 1),
                    qty(1 + walk.below(500_000)),
                    price(m.mid + 1),
                    qty(1 + walk.below(500_000)),
                );
                lines.push((now_ns + 200_000, "", frame));
            }
        }
    }
    // a last diff covers the updates since the previous one, so that a pass's update ids
    // end where the next pass's begin
    let end_ns = start_ns + (steps * step_ns) as i64;
    for m in &markets {
        if m.update_id > m.last_diff_id {
            let frame = format!(
                r#"{{"stream":"{}@depth@100ms","data":{{"e":"depthUpdate","E":{},"s":"{}","U":{},"u":{},"b":[],"a":[]}}}}"#,
                m.stream,
                end_ns / 1_000_000,
                m.symbol,
                m.last_diff_id + 1,
                m.update_id
            );
            lines.push((end_ns, "", frame));
        }
    }
    lines.sort_by_key(|line| line.0);
    for (ns, snapshot, text) in lines {
        if snapshot.is_empty() {
            out.frame(ns, &text)?;
        } else {
            out.snapshot(ns, snapshot, &text)?;
        }
    }
    out.flush()
}

/// The bundled capture's lines.
pub fn bundled_lines() -> io::Result<Vec<String>> {
    let text = zstd::decode_all(BUNDLED)?;
    let text =
        String::from_utf8(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// Plays a capture in passes, each moved forward in time and in venue ids so that
/// every id sequence (trade ids, book update ids, per symbol) continues without a gap.
#[derive(Debug, Clone)]
pub struct Looper {
    /// Per (symbol, id family 't' or 'u'): last − first + 1 over the capture.
    spans: std::collections::HashMap<(String, char), u64>,
}

fn id_family(key: &str) -> char {
    if key == "t" { 't' } else { 'u' }
}

impl Looper {
    /// Learns the capture's id spans.
    pub fn new(lines: &[String]) -> Self {
        let mut ranges: std::collections::HashMap<(String, char), (u64, u64)> = Default::default();
        for line in lines {
            let Some(CaptureLine::Frame { text, .. }) = parse_line(line) else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let data = &value["data"];
            let symbol = data["s"].as_str().unwrap_or_default();
            for key in ["t", "u", "U"] {
                if let Some(id) = data[key].as_u64() {
                    let range = ranges
                        .entry((symbol.to_owned(), id_family(key)))
                        .or_insert((id, id));
                    range.0 = range.0.min(id);
                    range.1 = range.1.max(id);
                }
            }
        }
        Self {
            spans: ranges
                .into_iter()
                .map(|(k, (first, last))| (k, last - first + 1))
                .collect(),
        }
    }

    /// One capture line in pass `pass` (0 = as recorded), its times moved by `time_ns`;
    /// snapshots are left out after the first pass (the books stay synced). `None`:
    /// leave the line out.
    pub fn line(&self, line: &str, pass: u64, time_ns: i64) -> Option<String> {
        match parse_line(line)? {
            CaptureLine::Frame { receive_ns, text } => {
                let mut value: Value = serde_json::from_str(text).ok()?;
                let data = value.get_mut("data")?;
                let symbol = data["s"].as_str().unwrap_or_default().to_owned();
                let ms = time_ns / 1_000_000;
                for key in ["E", "T"] {
                    if let Some(t) = data[key].as_i64() {
                        data[key] = Value::from(t + ms);
                    }
                }
                for key in ["t", "u", "U"] {
                    if let Some(id) = data[key].as_u64() {
                        let span = self
                            .spans
                            .get(&(symbol.clone(), id_family(key)))
                            .copied()
                            .unwrap_or(0);
                        data[key] = Value::from(id + pass * span);
                    }
                }
                let mut out = Vec::with_capacity(text.len() + 24);
                write!(out, "{} ", receive_ns + time_ns).ok()?;
                serde_json::to_writer(&mut out, &value).ok()?;
                String::from_utf8(out).ok()
            }
            CaptureLine::Snapshot { .. } if pass > 0 => None,
            other => Some(format!(
                "{} {}",
                other.receive_ns() + time_ns,
                &line[line.find(' ')? + 1..]
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_capture_is_what_the_generator_makes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.capture");
        let mut out = CaptureWriter::create(&path).unwrap();
        generate(SEED, SECONDS, START_NS, &mut out).unwrap();
        drop(out);
        let generated = std::fs::read_to_string(&path).unwrap();
        let bundled = bundled_lines().unwrap();
        assert!(
            generated.lines().eq(bundled.iter().map(String::as_str)),
            "publisher/data/demo.capture.zst is stale: regenerate it with `cargo run -p mdi-publisher --bin mdpub -- demo --write-capture publisher/data/demo.capture.zst`"
        );
        assert!(bundled.len() > 5_000, "{} lines", bundled.len());
    }

    #[test]
    fn passes_move_times_and_ids_and_keep_sequences_gapless() {
        let lines = bundled_lines().unwrap();
        let looper = Looper::new(&lines);
        let hour = 3_600_000_000_000;
        let first_trade = lines.iter().find(|l| l.contains("@trade")).unwrap();
        let moved = looper.line(first_trade, 1, hour).unwrap();
        let (stamp, text) = moved.split_once(' ').unwrap();
        let (old_stamp, old_text) = first_trade.split_once(' ').unwrap();
        assert_eq!(
            stamp.parse::<i64>().unwrap(),
            old_stamp.parse::<i64>().unwrap() + hour
        );
        let (new, old): (Value, Value) = (
            serde_json::from_str(text).unwrap(),
            serde_json::from_str(old_text).unwrap(),
        );
        assert_eq!(
            new["data"]["T"].as_i64(),
            old["data"]["T"].as_i64().map(|t| t + 3_600_000)
        );
        assert_eq!(
            new["data"]["p"], old["data"]["p"],
            "prices are untouched strings"
        );
        // pass 1's first trade id follows pass 0's last, symbol by symbol
        let ids = |pass: u64, symbol: &str| -> Vec<u64> {
            lines
                .iter()
                .filter(|l| l.contains("@trade") && l.contains(symbol))
                .filter_map(|l| looper.line(l, pass, 0))
                .map(|l| {
                    let v: Value = serde_json::from_str(l.split_once(' ').unwrap().1).unwrap();
                    v["data"]["t"].as_u64().unwrap()
                })
                .collect()
        };
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            let (a, b) = (ids(0, symbol), ids(1, symbol));
            assert_eq!(a.last().unwrap() + 1, b[0], "{symbol}");
        }
        let snapshot = lines.iter().find(|l| l.contains(" snapshot:")).unwrap();
        assert!(looper.line(snapshot, 1, hour).is_none());
        assert_eq!(
            looper.line(snapshot, 0, 0).as_deref(),
            Some(snapshot.as_str())
        );
        let moved = looper.line(snapshot, 0, hour).unwrap();
        assert_eq!(
            moved.split_once(' ').unwrap().1,
            snapshot.split_once(' ').unwrap().1
        );
        // every moved frame still decodes (serde_json reorders the envelope's keys)
        for line in lines.iter().take(200) {
            if let Some(moved) = looper.line(line, 1, hour)
                && let Some(CaptureLine::Frame { text, .. }) = parse_line(&moved)
            {
                crate::binance::frame::parse(text).unwrap();
            }
        }
    }
}
