//! A datagram loss generator for tests and demos of loss repair.

/// Drops datagrams at random, like Aeron's debug channel endpoints: for tests and demos
/// of loss repair (`--debug-drop-rate RATE --debug-seed N`).
#[derive(Debug, Clone)]
pub struct LossGenerator {
    rate: f64,
    state: u64,
    dropped: u64,
    dropped_bytes: u64,
}

impl LossGenerator {
    /// Drops each datagram with probability `rate` (0.0–1.0), deterministically per seed.
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate: rate.clamp(0.0, 1.0),
            state: seed,
            dropped: 0,
            dropped_bytes: 0,
        }
    }

    /// No loss.
    pub fn none() -> Self {
        Self::new(0.0, 0)
    }

    /// Should this datagram of `len` bytes be dropped?
    pub fn drop_next(&mut self, len: usize) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let drop = ((z >> 11) as f64 / (1u64 << 53) as f64) < self.rate;
        self.dropped += u64::from(drop);
        if drop {
            self.dropped_bytes += len as u64;
        }
        drop
    }

    /// Bytes of the datagrams dropped so far.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
