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
    Ok(match record {
        RecordView::Instrument(d) => {
            let fields = [
                f("stream", Value::Str(stream)),
                t("venue", Value::Str(d.venue()?)),
                t("instrument_id", Value::UInt(instrument_id.into())),
                t("price_exponent", Value::Int(d.get_price_exponent().into())),
                t("qty_exponent", Value::Int(d.get_qty_exponent().into())),
                t("tick_size", Value::Dec(d.tick_size())),
                t("step_size", Value::Dec(d.step_size())),
                f("base_asset", Value::Str(d.base_asset()?)),
                f("quote_asset", Value::Str(d.quote_asset()?)),
                f("ts_receive_ns", Value::Int(d.get_ts_receive_ns())),
                f("ts_publish_ns", Value::Int(d.get_ts_publish_ns())),
                f("seq", Value::UInt(seq)),
            ];
            let at = d.get_ts_publish_ns();
            render(&head("instrument", Some(d.symbol()?), at), &fields)
        }
        RecordView::Trade(r) => {
            let fields = [
                f("stream", Value::Str(stream)),
                t("price", Value::Dec(r.price())),
                t("qty", Value::Dec(r.qty())),
                t("side", Value::Str(r.side().name())),
                t("trade_id", Value::UInt(r.get_trade_id())),
                f("first_trade_id", Value::UInt(r.get_first_trade_id())),
                f("last_trade_id", Value::UInt(r.get_last_trade_id())),
                f("aggregate", Value::Bool(r.get_is_aggregate())),
                f("venue_seq", Value::UInt(r.get_venue_seq())),
                f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())),
                f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())),
                f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())),
                f("seq", Value::UInt(seq)),
            ];
            render(&head("trade", symbol, at_ns), &fields)
        }
        RecordView::Quote(r) => {
            let fields = [
                f("stream", Value::Str(stream)),
                t("bid_qty", Value::Dec(r.bid_qty())),
                t("bid_price", Value::Dec(r.bid_price())),
                t("ask_price", Value::Dec(r.ask_price())),
                t("ask_qty", Value::Dec(r.ask_qty())),
                f("venue_seq", Value::UInt(r.get_venue_seq())),
                f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())),
                f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())),
                f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())),
                f("seq", Value::UInt(seq)),
            ];
            render(&head("quote", symbol, at_ns), &fields)
        }
        RecordView::Book(r) => {
            let fields = [
                f("stream", Value::Str(stream)),
                t("snapshot", Value::Bool(r.get_is_snapshot())),
                t("bids", Value::Levels(r.bids()?)),
                t("asks", Value::Levels(r.asks()?)),
                f("first_update_id", Value::UInt(r.get_first_update_id())),
                f("last_update_id", Value::UInt(r.get_last_update_id())),
                f("venue_seq", Value::UInt(r.get_venue_seq())),
                f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())),
                f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())),
                f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())),
                f("seq", Value::UInt(seq)),
            ];
            render(&head("book", symbol, at_ns), &fields)
        }
        RecordView::Kline(r) => {
            let interval = r.interval().map_or("?", Interval::name);
            let fields = [
                f("stream", Value::Str(stream)),
                t("interval", Value::Str(interval)),
                f("open_time_ms", Value::Int(r.get_open_time_ms())),
                f("close_time_ms", Value::Int(r.get_close_time_ms())),
                t("open", Value::Dec(r.open())),
                t("high", Value::Dec(r.high())),
                t("low", Value::Dec(r.low())),
                t("close", Value::Dec(r.close())),
                t("volume", Value::Dec(r.volume())),
                f("quote_volume", Value::Dec(r.quote_volume())),
                f("taker_buy_volume", Value::Dec(r.taker_buy_volume())),
                f(
                    "taker_buy_quote_volume",
                    Value::Dec(r.taker_buy_quote_volume()),
                ),
                t("trades", Value::UInt(r.get_trades())),
                f("first_trade_id", Value::Int(r.get_first_trade_id())),
                f("last_trade_id", Value::Int(r.get_last_trade_id())),
                t("closed", Value::Bool(r.get_closed())),
                // > 0: a correction of a final candle (a trade arrived late)
                t("revision", Value::UInt(u64::from(r.get_revision()))),
                f("spans_outage", Value::Bool(r.get_spans_outage())),
                f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())),
                f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())),
                f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())),
                f("seq", Value::UInt(seq)),
            ];
            // a table row shows the candle's open time
            let at = r.get_open_time_ms().saturating_mul(1_000_000);
            render(&head("kline", symbol, at), &fields)
        }
        RecordView::Status(r) => {
            let fields = [
                f("stream", Value::Str(stream)),
                f("venue", Value::Str(r.venue()?)),
                t("state", Value::Str(r.state()?.name())),
                t("expected_seq", Value::UInt(r.get_expected_seq())),
                t("received_seq", Value::UInt(r.get_received_seq())),
                t("count", Value::UInt(r.get_count())),
                t("detail", Value::Str(r.detail()?)),
                f("venue_seq", Value::UInt(r.get_venue_seq())),
                f("ts_exchange_ns", Value::Int(r.get_ts_exchange_ns())),
                f("ts_receive_ns", Value::Int(r.get_ts_receive_ns())),
                f("ts_publish_ns", Value::Int(r.get_ts_publish_ns())),
                f("seq", Value::UInt(seq)),
            ];
            // the whole feed's status (instrument 0) names no symbol
            let symbol = symbol.filter(|_| instrument_id != 0);
            render(&head("status", symbol, r.get_ts_receive_ns()), &fields)
        }
    })
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
