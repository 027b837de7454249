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

/// A ring's data words indexed by byte position modulo their size (see
/// [`super::mapping::RingWords`]); under loom the same interface, bounds-checked.
#[cfg(not(loom))]
pub(crate) use super::mapping::RingWords;

#[cfg(loom)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingWords<'a> {
    words: &'a [AtomicU64],
}

#[cfg(loom)]
impl<'a> RingWords<'a> {
    pub fn new(words: &'a [AtomicU64]) -> Option<Self> {
        words.len().is_power_of_two().then_some(Self { words })
    }

    pub fn len(self) -> usize {
        self.words.len()
    }

    pub fn at(self, position: u64) -> &'a AtomicU64 {
        &self.words[(position / 8) as usize % self.words.len()]
    }

    pub fn span(self, position: u64, count: usize) -> &'a [AtomicU64] {
        let first = (position / 8) as usize % self.words.len();
        &self.words[first..first + count]
    }
}
