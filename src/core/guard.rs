//! The lease guard's rule: when a leader that has stopped running must be
//! made to let go.
//!
//! The guard is a small process that does not share the daemon's fate (a
//! stopped, starved or crashed event loop). The daemon tells it of every
//! lease extension and of the moment it lets go (its demote starts). If the
//! lease ends and the daemon has not let go within `slack`, the guard kills
//! the daemon and its hooks and runs the demote itself. This module holds
//! that rule; the process (`src/guard.rs`) and the simulator both run it.
//!
//! Architecture Invariant: no I/O and no clock here; time comes in as `now`
//! on the same monotonic clock as the lease ends the daemon reports.

use std::time::Duration;

use super::types::{Epoch, Time};

/// What the guard knows of the daemon's leadership.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// The epoch led and the instant its lease ends, while leading.
    lease: Option<(Epoch, Time)>,
    /// The demote hook of this epoch runs (its process exists) and has not
    /// been reported done. If the daemon dies meanwhile, its service
    /// manager may kill that hook with it: the guard demotes at once.
    demoting: Option<Epoch>,
}

/// What the guard must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardAction {
    /// Nothing before `Guard::deadline`.
    Wait,
    /// The lease of this epoch ended and the daemon did not let go: kill the
    /// daemon and its hooks, run the demote for this epoch, exit.
    Fence(Epoch),
}

impl Guard {
    /// A guard that watches no lease.
    pub fn new() -> Guard {
        Guard::default()
    }

    /// The daemon leads `epoch` with a lease that ends at `end` (renewed, or
    /// just won). A lease never shrinks within one epoch.
    pub fn renew(&mut self, epoch: Epoch, end: Time) {
        self.lease = match self.lease {
            Some((e, old)) if e == epoch => Some((e, old.max(end))),
            _ => Some((epoch, end)),
        };
    }

    /// The demote hook of `epoch` has started: the lease is no longer
    /// watched, but the hold is not over until `release`.
    pub fn demoting(&mut self, epoch: Epoch) {
        self.lease = None;
        self.demoting = Some(epoch);
    }

    /// The demote hook ended, or the daemon holds nothing.
    pub fn release(&mut self) {
        self.lease = None;
        self.demoting = None;
    }

    /// The daemon is gone (its pipe closed). A demote it had started may
    /// die with it: the epoch to demote at once, if any. A lease still
    /// watched is fenced at its deadline as usual (`poll`).
    pub fn daemon_gone(&self) -> Option<Epoch> {
        self.demoting
    }

    /// The epoch and lease end watched, if any.
    pub fn lease(&self) -> Option<(Epoch, Time)> {
        self.lease
    }

    /// When the guard must act if nothing changes: the lease end plus
    /// `slack`, the part of the lease margin left for the daemon's own timer.
    pub fn deadline(&self, slack: Duration) -> Option<Time> {
        self.lease.map(|(_, end)| end + slack)
    }

    /// The rule, at `now`.
    pub fn poll(&self, now: Time, slack: Duration) -> GuardAction {
        match self.lease {
            Some((epoch, end)) if now >= end + slack => GuardAction::Fence(epoch),
            _ => GuardAction::Wait,
        }
    }
}

/// The slack the guard gives the daemon past the lease end: half the lease
/// margin, so that the demote still starts inside the margin.
pub fn guard_slack(lease_margin: Duration) -> Duration {
    lease_margin / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fences_only_after_the_lease_end_plus_slack() {
        let slack = Duration::from_millis(10);
        let mut g = Guard::new();
        assert_eq!(g.poll(Time(u64::MAX / 2), slack), GuardAction::Wait);
        g.renew(Epoch(3), Time(100 * MS));
        let table = [
            (99 * MS, GuardAction::Wait),
            (100 * MS, GuardAction::Wait),
            (109 * MS, GuardAction::Wait),
            (110 * MS, GuardAction::Fence(Epoch(3))),
        ];
        for (now, want) in table {
            assert_eq!(g.poll(Time(now), slack), want, "at {now}");
        }
        assert_eq!(g.deadline(slack), Some(Time(110 * MS)));
    }

    #[test]
    fn a_demote_under_way_is_redone_only_if_the_daemon_dies() {
        let slack = Duration::ZERO;
        let mut g = Guard::new();
        g.renew(Epoch(4), Time(100));
        assert_eq!(g.daemon_gone(), None, "a lease waits for its deadline");
        g.demoting(Epoch(4));
        assert_eq!(
            g.poll(Time(1_000), slack),
            GuardAction::Wait,
            "the demote runs"
        );
        assert_eq!(g.deadline(slack), None);
        assert_eq!(
            g.daemon_gone(),
            Some(Epoch(4)),
            "redo a demote that may have died"
        );
        g.release();
        assert_eq!(g.daemon_gone(), None);
    }

    #[test]
    fn a_renewal_extends_and_a_release_disarms() {
        let slack = Duration::ZERO;
        let mut g = Guard::new();
        g.renew(Epoch(1), Time(100));
        g.renew(Epoch(1), Time(50));
        assert_eq!(g.lease(), Some((Epoch(1), Time(100))), "never shrinks");
        g.renew(Epoch(1), Time(200));
        assert_eq!(g.poll(Time(150), slack), GuardAction::Wait);
        g.release();
        assert_eq!(g.poll(Time(1_000), slack), GuardAction::Wait);
        g.renew(Epoch(2), Time(10));
        assert_eq!(g.poll(Time(10), slack), GuardAction::Fence(Epoch(2)));
    }
}
