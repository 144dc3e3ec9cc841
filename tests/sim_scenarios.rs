//! Scripted simulator runs: the S3 (two leaders at once) scenarios found by
//! review, each replayed as a fixed timeline with pinned clock rates, link
//! delays and hook durations. The simulator checks S1–S3 after every event
//! and panics with the trace on a violation; each test also checks that the
//! run still reaches the point where the scenario bit, so that a change of
//! timing cannot turn it into a test of nothing.
//!
//! `SIM_TRACE=1 cargo test --test sim_scenarios NAME -- --nocapture` prints
//! every event.

#[path = "sim/mod.rs"]
mod sim;

use std::time::Duration;

use regentd::core::{Epoch, Role, Timing};
use sim::{Observed, Plan, Sim};

const N1: usize = 0;
const N2: usize = 1;
const N3: usize = 2;
const N4: usize = 3;
const N5: usize = 4;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The daemon's default timing, without the demote budget: these runs
/// pin the lease edges they were written for.
fn default_timing() -> Timing {
    Timing {
        heartbeat: ms(100),
        dead_after: ms(300),
        lease_margin: ms(20),
        max_drift_ppm: 10_000,
        demote_budget: ms(0),
    }
}

/// A simulator for `plan` with every clock exact, every link 1 ms, every
/// hook 1 ms and every state write instant: nothing left to the seed.
fn pinned(plan: Plan) -> Sim {
    let n = plan.nodes;
    let mut sim = Sim::new(plan);
    for i in 0..n {
        sim.set_rate_ppm(i, 0);
    }
    sim.set_all_delays(ms(1));
    sim.set_hook_duration(ms(1));
    sim.set_disk_latency(Duration::ZERO);
    sim
}

/// The first observation matching `pick`, with its real instant.
fn first(sim: &Sim, pick: impl Fn(&Observed) -> bool) -> Option<Duration> {
    sim.observed().find(|(_, o)| pick(o)).map(|(at, _)| at)
}

fn promoted(sim: &Sim, node: usize, epoch: u64) -> Option<Duration> {
    first(sim, |o| {
        *o == Observed::Promote {
            node,
            epoch: Epoch(epoch),
        }
    })
}

fn demoted(sim: &Sim, node: usize, epoch: u64, reason: &str) -> Option<Duration> {
    first(sim, |o| {
        matches!(o, Observed::Demote { node: n, epoch: e, reason: r }
            if *n == node && *e == Epoch(epoch) && r.as_str() == reason)
    })
}

fn transition(sim: &Sim, node: usize, epoch: u64, reason: &str) -> Option<Duration> {
    first(sim, |o| {
        matches!(o, Observed::Transition { node: n, transition: t }
            if *n == node && t.epoch == Epoch(epoch) && t.reason.as_str() == reason)
    })
}

/// Asserts `at` lies in `[lo, hi]` ms.
fn within(what: &str, at: Option<Duration>, lo: u64, hi: u64) -> Duration {
    let at = at.unwrap_or_else(|| panic!("{what}: never happened"));
    assert!(
        at >= ms(lo) && at <= ms(hi),
        "{what} at {at:?}, expected within {lo}..{hi} ms"
    );
    at
}

/// Scenario 1: a claim won after its lease ran out.
///
/// Three nodes, heartbeat 100 ms, dead_after 200 ms, margin 20 ms, drift
/// bound 5 %: the lease (161 ms) is shorter than the claim window (200 ms).
/// n1 (priority 200) and n2 (150) cannot reach each other; n3 (100) to n2
/// takes 1 ms until 205 ms (so they hear each other both ways when n2
/// claims), 195 ms from then on; n3's clock runs 5 % fast, n2's 5 % slow. n2 claims epoch 1
/// when its quiet period ends (~210 ms) and n3 acks at once; that ack
/// reaches n2 only at ~407 ms. n3's promise to n2 ends at ~402 ms real, so it
/// acks n1's claim for epoch 2 (deferred until then) and n1 promotes at
/// ~403 ms. n2 gets its quorum before its deadline (~421 ms), but the lease
/// its acks back ended at ~380 ms: it must lose, not promote epoch 1.
///
/// n3's health check fails throughout, so it only votes (an unhealthy member
/// still acks) and does not claim for itself when its own quiet period ends.
/// n1 starts at 150 ms: its first heartbeat with `can_lead` reaches n3 after
/// n2's claim (so n3 does not refuse n2 for n1's higher rank), and its claim
/// (~350 ms) is late enough for its own lease to outlast n3's deferred ack.
#[test]
fn claim_won_after_its_lease_ran_out() {
    let timing = Timing {
        heartbeat: ms(100),
        dead_after: ms(200),
        lease_margin: ms(20),
        max_drift_ppm: 50_000,
        demote_budget: ms(0),
    };
    let mut plan = Plan::fixed(3, timing);
    plan.priorities = vec![200, 150, 100];
    let mut sim = pinned(plan);
    sim.set_rate_ppm(N2, -50_000);
    sim.set_rate_ppm(N3, 50_000);
    sim.block_at(N1, N2, ms(0));
    sim.block_at(N2, N1, ms(0));
    sim.health_at(N3, ms(0), false);
    sim.start_at(N2, ms(0));
    sim.start_at(N3, ms(0));
    sim.start_at(N1, ms(150));
    // n2 and n3 hear each other both ways until just before the claim.
    sim.run_until(ms(205));
    sim.set_link_delay(N3, N2, ms(195));
    sim.run_until(ms(2_000));

    within(
        "n2 claims epoch 1",
        transition(&sim, N2, 1, "claim"),
        205,
        215,
    );
    let n1_leads = within("n1 promotes epoch 2", promoted(&sim, N1, 2), 395, 410);
    let lost = within(
        "n2 loses its claim of epoch 1 on n3's late ack",
        transition(&sim, N2, 1, "claim-lost"),
        400,
        415,
    );
    assert!(n1_leads < lost, "n1 leads before n2's quorum arrives");
    assert_eq!(promoted(&sim, N2, 1), None, "n2 never leads epoch 1");
    assert_eq!(sim.leader(), Some((N1, Epoch(2))));
}

/// Scenario 2: a restarted node acked a leader's lease during its quiet
/// period.
///
/// Five nodes, default timing, exact clocks; n1 (priority 200) leads epoch 1,
/// n5 (150) ranks next. Messages from n1 are blocked to n2 at 2000 ms, to n5
/// at 2010 ms and to n3 at 2160 ms (n1's last heartbeat before the blocks
/// leaves at 1999 ms, and it re-sends every 10 ms while a follower's ack is
/// missing). n2's and n5's promises to n1 end at ~2300 ms: n5 claims epoch 2
/// and n2 acks; n4 still follows n1 and refuses; n3 defers until its promise
/// to n1 ends at ~2460 ms. n2 crashes at 2302 ms, restarts at 2307 ms; the
/// block n1 -> n2 is lifted at 2305 ms, so n1's heartbeats reach the
/// restarted n2 inside its quiet period. Following n1 then would renew n1's
/// lease to ~2580 ms through n2, while n2's ack of n5's claim still counts:
/// at ~2461 ms n3's deferred ack makes n5 leader. n1's lease must instead
/// end at ~2433 ms (last acked by n3 at 2159 ms).
///
/// The nodes start at 97 ms, which puts n1's heartbeats at 99 ms past each
/// 100 ms, as in the original report.
#[test]
fn restarted_node_renews_no_lease_in_its_quiet_period() {
    let mut plan = Plan::fixed(5, default_timing());
    plan.priorities = vec![200, 100, 100, 100, 150];
    let mut sim = pinned(plan);
    for i in 0..5 {
        sim.start_at(i, ms(97));
    }
    sim.block_at(N1, N2, ms(2_000));
    sim.block_at(N1, N5, ms(2_010));
    sim.block_at(N1, N3, ms(2_160));
    sim.crash_at(N2, ms(2_302));
    sim.unblock_at(N1, N2, ms(2_305));
    sim.restart_at(N2, ms(2_307));
    sim.run_until(ms(2_500));
    assert_eq!(sim.leader(), Some((N5, Epoch(2))));

    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 395, 405);
    within(
        "n5 claims epoch 2",
        transition(&sim, N5, 2, "claim"),
        2_295,
        2_305,
    );
    let n1_ends = within(
        "n1's lease ends",
        demoted(&sim, N1, 1, "lease-expired"),
        2_425,
        2_440,
    );
    let n5_leads = within("n5 promotes epoch 2", promoted(&sim, N5, 2), 2_455, 2_470);
    assert!(n1_ends < n5_leads);
    // The restarted n2 heard n1 during its quiet period (2307..2607 ms) and
    // did not follow it.
    let n2_follows = sim
        .observed()
        .find(|(at, o)| {
            *at > ms(2_307)
                && matches!(o, Observed::Transition { node, transition: t }
                    if *node == N2 && t.role == Role::Follower && t.leader.is_some())
        })
        .map(|(at, _)| at);
    assert!(
        n2_follows.is_none_or(|at| at >= ms(2_607)),
        "n2 followed a leader at {n2_follows:?}, inside its quiet period"
    );
    // n4 still followed n1 and refused n5's claim.
    within(
        "n4 drops n1 on its Resign",
        transition(&sim, N4, 1, "leader-resigned"),
        2_430,
        2_440,
    );
    // The blocks stay; the invariants keep being checked while the cluster
    // sorts itself out.
    sim.run_until(ms(4_000));
}

/// Scenario 3: a reload that raises dead_after inflated the leader's lease.
///
/// Three nodes, default timing, exact clocks; n3 has the highest priority
/// but preemption is off, and its health check fails until 1000 ms, so n1
/// (next in rank) is elected to epoch 1 and n3 follows it; its heartbeats
/// leave at 99 ms past each 100 ms. At 2001 ms n1's messages to
/// n2 and n3 are blocked and n2 reloads with dead_after 1000 ms. n2's
/// promise to n1 was made under 300 ms and still ends at ~2300 ms; its next
/// heartbeat (2100 ms) acks n1's 1999 ms heartbeat and must report 300 ms,
/// not 1000 ms, or n1 counts a promise to ~2959 ms. At 2300 ms n3's promise
/// ends, it claims epoch 2, n2 acks, and n3 promotes at ~2302 ms: n1's lease
/// must have ended (~2273 ms) first.
#[test]
fn reload_that_raises_dead_after_does_not_inflate_the_lease() {
    let mut plan = Plan::fixed(3, default_timing());
    plan.priorities = vec![150, 100, 200];
    plan.preempt = false;
    let mut sim = pinned(plan);
    sim.health_at(N3, ms(0), false);
    sim.health_at(N3, ms(1_000), true);
    for i in 0..3 {
        sim.start_at(i, ms(97));
    }
    let mut longer = sim.config(N2).clone();
    longer.timing.dead_after = ms(1_000);
    sim.block_at(N1, N2, ms(2_001));
    sim.block_at(N1, N3, ms(2_001));
    sim.reload_at(N2, ms(2_001), longer);
    sim.run_until(ms(2_310));

    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 395, 405);
    within(
        "n3 follows n1",
        transition(&sim, N3, 1, "following"),
        395,
        405,
    );
    let n1_ends = within(
        "n1's lease ends",
        demoted(&sim, N1, 1, "lease-expired"),
        2_265,
        2_280,
    );
    within(
        "n3 claims epoch 2",
        transition(&sim, N3, 2, "claim"),
        2_295,
        2_305,
    );
    let n3_leads = within("n3 promotes epoch 2", promoted(&sim, N3, 2), 2_295, 2_310);
    assert!(n1_ends < n3_leads);
    sim.run_until(ms(2_500));
    assert_eq!(sim.leader(), Some((N3, Epoch(2))));
    sim.run_until(ms(4_000));
}

/// Scenario 4: one ack per epoch. A voter whose promise of an epoch has
/// lapsed must still refuse a second claimant of that same epoch.
///
/// Three nodes, heartbeat 100 ms, dead_after 300 ms, drift bound 5 %. n3
/// votes only (its health check fails throughout) and its clock runs 5 %
/// fast; n2's runs 5 % slow and its health check fails until 592 ms. n1
/// (priority 200) and n3 start at 0 ms; n1 is elected to epoch 1 with n3's
/// ack at ~300 ms and crashes at 350 ms. n1 and n2 never reach each other,
/// and n3 reaches n2 298 ms late until 592 ms. n2 (150) starts at 70 ms.
///
/// A claimant counts a voter only while the voter's heartbeats echo one of
/// its own sent within dead_after, so its view of the voter can be at most
/// that old. n3's heartbeat at ~287 ms, sent just before it heard of epoch 1,
/// echoes n2's heartbeat of ~281 ms and arrives at ~585 ms: on n2's slow
/// clock that link holds until ~596 ms, while n3's ack of epoch 1 and every
/// later message arrive only after ~600 ms. n3's fast clock ends its promise to n1 at ~588 ms. When n2
/// turns healthy at 592 ms it claims epoch 1, never having heard of it, and
/// the claim reaches n3 after the promise lapsed: stickiness no longer
/// protects the old epoch, only the rule "never ack an epoch at or below one
/// promised" does. n3 must refuse, and n2 must then claim epoch 2.
#[test]
fn a_lapsed_promise_still_refuses_its_epoch_to_another_claimant() {
    let timing = Timing {
        max_drift_ppm: 50_000,
        ..default_timing()
    };
    let mut plan = Plan::fixed(3, timing);
    plan.priorities = vec![200, 150, 100];
    let mut sim = pinned(plan);
    sim.set_rate_ppm(N2, -50_000);
    sim.set_rate_ppm(N3, 50_000);
    sim.health_at(N3, ms(0), false);
    sim.health_at(N2, ms(0), false);
    sim.health_at(N2, ms(592), true);
    sim.block_at(N1, N2, ms(0));
    sim.block_at(N2, N1, ms(0));
    sim.set_link_delay(N3, N2, ms(298));
    sim.start_at(N1, ms(0));
    sim.start_at(N3, ms(0));
    sim.crash_at(N1, ms(350));
    sim.start_at(N2, ms(70));
    sim.run_until(ms(592));
    sim.set_link_delay(N3, N2, ms(1));
    sim.run_until(ms(3_000));

    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 295, 310);
    within(
        "n2 claims epoch 1, never having heard of it",
        transition(&sim, N2, 1, "claim"),
        592,
        596,
    );
    assert_eq!(promoted(&sim, N2, 1), None, "n2 never leads epoch 1");
    within("n2 promotes epoch 2", promoted(&sim, N2, 2), 593, 1_500);
    assert_eq!(sim.leader(), Some((N2, Epoch(2))));
}

/// The daemon's default timing, demote budget included.
fn budget_timing() -> Timing {
    Timing {
        demote_budget: ms(25),
        ..default_timing()
    }
}

fn observed_at(sim: &Sim, want: Observed) -> Option<Duration> {
    first(sim, |o| *o == want)
}

/// Scenario 5: the leader's event loop stalls for twice its lease.
///
/// Three nodes, n1 (priority 200) leads epoch 1. At 2000 ms its loop stops
/// for two leases: it neither renews nor lets go. Its guard fires at the
/// lease end plus half the margin, kills it and runs the demote; only after
/// that demote has ended may n3 (150) promote epoch 2. n1 comes back a
/// second later with a start-up demote, and S1-S3 keep being checked.
#[test]
fn a_stalled_leader_is_fenced_by_its_guard() {
    let timing = budget_timing();
    let lease = timing.lease();
    let mut plan = Plan::fixed(3, timing);
    plan.priorities = vec![200, 100, 150];
    let mut sim = pinned(plan);
    for i in 0..3 {
        sim.start_at(i, ms(0));
    }
    sim.set_demote_duration(ms(25));
    sim.stall_at(N1, ms(2_000), lease * 2);
    sim.run_until(ms(6_000));

    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 295, 310);
    let fenced = within(
        "the guard fences n1",
        observed_at(
            &sim,
            Observed::Fence {
                node: N1,
                epoch: Epoch(1),
            },
        ),
        2_000,
        2_000 + lease.as_millis() as u64 + 20,
    );
    let released = observed_at(
        &sim,
        Observed::DemoteEnd {
            node: N1,
            epoch: Epoch(1),
        },
    )
    .expect("the guard's demote ends");
    assert_eq!(released, fenced + ms(25));
    let n3_leads = promoted(&sim, N3, 2).expect("n3 promotes epoch 2");
    assert!(released < n3_leads, "{released:?} {n3_leads:?}");
    assert_eq!(
        demoted(&sim, N1, 1, "lease-expired"),
        None,
        "the stalled daemon itself never let go"
    );
}

/// Scenario 6: a lease-expiry demote that takes its whole budget, at the
/// drift bound.
///
/// Three nodes, drift bound 1 %: n1's clock runs 1 % slow (its lease lasts
/// longest in real time), n2's and n3's 1 % fast (their promises to n1 end
/// soonest). n1 (priority 200) leads epoch 1; at 2000 ms all its messages
/// are lost. Its demote takes exactly the 25 ms budget; n3's promote of
/// epoch 2 must start after that demote ended.
#[test]
fn a_demote_that_takes_its_whole_budget_ends_before_the_next_promote() {
    let mut plan = Plan::fixed(3, budget_timing());
    plan.priorities = vec![200, 100, 150];
    let mut sim = pinned(plan);
    sim.set_rate_ppm(N1, -10_000);
    sim.set_rate_ppm(N2, 10_000);
    sim.set_rate_ppm(N3, 10_000);
    sim.set_demote_duration(ms(25));
    for i in 0..3 {
        sim.start_at(i, ms(0));
    }
    sim.block_at(N1, N2, ms(2_000));
    sim.block_at(N1, N3, ms(2_000));
    sim.run_until(ms(4_000));

    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 295, 310);
    let asked = within(
        "n1's lease ends",
        demoted(&sim, N1, 1, "lease-expired"),
        2_000,
        2_400,
    );
    let ended = observed_at(
        &sim,
        Observed::DemoteEnd {
            node: N1,
            epoch: Epoch(1),
        },
    )
    .expect("n1's demote ends");
    assert_eq!(ended, asked + ms(25), "the demote took its whole budget");
    let n3_leads = promoted(&sim, N3, 2).expect("n3 promotes epoch 2");
    assert!(
        ended <= n3_leads,
        "demote ended {ended:?}, promote {n3_leads:?}"
    );
}

/// Scenario 7: a follower whose loop stalls for 2 s handles the backlog of
/// heartbeats when it resumes, each stamped at resume (never earlier than
/// its arrival), and S3 holds; the leader keeps its quorum throughout.
#[test]
fn a_stalled_follower_handles_its_backlog_and_keeps_s3() {
    let mut plan = Plan::fixed(3, budget_timing());
    plan.priorities = vec![200, 100, 150];
    let mut sim = pinned(plan);
    for i in 0..3 {
        sim.start_at(i, ms(0));
    }
    sim.stall_at(N3, ms(2_000), ms(2_000));
    sim.run_until(ms(6_000));
    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 295, 310);
    within(
        "n3 stalls",
        observed_at(&sim, Observed::Stalled { node: N3 }),
        2_000,
        2_000,
    );
    assert_eq!(sim.leader(), Some((N1, Epoch(1))));
    assert_eq!(sim.promotions, 1, "no other promote");
}

/// Scenario 8: a rolling restart at exact quorum. Three nodes, n1 (priority
/// 200) leads epoch 1; n3 is down from 1000 ms, so n1's lease rests on n2
/// alone. n2's daemon dies at 2050 ms and is back at 2100 ms: it resumes
/// its promise to n1 at epoch 1 at once (its state file names that leader
/// and epoch, and it promised nothing since), inside its quiet period, and
/// n1 keeps its lease. Without the resume n2 would stay silent for its
/// quiet period, n1's lease would end at ~2250 ms and a new epoch follow.
#[test]
fn a_follower_restart_at_exact_quorum_keeps_the_leader() {
    let mut plan = Plan::fixed(3, budget_timing());
    plan.priorities = vec![200, 100, 150];
    let mut sim = pinned(plan);
    for i in 0..3 {
        sim.start_at(i, ms(0));
    }
    sim.crash_at(N3, ms(1_000));
    sim.crash_at(N2, ms(2_050));
    sim.restart_at(N2, ms(2_100));
    sim.run_until(ms(4_000));

    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 295, 310);
    let resumed = sim
        .observed()
        .filter(|(at, o)| {
            *at > ms(2_100)
                && matches!(o, Observed::Transition { node, transition: t }
                    if *node == N2 && t.epoch == Epoch(1) && t.reason.as_str() == "following")
        })
        .map(|(at, _)| at)
        .next();
    within(
        "n2 follows n1 again after its restart",
        resumed,
        2_100,
        2_120,
    );
    assert_eq!(
        first(
            &sim,
            |o| matches!(o, Observed::Demote { node, .. } if *node == N1)
        ),
        None,
        "n1 never demotes"
    );
    assert_eq!(sim.leader(), Some((N1, Epoch(1))));
}

/// Two hosts and a witness. n1 (priority 200) and n2 (100) can lead; n3 is
/// a witness and ranks highest (250), which must not matter. n1 leads
/// epoch 1. The witness dies at 1000 ms and returns at 2000 ms: n1 keeps
/// its lease on n2's acks. n1 dies at 3000 ms: n2 leads epoch 2 about
/// dead_after later, on the witness's vote (n1's guard restarts it a
/// second after its fence, and it follows n2). The witness dies for good
/// at 5000 ms: n2 keeps leading on n1's acks. n2 dies at 5500 ms: n1 alone
/// is no quorum, and no one leads until n2 is back. The witness never runs
/// a hook.
#[test]
fn two_hosts_and_a_witness_fail_over_and_never_let_the_witness_lead() {
    let mut plan = Plan::fixed(3, budget_timing());
    plan.priorities = vec![200, 100, 250];
    plan.witnesses = vec![false, false, true];
    let mut sim = pinned(plan);
    for i in 0..3 {
        sim.start_at(i, ms(0));
    }
    sim.crash_at(N3, ms(1_000));
    sim.restart_at(N3, ms(2_000));
    sim.crash_at(N1, ms(3_000));
    sim.crash_at(N3, ms(5_000));
    sim.crash_at(N2, ms(5_500));
    sim.run_until(ms(2_900));
    assert_eq!(
        sim.leader(),
        Some((N1, Epoch(1))),
        "the witness's death moves nothing"
    );
    sim.run_until(ms(5_450));
    assert_eq!(
        sim.leader(),
        Some((N2, Epoch(2))),
        "nor does it with n1 back"
    );
    sim.run_until(ms(6_500));
    assert_eq!(sim.leader(), None, "one host alone never leads");

    within("n1 promotes epoch 1", promoted(&sim, N1, 1), 295, 310);
    within("n2 promotes epoch 2", promoted(&sim, N2, 2), 3_150, 3_350);
    let demotes_before = |node: usize, until: u64| {
        first(
            &sim,
            |o| matches!(o, Observed::Demote { node: n, .. } if *n == node),
        )
        .filter(|&at| at < ms(until))
    };
    assert_eq!(demotes_before(N1, 3_000), None, "n1 holds until it dies");
    assert_eq!(demotes_before(N2, 5_500), None, "n2 holds until it dies");
    let promotes_late = sim
        .observed()
        .filter(|(at, o)| *at > ms(5_500) && matches!(o, Observed::Promote { .. }))
        .count();
    assert_eq!(promotes_late, 0, "no promote without a quorum");
    let witness_acts = first(&sim, |o| match o {
        Observed::Promote { node, .. } | Observed::Demote { node, .. } => *node == N3,
        Observed::Transition { node, transition } => {
            *node == N3 && transition.role != regentd::core::Role::Follower
        }
        _ => false,
    });
    assert_eq!(
        witness_acts, None,
        "the witness neither leads nor runs a hook"
    );
}

/// The rolling change that once gave two leaders: n1 and n2 run {1,2,3},
/// while n3 (restarted on a new file) and two new hosts n4, n5 run
/// {1,...,5}, and a partition then splits {n1,n2} from {n3,n4,n5}. Each
/// side would hold a majority of its own list. With the new file on
/// generation 2 (two members added at once), n3 does not know the list
/// before, nor do the new hosts, so none of them may claim: the change was
/// never committed. With the new file still on generation 1 (the list
/// changed without a new generation), n3 ran another list of that
/// generation and stays out for good, and n4 and n5 are two of five. Either
/// way {n1,n2} elect one leader and the other side none, though it ranks
/// higher; the messages of the two lists are ignored both ways.
#[test]
fn mixed_member_lists_across_a_partition_never_give_two_leaders() {
    for generation in [2, 1] {
        let mut plan = Plan::fixed(5, default_timing());
        plan.spare = 2;
        plan.priorities = vec![100, 100, 250, 250, 250];
        let mut sim = pinned(plan);
        for i in [N1, N2, N3] {
            sim.start_at(i, ms(0));
        }
        sim.crash_at(N3, ms(2_000));
        for i in [N3, N4, N5] {
            let mut cfg = sim.config(i).clone();
            cfg.members = (1..=5).map(regentd::core::NodeId).collect();
            cfg.generation = generation;
            sim.reload_at(i, ms(2_100), cfg);
        }
        sim.install_at(N4, ms(2_200));
        sim.install_at(N5, ms(2_200));
        sim.restart_at(N3, ms(2_300));
        for a in [N1, N2] {
            for b in [N3, N4, N5] {
                sim.block_at(a, b, ms(3_000));
                sim.block_at(b, a, ms(3_000));
            }
        }
        sim.run_until(ms(2_900));
        let before = sim.leader().map(|(l, _)| l);
        assert!(
            matches!(before, Some(N1 | N2)),
            "generation {generation}: {before:?} leads before the partition"
        );
        sim.run_until(ms(10_000));
        let after = sim.leader().map(|(l, _)| l);
        assert!(
            matches!(after, Some(N1 | N2)),
            "generation {generation}: {after:?} leads after the partition"
        );
        // n3 led {1,2,3} until its crash; after it, the new list's side
        // never leads.
        let new_side_led = sim.observed().filter(|(at, _)| *at > ms(2_000)).find(
            |(_, o)| matches!(o, Observed::Promote { node, .. } if [N3, N4, N5].contains(node)),
        );
        assert!(
            new_side_led.is_none(),
            "generation {generation}: the side on the five-member list led: {new_side_led:?}"
        );
        assert_eq!(sim.running_generation(N3), Some(generation));
    }
}
