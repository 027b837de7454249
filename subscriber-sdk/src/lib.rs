//! # mdi-subscriber
//!
//! The library strategies link: open streams with a builder, poll or block, records
//! decoded and resolved to symbols, start positions, and loss, restart and writer-exit
//! events ([`Subscriber`]); and the reliable-UDP receiver that rebuilds a local ring log
//! ([`udp`]).
//!
//! Records come two ways: [`Subscriber::poll`] / [`Subscriber::next`] copy them into
//! plain structs (exact fixed-point mantissas with their exponents; [`TradeExt`] gives
//! [`mdi_protocol::decimal::Decimal`]s), and [`Subscriber::poll_views`] hands over
//! zero-copy views ([`mdi_protocol::view`]) that read a field only when asked, with exact
//! decimal accessors. The raw ring reader, [`mdi_protocol::ring::RingReader`], stays
//! available for code that wants the bytes.

pub use mdi_protocol;

/// The wall clock in ns since the Unix epoch — receive, publish and heartbeat times of
/// the publisher and the tools (the ring and protocol crates read no clock).
pub fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(feature = "tokio")]
pub mod stream;
pub mod subscriber;
pub mod time;
pub mod udp;

pub use subscriber::{
    Event, Kinds, Mark, Record, SubscribeError, Subscriber, SubscriberBuilder, TradeExt, ViewEvent,
};

/// The README's examples (ring log and subscriber), compiled as doctests here, where
/// both crates are in reach.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
