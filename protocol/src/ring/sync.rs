//! Atomics facade: std's atomics normally, loom's under `cfg(loom)` so the claim/commit
//! protocol in [`super::log`] can be model-checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(not(loom))]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// A write-prefetch hint (see [`super::mapping::prefetch_for_write`]); nothing under loom.
#[cfg(not(loom))]
pub(crate) use super::mapping::prefetch_for_write;

#[cfg(loom)]
pub(crate) fn prefetch_for_write(_word: &AtomicU64) {}
