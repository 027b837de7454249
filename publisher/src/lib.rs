//! # mdi-publisher
//!
//! The feed handler behind `mdpub`: venue adapters — [`binance`] (live WebSocket with
//! REST snapshots, captures, history replay, the demo feed) and [`itch`] (ITCH 5.0 over
//! MoldUDP64 through sockets or DPDK, pcap replay) — the normalizer, order-book
//! builders, the K-line aggregator ([`kline`]) and the rings they write. Serving rings
//! over reliable UDP is `mdi-transport`'s sender; the ITCH protocol itself is `mdi-itch`.

pub use mdi_protocol;

pub mod binance;
pub mod config;
pub mod input;
pub mod itch;
pub mod kline;
pub mod pipeline;
