//! What a node reports of itself and its peers: the `Status` snapshot that
//! status, metrics and the simulator read.
//!
//! Architecture Invariant: these are plain values, built by `Node::status`
//! and `Peers::status` from `now`. Nothing here changes a node, decides
//! anything or reads a clock.

use std::time::Duration;

use super::membership::Membership;
use super::message::Role;
use super::types::{Epoch, NodeId, Rank};

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
    /// The highest epoch it promised, on disk or not yet: what a write must
    /// make durable.
    pub promised: Epoch,
    /// The highest promise on disk: what survives a crash, and what status
    /// reports.
    pub durable: Epoch,
    /// The highest epoch it knows of.
    pub known: Epoch,
    /// Members linked both ways with it (they hear it and it hears them),
    /// itself included: what its quorum is counted on.
    pub alive: usize,
    /// Quorum size.
    pub quorum: usize,
    /// Healthy and not in hold-off.
    pub eligible: bool,
    /// Time left on the lease while leading.
    pub lease_remaining: Option<Duration>,
    /// The member list this node runs.
    pub membership: Membership,
    /// It knows whose majorities its claims need (§3.19); a node that
    /// started on a list whose change is not committed does not claim.
    pub confirmed: bool,
    /// The change into this list is committed: a majority of it and of the
    /// list before run it (§3.19).
    pub committed: bool,
    /// The list before, while claims and leases need its majority too.
    pub previous: Option<Vec<NodeId>>,
    /// Per peer.
    pub peers: Vec<PeerStatus>,
    /// Hosts heard within dead_after whose member list this node cannot
    /// work with, members or not, with theirs.
    pub foreign: Vec<(NodeId, Membership)>,
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
    /// It hears this node: its heartbeats echo a recent one of ours.
    pub hears_us: bool,
    /// It says it is eligible and sees a quorum.
    pub can_lead: bool,
    /// Its reported role.
    pub role: Role,
    /// The member list it last said it runs, once heard.
    pub membership: Option<Membership>,
}
