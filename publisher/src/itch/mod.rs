//! The publisher's ITCH 5.0 adapter: NASDAQ TotalView-ITCH on MoldUDP64 into mdi's
//! records and rings. The protocol itself — messages, the MoldUDP64 session, books,
//! pcap, the simulated venue — is the `mdi-itch` crate.
//!
//! - [`feed`]: messages to mdi records (trades, quotes, book updates, instruments, status)
//!   in the same rings and schema as the Binance path;
//! - [`replay`]: pcap captures and plain ITCH files through the feed (`mdpub replay`);
//! - [`live`]: live receive (socket multicast or DPDK) with re-requests;
//! - `dpdk` (feature `dpdk`): kernel-bypass receive through DPDK.

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod feed;
pub mod live;
pub mod replay;
