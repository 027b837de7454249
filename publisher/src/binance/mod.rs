//! Binance: frames as they arrive over the WebSocket ([`frame`]), the local order book
//! kept from diff depth and REST snapshots ([`book`]), and the live connections
//! ([`live`]).

pub mod book;
pub mod frame;
pub mod live;
