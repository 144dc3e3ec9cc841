//! Real daemons on links that work one way only: a peer counts for quorum,
//! as a contender or as a preemptor only if it hears us.
//!
//! Needs root (skips otherwise, fails under `CI=true`).

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

use std::time::Duration;

use cluster::{realtime_ns, Cluster, Opts};
use netns::{require_root, Lan};

/// Three hosts, node 1 ranked highest, with `blocked` links cut one way
/// before any daemon starts. Nodes 2 and 3 hear each other both ways and
/// node 1 is linked both ways with nobody, so node 2 must lead within 2 s
/// and keep leading: no claim storm, and no preemption toward node 1.
fn one_way(blocked: &[(usize, usize)], preempt: bool) {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(
        Lan::new(3),
        Opts {
            priorities: vec![300, 200, 100],
            preempt,
            preempt_delay_ms: 500,
            ..Opts::default()
        },
    );
    c.lan.block(blocked);
    let began = realtime_ns();
    c.start_all();
    let first = c
        .wait_promote(began, &[], Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no leader within 2 s\n{}", c.dump()));
    println!(
        "{blocked:?} preempt {preempt}: node {} leads epoch {} after {:.0} ms",
        first.node,
        first.epoch,
        (first.at_ns - began) as f64 / 1e6
    );
    assert_eq!(
        first.node,
        2,
        "the best node linked both ways\n{}",
        c.dump()
    );
    // Well past the preemption delay and many claim rounds.
    std::thread::sleep(Duration::from_secs(4));
    let changes: Vec<_> = c
        .hook_events()
        .into_iter()
        .filter(|e| e.kind == "promote" || e.kind == "demote")
        .filter(|e| e.reason != "startup")
        .collect();
    assert_eq!(
        changes.len(),
        1,
        "one promote and nothing after it: {changes:?}\n{}",
        c.dump()
    );
    assert_eq!(c.holder(), Some((2, first.epoch)));
    let (_, text) = c.ctl(1, &["status"]);
    assert!(
        text.contains("one-way"),
        "node 1's status names its one-way links:\n{text}"
    );
    c.check_history(&[]);
}

#[test]
fn one_way_links_elect_the_best_linked_node_without_preemption() {
    one_way(&[(1, 2), (3, 1)], false);
}

#[test]
fn one_way_links_elect_the_best_linked_node_with_preemption() {
    one_way(&[(1, 2), (3, 1)], true);
}

#[test]
fn mirrored_one_way_links_do_not_preempt_toward_a_node_that_cannot_lead() {
    one_way(&[(2, 1), (1, 3)], true);
}
