//! # mdi-tools
//!
//! The operator tools: `mdtail` (print streams), `mdrecv` (join reliable-UDP channels
//! into local replica rings) and, to come, `mdstat` (status, modelled on AeronStat).
//! [`tail`] renders records for `mdtail`; [`mdi_protocol::ring::inspect`] reads a ring's
//! header for monitoring.

pub use mdi_protocol;

pub mod tail;
