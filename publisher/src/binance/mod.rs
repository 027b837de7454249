//! Binance: everything of mdi that is Binance's.
//!
//! - [`frame`]: frames as they arrive over the WebSocket;
//! - [`normalize`]: those frames (and trades from history files) to mdi records — exact
//!   fixed point, venue-id gaps, order books, K-lines — into the rings;
//! - [`book`]: the local order book kept from diff depth and REST snapshots;
//! - [`live`]: the live connections (TLS WebSocket, REST snapshots, exchangeInfo);
//! - [`capture`]: captures of the live feed, replayed through exactly the live path;
//! - [`history`]: data.binance.vision aggTrades and trades files through the same path;
//! - [`demo`]: the bundled synthetic capture `mdpub demo` loops.

pub mod book;
pub mod capture;
pub mod demo;
pub mod frame;
pub mod history;
pub mod live;
pub mod normalize;
