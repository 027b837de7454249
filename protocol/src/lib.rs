//! # mdi-protocol
//!
//! The formats every mdi component shares, with no sockets, threads or clock:
//!
//! - [`records`]: the Cap'n Proto records (trades, quotes, book updates, K-lines,
//!   instrument definitions, feed status) and their kinds;
//! - [`decimal`]: exact fixed-point decimals (i64/i128 mantissa + exponent);
//! - [`ring`]: the one-writer, many-reader ring log in shared memory.
//!
//! Time is always passed in (`now_ns`), never read here, so everything is testable
//! deterministically.

#[cfg(feature = "schema-codegen")]
pub mod codegen;
pub mod decimal;
pub mod interval;
pub mod records;
pub mod ring;
pub mod time;
#[cfg(not(loom))]
pub mod udp;
pub mod view;
