//! mdi's reliable-UDP protocol, modelled on Aeron: a sender replicates a ring log's
//! stream of records over UDP multicast or unicast; receivers rebuild byte-identical
//! replicas (same positions, same sequence numbers) and repair loss with NAKs.
//!
//! This module is sans-IO, like quinn-proto: no sockets, no threads, no clock. It holds
//! the wire format ([`frame`]) and the [`Sender`] and [`Receiver`] state machines, which
//! take `now` (monotonic ns) and are driven by `handle_datagram` / `poll_transmit` /
//! `poll_timeout` / `poll_event`, as in quinn-proto. The specification, with byte and state diagrams, is `docs/protocol.md`.

pub mod auth;
pub mod channel;
pub mod frame;
mod gaps;
pub mod receiver;
mod retransmit;
pub mod sender;

pub use auth::{ChannelKey, FrameOpener, FrameSealer, KeyError, OpenError, TRAILER_LEN};
pub use channel::{Channel, ChannelError, Endpoint};
pub use receiver::{Receiver, ReceiverConfig, ReceiverCounters, ReceiverEvent, ReplicaSink};
pub use sender::{ReceiverInfo, Sender, SenderConfig, SenderCounters, StreamSource};
