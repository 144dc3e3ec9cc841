//! The election state machine: Bully election inside a quorum, quorum-acked
//! claims, leader leases and fencing epochs.
//!
//! Architecture Invariant: this module does no I/O, reads no clock and draws
//! no global randomness. Time comes in as `now`, randomness from a seed the
//! caller gives, and everything the node wants done comes out as an `Effect`.

mod effect;
mod membership;
mod message;
mod types;

pub use effect::{
    Effect, HookDone, HookKind, HookOutcome, HookRequest, Input, LostLeader, MemberChange,
    MemberList, Persisted, Reason, Transition,
};
pub use membership::{changed as members_changed, digest as members_digest, Membership, Relation};
pub use message::{Body, Heartbeat, Message, NackReason, Role};
pub use types::{Epoch, Incarnation, NodeId, Rank, Seq, Time};

use std::time::Duration;

/// The timing knobs of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Interval between heartbeats.
    pub heartbeat: Duration,
    /// A peer unheard for this long is dead; also the length of every promise.
    pub dead_after: Duration,
    /// Subtracted from the lease to cover timer lateness and hook start.
    pub lease_margin: Duration,
    /// Bound on clock-rate error, in parts per million (10_000 = 1%).
    pub max_drift_ppm: u32,
    /// The longest a demote hook may take and still keep S3: subtracted
    /// from every lease, so the next leader's promote starts only after the
    /// old leader's demote has ended.
    pub demote_budget: Duration,
}

impl Timing {
    /// The lease that a promise of `dead_after` (on the promiser's clock)
    /// backs: the drift bound, less the margin and the demote budget. The
    /// one place the lease formula is written; see `lease.rs` for the proof.
    pub fn lease_for(&self, dead_after: Duration) -> Duration {
        lease_len(
            dead_after,
            self.max_drift_ppm,
            self.lease_margin + self.demote_budget,
        )
    }

    /// The lease this node's own promises back.
    pub fn lease(&self) -> Duration {
        self.lease_for(self.dead_after)
    }

    /// How long a node that takes a new member list waits before it claims:
    /// every promise made under the list before has ended by then, on any
    /// clock within the drift bound (§3.19).
    pub fn membership_wait(&self) -> Duration {
        let drift = self.dead_after.as_nanos() * u128::from(self.max_drift_ppm) * 2 / 1_000_000;
        self.dead_after + Duration::from_nanos(u64::try_from(drift).unwrap_or(u64::MAX))
    }

    /// How long a node waits for an answer to an Election or a Claim.
    fn election_timeout(&self) -> Duration {
        self.heartbeat * 2
    }

    /// How long the leader waits for an alive follower's ack before sending
    /// again. Short, so a lease survives heavy loss: ten tries per heartbeat.
    fn ack_timeout(&self) -> Duration {
        (self.heartbeat / 10).max(Duration::from_millis(1))
    }
}

/// What the core needs to know about its cluster and itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// This node.
    pub id: NodeId,
    /// Every member, this node included.
    pub members: Vec<NodeId>,
    /// The member list's generation: raised by one with each change of
    /// `members` (§3.19).
    pub generation: u32,
    /// This node's priority.
    pub priority: u32,
    /// Timing.
    pub timing: Timing,
    /// A higher-ranked node that comes back takes over.
    pub preempt: bool,
    /// ... after it has been alive and able to lead this long.
    pub preempt_delay: Duration,
    /// Time a node stays ineligible after a failed promote or a step-down.
    pub holdoff: Duration,
    /// This node is a witness: it heartbeats, acks claims and persists its
    /// promises like any member, and counts toward the quorum, but it is
    /// never eligible to lead and asks for no hook, not even the start-up
    /// demote.
    pub witness: bool,
}

mod guard;
mod leadership;
mod lease;
mod node;
mod peers;
mod promises;
mod quorum;
mod rng;
mod status;
mod timers;

pub use guard::{guard_slack, Guard, GuardAction};
pub use lease::{lease_end, lease_len};
pub use node::{Node, IMPOSTOR_WINDOW};
pub use quorum::{quorum, tally, Electorate, VoteResult};
pub use rng::Rng;
pub use status::{PeerStatus, Status};
