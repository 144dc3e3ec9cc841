//! One member's view of the cluster and its part in the election.
//!
//! `Node` owns the protocol state of one member: who it has heard, whom it
//! follows, what it has promised, and, while it leads, its lease. It is driven
//! by `handle(now, Input)` and `handle_timeout(now)`; after either, the caller
//! drains `poll_effect()` until it returns `None` and sleeps until
//! `next_timeout()`.
//!
//! Architecture Invariant: a node never acks a claim for an epoch at or below
//! one it promised, and every promise is preceded by `Effect::Persist` of it.
//! A node never acks a claimant other than the leader it heard within its
//! `dead_after`, except after that leader's `Resign`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::effect::MemberList;
use super::effect::{
    Effect, HookDone, HookKind, HookOutcome, HookRequest, Input, LostLeader, Persisted, Reason,
    Transition,
};
use super::leadership::{Backoff, Candidacy, Leadership};
use super::membership::{changed, Membership, Relation};
use super::message::{Body, Heartbeat, Message, NackReason, Role};
use super::peers::{FailedHandover, Peers, SentHeartbeats};
use super::promises::{Promises, Verdict};
use super::quorum::{quorum, Electorate, VoteResult};
use super::rng::Rng;
use super::status::Status;
use super::timers::{Timer, TimerTable};
use super::types::{Epoch, Incarnation, NodeId, Rank, Seq, Time};
use super::CoreConfig;

/// A node that hears another host use its id stays out of the election
/// until it has heard nothing of it for this many dead_afters.
pub const IMPOSTOR_WINDOW: u32 = 10;

/// The election state machine of one member.
#[derive(Debug)]
pub struct Node {
    cfg: CoreConfig,
    quorum: usize,
    rng: Rng,
    incarnation: Incarnation,
    seq: Seq,
    /// What this node promised, and the votes waiting for the disk.
    promises: Promises,
    known: Epoch,
    peers: Peers,
    /// This node's recent heartbeats, to date the peers' echoes of them.
    sent_heartbeats: SentHeartbeats,
    /// The leader and epoch this node last followed, as last asked to be
    /// persisted.
    followed: Option<(NodeId, Epoch)>,
    /// The leader and epoch this node may follow during its quiet period:
    /// the one it followed before a restart, if it promised nothing since.
    resume: Option<(NodeId, Epoch)>,
    state: State,
    healthy: bool,
    storage_ok: bool,
    /// Another host uses this node's id: no leading, claiming or acking
    /// before this.
    impostor_until: Time,
    holdoff_until: Time,
    /// A leader's named successor, favoured until the given time.
    handover: Option<(NodeId, Time)>,
    /// When this node may claim again after lost claims.
    backoff: Backoff,
    /// The node this one last handed over to by preemption.
    preempted_by: Option<NodeId>,
    /// This node leads again after handing over by preemption: the
    /// handover failed, and preempting toward that node waits (§3.14).
    failed_handover: Option<FailedHandover>,
    shutting_down: bool,
    /// The member list this node runs, with the digest of the one before.
    membership: Membership,
    /// The change into `membership` is committed (§3.19): a majority of
    /// this list and of the one before run it.
    committed: bool,
    /// The ids of the list before, known when this node took the change
    /// itself (and kept across a restart until committed).
    previous_members: Option<Vec<NodeId>>,
    /// Claims and leases need the list before's majority until this instant
    /// even once committed: a lease of a leader elected under an older list
    /// has ended by then (§3.19).
    joint_until: Time,
    /// Whose majorities a claim and a lease need; `None` while this node
    /// does not know (a change it did not take itself, not yet committed):
    /// it does not claim then.
    electorate: Option<Electorate>,
    /// This node once ran a newer member list than its configuration's: it
    /// neither votes, follows nor claims (§3.19).
    outdated: bool,
    /// Hosts heard whose list this node cannot work with, with theirs and
    /// when they were last heard.
    foreign: BTreeMap<NodeId, (Membership, Time)>,
    last_sent: Time,
    timers: TimerTable,
    out: VecDeque<Effect>,
}

/// The node's role, with what each role needs.
#[derive(Clone, Debug)]
enum State {
    /// Waiting for the start-up demote hook before joining the protocol.
    Starting,
    /// Following a leader or waiting for one.
    Follower,
    /// Sent Election; waits for a higher-ranked node to lead until `until`.
    Deferring { until: Time },
    /// Claimed `epoch`; once it is on disk, sent the claim at `sent` and
    /// counts acks.
    Candidate(Candidacy),
    /// Holds the lease for `epoch`.
    Leader(Leadership),
    /// Gave up leadership of `epoch`; the demote hook runs, then Resign.
    Demoting(Demotion),
}

#[derive(Clone, Debug)]
struct Demotion {
    epoch: Epoch,
    successor: Option<NodeId>,
}

impl Node {
    /// A node starting at `now` with what it persisted, a fresh
    /// `incarnation` (strictly above any earlier one), and a seed for jitter
    /// and for where its sequence numbers start.
    ///
    /// The first effect is the start-up demote; the node stays silent until
    /// the driver reports it done.
    pub fn new(
        cfg: CoreConfig,
        persisted: Persisted,
        incarnation: Incarnation,
        seed: u64,
        now: Time,
    ) -> Node {
        let mut membership = Membership::of(cfg.generation, &cfg.members);
        let (mut committed, mut previous_members, mut outdated) = (false, None, false);
        match &persisted.membership {
            // A restart on the list it ran: as it was.
            Some(m)
                if m.membership.generation == membership.generation
                    && m.membership.digest == membership.digest =>
            {
                membership = m.membership;
                committed = m.committed;
                previous_members = (!m.previous.is_empty()).then(|| m.previous.clone());
            }
            // Generations never go back, and a list never changes without
            // one: a host that ran a newer list, or another list of this
            // generation, stays out rather than vote on this one.
            Some(m) if m.membership.generation >= membership.generation => outdated = true,
            // Restarted on the next list, one member away from a committed
            // one: as if it took the change by reload (the reload's other
            // checks keep clusters available, not safe, §3.19).
            Some(m)
                if m.membership.generation.wrapping_add(1) == membership.generation
                    && m.committed
                    && changed(&m.members, &cfg.members).len() == 1 =>
            {
                membership.previous = m.membership.digest;
                previous_members = Some(m.members.clone());
            }
            // Restarted on the next list otherwise: the digest before is
            // known; it waits to hear the change committed.
            Some(m) if m.membership.generation.wrapping_add(1) == membership.generation => {
                membership.previous = m.membership.digest;
            }
            Some(_) => {}
            // A cluster that never changed its list.
            None => committed = cfg.generation <= 1,
        }
        let peers = Peers::new(&cfg.members, cfg.id, membership);
        let quorum = quorum(cfg.members.len());
        let quiet_until = now + cfg.timing.dead_after;
        let mut rng = Rng::new(seed);
        // Each run numbers its messages from its own random start, so the
        // echo of a heartbeat of an earlier run (in a replayed recording)
        // names none of this run's: far below 2^63, so it never wraps.
        let seq = Seq(rng.next_u64() >> 2);
        let resume = persisted
            .leader
            .filter(|&(_, epoch)| epoch == persisted.promised);
        let mut node = Node {
            quorum,
            rng,
            incarnation,
            seq,
            promises: Promises::new(persisted.promised, quiet_until),
            known: persisted.promised,
            peers,
            sent_heartbeats: SentHeartbeats::default(),
            followed: persisted.leader,
            resume,
            state: State::Starting,
            healthy: true,
            storage_ok: true,
            impostor_until: Time::ZERO,
            holdoff_until: Time::ZERO,
            handover: None,
            backoff: Backoff::default(),
            preempted_by: None,
            failed_handover: None,
            shutting_down: false,
            membership,
            committed,
            previous_members,
            // The first list has none before it to wait out; a later one
            // may have been committed just before this restart.
            joint_until: if membership.generation <= 1 {
                Time::ZERO
            } else {
                now + cfg.timing.membership_wait()
            },
            electorate: None,
            outdated,
            foreign: BTreeMap::new(),
            last_sent: now,
            timers: TimerTable::default(),
            out: VecDeque::new(),
            cfg,
        };
        node.electorate = node.current_electorate(now);
        if node.cfg.witness {
            // Nothing to demote: a witness never held the resource.
            node.state = State::Follower;
            node.send_heartbeat(now);
        } else {
            node.run_hook(HookKind::Demote, persisted.promised, None, Reason::Startup);
        }
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The member list this node runs.
    pub fn membership(&self) -> Membership {
        self.membership
    }

    /// The change into that list is committed (§3.19).
    pub fn committed(&self) -> bool {
        self.committed
    }

    /// This node once ran a newer list than its own, or another of its
    /// generation, and takes no part (§3.19).
    pub fn outdated(&self) -> bool {
        self.outdated
    }

    /// This node's rank.
    pub fn rank(&self) -> Rank {
        Rank {
            priority: self.cfg.priority,
            node: self.cfg.id,
        }
    }

    /// The epoch this node leads right now, if it holds a lease.
    pub fn leading(&self) -> Option<Epoch> {
        self.lease().map(|(epoch, _)| epoch)
    }

    /// The epoch this node leads and the instant its lease ends. The driver
    /// starts a promote or refresh hook only before that instant.
    pub fn lease(&self) -> Option<(Epoch, Time)> {
        match &self.state {
            State::Leader(l) => Some((l.epoch, l.lease_end)),
            _ => None,
        }
    }

    /// The next effect to carry out, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.out.pop_front()
    }

    /// The earliest instant at which `handle_timeout` must be called.
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.next()
    }

    /// Applies a new configuration (reload). Promises already made keep
    /// their ends. A new member list is taken only by the change rule of
    /// §3.19: one member added or removed, the generation raised by one,
    /// and both the list in force and the new one live around this node.
    /// Otherwise nothing changes and the error says why.
    pub fn reconfigure(&mut self, cfg: CoreConfig, now: Time) -> Result<(), String> {
        debug_assert_eq!(cfg.id, self.cfg.id);
        self.expire_lease(now);
        let list_changed = !changed(&self.cfg.members, &cfg.members).is_empty();
        if list_changed || cfg.generation != self.cfg.generation {
            self.change_rule(&cfg, now)?;
            let next = Membership::of(cfg.generation, &cfg.members).after(self.membership);
            self.membership = next;
            self.committed = false;
            self.previous_members = Some(std::mem::take(&mut self.cfg.members));
            self.quorum = quorum(cfg.members.len());
            self.peers.set_members(&cfg.members, cfg.id, next);
            self.foreign.clear();
            // Acks counted against the old list alone mean nothing now; a
            // leader's lease stands and its renewals count both majorities.
            if matches!(self.state, State::Candidate(_)) {
                self.lose_claim(now);
            }
            self.cfg = cfg;
            self.electorate = self.current_electorate(now);
            self.persist();
            self.send_heartbeat(now);
        } else {
            self.cfg = cfg;
        }
        self.evaluate(now);
        Ok(())
    }

    /// Why a new member list may not be taken now, if it may not (§3.19).
    fn change_rule(&self, cfg: &CoreConfig, now: Time) -> Result<(), String> {
        let dead_after = self.cfg.timing.dead_after;
        let (from, to) = (self.cfg.generation, cfg.generation);
        let diff = changed(&self.cfg.members, &cfg.members);
        let ids = |v: &[NodeId]| {
            v.iter()
                .map(NodeId::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if diff.is_empty() {
            return Err(format!(
                "generation changed from {from} to {to} but the member list did not"
            ));
        }
        if to != from.wrapping_add(1) {
            return Err(format!(
                "the member list changed, so generation must go from {from} to {}, not to {to}",
                from.wrapping_add(1)
            ));
        }
        if diff.len() > 1 {
            return Err(format!(
                "members {} change at once: add or remove one member per generation",
                ids(&diff)
            ));
        }
        if self.outdated {
            return Err(
                "this node ran a newer member list before: restart it on the current \
                 file"
                    .to_string(),
            );
        }
        if !self.committed {
            return Err(format!(
                "the change to generation {from} is not committed yet: a majority of its list \
                 and of the list before must run it first (regent status shows who does)"
            ));
        }
        // The list in force: a quorum of it must run it or the next one, so
        // that no older list can still elect (§3.19).
        let on_it = 1 + self
            .peers
            .linked_on(now, dead_after, |r| {
                matches!(r, Relation::Same | Relation::Ahead)
            })
            .count();
        if on_it < self.quorum {
            return Err(format!(
                "only {on_it} of the {} members of generation {from} are linked with this node \
                 and run it or later; {} are needed before the list may change",
                self.cfg.members.len(),
                self.quorum
            ));
        }
        // The new list: a quorum of it must be live around this node.
        let new_quorum = quorum(cfg.members.len());
        let live = 1 + self
            .peers
            .linked_on(now, dead_after, |r| {
                matches!(r, Relation::Same | Relation::Ahead)
            })
            .filter(|p| cfg.members.contains(&p.id))
            .count();
        if live < new_quorum {
            return Err(format!(
                "the new list would leave no live quorum: {live} of its {} members are linked \
                 with this node, {new_quorum} are needed",
                cfg.members.len()
            ));
        }
        if let (Role::Follower, _, Some(leader)) = self.reported_role(now) {
            let on_old = self.peers.relation(&leader) == Some(Relation::Same);
            let theirs = self.peers.get(&leader).and_then(|p| p.membership);
            let next = Membership::of(cfg.generation, &cfg.members);
            if let Some(m) = theirs.filter(|m| !on_old && m.digest != next.digest) {
                return Err(format!(
                    "node {leader} leads on generation {} with another member list \
                     ({:08x}, this file's is {:08x}): give every host the same file",
                    m.generation, m.digest, next.digest
                ));
            }
            if on_old && !cfg.members.contains(&leader) {
                return Err(format!(
                    "node {leader} leads and the new list removes it: hand over first \
                     (`regent step-down` on node {leader})"
                ));
            }
            if on_old {
                return Err(format!(
                    "node {leader} leads on generation {from}: reload it first, so that \
                     it keeps leading through the change"
                ));
            }
        }
        Ok(())
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Time, input: Input) {
        self.expire_lease(now);
        match input {
            Input::Message(msg) => self.on_message(now, msg),
            Input::HookDone(done) => self.on_hook_done(now, done),
            Input::Health { ok } => {
                if self.healthy != ok {
                    self.healthy = ok;
                    self.send_heartbeat(now);
                }
            }
            Input::Storage { ok } => {
                if self.storage_ok != ok {
                    self.storage_ok = ok;
                    self.send_heartbeat(now);
                }
            }
            Input::StepDown { to } => self.on_step_down(now, to),
            Input::Shutdown => self.on_shutdown(now),
            Input::Persisted { promised } => self.on_persisted(now, promised),
            Input::PersistFailed { promised } => self.on_persist_failed(now, promised),
            Input::Impostor => {
                let was = now < self.impostor_until;
                self.impostor_until = now + self.cfg.timing.dead_after * IMPOSTOR_WINDOW;
                if !was {
                    self.send_heartbeat(now);
                }
            }
        }
        self.evaluate(now);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.expire_lease(now);
        if self.timers.take_due(Timer::Heartbeat, now) {
            self.send_heartbeat(now);
        }
        if self.timers.take_due(Timer::Retransmit, now) && self.lease_acks_missing(now) {
            self.send_heartbeat(now);
        }
        self.timers.take_due(Timer::Lease, now);
        self.timers.take_due(Timer::Evaluate, now);
        self.evaluate(now);
    }

    /// A snapshot for status and metrics.
    pub fn status(&self, now: Time) -> Status {
        let (role, epoch, leader) = self.reported_role(now);
        Status {
            id: self.cfg.id,
            role,
            transitioning: matches!(self.state, State::Starting | State::Demoting(_)),
            epoch,
            leader,
            promised: self.promises.promised(),
            durable: self.promises.durable(),
            known: self.known,
            alive: self.linked_count(now),
            quorum: self.quorum,
            eligible: self.eligible(now),
            lease_remaining: self.lease().map(|(_, end)| end.since(now)),
            membership: self.membership,
            confirmed: self.electorate.is_some(),
            committed: self.committed,
            previous: self
                .electorate
                .as_ref()
                .and_then(|e| e.previous().map(<[NodeId]>::to_vec)),
            peers: self.peers.status(now, self.cfg.timing.dead_after),
            foreign: self
                .foreign
                .iter()
                .filter(|(_, (_, at))| now < *at + self.cfg.timing.dead_after)
                .map(|(&id, &(m, _))| (id, m))
                .collect(),
        }
    }

    // ----- inputs -----

    fn on_message(&mut self, now: Time, msg: Message) {
        if msg.from == self.cfg.id {
            return;
        }
        // A list this node cannot work with: nothing of the message counts,
        // not even its epoch (§3.19). A node that ran a newer list than its
        // own works with none.
        let relation = self.membership.relation(&msg.membership);
        if relation == Relation::Foreign || self.outdated {
            self.foreign.insert(msg.from, (msg.membership, now));
            self.out.push_back(Effect::Foreign {
                from: msg.from,
                theirs: msg.membership,
            });
            return;
        }
        self.foreign.remove(&msg.from);
        if !self.peers.hear(now, self.cfg.timing.dead_after, &msg) {
            return;
        }
        self.known = self.known.max(msg.known_epoch);
        let from = msg.from;
        match msg.body {
            Body::Heartbeat(hb) => {
                if relation == Relation::Same && hb.committed && !self.committed {
                    self.commit(now, msg.membership.previous);
                }
                self.on_heartbeat(now, from, msg.seq, hb, relation)
            }
            Body::Election => self.on_election(now, from),
            Body::Answer { to } => {
                let extended = now + self.cfg.timing.election_timeout();
                if to == self.cfg.id {
                    if let State::Deferring { until } = &mut self.state {
                        *until = extended;
                    }
                }
            }
            // This node acks claims on its own list or the next, never on
            // the one before (§3.19).
            Body::Claim { epoch } if relation == Relation::Behind => {
                self.known = self.known.max(epoch);
            }
            Body::Claim { epoch } => self.on_claim(now, from, epoch),
            Body::Ack {
                to,
                epoch,
                dead_after_ms,
            } => {
                // A peer on the next list does not vote for this node.
                if to == self.cfg.id && relation != Relation::Ahead {
                    self.on_ack(now, from, epoch, dead_after_ms);
                }
            }
            Body::Nack {
                to,
                epoch,
                promised,
                reason: _,
            } => {
                self.known = self.known.max(promised);
                if to == self.cfg.id {
                    self.on_nack(now, from, epoch);
                }
            }
            Body::Resign {
                epoch,
                successor,
                leaving,
            } => self.on_resign(now, from, epoch, successor, leaving),
        }
    }

    /// The change into this node's list is committed (§3.19), as it saw
    /// itself or heard from a member on the list; `previous` is the digest
    /// before, which a node that started on this list learns so.
    fn commit(&mut self, now: Time, previous: u32) {
        self.committed = true;
        self.joint_until = self
            .joint_until
            .max(now + self.cfg.timing.membership_wait());
        if self.membership.previous == 0 && previous != 0 {
            self.membership.previous = previous;
            self.peers
                .set_members(&self.cfg.members, self.cfg.id, self.membership);
        }
        self.electorate = self.current_electorate(now);
        self.persist();
        self.send_heartbeat(now);
    }

    /// Whose majorities claims and leases need now; see `electorate`.
    fn current_electorate(&self, now: Time) -> Option<Electorate> {
        if self.outdated {
            return None;
        }
        match &self.previous_members {
            _ if self.committed && now >= self.joint_until => {
                Some(Electorate::single(&self.cfg.members))
            }
            Some(previous) => Some(Electorate::joint(&self.cfg.members, previous)),
            // Committed, within the wait, the list before unknown: the wait
            // must pass first.
            None => None,
        }
    }

    /// Notes a commit this node sees itself (a majority of its list and of
    /// the list before run its list, §3.19), and the end of the joint rule.
    fn watch_commit(&mut self, now: Time) {
        if self.committed {
            let joint = self.electorate.as_ref().map(|e| e.previous().is_some());
            if now >= self.joint_until && joint != Some(false) && !self.outdated {
                self.electorate = self.current_electorate(now);
            }
            return;
        }
        let Some(previous) = &self.previous_members else {
            return;
        };
        let dead_after = self.cfg.timing.dead_after;
        let on_it = |id: NodeId| {
            self.peers.get(&id).is_some_and(|p| {
                p.relation == Relation::Same && p.membership.is_some() && p.alive(now, dead_after)
            })
        };
        let both = Electorate::joint(&self.cfg.members, previous);
        if both.reached(self.cfg.id, on_it) {
            self.commit(now, 0);
        }
    }

    fn on_heartbeat(
        &mut self,
        now: Time,
        from: NodeId,
        seq: Seq,
        hb: Heartbeat,
        relation: Relation,
    ) {
        let me = self.cfg.id;
        let dead_after = self.cfg.timing.dead_after;
        let new_run = self
            .peers
            .get(&from)
            .is_some_and(|p| p.heartbeat_seq == Seq(0));
        self.peers
            .heard_heartbeat(now, dead_after, me, from, seq, &hb, &self.sent_heartbeats);
        if let Some((_, e)) = hb.leader {
            self.known = self.known.max(e);
        }
        let claims_lead = hb.role == Role::Leader && hb.leader.is_some_and(|(l, _)| l == from);
        // A leader on the list before is not followed; one that leads a
        // newer epoch still makes this node's own leadership give way.
        let followable = relation != Relation::Behind || matches!(self.state, State::Leader(_));
        if claims_lead && followable {
            let epoch = hb.leader.map_or(Epoch::default(), |(_, e)| e);
            self.on_leader_heartbeat(now, from, epoch);
        } else {
            let incarnation = self.peers.incarnation(&from);
            if let Some(epoch) = self.promises.leader_stopped(from, incarnation, hb.leader) {
                self.transition(Role::Follower, epoch, None, Reason::LeaderStopped);
            }
        }
        if let State::Leader(l) = &self.state {
            if hb.leader == Some((me, l.epoch))
                && hb.role == Role::Follower
                && relation != Relation::Ahead
            {
                let acked = self.peers.acked(&from).unwrap_or(Seq(0));
                self.on_lease_ack(now, from, acked);
            } else if new_run {
                // The first heartbeat of a peer's new run: echo it at once,
                // so a restarted follower can resume before our lease runs
                // out rather than a heartbeat later.
                self.send_heartbeat(now);
            }
        }
    }

    fn on_leader_heartbeat(&mut self, now: Time, from: NodeId, epoch: Epoch) {
        let dead_after = self.cfg.timing.dead_after;
        if let State::Leader(l) = &self.state {
            if epoch > l.epoch {
                // Another leader holds a newer epoch: our lease cannot be
                // valid. Give way at once.
                self.step_down(now, Reason::NewerLeader, None, false);
            }
            return;
        }
        // Only a heartbeat sent after the leader heard this run counts: a
        // recording of the leader's traffic echoes none of this run's
        // heartbeats, so a replay cannot make this node follow.
        if !self
            .peers
            .get(&from)
            .is_some_and(|p| p.linked(now, dead_after))
        {
            self.out.push_back(Effect::NotFresh { from });
            return;
        }
        if matches!(self.state, State::Candidate(_) | State::Deferring { .. }) {
            self.state = State::Follower;
        }
        // A restarted node may have promised another leader before it
        // crashed: it renews no lease until its quiet period is over, except
        // the one it followed before, if it promised nothing since (§3.16).
        let resumed = self.resume == Some((from, epoch)) && epoch == self.promises.promised();
        if (self.promises.quiet(now) && !resumed) || !self.promises.may_follow(from, epoch, now) {
            return;
        }
        let incarnation = self.peers.incarnation(&from).unwrap_or_default();
        let before = self
            .promises
            .follow(from, epoch, incarnation, now, dead_after);
        self.backoff.reset();
        if self.followed != Some((from, epoch)) {
            // One write per leader change: the epoch followed becomes a
            // promise (no claim at or below it is acked again), and the pair
            // is what a restart may resume.
            self.followed = Some((from, epoch));
            if epoch > self.promises.promised() {
                self.promises.promise(epoch);
            }
            self.persist();
        }
        if before.map(|s| (s.leader, s.epoch, s.confirmed)) != Some((from, epoch, true)) {
            self.transition(Role::Follower, epoch, Some(from), Reason::Following);
        }
        // Answer at once: this heartbeat is our ack of the leader's lease.
        if !matches!(self.state, State::Starting) {
            self.send_heartbeat(now);
        }
    }

    fn on_election(&mut self, now: Time, from: NodeId) {
        if matches!(self.state, State::Starting) {
            return;
        }
        if matches!(self.state, State::Leader(_)) {
            self.send_heartbeat(now);
            return;
        }
        let Some(rank) = self.peers.rank(&from) else {
            return;
        };
        if self.rank() > rank && self.can_lead(now) {
            self.send(now, Body::Answer { to: from });
            // Bully: the answering node runs its own election now, back-off
            // or not, since a lower-ranked one is waiting for it.
            self.backoff.retry_now(now);
        }
    }

    fn on_claim(&mut self, now: Time, from: NodeId, epoch: Epoch) {
        self.known = self.known.max(epoch);
        if now < self.impostor_until {
            // Two hosts share this id: neither may vote.
            return;
        }
        if let State::Candidate(c) = &self.state {
            let my_epoch = c.epoch;
            let higher = self.peers.rank(&from).is_some_and(|r| r > self.rank());
            if higher || my_epoch < epoch {
                // Give way to a higher-ranked claimant, or a newer claim; our
                // own promise of my_epoch stands.
                self.state = State::Follower;
            }
        }
        match self.ack_verdict(now, from, epoch) {
            Verdict::Ack => self.ack(now, from, epoch),
            Verdict::Nack(reason) => {
                let promised = self.promises.promised();
                self.send(
                    now,
                    Body::Nack {
                        to: from,
                        epoch,
                        promised,
                        reason,
                    },
                );
            }
            Verdict::Defer(until) => self.promises.defer(from, epoch, until),
        }
    }

    /// `from` acked our claim of `epoch`, promising `dead_after_ms` on its clock.
    fn on_ack(&mut self, now: Time, from: NodeId, epoch: Epoch, dead_after_ms: u32) {
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        c.ack(from, Duration::from_millis(dead_after_ms.into()));
        self.count_votes(now);
    }

    fn on_nack(&mut self, now: Time, from: NodeId, epoch: Epoch) {
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        if c.epoch != epoch || !c.nack(from) {
            return;
        }
        self.count_votes(now);
    }

    fn on_resign(
        &mut self,
        now: Time,
        from: NodeId,
        epoch: Epoch,
        successor: Option<NodeId>,
        leaving: bool,
    ) {
        self.peers.resigned(from, epoch, leaving);
        let incarnation = self.peers.incarnation(&from);
        if self.promises.leader_resigned(from, incarnation, epoch) {
            self.transition(Role::Follower, epoch, None, Reason::LeaderResigned);
            if let Some(to) = successor {
                self.handover = Some((to, now + self.cfg.timing.dead_after));
            }
        }
    }

    fn on_hook_done(&mut self, now: Time, done: HookDone) {
        match (&self.state, done.kind) {
            (State::Starting, HookKind::Demote) => {
                if self.shutting_down {
                    self.out.push_back(Effect::Exit);
                    return;
                }
                self.state = State::Follower;
                self.send_heartbeat(now);
            }
            (State::Leader(l), HookKind::Promote) if l.epoch == done.epoch => {
                if matches!(done.outcome, HookOutcome::Failed | HookOutcome::TimedOut) {
                    self.holdoff_until = now + self.cfg.holdoff;
                    self.step_down(now, Reason::PromoteFailed, None, false);
                }
            }
            (State::Demoting(d), HookKind::Demote) if d.epoch == done.epoch => {
                let epoch = d.epoch;
                let successor = d.successor;
                let leaving = self.shutting_down;
                self.state = State::Follower;
                self.send(
                    now,
                    Body::Resign {
                        epoch,
                        successor,
                        leaving,
                    },
                );
                if leaving {
                    self.out.push_back(Effect::Exit);
                }
            }
            _ => {}
        }
    }

    fn on_step_down(&mut self, now: Time, to: Option<NodeId>) {
        if !matches!(self.state, State::Leader(_)) {
            let (_, _, leader) = self.reported_role(now);
            let msg = match leader {
                _ if matches!(self.state, State::Demoting(_)) => {
                    "this node is already leaving leadership: its demote hook runs".to_string()
                }
                Some(id) => format!("this node does not lead; node {id} does"),
                None => "this node does not lead and no leader is known".to_string(),
            };
            self.out.push_back(Effect::StepDownResult(Err(msg)));
            return;
        }
        // This node keeps voting after it steps down, so the successor can
        // be elected as long as a quorum, this node included, is linked.
        if !self.quorum_linked(now) {
            let linked = self.linked_count(now);
            self.out.push_back(Effect::StepDownResult(Err(format!(
                "only {linked} members are linked both ways and a quorum is {}: \
                 no successor could be elected",
                self.quorum
            ))));
            return;
        }
        match self.peers.successor(to, now, self.cfg.timing.dead_after) {
            Ok(s) => {
                self.out.push_back(Effect::StepDownResult(Ok(s)));
                self.holdoff_until = now + self.cfg.holdoff;
                self.step_down(now, Reason::StepDown, Some(s), false);
            }
            Err(e) => self.out.push_back(Effect::StepDownResult(Err(e))),
        }
    }

    fn on_shutdown(&mut self, now: Time) {
        self.shutting_down = true;
        match &self.state {
            State::Starting | State::Demoting(_) => {}
            State::Leader(_) => self.step_down(now, Reason::Shutdown, None, true),
            _ => {
                let epoch = self.promises.leaving_epoch();
                self.state = State::Follower;
                self.send(
                    now,
                    Body::Resign {
                        epoch,
                        successor: None,
                        leaving: true,
                    },
                );
                self.out.push_back(Effect::Exit);
            }
        }
    }

    // ----- the election -----

    /// Decides what to do now; called after every input and timeout.
    fn evaluate(&mut self, now: Time) {
        self.watch_commit(now);
        let out = &mut self.out;
        self.peers
            .report_liveness(now, self.cfg.timing.dead_after, |c| {
                out.push_back(Effect::Member(c))
            });
        if self.shutting_down && !matches!(self.state, State::Leader(_)) {
            self.timers.stop_all();
            return;
        }
        if let Some(s) = self.promises.expire(now) {
            if s.confirmed {
                let silent_for = self.peers.get(&s.leader).and_then(|p| p.last_heard);
                self.out.push_back(Effect::Transition(Transition {
                    role: Role::Follower,
                    epoch: s.epoch,
                    leader: None,
                    reason: Reason::LeaderLost,
                    lost: Some(LostLeader {
                        id: s.leader,
                        silent_for: silent_for.map(|t| now.since(t)),
                    }),
                }));
            }
        }
        if self.handover.is_some_and(|(_, until)| now >= until) {
            self.handover = None;
        }
        self.try_pending(now);
        match &self.state {
            State::Starting | State::Demoting(_) => {}
            State::Leader(l) => {
                if now >= l.lease_end {
                    self.step_down(now, Reason::LeaseExpired, None, false);
                } else if !self.healthy {
                    self.step_down(now, Reason::HealthCheckFailed, None, false);
                } else if !self.storage_ok {
                    self.step_down(now, Reason::StateUnwritable, None, false);
                } else if now < self.impostor_until {
                    self.step_down(now, Reason::DuplicateId, None, false);
                } else if let Some(h) = self.preemptor(now) {
                    self.step_down(now, Reason::Preempted, Some(h), false);
                }
            }
            State::Candidate(c) => {
                if now >= c.deadline {
                    self.lose_claim(now);
                }
            }
            State::Follower | State::Deferring { .. } => self.maybe_claim(now),
        }
        self.arm_timers(now);
    }

    fn maybe_claim(&mut self, now: Time) {
        if self.promises.sticky.is_some()
            || self.promises.quiet(now)
            || self.backoff.waiting(now)
            || !self.can_lead(now)
        {
            if matches!(self.state, State::Deferring { .. }) && self.promises.sticky.is_some() {
                self.state = State::Follower;
            }
            return;
        }
        match self.handover {
            Some((to, _)) if to == self.cfg.id => return self.claim(now),
            Some(_) => return,
            None => {}
        }
        let dead_after = self.cfg.timing.dead_after;
        if self.peers.leads_linked(now, dead_after) {
            // A leader hears us and we hear it: its next heartbeat makes us
            // follow. A claim would only be refused, and would raise our
            // promise past the epoch we follow, so that our next restart
            // could not resume (§3.16).
            return;
        }
        let higher_alive = self.peers.outranks(self.rank(), now, dead_after);
        match self.state {
            _ if !higher_alive => self.claim(now),
            State::Deferring { until } if now >= until => self.claim(now),
            State::Deferring { .. } => {}
            _ => {
                self.state = State::Deferring {
                    until: now + self.cfg.timing.election_timeout(),
                };
                self.send(now, Body::Election);
            }
        }
    }

    fn claim(&mut self, now: Time) {
        let Some(epoch) = self.promises.claimable(self.known) else {
            return;
        };
        self.promise(epoch);
        self.state = State::Candidate(Candidacy::new(epoch, now));
        self.transition(Role::Candidate, epoch, None, Reason::Claim);
        self.send_vote(now, epoch, Body::Claim { epoch });
    }

    /// Sends a Claim or Ack of `epoch` now if that promise is on disk, or
    /// holds it until `Input::Persisted` says it is.
    fn send_vote(&mut self, now: Time, epoch: Epoch, body: Body) {
        if self.promises.is_durable(epoch) {
            self.release(now, epoch, body);
        } else {
            self.promises.hold(epoch, body);
        }
    }

    /// Sends a vote whose epoch is on disk, if it still stands: a claim of
    /// the candidacy still waiting for it, an ack of the promise still held.
    fn release(&mut self, now: Time, epoch: Epoch, body: Body) {
        if now < self.impostor_until {
            return;
        }
        match body {
            Body::Claim { .. } => {
                let waiting = matches!(&self.state,
                    State::Candidate(c) if c.epoch == epoch && c.waiting());
                if !waiting {
                    return;
                }
                let seq = self.send(now, body);
                let deadline = now + self.cfg.timing.election_timeout();
                if let State::Candidate(c) = &mut self.state {
                    c.sent(seq, now, deadline);
                }
                self.count_votes(now);
            }
            Body::Ack { to, .. } => {
                if self.promises.backs_ack(to, epoch, now) {
                    self.send(now, body);
                }
            }
            _ => {
                self.send(now, body);
            }
        }
    }

    fn on_persisted(&mut self, now: Time, promised: Epoch) {
        self.promises.persisted(promised);
        while let Some((epoch, body)) = self.promises.next_ready() {
            self.release(now, epoch, body);
        }
    }

    /// A promise did not reach the disk: its vote is never sent, a claim
    /// waiting for it is lost, and the node is not eligible until a write
    /// succeeds again (`Input::Storage { ok: true }`). The promise stands in
    /// memory, so nothing at or below it is promised again in this run.
    fn on_persist_failed(&mut self, now: Time, promised: Epoch) {
        self.promises.discard_from(promised);
        self.storage_ok = false;
        let lost = matches!(&self.state,
            State::Candidate(c) if c.epoch >= promised && c.waiting());
        if lost {
            self.lose_claim(now);
        }
        self.send_heartbeat(now);
    }

    fn count_votes(&mut self, now: Time) {
        let State::Candidate(c) = &self.state else {
            return;
        };
        let me = self.cfg.id;
        let Some(electorate) = &self.electorate else {
            return self.lose_claim(now);
        };
        match c.tally(electorate, me) {
            VoteResult::Pending => {}
            VoteResult::Lost => self.lose_claim(now),
            // Acks that arrive after the lease they back has run out, or a
            // candidate that lost its health meanwhile, win nothing.
            VoteResult::Won
                if !self.eligible(now) || c.lease_end(&self.cfg.timing, electorate, me) <= now =>
            {
                self.lose_claim(now)
            }
            VoteResult::Won => self.become_leader(now),
        }
    }

    /// The claim failed: back off for a random while, longer after each
    /// failure in a row, then try again with a higher epoch. Our own promise
    /// of the claimed epoch stands.
    fn lose_claim(&mut self, now: Time) {
        let State::Candidate(c) = &self.state else {
            return;
        };
        let epoch = c.epoch;
        self.state = State::Follower;
        self.backoff
            .lost(now, self.cfg.timing.heartbeat, &mut self.rng);
        self.transition(Role::Follower, epoch, None, Reason::ClaimLost);
    }

    fn become_leader(&mut self, now: Time) {
        let State::Candidate(c) = &self.state else {
            return;
        };
        let Some(leadership) = self
            .electorate
            .as_ref()
            .and_then(|e| c.win(&self.cfg.timing, e, self.cfg.id))
        else {
            // Unreachable: acks answer a claim that was sent.
            return;
        };
        let epoch = leadership.epoch;
        self.state = State::Leader(leadership);
        // Leading again after a preemption: that successor did not make it.
        self.failed_handover = self
            .preempted_by
            .take()
            .map(|to| FailedHandover::after(self.failed_handover, to, now));
        self.promises.sticky = None;
        self.promises.pending = None;
        self.handover = None;
        self.backoff.reset();
        self.transition(Role::Leader, epoch, Some(self.cfg.id), Reason::Elected);
        self.run_hook(HookKind::Promote, epoch, Some(self.cfg.id), Reason::Elected);
        self.send_heartbeat(now);
    }

    /// A follower acked our heartbeat `seq`: its promise lasts its own
    /// `dead_after` from that heartbeat's send.
    fn on_lease_ack(&mut self, now: Time, from: NodeId, seq: Seq) {
        let timing = &self.cfg.timing;
        let theirs = timing.lease_for(self.peers.dead_after(&from).unwrap_or_default());
        let ours = timing.lease();
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let Some(electorate) = &self.electorate else {
            return;
        };
        if l.acked(from, seq, theirs, ours, electorate, self.cfg.id) {
            self.arm_timers(now);
        }
    }

    /// Leaves leadership: the demote hook runs now; Resign follows when it is done.
    fn step_down(&mut self, now: Time, reason: Reason, successor: Option<NodeId>, leaving: bool) {
        let State::Leader(l) = &self.state else {
            return;
        };
        let epoch = l.epoch;
        if leaving {
            self.shutting_down = true;
        }
        self.state = State::Demoting(Demotion { epoch, successor });
        self.preempted_by = successor.filter(|_| reason == Reason::Preempted);
        self.timers.stop(Timer::Lease);
        self.timers.stop(Timer::Retransmit);
        self.transition(Role::Follower, epoch, None, reason);
        self.run_hook(HookKind::Demote, epoch, successor, reason);
        self.send_heartbeat(now);
    }

    /// The highest-ranked node that should take over from this leader now.
    fn preemptor(&self, now: Time) -> Option<NodeId> {
        if !self.cfg.preempt {
            return None;
        }
        let (delay, dead_after) = (self.cfg.preempt_delay, self.cfg.timing.dead_after);
        let failed = self.failed_handover;
        self.peers
            .preemptor(self.rank(), delay, failed, now, dead_after)
    }

    // ----- the ack rule -----

    fn ack_verdict(&self, now: Time, from: NodeId, epoch: Epoch) -> Verdict {
        if self.promises.is_stale(epoch) {
            return Verdict::Nack(NackReason::StaleEpoch);
        }
        let wait_limit = now + self.cfg.timing.election_timeout();
        if matches!(self.state, State::Leader(_) | State::Demoting(_)) {
            return Verdict::Nack(NackReason::LiveLeader);
        }
        if matches!(self.state, State::Starting) {
            // Silent until the start-up demote has run.
            return Verdict::Defer(wait_limit);
        }
        if let Some(verdict) = self.promises.bar(now, from, wait_limit) {
            return verdict;
        }
        let favoured = self.handover.is_some_and(|(to, _)| to == from);
        let own = self.can_lead(now).then(|| self.rank());
        if !favoured
            && self
                .peers
                .outranked(from, own, now, self.cfg.timing.dead_after)
        {
            return Verdict::Nack(NackReason::HigherRank);
        }
        Verdict::Ack
    }

    /// Promises `epoch` to `from`: persisted before the Ack leaves.
    fn ack(&mut self, now: Time, from: NodeId, epoch: Epoch) {
        self.promise(epoch);
        if matches!(self.state, State::Deferring { .. } | State::Candidate(_)) {
            self.state = State::Follower;
        }
        let incarnation = self.peers.incarnation(&from).unwrap_or_default();
        let dead_after = self.cfg.timing.dead_after;
        self.promises
            .acked(from, epoch, incarnation, now, dead_after);
        let dead_after_ms = u32::try_from(dead_after.as_millis()).unwrap_or(u32::MAX);
        self.send_vote(
            now,
            epoch,
            Body::Ack {
                to: from,
                epoch,
                dead_after_ms,
            },
        );
    }

    fn try_pending(&mut self, now: Time) {
        let Some(p) = self.promises.pending(now) else {
            return;
        };
        match self.ack_verdict(now, p.from, p.epoch) {
            Verdict::Ack => self.ack(now, p.from, p.epoch),
            Verdict::Nack(_) => self.promises.pending = None,
            Verdict::Defer(_) => {}
        }
    }

    /// Raises the promised epoch and asks the driver to persist it first.
    fn promise(&mut self, epoch: Epoch) {
        self.promises.promise(epoch);
        self.known = self.known.max(epoch);
        self.persist();
    }

    /// Asks the driver to make the promise and the leader followed durable.
    fn persist(&mut self) {
        self.out.push_back(Effect::Persist(Persisted {
            promised: self.promises.promised(),
            leader: self.followed,
            membership: Some(MemberList {
                membership: self.membership,
                committed: self.committed,
                members: self.cfg.members.clone(),
                previous: if self.committed {
                    Vec::new()
                } else {
                    self.previous_members.clone().unwrap_or_default()
                },
            }),
        }));
    }

    /// The start-up demote has ended: the node takes part in the protocol.
    pub fn started(&self) -> bool {
        !matches!(self.state, State::Starting)
    }

    /// The newest heartbeat this node sent, for tests that echo it.
    #[cfg(test)]
    pub(super) fn newest_heartbeat(&self) -> Seq {
        self.sent_heartbeats.newest().unwrap_or_default()
    }

    // ----- views -----

    /// Members linked both ways with this node, itself included: what a
    /// quorum is counted on.
    fn linked_count(&self, now: Time) -> usize {
        1 + self.peers.linked_count(now, self.cfg.timing.dead_after)
    }

    /// Not a witness, healthy, able to persist, out of hold-off, alone with
    /// its id, not stopping, and knowing whose majorities its claims need
    /// (§3.19).
    fn eligible(&self, now: Time) -> bool {
        !self.cfg.witness
            && self.electorate.is_some()
            && self.healthy
            && self.storage_ok
            && now >= self.holdoff_until
            && now >= self.impostor_until
            && !self.shutting_down
    }

    /// Lease first: a leader whose lease has ended gives it up before it
    /// sends, answers or starts anything, however late it woke.
    fn expire_lease(&mut self, now: Time) {
        if self.lease().is_some_and(|(_, end)| now >= end) {
            self.step_down(now, Reason::LeaseExpired, None, false);
        }
    }

    /// Eligible and linked both ways with a quorum.
    fn can_lead(&self, now: Time) -> bool {
        self.eligible(now) && self.quorum_linked(now)
    }

    /// Linked both ways with a majority of every list its claims need, on
    /// lists that vote for it (§3.19).
    fn quorum_linked(&self, now: Time) -> bool {
        let dead_after = self.cfg.timing.dead_after;
        let Some(electorate) = &self.electorate else {
            return false;
        };
        electorate.reached(self.cfg.id, |id| {
            self.peers
                .get(&id)
                .is_some_and(|p| p.relation != Relation::Ahead && p.linked(now, dead_after))
        })
    }

    /// Role, epoch and leader as this node reports them.
    fn reported_role(&self, now: Time) -> (Role, Option<Epoch>, Option<NodeId>) {
        match &self.state {
            State::Leader(l) => (Role::Leader, Some(l.epoch), Some(self.cfg.id)),
            State::Candidate(_) => (Role::Candidate, None, None),
            State::Demoting(d) => (Role::Follower, Some(d.epoch), Some(self.cfg.id)),
            _ => match self.promises.confirmed_leader(now) {
                Some((leader, epoch)) => (Role::Follower, Some(epoch), Some(leader)),
                None => (Role::Follower, None, None),
            },
        }
    }

    /// While leading: an alive follower has not acked our newest heartbeat.
    fn lease_acks_missing(&self, now: Time) -> bool {
        let State::Leader(l) = &self.state else {
            return false;
        };
        let us = (self.cfg.id, l.epoch);
        self.peers
            .unacked(now, self.cfg.timing.dead_after, us, l.newest())
    }

    // ----- output -----

    /// Sends `body` to the group; returns its sequence number.
    fn send(&mut self, now: Time, body: Body) -> Seq {
        self.seq = self.seq.next();
        self.last_sent = now;
        self.out.push_back(Effect::Send(Message {
            from: self.cfg.id,
            incarnation: self.incarnation,
            seq: self.seq,
            priority: self.cfg.priority,
            known_epoch: self.known,
            membership: self.membership,
            body,
        }));
        self.seq
    }

    fn send_heartbeat(&mut self, now: Time) {
        if matches!(self.state, State::Starting) {
            return;
        }
        let (role, epoch, leader) = self.reported_role(now);
        let promise = self
            .promises
            .reported(leader)
            .unwrap_or(self.cfg.timing.dead_after);
        let heartbeat = Heartbeat {
            role,
            leader: leader.zip(epoch),
            can_lead: self.can_lead(now),
            dead_after_ms: u32::try_from(promise.as_millis()).unwrap_or(u32::MAX),
            committed: self.committed,
            heard: self.peers.heard(),
        };
        let seq = self.send(now, Body::Heartbeat(heartbeat));
        self.sent_heartbeats.sent(seq, now);
        let ack_timeout = self.cfg.timing.ack_timeout();
        if let State::Leader(l) = &mut self.state {
            l.sent(seq, now);
            // Our own promise as a member of the quorum renews with each
            // heartbeat.
            if let Some(e) = &self.electorate {
                l.renew(now + self.cfg.timing.lease(), e, self.cfg.id);
            }
            self.timers.set(Timer::Retransmit, now + ack_timeout);
        }
        self.timers
            .set(Timer::Heartbeat, now + self.cfg.timing.heartbeat);
    }

    fn transition(&mut self, role: Role, epoch: Epoch, leader: Option<NodeId>, reason: Reason) {
        self.out.push_back(Effect::Transition(Transition {
            role,
            epoch,
            leader,
            reason,
            lost: None,
        }));
    }

    fn run_hook(&mut self, kind: HookKind, epoch: Epoch, leader: Option<NodeId>, reason: Reason) {
        self.out.push_back(Effect::RunHook(HookRequest {
            kind,
            epoch,
            leader,
            reason,
        }));
    }

    // ----- timers -----

    /// Sets the lease and evaluation timers from the current state.
    fn arm_timers(&mut self, now: Time) {
        let mut wake: Vec<Time> = Vec::with_capacity(8);
        wake.extend(self.promises.ends());
        if let Some((_, until)) = self.handover {
            wake.push(until);
        }
        wake.push(self.holdoff_until);
        wake.push(self.joint_until);
        wake.push(self.impostor_until);
        wake.push(self.backoff.retry_at());
        match &self.state {
            State::Deferring { until } => wake.push(*until),
            State::Candidate(c) if !c.waiting() => wake.push(c.deadline),
            State::Leader(l) => {
                self.timers.set(Timer::Lease, l.lease_end);
                if self.cfg.preempt {
                    let (delay, dead_after) = (self.cfg.preempt_delay, self.cfg.timing.dead_after);
                    let preempts = self.peers.preempts(
                        self.rank(),
                        delay,
                        self.failed_handover,
                        now,
                        dead_after,
                    );
                    wake.extend(preempts.map(|(_, at)| at));
                }
            }
            _ => {}
        }
        // Peers dying change who may claim; look again when the first does.
        let dead_after = self.cfg.timing.dead_after;
        wake.extend(self.peers.deaths(dead_after));
        let next = wake.into_iter().filter(|&t| t > now).min();
        self.timers.set_or_stop(Timer::Evaluate, next);
    }
}

#[cfg(test)]
mod tests;
