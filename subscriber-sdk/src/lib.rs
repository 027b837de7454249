//! # mdi-subscriber
//!
//! The library strategies link: open streams with a builder, poll or block, records
//! decoded and resolved to symbols, start positions, and loss, restart and writer-exit
//! events ([`Subscriber`]), locally or (feature `udp`, default) from a reliable-UDP
//! channel whose replicas [`mdi_transport`] keeps.
//!
//! Records come two ways: [`Subscriber::poll`] / [`Subscriber::next`] copy them into
//! plain structs (exact fixed-point mantissas with their exponents; [`TradeExt`] gives
//! [`mdi_protocol::decimal::Decimal`]s), and [`Subscriber::poll_views`] hands over
//! zero-copy views ([`mdi_protocol::view`]) that read a field only when asked, with exact
//! decimal accessors. The raw ring reader, [`mdi_protocol::ring::RingReader`], stays
//! available for code that wants the bytes.

pub use mdi_protocol;
/// The clock and time parsing (always), and with the `udp` feature the reliable-UDP
/// receiver ([`mdi_transport::receiver::UdpReceiver`]) that keeps replica rings.
pub use mdi_transport;

pub mod book;
#[cfg(feature = "arrow")]
pub mod columns;
pub mod fields;
#[cfg(feature = "tokio")]
pub mod stream;
pub mod subscriber;

pub use book::{BookChange, Books, Level, OrderBook};

pub use subscriber::{
    Event, Mark, SubscribeError, Subscriber, SubscriberBuilder, TradeExt, ViewEvent, intern,
};

// What a strategy needs, at the root: no reaching into `mdi_protocol::...`.
pub use mdi_protocol::decimal::Decimal;
pub use mdi_protocol::records::{
    BookUpdate, FeedState, FeedStatus, InstrumentDefinition, InstrumentKind, Kline, PriceLevel,
    Quote, RecordKind, RecordKinds, Side, Trade,
};
pub use mdi_protocol::ring::{ShmDir, StartAt, WaitStrategy, WriterState};
#[cfg(feature = "udp")]
pub use mdi_protocol::udp::Channel;
pub use mdi_protocol::view::{Record, RecordView};
#[cfg(feature = "udp")]
pub use mdi_transport::receiver::{UdpReceiveError, UdpReceiver, UdpReceiverOptions};

/// The README's examples (ring log and subscriber), compiled as doctests here, where
/// both crates are in reach.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
