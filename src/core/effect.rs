//! What the core asks its driver to do, and what the driver tells it.
//!
//! Architecture Invariant: effects are returned in the order they must be
//! carried out. A `Persist` must be durable before any later effect of the
//! same batch is carried out; the driver stops the node if it cannot persist.

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
}

/// An action the driver must carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Make this state durable before carrying out any later effect.
    Persist(Persisted),
    /// Send to every member (multicast group, or each member in unicast mode).
    Send(Message),
    /// Run this hook after the ones asked for before it, one at a time. A
    /// demote asked for while a promote runs ends that promote at once
    /// (SIGKILL to its process group), so leadership ends promptly.
    RunHook(HookRequest),
    /// The node's role changed; for logs, status and the notify hook.
    Transition(Transition),
    /// The answer to a step-down request.
    StepDownResult(Result<NodeId, String>),
    /// Graceful shutdown has finished: exit now.
    Exit,
}

/// The state that must survive a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Persisted {
    /// The highest epoch this node has promised (by Ack or by its own Claim).
    pub promised: Epoch,
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
    /// Why: `elected`, `startup`, `lease-expired`, `step-down`, ...
    pub reason: &'static str,
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
    pub reason: &'static str,
}
