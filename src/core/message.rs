//! The messages nodes exchange, as the core sees them (already authenticated
//! and decoded). Encoding and authentication live in `wire`; this module only
//! says what each message means.

use super::membership::Membership;
use super::types::{Epoch, Incarnation, NodeId, Seq};

/// What every message carries besides its body.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The sender's incarnation: persisted and increased at every start.
    pub incarnation: Incarnation,
    /// Per-incarnation message counter, strictly increasing.
    pub seq: Seq,
    /// The sender's priority; its rank is `(priority, from)`.
    pub priority: u32,
    /// The highest epoch the sender knows of.
    pub known_epoch: Epoch,
    /// The member list the sender runs (§3.19).
    pub membership: Membership,
    /// What the message says.
    pub body: Body,
}

/// The message kinds of the protocol (see docs/PROTOCOL.md).
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Body {
    /// I am alive; here is what I see.
    Heartbeat(Heartbeat),
    /// Bully: I believe I should lead; higher-ranked nodes, answer.
    Election,
    /// Bully: a higher-ranked node is alive and runs its own election.
    Answer {
        /// The node whose Election this answers.
        to: NodeId,
    },
    /// I claim leadership for this epoch; ack if you agree.
    Claim {
        /// The epoch claimed: one more than the highest the claimant knows.
        epoch: Epoch,
    },
    /// I promise: no claim with an epoch at or below `epoch` gets my ack, and
    /// no other leader gets my ack for my `dead_after`.
    Ack {
        /// The claimant.
        to: NodeId,
        /// The claimed epoch.
        epoch: Epoch,
        /// How long my promise lasts, in milliseconds of my clock.
        dead_after_ms: u32,
    },
    /// I refuse your claim, and why.
    Nack {
        /// The claimant.
        to: NodeId,
        /// The refused epoch.
        epoch: Epoch,
        /// The highest epoch I have promised.
        promised: Epoch,
        /// Why.
        reason: NackReason,
    },
    /// I am leaving leadership of `epoch` now; my demote hook has run.
    Resign {
        /// The epoch given up.
        epoch: Epoch,
        /// The node the leader hands over to, if it chose one.
        successor: Option<NodeId>,
        /// The sender is shutting down.
        leaving: bool,
    },
}

/// The body of a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Heartbeat {
    /// The sender's role.
    pub role: Role,
    /// The leader the sender follows (or is) and its epoch.
    pub leader: Option<(NodeId, Epoch)>,
    /// The sender is eligible and sees a quorum: it could lead.
    pub can_lead: bool,
    /// How long the sender's lease promises last, in milliseconds of its clock.
    pub dead_after_ms: u32,
    /// The change into the sender's member list is committed (§3.19): a
    /// majority of that list and of the one before run it.
    pub committed: bool,
    /// The newest message sequence the sender heard from each peer. A follower's
    /// entry for its leader acknowledges that leader's heartbeat (lease renewal).
    pub heard: Vec<(NodeId, Seq)>,
}

/// A node's role as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Role {
    /// Follows a leader or waits for one.
    Follower,
    /// Has claimed an epoch and waits for acks.
    Candidate,
    /// Holds a lease for its epoch.
    Leader,
}

/// Why a claim was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum NackReason {
    /// The epoch is not above one I promised.
    StaleEpoch,
    /// I heard a live leader within dead_after.
    LiveLeader,
    /// A higher-ranked node that can lead is alive.
    HigherRank,
    /// I restarted less than dead_after ago and may have promised before.
    Starting,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}
