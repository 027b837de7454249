//! # mdi-tools
//!
//! Home of the operator tools `mdtail` (viewer), `mdstat` (status, modelled on
//! AeronStat) and `mdrecv` (UDP-to-local-ring daemon). Not built yet;
//! [`mdi_protocol::ring::inspect`] already reads a ring's header for monitoring.

pub use mdi_protocol;
