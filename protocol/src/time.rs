//! Times as types. mdi has two clocks and they must not mix:
//!
//! - [`WallNs`]: the wall clock, ns since the Unix epoch (UTC) — what records carry
//!   (`ts_exchange_ns`, `ts_receive_ns`, `ts_publish_ns`), writer heartbeats, reader
//!   registrations, a start at a time. Comparable across processes and hosts (as far as
//!   their clocks agree); may step when the clock is set.
//! - [`MonoNs`]: a monotonic clock, ns from an origin its owner chose — what the
//!   reliable-UDP state machines run on (timers, NAK delays, RTTs). Never steps back;
//!   meaningless outside the process that read it.
//!
//! This crate reads neither clock: callers pass them in (`mdi-transport` reads them).
//! The record fields stay plain `i64`, as the schema has them.

use std::fmt;

/// Wall-clock time: ns since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallNs(pub i64);

/// Monotonic time: ns since an origin chosen by whoever reads the clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoNs(pub u64);

impl WallNs {
    /// The ns.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl MonoNs {
    /// The ns.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `ns` later (saturating).
    #[must_use]
    pub const fn plus(self, ns: u64) -> Self {
        Self(self.0.saturating_add(ns))
    }

    /// ns from `earlier` to `self`, 0 if `earlier` is not before.
    pub const fn since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl From<i64> for WallNs {
    fn from(ns: i64) -> Self {
        Self(ns)
    }
}

impl From<u64> for MonoNs {
    fn from(ns: u64) -> Self {
        Self(ns)
    }
}

impl fmt::Display for WallNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ns", self.0)
    }
}

impl fmt::Display for MonoNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ns", self.0)
    }
}
