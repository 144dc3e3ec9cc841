//! Runs the cluster simulator over many seeds.
//!
//! `SIM_SEEDS=N` runs N seeds (default 2000) starting at `SIM_START` (default
//! 0); `SIM_SEED=S` replays one seed (add `SIM_TRACE=1` for every event).
//! `SIM_CHANGES=1` runs only the seeds of the range whose plan changes the
//! member list.

#[path = "sim/mod.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn many_seeds() {
    if std::env::var_os("SIM_SEED").is_some() {
        return;
    }
    let start = env_u64("SIM_START", 0);
    let count = env_u64("SIM_SEEDS", 2000);
    let next = AtomicU64::new(start);
    let failed = AtomicBool::new(false);
    let only_changes = std::env::var_os("SIM_CHANGES").is_some();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    #[allow(clippy::disallowed_methods)] // wall time for the report only
    let began = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count || failed.load(Ordering::Relaxed) {
                    break;
                }
                if seed > start && (seed - start) % 10_000 == 0 {
                    eprintln!("... seed {seed}");
                }
                if only_changes && !sim::Plan::from_seed(seed).changes {
                    continue;
                }
                if std::panic::catch_unwind(|| sim::run_seed(seed)).is_err() {
                    failed.store(true, Ordering::Relaxed);
                    eprintln!("seed {seed} failed; replay with SIM_SEED={seed}");
                }
            });
        }
    });
    assert!(!failed.load(Ordering::Relaxed), "a seed failed (see above)");
    eprintln!(
        "simulated {count} seeds from {start} in {:.1?}",
        began.elapsed()
    );
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    sim::run_seed(seed);
    eprintln!("seed {seed} passed");
}

/// A fixed three-node run: the highest-ranked node leads, and after it
/// crashes the next one takes over with a higher epoch within dead_after
/// plus a few heartbeats.
#[test]
fn crash_failover_is_fast() {
    let mut plan = sim::Plan::from_seed(7);
    plan.nodes = 3;
    plan.priorities = vec![100, 100, 100];
    plan.preempt = true;
    plan.preempt_delay = Duration::from_millis(500);
    let mut s = sim::Sim::new(plan.clone());
    s.start(false);
    s.run_until(Duration::from_secs(2));
    s.check_one_leader("start");
    let (l, e) = s.leader().expect("a leader");
    assert_eq!(l, 2, "node 3 has the highest rank");
    s.crash_at(l, Duration::from_secs(2));
    s.run_until(Duration::from_secs(2) + plan.timing.dead_after + plan.timing.heartbeat * 3);
    let (l2, e2) = s.leader().expect("a new leader");
    assert_eq!(l2, 1);
    assert!(e2 > e);
}

/// A leader that crashes and loses its state file stays down, however often
/// it is restarted (the daemon refuses to start without its state): the
/// other two elect a leader with a higher epoch and keep it.
#[test]
fn a_node_that_lost_its_state_stays_down_and_the_rest_lead() {
    let mut plan = sim::Plan::from_seed(7);
    plan.nodes = 3;
    plan.priorities = vec![100, 100, 200];
    plan.preempt = true;
    plan.preempt_delay = Duration::from_millis(500);
    let mut s = sim::Sim::new(plan.clone());
    s.start(false);
    s.run_until(Duration::from_secs(2));
    s.check_one_leader("start");
    let (l, e) = s.leader().expect("a leader");
    assert_eq!(l, 2, "node 3 has the highest rank");
    s.lose_state_at(l, Duration::from_secs(2));
    for restart in [3, 4, 6] {
        s.restart_at(l, Duration::from_secs(restart));
    }
    s.run_until(Duration::from_secs(10));
    assert!(!s.up(l), "a node without its state file started");
    assert_eq!(s.lost(), 1);
    s.check_one_leader("after the state loss");
    let (l2, e2) = s.leader().expect("a new leader");
    assert_ne!(l2, l);
    assert!(e2 > e, "epoch {e2} after {e}");
}

/// Seeds that once failed, kept beside the default range. 10056: a leader
/// crashed while its lease-expiry demote ran, the service manager's kill
/// took that demote with it, and nobody demoted until the restart; the
/// guard now watches a demote from its start to its end and redoes it.
/// 21796: two operator stops queued behind a stalled loop outlived the
/// healing and left a node down (a fault of the model, not of the daemon).
/// 26183: likewise a failing health verdict queued behind a stall.
#[test]
fn seeds_that_once_failed() {
    if std::env::var_os("SIM_SEED").is_some() {
        return;
    }
    const SEEDS: &[u64] = &[10056, 21796, 26183];
    for &seed in SEEDS {
        sim::run_seed(seed);
    }
}
