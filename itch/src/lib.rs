//! # mdi-itch
//!
//! Exchange multicast feeds: NASDAQ TotalView-ITCH 5.0 carried on MoldUDP64, everything
//! that is ITCH and not mdi's records or rings (those are the publisher's ITCH adapter,
//! `mdi_publisher::itch`):
//!
//! - [`message`]: every ITCH 5.0 message type, decoded in place;
//! - [`mold`]: MoldUDP64 packets and the receiving session (sequence, gaps, re-requests);
//! - [`book`]: order books per stock from adds, executions, cancels, deletes, replaces;
//! - [`pcap`]: pcap files and the Ethernet / IPv4 / UDP framing in them;
//! - [`sim`]: a synthetic feed (`mdfeedsim`);
//! - `venue` (feature `venue`): the venue's side live — multicast sender and re-request
//!   server.
//!
//! No I/O but files (pcap) and, behind `venue`, the venue's sockets.

pub mod book;
pub mod message;
pub mod mold;
pub mod pcap;
pub mod sim;
#[cfg(feature = "venue")]
pub mod venue;
