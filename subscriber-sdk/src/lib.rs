//! # mdi-subscriber
//!
//! The library strategies link: open a stream, poll or block, typed zero-copy views,
//! symbol filters, start positions, loss and restart events, and the reliable-UDP receiver
//! that rebuilds a local ring log.
//!
//! Built so far: [`udp`], the reliable-UDP receiver that keeps local replica rings (and
//! the channel sockets the publisher's sender shares). Until the rest lands, read rings
//! with [`mdi_protocol::ring::RingReader`], which already delivers validated records,
//! exact loss events and epoch events.

pub use mdi_protocol;

pub mod udp;
