//! The clocks mdi reads. The ring and protocol crates read none: their state machines
//! take `now` as an argument, and the drivers here and in the publisher pass it in.

/// The wall clock in ns since the Unix epoch — receive, publish and heartbeat times of
/// the publisher, the tools and the subscriber's reader registrations.
pub fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
