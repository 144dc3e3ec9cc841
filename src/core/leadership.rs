//! A claim in progress (`Candidacy`), the lease it wins (`Leadership`),
//! and the back-off after lost claims (`Backoff`).
//!
//! A candidacy counts the acks and nacks to one claimed epoch; a leadership
//! remembers when it sent each heartbeat, the promise end each follower's
//! newest ack backs, and the lease end those promises add up to. Every
//! lease length comes from `Timing::lease_for`, and every lease end from
//! `lease::lease_end` over a quorum of promise ends. A back-off counts the
//! claims lost in a row and draws one jitter per loss from the node's `Rng`.
//!
//! Architecture Invariant: a lease never grows from anything but a
//! promise: a follower's ack of a heartbeat this leadership sent (counted
//! from that send) or this node's own heartbeat. A lease end never moves
//! back. Nothing here sends, reads a clock, draws randomness but from the
//! `Rng` it is handed, or changes the node's role; the node decides what a
//! won or lost claim and an ended lease mean.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::quorum::{Electorate, VoteResult};
use super::rng::Rng;
use super::types::{Epoch, NodeId, Seq, Time};
use super::Timing;

/// How many of its own recent heartbeat send times a leader remembers.
const SENT_HISTORY: usize = 256;

/// Lost claims in a row double the back-off at most this many times (8x).
const MAX_BACKOFF_DOUBLINGS: u32 = 3;

/// A claim of `epoch` and the answers to it.
#[derive(Clone, Debug)]
pub(super) struct Candidacy {
    pub(super) epoch: Epoch,
    /// The claim's message sequence, the first entry of the lease history;
    /// `None` while the claimed epoch is not yet on disk and the claim waits.
    pub(super) seq: Option<Seq>,
    sent: Time,
    /// `Time::MAX`-like (never) until the claim is sent.
    pub(super) deadline: Time,
    /// Per acking member: the promise length its ack reports.
    acks: BTreeMap<NodeId, Duration>,
    nacks: BTreeSet<NodeId>,
}

impl Candidacy {
    /// A claim of `epoch`, made at `now`, not yet sent.
    pub(super) fn new(epoch: Epoch, now: Time) -> Candidacy {
        Candidacy {
            epoch,
            seq: None,
            sent: now,
            deadline: Time(u64::MAX),
            acks: BTreeMap::new(),
            nacks: BTreeSet::new(),
        }
    }

    /// The claim is waiting for its epoch to reach the disk.
    pub(super) fn waiting(&self) -> bool {
        self.seq.is_none()
    }

    /// The claim left as message `seq` at `now`; it is lost at `deadline`.
    pub(super) fn sent(&mut self, seq: Seq, now: Time, deadline: Time) {
        self.seq = Some(seq);
        self.sent = now;
        self.deadline = deadline;
    }

    /// `from` acked, promising `dead_after` on its clock.
    pub(super) fn ack(&mut self, from: NodeId, dead_after: Duration) {
        self.acks.insert(from, dead_after);
        self.nacks.remove(&from);
    }

    /// `from` refused; false if it had acked already (the ack stands).
    pub(super) fn nack(&mut self, from: NodeId) -> bool {
        if self.acks.contains_key(&from) {
            return false;
        }
        self.nacks.insert(from);
        true
    }

    /// The votes so far among `members`, this node's own included.
    pub(super) fn tally(&self, electorate: &Electorate, me: NodeId) -> VoteResult {
        electorate.tally(me, self.acks.keys(), self.nacks.iter())
    }

    pub(super) fn lease_end(&self, timing: &Timing, electorate: &Electorate, me: NodeId) -> Time {
        let promises = self.promise_ends(timing);
        electorate
            .lease_end(me, self.sent + timing.lease(), &promises)
            .unwrap_or(Time::ZERO)
    }

    fn promise_ends(&self, timing: &Timing) -> BTreeMap<NodeId, Time> {
        self.acks
            .iter()
            .map(|(&id, &d)| (id, self.sent + timing.lease_for(d)))
            .collect()
    }

    pub(super) fn win(
        &self,
        timing: &Timing,
        electorate: &Electorate,
        me: NodeId,
    ) -> Option<Leadership> {
        // None is unreachable in practice: acks answer a claim that was sent.
        let claim_seq = self.seq?;
        let promises = self.promise_ends(timing);
        let mut sent = VecDeque::with_capacity(SENT_HISTORY);
        sent.push_back((claim_seq, self.sent));
        let mut l = Leadership {
            epoch: self.epoch,
            sent,
            promises,
            lease_end: Time::ZERO,
        };
        l.renew(self.sent + timing.lease(), electorate, me);
        Some(l)
    }
}

/// When a node may claim again after claims lost in a row.
#[derive(Clone, Debug, Default)]
pub(super) struct Backoff {
    /// Do not claim before this (back-off after a lost claim).
    retry_at: Time,
    /// Claims lost in a row; the back-off doubles with each, up to 8 times.
    failed_claims: u32,
}

impl Backoff {
    /// A claim was lost at `now`: wait a random while around `heartbeat`,
    /// doubled for each earlier loss in a row (up to 8x), drawn from `rng`.
    pub(super) fn lost(&mut self, now: Time, heartbeat: Duration, rng: &mut Rng) {
        self.failed_claims = self.failed_claims.saturating_add(1);
        let hb = heartbeat.as_nanos() as u64;
        let scale = 1u64
            << self
                .failed_claims
                .min(MAX_BACKOFF_DOUBLINGS + 1)
                .saturating_sub(1);
        let backoff = rng.range(hb / 2, hb + hb / 2).saturating_mul(scale);
        self.retry_at = now + Duration::from_nanos(backoff);
    }

    /// A leader was followed or a claim won: the next loss starts afresh.
    pub(super) fn reset(&mut self) {
        self.failed_claims = 0;
    }

    /// The node may claim from `now` on, whatever its losses.
    pub(super) fn retry_now(&mut self, now: Time) {
        self.retry_at = now;
    }

    /// Still backing off at `now`.
    pub(super) fn waiting(&self, now: Time) -> bool {
        now < self.retry_at
    }

    /// When the back-off ends.
    pub(super) fn retry_at(&self) -> Time {
        self.retry_at
    }
}

/// The lease for `epoch` and what backs it.
#[derive(Clone, Debug)]
pub(super) struct Leadership {
    pub(super) epoch: Epoch,
    /// Send times of this leadership's heartbeats (and its claim), by seq.
    sent: VecDeque<(Seq, Time)>,
    /// Per follower: the promise end its newest ack backs.
    promises: BTreeMap<NodeId, Time>,
    pub(super) lease_end: Time,
}

impl Leadership {
    /// Remembers that heartbeat `seq` left at `now`.
    pub(super) fn sent(&mut self, seq: Seq, now: Time) {
        if self.sent.len() == SENT_HISTORY {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, now));
    }

    /// The newest heartbeat sent (or the claim).
    pub(super) fn newest(&self) -> Seq {
        self.sent.back().map_or(Seq(0), |&(s, _)| s)
    }

    /// `from` acked our heartbeat `seq`, promising a lease of `theirs`
    /// from its send. True, and the lease renewed with our own promise of
    /// `ours` from our newest heartbeat, if that moves `from`'s promise end.
    pub(super) fn acked(
        &mut self,
        from: NodeId,
        seq: Seq,
        theirs: Duration,
        ours: Duration,
        electorate: &Electorate,
        me: NodeId,
    ) -> bool {
        let Some(&(_, sent)) = self.sent.iter().find(|(s, _)| *s == seq) else {
            return false;
        };
        let slot = self.promises.entry(from).or_insert(Time::ZERO);
        if sent + theirs <= *slot {
            return false;
        }
        *slot = sent + theirs;
        let own = self.sent.back().map_or(Time::ZERO, |&(_, t)| t) + ours;
        self.renew(own, electorate, me);
        true
    }

    /// Extends the lease to what the electorate's majorities now back, with
    /// our own promise ending at `own`. A lease never shrinks: each promise
    /// it counted stands, whatever the member list has become since.
    pub(super) fn renew(&mut self, own: Time, electorate: &Electorate, me: NodeId) {
        if let Some(end) = electorate.lease_end(me, own, &self.promises) {
            self.lease_end = self.lease_end.max(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn timing() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_millis(300),
            lease_margin: Duration::from_millis(20),
            max_drift_ppm: 10_000,
            demote_budget: Duration::from_millis(25),
        }
    }

    const ME: NodeId = NodeId(1);

    fn three() -> Electorate {
        Electorate::single(&[NodeId(1), NodeId(2), NodeId(3)])
    }

    #[test]
    fn a_won_claim_leases_from_its_send() {
        let t = timing();
        let mut c = Candidacy::new(Epoch(1), Time(10 * MS));
        assert!(c.waiting());
        assert!(
            c.win(&t, &three(), ME).is_none(),
            "an unsent claim wins nothing"
        );
        c.sent(Seq(4), Time(20 * MS), Time(220 * MS));
        assert!(c.nack(NodeId(2)));
        assert_eq!(c.tally(&three(), ME), VoteResult::Pending);
        c.ack(NodeId(2), Duration::from_millis(300));
        assert!(!c.nack(NodeId(2)), "an ack stands");
        assert_eq!(c.tally(&three(), ME), VoteResult::Won);
        let end = Time(20 * MS) + t.lease();
        assert_eq!(c.lease_end(&t, &three(), ME), end);
        let l = c.win(&t, &three(), ME).expect("sent");
        assert_eq!((l.epoch, l.lease_end, l.newest()), (Epoch(1), end, Seq(4)));
    }

    #[test]
    fn acks_renew_the_lease_and_it_never_shrinks() {
        let t = timing();
        let mut c = Candidacy::new(Epoch(1), Time::ZERO);
        c.sent(Seq(1), Time::ZERO, Time(200 * MS));
        c.ack(NodeId(2), Duration::from_millis(300));
        let mut l = c.win(&t, &three(), ME).expect("sent");
        let first = l.lease_end;
        l.sent(Seq(2), Time(100 * MS));
        assert!(
            !l.acked(NodeId(2), Seq(9), t.lease(), t.lease(), &three(), ME),
            "never sent"
        );
        assert!(l.acked(NodeId(2), Seq(2), t.lease(), t.lease(), &three(), ME));
        assert_eq!(l.lease_end, Time(100 * MS) + t.lease());
        assert!(
            !l.acked(NodeId(2), Seq(1), t.lease(), t.lease(), &three(), ME),
            "older"
        );
        l.renew(Time::ZERO, &three(), ME);
        assert!(l.lease_end > first, "a lease never shrinks");
        for s in 3..(3 + SENT_HISTORY as u64) {
            l.sent(Seq(s), Time(100 * MS));
        }
        assert!(
            !l.acked(NodeId(3), Seq(2), t.lease(), t.lease(), &three(), ME),
            "forgotten"
        );
    }
}
