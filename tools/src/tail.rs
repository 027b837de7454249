//! What `mdtail` prints: every record kind as fields with exact decimals, rendered as a
//! table, JSON lines or CSV. Field names and meanings: `docs/formats/mdtail.md`.

use std::io::{self, Write};

use mdi_protocol::records::{RecordError, RecordKind, RecordKinds};
use mdi_protocol::ring::Seq;
use mdi_protocol::view::RecordView;
use mdi_subscriber::fields::{Field, Value, with_fields};

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

/// The kinds mdtail shows unless told: every market-data kind (instrument definitions
/// are used for symbols, not shown).
pub const DEFAULT_KINDS: RecordKinds = RecordKinds::MARKET_DATA;

/// Parses `--kind trade,quote,book,kline,status,instrument` (plurals too).
pub fn parse_kinds(list: &str) -> Result<RecordKinds, String> {
    list.parse()
}

/// Renders records (as the subscriber delivers them: filtered, with their symbols) to
/// `out`.
#[derive(Debug)]
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    colour: bool,
    /// CSV: kinds whose header row was written.
    headers: Vec<RecordKind>,
    printed: u64,
    /// Records whose text fields or enums did not read (counted, skipped).
    undecodable: u64,
}

impl<W: Write> Printer<W> {
    /// A printer in `format`; `colour` only matters for tables.
    pub fn new(out: W, format: Format, colour: bool) -> Self {
        Self {
            out,
            format,
            colour: colour && format == Format::Table,
            headers: Vec::new(),
            printed: 0,
            undecodable: 0,
        }
    }

    /// Records printed so far.
    pub fn printed(&self) -> u64 {
        self.printed
    }

    /// Records skipped because a field did not read.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Prints record `seq` of `stream`.
    pub fn record(
        &mut self,
        stream: &str,
        seq: Seq,
        symbol: Option<&str>,
        record: RecordView<'_>,
    ) -> io::Result<()> {
        match self.try_record(stream, seq.get(), symbol, record) {
            Ok(()) => Ok(()),
            Err(Failure::Io(e)) => Err(e),
            Err(Failure::Decode(e)) => {
                self.undecodable += 1;
                if self.undecodable <= 5 {
                    eprintln!(
                        "mdtail: {stream}: record {seq} ({}) does not decode: {e}",
                        record.kind().name()
                    );
                }
                Ok(())
            }
        }
    }

    fn try_record(
        &mut self,
        stream: &str,
        seq: u64,
        symbol: Option<&str>,
        record: RecordView<'_>,
    ) -> Result<(), Failure> {
        with_fields(stream, seq, symbol, record, |head, fields| {
            self.emit(
                head.kind,
                head.kind_name,
                head.symbol,
                head.instrument_id,
                head.at_ns,
                fields,
            )
        })??;
        Ok(())
    }

    fn emit(
        &mut self,
        kind: RecordKind,
        kind_name: &str,
        symbol: Option<&str>,
        instrument_id: u32,
        at_ns: i64,
        fields: &[Field<'_>],
    ) -> io::Result<()> {
        self.printed += 1;
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
        Value::Dec(d) => {
            out.write_all(b"\"")?;
            out.write_all(d.text().as_bytes())?;
            out.write_all(b"\"")
        }
        Value::Int(n) => out.write_all(itoa::Buffer::new().format(n).as_bytes()),
        Value::UInt(n) => out.write_all(itoa::Buffer::new().format(n).as_bytes()),
        Value::Bool(b) => out.write_all(if b { b"true" } else { b"false" }),
        Value::Levels(levels) => {
            out.write_all(b"[")?;
            for (i, (price, qty)) in levels.decimals().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(b"[\"")?;
                out.write_all(price.text().as_bytes())?;
                out.write_all(b"\",\"")?;
                out.write_all(qty.text().as_bytes())?;
                out.write_all(b"\"]")?;
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
        Value::Dec(d) => out.write_all(d.text().as_bytes()),
        Value::Levels(levels) => {
            for (i, (price, qty)) in levels.decimals().enumerate() {
                if i > 0 {
                    out.write_all(b";")?;
                }
                write!(out, "{qty}@{price}")?;
            }
            Ok(())
        }
        other => json_value(out, other),
    }
}

pub use mdi_transport::time::{parse_utc, utc_timestamp};

#[cfg(test)]
mod tests {
    use super::*;
    use mdi_protocol::records::{
        InstrumentDefinition, Kline, RecordEncoder, RecordType, Side, Trade,
    };

    /// Prints `record` as the subscriber would hand it over.
    fn print<T: RecordType>(p: &mut Printer<Vec<u8>>, seq: u64, symbol: Option<&str>, record: &T) {
        let bytes = RecordEncoder::new().encode(record).unwrap().to_vec();
        let mut words = vec![0u64; bytes.len() / 8];
        zerocopy::IntoBytes::as_mut_bytes(&mut words[..]).copy_from_slice(&bytes);
        let body = zerocopy::IntoBytes::as_bytes(&words[..]);
        RecordView::open(T::KIND, body, |view| {
            p.record("klines", Seq(seq), symbol, view)
        })
        .unwrap()
        .unwrap()
        .unwrap();
    }

    fn printer(format: Format) -> Printer<Vec<u8>> {
        Printer::new(Vec::new(), format, false)
    }

    fn btc() -> InstrumentDefinition {
        InstrumentDefinition {
            instrument_id: 1,
            price_exponent: -8,
            qty_exponent: -8,
            venue: "binance".into(),
            symbol: "BTCUSDT".into(),
            ..InstrumentDefinition::default()
        }
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
        print(&mut p, 2, Some("BTCUSDT"), &candle());
        let line = String::from_utf8(p.out).unwrap();
        let expected = concat!(
            r#"{"kind":"kline","symbol":"BTCUSDT","instrument_id":1,"stream":"klines","interval":"1s","#,
            r#""open_time_ms":1682244927000,"close_time_ms":1682244927999,"open":"27631.01000000","#,
            r#""high":"27631.01000000","low":"27631.00000000","close":"27631.00000000","#,
            r#""volume":"0.23040000","quote_volume":"6366.18251000","taker_buy_volume":"0.01100000","#,
            r#""taker_buy_quote_volume":"303.94111000","trades":2,"first_trade_id":3091449369,"#,
            r#""last_trade_id":3091449370,"closed":true,"revision":0,"spans_outage":false,"#,
            r#""ts_exchange_ns":0,"#,
            r#""ts_receive_ns":0,"ts_publish_ns":0,"seq":2}"#,
            "\n"
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn csv_has_a_header_per_kind_and_definitions_print_their_own_symbol() {
        let mut p = printer(Format::Csv);
        let trade = Trade {
            instrument_id: 1,
            price: 5,
            price_exponent: -1,
            qty: 1,
            aggressor: Side::Buy,
            ..Trade::default()
        };
        print(&mut p, 1, None, &btc());
        print(&mut p, 2, Some("BTCUSDT"), &trade);
        print(&mut p, 3, None, &trade);
        let text = String::from_utf8(p.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("kind,symbol,instrument_id,stream,venue,instrument_id"));
        assert!(
            lines[1].starts_with("instrument,BTCUSDT,1,klines,binance,1,-8,-8,"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("kind,symbol,instrument_id,stream,price,qty,side"));
        assert!(
            lines[3].starts_with("trade,BTCUSDT,1,klines,0.5,1,buy,"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].starts_with("trade,,1,klines,0.5,1,buy,"),
            "{}",
            lines[4]
        );
        assert_eq!(p.printed, 3);
    }

    #[test]
    fn kinds_parse_with_plurals_and_refuse_unknown_names() {
        assert_eq!(
            parse_kinds("trades,klines"),
            Ok(RecordKinds::only(RecordKind::TRADE).with(RecordKind::KLINE))
        );
        assert_eq!(parse_kinds("status"), parse_kinds("statuses"));
        assert_eq!(
            parse_kinds("instrument"),
            Ok(RecordKinds::only(RecordKind::INSTRUMENT_DEFINITION))
        );
        assert!(
            parse_kinds("bogus")
                .unwrap_err()
                .contains("unknown kind \"bogus\"")
        );
        assert!(parse_kinds(",").is_err());
    }

    #[test]
    fn a_status_with_an_unknown_state_is_counted_and_skipped() {
        use mdi_protocol::records::records_capnp::feed_status;
        let mut message = capnp::message::Builder::new_default();
        let mut status = message.init_root::<feed_status::Builder<'_>>();
        status.set_instrument_id(0);
        // a state a newer writer knows and this build does not: patch the enum's bits
        let bytes = capnp::serialize::write_message_to_words(&message);
        let mut words = vec![0u64; bytes.len() / 8];
        zerocopy::IntoBytes::as_mut_bytes(&mut words[..]).copy_from_slice(&bytes);
        // data section starts after the segment table (1 word) and root pointer (1 word);
        // the state is the UInt16 after instrumentId (bytes 4..6)
        words[2] |= 999 << 32;
        let mut p = printer(Format::Jsonl);
        let body = zerocopy::IntoBytes::as_bytes(&words[..]);
        RecordView::open(RecordKind::FEED_STATUS, body, |view| {
            p.record("ticks", Seq(1), None, view)
        })
        .unwrap()
        .unwrap()
        .unwrap();
        assert_eq!((p.printed, p.undecodable), (0, 1));
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

impl StreamStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            records: 0,
            window_records: 0,
            lost_events: 0,
            lost_records: 0,
            restarts: 0,
            latency: hdrhistogram::Histogram::new(3).expect("3 significant digits"),
        }
    }
}

impl Stats {
    /// Statistics for `streams` (in this order; others are added as they appear).
    pub fn new<S: AsRef<str>>(streams: impl IntoIterator<Item = S>) -> Self {
        Self {
            streams: streams
                .into_iter()
                .map(|name| StreamStats::new(name.as_ref()))
                .collect(),
        }
    }

    fn stream(&mut self, name: &str) -> &mut StreamStats {
        let at = match self.streams.iter().position(|s| s.name == name) {
            Some(at) => at,
            None => {
                self.streams.push(StreamStats::new(name));
                self.streams.len() - 1
            }
        };
        &mut self.streams[at]
    }

    /// A record of `stream`, published at `published_ns` (0: not stamped), read at
    /// `now_ns`.
    pub fn record(&mut self, stream: &str, published_ns: i64, now_ns: i64) {
        let s = self.stream(stream);
        s.records += 1;
        s.window_records += 1;
        if published_ns != 0 {
            // clocks of another host can be behind: a negative latency counts as 0
            let _ = s
                .latency
                .record((now_ns - published_ns).max(0).unsigned_abs().max(1));
        }
    }

    /// Records lost in `stream` (lapped, or unrepairable in a replica).
    pub fn lost(&mut self, stream: &str, count: u64) {
        let s = self.stream(stream);
        s.lost_events += 1;
        s.lost_records += count;
    }

    /// The writer of `stream` restarted.
    pub fn restarted(&mut self, stream: &str) {
        self.stream(stream).restarts += 1;
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
