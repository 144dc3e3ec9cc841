//! Real daemons on an emulated LAN of network namespaces: election, crash,
//! graceful stop, partition, loss, unicast, hostile packets and IPv6.
//!
//! Needs root (skips otherwise, fails under `CI=true`).

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

use std::time::Duration;

use cluster::{realtime_ns, wait_until, Cluster, Opts};
use netns::{require_root, Lan};

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

fn three(opts: Opts) -> Cluster {
    let mut c = Cluster::new(Lan::new(3), opts);
    c.start_all();
    c
}

/// Waits for the first leader; returns (node, epoch).
fn first_leader(c: &Cluster, limit: Duration) -> (usize, u64) {
    let e = c
        .wait_promote(0, &[], limit)
        .unwrap_or_else(|| panic!("no leader within {limit:?}\n{}", c.dump()));
    (e.node, e.epoch)
}

#[test]
fn three_hosts_elect_the_highest_ranked_within_two_seconds() {
    if !require_root() {
        return;
    }
    let began = realtime_ns();
    let c = three(Opts {
        priorities: vec![100, 300, 200],
        ..Opts::default()
    });
    let (node, _) = first_leader(&c, Duration::from_secs(2));
    let took = c
        .hook_events()
        .iter()
        .find(|e| e.kind == "promote")
        .map(|e| e.at_ns - began);
    println!("leader node {node} after {:.0} ms", ms(took.unwrap_or(0)));
    assert_eq!(node, 2, "node 2 has the highest priority\n{}", c.dump());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.holder().map(|h| h.0), Some(2));
    c.check_history(&[]);
}

fn crash_test(opts: Opts) {
    let mut c = three(opts.clone());
    let (leader, epoch) = first_leader(&c, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    c.lan.cut(leader);
    let killed = c.kill(leader);
    let next = c
        .wait_promote(killed, &[leader], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no new leader after the crash\n{}", c.dump()));
    let took = next.at_ns - killed;
    println!(
        "crash failover: node {leader} killed, node {} promoted epoch {} after {:.1} ms (dead_after {} ms)",
        next.node,
        next.epoch,
        ms(took),
        opts.dead_after_ms
    );
    assert!(next.epoch > epoch);
    assert!(
        took < u128::from(opts.dead_after_ms) * 1_000_000 * 3,
        "failover took {:.1} ms\n{}",
        ms(took),
        c.dump()
    );
    c.check_history(&[(leader, killed)]);
    // The survivors' logs say who died, when it was last heard, and whom the
    // leader-lost transition lost; durations read as an operator reads them.
    let log = std::fs::read_to_string(c.daemon_log(next.node)).unwrap_or_default();
    for (what, needle) in [
        (
            "the leader's death",
            format!("member {leader} is down: last heard "),
        ),
        (
            "the lost leader",
            format!("reason leader-lost (leader {leader} last heard "),
        ),
        ("members coming up", format!("member {leader} is up")),
    ] {
        assert!(
            log.contains(&needle),
            "no line for {what} ({needle:?}) in\n{log}"
        );
    }
    let debug_duration = log
        .split(|ch: char| ch.is_whitespace() || ch == ',')
        .find(|w| {
            let digits = w.trim_end_matches(|ch: char| ch.is_alphabetic() || ch == 'µ');
            w.len() > digits.len()
                && digits.ends_with(|ch: char| ch.is_ascii_digit())
                && ["ns", "µs", "ms", "s"].contains(&&w[digits.len()..])
        });
    assert_eq!(debug_duration, None, "a duration in Debug form in\n{log}");
}

#[test]
fn crash_of_the_leader_fails_over_with_a_higher_epoch() {
    if !require_root() {
        return;
    }
    crash_test(Opts::default());
}

#[test]
fn unicast_crash_fails_over() {
    if !require_root() {
        return;
    }
    crash_test(Opts {
        unicast: true,
        ..Opts::default()
    });
}

#[test]
fn ipv6_multicast_elects_and_fails_over() {
    if !require_root() {
        return;
    }
    crash_test(Opts {
        ipv6: true,
        ..Opts::default()
    });
}

#[test]
fn sigterm_hands_over_well_inside_dead_after() {
    if !require_root() {
        return;
    }
    let mut c = three(Opts::default());
    let (leader, epoch) = first_leader(&c, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    let stopped = c.signal(leader, libc::SIGTERM);
    let next = c
        .wait_promote(stopped, &[leader], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no new leader after SIGTERM\n{}", c.dump()));
    let took = next.at_ns - stopped;
    println!(
        "graceful handover: node {} promoted epoch {} {:.1} ms after SIGTERM",
        next.node,
        next.epoch,
        ms(took)
    );
    assert!(next.epoch > epoch);
    assert_eq!(
        c.wait_exit(leader, Duration::from_secs(5)),
        Some(0),
        "graceful exit code\n{}",
        c.dump()
    );
    assert!(
        took < 150_000_000,
        "handover took {:.1} ms, dead_after is 300 ms\n{}",
        ms(took),
        c.dump()
    );
    // The old leader demoted before the new one promoted.
    let events = c.hook_events();
    let demote = events
        .iter()
        .find(|e| e.node == leader && e.kind == "demote" && e.epoch == epoch)
        .expect("the old leader ran demote");
    assert!(demote.at_ns <= next.at_ns);
    c.check_history(&[]);
}

#[test]
fn partition_leaves_one_leader_in_the_majority() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(
        Lan::new(5),
        Opts {
            priorities: vec![100, 100, 100, 100, 500],
            ..Opts::default()
        },
    );
    c.start_all();
    let (leader, _) = first_leader(&c, Duration::from_secs(3));
    assert_eq!(leader, 5);
    std::thread::sleep(Duration::from_millis(500));
    let cut_at = realtime_ns();
    c.lan.partition(&[&[5, 1], &[2, 3, 4]]);
    let majority = c
        .wait_promote(cut_at, &[5, 1], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("the majority elected no leader\n{}", c.dump()));
    println!(
        "partition: majority leader node {} epoch {} after {:.1} ms",
        majority.node,
        majority.epoch,
        ms(majority.at_ns - cut_at)
    );
    // The minority's leader demoted, before the majority promoted.
    let events = c.hook_events();
    let demoted = events
        .iter()
        .find(|e| e.node == 5 && e.kind == "demote" && e.at_ns >= cut_at);
    let demoted =
        demoted.unwrap_or_else(|| panic!("the minority leader did not demote\n{}", c.dump()));
    assert!(demoted.at_ns <= majority.at_ns);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.holder().map(|h| h.0), Some(majority.node));
    c.lan.heal_partition();
    // After healing exactly one leader: node 5 comes back and, with
    // preemption, takes over after its delay.
    std::thread::sleep(Duration::from_millis(4000));
    let holder = c.holder();
    assert!(holder.is_some(), "no leader after healing\n{}", c.dump());
    println!("after healing: node {:?} leads", holder);
    c.check_history(&[]);
}

#[test]
fn twenty_percent_loss_for_thirty_seconds_changes_no_leader() {
    if !require_root() {
        return;
    }
    let mut c = three(Opts::default());
    let (leader, epoch) = first_leader(&c, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1000));
    let before = c.hook_events().len();
    for h in 1..=3 {
        c.lan.loss(h, 20);
    }
    std::thread::sleep(Duration::from_secs(30));
    for h in 1..=3 {
        c.lan.clear_loss(h);
    }
    let after = c.hook_events();
    assert_eq!(
        after.len(),
        before,
        "leadership changed under 20% loss\n{}",
        c.dump()
    );
    assert_eq!(c.holder(), Some((leader, epoch)));
    let (ok, metrics) = c.ctl(leader, &["metrics"]);
    assert!(ok, "{metrics}");
    let sent = metrics
        .lines()
        .find(|l| l.starts_with("regent_packets_sent_total"))
        .unwrap_or("")
        .to_string();
    println!("20% loss for 30 s: leader node {leader} kept epoch {epoch}; {sent}");
    assert!(c.running(1) && c.running(2) && c.running(3));
}

#[test]
fn forged_replayed_and_garbage_packets_change_nothing_and_are_counted() {
    if !require_root() {
        return;
    }
    let c = three(Opts::default());
    let (leader, epoch) = first_leader(&c, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    // Capture a real datagram from the wire on host 1, then replay it, plus
    // garbage and a datagram signed with the wrong key, from host 1's namespace.
    let script = r#"
import socket, struct, sys, time, hmac, hashlib
grp = "239.255.42.1"; port = 7475
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
r.bind((grp, port))
mreq = struct.pack("4s4s", socket.inet_aton(grp), socket.inet_aton(sys.argv[1]))
r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
r.settimeout(3)
captured = r.recv(2048)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for _ in range(20):
    s.sendto(captured, (grp, port))             # replay
for i in range(200):
    s.sendto(bytes([i % 256]) * (i + 1), (grp, port))  # garbage
body = captured[1:-32]
forged = captured[:1] + body + hmac.new(b"wrong key, wrong key, wrong key!", captured[:1] + body, hashlib.sha256).digest()
for _ in range(20):
    s.sendto(forged, (grp, port))               # wrong key
s.sendto(b"\x01" + b"x" * 1300, (grp, port))    # oversized
print("sent")
"#;
    let addr = c.lan.addr4(1).to_string();
    let out = c.lan.exec(1, &["python3", "-c", script, &addr]);
    assert!(
        out.status.success(),
        "attack script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        c.holder(),
        Some((leader, epoch)),
        "leadership changed\n{}",
        c.dump()
    );
    let (ok, metrics) = c.ctl(2, &["metrics"]);
    assert!(ok, "{metrics}");
    let dropped = |reason: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("regent_packets_dropped_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    println!(
        "drops on node 2: replay {} own_id {} bad_mac {} truncated {} oversized {}",
        dropped("replay"),
        dropped("own_id"),
        dropped("bad_mac"),
        dropped("truncated"),
        dropped("oversized")
    );
    // The captured datagram may be node 2's own: replayed to it, that is
    // dropped as own_id rather than replay.
    assert!(dropped("replay") + dropped("own_id") >= 19.0, "{metrics}");
    assert!(dropped("bad_mac") >= 20.0, "{metrics}");
    assert!(dropped("truncated") >= 30.0, "{metrics}");
    assert!(dropped("oversized") >= 1.0, "{metrics}");
    let promotions = c
        .hook_events()
        .iter()
        .filter(|e| e.kind == "promote")
        .count();
    assert_eq!(
        promotions,
        1,
        "no hook ran because of the attack\n{}",
        c.dump()
    );
}

#[test]
fn status_agrees_on_every_host() {
    if !require_root() {
        return;
    }
    let c = three(Opts::default());
    let (leader, epoch) = first_leader(&c, Duration::from_secs(3));
    let agreed = wait_until(Duration::from_secs(2), || {
        (1..=3).all(|h| {
            let (ok, json) = c.ctl(h, &["status", "--json"]);
            ok && json.contains(&format!("\"leader\":{leader}"))
                && json.contains(&format!("\"epoch\":{epoch}"))
        })
    });
    let (_, table) = c.ctl(1, &["status"]);
    println!("{table}");
    assert!(agreed, "hosts disagree on the leader\n{}", c.dump());
    // `regent is-leader`: exit 0 on the leader only, and a line that says so.
    for h in 1..=3 {
        let (ok, line) = c.ctl(h, &["is-leader"]);
        if h == leader {
            assert!(
                ok && line == format!("leader epoch {epoch}\n"),
                "host {h}: {line}"
            );
        } else {
            assert!(
                !ok && line == format!("follower of node {leader}\n"),
                "host {h}: {line}"
            );
        }
    }
}

#[test]
fn step_down_hands_over_to_the_next_ranked_or_the_named_node() {
    if !require_root() {
        return;
    }
    let c = three(Opts {
        priorities: vec![100, 200, 300],
        preempt: false,
        ..Opts::default()
    });
    let (leader, epoch) = first_leader(&c, Duration::from_secs(3));
    assert_eq!(leader, 3);
    std::thread::sleep(Duration::from_millis(500));
    // A follower cannot step down.
    let (ok, text) = c.ctl(1, &["step-down"]);
    assert!(!ok && text.contains("does not lead"), "{text}");
    let asked = realtime_ns();
    let (ok, text) = c.ctl(3, &["step-down"]);
    assert!(ok, "{text}\n{}", c.dump());
    let next = c
        .wait_promote(asked, &[3], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no leader after step-down\n{}", c.dump()));
    println!(
        "step-down: node {} promoted epoch {} {:.1} ms after the request",
        next.node,
        next.epoch,
        ms(next.at_ns - asked)
    );
    assert_eq!(next.node, 2, "the next-ranked node leads\n{}", c.dump());
    assert!(next.epoch > epoch);
    std::thread::sleep(Duration::from_millis(300));
    // Now hand over to a named, lower-ranked node.
    let asked = realtime_ns();
    let (ok, text) = c.ctl(2, &["step-down", "--to", "1"]);
    assert!(ok, "{text}\n{}", c.dump());
    let named = c
        .wait_promote(asked, &[2], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no leader after step-down --to 1\n{}", c.dump()));
    assert_eq!(named.node, 1, "{}", c.dump());
    println!(
        "step-down --to 1: promoted epoch {} {:.1} ms after the request",
        named.epoch,
        ms(named.at_ns - asked)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.holder().map(|h| h.0), Some(1));
    c.check_history(&[]);
}
