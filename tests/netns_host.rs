//! A cluster betrayed by one of its own hosts: the leader's state directory
//! turns read-only under it, a follower loses its state file, and a reload
//! changes timing on every host.
//!
//! Needs root (skips otherwise, fails under `CI=true`): real daemons in
//! network namespaces, and `nsenter` into one daemon's private mount
//! namespace (which `netns::Lan::spawn` gives every daemon) to remount its
//! state directory read-only there and nowhere else. Root ignores file
//! modes; it does not ignore a read-only mount.

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cluster::{json_field, realtime_ns, wait_until, Cluster, Opts};
use netns::{require_root, Lan};

/// Runs `script` with `sh -c` in the mount namespace of process `pid`.
fn in_mounts_of(pid: u32, script: &str) {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--", "sh", "-c", script])
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "nsenter -t {pid} -m sh -c {script:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The promised epoch in a state file.
fn promised_on_disk(path: &Path) -> u64 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("promised "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no promised line in {}:\n{text}", path.display()))
}

#[test]
fn a_leader_whose_state_dir_turns_read_only_resigns_and_stays_out_until_it_heals() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(
        Lan::new(3),
        Opts {
            priorities: vec![100, 100, 200],
            ..Opts::default()
        },
    );
    c.start_all();
    let led = wait_until(Duration::from_secs(10), || {
        matches!(c.holder(), Some((3, _)))
    });
    assert!(led, "node 3 did not lead\n{}", c.dump());
    let (_, first_epoch) = c.holder().expect("a leader");

    // Read-only for node 3's daemon only: a read-only bind mount of its
    // state directory over itself, inside its own mount namespace.
    let pid = c.pid(3).expect("node 3 runs");
    let dir = c.dir.join("state3");
    let d = dir.display();
    let broke = realtime_ns();
    in_mounts_of(
        pid,
        &format!("mount --bind {d} {d} && mount -o remount,bind,ro {d}"),
    );

    // The leader probes its directory every 2 s while it leads: it resigns,
    // and another node leads with a newer epoch.
    let next = c
        .wait_promote(broke, &[3], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no other leader after the state dir broke\n{}", c.dump()));
    println!(
        "node 3 resigned; node {} leads epoch {} {:.0} ms after the state dir turned read-only",
        next.node,
        next.epoch,
        (next.at_ns - broke) as f64 / 1e6
    );
    assert!(next.epoch > first_epoch);
    let events = c.hook_events();
    assert!(
        events.iter().any(|e| e.node == 3
            && e.kind == "demote"
            && e.epoch == first_epoch
            && e.at_ns >= broke),
        "node 3 did not demote\n{}",
        c.dump()
    );
    let log3 = std::fs::read_to_string(c.daemon_log(3)).unwrap_or_default();
    assert!(
        log3.contains("is not writable") && log3.contains("state-unwritable"),
        "node 3 did not say why\n{}",
        c.dump()
    );

    // While the directory stays read-only node 3 cannot promise, so it never
    // leads, although it outranks the leader and preemption is on (2 s).
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !c.hook_events()
            .iter()
            .any(|e| e.node == 3 && e.kind == "promote" && e.at_ns >= broke),
        "node 3 led with a read-only state dir\n{}",
        c.dump()
    );
    assert_eq!(
        c.metric(3, "regent_eligible", None),
        Some(0.0),
        "node 3 says it is eligible\n{}",
        c.dump()
    );
    assert_eq!(c.holder().map(|h| h.0), Some(next.node));

    // Healed: node 3 is eligible again and, outranking the leader, takes
    // over with a newer epoch.
    let healed = realtime_ns();
    in_mounts_of(pid, &format!("umount {d}"));
    let back = c
        .wait_promote(healed, &[1, 2], Duration::from_secs(15))
        .unwrap_or_else(|| panic!("node 3 did not lead again after healing\n{}", c.dump()));
    assert!(back.epoch > next.epoch);
    println!(
        "healed: node 3 leads epoch {} after {:.0} ms",
        back.epoch,
        (back.at_ns - healed) as f64 / 1e6
    );
    c.check_history(&[]);
    // Persist before promise: every node's state holds at least every
    // epoch it led.
    for h in 1..=3 {
        let led = c
            .hook_events()
            .iter()
            .filter(|e| e.node == h && e.kind == "promote")
            .map(|e| e.epoch)
            .max()
            .unwrap_or(0);
        let on_disk = promised_on_disk(&c.dir.join(format!("state{h}/test.state")));
        assert!(
            on_disk >= led,
            "node {h} led epoch {led} but its state holds {on_disk}\n{}",
            c.dump()
        );
    }
}

#[test]
fn a_follower_that_lost_its_state_file_refuses_to_start_and_the_leader_stays() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(
        Lan::new(3),
        Opts {
            priorities: vec![100, 100, 200],
            ..Opts::default()
        },
    );
    c.start_all();
    let led = wait_until(Duration::from_secs(10), || {
        matches!(c.holder(), Some((3, _)))
    });
    assert!(led, "node 3 did not lead\n{}", c.dump());
    let leader = c.holder().expect("a leader");
    // Let node 1 ack a few leases, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    c.signal(1, libc::SIGTERM);
    assert_eq!(
        c.wait_exit(1, Duration::from_secs(10)),
        Some(0),
        "{}",
        c.dump()
    );

    // Its state file goes (deleted by hand, or `[state] dir` changed); the
    // operator keeps a copy, as a backup would.
    let state = c.dir.join("state1/test.state");
    let backup = c.dir.join("test.state.backup");
    std::fs::copy(&state, &backup).expect("back up the state file");
    println!(
        "node 1 promised epoch {} before it lost its state",
        promised_on_disk(&state)
    );
    std::fs::remove_file(&state).expect("remove the state file");
    c.mark("host 1: state file removed");
    let before = c.hook_events().len();
    let restarted = std::time::Instant::now();
    c.start(1);
    let code = c.wait_exit(1, Duration::from_secs(5));
    let took = restarted.elapsed();
    let log = std::fs::read_to_string(c.daemon_log(1)).unwrap_or_default();
    let says = format!("there is no state file {}", state.display());
    println!(
        "node 1 without its state file: exit {code:?} after {:.0} ms: {}",
        took.as_secs_f64() * 1e3,
        log.lines()
            .find(|l| l.contains(&says))
            .unwrap_or("(no message)")
    );
    assert_eq!(
        code,
        Some(78),
        "node 1 started without its state file\n{}",
        c.dump()
    );
    assert_eq!(
        log.matches(&says).count(),
        1,
        "the message must name {}, once\n{log}",
        state.display()
    );
    assert!(log.contains("`regent init`"), "{log}");
    assert!(!state.exists(), "a state file was created");

    // The cluster never noticed: same leader, same epoch, no hook ran.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.holder(), Some(leader), "{}", c.dump());
    assert_eq!(
        c.hook_events().len(),
        before,
        "leadership changed\n{}",
        c.dump()
    );

    // The way out for a host that had state: put the file back. Node 1
    // starts and follows the same leader.
    std::fs::copy(&backup, &state).expect("restore the state file");
    c.mark("host 1: state file restored");
    c.start(1);
    let follows = wait_until(Duration::from_secs(5), || {
        c.status_json(1)
            .is_some_and(|j| json_field(&j, "leader").as_deref() == Some("3"))
    });
    assert!(follows, "node 1 does not follow node 3\n{}", c.dump());
    assert_eq!(c.holder(), Some(leader), "{}", c.dump());
    // No epoch was ever led twice, nor went back on any host.
    c.check_history(&[]);
}

#[test]
fn a_reload_of_timing_on_every_host_keeps_the_leader() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(Lan::new(3), Opts::default());
    c.start_all();
    let first = c
        .wait_promote(0, &[], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no leader\n{}", c.dump()));
    std::thread::sleep(Duration::from_millis(500));
    let leader = c.holder().expect("a leader");
    let before = c.hook_events().len();
    // Every host at once, as a configuration management run would.
    for h in 1..=3 {
        let text = c
            .config(h)
            .replace("heartbeat_ms = 100", "heartbeat_ms = 50")
            .replace("dead_after_ms = 300", "dead_after_ms = 200");
        assert!(text.contains("heartbeat_ms = 50") && text.contains("dead_after_ms = 200"));
        std::fs::write(c.config_path(h), text).expect("config");
    }
    for h in 1..=3 {
        c.signal(h, libc::SIGHUP);
    }
    let applied = wait_until(Duration::from_secs(5), || {
        (1..=3).all(|h| c.metric(h, "regent_dead_after_seconds", None) == Some(0.2))
    });
    assert!(applied, "the new dead_after is not in force\n{}", c.dump());
    // A few of the new dead_afters, and then some.
    std::thread::sleep(Duration::from_secs(3));
    for h in 1..=3 {
        let log = std::fs::read_to_string(c.daemon_log(h)).unwrap_or_default();
        assert!(
            log.contains("configuration reloaded"),
            "host {h} did not reload\n{}",
            c.dump()
        );
    }
    assert_eq!(
        c.hook_events().len(),
        before,
        "leadership changed on reload\n{}",
        c.dump()
    );
    assert_eq!(c.holder(), Some(leader), "{}", c.dump());
    // The new timing is really used: a crash now fails over in about the
    // new dead_after, well under the old one's worst case.
    c.lan.cut(first.node);
    let killed = c.kill(first.node);
    let next = c
        .wait_promote(killed, &[first.node], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no failover\n{}", c.dump()));
    println!(
        "after the reload: failover in {:.0} ms (dead_after now 200 ms)",
        (next.at_ns - killed) as f64 / 1e6
    );
    c.check_history(&[(first.node, killed)]);
}
