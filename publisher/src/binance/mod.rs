//! Binance: frames as they arrive over the WebSocket ([`frame`]) and the local order
//! book kept from diff depth and REST snapshots ([`book`]).

pub mod book;
pub mod frame;
