//! What `mdtail` prints: every record kind as fields with exact decimals, rendered as a
//! table, JSON lines or CSV. Field names and meanings: `docs/formats/mdtail.md`.

use std::collections::HashMap;
use std::io::{self, Write};

use mdi_protocol::decimal::Decimal;
use mdi_protocol::interval::Interval;
use mdi_protocol::records::{
    BookUpdate, FeedState, FeedStatus, InstrumentDefinition, Kline, PriceLevel, Quote, RecordError,
    RecordKind, Side, Trade, decode,
};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people (colour on a terminal).
    Table,
    /// One JSON object per record.
    Jsonl,
    /// Comma-separated values; a header row before the first record of each kind.
    Csv,
}

/// Which record kinds to show (names as `--kind` takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindFilter {
    bits: u8,
}

/// `--kind` names, in the order of [`KindFilter`]'s bits.
pub const KIND_NAMES: [&str; 6] = ["trade", "quote", "book", "kline", "status", "instrument"];

impl KindFilter {
    /// Every market-data kind; instrument definitions are used but not shown.
    pub const DEFAULT: Self = Self { bits: 0b01_1111 };

    /// Parses `trade,quote,book,kline,status,instrument`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut bits = 0;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            // plurals too: trades, klines
            let at = KIND_NAMES
                .iter()
                .position(|&k| k == name || name.strip_suffix('s') == Some(k))
                .ok_or_else(|| {
                    format!(
                        "unknown kind {name:?} (expected some of {})",
                        KIND_NAMES.join(",")
                    )
                })?;
            bits |= 1 << at;
        }
        if bits == 0 {
            return Err("no kinds given".into());
        }
        Ok(Self { bits })
    }

    fn shows(self, kind: RecordKind) -> bool {
        let at = match kind {
            RecordKind::TRADE => 0,
            RecordKind::QUOTE => 1,
            RecordKind::BOOK_UPDATE => 2,
            RecordKind::KLINE => 3,
            RecordKind::FEED_STATUS => 4,
            RecordKind::INSTRUMENT_DEFINITION => 5,
            _ => return false,
        };
        self.bits & (1 << at) != 0
    }
}

/// What an instrument id stands for, learnt from instrument-definition records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instrument {
    symbol: String,
    venue: String,
}

/// One value of a record field.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    /// A string that may be unknown (JSON null, empty in CSV).
    MaybeStr(Option<&'a str>),
    Dec(Decimal),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Levels(&'a [PriceLevel], i8, i8),
}

#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    name: &'static str,
    value: Value<'a>,
    /// Shown in table mode.
    table: bool,
}

const fn f<'a>(name: &'static str, value: Value<'a>) -> Field<'a> {
    Field {
        name,
        value,
        table: false,
    }
}

const fn t<'a>(name: &'static str, value: Value<'a>) -> Field<'a> {
    Field {
        name,
        value,
        table: true,
    }
}

/// Counts of what a [`Printer`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrintCounts {
    /// Records printed.
    pub printed: u64,
    /// Records of mdi kinds that did not decode (counted, skipped).
    pub undecodable: u64,
}

/// Renders records to `out`, resolving instrument ids through the definitions it sees.
#[derive(Debug)]
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    colour: bool,
    kinds: KindFilter,
    symbols: Option<Vec<String>>,
    instruments: HashMap<u32, Instrument>,
    /// CSV: kinds whose header row was written.
    headers: Vec<RecordKind>,
    counts: PrintCounts,
}

impl<W: Write> Printer<W> {
    /// A printer of `kinds` (for `symbols` only, if given) in `format`; `colour` only
    /// matters for tables.
    pub fn new(
        out: W,
        format: Format,
        colour: bool,
        kinds: KindFilter,
        symbols: Option<Vec<String>>,
    ) -> Self {
        Self {
            out,
            format,
            colour: colour && format == Format::Table,
            kinds,
            symbols,
            instruments: HashMap::new(),
            headers: Vec::new(),
            counts: PrintCounts::default(),
        }
    }

    /// What was printed and skipped so far.
    pub fn counts(&self) -> PrintCounts {
        self.counts
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Handles one record of `stream`; returns whether it was printed. Records of kinds
    /// mdtail does not know (application kinds) are passed over.
    pub fn record(
        &mut self,
        stream: &str,
        seq: u64,
        kind: RecordKind,
        body: &[u8],
    ) -> io::Result<bool> {
        match self.try_record(stream, seq, kind, body) {
            Ok(printed) => Ok(printed),
            Err(Failure::Io(e)) => Err(e),
            Err(Failure::Decode(e)) => {
                self.counts.undecodable += 1;
                if self.counts.undecodable <= 5 {
                    eprintln!(
                        "mdtail: {stream}: record {seq} ({}) does not decode: {e}",
                        kind.name()
                    );
                }
                Ok(false)
            }
        }
    }

    fn try_record(
        &mut self,
        stream: &str,
        seq: u64,
        kind: RecordKind,
        body: &[u8],
    ) -> Result<bool, Failure> {
        if kind == RecordKind::INSTRUMENT_DEFINITION {
            let d: InstrumentDefinition = decode(body)?;
            self.instruments.insert(
                d.instrument_id,
                Instrument {
                    symbol: d.symbol.clone(),
                    venue: d.venue.clone(),
                },
            );
            if !self.kinds.shows(kind) || !self.wanted(d.instrument_id) {
                return Ok(false);
            }
            let fields = [
                f("stream", Value::Str(stream)),
                t("venue", Value::Str(&d.venue)),
                t("instrument_id", Value::UInt(d.instrument_id.into())),
                t("price_exponent", Value::Int(d.price_exponent.into())),
                t("qty_exponent", Value::Int(d.qty_exponent.into())),
                t(
                    "tick_size",
                    Value::Dec(Decimal::new(d.tick_size, d.price_exponent)),
                ),
                t(
                    "step_size",
                    Value::Dec(Decimal::new(d.step_size, d.qty_exponent)),
                ),
                f("base_asset", Value::Str(&d.base_asset)),
                f("quote_asset", Value::Str(&d.quote_asset)),
                f("ts_receive_ns", Value::Int(d.ts_receive_ns)),
                f("ts_publish_ns", Value::Int(d.ts_publish_ns)),
                f("seq", Value::UInt(seq)),
            ];
            self.emit(
                kind,
                "instrument",
                d.instrument_id,
                d.ts_publish_ns,
                &fields,
            )?;
            return Ok(true);
        }
        if !self.kinds.shows(kind) {
            return Ok(false);
        }
        match kind {
            RecordKind::TRADE => {
                let r: Trade = decode(body)?;
                if !self.wanted(r.instrument_id) {
                    return Ok(false);
                }
                let fields = [
                    f("stream", Value::Str(stream)),
                    t("price", Value::Dec(Decimal::new(r.price, r.price_exponent))),
                    t("qty", Value::Dec(Decimal::new(r.qty, r.qty_exponent))),
                    t("side", Value::Str(side_name(r.aggressor))),
                    t("trade_id", Value::UInt(r.trade_id)),
                    f("first_trade_id", Value::UInt(r.first_trade_id)),
                    f("last_trade_id", Value::UInt(r.last_trade_id)),
                    f("aggregate", Value::Bool(r.is_aggregate)),
                    f("venue_seq", Value::UInt(r.venue_seq)),
                    f("ts_exchange_ns", Value::Int(r.ts_exchange_ns)),
                    f("ts_receive_ns", Value::Int(r.ts_receive_ns)),
                    f("ts_publish_ns", Value::Int(r.ts_publish_ns)),
                    f("seq", Value::UInt(seq)),
                ];
                let at = when(r.ts_exchange_ns, r.ts_receive_ns);
                self.emit(kind, "trade", r.instrument_id, at, &fields)?;
            }
            RecordKind::QUOTE => {
                let r: Quote = decode(body)?;
                if !self.wanted(r.instrument_id) {
                    return Ok(false);
                }
                let (pe, qe) = (r.price_exponent, r.qty_exponent);
                let fields = [
                    f("stream", Value::Str(stream)),
                    t("bid_qty", Value::Dec(Decimal::new(r.bid_qty, qe))),
                    t("bid_price", Value::Dec(Decimal::new(r.bid_price, pe))),
                    t("ask_price", Value::Dec(Decimal::new(r.ask_price, pe))),
                    t("ask_qty", Value::Dec(Decimal::new(r.ask_qty, qe))),
                    f("venue_seq", Value::UInt(r.venue_seq)),
                    f("ts_exchange_ns", Value::Int(r.ts_exchange_ns)),
                    f("ts_receive_ns", Value::Int(r.ts_receive_ns)),
                    f("ts_publish_ns", Value::Int(r.ts_publish_ns)),
                    f("seq", Value::UInt(seq)),
                ];
                let at = when(r.ts_exchange_ns, r.ts_receive_ns);
                self.emit(kind, "quote", r.instrument_id, at, &fields)?;
            }
            RecordKind::BOOK_UPDATE => {
                let r: BookUpdate = decode(body)?;
                if !self.wanted(r.instrument_id) {
                    return Ok(false);
                }
                let (pe, qe) = (r.price_exponent, r.qty_exponent);
                let fields = [
                    f("stream", Value::Str(stream)),
                    t("snapshot", Value::Bool(r.is_snapshot)),
                    t("bids", Value::Levels(&r.bids, pe, qe)),
                    t("asks", Value::Levels(&r.asks, pe, qe)),
                    f("first_update_id", Value::UInt(r.first_update_id)),
                    f("last_update_id", Value::UInt(r.last_update_id)),
                    f("venue_seq", Value::UInt(r.venue_seq)),
                    f("ts_exchange_ns", Value::Int(r.ts_exchange_ns)),
                    f("ts_receive_ns", Value::Int(r.ts_receive_ns)),
                    f("ts_publish_ns", Value::Int(r.ts_publish_ns)),
                    f("seq", Value::UInt(seq)),
                ];
                let at = when(r.ts_exchange_ns, r.ts_receive_ns);
                self.emit(kind, "book", r.instrument_id, at, &fields)?;
            }
            RecordKind::KLINE => {
                let r: Kline = decode(body)?;
                if !self.wanted(r.instrument_id) {
                    return Ok(false);
                }
                let (pe, qe) = (r.price_exponent, r.qty_exponent);
                let price = |m: i64| Value::Dec(Decimal::new(m, pe));
                // quote sums carry price + qty decimals; shown as the venue shows them,
                // trailing zeros beyond the finer of the two dropped (exact, never rounded)
                let quote = |m: i128| {
                    Value::Dec(Decimal::new(m, pe.saturating_add(qe)).trimmed_to(pe.min(qe)))
                };
                let interval = Interval::from_ms(r.interval_ms).map_or("?", Interval::name);
                let fields = [
                    f("stream", Value::Str(stream)),
                    t("interval", Value::Str(interval)),
                    f("open_time_ms", Value::Int(r.open_time_ms)),
                    f("close_time_ms", Value::Int(r.close_time_ms)),
                    t("open", price(r.open)),
                    t("high", price(r.high)),
                    t("low", price(r.low)),
                    t("close", price(r.close)),
                    t("volume", Value::Dec(Decimal::new(r.volume, qe))),
                    f("quote_volume", quote(r.quote_volume)),
                    f(
                        "taker_buy_volume",
                        Value::Dec(Decimal::new(r.taker_buy_volume, qe)),
                    ),
                    f("taker_buy_quote_volume", quote(r.taker_buy_quote_volume)),
                    t("trades", Value::UInt(r.trades)),
                    f("first_trade_id", Value::Int(r.first_trade_id)),
                    f("last_trade_id", Value::Int(r.last_trade_id)),
                    t("closed", Value::Bool(r.closed)),
                    f("spans_outage", Value::Bool(r.spans_outage)),
                    f("ts_exchange_ns", Value::Int(r.ts_exchange_ns)),
                    f("ts_receive_ns", Value::Int(r.ts_receive_ns)),
                    f("ts_publish_ns", Value::Int(r.ts_publish_ns)),
                    f("seq", Value::UInt(seq)),
                ];
                let at = r.open_time_ms.saturating_mul(1_000_000);
                self.emit(kind, "kline", r.instrument_id, at, &fields)?;
            }
            RecordKind::FEED_STATUS => {
                let r: FeedStatus = decode(body)?;
                if r.instrument_id != 0 && !self.wanted(r.instrument_id) {
                    return Ok(false);
                }
                let fields = [
                    f("stream", Value::Str(stream)),
                    f("venue", Value::Str(&r.venue)),
                    t("state", Value::Str(state_name(r.state))),
                    t("expected_seq", Value::UInt(r.expected_seq)),
                    t("received_seq", Value::UInt(r.received_seq)),
                    t("count", Value::UInt(r.count)),
                    t("detail", Value::Str(&r.detail)),
                    f("venue_seq", Value::UInt(r.venue_seq)),
                    f("ts_exchange_ns", Value::Int(r.ts_exchange_ns)),
                    f("ts_receive_ns", Value::Int(r.ts_receive_ns)),
                    f("ts_publish_ns", Value::Int(r.ts_publish_ns)),
                    f("seq", Value::UInt(seq)),
                ];
                self.emit(kind, "status", r.instrument_id, r.ts_receive_ns, &fields)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn wanted(&self, instrument_id: u32) -> bool {
        match &self.symbols {
            None => true,
            Some(symbols) => self
                .instruments
                .get(&instrument_id)
                .is_some_and(|i| symbols.iter().any(|s| s.eq_ignore_ascii_case(&i.symbol))),
        }
    }

    fn emit(
        &mut self,
        kind: RecordKind,
        kind_name: &str,
        instrument_id: u32,
        at_ns: i64,
        fields: &[Field<'_>],
    ) -> io::Result<()> {
        self.counts.printed += 1;
        let symbol = self
            .instruments
            .get(&instrument_id)
            .map(|i| i.symbol.as_str())
            .filter(|_| instrument_id != 0);
        let out = &mut self.out;
        match self.format {
            Format::Jsonl => {
                out.write_all(b"{\"kind\":\"")?;
                out.write_all(kind_name.as_bytes())?;
                out.write_all(b"\",\"symbol\":")?;
                json_value(out, Value::MaybeStr(symbol))?;
                out.write_all(b",\"instrument_id\":")?;
                out.write_all(itoa::Buffer::new().format(instrument_id).as_bytes())?;
                for field in fields {
                    out.write_all(b",\"")?;
                    out.write_all(field.name.as_bytes())?;
                    out.write_all(b"\":")?;
                    json_value(out, field.value)?;
                }
                out.write_all(b"}\n")
            }
            Format::Csv => {
                if !self.headers.contains(&kind) {
                    self.headers.push(kind);
                    out.write_all(b"kind,symbol,instrument_id")?;
                    for field in fields {
                        write!(out, ",{}", field.name)?;
                    }
                    out.write_all(b"\n")?;
                }
                out.write_all(kind_name.as_bytes())?;
                out.write_all(b",")?;
                csv_value(out, Value::MaybeStr(symbol))?;
                write!(out, ",{instrument_id}")?;
                for field in fields {
                    out.write_all(b",")?;
                    csv_value(out, field.value)?;
                }
                out.write_all(b"\n")
            }
            Format::Table => {
                let colour = if !self.colour {
                    ""
                } else {
                    table_colour(fields)
                };
                let fallback;
                let symbol = match symbol {
                    Some(s) => s,
                    None => {
                        fallback = format!("#{instrument_id}");
                        &fallback
                    }
                };
                write!(
                    out,
                    "{colour}{}  {symbol:<10} {kind_name:<6}",
                    utc_timestamp(at_ns)
                )?;
                for field in fields.iter().filter(|f| f.table) {
                    write!(out, "  {}=", field.name)?;
                    csv_value(out, field.value)?;
                }
                if !colour.is_empty() {
                    out.write_all(b"\x1b[0m")?;
                }
                out.write_all(b"\n")
            }
        }
    }
}

enum Failure {
    Io(io::Error),
    Decode(RecordError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<RecordError> for Failure {
    fn from(e: RecordError) -> Self {
        Self::Decode(e)
    }
}

/// The time a table row shows: the venue's, or the receive time where it has none.
fn when(exchange_ns: i64, receive_ns: i64) -> i64 {
    if exchange_ns != 0 {
        exchange_ns
    } else {
        receive_ns
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
        Side::Unknown => "unknown",
    }
}

fn state_name(state: FeedState) -> &'static str {
    match state {
        FeedState::Connected => "connected",
        FeedState::Disconnected => "disconnected",
        FeedState::Reconnecting => "reconnecting",
        FeedState::Gap => "gap",
        FeedState::ResyncStarted => "resync_started",
        FeedState::ResyncDone => "resync_done",
        FeedState::Halted => "halted",
        FeedState::Trading => "trading",
        FeedState::EndOfSession => "end_of_session",
        FeedState::Malformed => "malformed",
        FeedState::ValueOutOfRange => "value_out_of_range",
    }
}

/// Green for buys and rising candles, red for sells and falling ones, yellow for feed
/// status.
fn table_colour(fields: &[Field<'_>]) -> &'static str {
    const GREEN: &str = "\x1b[32m";
    const RED: &str = "\x1b[31m";
    let get = |name: &str| fields.iter().find(|f| f.name == name).map(|f| f.value);
    if let Some(Value::Str(side)) = get("side") {
        return match side {
            "buy" => GREEN,
            "sell" => RED,
            _ => "",
        };
    }
    if let (Some(Value::Dec(open)), Some(Value::Dec(close))) = (get("open"), get("close")) {
        return match close.mantissa.cmp(&open.mantissa) {
            std::cmp::Ordering::Greater => GREEN,
            std::cmp::Ordering::Less => RED,
            std::cmp::Ordering::Equal => "",
        };
    }
    if get("state").is_some() {
        return "\x1b[33m";
    }
    ""
}

fn json_value(out: &mut impl Write, value: Value<'_>) -> io::Result<()> {
    match value {
        Value::Str(s) | Value::MaybeStr(Some(s)) => json_string(out, s),
        Value::MaybeStr(None) => out.write_all(b"null"),
        Value::Dec(d) => write!(out, "\"{d}\""),
        Value::Int(n) => out.write_all(itoa::Buffer::new().format(n).as_bytes()),
        Value::UInt(n) => out.write_all(itoa::Buffer::new().format(n).as_bytes()),
        Value::Bool(b) => out.write_all(if b { b"true" } else { b"false" }),
        Value::Levels(levels, pe, qe) => {
            out.write_all(b"[")?;
            for (i, level) in levels.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write!(
                    out,
                    "[\"{}\",\"{}\"]",
                    Decimal::new(level.price, pe),
                    Decimal::new(level.qty, qe)
                )?;
            }
            out.write_all(b"]")
        }
    }
}

fn json_string(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(b"\"")?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c < ' ' => "",
            _ => continue,
        };
        out.write_all(&s.as_bytes()[start..i])?;
        if escape.is_empty() {
            write!(out, "\\u{:04x}", u32::from(c))?;
        } else {
            out.write_all(escape.as_bytes())?;
        }
        start = i + c.len_utf8();
    }
    out.write_all(&s.as_bytes()[start..])?;
    out.write_all(b"\"")
}

fn csv_value(out: &mut impl Write, value: Value<'_>) -> io::Result<()> {
    match value {
        Value::Str(s) | Value::MaybeStr(Some(s)) => {
            if s.contains([',', '"', '\n', '\r']) {
                write!(out, "\"{}\"", s.replace('"', "\"\""))
            } else {
                out.write_all(s.as_bytes())
            }
        }
        Value::MaybeStr(None) => Ok(()),
        Value::Dec(d) => write!(out, "{d}"),
        Value::Levels(levels, pe, qe) => {
            for (i, level) in levels.iter().enumerate() {
                if i > 0 {
                    out.write_all(b";")?;
                }
                write!(
                    out,
                    "{}@{}",
                    Decimal::new(level.qty, qe),
                    Decimal::new(level.price, pe)
                )?;
            }
            Ok(())
        }
        other => json_value(out, other),
    }
}

/// `2024-01-01T00:00:10.123456Z` (µs; the civil-from-days algorithm of H. Hinnant).
pub fn utc_timestamp(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Parses `2024-01-01T00:00:10.123456Z` (or without fraction, `Z`, or the time: UTC)
/// to ns since the Unix epoch.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00"));
    let mut d = date.split('-');
    let (year, month, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = clock.split(':');
    let (hour, minute, second): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next().unwrap_or("0").parse().ok()?,
        t.next().unwrap_or("0").parse().ok()?,
    );
    if t.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if fraction.len() > 9 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    // days from the civil date (H. Hinnant), the inverse of `utc_timestamp`
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000_000).checked_add(nanos)
}

/// When a record happened, for `--from time:`: the venue's time, else the receive time;
/// a K-line's end. `None` for kinds without a time (instrument definitions).
pub fn record_time_ns(kind: RecordKind, body: &[u8]) -> Option<i64> {
    let either = |venue: i64, receive: i64| if venue != 0 { venue } else { receive };
    Some(match kind {
        RecordKind::TRADE => decode::<Trade>(body)
            .map(|r| either(r.ts_exchange_ns, r.ts_receive_ns))
            .ok()?,
        RecordKind::QUOTE => decode::<Quote>(body)
            .map(|r| either(r.ts_exchange_ns, r.ts_receive_ns))
            .ok()?,
        RecordKind::BOOK_UPDATE => decode::<BookUpdate>(body)
            .map(|r| either(r.ts_exchange_ns, r.ts_receive_ns))
            .ok()?,
        RecordKind::KLINE => decode::<Kline>(body)
            .map(|r| r.close_time_ms.saturating_mul(1_000_000))
            .ok()?,
        RecordKind::FEED_STATUS => decode::<FeedStatus>(body)
            .map(|r| either(r.ts_exchange_ns, r.ts_receive_ns))
            .ok()?,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdi_protocol::records::RecordEncoder;

    #[test]
    fn utc_times_parse_back() {
        for ns in [
            0,
            1_682_244_927_999_000_123,
            951_782_400_000_000_000,
            1_767_225_600_500_000_000,
        ] {
            let text = utc_timestamp(ns);
            // utc_timestamp keeps µs
            assert_eq!(parse_utc(&text), Some(ns / 1_000 * 1_000), "{text}");
        }
        assert_eq!(parse_utc("2024-01-01"), Some(1_704_067_200_000_000_000));
        assert_eq!(
            parse_utc("2024-01-01T00:00:10"),
            Some(1_704_067_210_000_000_000)
        );
        for bad in [
            "yesterday",
            "2024-13-01",
            "2024-01-01T25:00:00",
            "2024-01-01T00:00:00.1234567890",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    fn body<T: mdi_protocol::records::Record>(record: &T) -> Vec<u8> {
        RecordEncoder::new()
            .encode(record)
            .expect("encode")
            .to_vec()
    }

    fn printer(format: Format) -> Printer<Vec<u8>> {
        Printer::new(Vec::new(), format, false, KindFilter::DEFAULT, None)
    }

    fn btc() -> Vec<u8> {
        body(&InstrumentDefinition {
            instrument_id: 1,
            price_exponent: -8,
            qty_exponent: -8,
            venue: "binance".into(),
            symbol: "BTCUSDT".into(),
            ..InstrumentDefinition::default()
        })
    }

    /// BINANCE.md's closed BTCUSDT 1 s candle.
    fn candle() -> Kline {
        Kline {
            instrument_id: 1,
            price_exponent: -8,
            qty_exponent: -8,
            closed: true,
            interval_ms: 1_000,
            open_time_ms: 1_682_244_927_000,
            close_time_ms: 1_682_244_927_999,
            open: 2_763_101_000_000,
            high: 2_763_101_000_000,
            low: 2_763_100_000_000,
            close: 2_763_100_000_000,
            volume: 23_040_000,
            quote_volume: 63_661_825_100_000_000_000,
            taker_buy_volume: 1_100_000,
            taker_buy_quote_volume: 3_039_411_100_000_000_000,
            trades: 2,
            first_trade_id: 3_091_449_369,
            last_trade_id: 3_091_449_370,
            ..Kline::default()
        }
    }

    #[test]
    fn klines_print_as_binance_writes_them() {
        let mut p = printer(Format::Jsonl);
        assert!(
            !p.record("klines", 1, RecordKind::INSTRUMENT_DEFINITION, &btc())
                .unwrap()
        );
        assert!(
            p.record("klines", 2, RecordKind::KLINE, &body(&candle()))
                .unwrap()
        );
        let line = String::from_utf8(p.out).unwrap();
        let expected = concat!(
            r#"{"kind":"kline","symbol":"BTCUSDT","instrument_id":1,"stream":"klines","interval":"1s","#,
            r#""open_time_ms":1682244927000,"close_time_ms":1682244927999,"open":"27631.01000000","#,
            r#""high":"27631.01000000","low":"27631.00000000","close":"27631.00000000","#,
            r#""volume":"0.23040000","quote_volume":"6366.18251000","taker_buy_volume":"0.01100000","#,
            r#""taker_buy_quote_volume":"303.94111000","trades":2,"first_trade_id":3091449369,"#,
            r#""last_trade_id":3091449370,"closed":true,"spans_outage":false,"ts_exchange_ns":0,"#,
            r#""ts_receive_ns":0,"ts_publish_ns":0,"seq":2}"#,
            "\n"
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn symbols_and_kinds_filter() {
        let mut p = Printer::new(
            Vec::new(),
            Format::Csv,
            false,
            KindFilter::parse("trade").unwrap(),
            Some(vec!["btcusdt".into()]),
        );
        let trade = |id| {
            body(&Trade {
                instrument_id: id,
                price: 5,
                price_exponent: -1,
                qty: 1,
                aggressor: Side::Buy,
                ..Trade::default()
            })
        };
        // unknown instrument: not printed until its definition is seen
        assert!(!p.record("t", 1, RecordKind::TRADE, &trade(1)).unwrap());
        p.record("t", 2, RecordKind::INSTRUMENT_DEFINITION, &btc())
            .unwrap();
        assert!(p.record("t", 3, RecordKind::TRADE, &trade(1)).unwrap());
        assert!(!p.record("t", 4, RecordKind::TRADE, &trade(2)).unwrap());
        assert!(
            !p.record("t", 5, RecordKind::KLINE, &body(&candle()))
                .unwrap()
        );
        let text = String::from_utf8(p.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("kind,symbol,instrument_id,stream,price,qty,side"));
        assert!(
            lines[1].starts_with("trade,BTCUSDT,1,t,0.5,1,buy,"),
            "{}",
            lines[1]
        );
        assert!(KindFilter::parse("trades,klines").is_ok());
        assert_eq!(
            KindFilter::parse("status"),
            KindFilter::parse("statuses").or(KindFilter::parse("status"))
        );
        assert!(
            KindFilter::parse("status")
                .unwrap()
                .shows(RecordKind::FEED_STATUS)
        );
        assert!(KindFilter::parse("bogus").is_err());
    }

    #[test]
    fn undecodable_records_are_counted_and_skipped() {
        let mut p = printer(Format::Jsonl);
        assert!(!p.record("t", 1, RecordKind::TRADE, &[1, 2, 3]).unwrap());
        assert_eq!(p.counts().undecodable, 1);
        assert!(p.out.is_empty());
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        json_string(&mut out, "a\"b\\c\u{1}").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\u0001""#);
        let mut out = Vec::new();
        csv_value(&mut out, Value::Str("a,\"b\"")).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#""a,""b""""#);
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            utc_timestamp(1_682_244_927_999_000_123),
            "2023-04-23T10:15:27.999000Z"
        );
        assert_eq!(
            utc_timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}

/// The publish time a record carries (`None` for kinds without one, or 0).
pub fn publish_ns(kind: RecordKind, body: &[u8]) -> Option<i64> {
    let ns = match kind {
        RecordKind::TRADE => decode::<Trade>(body).ok()?.ts_publish_ns,
        RecordKind::QUOTE => decode::<Quote>(body).ok()?.ts_publish_ns,
        RecordKind::BOOK_UPDATE => decode::<BookUpdate>(body).ok()?.ts_publish_ns,
        RecordKind::KLINE => decode::<Kline>(body).ok()?.ts_publish_ns,
        RecordKind::FEED_STATUS => decode::<FeedStatus>(body).ok()?.ts_publish_ns,
        _ => return None,
    };
    (ns != 0).then_some(ns)
}

/// `mdtail --stats`: per stream, rates, losses and publish → read latency.
#[derive(Debug)]
pub struct Stats {
    streams: Vec<StreamStats>,
}

#[derive(Debug)]
struct StreamStats {
    name: String,
    records: u64,
    window_records: u64,
    lost_events: u64,
    lost_records: u64,
    restarts: u64,
    latency: hdrhistogram::Histogram<u64>,
}

impl Stats {
    /// Statistics for `streams`.
    pub fn new(streams: &[String]) -> Self {
        Self {
            streams: streams
                .iter()
                .map(|name| StreamStats {
                    name: name.clone(),
                    records: 0,
                    window_records: 0,
                    lost_events: 0,
                    lost_records: 0,
                    restarts: 0,
                    latency: hdrhistogram::Histogram::new(3).expect("3 significant digits"),
                })
                .collect(),
        }
    }

    /// A record of stream `index` read at `now_ns`.
    pub fn record(&mut self, index: usize, kind: RecordKind, body: &[u8], now_ns: i64) {
        let s = &mut self.streams[index];
        s.records += 1;
        s.window_records += 1;
        if let Some(published) = publish_ns(kind, body) {
            // clocks of another host can be behind: a negative latency counts as 0
            let _ = s
                .latency
                .record((now_ns - published).max(0).unsigned_abs().max(1));
        }
    }

    /// Records lost in stream `index` (lapped, or unrepairable in a replica).
    pub fn lost(&mut self, index: usize, count: u64) {
        let s = &mut self.streams[index];
        s.lost_events += 1;
        s.lost_records += count;
    }

    /// The writer of stream `index` restarted.
    pub fn restarted(&mut self, index: usize) {
        self.streams[index].restarts += 1;
    }

    /// The report for the last `elapsed`; starts a new window.
    pub fn report(&mut self, elapsed: std::time::Duration) -> String {
        let mut out = format!(
            "{:<16} {:>12} {:>12} {:>8} {:>12} {:>8} {:>10} {:>10} {:>10}\n",
            "STREAM",
            "RECORDS",
            "RECORDS/S",
            "GAPS",
            "LOST",
            "RESTARTS",
            "P50 µs",
            "P99 µs",
            "MAX µs"
        );
        let secs = elapsed.as_secs_f64().max(1e-9);
        for s in &mut self.streams {
            let micros = |ns: u64| format!("{:.1}", ns as f64 / 1_000.0);
            let (p50, p99, max) = if s.latency.is_empty() {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            } else {
                (
                    micros(s.latency.value_at_quantile(0.5)),
                    micros(s.latency.value_at_quantile(0.99)),
                    micros(s.latency.max()),
                )
            };
            out.push_str(&format!(
                "{:<16} {:>12} {:>12.0} {:>8} {:>12} {:>8} {:>10} {:>10} {:>10}\n",
                s.name,
                s.records,
                s.window_records as f64 / secs,
                s.lost_events,
                s.lost_records,
                s.restarts,
                p50,
                p99,
                max
            ));
            s.window_records = 0;
            s.latency.reset();
        }
        out
    }
}
