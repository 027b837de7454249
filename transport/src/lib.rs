//! # mdi-transport
//!
//! Everything of mdi that touches a UDP socket or a clock; `mdi-protocol` stays sans-IO
//! (its state machines take `now`), and this crate drives them.
//!
//! Always: [`clock`] (the wall clock) and [`time`] (times as people write them, on
//! `jiff`). With the `udp` feature (default):
//!
//! - [`socket`]: binding, joining a group, socket buffers with one sizing policy;
//! - [`batch`]: `recvmmsg` / `sendmmsg` batches;
//! - [`loss`]: the datagram loss generator for tests and demos;
//! - [`status`]: the per-stream counter files `mdstat` reads;
//! - [`sender`]: rings served over reliable UDP ([`sender::UdpSender`], [`sender::serve`]);
//! - [`receiver`]: a channel joined into replica rings ([`receiver::UdpReceiver`],
//!   [`receiver::BackgroundReceiver`]).

#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod latency;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "stat")]
pub mod stat;
pub mod time;

#[cfg(feature = "udp")]
pub mod batch;
#[cfg(feature = "udp")]
pub mod loss;
#[cfg(feature = "udp")]
pub mod receiver;
#[cfg(feature = "udp")]
pub mod sender;
#[cfg(feature = "udp")]
pub mod socket;
#[cfg(feature = "udp")]
pub mod status;

pub use clock::wall_clock_ns;
