//! # mdi-tools
//!
//! The operator tools: `mdtail` (print streams), `mdstat` (status of every stream and its
//! registered readers, modelled on AeronStat) and `mdrecv` (join reliable-UDP channels
//! into local replica rings). [`tail`] renders records for `mdtail`; [`stat`] collects
//! and renders for `mdstat`.

pub use mdi_protocol;

pub mod chart;
pub mod stat;
pub mod tail;
