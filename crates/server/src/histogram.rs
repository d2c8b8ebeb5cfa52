//! Fixed-bucket latency histograms, cheap enough to observe on a hot path.
//!
//! A Prometheus histogram is a count per upper bound plus a sum, so an observation is "find
//! the bucket, add one, add the duration": here two relaxed atomic adds on a [`Histogram`]
//! shared by every thread, or two plain stores on a per-thread shard (see
//! `crate::metrics::requests`). Nothing takes a lock. The client library's own histogram
//! (`prometheus_client::metrics::histogram`) takes a lock per observation, which on the
//! per-request path would be the one lock every worker thread fights over.
//!
//! Bounds are explicit and in nanoseconds, so finding a bucket is integer comparisons; the
//! exporter turns them into seconds. This module depends on nothing else in the crate, so
//! that every layer (the AOF writer, the connection handler) can record into one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency buckets, in nanoseconds: 5 µs to 1 s. A request
/// served from memory takes a few microseconds, so the low end is finely divided; anything
/// past a second is a stall, and `+Inf` says how many.
pub const REQUEST_BOUNDS_NS: &[u64] = &[
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Upper bounds of the fsync and rewrite latency buckets, in nanoseconds: 100 µs (a
/// battery-backed cache) to 10 s (a saturated network disk).
pub const DISK_BOUNDS_NS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The index of the bucket that `ns` falls in: the first bound it does not exceed, or
/// `bounds.len()` for the `+Inf` bucket. A linear scan: most observations are in the first
/// few buckets, where it stops.
#[inline]
pub fn bucket(bounds: &[u64], ns: u64) -> usize {
    bounds
        .iter()
        .position(|&bound| ns <= bound)
        .unwrap_or(bounds.len())
}

/// Nanoseconds in `duration`, saturating (a duration past 584 years is not a latency).
#[inline]
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram shared by every thread that observes into it.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One counter per bound, then `+Inf`; not cumulative (the exporter adds them up).
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// An empty histogram with the given upper bounds (nanoseconds, ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, duration: Duration) {
        let ns = nanos(duration);
        self.counts[bucket(self.bounds, ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::empty(self.bounds);
        for (into, count) in snapshot.counts.iter_mut().zip(self.counts.iter()) {
            *into = count.load(Ordering::Relaxed);
        }
        snapshot.sum_ns = self.sum_ns.load(Ordering::Relaxed);
        snapshot
    }
}

/// A histogram's counts at one moment, as the exporter reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The upper bounds, nanoseconds.
    pub bounds: &'static [u64],
    /// Per bucket (not cumulative), `+Inf` last.
    pub counts: Vec<u64>,
    /// Sum of every observation, nanoseconds.
    pub sum_ns: u64,
}

impl Snapshot {
    /// No observations.
    pub fn empty(bounds: &'static [u64]) -> Snapshot {
        Snapshot {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_ns: 0,
        }
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, count)` per bucket, `+Inf` last, not cumulative: what
    /// `prometheus_client`'s encoder takes.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_on_a_bound_counts_in_that_bucket() {
        // Prometheus buckets are "less than or equal".
        assert_eq!(bucket(REQUEST_BOUNDS_NS, 5_000), 0);
        assert_eq!(bucket(REQUEST_BOUNDS_NS, 5_001), 1);
        assert_eq!(bucket(REQUEST_BOUNDS_NS, 0), 0);
        assert_eq!(
            bucket(REQUEST_BOUNDS_NS, 2_000_000_000),
            REQUEST_BOUNDS_NS.len()
        );
    }

    #[test]
    fn snapshot_has_counts_sum_and_bounds_in_seconds() {
        let h = Histogram::new(DISK_BOUNDS_NS);
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count(), 3);
        assert_eq!(s.sum_ns, 50_000 + 3_000_000 + 60_000_000_000);
        let buckets = s.buckets_seconds();
        assert_eq!(buckets.len(), DISK_BOUNDS_NS.len() + 1);
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[5], (0.005, 1));
        assert_eq!(buckets[DISK_BOUNDS_NS.len()], (f64::INFINITY, 1));
    }
}
