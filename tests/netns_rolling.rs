//! Rolling restarts on an emulated LAN, watched by a client: restarting a
//! follower's daemon changes no leader and costs the client nothing, even
//! at exact quorum, where the leader's lease rests on that one follower;
//! restarting the leader's daemon hands over once. A key rotation, three
//! rounds of reloads host by host (README "Rotate the key"), changes no
//! leader and costs the client nothing either.
//!
//! Three hosts float a VIP with the shipped `conf/hooks/vip` (the cluster
//! harness's [`Opts::vip_hook`], whose hook-log lines carry
//! `REGENT_REASON`, so a restarted daemon's start-up demote can be told
//! from a demote that ends a leadership), set up and watched by
//! [`vip_rig`]: the client probes the VIP over UDP every 2 ms with
//! regent-bench's prober, and a responder on every host answers with its
//! host number.
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

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cluster::{json_field, overlap_ms, wait_until, Cluster, Opts};
use netns::{require_root, CLIENT};
use regentd::core::{Body, Epoch, Incarnation, Message, NodeId, Seq};
use regentd::wire::{Codec, KeyId};
use socket2::{Domain, Protocol, Socket, Type};
use vip_rig::probe::Span;
use vip_rig::{ms, Rig, SETTLE, WATCH_AFTER};

/// A rig of three hosts whose daemons on hosts `up` are started; the
/// others never run.
fn rig(up: &[usize]) -> Rig {
    rig_ranked(up, Vec::new())
}

/// Like [`rig`], with the hosts' priorities.
fn rig_ranked(up: &[usize], priorities: Vec<u32>) -> Rig {
    let opts = Opts {
        // Leadership stays where a restart moved it: a returning node must
        // not take it back (that would be a second change).
        preempt: false,
        priorities,
        ..Opts::default()
    };
    Rig::start(3, opts, up)
}

/// SIGTERM to host's daemon; once it has exited cleanly, starts it again.
fn bounce(c: &mut Cluster, host: usize) {
    c.stop(host);
    c.start(host);
}

/// Restarts a follower's daemon and checks that the client and the leader
/// noticed nothing: no leadership change, no probe lost.
fn restart_follower(rig: &mut Rig, host: usize, leader: (usize, u64), label: &str) -> Span {
    let since = rig.c.mark(format!("{label}: restart of follower {host}"));
    let from = rig.prober.next_seq();
    bounce(&mut rig.c, host);
    let follows = rig.c.wait_follows(host, leader, SETTLE).unwrap_or_else(|| {
        panic!(
            "{label}: host {host} does not follow leader {} at epoch {} again\n{}\n{}",
            leader.0,
            leader.1,
            rig.c.timeline(&[]),
            rig.c.dump()
        )
    });
    std::thread::sleep(WATCH_AFTER);
    let seen = rig.seen_since(from);
    let changes = rig.c.leadership_changes_since(since);
    println!(
        "{label}: follower {host} restarted, following leader {} again {:.0} ms after its start: \
         {} probes sent, {} lost, outage {:.1} ms, {} leadership changes",
        leader.0,
        ms(follows),
        seen.sent,
        seen.lost,
        ms(seen.outage),
        changes.len()
    );
    assert!(
        changes.is_empty(),
        "{label}: restarting follower {host} changed leadership: {changes:?}\n{}\n{}",
        rig.c.timeline(&[]),
        rig.c.dump()
    );
    assert_eq!(
        seen.lost,
        0,
        "{label}: the client lost probes while follower {host} restarted ({seen:?})\n{}\n{}",
        rig.c.timeline(&[]),
        rig.c.dump()
    );
    assert_eq!(seen.answered_by, [(leader.0, seen.sent)], "{seen:?}");
    seen
}

#[test]
fn rolling_restart_of_every_host_moves_leadership_only_when_the_leader_restarts() {
    if !require_root() {
        return;
    }
    let mut rig = rig(&[1, 2, 3]);
    let dead_after = Duration::from_millis(rig.c.opts.dead_after_ms);
    let (leader, epoch) = rig.settle(&[1, 2, 3]);
    let followers: Vec<usize> = (1..=3).filter(|&h| h != leader).collect();
    for &f in &followers {
        restart_follower(&mut rig, f, (leader, epoch), "3 of 3 up");
        // The next restart finds every daemon past its start.
        std::thread::sleep(Duration::from_millis(500));
    }

    // The leader last: a graceful handover, one leadership change.
    let since = rig.c.mark(format!("restart of leader {leader}"));
    let from = rig.prober.next_seq();
    rig.c.signal(leader, libc::SIGTERM);
    let next = rig
        .c
        .wait_promote(since, &[leader], SETTLE)
        .unwrap_or_else(|| panic!("no leader after SIGTERM\n{}", rig.c.dump()));
    assert_eq!(
        rig.c.wait_exit(leader, Duration::from_secs(10)),
        Some(0),
        "{}",
        rig.c.dump()
    );
    rig.c.start(leader);
    assert!(
        rig.c
            .wait_follows(leader, (next.node, next.epoch), SETTLE)
            .is_some(),
        "the restarted leader does not follow node {}\n{}",
        next.node,
        rig.c.dump()
    );
    assert!(
        rig.wait_served_by(next.node, SETTLE),
        "the client never reached node {} after the handover\n{}",
        next.node,
        rig.c.dump()
    );
    std::thread::sleep(WATCH_AFTER);
    let seen = rig.seen_since(from);
    let changes = rig.c.leadership_changes_since(since);
    println!(
        "3 of 3 up: leader {leader} restarted, node {} promoted epoch {} {:.1} ms after SIGTERM: \
         {} probes sent, {} lost, outage {:.1} ms, answers {:?}",
        next.node,
        next.epoch,
        (next.at_ns - since) as f64 / 1e6,
        seen.sent,
        seen.lost,
        ms(seen.outage),
        seen.answered_by
    );
    let promotes: Vec<(usize, u64)> = changes
        .iter()
        .filter(|e| e.kind == "promote")
        .map(|e| (e.node, e.epoch))
        .collect();
    let demotes: Vec<(usize, u64)> = changes
        .iter()
        .filter(|e| e.kind == "demote")
        .map(|e| (e.node, e.epoch))
        .collect();
    assert_eq!(
        (promotes, demotes),
        (vec![(next.node, next.epoch)], vec![(leader, epoch)]),
        "restarting the leader must hand over exactly once\n{}",
        rig.c.timeline(&[])
    );
    assert!(
        seen.outage < dead_after,
        "the handover's outage {:.1} ms is not below dead_after\n{}",
        ms(seen.outage),
        rig.c.timeline(&[])
    );
    assert_eq!(rig.c.holder(), Some((next.node, next.epoch)));
    rig.c.check_no_overlap(&[]);
}

#[test]
fn rolling_restart_at_exact_quorum_keeps_the_leader() {
    if !require_root() {
        return;
    }
    // Host 3 never runs: the leader's quorum is itself and the one follower.
    let mut rig = rig(&[1, 2]);
    let (leader, epoch) = rig.settle(&[1, 2]);
    let follower = if leader == 1 { 2 } else { 1 };
    for round in 1..=5 {
        restart_follower(
            &mut rig,
            follower,
            (leader, epoch),
            &format!("2 of 3 up, round {round}"),
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The leader at exact quorum: when it stops, nobody else can reach a
    // quorum, so there is no handover. The service is down until it is back
    // and the two elect a leader again; afterwards exactly one leads.
    let since = rig.c.mark(format!("restart of leader {leader}"));
    let from = rig.prober.next_seq();
    rig.c.signal(leader, libc::SIGTERM);
    assert_eq!(
        rig.c.wait_exit(leader, Duration::from_secs(10)),
        Some(0),
        "{}",
        rig.c.dump()
    );
    let down = rig.c.leadership_changes_since(since);
    rig.c.start(leader);
    let next = rig
        .c
        .wait_promote(since, &[], Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "no leader after the leader's restart\n{}\n{}",
                rig.c.timeline(&[]),
                rig.c.dump()
            )
        });
    assert!(
        rig.wait_served_by(next.node, SETTLE),
        "the client never reached node {} after the restart\n{}",
        next.node,
        rig.c.dump()
    );
    let other = if next.node == 1 { 2 } else { 1 };
    assert!(
        rig.c
            .wait_follows(other, (next.node, next.epoch), SETTLE)
            .is_some(),
        "host {other} does not follow the new leader {}\n{}",
        next.node,
        rig.c.dump()
    );
    std::thread::sleep(WATCH_AFTER);
    let seen = rig.seen_since(from);
    let changes = rig.c.leadership_changes_since(since);
    println!(
        "2 of 3 up: leader {leader} restarted; while it was down: {down:?}; node {} promoted \
         epoch {} {:.1} ms after SIGTERM: {} probes sent, {} lost, outage {:.1} ms, answers {:?}",
        next.node,
        next.epoch,
        (next.at_ns - since) as f64 / 1e6,
        seen.sent,
        seen.lost,
        ms(seen.outage),
        seen.answered_by
    );
    assert!(
        down.iter().all(|e| e.kind != "promote"),
        "a node promoted without a quorum: {down:?}\n{}",
        rig.c.timeline(&[])
    );
    let promotes = changes.iter().filter(|e| e.kind == "promote").count();
    assert_eq!(
        promotes,
        1,
        "one election after the leader's restart: {changes:?}\n{}",
        rig.c.timeline(&[])
    );
    assert_eq!(rig.c.holder(), Some((next.node, next.epoch)));
    rig.c.check_no_overlap(&[]);
}

/// A rolling restart, then a member down for maintenance: the restart of
/// the remaining follower must not cost the leader its lease, even when
/// that follower is the one that led before the rolling restart.
///
/// The restarted ex-leader ranks highest. Were it to claim when its quiet
/// period ends (it follows no one during it), the claim would be refused,
/// but its promise would then stand one epoch above the leader's, so its
/// next restart could not resume and would stay quiet for dead_after,
/// longer than the lease at exact quorum. A node that hears a live leader
/// both ways waits for its heartbeat instead of claiming.
#[test]
fn a_follower_that_led_before_resumes_at_exact_quorum() {
    if !require_root() {
        return;
    }
    // Host 3 ranks highest and leads; its restart hands over to host 2.
    let mut rig = rig_ranked(&[1, 2, 3], vec![100, 200, 300]);
    let (leader, _) = rig.settle(&[1, 2, 3]);
    assert_eq!(leader, 3, "{}", rig.c.dump());
    let since = rig.c.mark("restart of leader 3");
    rig.c.signal(3, libc::SIGTERM);
    let next = rig
        .c
        .wait_promote(since, &[3], SETTLE)
        .unwrap_or_else(|| panic!("no leader after SIGTERM\n{}", rig.c.dump()));
    assert_eq!(rig.c.wait_exit(3, Duration::from_secs(10)), Some(0));
    rig.c.start(3);
    assert!(
        rig.c
            .wait_follows(3, (next.node, next.epoch), SETTLE)
            .is_some(),
        "{}",
        rig.c.dump()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let status = rig.c.status_json(3).unwrap_or_default();
    println!(
        "host 3 follows node {} at epoch {}; its promised epoch is {:?}",
        next.node,
        next.epoch,
        json_field(&status, "promised_epoch")
    );
    // Host 1 goes down for maintenance: host 3 is the leader's only partner.
    rig.c.signal(1, libc::SIGTERM);
    assert_eq!(rig.c.wait_exit(1, Duration::from_secs(10)), Some(0));
    std::thread::sleep(Duration::from_millis(1000));
    restart_follower(&mut rig, 3, (next.node, next.epoch), "2 of 3 up, ex-leader");
    rig.c.check_no_overlap(&[]);
}

/// The harness's multicast group and port (`cluster::Cluster::config`).
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 42, 1);
const PORT: u16 = 7475;
/// The harness's key (its file adds a newline, which regent strips), key id 0.
const OLD_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
/// The key the rotation moves to, as key id 1.
const NEW_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

/// Sockets in the client namespace on the heartbeat group: one hears what
/// the members send, the other sends to them.
fn group_sockets(c: &Cluster) -> (UdpSocket, UdpSocket) {
    let me = c.lan.addr4(CLIENT);
    c.lan.in_ns(CLIENT, move || {
        let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        rx.set_reuse_address(true).expect("reuseaddr");
        rx.set_reuse_port(true).expect("reuseport");
        rx.bind(&SocketAddr::V4(SocketAddrV4::new(GROUP, PORT)).into())
            .expect("bind the group");
        rx.join_multicast_v4(&GROUP, &me).expect("join");
        let rx = UdpSocket::from(rx);
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        tx.bind(&SocketAddr::V4(SocketAddrV4::new(me, 0)).into())
            .expect("bind");
        tx.set_multicast_if_v4(&me).expect("multicast if");
        tx.set_multicast_ttl_v4(1).expect("ttl");
        (rx, UdpSocket::from(tx))
    })
}

/// The first two bytes (version, and key id or payload) of the next
/// datagram each member sends from now on, by member; every datagram must
/// be authentic under one of the two keys.
fn headers_sent(c: &Cluster, rx: &UdpSocket) -> Vec<[u8; 2]> {
    let either = Codec::with_keys("test", (KeyId(1), NEW_KEY), &[(KeyId(0), OLD_KEY)]);
    let mut buf = [0u8; 2048];
    rx.set_nonblocking(true).expect("nonblocking");
    while rx.recv(&mut buf).is_ok() {}
    rx.set_nonblocking(false).expect("blocking");
    let mut heard: Vec<Option<[u8; 2]>> = vec![None; c.members()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while heard.iter().any(Option::is_none) && Instant::now() < deadline {
        let Ok(n) = rx.recv(&mut buf) else { continue };
        let m = either
            .decode(&buf[..n])
            .unwrap_or_else(|d| panic!("a member sent a datagram dropped as {d:?}\n{}", c.dump()));
        let slot = &mut heard[m.from.0 as usize - 1];
        slot.get_or_insert([buf[0], buf[1]]);
    }
    heard
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            h.unwrap_or_else(|| panic!("heard nothing of member {}\n{}", i + 1, c.dump()))
        })
        .collect()
}

/// Per host, its `bad_mac` and `unknown_key` drops.
fn key_drops(c: &Cluster) -> Vec<(f64, f64)> {
    (1..=c.members())
        .map(|h| (c.dropped(h, "bad_mac"), c.dropped(h, "unknown_key")))
        .collect()
}

/// The README's key rotation on a live cluster, by editing each host's file
/// and `regent reload`, one host at a time with a `dead_after` and more
/// between hosts, so every mixed state (some hosts accepting the new key,
/// some sending with it, some no longer accepting the old one) lasts long
/// enough to cost a follower its place or the leader its lease. The client
/// watches the VIP throughout.
///
/// Fails if a reload does not apply the keys (the members would go on
/// sending version 1, or the old key would still be accepted at the end),
/// if any round drops a member's datagram (`bad_mac`, `unknown_key`), if
/// leadership moves or two hosts ever hold it, or if a probe is lost.
#[test]
fn a_key_rotation_by_reloads_changes_no_leader_and_costs_the_client_nothing() {
    if !require_root() {
        return;
    }
    let rig = rig(&[1, 2, 3]);
    let (leader, epoch) = rig.settle(&[1, 2, 3]);
    let c = &rig.c;
    let (rx, tx) = group_sockets(c);
    let old_file = c.dir.join("key");
    let new_file = c.dir.join("key.1");
    std::fs::write(
        &new_file,
        format!("{}\n", std::str::from_utf8(NEW_KEY).expect("ascii")),
    )
    .expect("key");
    std::fs::set_permissions(&new_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (old, new) = (old_file.display(), new_file.display());
    let key_line = format!("key_file = \"{old}\"\n");
    // (round, the [auth] keys, a line of the reload's verdict, the first
    // two bytes each member sends after the round)
    let rounds = [
        (
            "accept the new key",
            format!("key_file = \"{old}\"\n\n[[auth.accept]]\nid = 1\nkey_file = \"{new}\"\n"),
            format!("auth.accept id 1: none -> \"{new}\""),
            // Version 1, then the first byte of the cluster name's length.
            [1, 0],
        ),
        (
            "send with the new key",
            format!(
                "key_file = \"{new}\"\nkey_id = 1\n\n[[auth.accept]]\nid = 0\nkey_file = \"{old}\"\n"
            ),
            "auth.key_id: 0 -> 1".to_owned(),
            [2, 1],
        ),
        (
            "remove the old key",
            format!("key_file = \"{new}\"\nkey_id = 1\n"),
            format!("auth.accept id 0: \"{old}\" -> none"),
            [2, 1],
        ),
    ];
    let before = headers_sent(c, &rx);
    assert!(before.iter().all(|h| *h == [1, 0]), "{before:?}");
    let drops = key_drops(c);
    let gap = Duration::from_millis(c.opts.dead_after_ms + 200);
    let since = c.mark("key rotation begins");
    let from = rig.prober.next_seq();
    let began = Instant::now();
    for (round, auth, verdict, sent) in &rounds {
        let round_began = Instant::now();
        for h in 1..=3 {
            let text = c.config(h);
            assert_eq!(text.matches(&key_line).count(), 1, "{text}");
            std::fs::write(c.config_path(h), text.replace(&key_line, auth)).expect("config");
            c.mark(format!("{round}: reload of host {h}"));
            let (ok, out) = c.ctl(h, &["reload"]);
            assert!(
                ok && out.contains(verdict.as_str()),
                "{round}: host {h}'s reload: {out}\n{}",
                c.dump()
            );
            std::thread::sleep(gap);
        }
        let headers = headers_sent(c, &rx);
        let now = key_drops(c);
        println!(
            "key rotation, {round}: 3 reloads in {:.0} ms; members send {headers:?}; \
             bad_mac/unknown_key drops per host {:?}",
            ms(round_began.elapsed()),
            now.iter()
                .zip(&drops)
                .map(|(n, d)| (n.0 - d.0, n.1 - d.1))
                .collect::<Vec<_>>()
        );
        assert!(
            headers.iter().all(|h| h == sent),
            "{round}: members send {headers:?}, not {sent:?}\n{}",
            c.dump()
        );
        assert_eq!(now, drops, "{round}: datagrams dropped\n{}", c.dump());
    }
    let took = began.elapsed();
    std::thread::sleep(WATCH_AFTER);
    let seen = rig.seen_since(from);
    let changes = c.leadership_changes_since(since);
    let promotes = c
        .hook_events()
        .iter()
        .filter(|e| e.kind == "promote")
        .count();
    let windows = c.check_no_overlap(&[]);
    let overlap = overlap_ms(&windows);
    println!(
        "key rotation: leader {leader} at epoch {epoch} throughout, {:.1} s for 9 reloads: \
         {} probes sent, {} lost, outage {:.1} ms, {} leadership changes, {} promotes in all, \
         {overlap:.1} ms with two holders",
        took.as_secs_f64(),
        seen.sent,
        seen.lost,
        ms(seen.outage),
        changes.len(),
        promotes
    );
    assert!(
        changes.is_empty() && promotes == 1,
        "the key rotation changed leadership: {changes:?}\n{}\n{}",
        c.timeline(&[]),
        c.dump()
    );
    assert_eq!(overlap, 0.0);
    assert_eq!(c.holder(), Some((leader, epoch)));
    assert_eq!(
        seen.lost,
        0,
        "the client lost probes during the key rotation ({seen:?})\n{}\n{}",
        c.timeline(&[]),
        c.dump()
    );
    assert_eq!(seen.answered_by, [(leader, seen.sent)], "{seen:?}");

    // The old key is gone everywhere: whoever holds only it is a stranger.
    let stale = Codec::new("test", Some(OLD_KEY));
    let m = Message {
        from: NodeId(9),
        incarnation: Incarnation(1),
        seq: Seq(1),
        priority: 1,
        known_epoch: Epoch(0),
        membership: Default::default(),
        body: Body::Election,
    };
    tx.send_to(
        &stale.encode(&m).expect("fits"),
        SocketAddrV4::new(GROUP, PORT),
    )
    .expect("send");
    let refused = wait_until(Duration::from_secs(5), || {
        key_drops(c)
            .iter()
            .zip(&drops)
            .all(|(now, before)| now.1 == before.1 + 1.0)
    });
    assert!(
        refused,
        "a datagram under the removed key was not dropped as unknown_key: {:?}\n{}",
        key_drops(c),
        c.dump()
    );
}
