//! Replaying Binance history files (data.binance.vision aggTrades and trades CSV)
//! through the normal path: trades → `ticks` ring, K-lines → `klines` ring.
//!
//! Formats ([`HistoryFormat`]; spot files have no header row, futures files do):
//! `aggId,price,qty,firstId,lastId,timestamp,isBuyerMaker[,isBestMatch]` and
//! `id,price,qty,quoteQty,time,isBuyerMaker[,isBestMatch]`. Timestamps are
//! milliseconds, or microseconds in spot files from 2025 on (told apart by magnitude).
//! Prices and quantities are exact decimals at Binance's 8-decimal fallback exponents
//! unless the caller gives the instrument's own.

use std::io::BufRead;

use mdi_protocol::decimal::parse_i64;
use mdi_protocol::ring::WriteError;

use crate::binance::normalize::{Normalizer, TradeIn};

/// A line of an aggTrades file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The line is not a row of the file's format.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading the input failed.
    #[error("reading the input: {0}")]
    Io(#[from] std::io::Error),
    /// Writing a ring failed.
    #[error("writing a ring: {0}")]
    Ring(#[from] WriteError),
}

/// Which data.binance.vision file a history is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryFormat {
    /// `aggId,price,qty,firstId,lastId,timestamp,isBuyerMaker[,isBestMatch]`.
    AggTrades,
    /// `id,price,qty,quoteQty,time,isBuyerMaker[,isBestMatch]`.
    Trades,
}

impl HistoryFormat {
    /// Tells the format from a file name as data.binance.vision names its files
    /// (`BTCUSDT-aggTrades-2024-01-01.csv`, `BTCUSDT-trades-2024-01.zip`).
    pub fn from_file_name(name: &str) -> Option<Self> {
        if name.contains("-aggTrades-") {
            Some(Self::AggTrades)
        } else if name.contains("-trades-") {
            Some(Self::Trades)
        } else {
            None
        }
    }

    /// Tells the format from a header row (futures files have one), if it is one.
    pub fn from_header(line: &str) -> Option<Self> {
        let first = line.split(',').next()?.trim();
        match first {
            "agg_trade_id" | "aggId" | "a" => Some(Self::AggTrades),
            "id" | "trade_id" => Some(Self::Trades),
            _ => None,
        }
    }
}

/// One trade of a history file (an aggregate trade or a raw one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryTrade {
    /// Aggregate trade id, or the raw trade id.
    pub id: u64,
    /// Price mantissa.
    pub price: i64,
    /// Quantity mantissa.
    pub qty: i64,
    /// First raw trade id (= `id` for a raw trade).
    pub first_id: i64,
    /// Last raw trade id (= `id` for a raw trade).
    pub last_id: i64,
    /// Trade time in ms.
    pub time_ms: i64,
    /// Trade time in ns (as precise as the file).
    pub time_ns: i64,
    /// The buyer was the maker (the taker sold).
    pub buyer_is_maker: bool,
    /// An aggregate trade (aggTrades file).
    pub aggregate: bool,
}

/// Parses one row at the given exponents; a header row or blank line is `Ok(None)`.
pub fn parse_history_row(
    format: HistoryFormat,
    text: &str,
    price_exponent: i8,
    qty_exponent: i8,
) -> Result<Option<HistoryTrade>, String> {
    let text = text.trim();
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Ok(None);
    }
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    // (time, isBuyerMaker) columns and the fewest fields a row has
    let (time_at, maker_at, min_fields) = match format {
        HistoryFormat::AggTrades => (5, 6, 7),
        HistoryFormat::Trades => (4, 5, 6),
    };
    if fields.len() < min_fields || fields.len() > min_fields + 1 {
        return Err(format!(
            "{} fields, expected {min_fields} or {}",
            fields.len(),
            min_fields + 1
        ));
    }
    let int = |i: usize, what: &str| {
        fields[i]
            .parse::<i64>()
            .map_err(|e| format!("{what} {:?}: {e}", fields[i]))
    };
    let id = int(0, "id")?;
    let (first_id, last_id) = match format {
        HistoryFormat::AggTrades => (int(3, "firstId")?, int(4, "lastId")?),
        HistoryFormat::Trades => (id, id),
    };
    let buyer_is_maker = match fields[maker_at] {
        "true" | "True" | "TRUE" => true,
        "false" | "False" | "FALSE" => false,
        other => return Err(format!("isBuyerMaker {other:?} is not true/false")),
    };
    let stamp = int(time_at, "time")?;
    // microseconds from 2025 on: anything past year 5000 in ms is µs
    let (time_ms, time_ns) = if stamp > 100_000_000_000_000 {
        (stamp.div_euclid(1_000), stamp.saturating_mul(1_000))
    } else {
        (stamp, stamp.saturating_mul(1_000_000))
    };
    Ok(Some(HistoryTrade {
        id: id.unsigned_abs(),
        price: parse_i64(fields[1], price_exponent)
            .map_err(|e| format!("price {:?}: {e}", fields[1]))?,
        qty: parse_i64(fields[2], qty_exponent).map_err(|e| format!("qty {:?}: {e}", fields[2]))?,
        first_id,
        last_id,
        time_ms,
        time_ns,
        buyer_is_maker,
        aggregate: format == HistoryFormat::AggTrades,
    }))
}

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    /// Rows replayed.
    pub rows: u64,
    /// Rows skipped as malformed (counted, never fatal).
    pub malformed: u64,
    /// Stopped early (the open candles were left open).
    pub interrupted: bool,
}

/// Replays every row of `input` as trades of `normalizer`'s instrument `instrument`
/// (prices and quantities at the given exponents); malformed rows are counted and
/// skipped (the first few are logged with their line numbers). `pace` is called with each trade's exchange time
/// (ns) before it is written — it may sleep to replay in real time — and returns the
/// receive time to stamp, or `None` to stop early (an interrupt: the open candles are
/// then left open).
pub fn replay_history(
    input: impl BufRead,
    format: HistoryFormat,
    normalizer: &mut Normalizer,
    instrument: usize,
    price_exponent: i8,
    qty_exponent: i8,
    mut pace: impl FnMut(i64) -> Option<i64>,
) -> Result<ReplayCounts, ReplayError> {
    let mut counts = ReplayCounts::default();
    let mut last = None;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        // a header row comes first or not at all: a later line of words is malformed
        let parsed = if n > 0
            && line
                .trim_start()
                .starts_with(|c: char| c.is_ascii_alphabetic())
        {
            Err("not a row (a header comes only on the first line)".to_owned())
        } else {
            parse_history_row(format, &line, price_exponent, qty_exponent)
        };
        match parsed {
            Ok(Some(row)) => {
                let Some(now) = pace(row.time_ns) else {
                    counts.interrupted = true;
                    return Ok(counts);
                };
                let trade = TradeIn {
                    id: row.id,
                    first_id: row.first_id.unsigned_abs(),
                    last_id: row.last_id.unsigned_abs(),
                    price: row.price,
                    qty: row.qty,
                    time_ns: row.time_ns,
                    buyer_is_maker: row.buyer_is_maker,
                    aggregate: row.aggregate,
                };
                // the state a late joiner needs, per second of market time (ADR 0016): a
                // ring that wraps during the replay keeps its definitions
                normalizer.refresh_state(row.time_ns)?;
                normalizer.on_trade(instrument, &trade, now)?;
                counts.rows += 1;
                last = Some(row.time_ms);
            }
            Ok(None) => {}
            Err(reason) => {
                counts.malformed += 1;
                if counts.malformed <= 5 {
                    tracing::warn!(
                        "{}",
                        ReplayError::BadLine {
                            line: n as u64 + 1,
                            reason
                        }
                    );
                }
            }
        }
    }
    // data.binance.vision files cover whole UTC days: every candle up to the end of the
    // last trade's day is final (quiet ones at the end included)
    if let Some(ms) = last {
        const DAY_MS: i64 = 86_400_000;
        let end_ms = ms.div_euclid(DAY_MS) * DAY_MS + DAY_MS;
        // a minute of candles at a time, `pace` between (at the last trade's time: no
        // wait for the clock, but a reader such as the archive's recorder gets its turn
        // instead of a whole quiet afternoon at once)
        let mut through = ms;
        while through < end_ms {
            through = through.saturating_add(60_000).min(end_ms);
            normalizer.close_candles_before(through.saturating_mul(1_000_000))?;
            if pace(ms.saturating_mul(1_000_000)).is_none() {
                counts.interrupted = true;
                break;
            }
        }
    }
    Ok(counts)
}
