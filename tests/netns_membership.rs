//! Member-list changes on a live cluster (docs/PROTOCOL.md §3.19), watched
//! by a client: growing from three members to five and shrinking from five
//! to three, one member per generation, replacing a failed follower, and
//! removing the leader after it handed over. Only the last moves
//! leadership, once; none ever has two holders. A host that missed the
//! changes is ignored by the others and never leads.
//!
//! Every change follows the operator's order the daemon enforces: write
//! the new file (`generation` raised by one, one member added or removed)
//! on every member, `regent reload` the leader first, then each follower a
//! `dead_after` and more apart, so that every mixed state (leader on the
//! new list, followers on the old) lasts long enough to cost a follower
//! its place or the leader its lease; a new host starts (`regent init`,
//! `regent run`) on the new list once the others run it.
//!
//! The hosts float a VIP with the shipped `conf/hooks/vip` (the cluster
//! harness's [`Opts::vip_hook`]), set up and watched by [`vip_rig`]: the
//! client probes it over UDP every 2 ms with regent-bench's prober, and a
//! responder on every host answers with its host number. Each test prints
//! its figures: probes sent and lost,
//! the client's longest outage, leadership changes, and how long two hosts
//! held leadership at once.
//!
//! Needs root (skips otherwise, fails under `CI=true`). Run with
//! `--nocapture` to see the figures.

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

#[path = "vip_rig/mod.rs"]
mod vip_rig;

use std::time::Duration;

use cluster::{overlap_ms, wait_until, Cluster, HookEvent, Opts};
use netns::require_root;
use vip_rig::probe::Span;
use vip_rig::{all_follow, follows, ms, Rig, SETTLE, WATCH_AFTER};

/// Where a test's watch began: its mark in the timeline (realtime ns) and
/// the client's next probe.
struct Watch {
    since: u128,
    from: usize,
}

/// `hosts` hosts and a client. The first member list is hosts
/// `1..=members` (no `generation` key: generation 1), whose daemons start
/// and settle on a first leader; hosts beyond have no file until a test
/// writes one. Returns the rig, the (leader, epoch), and the watch of the
/// test's steps, begun with the mark `what`; `None` without root, and the
/// test skips (see [`require_root`]).
fn settled(hosts: usize, members: usize, what: &str) -> Option<(Rig, (usize, u64), Watch)> {
    if !require_root() {
        return None;
    }
    let opts = Opts {
        // A joining host must not take leadership from the leader because
        // it ranks higher: that would be a leadership change the list
        // change did not need.
        preempt: false,
        members: Some(members),
        ..Opts::default()
    };
    let up: Vec<usize> = (1..=members).collect();
    let rig = Rig::start(hosts, opts, &up);
    let leader = rig.settle(&up);
    let watch = Watch {
        since: rig.c.mark(what),
        from: rig.prober.next_seq(),
    };
    Some((rig, leader, watch))
}

/// A new host joins: the hosts of `running` take `members` at
/// `generation` ([`change`], `leader` first), then `new` starts on that
/// list. It must follow `leader` within [`SETTLE`], and every host of
/// `running` must then be linked with it both ways, so that the next
/// change may count it. Prints how long it took to follow.
fn join(
    c: &mut Cluster,
    new: usize,
    leader: (usize, u64),
    running: &[usize],
    members: &[usize],
    generation: u32,
) {
    change(c, leader.0, running, members, generation);
    c.write_config(new, members, generation);
    c.start(new);
    let took = follows(c, new, leader);
    for &h in running {
        assert!(
            c.wait_linked(h, &[new], SETTLE),
            "host {h} is not linked with host {new}, which follows leader {}\n{}",
            leader.0,
            c.dump()
        );
    }
    println!(
        "generation {generation}: host {new} joined, following leader {} {:.0} ms after its \
         start, members {members:?}",
        leader.0,
        ms(took)
    );
}

/// One change of the member list: writes `members` at `generation` to the
/// file of each host of `hosts` and reloads them, `leader` first, then the
/// others in order, a `dead_after` and more apart. Each reload must be
/// taken, and the host must then run `generation`.
fn change(c: &Cluster, leader: usize, hosts: &[usize], members: &[usize], generation: u32) {
    let gap = Duration::from_millis(c.opts.dead_after_ms + 200);
    let mut order = vec![leader];
    order.extend(hosts.iter().filter(|&&h| h != leader));
    for h in order {
        c.write_config(h, members, generation);
        c.mark(format!(
            "generation {generation} {members:?}: reload of host {h}"
        ));
        let (ok, out) = c.ctl(h, &["reload"]);
        assert!(
            ok,
            "host {h} refused generation {generation} with members {members:?}: {out}\n{}\n{}",
            c.timeline(&[]),
            c.dump()
        );
        println!(
            "generation {generation}: host {h}'s reload: {}",
            out.trim().replace('\n', " / ")
        );
        let runs = wait_until(Duration::from_secs(1), || {
            c.generation(h) == Some(generation)
        });
        assert!(
            runs,
            "host {h} took the reload ({}) but runs generation {:?}, not {generation}\n{}",
            out.trim(),
            c.generation(h),
            c.dump()
        );
        std::thread::sleep(gap);
    }
}

/// Reloads `host` with `members` at `generation` and expects a refusal
/// whose text contains `why`; the host must go on running `runs`.
fn refused(c: &Cluster, host: usize, members: &[usize], generation: u32, why: &str, runs: u32) {
    c.write_config(host, members, generation);
    c.mark(format!(
        "generation {generation} {members:?}: reload of host {host}, to be refused"
    ));
    let (ok, out) = c.ctl(host, &["reload"]);
    assert!(
        !ok && out.contains(why),
        "host {host}'s reload to generation {generation} with members {members:?} was not \
         refused with \"{why}\": {}\n{}",
        out.trim(),
        c.dump()
    );
    assert_eq!(c.generation(host), Some(runs), "{}", c.dump());
    println!("host {host} refused the reload, as it must: {}", out.trim());
}

/// What the client and the hook log saw since a test's first step.
struct Figures {
    seen: Span,
    changes: Vec<HookEvent>,
    overlap_ms: f64,
}

/// Watches [`WATCH_AFTER`] more, then prints and returns what the client
/// saw since `watch` began and the leadership changes since then. The
/// overlap is over the whole run's windows.
fn figures(rig: &Rig, label: &str, watch: &Watch) -> Figures {
    std::thread::sleep(WATCH_AFTER);
    let seen = rig.seen_since(watch.from);
    let changes = rig.c.leadership_changes_since(watch.since);
    let overlap_ms = overlap_ms(&rig.c.windows(&[]));
    println!(
        "{label}: {} probes sent, {} lost, client outage {:.1} ms, {} leadership changes, \
         {overlap_ms:.1} ms with two holders; answers {:?}",
        seen.sent,
        seen.lost,
        ms(seen.outage),
        changes.len(),
        seen.answered_by
    );
    Figures {
        seen,
        changes,
        overlap_ms,
    }
}

/// The [`figures`] since `watch` began show that the leader kept leading
/// and the client lost nothing: no leadership change, no two holders,
/// every probe answered by `leader`. The VIP never moves in such a run, so
/// there is no loss to tolerate: a lost probe is a lease that lapsed or a
/// VIP that left.
fn assert_undisturbed(rig: &Rig, watch: &Watch, (leader, epoch): (usize, u64), label: &str) {
    let f = &figures(rig, label, watch);
    let c = &rig.c;
    assert!(
        f.changes.is_empty(),
        "{label}: leadership changed: {:?}\n{}\n{}",
        f.changes,
        c.timeline(&[]),
        c.dump()
    );
    c.check_no_overlap(&[]);
    assert_eq!(f.overlap_ms, 0.0);
    assert_eq!(c.holder(), Some((leader, epoch)));
    assert_eq!(
        f.seen.lost,
        0,
        "{label}: the client lost probes ({:?})\n{}\n{}",
        f.seen,
        c.timeline(&[]),
        c.dump()
    );
    assert_eq!(f.seen.answered_by, [(leader, f.seen.sent)], "{:?}", f.seen);
}

/// The change is complete and disturbed nothing: [`assert_undisturbed`],
/// then every host of `members` runs `generation` and each but the leader
/// follows `leader`.
fn assert_done_undisturbed(
    rig: &Rig,
    watch: &Watch,
    leader: (usize, u64),
    label: &str,
    members: &[usize],
    generation: u32,
) {
    assert_undisturbed(rig, watch, leader, label);
    assert_generation(&rig.c, members, generation);
    all_follow(&rig.c, members, leader);
}

/// Asserts that every host of `hosts` runs `generation`.
fn assert_generation(c: &Cluster, hosts: &[usize], generation: u32) {
    let runs: Vec<(usize, Option<u32>)> = hosts.iter().map(|&h| (h, c.generation(h))).collect();
    println!("generations by host: {runs:?}");
    assert!(
        runs.iter().all(|&(_, g)| g == Some(generation)),
        "not every host runs generation {generation}: {runs:?}\n{}",
        c.dump()
    );
}

/// Three members, then hosts 4 and 5 join one generation each: the leader
/// takes each list first, a follower that tries first is refused, and each
/// new host follows the leader once started.
#[test]
fn growing_from_three_to_five_members_changes_no_leader() {
    let Some((mut rig, leader, watch)) = settled(5, 3, "growth begins") else {
        return;
    };

    // A follower before its leader is refused, and keeps generation 1.
    let follower = (1..=3).find(|&h| h != leader.0).expect("two followers");
    refused(
        &rig.c,
        follower,
        &[1, 2, 3, 4],
        2,
        &format!("node {} leads on generation 1: reload it first", leader.0),
        1,
    );

    let mut members = vec![1, 2, 3];
    for (new, generation) in [(4, 2), (5, 3)] {
        let running = members.clone();
        members.push(new);
        join(&mut rig.c, new, leader, &running, &members, generation);
    }
    assert_done_undisturbed(&rig, &watch, leader, "grow 3 -> 5", &members, 3);
}

/// Five members; two followers leave one generation each, each stopped
/// before the others take the list without it.
#[test]
fn shrinking_from_five_to_three_members_changes_no_leader() {
    let Some((mut rig, leader, watch)) = settled(5, 5, "shrink begins") else {
        return;
    };
    let mut members: Vec<usize> = (1..=5).collect();
    // The two highest-numbered followers leave.
    let mut leaving: Vec<usize> = members.iter().copied().filter(|&h| h != leader.0).collect();
    leaving.drain(..2);
    for (gone, generation) in leaving.into_iter().zip([2, 3]) {
        rig.c.stop(gone);
        members.retain(|&h| h != gone);
        change(&rig.c, leader.0, &members, &members, generation);
        println!("generation {generation}: host {gone} left, members {members:?}");
    }
    assert_done_undisturbed(&rig, &watch, leader, "shrink 5 -> 3", &members, 3);
}

/// Three members; a follower fails (SIGKILL), the two left take the list
/// without it, then host 4 joins in its place.
#[test]
fn replacing_a_failed_follower_changes_no_leader() {
    let Some((mut rig, leader, watch)) = settled(4, 3, "replacement begins") else {
        return;
    };
    let failed = (1..=3).rev().find(|&h| h != leader.0).expect("a follower");
    rig.c.kill(failed);
    let left: Vec<usize> = (1..=3).filter(|&h| h != failed).collect();
    change(&rig.c, leader.0, &left, &left, 2);
    println!("generation 2: host {failed} failed and was removed, members {left:?}");
    let mut members = left.clone();
    members.push(4);
    join(&mut rig.c, 4, leader, &left, &members, 3);
    assert_done_undisturbed(&rig, &watch, leader, "replace a follower", &members, 3);
}

/// Three members; the list without the leader is refused while it leads;
/// it steps down (one graceful handover), stops, and the two left take the
/// list without it, the new leader first.
#[test]
fn removing_the_leader_hands_over_once() {
    let Some((mut rig, (old, old_epoch), watch)) = settled(3, 3, "removal of the leader begins")
    else {
        return;
    };
    let dead_after = Duration::from_millis(rig.c.opts.dead_after_ms);
    let left: Vec<usize> = (1..=3).filter(|&h| h != old).collect();

    refused(
        &rig.c,
        left[0],
        &left,
        2,
        &format!("node {old} leads and the new list removes it: hand over first"),
        1,
    );

    let asked = rig.c.mark(format!("regent step-down on leader {old}"));
    let (ok, out) = rig.c.ctl(old, &["step-down"]);
    assert!(ok, "step-down on leader {old}: {out}\n{}", rig.c.dump());
    let next = rig
        .c
        .wait_promote(asked, &[old], SETTLE)
        .unwrap_or_else(|| panic!("no leader after the step-down\n{}", rig.c.dump()));
    let new = (next.node, next.epoch);
    assert!(
        rig.wait_served_by(new.0, SETTLE),
        "the client never reached node {} after the handover\n{}",
        new.0,
        rig.c.dump()
    );
    let handover = rig.prober.span(watch.from, rig.prober.next_seq());
    println!(
        "leader {old} stepped down, node {} promoted epoch {} {:.1} ms after the request; \
         client outage {:.1} ms",
        new.0,
        new.1,
        (next.at_ns - asked) as f64 / 1e6,
        ms(handover.outage)
    );
    all_follow(&rig.c, &left, new);
    rig.c.stop(old);
    change(&rig.c, new.0, &left, &left, 2);
    all_follow(&rig.c, &left, new);

    let f = figures(&rig, "remove the leader", &watch);
    let kinds = |kind: &str| -> Vec<(usize, u64)> {
        f.changes
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (e.node, e.epoch))
            .collect()
    };
    assert_eq!(
        (kinds("promote"), kinds("demote")),
        (vec![new], vec![(old, old_epoch)]),
        "removing the leader must hand over exactly once\n{}",
        rig.c.timeline(&[])
    );
    rig.c.check_no_overlap(&[]);
    assert_eq!(f.overlap_ms, 0.0);
    assert_eq!(rig.c.holder(), Some(new));
    assert!(
        f.seen.outage < dead_after,
        "the handover's outage {:.1} ms is not below dead_after\n{}",
        ms(f.seen.outage),
        rig.c.timeline(&[])
    );
    assert_generation(&rig.c, &left, 2);
}

/// Three members; one follower misses two changes (it is never reloaded)
/// while hosts 4 and 5 join. On generation 1 it can work with no one on
/// generation 3: every host drops the other side's datagrams as
/// `membership`, and it never leads while the others do.
#[test]
fn a_host_that_missed_the_changes_is_ignored_and_never_leads() {
    let Some((mut rig, leader, watch)) = settled(5, 3, "changes without the stale host begin")
    else {
        return;
    };
    let stale = (1..=3).rev().find(|&h| h != leader.0).expect("a follower");
    let mut running: Vec<usize> = (1..=3).filter(|&h| h != stale).collect();
    let mut members = vec![1, 2, 3];
    for (new, generation) in [(4, 2), (5, 3)] {
        members.push(new);
        join(&mut rig.c, new, leader, &running, &members, generation);
        running.push(new);
    }
    let drops = |h: usize| rig.c.dropped(h, "membership");
    let before: Vec<(usize, f64)> = (1..=5).map(|h| (h, drops(h))).collect();
    rig.c.mark("watching the stale host");
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<(usize, f64)> = (1..=5).map(|h| (h, drops(h))).collect();
    let grown: Vec<(usize, f64)> = before
        .iter()
        .zip(&after)
        .map(|(&(h, b), &(_, a))| (h, a - b))
        .collect();
    let status = rig.c.status_json(stale).unwrap_or_default();
    println!(
        "host {stale} stayed on generation {:?} while the others moved to 3; membership drops \
         over 2 s by host: {grown:?}; its status: {}",
        rig.c.generation(stale),
        status.trim()
    );
    assert_undisturbed(&rig, &watch, leader, "a stale host");
    assert_generation(&rig.c, &running, 3);
    assert_eq!(rig.c.generation(stale), Some(1), "{}", rig.c.dump());
    assert!(
        grown.iter().all(|&(_, n)| n > 0.0),
        "every host must drop the other side's datagrams as membership: {grown:?}\n{}",
        rig.c.dump()
    );
    let led: Vec<HookEvent> = rig
        .c
        .hook_events()
        .into_iter()
        .filter(|e| e.node == stale && e.kind == "promote")
        .collect();
    assert!(led.is_empty(), "the stale host led: {led:?}");
    assert_ne!(
        cluster::json_field(&status, "role").as_deref(),
        Some("leader"),
        "{status}"
    );
}
