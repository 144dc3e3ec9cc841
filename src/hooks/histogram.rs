//! How long hook runs took, as a histogram with fixed buckets: what
//! `regent_hook_duration_seconds` shows. The scheduler records each
//! finished run here, beside its other counters.
//!
//! Architecture Invariant: a plain value. It reads no clock; durations come
//! in measured by the caller.

use std::time::Duration;

/// Upper bounds of the buckets, inclusive, in increasing order. From 10 ms
/// (a script that adds an address) to a minute (a database promote near a
/// long `timeout_ms`); 25 ms is the default demote budget, so a demote
/// that keeps within it shows in the buckets up to there.
pub const BUCKETS: [Duration; 12] = [
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// Run durations counted into [`BUCKETS`], with their total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Runs per bucket, not cumulative: `counts[i]` took more than
    /// `BUCKETS[i - 1]` and at most `BUCKETS[i]`; the last entry took longer
    /// than every bound.
    counts: [u64; BUCKETS.len() + 1],
    /// All recorded durations added up.
    sum: Duration,
}

impl DurationHistogram {
    /// Counts one run that took `took`.
    pub fn record(&mut self, took: Duration) {
        // The first bucket whose bound is not below `took`: bounds are inclusive.
        let i = BUCKETS.partition_point(|&bound| bound < took);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.sum = self.sum.saturating_add(took);
    }

    /// Runs recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0, |n, &c| n.saturating_add(c))
    }

    /// The recorded durations added up.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Each bucket's bound with the runs that took at most that long, in
    /// increasing order, then `None` (no bound: +Inf) with every run: the
    /// cumulative buckets of the Prometheus format.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        let bounds = BUCKETS.iter().copied().map(Some).chain([None]);
        bounds.zip(self.counts.iter().scan(0u64, |total, &c| {
            *total = total.saturating_add(c);
            Some(*total)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bounds_increase() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn empty_has_every_bucket_at_zero() {
        let h = DurationHistogram::default();
        let buckets: Vec<_> = h.cumulative().collect();
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
        assert!(buckets.iter().all(|&(_, n)| n == 0));
        assert_eq!(buckets.last(), Some(&(None, 0)));
        assert_eq!((h.count(), h.sum()), (0, Duration::ZERO));
    }

    #[test]
    fn bounds_are_inclusive_and_buckets_cumulative() {
        let mut h = DurationHistogram::default();
        // On a bound, just above it, below the first, beyond the last.
        for took in [ms(10), ms(11), ms(0), ms(2500), Duration::from_secs(61)] {
            h.record(took);
        }
        let at = |bound: Duration| {
            h.cumulative()
                .find(|&(b, _)| b == Some(bound))
                .map(|(_, n)| n)
                .unwrap_or_else(|| panic!("no bucket {bound:?}"))
        };
        assert_eq!(at(ms(10)), 2, "0 ms and 10 ms");
        assert_eq!(at(ms(25)), 3, "and 11 ms");
        assert_eq!(at(ms(1000)), 3);
        assert_eq!(at(ms(2500)), 4, "and 2.5 s");
        assert_eq!(at(Duration::from_secs(60)), 4, "61 s is beyond every bound");
        assert_eq!(h.cumulative().last(), Some((None, 5)));
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum(), ms(10 + 11 + 2500 + 61_000));
    }
}
