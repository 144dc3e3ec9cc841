//! What the core asks its driver to do, and what the driver tells it.
//!
//! Architecture Invariant: effects are returned in the order they must be
//! carried out. A `Persist` may complete at any later time, off the event
//! loop: the core itself holds back every Claim and Ack until the driver
//! reports `Input::Persisted` for its epoch, so the driver never edits or
//! gates the core's output.

use std::time::Duration;

use super::membership::Membership;
use super::message::{Message, Role};
use super::types::{Epoch, NodeId};

/// An input to the core, besides the passage of time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An authenticated, decoded message from a peer.
    Message(Message),
    /// A hook the core asked for has finished (or was skipped).
    HookDone(HookDone),
    /// The health check's verdict changed.
    Health {
        /// The check passes.
        ok: bool,
    },
    /// Whether the state directory can be written. A node that cannot
    /// persist a promise must not lead: it resigns and stays ineligible.
    Storage {
        /// The last write (or probe) succeeded.
        ok: bool,
    },
    /// The operator asks the leader to hand over, to `to` or the next-ranked node.
    StepDown {
        /// The preferred successor.
        to: Option<NodeId>,
    },
    /// Stop gracefully: demote if leading, resign, then `Effect::Exit`.
    Shutdown,
    /// Everything up to this epoch asked for by `Effect::Persist` is on disk.
    /// A Claim or Ack waits for this before it leaves.
    Persisted {
        /// The promised epoch now durable.
        promised: Epoch,
    },
    /// Writing this promise failed: the Claim or Ack that waited for it is
    /// never sent, and the node stops being eligible (as `Storage { ok: false }`).
    PersistFailed {
        /// The promise that did not reach the disk.
        promised: Epoch,
    },
    /// A datagram carrying this node's id arrived that this node did not
    /// send, from an incarnation at or above its own: a second host uses
    /// this id. The node neither leads, claims nor acks until it has heard
    /// nothing of it for `IMPOSTOR_WINDOW` dead_afters.
    Impostor,
}

/// An action the driver must carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Make this state durable, then report `Input::Persisted` (or
    /// `Input::PersistFailed`). Later effects need not wait for it.
    Persist(Persisted),
    /// Send to every member (multicast group, or each member in unicast mode).
    Send(Message),
    /// Run this hook after the ones asked for before it, one at a time. A
    /// demote asked for while a promote runs ends that promote at once
    /// (SIGKILL to its process group), so leadership ends promptly.
    RunHook(HookRequest),
    /// The node's role changed; for logs, status and the notify hook.
    Transition(Transition),
    /// A member was heard again, or stopped being heard; for logs only.
    Member(MemberChange),
    /// A leader heartbeat was not followed because it echoes no heartbeat
    /// of this run sent within `dead_after`: a replay of recorded traffic,
    /// a link that works one way, or a leader that has not yet heard this
    /// run. The driver counts it as a dropped datagram.
    NotFresh {
        /// The sender.
        from: NodeId,
    },
    /// A message was ignored because its sender runs a member list this
    /// node cannot work with (§3.19). The driver counts it as a dropped
    /// datagram and logs the difference.
    Foreign {
        /// The sender.
        from: NodeId,
        /// The sender's membership.
        theirs: Membership,
    },
    /// The answer to a step-down request.
    StepDownResult(Result<NodeId, String>),
    /// Graceful shutdown has finished: exit now.
    Exit,
}

/// The state that must survive a crash.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Persisted {
    /// The highest epoch this node has promised (by Ack, by its own Claim,
    /// or by following a leader of that epoch).
    pub promised: Epoch,
    /// The leader and epoch this node last followed. After a restart it may
    /// follow that same leader and epoch at once, quiet period or not, if
    /// the epoch is still its highest promise: nothing else was promised
    /// since (§3.16).
    pub leader: Option<(NodeId, Epoch)>,
    /// The member list this node runs, as far as a restart needs it (§3.19).
    pub membership: Option<MemberList>,
}

/// What a node keeps of its member list across a restart (§3.19).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MemberList {
    /// The list's identity.
    pub membership: Membership,
    /// The change into this list is committed: claims and leases need a
    /// majority of this list alone.
    pub committed: bool,
    /// The ids of this list.
    pub members: Vec<NodeId>,
    /// The ids of the list before, while the change is not committed and
    /// this node took it itself; empty otherwise.
    pub previous: Vec<NodeId>,
}

/// Which hook to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// Take over the resource.
    Promote,
    /// Release the resource.
    Demote,
}

impl HookKind {
    /// The argv word for this hook.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Promote => "promote",
            HookKind::Demote => "demote",
        }
    }
}

/// A request to run a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRequest {
    /// Promote or demote.
    pub kind: HookKind,
    /// The fencing epoch handed to the hook.
    pub epoch: Epoch,
    /// The leader at the time (this node for promote).
    pub leader: Option<NodeId>,
    /// Why the hook runs.
    pub reason: Reason,
}

/// How a hook ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0.
    Ok,
    /// Non-zero exit, killed by a signal, or could not start.
    Failed,
    /// Hit its deadline and was killed.
    TimedOut,
    /// Never started: a later demote cancelled a queued promote, or vice versa.
    Skipped,
}

/// The driver's report that a requested hook finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookDone {
    /// Which hook.
    pub kind: HookKind,
    /// The epoch it was run for.
    pub epoch: Epoch,
    /// How it ended.
    pub outcome: HookOutcome,
}

/// A change of role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The new role.
    pub role: Role,
    /// The epoch led or followed.
    pub epoch: Epoch,
    /// The leader now known, if any.
    pub leader: Option<NodeId>,
    /// Why.
    pub reason: Reason,
    /// With `Reason::LeaderLost`: the leader no longer followed.
    pub lost: Option<LostLeader>,
}

/// The leader a follower stopped following because it fell silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostLeader {
    /// The leader.
    pub id: NodeId,
    /// How long ago it was last heard; `None` if it never was in this run
    /// (a promise resumed after a restart).
    pub silent_for: Option<Duration>,
}

/// A member's liveness as this node sees it changed: heard within
/// `dead_after` (alive) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberChange {
    /// The member.
    pub id: NodeId,
    /// It is alive now.
    pub alive: bool,
    /// It said it was shutting down (a graceful stop), rather than falling
    /// silent.
    pub left: bool,
    /// How long ago it was last heard.
    pub silent_for: Duration,
}

/// Why a node changed role or runs a hook. `as_str` is the word hooks get
/// in `REGENT_REASON` and logs show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The daemon started: the start-up demote.
    Startup,
    /// A quorum acked this node's claim.
    Elected,
    /// This node claimed an epoch and waits for acks.
    Claim,
    /// The claim did not win.
    ClaimLost,
    /// A leader's heartbeat was heard and is followed.
    Following,
    /// The followed leader said it no longer leads.
    LeaderStopped,
    /// The followed leader resigned.
    LeaderResigned,
    /// The followed leader was not heard for dead_after.
    LeaderLost,
    /// The lease ran out without renewal.
    LeaseExpired,
    /// The operator asked for a handover.
    StepDown,
    /// A higher-ranked member took over.
    Preempted,
    /// The daemon is stopping.
    Shutdown,
    /// The health check failed.
    HealthCheckFailed,
    /// The promote hook failed or timed out.
    PromoteFailed,
    /// A leader of a newer epoch was heard.
    NewerLeader,
    /// The state directory cannot be written.
    StateUnwritable,
    /// Another host sends with this node's id.
    DuplicateId,
}

impl Reason {
    /// The word for hooks (`REGENT_REASON`) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::Elected => "elected",
            Reason::Claim => "claim",
            Reason::ClaimLost => "claim-lost",
            Reason::Following => "following",
            Reason::LeaderStopped => "leader-stopped",
            Reason::LeaderResigned => "leader-resigned",
            Reason::LeaderLost => "leader-lost",
            Reason::LeaseExpired => "lease-expired",
            Reason::StepDown => "step-down",
            Reason::Preempted => "preempted",
            Reason::Shutdown => "shutdown",
            Reason::HealthCheckFailed => "health-check-failed",
            Reason::PromoteFailed => "promote-failed",
            Reason::NewerLeader => "newer-leader",
            Reason::StateUnwritable => "state-unwritable",
            Reason::DuplicateId => "duplicate-id",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
