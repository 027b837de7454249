//! What a subscriber delivers: events, zero-copy view events, marks, and exact
//! decimal accessors for trades.

use mdi_protocol::decimal::Decimal;
use mdi_protocol::records::Trade;
use mdi_protocol::ring::{Position, Seq, WriterState};
use mdi_protocol::view::{Record, RecordView};

/// Exact decimal accessors for trades.
pub trait TradeExt {
    /// The price as an exact decimal.
    fn price_decimal(&self) -> Decimal;
    /// The quantity as an exact decimal.
    fn qty_decimal(&self) -> Decimal;
}

impl TradeExt for Trade {
    fn price_decimal(&self) -> Decimal {
        Decimal::new(self.price, self.price_exponent)
    }

    fn qty_decimal(&self) -> Decimal {
        Decimal::new(self.qty, self.qty_exponent)
    }
}

/// What a subscriber delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A record, with the symbol its instrument id stands for (`None` if the stream has
    /// not shown the instrument's definition).
    Record {
        /// The stream.
        stream: &'static str,
        /// Its sequence number in the stream.
        seq: Seq,
        /// The record.
        record: Record,
        /// The instrument's symbol.
        symbol: Option<&'static str>,
    },
    /// Records `from_seq..to_seq` of `stream` will never be delivered (the writer lapped
    /// this reader, or a replica could not repair a gap): exactly `count` records.
    Lost {
        /// The stream.
        stream: &'static str,
        /// First lost sequence.
        from_seq: Seq,
        /// One past the last.
        to_seq: Seq,
        /// `to_seq - from_seq`.
        count: u64,
    },
    /// The stream's writer restarted (a new epoch): records after this are the new
    /// writer's.
    Restarted {
        /// The stream.
        stream: &'static str,
        /// The new epoch.
        epoch: u64,
        /// The epoch before.
        previous_epoch: u64,
        /// The new writer's process id.
        writer_pid: u32,
    },
    /// The stream's writer is gone: closed cleanly, or died. Reported once; reading goes
    /// on (a new writer starts a new epoch).
    WriterGone {
        /// The stream.
        stream: &'static str,
        /// Closed or dead.
        state: WriterState,
    },
    /// The ring file was replaced by a new ring of the same name; reading continues in
    /// the new one from its start.
    Replaced {
        /// The stream.
        stream: &'static str,
    },
}

/// The writers' positions at one moment ([`Subscriber::mark`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark(pub(super) Vec<Position>);

/// What [`Subscriber::poll_views`] delivers: records as zero-copy views, everything
/// else as the [`Event`] [`Subscriber::poll`] would give.
#[derive(Debug, Clone)]
pub enum ViewEvent<'a> {
    /// A record, read in place; the view is valid during the callback only.
    Record {
        /// The stream.
        stream: &'static str,
        /// Its sequence number in the stream.
        seq: Seq,
        /// The record.
        record: RecordView<'a>,
        /// The instrument's symbol (`None` if the stream has not shown its definition).
        symbol: Option<&'static str>,
    },
    /// Loss, restart, writer gone or ring replaced (never [`Event::Record`]).
    Notice(Event),
}

/// The owned event for a view event; `None` if the record does not copy out (counted
/// as undecodable by the caller).
pub(super) fn owned(event: ViewEvent<'_>) -> Option<Event> {
    match event {
        ViewEvent::Record {
            stream,
            seq,
            record,
            symbol,
        } => Record::from_view(record).ok().map(|record| Event::Record {
            stream,
            seq,
            record,
            symbol,
        }),
        ViewEvent::Notice(event) => Some(event),
    }
}
