//! Decision latency → the `decision_latency_seconds` histogram (beside the request
//! flow, after the decision). Observed without a lock: each worker thread counts into
//! its own shard of atomics, and a scrape sums the shards. prometheus-client's
//! `Histogram` takes a mutex per observation, which the worker threads took in turn
//! on every decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};
use prometheus_client::metrics::histogram::exponential_buckets;

/// Upper bounds: 10 µs doubling 15 times (~160 ms), then +Inf. Cache hits sit in the
/// first buckets, JWKS refetch waits in the last.
const BOUNDS: usize = 15;
const FIRST_NS: u64 = 10_000;
use crate::counter::{SHARDS, shard};

/// One thread's counts, on cache lines of their own.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    buckets: [AtomicU64; BOUNDS + 1],
    sum_ns: AtomicU64,
}

/// The decision latency histogram.
pub struct Latency {
    shards: Box<[Shard]>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

/// The bucket of a latency: the first whose upper bound is at least `ns`.
fn bucket(ns: u64) -> usize {
    (0..BOUNDS).find(|&i| ns <= FIRST_NS << i).unwrap_or(BOUNDS)
}

impl Latency {
    /// Counts one decision's latency.
    pub fn observe(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let shard = &self.shards[shard()];
        shard.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The sums over every shard, as a Prometheus histogram (seconds).
    pub fn encode(&self, mut e: MetricEncoder) -> std::fmt::Result {
        // The bounds `Histogram::new(exponential_buckets(1e-5, 2.0, 15))` had (the
        // `le` labels dashboards already use), then +Inf.
        let mut buckets: Vec<(f64, u64)> = exponential_buckets(1e-5, 2.0, BOUNDS as u16)
            .chain(std::iter::once(f64::INFINITY))
            .map(|upper| (upper, 0))
            .collect();
        let mut sum_ns = 0u64;
        for s in self.shards.iter() {
            for (b, n) in buckets.iter_mut().zip(&s.buckets) {
                b.1 += n.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(s.sum_ns.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        e.encode_histogram::<NoLabelSet>(sum_ns as f64 / 1e9, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_first_upper_bound_at_or_above() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(10_000), 0);
        assert_eq!(bucket(10_001), 1);
        assert_eq!(bucket(20_000), 1);
        assert_eq!(bucket(FIRST_NS << 14), 14);
        assert_eq!(bucket((FIRST_NS << 14) + 1), BOUNDS);
        assert_eq!(bucket(u64::MAX), BOUNDS);
    }
}
