//! Captures of a live feed, for replay through exactly the live path.
//!
//! One line per received frame: `<receive time ns> <frame text exactly as received>`.
//! Besides WebSocket frames a capture holds what else the live path consumed, so that a
//! replay rebuilds the same books and candles:
//!
//! - `<ns> snapshot:<SYMBOL> <REST depth body>` — an order-book snapshot;
//! - `<ns> feed:down <reason>` / `<ns> feed:up` — the connection dropped / came back;
//! - `<ns> instrument:<SYMBOL> <price exponent> <qty exponent>` — the exponents the live
//!   run used (from the config or exchangeInfo), so a replay uses the same.
//!
//! Files ending in `.zst` are zstd-compressed (written and read transparently).
//! Format: `docs/formats/capture.md`.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::Path;

use mdi_protocol::ring::WriteError;

use crate::binance::normalize::{InstrumentSpec, Normalizer};

/// One line of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureLine<'a> {
    /// A WebSocket frame.
    Frame {
        /// Receive time (ns).
        receive_ns: i64,
        /// The frame's text.
        text: &'a str,
    },
    /// A REST depth snapshot for `symbol`.
    Snapshot {
        /// Receive time (ns).
        receive_ns: i64,
        /// The symbol.
        symbol: &'a str,
        /// The response body.
        body: &'a str,
    },
    /// The connection dropped.
    FeedDown {
        /// When.
        receive_ns: i64,
        /// Why.
        reason: &'a str,
    },
    /// The connection is back.
    FeedUp {
        /// When.
        receive_ns: i64,
    },
    /// An instrument's exponents.
    Instrument {
        /// When recorded.
        receive_ns: i64,
        /// Symbol.
        symbol: &'a str,
        /// Price exponent.
        price_exponent: i8,
        /// Quantity exponent.
        qty_exponent: i8,
    },
}

impl CaptureLine<'_> {
    /// The receive time.
    pub fn receive_ns(&self) -> i64 {
        match *self {
            Self::Frame { receive_ns, .. }
            | Self::Snapshot { receive_ns, .. }
            | Self::FeedDown { receive_ns, .. }
            | Self::FeedUp { receive_ns }
            | Self::Instrument { receive_ns, .. } => receive_ns,
        }
    }
}

/// Parses one line (without its newline); `None` for a line that is not one.
pub fn parse_line(line: &str) -> Option<CaptureLine<'_>> {
    let (stamp, rest) = line.split_once(' ')?;
    let receive_ns = stamp.parse::<i64>().ok()?;
    if rest.starts_with('{') {
        return Some(CaptureLine::Frame {
            receive_ns,
            text: rest,
        });
    }
    if let Some(rest) = rest.strip_prefix("snapshot:") {
        let (symbol, body) = rest.split_once(' ')?;
        return Some(CaptureLine::Snapshot {
            receive_ns,
            symbol,
            body,
        });
    }
    if let Some(reason) = rest.strip_prefix("feed:down") {
        return Some(CaptureLine::FeedDown {
            receive_ns,
            reason: reason.trim_start(),
        });
    }
    if let Some(rest) = rest.strip_prefix("instrument:") {
        let mut parts = rest.split(' ');
        let symbol = parts.next().filter(|s| !s.is_empty())?;
        let price_exponent = parts.next()?.parse().ok()?;
        let qty_exponent = parts.next()?.parse().ok()?;
        return parts.next().is_none().then_some(CaptureLine::Instrument {
            receive_ns,
            symbol,
            price_exponent,
            qty_exponent,
        });
    }
    (rest == "feed:up").then_some(CaptureLine::FeedUp { receive_ns })
}

/// True if `first_line` looks like a capture line (a nanosecond stamp, a space, then
/// text), not a CSV history row.
pub fn looks_like_capture(first_line: &str) -> bool {
    parse_line(first_line.trim_end()).is_some()
}

/// Writes a capture, plain or zstd-compressed by the file name.
pub struct CaptureWriter {
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for CaptureWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter").finish_non_exhaustive()
    }
}

impl CaptureWriter {
    /// Creates `path` (`.zst`: compressed).
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = BufWriter::with_capacity(1 << 16, File::create(path)?);
        let out: Box<dyn Write + Send> = if path.extension().is_some_and(|e| e == "zst") {
            Box::new(zstd::Encoder::new(file, 3)?.auto_finish())
        } else {
            Box::new(file)
        };
        Ok(Self { out })
    }

    /// Records a frame exactly as received. A frame with a line break (never sent by
    /// Binance) would break the line format: refused.
    pub fn frame(&mut self, receive_ns: i64, text: &str) -> io::Result<()> {
        if text.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a frame with a line break cannot be captured line by line",
            ));
        }
        writeln!(self.out, "{receive_ns} {text}")
    }

    /// Records a REST depth snapshot (its body, on one line).
    pub fn snapshot(&mut self, receive_ns: i64, symbol: &str, body: &str) -> io::Result<()> {
        let body = body.replace(['\n', '\r'], "");
        writeln!(self.out, "{receive_ns} snapshot:{symbol} {body}")
    }

    /// Records a disconnect.
    pub fn feed_down(&mut self, receive_ns: i64, reason: &str) -> io::Result<()> {
        writeln!(
            self.out,
            "{receive_ns} feed:down {}",
            reason.replace('\n', " ")
        )
    }

    /// Records an instrument's exponents.
    pub fn instrument(&mut self, receive_ns: i64, spec: &InstrumentSpec) -> io::Result<()> {
        writeln!(
            self.out,
            "{receive_ns} instrument:{} {} {}",
            spec.symbol, spec.price_exponent, spec.qty_exponent
        )
    }

    /// Records a reconnect.
    pub fn feed_up(&mut self, receive_ns: i64) -> io::Result<()> {
        writeln!(self.out, "{receive_ns} feed:up")
    }

    /// Flushes buffered lines (and, on drop, finishes the zstd frame).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What a capture replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureCounts {
    /// Lines replayed.
    pub lines: u64,
    /// Lines that were not capture lines (skipped).
    pub bad_lines: u64,
    /// Stopped early.
    pub interrupted: bool,
}

/// Feeds a capture to `normalizer`, line by line, through the live path, on the
/// capture's own clock: records carry the recorded receive times, and a timer tick at
/// each line's time closes quiet candles as the live loop's timer did. `pace` gets each
/// line's receive time before it is replayed (it may sleep, to replay in real time) and
/// returns false to stop.
/// Whether a capture holds aggTrade frames (for `--kline-source auto`): a first pass
/// over its lines, stopping at the first one.
pub fn has_agg_trades(input: impl BufRead) -> std::io::Result<bool> {
    for line in input.lines() {
        let line = line?;
        if let Some(CaptureLine::Frame { text, .. }) = parse_line(&line)
            && (text.contains("\"e\":\"aggTrade\"") || text.contains("@aggTrade\""))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn replay_capture(
    input: impl BufRead,
    normalizer: &mut Normalizer,
    mut pace: impl FnMut(i64) -> bool,
) -> Result<CaptureCounts, ReplayCaptureError> {
    let mut counts = CaptureCounts::default();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let Some(parsed) = parse_line(&line) else {
            if !line.trim().is_empty() {
                counts.bad_lines += 1;
                if counts.bad_lines <= 5 {
                    tracing::warn!("capture line {}: not `<ns> <frame>`", n + 1);
                }
            }
            continue;
        };
        let now = parsed.receive_ns();
        if !pace(now) {
            counts.interrupted = true;
            return Ok(counts);
        }
        match parsed {
            CaptureLine::Frame { text, .. } => normalizer.on_frame(now, text)?,
            CaptureLine::Snapshot { symbol, body, .. } => {
                normalizer.on_snapshot(now, symbol, body)?;
            }
            CaptureLine::FeedDown { reason, .. } => normalizer.feed_down(now, reason)?,
            CaptureLine::FeedUp { .. } => normalizer.feed_up(now)?,
            CaptureLine::Instrument {
                symbol,
                price_exponent,
                qty_exponent,
                ..
            } => normalizer.define_instrument(
                &InstrumentSpec {
                    symbol: symbol.to_owned(),
                    price_exponent,
                    qty_exponent,
                },
                now,
            )?,
        }
        normalizer.on_timer(now)?;
        counts.lines += 1;
    }
    Ok(counts)
}

/// Replaying a capture failed (bad lines are not failures: they are counted).
#[derive(Debug, thiserror::Error)]
pub enum ReplayCaptureError {
    /// Reading the input failed.
    #[error("reading the capture: {0}")]
    Io(#[from] io::Error),
    /// Writing a ring failed.
    #[error("writing a ring: {0}")]
    Ring(#[from] WriteError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_roundtrip_through_a_compressed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.capture.zst");
        let mut w = CaptureWriter::create(&path).unwrap();
        w.frame(10, r#"{"e":"trade"}"#).unwrap();
        w.snapshot(
            11,
            "BTCUSDT",
            "{\"lastUpdateId\":1,\n\"bids\":[],\"asks\":[]}",
        )
        .unwrap();
        w.feed_down(12, "reset by peer").unwrap();
        w.feed_up(13).unwrap();
        w.instrument(
            14,
            &InstrumentSpec {
                symbol: "BTCUSDT".into(),
                price_exponent: -2,
                qty_exponent: -5,
            },
        )
        .unwrap();
        assert!(w.frame(15, "a\nb").is_err());
        drop(w);
        let text =
            String::from_utf8(zstd::decode_all(File::open(&path).unwrap()).unwrap()).unwrap();
        let lines: Vec<CaptureLine<'_>> = text.lines().map(|l| parse_line(l).unwrap()).collect();
        assert_eq!(
            lines,
            [
                CaptureLine::Frame {
                    receive_ns: 10,
                    text: r#"{"e":"trade"}"#
                },
                CaptureLine::Snapshot {
                    receive_ns: 11,
                    symbol: "BTCUSDT",
                    body: r#"{"lastUpdateId":1,"bids":[],"asks":[]}"#
                },
                CaptureLine::FeedDown {
                    receive_ns: 12,
                    reason: "reset by peer"
                },
                CaptureLine::FeedUp { receive_ns: 13 },
                CaptureLine::Instrument {
                    receive_ns: 14,
                    symbol: "BTCUSDT",
                    price_exponent: -2,
                    qty_exponent: -5
                },
            ]
        );
        assert!(looks_like_capture("1790649901913000000 {\"stream\":1}\n"));
        assert!(!looks_like_capture(
            "100,42000.1,0.5,1000,1001,1704067210000,true,true"
        ));
        assert_eq!(parse_line("12 what"), None);
        assert_eq!(parse_line("x {}"), None);
    }
}
