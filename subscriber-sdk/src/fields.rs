//! Every record kind as named fields with exact values — the one list of field names
//! and meanings (`docs/formats/mdtail.md`) that `mdtail`'s JSON lines, CSV and table,
//! and the Python objects and columns all render. Values borrow the record's view:
//! nothing is copied that a renderer does not copy.

use mdi_protocol::decimal::Decimal;
use mdi_protocol::interval::Interval;
use mdi_protocol::records::{RecordError, RecordKind};
use mdi_protocol::view::{Levels, RecordView};

/// One value of a record field.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Text.
    Str(&'a str),
    /// Text that may be unknown (JSON null, empty in CSV).
    MaybeStr(Option<&'a str>),
    /// An exact decimal at the record's exponent.
    Dec(Decimal),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A flag.
    Bool(bool),
    /// Book levels (price, quantity).
    Levels(Levels<'a>),
}

/// A named field of a record.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// Its name, as `mdtail --format jsonl` writes it.
    pub name: &'static str,
    /// Its value.
    pub value: Value<'a>,
    /// Shown in `mdtail`'s table.
    pub table: bool,
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

/// What every record has before its fields: `kind`, `symbol`, `instrument_id`.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The record kind.
    pub kind: RecordKind,
    /// Its name (`trade`, `quote`, `book`, `kline`, `status`, `instrument`).
    pub kind_name: &'static str,
    /// The instrument's symbol, if the stream has named it (a definition names its own;
    /// a status of the whole feed has none).
    pub symbol: Option<&'a str>,
    /// The instrument id.
    pub instrument_id: u32,
    /// The time the record stands for (ns since the epoch; a K-line's open time).
    pub at_ns: i64,
}

/// The most fields any kind has (a K-line's).
pub const MAX_FIELDS: usize = 22;

/// Receives a record's head, then its fields one by one in the documented order: the
/// one list of fields, which [`with_fields`] collects into a slice and the columns
/// (`crate::columns`) write straight into typed columns. Called only once every value
/// of the record has read: a record that does not read reaches no sink.
pub trait FieldSink<'a> {
    /// The record's head, before its fields.
    fn head(&mut self, head: &Head<'a>);
    /// The next field.
    fn field(&mut self, field: Field<'a>);
}

/// Hands record `seq` of `stream` (with its `symbol`, as the subscriber resolved it) to
/// `render` as its head and fields, in the documented order. `Err` when a text field or
/// an enum does not read (the caller counts and skips the record).
pub fn with_fields<'a, R>(
    stream: &'a str,
    seq: u64,
    symbol: Option<&'a str>,
    record: RecordView<'a>,
    render: impl FnOnce(&Head<'a>, &[Field<'a>]) -> R,
) -> Result<R, RecordError> {
    struct Collect<'a> {
        head: Option<Head<'a>>,
        fields: [Field<'a>; MAX_FIELDS],
        len: usize,
    }
    impl<'a> FieldSink<'a> for Collect<'a> {
        fn head(&mut self, head: &Head<'a>) {
            self.head = Some(*head);
        }
        fn field(&mut self, field: Field<'a>) {
            if let Some(slot) = self.fields.get_mut(self.len) {
                *slot = field;
                self.len += 1;
            }
        }
    }
    let mut collect = Collect {
        head: None,
        fields: [f("", Value::Bool(false)); MAX_FIELDS],
        len: 0,
    };
    visit_fields(stream, seq, symbol, record, &mut collect)?;
    let head = collect.head.expect("every record has a head");
    Ok(render(&head, &collect.fields[..collect.len]))
}

/// Hands record `seq` of `stream` to `sink`: its head, then its fields in the documented
/// order (`docs/formats/mdtail.md`). `Err`, with nothing handed over, when a text field
/// or an enum does not read (the caller counts and skips the record).
#[inline(always)]
pub fn visit_fields<'a>(
    stream: &'a str,
    seq: u64,
    symbol: Option<&'a str>,
    record: RecordView<'a>,
    sink: &mut impl FieldSink<'a>,
) -> Result<(), RecordError> {
    let kind = record.kind();
    let instrument_id = record.instrument_id();
    let at_ns = record.time_ns().unwrap_or(0);
    let head = |kind_name, symbol, at_ns| Head {
        kind,
        kind_name,
        symbol,
        instrument_id,
        at_ns,
    };
    // what can fail is read first: a sink sees a whole record or nothing
    match record {
        RecordView::Instrument(d) => {
            let (venue, symbol) = (d.venue()?, d.symbol()?);
            let (base, quote) = (d.base_asset()?, d.quote_asset()?);
            sink.head(&head("instrument", Some(symbol), d.get_ts_publish_ns()));
            sink.field(f("stream", Value::Str(stream)));
            sink.field(t("venue", Value::Str(venue)));
            sink.field(t("instrument_id", Value::UInt(instrument_id.into())));
            sink.field(t(
                "price_exponent",
                Value::Int(d.get_price_exponent().into()),
            ));
            sink.field(t("qty_exponent", Value::Int(d.get_qty_exponent().into())));
            sink.field(t("tick_size", Value::Dec(d.tick_size())));
            sink.field(t("step_size", Value::Dec(d.step_size())));
            sink.field(f("base_asset", Value::Str(base)));
            sink.field(f("quote_asset", Value::Str(quote)));
            sink.field(f("ts_receive_ns", Value::Int(d.get_ts_receive_ns())));
            sink.field(f("ts_publish_ns", Value::Int(d.get_ts_publish_ns())));
            sink.field(f("seq", Value::UInt(seq)));
        }
        RecordView::Trade(r) => {
            sink.head(&head("trade", symbol, at_ns));
            sink.field(f("stream", Value::Str(stream)));
            sink.field(t("price", Value::Dec(r.price())));
            sink.field(t("qty", Value::Dec(r.qty())));
            sink.field(t("side", Value::Str(r.side().name())));
            sink.field(t("trade_id", Value::UInt(r.get_trade_id())));
            sink.field(f("first_trade_id", Value::UInt(r.get_first_trade_id())));
            sink.field(f("last_trade_id", Value::UInt(r.get_last_trade_id())));
            sink.field(f("aggregate", Value::Bool(r.get_is_aggregate())));
            sink.field(f("venue_seq", Value::UInt(r.get_venue_seq())));
            sink.field(f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())));
            sink.field(f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())));
            sink.field(f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())));
            sink.field(f("seq", Value::UInt(seq)));
        }
        RecordView::Quote(r) => {
            sink.head(&head("quote", symbol, at_ns));
            sink.field(f("stream", Value::Str(stream)));
            sink.field(t("bid_qty", Value::Dec(r.bid_qty())));
            sink.field(t("bid_price", Value::Dec(r.bid_price())));
            sink.field(t("ask_price", Value::Dec(r.ask_price())));
            sink.field(t("ask_qty", Value::Dec(r.ask_qty())));
            sink.field(f("venue_seq", Value::UInt(r.get_venue_seq())));
            sink.field(f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())));
            sink.field(f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())));
            sink.field(f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())));
            sink.field(f("seq", Value::UInt(seq)));
        }
        RecordView::Book(r) => {
            let (bids, asks) = (r.bids()?, r.asks()?);
            sink.head(&head("book", symbol, at_ns));
            sink.field(f("stream", Value::Str(stream)));
            sink.field(t("snapshot", Value::Bool(r.get_is_snapshot())));
            sink.field(t("bids", Value::Levels(bids)));
            sink.field(t("asks", Value::Levels(asks)));
            sink.field(f("first_update_id", Value::UInt(r.get_first_update_id())));
            sink.field(f("last_update_id", Value::UInt(r.get_last_update_id())));
            sink.field(f("venue_seq", Value::UInt(r.get_venue_seq())));
            sink.field(f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())));
            sink.field(f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())));
            sink.field(f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())));
            sink.field(f("seq", Value::UInt(seq)));
        }
        RecordView::Kline(r) => {
            let interval = r.interval().map_or("?", Interval::name);
            // a table row shows the candle's open time
            let at = r.get_open_time_ms().saturating_mul(1_000_000);
            sink.head(&head("kline", symbol, at));
            sink.field(f("stream", Value::Str(stream)));
            sink.field(t("interval", Value::Str(interval)));
            sink.field(f("open_time_ms", Value::Int(r.get_open_time_ms())));
            sink.field(f("close_time_ms", Value::Int(r.get_close_time_ms())));
            sink.field(t("open", Value::Dec(r.open())));
            sink.field(t("high", Value::Dec(r.high())));
            sink.field(t("low", Value::Dec(r.low())));
            sink.field(t("close", Value::Dec(r.close())));
            sink.field(t("volume", Value::Dec(r.volume())));
            sink.field(f("quote_volume", Value::Dec(r.quote_volume())));
            sink.field(f("taker_buy_volume", Value::Dec(r.taker_buy_volume())));
            sink.field(f(
                "taker_buy_quote_volume",
                Value::Dec(r.taker_buy_quote_volume()),
            ));
            sink.field(t("trades", Value::UInt(r.get_trades())));
            sink.field(f("first_trade_id", Value::Int(r.get_first_trade_id())));
            sink.field(f("last_trade_id", Value::Int(r.get_last_trade_id())));
            sink.field(t("closed", Value::Bool(r.get_closed())));
            // > 0: a correction of a final candle (a trade arrived late)
            sink.field(t("revision", Value::UInt(u64::from(r.get_revision()))));
            sink.field(f("spans_outage", Value::Bool(r.get_spans_outage())));
            sink.field(f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())));
            sink.field(f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())));
            sink.field(f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())));
            sink.field(f("seq", Value::UInt(seq)));
        }
        RecordView::Status(r) => {
            let (venue, state, detail) = (r.venue()?, r.state()?, r.detail()?);
            // the whole feed's status (instrument 0) names no symbol
            let symbol = symbol.filter(|_| instrument_id != 0);
            sink.head(&head("status", symbol, r.get_ts_receive_ns()));
            sink.field(f("stream", Value::Str(stream)));
            sink.field(f("venue", Value::Str(venue)));
            sink.field(t("state", Value::Str(state.name())));
            sink.field(t("expected_seq", Value::UInt(r.get_expected_seq())));
            sink.field(t("received_seq", Value::UInt(r.get_received_seq())));
            sink.field(t("count", Value::UInt(r.get_count())));
            sink.field(t("detail", Value::Str(detail)));
            sink.field(f("venue_seq", Value::UInt(r.get_venue_seq())));
            sink.field(f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())));
            sink.field(f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())));
            sink.field(f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())));
            sink.field(f("seq", Value::UInt(seq)));
        }
    }
    Ok(())
}

/// The head of a record as [`visit_fields`] gives it (for a caller that chooses where
/// a record goes before it takes its fields).
pub fn head_of<'a>(
    symbol: Option<&'a str>,
    record: RecordView<'a>,
) -> Result<Head<'a>, RecordError> {
    struct HeadOnly<'a>(Option<Head<'a>>);
    impl<'a> FieldSink<'a> for HeadOnly<'a> {
        fn head(&mut self, head: &Head<'a>) {
            self.0 = Some(*head);
        }
        fn field(&mut self, _: Field<'a>) {}
    }
    let mut sink = HeadOnly(None);
    visit_fields("", 0, symbol, record, &mut sink)?;
    Ok(sink.0.expect("every record has a head"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdi_protocol::records::{Kline, RecordEncoder, RecordType};

    fn fields_of<T: RecordType>(record: &T) -> Vec<&'static str> {
        let bytes = RecordEncoder::new().encode(record).unwrap().to_vec();
        let mut words = vec![0u64; bytes.len() / 8];
        zerocopy::IntoBytes::as_mut_bytes(&mut words[..]).copy_from_slice(&bytes);
        let body = zerocopy::IntoBytes::as_bytes(&words[..]);
        RecordView::open(T::KIND, body, |view| {
            with_fields("s", 1, None, view, |_, fields| {
                fields.iter().map(|f| f.name).collect::<Vec<_>>()
            })
        })
        .unwrap()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_kline_has_the_most_fields_and_every_kind_ends_with_seq() {
        let kline = fields_of(&Kline::default());
        assert_eq!(kline.len(), MAX_FIELDS);
        assert_eq!(kline.first(), Some(&"stream"));
        assert_eq!(kline.last(), Some(&"seq"));
    }
}
