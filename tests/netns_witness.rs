//! Two hosts and a witness on real daemons: hosts 1 and 2 multicast on
//! their LAN, the witness (host 3) sits on another subnet behind a router
//! and is reached by unicast. Crashes, a partition between the two hosts,
//! and the witness's own loss.
//!
//! Needs root (skips otherwise, fails under `CI=true`).

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

use std::time::Duration;

use cluster::{Cluster, Opts};
use netns::{require_root, Lan, ROUTER};

const WITNESS: usize = 3;

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

/// Hosts 1 (priority 200) and 2 (100), and the witness, which ranks
/// highest (250) so that a witness leading would show. Preemption is off:
/// a crashed host that returns follows.
fn two_and_a_witness() -> Cluster {
    let mut c = Cluster::new(
        Lan::routed(3, &[WITNESS]),
        Opts {
            priorities: vec![200, 100, 250],
            witnesses: vec![WITNESS],
            preempt: false,
            ..Opts::default()
        },
    );
    c.start_all();
    c
}

/// Waits for the first leader; returns (node, epoch).
fn first_leader(c: &Cluster) -> (usize, u64) {
    let e = c
        .wait_promote(0, &[], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no leader\n{}", c.dump()));
    assert_ne!(e.node, WITNESS, "the witness led\n{}", c.dump());
    (e.node, e.epoch)
}

/// Crashes `leader` and waits for the other host to promote; returns how
/// long that took.
fn crash_and_take_over(c: &mut Cluster, leader: usize, crashes: &mut Vec<(usize, u128)>) -> f64 {
    c.lan.cut(leader);
    let killed = c.kill(leader);
    crashes.push((leader, killed));
    let next = c
        .wait_promote(killed, &[leader, WITNESS], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no takeover after host {leader} crashed\n{}", c.dump()));
    ms(next.at_ns - killed)
}

#[test]
fn a_crash_of_either_host_fails_over_on_the_witness_vote() {
    if !require_root() {
        return;
    }
    let mut c = two_and_a_witness();
    let (leader, _) = first_leader(&c);
    assert_eq!(leader, 1, "host 1 ranks highest of the two\n{}", c.dump());
    std::thread::sleep(Duration::from_millis(500));
    let mut crashes = Vec::new();
    let first = crash_and_take_over(&mut c, 1, &mut crashes);
    // Host 1 returns and follows; then host 2, now leading, crashes.
    c.lan.heal(1);
    c.start(1);
    std::thread::sleep(Duration::from_millis(1500));
    let second = crash_and_take_over(&mut c, 2, &mut crashes);
    println!(
        "2+1 crash failover: host 1 -> host 2 in {first:.1} ms, host 2 -> host 1 in {second:.1} ms \
         (dead_after {} ms)",
        Opts::default().dead_after_ms
    );
    let bound = 3.0 * Opts::default().dead_after_ms as f64;
    assert!(
        first < bound && second < bound,
        "{first} / {second} ms\n{}",
        c.dump()
    );
    c.check_no_overlap(&crashes);
}

#[test]
fn partitions_of_two_hosts_and_a_witness_never_give_two_leaders() {
    if !require_root() {
        return;
    }
    let c = two_and_a_witness();
    let (leader, epoch) = first_leader(&c);
    std::thread::sleep(Duration::from_millis(500));
    let cut = c.mark("partition: host 1 | host 2, the router sees both");
    c.lan.partition(&[&[1], &[2]]);
    std::thread::sleep(Duration::from_secs(3));
    c.lan.heal_partition();
    c.mark("partition healed");
    std::thread::sleep(Duration::from_secs(1));
    // The witness still follows the leader, so host 2's claims gather no
    // quorum: nothing changes, and no two hosts ever hold.
    let changes: Vec<_> = c
        .hook_events()
        .into_iter()
        .filter(|e| e.at_ns >= cut && e.kind == "promote")
        .collect();
    assert!(
        changes.is_empty(),
        "leadership moved: {changes:?}\n{}",
        c.dump()
    );
    assert_eq!(c.holder(), Some((leader, epoch)), "\n{}", c.dump());
    c.check_no_overlap(&[]);

    // Now the leader is cut off from both the other host and the witness:
    // the other side has the quorum, and the old leader lets go first.
    std::thread::sleep(Duration::from_millis(500));
    let other = 3 - leader;
    let cut = c.mark("partition: the leader | the other host and the router");
    c.lan.partition(&[&[leader], &[other, ROUTER]]);
    let next = c
        .wait_promote(cut, &[leader, WITNESS], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("the side with the witness did not take over\n{}", c.dump()));
    let demoted = c
        .hook_events()
        .into_iter()
        .find(|e| e.node == leader && e.kind == "demote-end" && e.at_ns >= cut)
        .unwrap_or_else(|| panic!("the old leader did not demote\n{}", c.dump()));
    assert!(
        demoted.at_ns < next.at_ns,
        "the new leader promoted before the old one's demote ended\n{}",
        c.dump()
    );
    c.lan.heal_partition();
    let windows = c.check_no_overlap(&[]);
    println!(
        "2+1 partitions: nothing moves while the witness sees both hosts; cut off from it, \
         the leader's demote ended {:.1} ms before host {other} promoted after {:.1} ms; \
         {} leadership windows, 0 ms with two holders",
        ms(next.at_ns - demoted.at_ns),
        ms(next.at_ns - cut),
        windows.len()
    );
}

#[test]
fn the_witness_down_changes_nothing_and_then_one_host_alone_does_not_lead() {
    if !require_root() {
        return;
    }
    let mut c = two_and_a_witness();
    let (leader, epoch) = first_leader(&c);
    std::thread::sleep(Duration::from_millis(500));
    let killed = c.kill(WITNESS);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.holder(),
        Some((leader, epoch)),
        "the witness's loss moved leadership\n{}",
        c.dump()
    );
    assert!(
        c.hook_events().iter().all(|e| e.at_ns < killed),
        "a hook ran after the witness died\n{}",
        c.dump()
    );

    // Now the leader crashes too: host 2 alone is no quorum.
    let other = 3 - leader;
    c.lan.cut(leader);
    let crashed = c.kill(leader);
    std::thread::sleep(Duration::from_secs(2));
    let promotes: Vec<_> = c
        .hook_events()
        .into_iter()
        .filter(|e| e.at_ns >= crashed && e.kind == "promote")
        .collect();
    assert!(
        promotes.is_empty(),
        "one host led alone: {promotes:?}\n{}",
        c.dump()
    );
    let (ok, status) = c.ctl(other, &["status"]);
    assert!(ok, "{status}");
    let why = format!("NO QUORUM (not linked both ways with {leader}, {WITNESS} (witness))");
    assert!(status.contains(&why), "status does not say why:\n{status}");
    println!("host {other} alone, as `regent status` puts it:\n{status}");
    c.check_no_overlap(&[(leader, crashed)]);
}

/// A second cluster, "test-b", of hosts 4 and 5 with the same witness
/// host: its own name, group, port, key, state and control socket. Returns
/// the daemons it started and the file its hook logs `NODE KIND EPOCH` to.
fn start_second_cluster(c: &Cluster) -> (Vec<(usize, std::process::Child)>, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = c.dir.join("b");
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("hooks.log");
    let hook = dir.join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$REGENT_NODE $1 $2\" >> {}\n",
            log.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = dir.join("key");
    std::fs::write(&key, "fedcba9876543210fedcba9876543210\n").expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut daemons = Vec::new();
    for (host, priority) in [(WITNESS, 100), (4, 200), (5, 100)] {
        let config = format!(
            "cluster = \"test-b\"\nnode = {host}\npriority = {priority}\n\n\
             [[member]]\nid = 3\naddress = \"{}\"\nwitness = true\ntransport = \"unicast\"\n\n\
             [[member]]\nid = 4\naddress = \"{}\"\n\n[[member]]\nid = 5\naddress = \"{}\"\n\n\
             [network]\ninterface = \"eth0\"\nmulticast = \"239.255.42.2:7476\"\n\n\
             [election]\npreempt = false\n\n\
             [hooks]\npromote = \"{h}\"\ndemote = \"{h}\"\n\n\
             [auth]\nkey_file = \"{}\"\n\n[state]\ndir = \"{}\"\n\n\
             [control]\nsocket = \"{}\"\n",
            c.lan.addr4(WITNESS),
            c.lan.addr4(4),
            c.lan.addr4(5),
            key.display(),
            dir.join(format!("state{host}")).display(),
            dir.join(format!("h{host}.sock")).display(),
            h = hook.display(),
        );
        let path = dir.join(format!("h{host}.toml"));
        std::fs::write(&path, config).expect("config");
        let out = std::fs::File::create(dir.join(format!("h{host}.log"))).expect("log");
        for verb in ["init", "run"] {
            let mut cmd = std::process::Command::new(cluster::regent_bin());
            cmd.arg(verb)
                .arg("-c")
                .arg(&path)
                .env_remove("NOTIFY_SOCKET")
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out.try_clone().expect("log"));
            let mut child = c.lan.spawn(host, &mut cmd);
            if verb == "init" {
                assert!(
                    child.wait().expect("init").success(),
                    "regent init on host {host}"
                );
            } else {
                daemons.push((host, child));
            }
        }
    }
    (daemons, log)
}

/// Waits for a `promote` line of node `node` in a second cluster's log.
fn b_promoted(log: &std::path::Path, node: usize, limit: Duration) -> bool {
    cluster::wait_until(limit, || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{node} promote ")))
    })
}

#[test]
fn one_witness_host_serves_two_clusters_at_once() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(
        Lan::routed(5, &[WITNESS]),
        Opts {
            priorities: vec![200, 100, 250],
            witnesses: vec![WITNESS],
            preempt: false,
            members: Some(3),
            ..Opts::default()
        },
    );
    c.start_all();
    let (mut daemons, b_log) = start_second_cluster(&c);
    let (leader, _) = first_leader(&c);
    assert!(
        b_promoted(&b_log, 4, Duration::from_secs(3)),
        "cluster b elected no leader\n{}",
        std::fs::read_to_string(&b_log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(500));

    // Both leaders crash: each survivor needs the one witness host's vote.
    let mut crashes = Vec::new();
    let took = crash_and_take_over(&mut c, leader, &mut crashes);
    let (_, b_leader) = daemons
        .iter_mut()
        .find(|(host, _)| *host == 4)
        .expect("host 4");
    let _ = b_leader.kill();
    let _ = b_leader.wait();
    c.lan.cut(4);
    assert!(
        b_promoted(&b_log, 5, Duration::from_secs(3)),
        "cluster b did not fail over\n{}",
        std::fs::read_to_string(&b_log).unwrap_or_default()
    );
    println!("cluster test failed over in {took:.1} ms; cluster test-b failed over too");
    c.check_no_overlap(&crashes);
    for (_, mut d) in daemons {
        let _ = d.kill();
        let _ = d.wait();
    }
}
