//! # mdi-publisher
//!
//! The feed handler behind `mdpub`: venue adapters (Binance WebSocket + REST snapshot,
//! ITCH 5.0 over MoldUDP64 through sockets or DPDK, capture replay), the normalizer,
//! order-book builders, the K-line aggregator, ring writers and UDP senders.
//!
//! Built so far: [`udp`], serving rings over reliable UDP (`mdpub serve`); [`kline`],
//! Binance-exact K-lines from trades; [`replay`], data.binance.vision aggTrades and
//! trades files into `ticks` and `klines` rings (`mdpub replay`). The live venue
//! adapters are not built yet.

pub use mdi_protocol;

pub mod binance;
pub mod capture;
pub mod config;
pub mod demo;
pub mod itch;
pub mod kline;
pub mod normalize;
pub mod replay;
pub mod udp;
