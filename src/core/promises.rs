//! What this node has promised: the highest epoch it voted for, which of
//! that is on disk, the votes waiting for the disk, the promise to a leader
//! (`Sticky`), a claim it would ack later, and the quiet period after a
//! restart.
//!
//! The parts of the ack rule that depend only on these live here
//! (`is_stale`, `bar`); the node adds the parts that depend on its role and
//! its view of peers. So do the rules that end the promise to a leader
//! early (`leader_stopped`, `leader_resigned`): the node passes in the
//! incarnation it last heard.
//!
//! Architecture Invariant: `Promises` never lowers `promised`, and a vote it
//! releases (`next_ready`) has its epoch on disk. It sends nothing and
//! persists nothing itself: the node turns a promise into `Effect::Persist`
//! and a released vote into `Effect::Send`.

use std::collections::VecDeque;
use std::time::Duration;

use super::message::{Body, NackReason};
use super::types::{Epoch, Incarnation, NodeId, Time};

/// The leader (or claimant) this node promised to, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sticky {
    pub(super) leader: NodeId,
    pub(super) epoch: Epoch,
    pub(super) until: Time,
    /// The promise length in force when it was last renewed: what our
    /// heartbeats report, so a reload never inflates an ack already given.
    pub(super) promise: Duration,
    /// A leader heartbeat was heard, not only a claim acked.
    pub(super) confirmed: bool,
    /// The leader's incarnation when the promise was made.
    pub(super) incarnation: Incarnation,
}

/// A claim this node would ack once its promise to another ends.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingClaim {
    pub(super) from: NodeId,
    pub(super) epoch: Epoch,
    pub(super) expires: Time,
}

/// What a node answers to a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Ack,
    Nack(NackReason),
    /// Ack later if still valid: our promise to another ends before this.
    Defer(Time),
}

/// Everything this node has promised, and the votes waiting for the disk.
#[derive(Clone, Debug)]
pub(super) struct Promises {
    promised: Epoch,
    /// The highest promise known to be on disk (`Input::Persisted`).
    durable: Epoch,
    /// Claims and Acks waiting for their epoch to reach the disk, in order.
    held: VecDeque<(Epoch, Body)>,
    /// The leader (or claimant) this node promised to, and until when.
    pub(super) sticky: Option<Sticky>,
    /// A claim this node would ack once its promise to another ends.
    pub(super) pending: Option<PendingClaim>,
    /// No acks and no claims before this: a restarted node may have promised
    /// before it crashed.
    quiet_until: Time,
}

impl Promises {
    /// A node that persisted `promised` before it (re)started, quiet until
    /// `quiet_until`.
    pub(super) fn new(promised: Epoch, quiet_until: Time) -> Promises {
        Promises {
            promised,
            durable: promised,
            held: VecDeque::new(),
            sticky: None,
            pending: None,
            quiet_until,
        }
    }

    /// The highest epoch promised.
    pub(super) fn promised(&self) -> Epoch {
        self.promised
    }

    /// The highest promise known to be on disk.
    pub(super) fn durable(&self) -> Epoch {
        self.durable
    }

    /// Raises the promised epoch; the caller persists it.
    pub(super) fn promise(&mut self, epoch: Epoch) {
        debug_assert!(epoch > self.promised);
        self.promised = epoch;
    }

    /// The epoch a claim takes: the next above every promise and above
    /// `known`, the highest epoch heard of.
    pub(super) fn claimable(&self, known: Epoch) -> Option<Epoch> {
        let highest = known.max(self.promised);
        if highest == Epoch(u64::MAX) {
            // No epoch is left above every promise: claiming would reuse
            // one. Only a state file or a key holder can get here.
            return None;
        }
        Some(highest.next())
    }

    /// A vote for `epoch` may leave now: that promise is on disk.
    pub(super) fn is_durable(&self, epoch: Epoch) -> bool {
        epoch <= self.durable
    }

    /// Keeps a vote for `epoch` until that promise is on disk.
    pub(super) fn hold(&mut self, epoch: Epoch, body: Body) {
        self.held.push_back((epoch, body));
    }

    /// Promises up to `promised` are on disk.
    pub(super) fn persisted(&mut self, promised: Epoch) {
        self.durable = self.durable.max(promised);
    }

    /// The oldest held vote whose epoch is now on disk, taken out.
    pub(super) fn next_ready(&mut self) -> Option<(Epoch, Body)> {
        if self.held.front().is_some_and(|(e, _)| *e <= self.durable) {
            self.held.pop_front()
        } else {
            None
        }
    }

    /// A write of `promised` failed: votes held for it or above never leave.
    pub(super) fn discard_from(&mut self, promised: Epoch) {
        self.held.retain(|(e, _)| *e < promised);
    }

    /// Within the quiet period after a restart.
    pub(super) fn quiet(&self, now: Time) -> bool {
        now < self.quiet_until
    }

    /// A claim of `epoch` is at or below a promise already made.
    pub(super) fn is_stale(&self, epoch: Epoch) -> bool {
        epoch <= self.promised
    }

    /// What the quiet period and the promise to a leader say about acking a
    /// claim from `from` now: nothing (`None`), or a deferral until
    /// `wait_limit` if they end by then, or a refusal.
    pub(super) fn bar(&self, now: Time, from: NodeId, wait_limit: Time) -> Option<Verdict> {
        if now < self.quiet_until {
            return Some(if self.quiet_until <= wait_limit {
                Verdict::Defer(wait_limit)
            } else {
                Verdict::Nack(NackReason::Starting)
            });
        }
        if let Some(s) = self.sticky {
            if s.leader != from && now < s.until {
                return Some(if s.until <= wait_limit {
                    Verdict::Defer(wait_limit)
                } else {
                    Verdict::Nack(NackReason::LiveLeader)
                });
            }
        }
        None
    }

    /// A held Ack of `epoch` to `to` still stands: the promise is unchanged
    /// and has not run out.
    pub(super) fn backs_ack(&self, to: NodeId, epoch: Epoch, now: Time) -> bool {
        self.sticky
            .is_some_and(|s| s.leader == to && s.epoch == epoch && now < s.until)
    }

    /// A heartbeat of `from` as leader of `epoch` may be followed: it is the
    /// leader promised to (at its epoch or a newer one), or the promise ran
    /// out, or the epoch is newer than the one promised.
    pub(super) fn may_follow(&self, from: NodeId, epoch: Epoch, now: Time) -> bool {
        match self.sticky {
            Some(s) if s.leader == from => epoch >= s.epoch,
            Some(s) if now < s.until => epoch > s.epoch,
            _ => true,
        }
    }

    /// Promises `dead_after` from `now` to `from`, leader of `epoch`, as
    /// seen in its heartbeat; returns the promise it replaces. A promise
    /// already given to the same leader keeps its end, even if a reload
    /// shortened dead_after since.
    pub(super) fn follow(
        &mut self,
        from: NodeId,
        epoch: Epoch,
        incarnation: Incarnation,
        now: Time,
        dead_after: Duration,
    ) -> Option<Sticky> {
        let before = self.sticky;
        let until = before
            .filter(|s| s.leader == from)
            .map_or(now + dead_after, |s| s.until.max(now + dead_after));
        self.sticky = Some(Sticky {
            leader: from,
            epoch,
            until,
            promise: dead_after,
            incarnation,
            confirmed: true,
        });
        self.pending = None;
        before
    }

    /// `from` sent a heartbeat that does not claim leadership, naming
    /// `named` as leader: if `from` is the leader this node follows, in the
    /// same process (`incarnation`, as last heard), and no longer names
    /// itself leader of the promised epoch, the promise ends. Returns the
    /// epoch of the promise that ended.
    pub(super) fn leader_stopped(
        &mut self,
        from: NodeId,
        incarnation: Option<Incarnation>,
        named: Option<(NodeId, Epoch)>,
    ) -> Option<Epoch> {
        // The leader we follow says it no longer leads that epoch (it
        // resigned and we missed the Resign): the promise guards nothing
        // any more. While it still names itself leader (its demote hook
        // runs) the promise stands. A restarted leader is not taken at
        // its word: the promise then runs out on its own.
        // Only the same incarnation counts: a new one may be another
        // host wrongly using the leader's id while the leader lives.
        self.sticky
            .take_if(|s| {
                s.leader == from
                    && incarnation == Some(s.incarnation)
                    && named != Some((from, s.epoch))
                    && s.confirmed
            })
            .map(|s| s.epoch)
    }

    /// `from` resigned `epoch`, in the process (`incarnation`, as last
    /// heard) this node promised to: true, and the promise ended, if it was
    /// the promise to that leader at `epoch` or an older one.
    pub(super) fn leader_resigned(
        &mut self,
        from: NodeId,
        incarnation: Option<Incarnation>,
        epoch: Epoch,
    ) -> bool {
        // The leader ran its demote hook before resigning: our promise to
        // it may end now.
        self.sticky
            .take_if(|s| s.leader == from && incarnation == Some(s.incarnation) && s.epoch <= epoch)
            .is_some()
    }

    /// Promises `dead_after` from `now` to `claimant` (in `incarnation`),
    /// whose claim of `epoch` this node acks; a deferred claim is dropped.
    pub(super) fn acked(
        &mut self,
        claimant: NodeId,
        epoch: Epoch,
        incarnation: Incarnation,
        now: Time,
        dead_after: Duration,
    ) {
        self.pending = None;
        self.sticky = Some(Sticky {
            leader: claimant,
            epoch,
            until: now + dead_after,
            promise: dead_after,
            incarnation,
            confirmed: false,
        });
    }

    /// Keeps `from`'s claim of `epoch` to ack once nothing bars it, until
    /// `expires`; it replaces any claim kept before.
    pub(super) fn defer(&mut self, from: NodeId, epoch: Epoch, expires: Time) {
        self.pending = Some(PendingClaim {
            from,
            epoch,
            expires,
        });
    }

    /// The deferred claim, dropped first if it has expired at `now`.
    pub(super) fn pending(&mut self, now: Time) -> Option<PendingClaim> {
        self.pending = self.pending.filter(|p| now < p.expires);
        self.pending
    }

    /// The promise length a heartbeat naming `leader` reports, if it is the
    /// confirmed leader promised to.
    pub(super) fn reported(&self, leader: Option<NodeId>) -> Option<Duration> {
        // While following, report the promise that backs our ack of the
        // leader's newest heartbeat, not a dead_after reloaded since.
        self.sticky
            .filter(|s| s.confirmed && leader == Some(s.leader))
            .map(|s| s.promise)
    }

    /// The epoch a follower that leaves names in its Resign: that of the
    /// leader it promised to, or else the highest it promised.
    pub(super) fn leaving_epoch(&self) -> Epoch {
        self.sticky.map_or(self.promised, |s| s.epoch)
    }

    /// The promise to a leader, taken out if it has run out at `now`.
    pub(super) fn expire(&mut self, now: Time) -> Option<Sticky> {
        self.sticky.take_if(|s| now >= s.until)
    }

    /// The leader followed now: promised to and confirmed by its heartbeat.
    pub(super) fn confirmed_leader(&self, now: Time) -> Option<(NodeId, Epoch)> {
        match self.sticky {
            Some(s) if s.confirmed && now < s.until => Some((s.leader, s.epoch)),
            _ => None,
        }
    }

    /// When something here ends and the node must look again.
    pub(super) fn ends(&self) -> impl Iterator<Item = Time> {
        let sticky = self.sticky.map(|s| s.until);
        let pending = self.pending.map(|p| p.expires);
        sticky
            .into_iter()
            .chain(pending)
            .chain(std::iter::once(self.quiet_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn votes_wait_for_the_disk_in_order() {
        let mut p = Promises::new(Epoch(3), Time::ZERO);
        assert!(p.is_durable(Epoch(3)));
        p.promise(Epoch(4));
        assert!(!p.is_durable(Epoch(4)));
        p.hold(Epoch(4), Body::Claim { epoch: Epoch(4) });
        p.promise(Epoch(5));
        p.hold(Epoch(5), Body::Claim { epoch: Epoch(5) });
        assert!(p.next_ready().is_none(), "nothing on disk yet");
        p.persisted(Epoch(4));
        assert_eq!(p.next_ready().map(|(e, _)| e), Some(Epoch(4)));
        assert!(p.next_ready().is_none(), "epoch 5 is not on disk");
        p.discard_from(Epoch(5));
        p.persisted(Epoch(5));
        assert!(
            p.next_ready().is_none(),
            "a failed write's vote never leaves"
        );
        assert!(p.is_stale(Epoch(5)) && !p.is_stale(Epoch(6)));
    }

    #[test]
    fn bar_table() {
        let leader = NodeId(2);
        let claimant = NodeId(3);
        let promise_to = |until: u64| Sticky {
            leader,
            epoch: Epoch(1),
            until: Time(until * MS),
            promise: Duration::from_millis(300),
            confirmed: true,
            incarnation: Incarnation(1),
        };
        // what, quiet until, promise, claimant, now, wait limit, verdict
        type Case = (
            &'static str,
            u64,
            Option<Sticky>,
            NodeId,
            u64,
            u64,
            Option<Verdict>,
        );
        let cases: Vec<Case> = vec![
            ("nothing bars", 0, None, claimant, 500, 700, None),
            (
                "quiet, ending within the wait",
                600,
                None,
                claimant,
                500,
                700,
                Some(Verdict::Defer(Time(700 * MS))),
            ),
            (
                "quiet, ending after the wait",
                800,
                None,
                claimant,
                500,
                700,
                Some(Verdict::Nack(NackReason::Starting)),
            ),
            (
                "promised another, ending within the wait",
                0,
                Some(promise_to(650)),
                claimant,
                500,
                700,
                Some(Verdict::Defer(Time(700 * MS))),
            ),
            (
                "promised another, ending after the wait",
                0,
                Some(promise_to(900)),
                claimant,
                500,
                700,
                Some(Verdict::Nack(NackReason::LiveLeader)),
            ),
            (
                "the leader itself",
                0,
                Some(promise_to(900)),
                leader,
                500,
                700,
                None,
            ),
            (
                "a promise run out",
                0,
                Some(promise_to(500)),
                claimant,
                500,
                700,
                None,
            ),
        ];
        for (what, quiet, sticky, from, now, limit, want) in cases {
            let mut p = Promises::new(Epoch(0), Time(quiet * MS));
            p.sticky = sticky;
            assert_eq!(
                p.bar(Time(now * MS), from, Time(limit * MS)),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn following_keeps_a_promise_end_and_expires_it() {
        let mut p = Promises::new(Epoch(0), Time::ZERO);
        let long = Duration::from_millis(300);
        let short = Duration::from_millis(100);
        assert_eq!(
            p.follow(NodeId(2), Epoch(1), Incarnation(1), Time::ZERO, long),
            None
        );
        p.follow(NodeId(2), Epoch(1), Incarnation(1), Time(100 * MS), short);
        let s = p.sticky.expect("promised");
        assert_eq!(s.until, Time(300 * MS), "a reload never shortens a promise");
        assert_eq!(s.promise, short);
        assert!(!p.may_follow(NodeId(3), Epoch(1), Time(200 * MS)));
        assert!(p.may_follow(NodeId(3), Epoch(2), Time(200 * MS)));
        assert!(p.expire(Time(299 * MS)).is_none());
        assert_eq!(
            p.confirmed_leader(Time(299 * MS)),
            Some((NodeId(2), Epoch(1)))
        );
        assert_eq!(p.expire(Time(300 * MS)), Some(s));
        assert!(p.sticky.is_none());
    }
}
