//! # mdi-subscriber
//!
//! The library strategies link: open a stream, poll or block, typed zero-copy views,
//! symbol filters, start positions, loss and restart events, and the reliable-UDP receiver
//! that rebuilds a local ring log.
//!
//! Not built yet: until it lands, read rings with [`mdi_protocol::ring::RingReader`],
//! which already delivers validated records, exact loss events and epoch events.

pub use mdi_protocol;
