//! Exchange multicast feeds: NASDAQ TotalView-ITCH 5.0 carried on MoldUDP64.
//!
//! - [`message`]: every ITCH 5.0 message type, decoded in place;
//! - [`mold`]: MoldUDP64 packets and the receiving session (sequence, gaps, re-requests);
//! - [`book`]: order books per stock from adds, executions, cancels, deletes, replaces;
//! - [`feed`]: messages to mdi records (trades, quotes, book updates, instruments, status)
//!   in the same rings and schema as the Binance path;
//! - `dpdk` (feature `dpdk`): kernel-bypass receive through DPDK;
//! - [`live`]: live receive (socket multicast or DPDK) with re-requests;
//! - [`pcap`]: pcap files and the Ethernet / IPv4 / UDP framing in them;
//! - [`sim`]: a synthetic feed (`mdfeedsim`);
//! - [`venue`]: the venue's side live: multicast sender and re-request server.

pub mod book;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod feed;
pub mod live;
pub mod message;
pub mod mold;
pub mod pcap;
pub mod replay;
pub mod sim;
pub mod venue;
