//! What this node knows of the other members: one `Peer` each, in a `Peers`
//! collection ordered by id.
//!
//! A peer's record changes only from what that peer sent (or said on
//! leaving); the questions asked of it (who is alive, who could lead, whose
//! rank is higher, who may preempt a leader or take over from one, what
//! status shows) take `now` and the local `dead_after` as arguments.
//!
//! Architecture Invariant: `Peers` never reads a clock and never changes
//! the node's role; it only answers. It holds no view of this node itself:
//! where this node's rank counts, the node passes it in, and the node
//! combines the answers with its own state.

use std::collections::BTreeMap;
use std::time::Duration;

use super::effect::MemberChange;
use super::membership::{Membership, Relation};
use super::message::{Heartbeat, Message, Role};
use super::status::PeerStatus;
use super::types::{Epoch, Incarnation, NodeId, Rank, Seq, Time};

/// What a node knows of one peer.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    pub(super) id: NodeId,
    pub(super) priority: u32,
    pub(super) incarnation: Incarnation,
    /// The newest message sequence seen from it (any kind).
    pub(super) seq: Seq,
    /// The newest heartbeat sequence seen from it.
    pub(super) heartbeat_seq: Seq,
    pub(super) last_heard: Option<Time>,
    /// Start of its current unbroken stretch of being alive and able to lead.
    pub(super) can_lead_since: Option<Time>,
    pub(super) can_lead: bool,
    pub(super) role: Role,
    pub(super) leader: Option<(NodeId, Epoch)>,
    pub(super) dead_after: Duration,
    /// The newest of this node's heartbeat seqs that the peer reports, as an
    /// ack of our lease when it follows us.
    pub(super) acked: Seq,
    /// When this node sent the heartbeat `acked` names: the peer heard us
    /// after that. `None` if it names none we remember.
    pub(super) echo_sent: Option<Time>,
    /// It said it is shutting down; dead until it is heard again.
    pub(super) left: bool,
    /// The member list it last said it runs.
    pub(super) membership: Option<Membership>,
    /// How that list stands to this node's (§3.19).
    pub(super) relation: Relation,
    /// Its last heartbeat said the change into its list is committed.
    pub(super) committed: bool,
    /// Whether it was alive when its liveness was last reported.
    reported_alive: bool,
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
            echo_sent: None,
            left: false,
            membership: None,
            relation: Relation::Same,
            committed: false,
            reported_alive: false,
        }
    }

    pub(super) fn rank(&self) -> Rank {
        Rank {
            priority: self.priority,
            node: self.id,
        }
    }

    /// Heard within `dead_after` and not gone.
    pub(super) fn alive(&self, now: Time, dead_after: Duration) -> bool {
        !self.left && self.last_heard.is_some_and(|t| now < t + dead_after)
    }

    /// Alive, and it hears us: its newest heartbeat echoes one of ours sent
    /// within `dead_after`. A link counts only if it works both ways.
    pub(super) fn linked(&self, now: Time, dead_after: Duration) -> bool {
        self.alive(now, dead_after) && self.echo_sent.is_some_and(|t| now < t + dead_after)
    }

    /// Takes in what a heartbeat from this peer says; `me` is this node,
    /// whose heartbeats the peer reports having heard, and `sent` tells when
    /// this node sent a heartbeat of a given seq.
    fn heard_heartbeat(
        &mut self,
        now: Time,
        dead_after: Duration,
        me: NodeId,
        seq: Seq,
        hb: &Heartbeat,
        sent: &SentHeartbeats,
    ) {
        self.heartbeat_seq = seq;
        self.role = hb.role;
        self.leader = hb.leader;
        self.dead_after = Duration::from_millis(hb.dead_after_ms.into());
        self.acked = hb
            .heard
            .iter()
            .find(|(id, _)| *id == me)
            .map_or(Seq(0), |&(_, s)| s);
        self.echo_sent = sent.sent_at(self.acked);
        // Preemption waits for an unbroken stretch of both ways.
        if hb.can_lead && self.linked(now, dead_after) {
            self.can_lead_since.get_or_insert(now);
        } else {
            self.can_lead_since = None;
        }
        self.can_lead = hb.can_lead;
        self.committed = hb.committed;
    }

    /// It counts toward this node's quorum: it acks this node's claims and
    /// renews its lease. A peer on the next generation does not (§3.19).
    fn votes(&self) -> bool {
        self.relation != Relation::Ahead
    }

    /// This node would ack its claims: it runs this node's list or the next.
    fn electable(&self) -> bool {
        self.relation != Relation::Behind
    }
}

/// Every other member, by id.
#[derive(Clone, Debug)]
pub(super) struct Peers {
    by_id: BTreeMap<NodeId, Peer>,
    /// This node's own list, which each peer's is compared with.
    mine: Membership,
}

impl Peers {
    /// The members other than `me`, none heard yet.
    pub(super) fn new(members: &[NodeId], me: NodeId, mine: Membership) -> Peers {
        Peers {
            by_id: members
                .iter()
                .filter(|&&m| m != me)
                .map(|&id| (id, Peer::new(id)))
                .collect(),
            mine,
        }
    }

    /// A new member list (§3.19): peers no longer members are forgotten,
    /// new ones start unheard, and every peer's list is compared anew.
    pub(super) fn set_members(&mut self, members: &[NodeId], me: NodeId, mine: Membership) {
        self.by_id.retain(|id, _| members.contains(id));
        for &id in members.iter().filter(|&&m| m != me) {
            self.by_id.entry(id).or_insert_with(|| Peer::new(id));
        }
        self.mine = mine;
        for p in self.by_id.values_mut() {
            p.relation = p.membership.map_or(Relation::Same, |m| mine.relation(&m));
        }
    }

    /// How `id`'s list stands to this node's, if it is a member.
    pub(super) fn relation(&self, id: &NodeId) -> Option<Relation> {
        self.by_id.get(id).map(|p| p.relation)
    }

    /// Members linked both ways whose list satisfies `which`.
    pub(super) fn linked_on(
        &self,
        now: Time,
        dead_after: Duration,
        which: fn(Relation) -> bool,
    ) -> impl Iterator<Item = &Peer> + '_ {
        self.iter()
            .filter(move |p| which(p.relation) && p.linked(now, dead_after))
    }

    pub(super) fn get(&self, id: &NodeId) -> Option<&Peer> {
        self.by_id.get(id)
    }

    /// Every peer, by id.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Peer> + '_ {
        self.by_id.values()
    }

    /// Takes in the envelope of `msg` if it comes from a member and is newer
    /// than anything seen from it; false (and nothing changed) otherwise.
    /// The caller has checked that its list is one this node works with.
    pub(super) fn hear(&mut self, now: Time, dead_after: Duration, msg: &Message) -> bool {
        let mine = self.mine;
        let Some(peer) = self.by_id.get_mut(&msg.from) else {
            return false;
        };
        // Only newer messages than the newest seen from this sender count.
        if (msg.incarnation, msg.seq) <= (peer.incarnation, peer.seq) {
            return false;
        }
        let was_alive = peer.alive(now, dead_after);
        if msg.incarnation > peer.incarnation {
            peer.heartbeat_seq = Seq(0);
            peer.acked = Seq(0);
            peer.echo_sent = None;
        }
        peer.incarnation = msg.incarnation;
        peer.seq = msg.seq;
        peer.priority = msg.priority;
        peer.membership = Some(msg.membership);
        peer.relation = mine.relation(&msg.membership);
        peer.last_heard = Some(now);
        peer.left = false;
        if !was_alive {
            peer.can_lead_since = None;
        }
        true
    }

    /// Takes in a heartbeat `from` a member; see `Peer::heard_heartbeat`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn heard_heartbeat(
        &mut self,
        now: Time,
        dead_after: Duration,
        me: NodeId,
        from: NodeId,
        seq: Seq,
        hb: &Heartbeat,
        sent: &SentHeartbeats,
    ) {
        if let Some(peer) = self.by_id.get_mut(&from) {
            peer.heard_heartbeat(now, dead_after, me, seq, hb, sent);
        }
    }

    /// `from` resigned `epoch` (and is `leaving`, if so): it cannot lead
    /// until its heartbeats say otherwise.
    pub(super) fn resigned(&mut self, from: NodeId, epoch: Epoch, leaving: bool) {
        if let Some(peer) = self.by_id.get_mut(&from) {
            peer.can_lead = false;
            peer.can_lead_since = None;
            peer.left = leaving;
            if peer.leader == Some((from, epoch)) {
                peer.leader = None;
                peer.role = Role::Follower;
            }
        }
    }

    /// The rank `id` last announced, if it is a member.
    pub(super) fn rank(&self, id: &NodeId) -> Option<Rank> {
        self.by_id.get(id).map(Peer::rank)
    }

    /// The incarnation last heard from `id`, if it is a member.
    pub(super) fn incarnation(&self, id: &NodeId) -> Option<Incarnation> {
        self.by_id.get(id).map(|p| p.incarnation)
    }

    /// The promise length `id` last reported, if it is a member.
    pub(super) fn dead_after(&self, id: &NodeId) -> Option<Duration> {
        self.by_id.get(id).map(|p| p.dead_after)
    }

    /// The newest of this node's heartbeats `id` reported hearing, if it is
    /// a member.
    pub(super) fn acked(&self, id: &NodeId) -> Option<Seq> {
        self.by_id.get(id).map(|p| p.acked)
    }

    /// How many peers are alive (this node not counted).
    #[cfg(test)]
    pub(super) fn alive_count(&self, now: Time, dead_after: Duration) -> usize {
        self.iter().filter(|p| p.alive(now, dead_after)).count()
    }

    /// How many peers are linked both ways (this node not counted): what
    /// quorum is counted on.
    /// Peers on the next generation are not counted: they do not ack this
    /// node's claims.
    pub(super) fn linked_count(&self, now: Time, dead_after: Duration) -> usize {
        self.linked_on(now, dead_after, |_| true)
            .filter(|p| p.votes())
            .count()
    }

    /// Peers linked both ways that say they can lead and whose claims this
    /// node would ack (not those a generation behind it).
    pub(super) fn contenders(
        &self,
        now: Time,
        dead_after: Duration,
    ) -> impl Iterator<Item = &Peer> + '_ {
        self.iter()
            .filter(move |p| p.can_lead && p.electable() && p.linked(now, dead_after))
    }

    /// Some peer linked both ways says in its last heartbeat that it leads.
    pub(super) fn leads_linked(&self, now: Time, dead_after: Duration) -> bool {
        self.iter().any(|p| {
            p.role == Role::Leader
                && p.leader.is_some_and(|(id, _)| id == p.id)
                && p.electable()
                && p.linked(now, dead_after)
        })
    }

    /// Some linked contender ranks above `own`.
    pub(super) fn outranks(&self, own: Rank, now: Time, dead_after: Duration) -> bool {
        self.contenders(now, dead_after).any(|p| p.rank() > own)
    }

    /// A claim from `claimant` loses on rank: it is no member, or a linked
    /// contender other than it ranks higher, or `own` does (this node's
    /// rank, given only while it can lead).
    pub(super) fn outranked(
        &self,
        claimant: NodeId,
        own: Option<Rank>,
        now: Time,
        dead_after: Duration,
    ) -> bool {
        let Some(rank) = self.rank(&claimant) else {
            return true;
        };
        let higher_peer = self
            .contenders(now, dead_after)
            .any(|p| p.id != claimant && p.rank() > rank);
        higher_peer || own.is_some_and(|own| own > rank)
    }

    /// The peer a leader stepping down hands over to: `to` if it is a
    /// member linked both ways that can lead, else the highest-ranked contender; or
    /// why there is none.
    pub(super) fn successor(
        &self,
        to: Option<NodeId>,
        now: Time,
        dead_after: Duration,
    ) -> Result<NodeId, String> {
        match to {
            Some(t) => match self.get(&t) {
                None => Err(format!("node {t} is not a member")),
                Some(p) if !p.alive(now, dead_after) => Err(format!("node {t} is not alive")),
                Some(p) if !p.linked(now, dead_after) => Err(format!(
                    "node {t} does not hear this node: the link works one way only"
                )),
                Some(p) if !p.can_lead => Err(format!(
                    "node {t} cannot lead (unhealthy, in hold-off, or sees no quorum)"
                )),
                Some(_) => Ok(t),
            },
            None => self
                .contenders(now, dead_after)
                .max_by_key(|p| p.rank())
                .map(|p| p.id)
                .ok_or_else(|| "no other member can lead".to_string()),
        }
    }

    /// Each peer as status reports it.
    pub(super) fn status(&self, now: Time, dead_after: Duration) -> Vec<PeerStatus> {
        self.iter()
            .map(|p| PeerStatus {
                id: p.id,
                rank: p.rank(),
                last_heard: p.last_heard.map(|t| now.since(t)),
                alive: p.alive(now, dead_after),
                hears_us: p.linked(now, dead_after),
                can_lead: p.can_lead,
                role: p.role,
                membership: p.membership,
            })
            .collect()
    }

    /// Linked contenders ranked above `own` that have been able to lead
    /// without a break, each with the instant it will have been so for
    /// `delay`: from then on it may preempt a leader of rank `own`. A
    /// successor whose handover `failed` waits longer (`FailedHandover`).
    pub(super) fn preempts(
        &self,
        own: Rank,
        delay: Duration,
        failed: Option<FailedHandover>,
        now: Time,
        dead_after: Duration,
    ) -> impl Iterator<Item = (&Peer, Time)> + '_ {
        self.contenders(now, dead_after)
            .filter(move |p| p.rank() > own)
            .filter_map(move |p| p.can_lead_since.map(|since| (p, since)))
            .map(move |(p, since)| {
                let at = match failed {
                    Some(f) if f.to == p.id => f.preempt_at(since, delay),
                    _ => since + delay,
                };
                (p, at)
            })
    }

    /// The highest-ranked peer that may preempt a leader of rank `own` at
    /// `now`; see `preempts`.
    pub(super) fn preemptor(
        &self,
        own: Rank,
        delay: Duration,
        failed: Option<FailedHandover>,
        now: Time,
        dead_after: Duration,
    ) -> Option<NodeId> {
        self.preempts(own, delay, failed, now, dead_after)
            .filter(|&(_, at)| now >= at)
            .max_by_key(|(p, _)| p.rank())
            .map(|(p, _)| p.id)
    }

    /// Some alive peer follows `leader` but has not acked its heartbeat
    /// `newest`.
    pub(super) fn unacked(
        &self,
        now: Time,
        dead_after: Duration,
        leader: (NodeId, Epoch),
        newest: Seq,
    ) -> bool {
        self.iter()
            .any(|p| p.alive(now, dead_after) && p.leader == Some(leader) && p.acked < newest)
    }

    /// Each peer's heartbeat sequence we last heard, for our own heartbeat.
    pub(super) fn heard(&self) -> Vec<(NodeId, Seq)> {
        self.iter()
            .filter(|p| p.heartbeat_seq > Seq(0))
            .map(|p| (p.id, p.heartbeat_seq))
            .collect()
    }

    /// Reports each peer whose liveness changed since it was last reported.
    pub(super) fn report_liveness(
        &mut self,
        now: Time,
        dead_after: Duration,
        mut report: impl FnMut(MemberChange),
    ) {
        for p in self.by_id.values_mut() {
            let alive = p.alive(now, dead_after);
            if alive != p.reported_alive {
                p.reported_alive = alive;
                report(MemberChange {
                    id: p.id,
                    alive,
                    left: p.left,
                    silent_for: p.last_heard.map_or(Duration::ZERO, |t| now.since(t)),
                });
            }
        }
    }

    /// When each peer heard so far dies, or its link goes one-way, unless
    /// heard again.
    pub(super) fn deaths(&self, dead_after: Duration) -> impl Iterator<Item = Time> + '_ {
        self.iter().flat_map(move |p| {
            [p.last_heard, p.echo_sent]
                .into_iter()
                .flatten()
                .map(move |t| t + dead_after)
        })
    }
}

/// A handover by preemption that did not take: the old leader was elected
/// again before the successor led.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FailedHandover {
    /// The successor.
    pub(super) to: NodeId,
    /// When the old leader led again.
    at: Time,
    /// Handovers to `to` that failed in a row, up to `MAX_FAILED_HANDOVERS`.
    count: u32,
}

/// After this many failed handovers in a row, the wait stops doubling.
const MAX_FAILED_HANDOVERS: u32 = 4;

impl FailedHandover {
    /// The failure of a handover to `to` noticed at `at`, after `before`.
    pub(super) fn after(before: Option<FailedHandover>, to: NodeId, at: Time) -> FailedHandover {
        let count = before
            .filter(|f| f.to == to)
            .map_or(1, |f| (f.count + 1).min(MAX_FAILED_HANDOVERS));
        FailedHandover { to, at, count }
    }

    /// When the successor, able to lead without a break since `since`, may
    /// preempt again. If its link broke and started anew after the failure,
    /// as for anyone. Otherwise its stretch counts only from the failure,
    /// and the wait doubles with each failure in a row (up to 8 times
    /// `delay`): a handover that cannot take is tried less and less often,
    /// and one that failed by bad luck (a lost or reordered Resign) is tried
    /// again.
    fn preempt_at(&self, since: Time, delay: Duration) -> Time {
        if since > self.at {
            since + delay
        } else {
            self.at + delay * (1 << (self.count - 1))
        }
    }
}

/// How many of its own heartbeats a node remembers, to date the echoes of
/// them: enough for `dead_after` even while a leader re-sends every
/// heartbeat/10.
const SENT_HEARTBEATS: usize = 256;

/// This node's recent heartbeats: seq and send time, oldest first.
#[derive(Clone, Debug, Default)]
pub(super) struct SentHeartbeats {
    recent: std::collections::VecDeque<(Seq, Time)>,
}

impl SentHeartbeats {
    /// Notes a heartbeat sent at `at`; seqs only grow.
    pub(super) fn sent(&mut self, seq: Seq, at: Time) {
        if self.recent.len() == SENT_HEARTBEATS {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, at));
    }

    /// When heartbeat `seq` was sent, if it is one we remember. An echo of
    /// anything else (older than the memory, or never sent) proves nothing.
    pub(super) fn sent_at(&self, seq: Seq) -> Option<Time> {
        self.recent
            .binary_search_by_key(&seq, |&(s, _)| s)
            .ok()
            .map(|i| self.recent[i].1)
    }

    /// The newest heartbeat sent.
    #[cfg(test)]
    pub(super) fn newest(&self) -> Option<Seq> {
        self.recent.back().map(|&(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::Body;

    const MS: u64 = 1_000_000;
    const DEAD_AFTER: Duration = Duration::from_millis(300);

    fn heartbeat(from: u32, seq: u64, incarnation: u64, can_lead: bool) -> Message {
        Message {
            from: NodeId(from),
            incarnation: Incarnation(incarnation),
            seq: Seq(seq),
            priority: 10 * from,
            known_epoch: Epoch(0),
            membership: Default::default(),
            body: Body::Heartbeat(Heartbeat {
                role: Role::Follower,
                leader: None,
                can_lead,
                dead_after_ms: 300,
                committed: false,
                heard: vec![(NodeId(1), Seq(4))],
            }),
        }
    }

    /// Our heartbeat 4 (the one the test heartbeats echo) left at 5 ms.
    fn sent() -> SentHeartbeats {
        let mut sent = SentHeartbeats::default();
        sent.sent(Seq(3), Time(MS));
        sent.sent(Seq(4), Time(5 * MS));
        sent
    }

    fn hear(peers: &mut Peers, now: Time, msg: &Message) -> bool {
        if !peers.hear(now, DEAD_AFTER, msg) {
            return false;
        }
        if let Body::Heartbeat(hb) = &msg.body {
            peers.heard_heartbeat(now, DEAD_AFTER, NodeId(1), msg.from, msg.seq, hb, &sent());
        }
        true
    }

    #[test]
    fn only_newer_messages_from_members_count() {
        let mut peers = Peers::new(
            &[NodeId(1), NodeId(2), NodeId(3)],
            NodeId(1),
            Membership::default(),
        );
        assert!(peers.get(&NodeId(1)).is_none(), "this node is no peer");
        let t = Time(10 * MS);
        assert!(!hear(&mut peers, t, &heartbeat(9, 1, 1, true)), "no member");
        assert!(hear(&mut peers, t, &heartbeat(2, 5, 1, true)));
        assert!(!hear(&mut peers, t, &heartbeat(2, 5, 1, true)), "a replay");
        assert!(!hear(&mut peers, t, &heartbeat(2, 4, 1, true)), "older");
        assert!(hear(&mut peers, t, &heartbeat(2, 1, 2, true)), "restarted");
        assert_eq!(peers.incarnation(&NodeId(2)), Some(Incarnation(2)));
        assert_eq!(peers.heard(), vec![(NodeId(2), Seq(1))]);
        assert_eq!(peers.get(&NodeId(2)).map(|p| p.acked), Some(Seq(4)));
    }

    #[test]
    fn alive_and_contenders_follow_dead_after_and_leaving() {
        let mut peers = Peers::new(
            &[NodeId(1), NodeId(2), NodeId(3)],
            NodeId(1),
            Membership::default(),
        );
        let t = Time(10 * MS);
        hear(&mut peers, t, &heartbeat(2, 1, 1, true));
        hear(&mut peers, t, &heartbeat(3, 1, 1, false));
        assert_eq!(peers.alive_count(t, DEAD_AFTER), 2);
        let ids: Vec<NodeId> = peers.contenders(t, DEAD_AFTER).map(|p| p.id).collect();
        assert_eq!(ids, vec![NodeId(2)]);
        assert_eq!(
            peers.rank(&NodeId(2)).map(|r| r.priority),
            Some(20),
            "the announced priority"
        );
        let dies = t + DEAD_AFTER;
        assert_eq!(peers.alive_count(Time(dies.0 - 1), DEAD_AFTER), 2);
        assert_eq!(peers.alive_count(dies, DEAD_AFTER), 0);
        // Our heartbeat the peers echo left at 5 ms: the link is one-way
        // from 305 ms on, before they die at 310 ms.
        let one_way = Time(5 * MS) + DEAD_AFTER;
        assert_eq!(peers.linked_count(Time(one_way.0 - 1), DEAD_AFTER), 2);
        assert_eq!(peers.linked_count(one_way, DEAD_AFTER), 0);
        assert_eq!(peers.alive_count(one_way, DEAD_AFTER), 2);
        assert_eq!(peers.deaths(DEAD_AFTER).min(), Some(one_way));
        peers.resigned(NodeId(2), Epoch(1), true);
        assert_eq!(
            peers.alive_count(t, DEAD_AFTER),
            1,
            "a leaving peer is dead"
        );
        assert_eq!(peers.contenders(t, DEAD_AFTER).count(), 0);
    }

    #[test]
    fn a_peer_that_does_not_hear_us_is_alive_but_not_linked() {
        let mut peers = Peers::new(
            &[NodeId(1), NodeId(2), NodeId(3)],
            NodeId(1),
            Membership::default(),
        );
        let t = Time(10 * MS);
        let mut deaf = heartbeat(2, 1, 1, true);
        if let Body::Heartbeat(hb) = &mut deaf.body {
            hb.heard.clear();
        }
        hear(&mut peers, t, &deaf);
        let mut odd = heartbeat(3, 1, 1, true);
        if let Body::Heartbeat(hb) = &mut odd.body {
            hb.heard = vec![(NodeId(1), Seq(99))];
        }
        hear(&mut peers, t, &odd);
        assert_eq!(peers.alive_count(t, DEAD_AFTER), 2);
        assert_eq!(
            peers.linked_count(t, DEAD_AFTER),
            0,
            "one-way links count for nothing"
        );
        assert_eq!(peers.contenders(t, DEAD_AFTER).count(), 0);
        assert_eq!(
            peers.get(&NodeId(2)).and_then(|p| p.can_lead_since),
            None,
            "no preemption stretch without a link"
        );
    }

    #[test]
    fn sent_heartbeats_date_only_what_they_remember() {
        let mut sent = SentHeartbeats::default();
        assert_eq!(sent.sent_at(Seq(1)), None);
        for i in 1..=(SENT_HEARTBEATS as u64 + 10) {
            sent.sent(Seq(2 * i), Time(i));
        }
        assert_eq!(sent.sent_at(Seq(2 * 200)), Some(Time(200)));
        assert_eq!(sent.sent_at(Seq(2 * 200 + 1)), None, "never sent");
        assert_eq!(sent.sent_at(Seq(2)), None, "forgotten");
        assert_eq!(sent.newest(), Some(Seq(2 * (SENT_HEARTBEATS as u64 + 10))));
    }

    #[test]
    fn a_failed_handover_is_tried_again_later_and_later() {
        let delay = Duration::from_millis(500);
        let since = Time(MS);
        let failed = FailedHandover::after(None, NodeId(2), Time(1_000 * MS));
        assert_eq!(failed.preempt_at(since, delay), Time(1_500 * MS));
        let again = FailedHandover::after(Some(failed), NodeId(2), Time(2_000 * MS));
        assert_eq!(again.preempt_at(since, delay), Time(3_000 * MS));
        let mut f = again;
        for _ in 0..10 {
            f = FailedHandover::after(Some(f), NodeId(2), Time(2_000 * MS));
        }
        assert_eq!(
            f.preempt_at(since, delay),
            Time(6_000 * MS),
            "at most 8 delays"
        );
        assert_eq!(
            FailedHandover::after(Some(f), NodeId(3), Time(2_000 * MS)).count,
            1,
            "another successor starts over"
        );
        // A link that broke and started anew after the failure: as anyone.
        assert_eq!(f.preempt_at(Time(2_100 * MS), delay), Time(2_600 * MS));
    }
}
