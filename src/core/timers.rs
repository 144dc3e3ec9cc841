//! The node's timers: which ones exist and when each fires next.
//!
//! `TimerTable` holds at most one deadline per `Timer`; the node sets and
//! clears them, `take_due` fires one, and `next` is what the node reports as
//! `next_timeout()`.
//!
//! Architecture Invariant: the table decides nothing. It never reads a clock
//! (every call takes `now` or a deadline) and knows nothing of what a timer
//! means; the node does.

use super::types::Time;

/// The node's timers; `next_timeout` is the earliest set one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    Heartbeat,
    /// The leader re-sends a heartbeat when an alive follower has not acked.
    Retransmit,
    Lease,
    /// Re-evaluate: a promise, a quiet period, a hold-off, a deferral, a
    /// candidacy, a back-off or a preemption delay ends.
    Evaluate,
}

impl Timer {
    const COUNT: usize = 4;
}

/// One optional deadline per timer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TimerTable {
    slots: [Option<Time>; Timer::COUNT],
}

impl TimerTable {
    /// Makes `timer` fire at `at`, replacing any earlier setting.
    pub(super) fn set(&mut self, timer: Timer, at: Time) {
        self.slots[timer as usize] = Some(at);
    }

    /// Makes `timer` fire at `at`, or never if `None`.
    pub(super) fn set_or_stop(&mut self, timer: Timer, at: Option<Time>) {
        self.slots[timer as usize] = at;
    }

    /// Stops `timer`.
    pub(super) fn stop(&mut self, timer: Timer) {
        self.slots[timer as usize] = None;
    }

    /// Stops every timer.
    pub(super) fn stop_all(&mut self) {
        self.slots = [None; Timer::COUNT];
    }

    /// True, and the timer stopped, if `timer` is due at `now`.
    pub(super) fn take_due(&mut self, timer: Timer, now: Time) -> bool {
        let slot = &mut self.slots[timer as usize];
        if slot.is_some_and(|t| t <= now) {
            *slot = None;
            true
        } else {
            false
        }
    }

    /// The earliest deadline set, if any.
    pub(super) fn next(&self) -> Option<Time> {
        self.slots.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_the_earliest_and_a_timer_fires_once() {
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Heartbeat, Time(30));
        t.set(Timer::Lease, Time(20));
        t.set_or_stop(Timer::Evaluate, None);
        assert_eq!(t.next(), Some(Time(20)));
        assert!(!t.take_due(Timer::Lease, Time(19)), "not yet due");
        assert!(t.take_due(Timer::Lease, Time(20)), "due at its deadline");
        assert!(!t.take_due(Timer::Lease, Time(21)), "fires once");
        assert_eq!(t.next(), Some(Time(30)));
        t.stop(Timer::Heartbeat);
        assert_eq!(t.next(), None);
        t.set(Timer::Retransmit, Time(5));
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
