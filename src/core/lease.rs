//! Lease arithmetic under bounded clock-rate drift.
//!
//! A follower that receives a leader's heartbeat at its local time `r` acks no
//! other claimant before local `r + dead_after`. If every clock runs at a rate
//! within `1 ± ρ` of real time, that promise lasts at least `dead_after / (1 + ρ)`
//! of real time from the receipt, and so from the heartbeat's send. The leader
//! measures its lease on its own clock from the send: `L` local lasts at most
//! `L / (1 - ρ)` real. The lease ends before the promise when
//!
//! ```text
//!     L <= dead_after * (1 - ρ) / (1 + ρ)
//! ```
//!
//! which is the exact bound; the brief's `dead_after * (1 - 2ρ)` is slightly
//! smaller, so also safe. A margin is then subtracted for timer lateness and
//! the time it takes to start the demote hook.

use std::time::Duration;

use super::types::Time;

const PPM: u128 = 1_000_000;

/// The longest lease that a promise of `dead_after` backs, less `margin`.
pub fn lease_len(dead_after: Duration, max_drift_ppm: u32, margin: Duration) -> Duration {
    let ppm = u128::from(max_drift_ppm.min(999_999));
    let nanos = dead_after.as_nanos() * (PPM - ppm) / (PPM + ppm);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).saturating_sub(margin)
}

/// The lease end backed by a quorum: the `quorum`-th latest of the members'
/// promise ends (each node's own included). `None` if fewer than `quorum`
/// promises are known.
pub fn lease_end(promise_ends: &mut [Time], quorum: usize) -> Option<Time> {
    if quorum == 0 || promise_ends.len() < quorum {
        return None;
    }
    promise_ends.sort_unstable_by(|a, b| b.cmp(a));
    Some(promise_ends[quorum - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn lease_len_table() {
        let table = [
            // dead_after, drift ppm, margin, lease
            (ms(300), 0, ms(0), Duration::from_nanos(300_000_000)),
            (ms(300), 10_000, ms(0), Duration::from_nanos(294_059_405)),
            (ms(300), 10_000, ms(20), Duration::from_nanos(274_059_405)),
            (ms(100), 10_000, ms(10), Duration::from_nanos(88_019_801)),
            (ms(10), 0, ms(20), Duration::ZERO),
        ];
        for (d, ppm, m, want) in table {
            assert_eq!(lease_len(d, ppm, m), want, "{d:?} {ppm} {m:?}");
        }
    }

    #[test]
    fn lease_never_outlives_the_weakest_promise() {
        // Leader clock fast by the bound, follower clock slow: the leader's
        // lease, in real time, must still end before the follower's promise.
        for ppm in [0u32, 100, 10_000, 50_000, 200_000] {
            let rho = f64::from(ppm) / 1e6;
            let dead_after = ms(300);
            let lease = lease_len(dead_after, ppm, Duration::ZERO).as_secs_f64();
            let lease_real_max = lease / (1.0 - rho);
            let promise_real_min = dead_after.as_secs_f64() / (1.0 + rho);
            assert!(lease_real_max <= promise_real_min + 1e-9, "ppm {ppm}");
            // And the brief's simpler formula is never longer than the exact bound.
            assert!(dead_after.as_secs_f64() * (1.0 - 2.0 * rho) <= lease + 1e-9);
        }
    }

    #[test]
    fn lease_end_takes_the_quorum_th_latest() {
        let t = |n| Time(n);
        assert_eq!(lease_end(&mut [t(5), t(9), t(7)], 2), Some(t(7)));
        assert_eq!(lease_end(&mut [t(5), t(9), t(7)], 3), Some(t(5)));
        assert_eq!(lease_end(&mut [t(5)], 2), None);
        assert_eq!(
            lease_end(&mut [t(1), t(2), t(3), t(4), t(5)], 3),
            Some(t(3))
        );
        assert_eq!(lease_end(&mut [], 0), None);
    }
}
