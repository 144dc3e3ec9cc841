//! Node-level tests: the ack rule, claims, leases and restarts, driven
//! through `handle` and `handle_timeout` as the driver drives them.

use super::*;
use crate::core::{MemberChange, MemberList, Timing};

const MS: u64 = 1_000_000;

fn cfg(id: u32, priority: u32) -> CoreConfig {
    CoreConfig {
        id: NodeId(id),
        members: vec![NodeId(1), NodeId(2), NodeId(3)],
        generation: 1,
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
        witness: false,
    }
}

/// A test peer's message stream.
struct Peer {
    id: u32,
    priority: u32,
    seq: u64,
    /// Node 1's heartbeat its heartbeats echo (0: none, it does not hear 1).
    echo: u64,
    /// The member list it runs: node 1's own unless a test changes it.
    membership: Membership,
}

impl Peer {
    fn new(id: u32, priority: u32) -> Peer {
        Peer {
            id,
            priority,
            seq: 0,
            echo: 0,
            membership: Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)]),
        }
    }

    /// From now on this peer hears node `n`: it echoes `n`'s newest heartbeat.
    fn hears(&mut self, n: &Node) -> &mut Peer {
        self.echo = n.newest_heartbeat().0;
        self
    }

    fn msg(&mut self, body: Body) -> Input {
        self.seq += 1;
        Input::Message(Message {
            from: NodeId(self.id),
            incarnation: Incarnation(1),
            seq: Seq(self.seq),
            priority: self.priority,
            known_epoch: Epoch(0),
            membership: self.membership,
            body,
        })
    }

    fn heartbeat(&mut self, role: Role, leader: Option<(u32, u64)>, can_lead: bool) -> Input {
        self.msg(Body::Heartbeat(Heartbeat {
            role,
            leader: leader.map(|(l, e)| (NodeId(l), Epoch(e))),
            can_lead,
            dead_after_ms: 300,
            committed: true,
            heard: if self.echo > 0 {
                vec![(NodeId(1), Seq(self.echo))]
            } else {
                Vec::new()
            },
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
            leader: None,
            membership: None,
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
    // Node 1 heartbeats at 400 ms, and both peers hear it.
    n.handle_timeout(t);
    p2.hears(&n);
    p3.hears(&n);
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
    // old lease asks for renewal during the quiet period, in a heartbeat
    // that echoes this run (so only the quiet period refuses it).
    p2.hears(&n);
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
    // Node 1 heartbeats at 300 ms and node 2 hears it: linked both ways.
    n.handle_timeout(t);
    p2.hears(&n);
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
    // Node 1 heartbeats at 300 ms and node 2 hears it: linked both ways.
    n.handle_timeout(t);
    p2.hears(&n);
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
    // Node 1 heartbeats at 300 ms and node 2 hears it: linked both ways.
    n.handle_timeout(t);
    p2.hears(&n);
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
    // Node 1 heartbeats at 300 ms and node 2 hears it: linked both ways.
    n.handle_timeout(t);
    p2.hears(&n);
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

#[test]
fn a_higher_node_that_does_not_hear_this_one_does_not_block_its_ack() {
    // Node 2 outranks the claimant and can lead, but its heartbeats do not
    // echo node 1's: the link works one way only, so it counts for nothing,
    // and node 1 acks node 3 (three nodes: n2 -> n1 works, n1 -> n2 does not).
    let (mut n, mut p2, mut p3, t) = voter(0);
    p2.priority = 200;
    p2.echo = 0;
    p3.priority = 50;
    n.handle(t, p2.heartbeat(Role::Follower, None, true));
    n.handle(t, p3.heartbeat(Role::Follower, None, true));
    while n.poll_effect().is_some() {}
    let status = n.status(t);
    assert_eq!(
        status.alive, 2,
        "node 1 and node 3 are linked; node 2 only heard"
    );
    n.handle(t, p3.msg(Body::Claim { epoch: Epoch(1) }));
    assert_eq!(answer(&mut n, t), Some(Ok(Epoch(1))));

    // The same with node 2 hearing node 1: it is a contender, node 3 is refused.
    let (mut n, mut p2, mut p3, t) = voter(0);
    p2.priority = 200;
    p3.priority = 50;
    n.handle(t, p2.heartbeat(Role::Follower, None, true));
    n.handle(t, p3.heartbeat(Role::Follower, None, true));
    while n.poll_effect().is_some() {}
    n.handle(t, p3.msg(Body::Claim { epoch: Epoch(1) }));
    assert_eq!(answer(&mut n, t), Some(Err(NackReason::HigherRank)));
}

#[test]
fn a_node_that_hears_no_quorum_both_ways_does_not_claim() {
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
    n.handle_timeout(t);
    // Node 2 is heard but does not hear node 1.
    n.handle(t, p2.heartbeat(Role::Follower, None, true));
    let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Persist(_))),
        "no claim over a one-way link: {effects:?}"
    );
    assert!(!n.status(t).peers[0].hears_us);
}

/// A node after its start-up demote, with `persisted` on disk.
fn restarted(persisted: Persisted) -> Node {
    let mut n = Node::new(cfg(1, 100), persisted, Incarnation(2), 7, Time::ZERO);
    n.handle(
        Time::ZERO,
        Input::HookDone(HookDone {
            kind: HookKind::Demote,
            epoch: Epoch(0),
            outcome: HookOutcome::Ok,
        }),
    );
    n
}

#[test]
fn a_restarted_node_resumes_the_leader_it_followed_if_it_promised_nothing_since() {
    let t = Time(100 * MS);
    let followed = Persisted {
        promised: Epoch(4),
        leader: Some((NodeId(2), Epoch(4))),
        membership: None,
    };
    let mut n = restarted(followed.clone());
    let mut p2 = Peer::new(2, 100);
    p2.hears(&n);
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 4)), true));
    assert_eq!(
        n.reported_role(t).2,
        Some(NodeId(2)),
        "the promise to node 2 at epoch 4 resumes inside the quiet period"
    );

    // It acked a claim of epoch 5 after following node 2: no resume.
    let mut n = restarted(Persisted {
        promised: Epoch(5),
        ..followed.clone()
    });
    let mut p2 = Peer::new(2, 100);
    p2.hears(&n);
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 4)), true));
    assert_eq!(n.reported_role(t).2, None);

    // Another leader, or another epoch of the same one: no resume.
    let mut n = restarted(followed);
    let mut p3 = Peer::new(3, 100);
    p3.hears(&n);
    n.handle(t, p3.heartbeat(Role::Leader, Some((3, 4)), true));
    assert_eq!(n.reported_role(t).2, None);
    let mut p2 = Peer::new(2, 100);
    p2.hears(&n);
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 5)), true));
    assert_eq!(n.reported_role(t).2, None);
}

#[test]
fn following_a_new_leader_persists_it_with_its_epoch_as_a_promise() {
    let (mut n, mut p2, _, t) = voter(1);
    while n.poll_effect().is_some() {}
    p2.hears(&n);
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 3)), true));
    let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
    let persists: Vec<&Persisted> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(
        persists,
        [&Persisted {
            promised: Epoch(3),
            leader: Some((NodeId(2), Epoch(3))),
            membership: Some(MemberList {
                membership: Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)]),
                committed: true,
                members: vec![NodeId(1), NodeId(2), NodeId(3)],
                previous: Vec::new(),
            }),
        }],
        "{effects:?}"
    );
    // The next heartbeat of the same leader writes nothing.
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 3)), true));
    assert!(!std::iter::from_fn(|| n.poll_effect()).any(|e| matches!(e, Effect::Persist(_))));
    assert_eq!(n.status(t).promised, Epoch(3));
}

#[test]
fn a_leader_heartbeat_that_echoes_no_heartbeat_of_this_run_is_not_followed() {
    let (mut n, mut p2, _, t) = voter(0);
    while n.poll_effect().is_some() {}
    // A recording of node 2 leading, from before this run: it echoes a
    // heartbeat this run never sent.
    p2.echo = n.newest_heartbeat().0 + 1_000;
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 1)), true));
    let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
    assert!(
        effects.contains(&Effect::NotFresh { from: NodeId(2) }),
        "{effects:?}"
    );
    assert_eq!(n.reported_role(t).2, None, "a replay is not followed");
    // The same leader, heard after it heard this run, is.
    p2.hears(&n);
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 1)), true));
    assert_eq!(n.reported_role(t).2, Some(NodeId(2)));
}

#[test]
fn runs_number_their_messages_from_different_starts() {
    let a = restarted(Persisted::default()).newest_heartbeat();
    let mut b = Node::new(
        cfg(1, 100),
        Persisted::default(),
        Incarnation(3),
        8,
        Time::ZERO,
    );
    b.handle(
        Time::ZERO,
        Input::HookDone(HookDone {
            kind: HookKind::Demote,
            epoch: Epoch(0),
            outcome: HookOutcome::Ok,
        }),
    );
    let b = b.newest_heartbeat();
    assert!(a.0 > 1 << 20 && b.0 > 1 << 20, "not from zero: {a:?} {b:?}");
    assert!(a.0.abs_diff(b.0) > 1 << 20, "far apart: {a:?} {b:?}");
}

#[test]
fn a_silent_leader_is_named_when_lost_and_members_are_reported_down_and_up() {
    let (mut n, mut p2, mut p3, t0) = voter(0);
    p2.hears(&n);
    n.handle(t0, p2.heartbeat(Role::Leader, Some((2, 1)), true));
    while n.poll_effect().is_some() {}
    let mut effects = Vec::new();
    let mut t = t0;
    // Node 2 falls silent; node 3 keeps heartbeating.
    while t < t0 + Duration::from_millis(500) {
        t = t + Duration::from_millis(10);
        n.handle_timeout(t);
        if (t.0 - t0.0) % (100 * MS) == 0 {
            p3.hears(&n);
            n.handle(t, p3.heartbeat(Role::Follower, None, true));
        }
        effects.extend(std::iter::from_fn(|| n.poll_effect()).map(|e| (t, e)));
    }
    let down: Vec<_> = effects
        .iter()
        .filter_map(|(at, e)| match e {
            Effect::Member(m) => Some((*at, *m)),
            _ => None,
        })
        .collect();
    assert_eq!(down.len(), 1, "only node 2 changed: {down:?}");
    let (at, m) = down[0];
    assert_eq!((m.id, m.alive, m.left), (NodeId(2), false, false));
    assert_eq!(m.silent_for, at.since(t0));
    assert!(m.silent_for >= Duration::from_millis(300), "{m:?}");
    let lost = effects
        .iter()
        .find_map(|(at, e)| match e {
            Effect::Transition(tr) if tr.reason == Reason::LeaderLost => Some((*at, tr.lost)),
            _ => None,
        })
        .expect("leader-lost");
    assert_eq!(
        lost.1,
        Some(LostLeader {
            id: NodeId(2),
            silent_for: Some(lost.0.since(t0)),
        })
    );

    // Node 2 comes back: reported up once; a second heartbeat reports nothing.
    n.handle(t, p2.heartbeat(Role::Follower, None, true));
    n.handle(t, p2.heartbeat(Role::Follower, None, true));
    let ups: Vec<MemberChange> = std::iter::from_fn(|| n.poll_effect())
        .filter_map(|e| match e {
            Effect::Member(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert!(ups[0].alive && ups[0].id == NodeId(2));
}

/// Node 1's configuration on generation `generation` with members `ids`.
fn listed(generation: u32, ids: &[u32]) -> CoreConfig {
    CoreConfig {
        members: ids.iter().map(|&i| NodeId(i)).collect(),
        generation,
        ..cfg(1, 100)
    }
}

#[test]
fn a_member_list_change_is_refused_with_its_reason_and_changes_nothing() {
    let (mut n, mut p2, _p3, t) = voter(0);
    let before = n.membership();
    let cases: [(CoreConfig, &str); 4] = [
        (
            listed(1, &[1, 2, 3, 4]),
            "generation must go from 1 to 2, not to 1",
        ),
        (
            listed(3, &[1, 2, 3, 4]),
            "generation must go from 1 to 2, not to 3",
        ),
        (listed(2, &[1, 2, 3, 4, 5]), "members 4, 5 change at once"),
        (listed(2, &[1, 2, 3]), "but the member list did not"),
    ];
    for (new, why) in cases {
        let err = n.reconfigure(new, t).expect_err(why);
        assert!(err.contains(why), "{err}");
        assert_eq!(n.membership(), before);
    }
    // Node 3 falls silent: node 1 and 2 are a majority of {1,2,3}, but only
    // two of the four of {1,2,3,4}, which needs three.
    let later = t + Duration::from_millis(350);
    n.handle_timeout(later);
    p2.hears(&n);
    n.handle(later, p2.heartbeat(Role::Follower, None, true));
    let err = n
        .reconfigure(listed(2, &[1, 2, 3, 4]), later)
        .expect_err("no live majority of the new list");
    assert!(
        err.contains("would leave no live quorum: 2 of its 4"),
        "{err}"
    );
    // Without node 2 either, not even the list in force has its majority.
    let alone = later + Duration::from_millis(350);
    n.handle_timeout(alone);
    let err = n
        .reconfigure(listed(2, &[1, 2]), alone)
        .expect_err("no majority of the list in force");
    assert!(
        err.contains("only 1 of the 3 members of generation 1"),
        "{err}"
    );
    assert_eq!(n.membership(), before);
}

#[test]
fn a_follower_takes_a_new_list_only_after_its_leader_and_then_counts_both() {
    let (mut n, mut p2, mut p3, t) = voter(0);
    // Node 2 leads epoch 1 on generation 1; node 1 follows it.
    n.handle(t, p2.heartbeat(Role::Leader, Some((2, 1)), true));
    let _ = answer(&mut n, t);
    assert_eq!(n.reported_role(t).2, Some(NodeId(2)));
    let err = n
        .reconfigure(listed(2, &[1, 2, 3, 4]), t)
        .expect_err("leader first");
    assert!(
        err.contains("node 2 leads on generation 1: reload it first"),
        "{err}"
    );
    let err = n
        .reconfigure(listed(2, &[1, 3]), t)
        .expect_err("the leader is removed");
    assert!(err.contains("hand over first"), "{err}");

    // The leader takes generation 2 first: node 1 still follows it (it is
    // a generation ahead), and may now take the same list.
    let g1 = n.membership();
    let g2 = Membership::of(2, &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)]).after(g1);
    p2.membership = g2;
    let t2 = t + Duration::from_millis(100);
    n.handle(t2, p2.heartbeat(Role::Leader, Some((2, 1)), true));
    assert_eq!(
        n.reported_role(t2).2,
        Some(NodeId(2)),
        "follows a leader one ahead"
    );
    n.reconfigure(listed(2, &[1, 2, 3, 4]), t2)
        .expect("after the leader");
    assert_eq!(n.membership(), g2);
    let s = n.status(t2);
    assert!(
        !s.committed,
        "two of {{1,2,3}} and of {{1,2,3,4}} do not run it yet"
    );
    assert_eq!(s.previous, Some(vec![NodeId(1), NodeId(2), NodeId(3)]));
    let err = n
        .reconfigure(listed(3, &[1, 2, 3]), t2)
        .expect_err("not committed");
    assert!(
        err.contains("the change to generation 2 is not committed yet"),
        "{err}"
    );

    // Node 3 (on generation 1, one behind) is heard; then node 3 takes
    // generation 2 too: three of four and three of three run it.
    p3.hears(&n);
    n.handle(t2, p3.heartbeat(Role::Follower, Some((2, 1)), true));
    assert!(!n.status(t2).committed);
    p3.membership = g2;
    n.handle(t2, p3.heartbeat(Role::Follower, Some((2, 1)), true));
    assert!(n.status(t2).committed, "a majority of both lists runs it");
    // The next change is no longer refused as uncommitted, only because
    // the leader has not taken it.
    let err = n
        .reconfigure(listed(3, &[1, 2, 3]), t2)
        .expect_err("leader first again");
    assert!(
        err.contains("node 2 leads on generation 2: reload it first"),
        "{err}"
    );
}

#[test]
fn a_host_on_another_list_is_ignored_and_reported() {
    let (mut n, _p2, _p3, t) = voter(0);
    let mut stranger = Peer::new(2, 100);
    stranger.membership = Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
    n.handle(t, stranger.heartbeat(Role::Leader, Some((2, 5)), true));
    let effects: Vec<Effect> = std::iter::from_fn(|| n.poll_effect()).collect();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Foreign { from, .. } if *from == NodeId(2))),
        "{effects:?}"
    );
    assert_eq!(n.reported_role(t).2, None, "not followed");
    assert_eq!(n.status(t).known, Epoch(0), "its epoch is not taken in");
    assert_eq!(n.status(t).foreign.len(), 1);
}

#[test]
fn a_host_restarted_on_another_list_of_its_generation_stays_out() {
    let ran = MemberList {
        membership: Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)]),
        committed: true,
        members: vec![NodeId(1), NodeId(2), NodeId(3)],
        previous: Vec::new(),
    };
    let n = Node::new(
        listed(1, &[1, 2, 3, 4]),
        Persisted {
            membership: Some(ran),
            ..Persisted::default()
        },
        Incarnation(2),
        7,
        Time::ZERO,
    );
    let s = n.status(Time(10 * 300 * MS));
    assert!(!s.confirmed && !s.eligible, "{s:?}");
}
