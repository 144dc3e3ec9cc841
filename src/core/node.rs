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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::effect::{
    Effect, HookDone, HookKind, HookOutcome, HookRequest, Input, Persisted, Reason, Transition,
};
use super::lease::lease_end;
use super::message::{Body, Heartbeat, Message, NackReason, Role};
use super::quorum::{quorum, tally, VoteResult};
use super::rng::Rng;
use super::types::{Epoch, Incarnation, NodeId, Rank, Seq, Time};
use super::CoreConfig;

/// Lost claims in a row double the back-off at most this many times (8x).
const MAX_BACKOFF_DOUBLINGS: u32 = 3;

/// How many of its own recent heartbeat send times a leader remembers.
const SENT_HISTORY: usize = 256;

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
    promised: Epoch,
    /// The highest promise known to be on disk (`Input::Persisted`).
    durable: Epoch,
    /// Claims and Acks waiting for their epoch to reach the disk, in order.
    held: VecDeque<(Epoch, Body)>,
    known: Epoch,
    peers: BTreeMap<NodeId, Peer>,
    state: State,
    /// The leader (or claimant) this node promised to, and until when.
    sticky: Option<Sticky>,
    /// No acks and no claims before this: a restarted node may have promised
    /// before it crashed.
    quiet_until: Time,
    healthy: bool,
    storage_ok: bool,
    /// Another host uses this node's id: no leading, claiming or acking
    /// before this.
    impostor_until: Time,
    holdoff_until: Time,
    /// A claim this node would ack once its promise to another ends.
    pending: Option<PendingClaim>,
    /// A leader's named successor, favoured until the given time.
    handover: Option<(NodeId, Time)>,
    /// Do not claim before this (back-off after a lost claim).
    retry_at: Time,
    /// Claims lost in a row; the back-off doubles with each, up to 8 times.
    failed_claims: u32,
    shutting_down: bool,
    last_sent: Time,
    timers: [Option<Time>; Timer::COUNT],
    out: VecDeque<Effect>,
}

/// What a node knows of one peer.
#[derive(Clone, Debug)]
struct Peer {
    id: NodeId,
    priority: u32,
    incarnation: Incarnation,
    /// The newest message sequence seen from it (any kind).
    seq: Seq,
    /// The newest heartbeat sequence seen from it.
    heartbeat_seq: Seq,
    last_heard: Option<Time>,
    /// Start of its current unbroken stretch of being alive and able to lead.
    can_lead_since: Option<Time>,
    can_lead: bool,
    role: Role,
    leader: Option<(NodeId, Epoch)>,
    dead_after: Duration,
    /// The newest of this node's heartbeat seqs that the peer reports, as an
    /// ack of our lease when it follows us.
    acked: Seq,
    /// It said it is shutting down; dead until it is heard again.
    left: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sticky {
    leader: NodeId,
    epoch: Epoch,
    until: Time,
    /// The promise length in force when it was last renewed: what our
    /// heartbeats report, so a reload never inflates an ack already given.
    promise: Duration,
    /// A leader heartbeat was heard, not only a claim acked.
    confirmed: bool,
    /// The leader's incarnation when the promise was made.
    incarnation: Incarnation,
}

#[derive(Clone, Copy, Debug)]
struct PendingClaim {
    from: NodeId,
    epoch: Epoch,
    expires: Time,
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
struct Candidacy {
    epoch: Epoch,
    /// The claim's message sequence, the first entry of the lease history;
    /// `None` while the claimed epoch is not yet on disk and the claim waits.
    seq: Option<Seq>,
    sent: Time,
    /// `Time::MAX`-like (never) until the claim is sent.
    deadline: Time,
    acks: BTreeMap<NodeId, Duration>,
    nacks: BTreeSet<NodeId>,
}

#[derive(Clone, Debug)]
struct Leadership {
    epoch: Epoch,
    /// Send times of this leadership's heartbeats (and its claim), by seq.
    sent: VecDeque<(Seq, Time)>,
    /// Per follower: the promise end its newest ack backs.
    promises: BTreeMap<NodeId, Time>,
    lease_end: Time,
}

#[derive(Clone, Debug)]
struct Demotion {
    epoch: Epoch,
    successor: Option<NodeId>,
}

/// The node's timers; `next_timeout` is the earliest set one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
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

/// A snapshot of a node for status, metrics and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// True while the start-up demote runs or a demote is under way.
    pub transitioning: bool,
    /// The epoch it leads, or the epoch of the leader it follows.
    pub epoch: Option<Epoch>,
    /// The leader it follows (itself when leading).
    pub leader: Option<NodeId>,
    /// The highest epoch it promised.
    pub promised: Epoch,
    /// The highest epoch it knows of.
    pub known: Epoch,
    /// Members alive in its view, itself included.
    pub alive: usize,
    /// Quorum size.
    pub quorum: usize,
    /// Healthy and not in hold-off.
    pub eligible: bool,
    /// Time left on the lease while leading.
    pub lease_remaining: Option<Duration>,
    /// Per peer.
    pub peers: Vec<PeerStatus>,
}

/// One peer as seen from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Its rank.
    pub rank: Rank,
    /// Time since it was last heard, if ever.
    pub last_heard: Option<Duration>,
    /// Heard within dead_after.
    pub alive: bool,
    /// It says it is eligible and sees a quorum.
    pub can_lead: bool,
    /// Its reported role.
    pub role: Role,
}

impl Node {
    /// A node starting at `now` with what it persisted (`promised`), a fresh
    /// `incarnation` (strictly above any earlier one), and a seed for jitter.
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
        let peers = cfg
            .members
            .iter()
            .filter(|&&m| m != cfg.id)
            .map(|&id| (id, Peer::new(id)))
            .collect();
        let quorum = quorum(cfg.members.len());
        let quiet_until = now + cfg.timing.dead_after;
        let mut node = Node {
            quorum,
            rng: Rng::new(seed),
            incarnation,
            seq: Seq(0),
            promised: persisted.promised,
            durable: persisted.promised,
            held: VecDeque::new(),
            known: persisted.promised,
            peers,
            state: State::Starting,
            sticky: None,
            quiet_until,
            healthy: true,
            storage_ok: true,
            impostor_until: Time::ZERO,
            holdoff_until: Time::ZERO,
            pending: None,
            handover: None,
            retry_at: Time::ZERO,
            failed_claims: 0,
            shutting_down: false,
            last_sent: now,
            timers: [None; Timer::COUNT],
            out: VecDeque::new(),
            cfg,
        };
        node.out.push_back(Effect::RunHook(HookRequest {
            kind: HookKind::Demote,
            epoch: persisted.promised,
            leader: None,
            reason: Reason::Startup,
        }));
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
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
        match &self.state {
            State::Leader(l) => Some(l.epoch),
            _ => None,
        }
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
        self.timers.iter().flatten().min().copied()
    }

    /// Applies a new configuration (reload). Membership must not change; the
    /// driver refuses such reloads. Promises already made keep their ends.
    pub fn reconfigure(&mut self, cfg: CoreConfig, now: Time) {
        debug_assert_eq!(cfg.id, self.cfg.id);
        self.expire_lease(now);
        self.cfg = cfg;
        self.evaluate(now);
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
        if self.take_due(Timer::Heartbeat, now) {
            self.send_heartbeat(now);
        }
        if self.take_due(Timer::Retransmit, now) && self.lease_acks_missing(now) {
            self.send_heartbeat(now);
        }
        self.take_due(Timer::Lease, now);
        self.take_due(Timer::Evaluate, now);
        self.evaluate(now);
    }

    /// A snapshot for status and metrics.
    pub fn status(&self, now: Time) -> Status {
        let (role, epoch, leader) = self.reported_role(now);
        Status {
            id: self.cfg.id,
            role,
            transitioning: matches!(self.state, State::Starting | State::Demoting(_)),
            epoch: epoch.or(match &self.state {
                State::Demoting(d) => Some(d.epoch),
                _ => None,
            }),
            leader,
            promised: self.promised,
            known: self.known,
            alive: self.alive_count(now),
            quorum: self.quorum,
            eligible: self.eligible(now),
            lease_remaining: match &self.state {
                State::Leader(l) => Some(l.lease_end.since(now)),
                _ => None,
            },
            peers: self
                .peers
                .values()
                .map(|p| PeerStatus {
                    id: p.id,
                    rank: p.rank(),
                    last_heard: p.last_heard.map(|t| now.since(t)),
                    alive: self.alive(p, now),
                    can_lead: p.can_lead,
                    role: p.role,
                })
                .collect(),
        }
    }

    // ----- inputs -----

    fn on_message(&mut self, now: Time, msg: Message) {
        if msg.from == self.cfg.id {
            return;
        }
        let dead_after = self.cfg.timing.dead_after;
        let Some(peer) = self.peers.get_mut(&msg.from) else {
            return;
        };
        // Only newer messages than the newest seen from this sender count.
        if (msg.incarnation, msg.seq) <= (peer.incarnation, peer.seq) {
            return;
        }
        let was_alive = !peer.left && peer.last_heard.is_some_and(|t| now < t + dead_after);
        if msg.incarnation > peer.incarnation {
            peer.heartbeat_seq = Seq(0);
            peer.acked = Seq(0);
        }
        peer.incarnation = msg.incarnation;
        peer.seq = msg.seq;
        peer.priority = msg.priority;
        peer.last_heard = Some(now);
        peer.left = false;
        if !was_alive {
            peer.can_lead_since = None;
        }
        self.known = self.known.max(msg.known_epoch);
        let from = msg.from;
        match msg.body {
            Body::Heartbeat(hb) => self.on_heartbeat(now, from, msg.seq, hb),
            Body::Election => self.on_election(now, from),
            Body::Answer { to } => {
                let extended = now + self.election_timeout();
                if to == self.cfg.id {
                    if let State::Deferring { until } = &mut self.state {
                        *until = extended;
                    }
                }
            }
            Body::Claim { epoch } => self.on_claim(now, from, epoch),
            Body::Ack {
                to,
                epoch,
                dead_after_ms,
            } => {
                if to == self.cfg.id {
                    self.on_ack(
                        now,
                        from,
                        epoch,
                        Duration::from_millis(dead_after_ms.into()),
                    );
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

    fn on_heartbeat(&mut self, now: Time, from: NodeId, seq: Seq, hb: Heartbeat) {
        let me = self.cfg.id;
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.heartbeat_seq = seq;
            peer.role = hb.role;
            peer.leader = hb.leader;
            peer.dead_after = Duration::from_millis(hb.dead_after_ms.into());
            if hb.can_lead {
                peer.can_lead_since.get_or_insert(now);
            } else {
                peer.can_lead_since = None;
            }
            peer.can_lead = hb.can_lead;
            peer.acked = hb
                .heard
                .iter()
                .find(|(id, _)| *id == me)
                .map_or(Seq(0), |&(_, s)| s);
        }
        if let Some((_, e)) = hb.leader {
            self.known = self.known.max(e);
        }
        let claims_lead = hb.role == Role::Leader && hb.leader.is_some_and(|(l, _)| l == from);
        if claims_lead {
            let epoch = hb.leader.map_or(Epoch::default(), |(_, e)| e);
            self.on_leader_heartbeat(now, from, epoch);
        } else if let Some(s) = self.sticky {
            // The leader we follow says it no longer leads that epoch (it
            // resigned and we missed the Resign): the promise guards nothing
            // any more. While it still names itself leader (its demote hook
            // runs) the promise stands. A restarted leader is not taken at
            // its word: the promise then runs out on its own.
            // Only the same incarnation counts: a new one may be another
            // host wrongly using the leader's id while the leader lives.
            let same_process = self.peers.get(&from).map(|p| p.incarnation) == Some(s.incarnation);
            if s.leader == from && same_process && hb.leader != Some((from, s.epoch)) && s.confirmed
            {
                self.sticky = None;
                self.transition(Role::Follower, s.epoch, None, Reason::LeaderStopped);
            }
        }
        if let State::Leader(l) = &self.state {
            if hb.leader == Some((me, l.epoch)) && hb.role == Role::Follower {
                let acked = self.peers.get(&from).map_or(Seq(0), |p| p.acked);
                self.on_lease_ack(now, from, acked);
            }
        }
    }

    fn on_leader_heartbeat(&mut self, now: Time, from: NodeId, epoch: Epoch) {
        let dead_after = self.cfg.timing.dead_after;
        match &self.state {
            State::Leader(l) => {
                if epoch > l.epoch {
                    // Another leader holds a newer epoch: our lease cannot be
                    // valid. Give way at once.
                    self.step_down(now, Reason::NewerLeader, None, false);
                }
                return;
            }
            State::Demoting(_) | State::Starting => {}
            State::Candidate(_) | State::Deferring { .. } => {
                self.state = State::Follower;
            }
            State::Follower => {}
        }
        // A restarted node may have promised another leader before it
        // crashed: it renews no lease until its quiet period is over.
        if now < self.quiet_until {
            return;
        }
        let follow = match self.sticky {
            Some(s) if s.leader == from => epoch >= s.epoch,
            Some(s) if now < s.until => epoch > s.epoch,
            _ => true,
        };
        if !follow {
            return;
        }
        let before = self.sticky;
        // A promise already given keeps its end, even if a reload shortened
        // dead_after since.
        let until = before
            .filter(|s| s.leader == from)
            .map_or(now + dead_after, |s| s.until.max(now + dead_after));
        self.sticky = Some(Sticky {
            leader: from,
            epoch,
            until,
            promise: dead_after,
            incarnation: self
                .peers
                .get(&from)
                .map_or_else(Incarnation::default, |p| p.incarnation),
            confirmed: true,
        });
        self.pending = None;
        self.failed_claims = 0;
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
        let Some(peer) = self.peers.get(&from) else {
            return;
        };
        if self.rank() > peer.rank() && self.can_lead(now) {
            self.send(now, Body::Answer { to: from });
            // Bully: the answering node runs its own election now, back-off
            // or not, since a lower-ranked one is waiting for it.
            self.retry_at = now;
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
            let higher = self
                .peers
                .get(&from)
                .is_some_and(|p| p.rank() > self.rank());
            if higher || my_epoch < epoch {
                // Give way to a higher-ranked claimant, or a newer claim; our
                // own promise of my_epoch stands.
                self.state = State::Follower;
            }
        }
        match self.ack_verdict(now, from, epoch) {
            Verdict::Ack => self.ack(now, from, epoch),
            Verdict::Nack(reason) => {
                let promised = self.promised;
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
            Verdict::Defer(until) => {
                self.pending = Some(PendingClaim {
                    from,
                    epoch,
                    expires: until,
                });
            }
        }
    }

    fn on_ack(&mut self, now: Time, from: NodeId, epoch: Epoch, dead_after: Duration) {
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        c.acks.insert(from, dead_after);
        c.nacks.remove(&from);
        self.count_votes(now);
    }

    fn on_nack(&mut self, now: Time, from: NodeId, epoch: Epoch) {
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        if c.epoch != epoch || c.acks.contains_key(&from) {
            return;
        }
        c.nacks.insert(from);
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
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.can_lead = false;
            peer.can_lead_since = None;
            peer.left = leaving;
            if peer.leader == Some((from, epoch)) {
                peer.leader = None;
                peer.role = Role::Follower;
            }
        }
        if let Some(s) = self.sticky {
            let same_process = self.peers.get(&from).map(|p| p.incarnation) == Some(s.incarnation);
            if s.leader == from && same_process && s.epoch <= epoch {
                // The leader ran its demote hook before resigning: our
                // promise to it may end now.
                self.sticky = None;
                self.transition(Role::Follower, epoch, None, Reason::LeaderResigned);
                if let Some(to) = successor {
                    self.handover = Some((to, now + self.cfg.timing.dead_after));
                }
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
                Some(id) => format!("this node does not lead; node {id} does"),
                None => "this node does not lead and no leader is known".to_string(),
            };
            self.out.push_back(Effect::StepDownResult(Err(msg)));
            return;
        }
        // This node keeps voting after it steps down, so the successor can
        // be elected as long as a quorum, this node included, is alive.
        let alive = self.alive_count(now);
        if alive < self.quorum {
            self.out.push_back(Effect::StepDownResult(Err(format!(
                "only {alive} members are alive and a quorum is {}: no successor could be elected",
                self.quorum
            ))));
            return;
        }
        let successor = match to {
            Some(t) => match self.peers.get(&t) {
                None => Err(format!("node {t} is not a member")),
                Some(p) if !self.alive(p, now) => Err(format!("node {t} is not alive")),
                Some(p) if !p.can_lead => Err(format!(
                    "node {t} cannot lead (unhealthy, in hold-off, or sees no quorum)"
                )),
                Some(_) => Ok(t),
            },
            None => self
                .contenders(now)
                .map(|p| p.id)
                .max_by_key(|&id| self.peers[&id].rank())
                .ok_or_else(|| "no other member can lead".to_string()),
        };
        match successor {
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
                let epoch = self.sticky.map_or(self.promised, |s| s.epoch);
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
        if self.shutting_down && !matches!(self.state, State::Leader(_)) {
            self.timers = [None; Timer::COUNT];
            return;
        }
        if let Some(s) = self.sticky {
            if now >= s.until {
                self.sticky = None;
                if s.confirmed {
                    self.transition(Role::Follower, s.epoch, None, Reason::LeaderLost);
                }
            }
        }
        if self.handover.is_some_and(|(_, until)| now >= until) {
            self.handover = None;
        }
        self.try_pending(now);
        match &self.state {
            State::Starting | State::Demoting(_) => {}
            State::Leader(l) => {
                let lease_end = l.lease_end;
                if now >= lease_end {
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
        if self.sticky.is_some()
            || now < self.quiet_until
            || now < self.retry_at
            || !self.can_lead(now)
        {
            if matches!(self.state, State::Deferring { .. }) && self.sticky.is_some() {
                self.state = State::Follower;
            }
            return;
        }
        match self.handover {
            Some((to, _)) if to == self.cfg.id => return self.claim(now),
            Some(_) => return,
            None => {}
        }
        let higher_alive = self.contenders(now).any(|p| p.rank() > self.rank());
        match self.state {
            _ if !higher_alive => self.claim(now),
            State::Deferring { until } if now >= until => self.claim(now),
            State::Deferring { .. } => {}
            _ => {
                self.state = State::Deferring {
                    until: now + self.election_timeout(),
                };
                self.send(now, Body::Election);
            }
        }
    }

    fn claim(&mut self, now: Time) {
        let highest = self.known.max(self.promised);
        if highest == Epoch(u64::MAX) {
            // No epoch is left above every promise: claiming would reuse
            // one. Only a state file or a key holder can get here.
            return;
        }
        let epoch = highest.next();
        self.promise(epoch);
        self.state = State::Candidate(Candidacy {
            epoch,
            seq: None,
            sent: now,
            deadline: Time(u64::MAX),
            acks: BTreeMap::new(),
            nacks: BTreeSet::new(),
        });
        self.transition(Role::Candidate, epoch, None, Reason::Claim);
        self.send_vote(now, epoch, Body::Claim { epoch });
    }

    /// Sends a Claim or Ack of `epoch` now if that promise is on disk, or
    /// holds it until `Input::Persisted` says it is.
    fn send_vote(&mut self, now: Time, epoch: Epoch, body: Body) {
        if epoch <= self.durable {
            self.release(now, epoch, body);
        } else {
            self.held.push_back((epoch, body));
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
                    State::Candidate(c) if c.epoch == epoch && c.seq.is_none());
                if !waiting {
                    return;
                }
                let seq = self.send(now, body);
                let deadline = now + self.election_timeout();
                if let State::Candidate(c) = &mut self.state {
                    c.seq = Some(seq);
                    c.sent = now;
                    c.deadline = deadline;
                }
                self.count_votes(now);
            }
            Body::Ack { to, .. } => {
                let holds = self
                    .sticky
                    .is_some_and(|s| s.leader == to && s.epoch == epoch && now < s.until);
                if holds {
                    self.send(now, body);
                }
            }
            _ => {
                self.send(now, body);
            }
        }
    }

    fn on_persisted(&mut self, now: Time, promised: Epoch) {
        self.durable = self.durable.max(promised);
        while self.held.front().is_some_and(|(e, _)| *e <= self.durable) {
            if let Some((epoch, body)) = self.held.pop_front() {
                self.release(now, epoch, body);
            }
        }
    }

    /// A promise did not reach the disk: its vote is never sent, a claim
    /// waiting for it is lost, and the node is not eligible until a write
    /// succeeds again (`Input::Storage { ok: true }`). The promise stands in
    /// memory, so nothing at or below it is promised again in this run.
    fn on_persist_failed(&mut self, now: Time, promised: Epoch) {
        self.held.retain(|(e, _)| *e < promised);
        self.storage_ok = false;
        let lost = matches!(&self.state,
            State::Candidate(c) if c.epoch >= promised && c.seq.is_none());
        if lost {
            self.lose_claim(now);
        }
        self.send_heartbeat(now);
    }

    fn count_votes(&mut self, now: Time) {
        let State::Candidate(c) = &self.state else {
            return;
        };
        match tally(self.cfg.members.len(), c.acks.len() + 1, c.nacks.len()) {
            VoteResult::Pending => {}
            VoteResult::Lost => self.lose_claim(now),
            // Acks that arrive after the lease they back has run out, or a
            // candidate that lost its health meanwhile, win nothing.
            VoteResult::Won if !self.eligible(now) || self.claim_lease_end(now) <= now => {
                self.lose_claim(now)
            }
            VoteResult::Won => self.become_leader(now),
        }
    }

    /// The lease a won claim would hold: the quorum-th latest promise end,
    /// counted from the claim's send.
    fn claim_lease_end(&self, _now: Time) -> Time {
        let State::Candidate(c) = &self.state else {
            return Time::ZERO;
        };
        let t = &self.cfg.timing;
        let mut ends: Vec<Time> = c.acks.values().map(|&d| c.sent + t.lease_for(d)).collect();
        ends.push(c.sent + t.lease());
        lease_end(&mut ends, self.quorum).unwrap_or(Time::ZERO)
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
        self.failed_claims = self.failed_claims.saturating_add(1);
        let hb = self.cfg.timing.heartbeat.as_nanos() as u64;
        let scale = 1u64
            << self
                .failed_claims
                .min(MAX_BACKOFF_DOUBLINGS + 1)
                .saturating_sub(1);
        let backoff = self.rng.range(hb / 2, hb + hb / 2).saturating_mul(scale);
        self.retry_at = now + Duration::from_nanos(backoff);
        self.transition(Role::Follower, epoch, None, Reason::ClaimLost);
    }

    fn become_leader(&mut self, now: Time) {
        let State::Candidate(c) = &self.state else {
            return;
        };
        let timing = &self.cfg.timing;
        let promises: BTreeMap<NodeId, Time> = c
            .acks
            .iter()
            .map(|(&id, &d)| (id, c.sent + timing.lease_for(d)))
            .collect();
        let Some(claim_seq) = c.seq else {
            // Unreachable: acks answer a claim that was sent.
            return;
        };
        let mut sent = VecDeque::with_capacity(SENT_HISTORY);
        sent.push_back((claim_seq, c.sent));
        let epoch = c.epoch;
        let claim_sent = c.sent;
        self.state = State::Leader(Leadership {
            epoch,
            sent,
            promises,
            lease_end: Time::ZERO,
        });
        self.renew_lease(claim_sent + self.cfg.timing.lease());
        self.sticky = None;
        self.pending = None;
        self.handover = None;
        self.failed_claims = 0;
        self.transition(Role::Leader, epoch, Some(self.cfg.id), Reason::Elected);
        self.out.push_back(Effect::RunHook(HookRequest {
            kind: HookKind::Promote,
            epoch,
            leader: Some(self.cfg.id),
            reason: Reason::Elected,
        }));
        self.send_heartbeat(now);
    }

    /// A follower acked our heartbeat `seq`: its promise lasts its own
    /// `dead_after` from that heartbeat's send.
    fn on_lease_ack(&mut self, now: Time, from: NodeId, seq: Seq) {
        let timing = &self.cfg.timing;
        let their_dead_after = self
            .peers
            .get(&from)
            .map_or(Duration::ZERO, |p| p.dead_after);
        let theirs = timing.lease_for(their_dead_after);
        let ours = timing.lease();
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let Some(&(_, sent)) = l.sent.iter().find(|(s, _)| *s == seq) else {
            return;
        };
        let slot = l.promises.entry(from).or_insert(Time::ZERO);
        if sent + theirs <= *slot {
            return;
        }
        *slot = sent + theirs;
        let own = l.sent.back().map_or(Time::ZERO, |&(_, t)| t) + ours;
        self.renew_lease(own);
        self.arm_timers(now);
    }

    /// Extends the lease to what a quorum now backs, with our own promise
    /// ending at `own`. A lease never shrinks: each promise it counted stands.
    fn renew_lease(&mut self, own: Time) {
        let quorum = self.quorum;
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let mut ends: Vec<Time> = l.promises.values().copied().collect();
        ends.push(own);
        if let Some(end) = lease_end(&mut ends, quorum) {
            l.lease_end = l.lease_end.max(end);
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
        self.timers[Timer::Lease as usize] = None;
        self.timers[Timer::Retransmit as usize] = None;
        self.transition(Role::Follower, epoch, None, reason);
        self.out.push_back(Effect::RunHook(HookRequest {
            kind: HookKind::Demote,
            epoch,
            leader: successor,
            reason,
        }));
        self.send_heartbeat(now);
    }

    /// The highest-ranked node that should take over from this leader now.
    fn preemptor(&self, now: Time) -> Option<NodeId> {
        if !self.cfg.preempt {
            return None;
        }
        self.contenders(now)
            .filter(|p| p.rank() > self.rank())
            .filter(|p| {
                p.can_lead_since
                    .is_some_and(|t| now >= t + self.cfg.preempt_delay)
            })
            .max_by_key(|p| p.rank())
            .map(|p| p.id)
    }

    // ----- the ack rule -----

    fn ack_verdict(&self, now: Time, from: NodeId, epoch: Epoch) -> Verdict {
        if epoch <= self.promised {
            return Verdict::Nack(NackReason::StaleEpoch);
        }
        let wait_limit = now + self.election_timeout();
        if matches!(self.state, State::Leader(_) | State::Demoting(_)) {
            return Verdict::Nack(NackReason::LiveLeader);
        }
        if matches!(self.state, State::Starting) {
            // Silent until the start-up demote has run.
            return Verdict::Defer(wait_limit);
        }
        if now < self.quiet_until {
            return if self.quiet_until <= wait_limit {
                Verdict::Defer(wait_limit)
            } else {
                Verdict::Nack(NackReason::Starting)
            };
        }
        if let Some(s) = self.sticky {
            if s.leader != from && now < s.until {
                return if s.until <= wait_limit {
                    Verdict::Defer(wait_limit)
                } else {
                    Verdict::Nack(NackReason::LiveLeader)
                };
            }
        }
        let favoured = self.handover.is_some_and(|(to, _)| to == from);
        if !favoured {
            let Some(claimant) = self.peers.get(&from) else {
                return Verdict::Nack(NackReason::HigherRank);
            };
            let rank = claimant.rank();
            let higher_peer = self
                .contenders(now)
                .any(|p| p.id != from && p.rank() > rank);
            let higher_self = self.rank() > rank && self.can_lead(now);
            if higher_peer || higher_self {
                return Verdict::Nack(NackReason::HigherRank);
            }
        }
        Verdict::Ack
    }

    /// Promises `epoch` to `from`: persisted before the Ack leaves.
    fn ack(&mut self, now: Time, from: NodeId, epoch: Epoch) {
        self.promise(epoch);
        self.pending = None;
        if matches!(self.state, State::Deferring { .. } | State::Candidate(_)) {
            self.state = State::Follower;
        }
        self.sticky = Some(Sticky {
            leader: from,
            epoch,
            until: now + self.cfg.timing.dead_after,
            promise: self.cfg.timing.dead_after,
            incarnation: self
                .peers
                .get(&from)
                .map_or_else(Incarnation::default, |p| p.incarnation),
            confirmed: false,
        });
        let dead_after_ms =
            u32::try_from(self.cfg.timing.dead_after.as_millis()).unwrap_or(u32::MAX);
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
        let Some(p) = self.pending else { return };
        if now >= p.expires {
            self.pending = None;
            return;
        }
        match self.ack_verdict(now, p.from, p.epoch) {
            Verdict::Ack => self.ack(now, p.from, p.epoch),
            Verdict::Nack(_) => self.pending = None,
            Verdict::Defer(_) => {}
        }
    }

    /// Raises the promised epoch and asks the driver to persist it first.
    fn promise(&mut self, epoch: Epoch) {
        debug_assert!(epoch > self.promised);
        self.promised = epoch;
        self.known = self.known.max(epoch);
        self.out
            .push_back(Effect::Persist(Persisted { promised: epoch }));
    }

    // ----- views -----

    fn alive(&self, p: &Peer, now: Time) -> bool {
        !p.left
            && p.last_heard
                .is_some_and(|t| now < t + self.cfg.timing.dead_after)
    }

    fn alive_count(&self, now: Time) -> usize {
        1 + self.peers.values().filter(|p| self.alive(p, now)).count()
    }

    /// Healthy, able to persist, out of hold-off, alone with its id and not
    /// stopping.
    fn eligible(&self, now: Time) -> bool {
        self.healthy
            && self.storage_ok
            && now >= self.holdoff_until
            && now >= self.impostor_until
            && !self.shutting_down
    }

    /// Lease first: a leader whose lease has ended gives it up before it
    /// sends, answers or starts anything, however late it woke.
    fn expire_lease(&mut self, now: Time) {
        if let State::Leader(l) = &self.state {
            if now >= l.lease_end {
                self.step_down(now, Reason::LeaseExpired, None, false);
            }
        }
    }

    /// Eligible and sees a quorum alive.
    fn can_lead(&self, now: Time) -> bool {
        self.eligible(now) && self.alive_count(now) >= self.quorum
    }

    /// Alive peers that say they can lead.
    fn contenders(&self, now: Time) -> impl Iterator<Item = &Peer> + '_ {
        self.peers
            .values()
            .filter(move |p| p.can_lead && self.alive(p, now))
    }

    fn election_timeout(&self) -> Duration {
        self.cfg.timing.heartbeat * 2
    }

    /// How long the leader waits for an alive follower's ack before sending
    /// again. Short, so a lease survives heavy loss: ten tries per heartbeat.
    fn ack_timeout(&self) -> Duration {
        (self.cfg.timing.heartbeat / 10).max(Duration::from_millis(1))
    }

    /// Role, epoch and leader as this node reports them.
    fn reported_role(&self, now: Time) -> (Role, Option<Epoch>, Option<NodeId>) {
        match &self.state {
            State::Leader(l) => (Role::Leader, Some(l.epoch), Some(self.cfg.id)),
            State::Candidate(_) => (Role::Candidate, None, None),
            State::Demoting(d) => (Role::Follower, Some(d.epoch), Some(self.cfg.id)),
            _ => match self.sticky {
                Some(s) if s.confirmed && now < s.until => {
                    (Role::Follower, Some(s.epoch), Some(s.leader))
                }
                _ => (Role::Follower, None, None),
            },
        }
    }

    /// While leading: an alive follower has not acked our newest heartbeat.
    fn lease_acks_missing(&self, now: Time) -> bool {
        let State::Leader(l) = &self.state else {
            return false;
        };
        let newest = l.sent.back().map_or(Seq(0), |&(s, _)| s);
        let us = Some((self.cfg.id, l.epoch));
        self.peers
            .values()
            .any(|p| self.alive(p, now) && p.leader == us && p.acked < newest)
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
            body,
        }));
        self.seq
    }

    fn send_heartbeat(&mut self, now: Time) {
        if matches!(self.state, State::Starting) {
            return;
        }
        let (role, epoch, leader) = self.reported_role(now);
        // While following, report the promise that backs our ack of the
        // leader's newest heartbeat, not a dead_after reloaded since.
        let promise = match self.sticky {
            Some(s) if s.confirmed && leader == Some(s.leader) => s.promise,
            _ => self.cfg.timing.dead_after,
        };
        let heartbeat = Heartbeat {
            role,
            leader: leader.zip(epoch),
            can_lead: self.can_lead(now),
            dead_after_ms: u32::try_from(promise.as_millis()).unwrap_or(u32::MAX),
            heard: self
                .peers
                .values()
                .filter(|p| p.heartbeat_seq > Seq(0))
                .map(|p| (p.id, p.heartbeat_seq))
                .collect(),
        };
        let seq = self.send(now, Body::Heartbeat(heartbeat));
        let ack_timeout = self.ack_timeout();
        if let State::Leader(l) = &mut self.state {
            if l.sent.len() == SENT_HISTORY {
                l.sent.pop_front();
            }
            l.sent.push_back((seq, now));
            self.timers[Timer::Retransmit as usize] = Some(now + ack_timeout);
        }
        self.timers[Timer::Heartbeat as usize] = Some(now + self.cfg.timing.heartbeat);
        // Our own promise as a member of the quorum renews with each heartbeat.
        self.renew_lease(now + self.cfg.timing.lease());
    }

    fn transition(&mut self, role: Role, epoch: Epoch, leader: Option<NodeId>, reason: Reason) {
        self.out.push_back(Effect::Transition(Transition {
            role,
            epoch,
            leader,
            reason,
        }));
    }

    // ----- timers -----

    fn take_due(&mut self, timer: Timer, now: Time) -> bool {
        let slot = &mut self.timers[timer as usize];
        if slot.is_some_and(|t| t <= now) {
            *slot = None;
            true
        } else {
            false
        }
    }

    /// Sets the lease and evaluation timers from the current state.
    fn arm_timers(&mut self, now: Time) {
        let mut wake: Vec<Time> = Vec::with_capacity(8);
        if let Some(s) = self.sticky {
            wake.push(s.until);
        }
        if let Some(p) = self.pending {
            wake.push(p.expires);
            wake.push(self.quiet_until);
        }
        if let Some((_, until)) = self.handover {
            wake.push(until);
        }
        wake.push(self.quiet_until);
        wake.push(self.holdoff_until);
        wake.push(self.impostor_until);
        wake.push(self.retry_at);
        match &self.state {
            State::Deferring { until } => wake.push(*until),
            State::Candidate(c) if c.seq.is_some() => wake.push(c.deadline),
            State::Leader(l) => {
                self.timers[Timer::Lease as usize] = Some(l.lease_end);
                if self.cfg.preempt {
                    let delay = self.cfg.preempt_delay;
                    let mine = self.rank();
                    wake.extend(
                        self.contenders(now)
                            .filter(|p| p.rank() > mine)
                            .filter_map(|p| p.can_lead_since.map(|t| t + delay)),
                    );
                }
            }
            _ => {}
        }
        // Peers dying change who may claim; look again when the first does.
        let dead_after = self.cfg.timing.dead_after;
        wake.extend(
            self.peers
                .values()
                .filter_map(|p| p.last_heard.map(|t| t + dead_after)),
        );
        self.timers[Timer::Evaluate as usize] = wake.into_iter().filter(|&t| t > now).min();
    }
}

impl Peer {
    fn new(id: NodeId) -> Peer {
        Peer {
            id,
            priority: 0,
            incarnation: Incarnation::default(),
            seq: Seq(0),
            heartbeat_seq: Seq(0),
            last_heard: None,
            can_lead_since: None,
            can_lead: false,
            role: Role::Follower,
            leader: None,
            dead_after: Duration::ZERO,
            acked: Seq(0),
            left: false,
        }
    }

    fn rank(&self) -> Rank {
        Rank {
            priority: self.priority,
            node: self.id,
        }
    }
}

/// What a node answers to a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Ack,
    Nack(NackReason),
    /// Ack later if still valid: our promise to another ends before this.
    Defer(Time),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Timing;

    const MS: u64 = 1_000_000;

    fn cfg(id: u32, priority: u32) -> CoreConfig {
        CoreConfig {
            id: NodeId(id),
            members: vec![NodeId(1), NodeId(2), NodeId(3)],
            priority,
            timing: Timing {
                heartbeat: Duration::from_millis(100),
                dead_after: Duration::from_millis(300),
                lease_margin: Duration::from_millis(20),
                max_drift_ppm: 10_000,
                demote_budget: Duration::from_millis(25),
            },
            preempt: true,
            preempt_delay: Duration::from_millis(1000),
            holdoff: Duration::from_millis(5000),
        }
    }

    /// A test peer's message stream.
    struct Peer {
        id: u32,
        priority: u32,
        seq: u64,
    }

    impl Peer {
        fn new(id: u32, priority: u32) -> Peer {
            Peer {
                id,
                priority,
                seq: 0,
            }
        }

        fn msg(&mut self, body: Body) -> Input {
            self.seq += 1;
            Input::Message(Message {
                from: NodeId(self.id),
                incarnation: Incarnation(1),
                seq: Seq(self.seq),
                priority: self.priority,
                known_epoch: Epoch(0),
                body,
            })
        }

        fn heartbeat(&mut self, role: Role, leader: Option<(u32, u64)>, can_lead: bool) -> Input {
            self.msg(Body::Heartbeat(Heartbeat {
                role,
                leader: leader.map(|(l, e)| (NodeId(l), Epoch(e))),
                can_lead,
                dead_after_ms: 300,
                heard: Vec::new(),
            }))
        }
    }

    /// Node 1 (priority 100), started and past its quiet period, with peers
    /// 2 and 3 heard as followers that cannot lead (so node 1 would claim
    /// itself only if it could; we keep it unhealthy to stay a pure voter).
    fn voter(promised: u64) -> (Node, Peer, Peer, Time) {
        let mut n = Node::new(
            cfg(1, 100),
            Persisted {
                promised: Epoch(promised),
            },
            Incarnation(1),
            7,
            Time::ZERO,
        );
        let t = Time(0);
        n.handle(
            t,
            Input::HookDone(HookDone {
                kind: HookKind::Demote,
                epoch: Epoch(promised),
                outcome: HookOutcome::Ok,
            }),
        );
        n.handle(t, Input::Health { ok: false });
        let mut p2 = Peer::new(2, 100);
        let mut p3 = Peer::new(3, 100);
        let t = Time(400 * MS);
        n.handle(t, p2.heartbeat(Role::Follower, None, true));
        n.handle(t, p3.heartbeat(Role::Follower, None, true));
        while n.poll_effect().is_some() {}
        (n, p2, p3, t)
    }

    /// What node `n` answered to the last input: Ack, Nack(reason) or
    /// nothing. A promise it asks to persist is reported on disk at `t`.
    fn answer(n: &mut Node, t: Time) -> Option<Result<Epoch, NackReason>> {
        let mut persisted = None;
        let mut reported = false;
        let mut out = None;
        loop {
            let Some(e) = n.poll_effect() else {
                match persisted.take() {
                    Some(promised) if !reported => {
                        n.handle(t, Input::Persisted { promised });
                        persisted = Some(promised);
                        reported = true;
                        continue;
                    }
                    _ => break,
                }
            };
            match e {
                Effect::Persist(p) => persisted = Some(p.promised),
                Effect::Send(Message {
                    body: Body::Ack { epoch, .. },
                    ..
                }) => {
                    assert_eq!(
                        persisted,
                        Some(epoch),
                        "an ack must follow the persist of its epoch"
                    );
                    out = Some(Ok(epoch));
                }
                Effect::Send(Message {
                    body: Body::Nack { reason, .. },
                    ..
                }) => out = Some(Err(reason)),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn ack_rules_table() {
        type Setup = fn(&mut Node, &mut Peer, &mut Peer, Time) -> Time;
        type Answer = Option<Result<Epoch, NackReason>>;
        // what, promised before, setup, claimant, claimed epoch, answer
        type Case = (&'static str, u64, Setup, u32, u64, Answer);
        let nothing: Setup = |_, _, _, t| t;
        let cases: Vec<Case> = vec![
            (
                "a fresh claim above every promise is acked",
                0,
                nothing,
                3,
                1,
                Some(Ok(Epoch(1))),
            ),
            (
                "an epoch at or below a promise is refused",
                5,
                nothing,
                3,
                5,
                Some(Err(NackReason::StaleEpoch)),
            ),
            (
                "one ack per epoch",
                0,
                |n, _, p3, t| {
                    n.handle(t, p3.msg(Body::Claim { epoch: Epoch(1) }));
                    t
                },
                2,
                1,
                Some(Err(NackReason::StaleEpoch)),
            ),
            (
                "a live leader keeps its followers",
                0,
                |n, _, p3, t| {
                    n.handle(t, p3.heartbeat(Role::Leader, Some((3, 1)), true));
                    t
                },
                2,
                2,
                Some(Err(NackReason::LiveLeader)),
            ),
            (
                "the live leader itself may claim again",
                0,
                |n, _, p3, t| {
                    n.handle(t, p3.heartbeat(Role::Leader, Some((3, 1)), true));
                    t
                },
                3,
                2,
                Some(Ok(Epoch(2))),
            ),
            (
                "after the leader's resign the promise ends",
                0,
                |n, _, p3, t| {
                    n.handle(t, p3.heartbeat(Role::Leader, Some((3, 1)), true));
                    n.handle(
                        t,
                        p3.msg(Body::Resign {
                            epoch: Epoch(1),
                            successor: None,
                            leaving: false,
                        }),
                    );
                    t
                },
                2,
                2,
                Some(Ok(Epoch(2))),
            ),
            (
                "a promise near its end defers the ack",
                0,
                |n, p2, _, t| {
                    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 1)), true));
                    t + Duration::from_millis(250)
                },
                3,
                2,
                None,
            ),
            (
                "a higher-ranked node that can lead is preferred",
                0,
                |n, p2, _, t| {
                    n.handle(t, p2.heartbeat(Role::Follower, None, true));
                    t
                },
                3,
                1,
                Some(Ok(Epoch(1))),
            ),
            (
                "a restarted node acks nothing during its quiet period",
                0,
                |_, _, _, _| Time(100 * MS),
                3,
                1,
                None,
            ),
        ];
        for (what, promised, setup, claimant, epoch, want) in cases {
            let (mut n, mut p2, mut p3, t) = voter(promised);
            let t = setup(&mut n, &mut p2, &mut p3, t);
            while n.poll_effect().is_some() {}
            let claim = if claimant == 2 {
                p2.msg(Body::Claim {
                    epoch: Epoch(epoch),
                })
            } else {
                p3.msg(Body::Claim {
                    epoch: Epoch(epoch),
                })
            };
            n.handle(t, claim);
            assert_eq!(answer(&mut n, t), want, "{what}");
        }
    }

    #[test]
    fn lower_ranked_claimant_is_refused_while_a_higher_can_lead() {
        let (mut n, mut p2, mut p3, t) = voter(0);
        p2.priority = 200;
        n.handle(t, p2.heartbeat(Role::Follower, None, true));
        while n.poll_effect().is_some() {}
        n.handle(t, p3.msg(Body::Claim { epoch: Epoch(1) }));
        assert_eq!(answer(&mut n, t), Some(Err(NackReason::HigherRank)));
        // Unless the leader named the claimant as its successor.
        n.handle(t, p2.heartbeat(Role::Leader, Some((2, 1)), true));
        n.handle(
            t,
            p2.msg(Body::Resign {
                epoch: Epoch(1),
                successor: Some(NodeId(3)),
                leaving: false,
            }),
        );
        while n.poll_effect().is_some() {}
        n.handle(t, p3.msg(Body::Claim { epoch: Epoch(2) }));
        assert_eq!(answer(&mut n, t), Some(Ok(Epoch(2))));
    }

    #[test]
    fn a_restarted_node_renews_no_lease_in_its_quiet_period() {
        let mut n = Node::new(
            cfg(1, 100),
            Persisted::default(),
            Incarnation(2),
            7,
            Time::ZERO,
        );
        n.handle(
            Time::ZERO,
            Input::HookDone(HookDone {
                kind: HookKind::Demote,
                epoch: Epoch(0),
                outcome: HookOutcome::Ok,
            }),
        );
        n.handle(Time::ZERO, Input::Health { ok: false });
        let mut p2 = Peer::new(2, 100);
        let mut p3 = Peer::new(3, 100);
        // Before crashing, this node may have promised node 3; now node 2's
        // old lease asks for renewal during the quiet period.
        n.handle(
            Time(100 * MS),
            p2.heartbeat(Role::Leader, Some((2, 1)), true),
        );
        let (_, _, leader) = n.reported_role(Time(100 * MS));
        assert_eq!(leader, None, "no lease renewed during the quiet period");
        while n.poll_effect().is_some() {}
        n.handle(Time(350 * MS), p3.msg(Body::Claim { epoch: Epoch(2) }));
        assert_eq!(answer(&mut n, Time(350 * MS)), Some(Ok(Epoch(2))));
    }

    #[test]
    fn a_deferred_ack_is_sent_when_the_promise_ends() {
        let (mut n, mut p2, mut p3, t) = voter(0);
        n.handle(t, p2.heartbeat(Role::Leader, Some((2, 1)), true));
        let t = t + Duration::from_millis(250);
        while n.poll_effect().is_some() {}
        n.handle(t, p3.msg(Body::Claim { epoch: Epoch(2) }));
        assert_eq!(answer(&mut n, t), None);
        // The ack leaves exactly when the promise to node 2 ends.
        loop {
            let wake = n.next_timeout().expect("a timer for the promise's end");
            n.handle_timeout(wake);
            if let Some(a) = answer(&mut n, t) {
                assert_eq!(a, Ok(Epoch(2)));
                assert_eq!(wake, Time(400 * MS) + Duration::from_millis(300));
                break;
            }
            assert!(wake < Time(700 * MS), "no ack by the promise's end");
        }
    }

    #[test]
    fn claim_persists_before_it_is_sent_and_a_quorum_makes_a_leader() {
        let mut n = Node::new(
            cfg(1, 100),
            Persisted::default(),
            Incarnation(1),
            7,
            Time::ZERO,
        );
        n.handle(
            Time::ZERO,
            Input::HookDone(HookDone {
                kind: HookKind::Demote,
                epoch: Epoch(0),
                outcome: HookOutcome::Ok,
            }),
        );
        let mut p2 = Peer::new(2, 50);
        let t = Time(300 * MS);
        n.handle(t, p2.heartbeat(Role::Follower, None, true));
        let is_claim = |e: &Effect| {
            matches!(
                e,
                Effect::Send(Message {
                    body: Body::Claim { .. },
                    ..
                })
            )
        };
        let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Persist(p) if p.promised == Epoch(1))),
            "{effects:?}"
        );
        assert!(
            !effects.iter().any(is_claim),
            "the claim waits for its epoch to be on disk: {effects:?}"
        );
        n.handle(t, Input::Persisted { promised: Epoch(1) });
        let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
        assert!(effects.iter().any(is_claim), "{effects:?}");
        n.handle(
            t,
            p2.msg(Body::Ack {
                to: NodeId(1),
                epoch: Epoch(1),
                dead_after_ms: 300,
            }),
        );
        assert_eq!(n.leading(), Some(Epoch(1)));
        let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
        assert!(effects.iter().any(|e| matches!(
            e,
            Effect::RunHook(HookRequest {
                kind: HookKind::Promote,
                epoch: Epoch(1),
                ..
            })
        )));
        // The lease ends at the claim's send plus the drift-bounded promise.
        let lease = n.status(t).lease_remaining.expect("leading");
        assert!(lease <= cfg(1, 100).timing.lease());
        assert!(lease > Duration::from_millis(200), "{lease:?}");
    }

    #[test]
    fn a_leader_without_acks_demotes_when_its_lease_ends() {
        let mut n = Node::new(
            cfg(1, 100),
            Persisted::default(),
            Incarnation(1),
            7,
            Time::ZERO,
        );
        n.handle(
            Time::ZERO,
            Input::HookDone(HookDone {
                kind: HookKind::Demote,
                epoch: Epoch(0),
                outcome: HookOutcome::Ok,
            }),
        );
        let mut p2 = Peer::new(2, 50);
        let t = Time(300 * MS);
        n.handle(t, p2.heartbeat(Role::Follower, None, true));
        n.handle(t, Input::Persisted { promised: Epoch(1) });
        n.handle(
            t,
            p2.msg(Body::Ack {
                to: NodeId(1),
                epoch: Epoch(1),
                dead_after_ms: 300,
            }),
        );
        assert_eq!(n.leading(), Some(Epoch(1)));
        while n.poll_effect().is_some() {}
        // No more acks: fire timers until the lease ends.
        let mut now = t;
        while n.leading().is_some() {
            now = n.next_timeout().expect("timers while leading");
            n.handle_timeout(now);
        }
        let demote = std::iter::from_fn(|| n.poll_effect()).any(|e| {
            matches!(
                e,
                Effect::RunHook(HookRequest {
                    kind: HookKind::Demote,
                    reason: Reason::LeaseExpired,
                    ..
                })
            )
        });
        assert!(demote);
        assert!(now <= t + cfg(1, 100).timing.lease());
    }

    #[test]
    fn a_claim_whose_epoch_failed_to_persist_is_never_sent() {
        let mut n = Node::new(
            cfg(1, 100),
            Persisted::default(),
            Incarnation(1),
            7,
            Time::ZERO,
        );
        n.handle(
            Time::ZERO,
            Input::HookDone(HookDone {
                kind: HookKind::Demote,
                epoch: Epoch(0),
                outcome: HookOutcome::Ok,
            }),
        );
        let mut p2 = Peer::new(2, 50);
        let t = Time(300 * MS);
        n.handle(t, p2.heartbeat(Role::Follower, None, true));
        n.handle(t, Input::PersistFailed { promised: Epoch(1) });
        // A late "persisted" for an older write does not release it either.
        n.handle(t, Input::Persisted { promised: Epoch(0) });
        let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
        assert!(
            !effects.iter().any(|e| matches!(
                e,
                Effect::Send(Message {
                    body: Body::Claim { .. },
                    ..
                }) | Effect::RunHook(HookRequest {
                    kind: HookKind::Promote,
                    ..
                })
            )),
            "{effects:?}"
        );
        assert!(
            !n.status(t).eligible,
            "a node that cannot persist is not eligible"
        );
        // Even an ack that arrives now wins nothing.
        n.handle(
            t,
            p2.msg(Body::Ack {
                to: NodeId(1),
                epoch: Epoch(1),
                dead_after_ms: 300,
            }),
        );
        assert_eq!(n.leading(), None);
    }

    #[test]
    fn a_leader_that_wakes_past_its_lease_lets_go_before_it_sends() {
        let mut n = Node::new(
            cfg(1, 100),
            Persisted::default(),
            Incarnation(1),
            7,
            Time::ZERO,
        );
        n.handle(
            Time::ZERO,
            Input::HookDone(HookDone {
                kind: HookKind::Demote,
                epoch: Epoch(0),
                outcome: HookOutcome::Ok,
            }),
        );
        let mut p2 = Peer::new(2, 50);
        let t = Time(300 * MS);
        n.handle(t, p2.heartbeat(Role::Follower, None, true));
        n.handle(t, Input::Persisted { promised: Epoch(1) });
        n.handle(
            t,
            p2.msg(Body::Ack {
                to: NodeId(1),
                epoch: Epoch(1),
                dead_after_ms: 300,
            }),
        );
        assert_eq!(n.leading(), Some(Epoch(1)));
        while n.poll_effect().is_some() {}
        // The loop was stopped for a second; the first thing it sees is an
        // Election, and its heartbeat timer is long due.
        let late = t + Duration::from_secs(1);
        n.handle(late, p2.msg(Body::Election));
        n.handle_timeout(late);
        let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
        let demote = effects.iter().position(|e| {
            matches!(
                e,
                Effect::RunHook(HookRequest {
                    kind: HookKind::Demote,
                    reason: Reason::LeaseExpired,
                    ..
                })
            )
        });
        let first_send = effects.iter().position(|e| matches!(e, Effect::Send(_)));
        assert!(
            demote.is_some() && demote < first_send,
            "the demote comes before anything is sent: {effects:?}"
        );
        let as_leader = effects.iter().any(|e| match e {
            Effect::Send(Message {
                body: Body::Heartbeat(hb),
                ..
            }) => hb.role == Role::Leader,
            _ => false,
        });
        assert!(
            !as_leader,
            "nothing sent as leader after the lease: {effects:?}"
        );
    }

    #[test]
    fn an_impostor_keeps_the_node_out_of_the_election() {
        let (mut n, _p2, mut p3, t) = voter(0);
        n.handle(t, Input::Health { ok: true });
        while n.poll_effect().is_some() {}
        n.handle(t, Input::Impostor);
        assert!(!n.status(t).eligible);
        n.handle(t, p3.msg(Body::Claim { epoch: Epoch(1) }));
        assert_eq!(
            answer(&mut n, t),
            None,
            "no vote while two hosts share the id"
        );
        let later = t + Duration::from_millis(300) * IMPOSTOR_WINDOW;
        n.handle_timeout(later);
        assert!(n.status(later).eligible, "eligible again after the window");
    }
}
