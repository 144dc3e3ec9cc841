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
    /// It said it is shutting down; dead until it is heard again.
    pub(super) left: bool,
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

    /// Takes in what a heartbeat from this peer says; `me` is this node,
    /// whose heartbeats the peer reports having heard.
    fn heard_heartbeat(&mut self, now: Time, me: NodeId, seq: Seq, hb: &Heartbeat) {
        self.heartbeat_seq = seq;
        self.role = hb.role;
        self.leader = hb.leader;
        self.dead_after = Duration::from_millis(hb.dead_after_ms.into());
        if hb.can_lead {
            self.can_lead_since.get_or_insert(now);
        } else {
            self.can_lead_since = None;
        }
        self.can_lead = hb.can_lead;
        self.acked = hb
            .heard
            .iter()
            .find(|(id, _)| *id == me)
            .map_or(Seq(0), |&(_, s)| s);
    }
}

/// Every other member, by id.
#[derive(Clone, Debug)]
pub(super) struct Peers {
    by_id: BTreeMap<NodeId, Peer>,
}

impl Peers {
    /// The members other than `me`, none heard yet.
    pub(super) fn new(members: &[NodeId], me: NodeId) -> Peers {
        Peers {
            by_id: members
                .iter()
                .filter(|&&m| m != me)
                .map(|&id| (id, Peer::new(id)))
                .collect(),
        }
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
    pub(super) fn hear(&mut self, now: Time, dead_after: Duration, msg: &Message) -> bool {
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
        }
        peer.incarnation = msg.incarnation;
        peer.seq = msg.seq;
        peer.priority = msg.priority;
        peer.last_heard = Some(now);
        peer.left = false;
        if !was_alive {
            peer.can_lead_since = None;
        }
        true
    }

    /// Takes in a heartbeat `from` a member; see `Peer::heard_heartbeat`.
    pub(super) fn heard_heartbeat(
        &mut self,
        now: Time,
        me: NodeId,
        from: NodeId,
        seq: Seq,
        hb: &Heartbeat,
    ) {
        if let Some(peer) = self.by_id.get_mut(&from) {
            peer.heard_heartbeat(now, me, seq, hb);
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
    pub(super) fn alive_count(&self, now: Time, dead_after: Duration) -> usize {
        self.iter().filter(|p| p.alive(now, dead_after)).count()
    }

    /// Alive peers that say they can lead.
    pub(super) fn contenders(
        &self,
        now: Time,
        dead_after: Duration,
    ) -> impl Iterator<Item = &Peer> + '_ {
        self.iter()
            .filter(move |p| p.can_lead && p.alive(now, dead_after))
    }

    /// Some alive contender ranks above `own`.
    pub(super) fn outranks(&self, own: Rank, now: Time, dead_after: Duration) -> bool {
        self.contenders(now, dead_after).any(|p| p.rank() > own)
    }

    /// A claim from `claimant` loses on rank: it is no member, or an alive
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

    /// The peer a leader stepping down hands over to: `to` if it is an
    /// alive member that can lead, else the highest-ranked contender; or
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
                can_lead: p.can_lead,
                role: p.role,
            })
            .collect()
    }

    /// Alive contenders ranked above `own` that have been able to lead
    /// without a break, each with the instant it will have been so for
    /// `delay`: from then on it may preempt a leader of rank `own`.
    pub(super) fn preempts(
        &self,
        own: Rank,
        delay: Duration,
        now: Time,
        dead_after: Duration,
    ) -> impl Iterator<Item = (&Peer, Time)> + '_ {
        self.contenders(now, dead_after)
            .filter(move |p| p.rank() > own)
            .filter_map(move |p| p.can_lead_since.map(|t| (p, t + delay)))
    }

    /// The highest-ranked peer that may preempt a leader of rank `own` at
    /// `now`; see `preempts`.
    pub(super) fn preemptor(
        &self,
        own: Rank,
        delay: Duration,
        now: Time,
        dead_after: Duration,
    ) -> Option<NodeId> {
        self.preempts(own, delay, now, dead_after)
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

    /// When each peer heard so far dies unless heard again.
    pub(super) fn deaths(&self, dead_after: Duration) -> impl Iterator<Item = Time> + '_ {
        self.iter()
            .filter_map(move |p| p.last_heard.map(|t| t + dead_after))
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
            body: Body::Heartbeat(Heartbeat {
                role: Role::Follower,
                leader: None,
                can_lead,
                dead_after_ms: 300,
                heard: vec![(NodeId(1), Seq(4))],
            }),
        }
    }

    fn hear(peers: &mut Peers, now: Time, msg: &Message) -> bool {
        if !peers.hear(now, DEAD_AFTER, msg) {
            return false;
        }
        if let Body::Heartbeat(hb) = &msg.body {
            peers.heard_heartbeat(now, NodeId(1), msg.from, msg.seq, hb);
        }
        true
    }

    #[test]
    fn only_newer_messages_from_members_count() {
        let mut peers = Peers::new(&[NodeId(1), NodeId(2), NodeId(3)], NodeId(1));
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
        let mut peers = Peers::new(&[NodeId(1), NodeId(2), NodeId(3)], NodeId(1));
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
        assert_eq!(peers.deaths(DEAD_AFTER).min(), Some(dies));
        peers.resigned(NodeId(2), Epoch(1), true);
        assert_eq!(
            peers.alive_count(t, DEAD_AFTER),
            1,
            "a leaving peer is dead"
        );
        assert_eq!(peers.contenders(t, DEAD_AFTER).count(), 0);
    }
}
