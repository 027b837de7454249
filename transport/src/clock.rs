//! The clocks mdi reads. The ring and protocol crates read none: their state machines
//! take `now` as an argument, and the drivers here and in the publisher pass it in.

use mdi_protocol::time::{MonoNs, WallNs};

/// The wall clock in ns since the Unix epoch — receive, publish and heartbeat times of
/// the publisher, the tools and the subscriber's reader registrations.
pub fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wall clock as a [`WallNs`] (heartbeats, registrations, starts at a time).
pub fn wall_now() -> WallNs {
    WallNs(wall_clock_ns())
}

/// A monotonic clock counting from its start: the `now` the reliable-UDP state machines
/// run on (one per driver; its values mean nothing to another process).
#[derive(Debug, Clone, Copy)]
pub struct MonoClock {
    origin: std::time::Instant,
}

impl MonoClock {
    /// A clock at 0 now.
    pub fn start() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }

    /// ns since the clock started.
    pub fn now(&self) -> MonoNs {
        MonoNs(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}
