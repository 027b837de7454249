//! Latency histograms of the publisher — venue event → received, received → published —
//! with fixed buckets, cheap enough for the hot path: a writer thread counts into a
//! plain [`LocalHistogram`] (an index and two additions per observation) and adds it to
//! the process-wide [`FEED_LATENCY`] now and then; the metrics endpoint reads that at
//! scrape time (`mdi_feed_latency_seconds{stage=...}`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets: upper bounds 1 µs · 2^k for k = 0..BUCKETS-1 (1 µs to about 8.4 s), then +Inf.
pub const BUCKETS: usize = 24;

/// The bucket of a latency of `ns` (negative: the first).
#[inline]
pub fn bucket_of(ns: i64) -> usize {
    // ceil(ns / 1 µs) rounded up to a power of two: its exponent
    let micros = (ns.max(1) as u64).div_ceil(1_000);
    let exponent = (64 - (micros - 1).leading_zeros()) as usize;
    exponent.min(BUCKETS)
}

/// The upper bound of bucket `i` in seconds (`None`: +Inf).
pub fn bucket_bound_seconds(i: usize) -> Option<f64> {
    (i < BUCKETS).then(|| (1u64 << i) as f64 * 1e-6)
}

/// A histogram one thread counts into.
#[derive(Debug, Clone)]
pub struct LocalHistogram {
    counts: [u64; BUCKETS + 1],
    sum_ns: u64,
}

impl Default for LocalHistogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS + 1],
            sum_ns: 0,
        }
    }
}

impl LocalHistogram {
    /// Counts one latency.
    #[inline]
    pub fn record(&mut self, ns: i64) {
        self.counts[bucket_of(ns)] += 1;
        self.sum_ns = self.sum_ns.wrapping_add(ns.max(0) as u64);
    }

    /// Adds the counts to `shared` and starts again from zero.
    pub fn flush_into(&mut self, shared: &SharedHistogram) {
        let mut total = 0;
        for (i, n) in self.counts.iter_mut().enumerate() {
            if *n > 0 {
                shared.counts[i].fetch_add(*n, Ordering::Relaxed);
                total += *n;
                *n = 0;
            }
        }
        shared.count.fetch_add(total, Ordering::Relaxed);
        shared.sum_ns.fetch_add(self.sum_ns, Ordering::Relaxed);
        self.sum_ns = 0;
    }
}

/// A histogram of the whole process, read by the metrics endpoint.
#[derive(Debug)]
pub struct SharedHistogram {
    counts: [AtomicU64; BUCKETS + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl SharedHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BUCKETS + 1],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// `(count per bucket with its upper bound in seconds — +Inf last —, sum in seconds,
    /// count)`.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    bucket_bound_seconds(i).unwrap_or(f64::INFINITY),
                    n.load(Ordering::Relaxed),
                )
            })
            .collect();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        (buckets, sum, self.count.load(Ordering::Relaxed))
    }
}

impl Default for SharedHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The publisher's latencies: venue event time → receive time, receive → publish.
#[derive(Debug)]
pub struct FeedLatency {
    /// Venue event time to the frame's (packet's) arrival.
    pub exchange_to_receive: SharedHistogram,
    /// Arrival to the records' commit into the ring.
    pub receive_to_publish: SharedHistogram,
}

/// The process's feed latencies (only a publisher records into them).
pub static FEED_LATENCY: FeedLatency = FeedLatency {
    exchange_to_receive: SharedHistogram::new(),
    receive_to_publish: SharedHistogram::new(),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(-5), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(1_000), 0);
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(2_000), 1);
        assert_eq!(bucket_of(3_000), 2);
        assert_eq!(bucket_of(1_000_000), 10); // 1 ms ≤ 1.024 ms
        assert_eq!(bucket_of(i64::MAX), BUCKETS);
        for ns in [1i64, 999, 1_000, 1_001, 77_777, 5_000_000, 8_000_000_000] {
            let i = bucket_of(ns);
            let upper = bucket_bound_seconds(i).unwrap_or(f64::INFINITY);
            assert!(ns as f64 * 1e-9 <= upper + 1e-12, "{ns} in bucket {i}");
            if i > 0 {
                assert!(
                    ns as f64 * 1e-9 > bucket_bound_seconds(i - 1).unwrap(),
                    "{ns}"
                );
            }
        }
    }

    #[test]
    fn a_local_histogram_flushes_into_the_shared_one() {
        let shared = SharedHistogram::new();
        let mut local = LocalHistogram::default();
        for ns in [500, 1_500, 1_500, 10_000_000_000] {
            local.record(ns);
        }
        local.flush_into(&shared);
        local.flush_into(&shared); // nothing twice
        let (buckets, sum, count) = shared.snapshot();
        assert_eq!(count, 4);
        assert_eq!(buckets[0], (1e-6, 1));
        assert_eq!(buckets[1].1, 2);
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 1));
        assert!((sum - 10.0000035).abs() < 1e-9);
    }
}
