//! mdi's reliable-UDP protocol, modelled on Aeron: a sender replicates a ring log's
//! stream of records over UDP multicast or unicast; receivers rebuild byte-identical
//! replicas (same positions, same sequence numbers) and repair loss with NAKs.
//!
//! This module is sans-IO, like quinn-proto: no sockets, no threads, no clock. It holds
//! the wire format ([`frame`]); the sender and receiver state machines that take `now`
//! build on it. The specification, with byte and state diagrams, is `docs/protocol.md`.

pub mod frame;
