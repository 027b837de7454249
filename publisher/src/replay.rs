//! Replaying Binance history files (data.binance.vision aggTrades CSV) through the
//! normal path: trades → `ticks` ring, K-lines → `klines` ring.
//!
//! Format (no header row): `aggId,price,qty,firstId,lastId,timestamp,isBuyerMaker,
//! isBestMatch`; timestamps are milliseconds, or microseconds in spot files from 2025
//! on (told apart by magnitude). Prices and quantities are exact decimals at Binance's
//! 8-decimal fallback exponents unless the caller gives the instrument's own.

use std::io::BufRead;

use mdi_protocol::decimal::parse_i64;
use mdi_protocol::records::{InstrumentDefinition, Kline, Side, Trade};
use mdi_protocol::ring::{RingWriter, WriteError};

use crate::kline::{Candle, Interval, KlineBuilder, TradeTick};

/// A line of an aggTrades file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The line is not an aggTrades row.
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

/// One aggTrades row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggTradeRow {
    /// Aggregate trade id.
    pub agg_id: u64,
    /// Price mantissa.
    pub price: i64,
    /// Quantity mantissa.
    pub qty: i64,
    /// First raw trade id.
    pub first_id: i64,
    /// Last raw trade id.
    pub last_id: i64,
    /// Trade time in ms.
    pub time_ms: i64,
    /// Trade time in ns (as precise as the file).
    pub time_ns: i64,
    /// The buyer was the maker (the taker sold).
    pub buyer_is_maker: bool,
}

/// Parses one aggTrades row at the given exponents; a header row or blank line is
/// `Ok(None)`.
pub fn parse_agg_trade(
    text: &str,
    price_exponent: i8,
    qty_exponent: i8,
) -> Result<Option<AggTradeRow>, String> {
    let text = text.trim();
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Ok(None);
    }
    let fields: Vec<&str> = text.split(',').collect();
    if fields.len() < 7 {
        return Err(format!("{} fields, expected 7 or 8", fields.len()));
    }
    let int = |i: usize, what: &str| {
        fields[i]
            .trim()
            .parse::<i64>()
            .map_err(|e| format!("{what} {:?}: {e}", fields[i]))
    };
    let flag = |i: usize, what: &str| match fields[i].trim() {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        other => Err(format!("{what} {other:?} is not true/false")),
    };
    let stamp = int(5, "timestamp")?;
    // microseconds from 2025 on: anything past year 5000 in ms is µs
    let (time_ms, time_ns) = if stamp > 100_000_000_000_000 {
        (stamp.div_euclid(1_000), stamp.saturating_mul(1_000))
    } else {
        (stamp, stamp.saturating_mul(1_000_000))
    };
    Ok(Some(AggTradeRow {
        agg_id: int(0, "aggId")?.unsigned_abs(),
        price: parse_i64(fields[1].trim(), price_exponent)
            .map_err(|e| format!("price {:?}: {e}", fields[1]))?,
        qty: parse_i64(fields[2].trim(), qty_exponent)
            .map_err(|e| format!("qty {:?}: {e}", fields[2]))?,
        first_id: int(3, "firstId")?,
        last_id: int(4, "lastId")?,
        time_ms,
        time_ns,
        buyer_is_maker: flag(6, "isBuyerMaker")?,
    }))
}

/// The instrument replayed.
#[derive(Debug, Clone)]
pub struct Instrument {
    /// mdi instrument id.
    pub id: u32,
    /// Binance symbol.
    pub symbol: String,
    /// Price exponent.
    pub price_exponent: i8,
    /// Quantity exponent.
    pub qty_exponent: i8,
}

/// What a replay wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    /// Trade records.
    pub trades: u64,
    /// Kline records (closed candles).
    pub klines: u64,
    /// Rows skipped as malformed (counted, never fatal).
    pub malformed: u64,
}

/// Feeds aggTrades rows to a `ticks` and a `klines` ring.
#[derive(Debug)]
pub struct AggTradeReplay<'a> {
    instrument: Instrument,
    ticks: &'a mut RingWriter,
    klines: &'a mut RingWriter,
    builders: Vec<KlineBuilder>,
    counts: ReplayCounts,
}

impl<'a> AggTradeReplay<'a> {
    /// Starts a replay: writes the instrument definition to both rings.
    pub fn new(
        instrument: Instrument,
        intervals: &[Interval],
        ticks: &'a mut RingWriter,
        klines: &'a mut RingWriter,
    ) -> Result<Self, ReplayError> {
        let definition = InstrumentDefinition {
            instrument_id: instrument.id,
            price_exponent: instrument.price_exponent,
            qty_exponent: instrument.qty_exponent,
            venue: "binance".into(),
            symbol: instrument.symbol.clone(),
            ..InstrumentDefinition::default()
        };
        ticks.append_record(&definition)?;
        klines.append_record(&definition)?;
        Ok(Self {
            builders: intervals.iter().map(|&i| KlineBuilder::new(i)).collect(),
            instrument,
            ticks,
            klines,
            counts: ReplayCounts::default(),
        })
    }

    /// Replays one row: a Trade record, then the candles it closes.
    pub fn on_row(&mut self, row: &AggTradeRow, now_ns: i64) -> Result<(), ReplayError> {
        let i = &self.instrument;
        let trade = Trade {
            instrument_id: i.id,
            price_exponent: i.price_exponent,
            qty_exponent: i.qty_exponent,
            venue_seq: row.agg_id,
            ts_exchange_ns: row.time_ns,
            ts_receive_ns: now_ns,
            ts_publish_ns: now_ns,
            price: row.price,
            qty: row.qty,
            trade_id: row.agg_id,
            first_trade_id: row.first_id.unsigned_abs(),
            last_trade_id: row.last_id.unsigned_abs(),
            is_aggregate: true,
            aggressor: if row.buyer_is_maker {
                Side::Sell
            } else {
                Side::Buy
            },
        };
        self.ticks.append_record(&trade)?;
        self.counts.trades += 1;
        let tick = TradeTick {
            time_ms: row.time_ms,
            first_id: row.first_id,
            last_id: row.last_id,
            price: row.price,
            qty: row.qty,
            buyer_is_maker: row.buyer_is_maker,
        };
        let mut closed = Vec::new();
        for builder in &mut self.builders {
            builder.on_trade(&tick, &mut |c| closed.push(*c));
        }
        self.write_candles(&closed, row.time_ns, now_ns)
    }

    /// Ends the replay at `end_ms` (the file's end): candles whose interval is over are
    /// closed; the last, still open candle of each interval is not published as final.
    pub fn finish(mut self, end_ms: i64, now_ns: i64) -> Result<ReplayCounts, ReplayError> {
        let mut closed = Vec::new();
        for builder in &mut self.builders {
            builder.advance(end_ms, &mut |c| closed.push(*c));
        }
        self.write_candles(&closed, end_ms.saturating_mul(1_000_000), now_ns)?;
        Ok(self.counts)
    }

    /// Counts a malformed row (skipped).
    pub fn count_malformed(&mut self) {
        self.counts.malformed += 1;
    }

    fn write_candles(
        &mut self,
        candles: &[Candle],
        ts_exchange_ns: i64,
        now_ns: i64,
    ) -> Result<(), ReplayError> {
        for c in candles {
            let kline = Kline {
                instrument_id: self.instrument.id,
                price_exponent: self.instrument.price_exponent,
                qty_exponent: self.instrument.qty_exponent,
                closed: c.closed,
                spans_outage: c.spans_outage,
                venue_seq: c.last_trade_id.max(0).unsigned_abs(),
                ts_exchange_ns,
                ts_receive_ns: now_ns,
                ts_publish_ns: now_ns,
                interval_ms: c.interval.ms(),
                open_time_ms: c.open_time_ms,
                close_time_ms: c.close_time_ms,
                open: c.open,
                high: c.high,
                low: c.low,
                close: c.close,
                trades: c.trades,
                first_trade_id: c.first_trade_id,
                last_trade_id: c.last_trade_id,
                volume: c.volume,
                quote_volume: c.quote_volume,
                taker_buy_volume: c.taker_buy_volume,
                taker_buy_quote_volume: c.taker_buy_quote_volume,
            };
            self.klines.append_record(&kline)?;
            self.counts.klines += 1;
        }
        Ok(())
    }
}

/// Replays every row of `input` as fast as possible; malformed rows are counted and
/// skipped (the first few are logged with their line numbers).
pub fn replay_agg_trades(
    input: impl BufRead,
    mut replay: AggTradeReplay<'_>,
    mut now_ns: impl FnMut() -> i64,
) -> Result<ReplayCounts, ReplayError> {
    let (pe, qe) = (
        replay.instrument.price_exponent,
        replay.instrument.qty_exponent,
    );
    let mut last_ms = None;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        match parse_agg_trade(&line, pe, qe) {
            Ok(Some(row)) => {
                replay.on_row(&row, now_ns())?;
                last_ms = Some(row.time_ms);
            }
            Ok(None) => {}
            Err(reason) => {
                replay.count_malformed();
                if replay.counts.malformed <= 5 {
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
    match last_ms {
        // data.binance.vision files cover whole UTC days: every candle up to the end of
        // the last trade's day is final (quiet ones at the end included)
        Some(ms) => {
            const DAY_MS: i64 = 86_400_000;
            replay.finish(ms.div_euclid(DAY_MS) * DAY_MS + DAY_MS, now_ns())
        }
        None => Ok(replay.counts),
    }
}
