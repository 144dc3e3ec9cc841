//! The netns harness and `regentd::net` on a real emulated LAN: hosts reach
//! each other by ping and by heartbeat endpoints, partitions, loss and cut
//! cables stop them, healing restores them, and nothing is left behind.
//!
//! Needs root (skips otherwise, fails under `CI=true`).

#[path = "netns/mod.rs"]
mod netns;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use netns::{namespaces_with_prefix, require_root, Lan, CLIENT};
use regentd::net::{Endpoint, Transport};

const PORT: u16 = 7475;

fn v4_group() -> SocketAddr {
    SocketAddr::new("239.255.42.1".parse().expect("literal"), PORT)
}

fn v6_group() -> SocketAddr {
    SocketAddr::new("ff02::4247".parse().expect("literal"), PORT)
}

/// A multicast endpoint on `host`'s eth0, opened inside its namespace.
fn multicast(lan: &Lan, host: usize, group: SocketAddr) -> Endpoint {
    let transport = Transport::Multicast {
        group,
        interface: "eth0".into(),
        loopback: false,
        unicast: None,
    };
    lan.in_ns(host, || Endpoint::open(&transport, &[]))
        .unwrap_or_else(|e| panic!("open {group} on host {host}: {e}"))
}

/// One multicast endpoint per host, for v4 and for v6.
struct Mesh {
    v4: Vec<Endpoint>,
    v6: Vec<Endpoint>,
}

impl Mesh {
    fn new(lan: &Lan, hosts: &[usize]) -> Mesh {
        Mesh {
            v4: hosts
                .iter()
                .map(|&h| multicast(lan, h, v4_group()))
                .collect(),
            v6: hosts
                .iter()
                .map(|&h| multicast(lan, h, v6_group()))
                .collect(),
        }
    }

    /// Whether a datagram from host index `from` reaches host index `to`,
    /// over v4 and v6 alike (indices into the hosts given to `new`).
    fn reaches(&self, from: usize, to: usize, rounds: u32) -> bool {
        let v4 = delivered(&self.v4[from], &self.v4[to], rounds);
        let v6 = delivered(&self.v6[from], &self.v6[to], rounds);
        assert_eq!(v4, v6, "v4 and v6 multicast disagree for {from} -> {to}");
        v4
    }

    /// Like [`Mesh::reaches`], over v4 only.
    fn v4_reaches(&self, from: usize, to: usize, rounds: u32) -> bool {
        delivered(&self.v4[from], &self.v4[to], rounds)
    }
}

/// Rounds of [`delivered`] to wait for a datagram that should arrive.
const ARRIVES: u32 = 80;
/// Rounds of [`delivered`] to wait before believing one will not.
const BLOCKED: u32 = 12;

/// Sends a fresh payload from `from` every round and reports whether `to`
/// saw it within `rounds` rounds of 25 ms. Datagrams of earlier checks that
/// are still queued are skipped by their payload.
fn delivered(from: &Endpoint, to: &Endpoint, rounds: u32) -> bool {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let payload = format!("probe {}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut buf = [0u8; 256];
    for _ in 0..rounds {
        // A send can fail while a cable is cut; the next round tries again.
        let _ = from.send(payload.as_bytes());
        std::thread::sleep(Duration::from_millis(25));
        while let Some((len, _)) = to.recv(&mut buf).expect("recv") {
            if &buf[..len] == payload.as_bytes() {
                return true;
            }
        }
    }
    false
}

fn ping(lan: &Lan, from: usize, to: IpAddr) -> bool {
    let to = to.to_string();
    lan.exec(from, &["ping", "-n", "-q", "-c", "1", "-W", "2", &to])
        .status
        .success()
}

fn assert_no_namespaces(prefix: &str) {
    let left = namespaces_with_prefix(prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn hosts_ping_each_other_over_v4_and_v6() {
    if !require_root() {
        return;
    }
    let lan = Lan::with_client(3);
    for (from, to) in [(1, 2), (2, 3), (3, 1), (CLIENT, 2)] {
        assert!(
            ping(&lan, from, lan.addr4(to).into()),
            "ping {from} -> {to} v4"
        );
        assert!(
            ping(&lan, from, lan.addr6(to).into()),
            "ping {from} -> {to} v6"
        );
    }
    let to = lan.addr4(2).to_string();
    let arping = lan.exec(1, &["arping", "-c", "1", "-w", "2", "-I", "eth0", &to]);
    assert!(arping.status.success(), "arping 1 -> 2: {arping:?}");
}

#[test]
fn multicast_reaches_every_other_namespace_both_ways() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(3);
    let mesh = Mesh::new(&lan, &[1, 2, 3]);
    for (from, to) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        assert!(
            mesh.reaches(from, to, ARRIVES),
            "host {} -> {}",
            from + 1,
            to + 1
        );
    }
    // One send goes to the group once, and the sender does not hear itself.
    assert_eq!(mesh.v4[0].send(b"once").expect("send"), 1);
    assert_eq!(mesh.v4[0].targets(), [v4_group()]);
    let mut buf = [0u8; 64];
    std::thread::sleep(Duration::from_millis(100));
    while let Some((len, from)) = mesh.v4[0].recv(&mut buf).expect("recv") {
        assert_ne!(&buf[..len], b"once", "own datagram looped back from {from}");
    }
    let mut heard = 0;
    for _ in 0..40 {
        while let Some((len, from)) = mesh.v4[1].recv(&mut buf).expect("recv") {
            if &buf[..len] == b"once" {
                assert_eq!(from, SocketAddr::new(lan.addr4(1).into(), PORT));
                heard += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(heard, 1, "exactly one copy arrives");
}

#[test]
fn unicast_reaches_each_peer_across_namespaces() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(3);
    for v6 in [false, true] {
        let addr = |host: usize| -> IpAddr {
            if v6 {
                lan.addr6(host).into()
            } else {
                lan.addr4(host).into()
            }
        };
        let open = |host: usize| {
            let peers: Vec<SocketAddr> = (1..=3)
                .filter(|&peer| peer != host)
                .map(|peer| SocketAddr::new(addr(peer), PORT))
                .collect();
            let transport = Transport::Unicast {
                port: PORT,
                bind: Some(addr(host)),
            };
            lan.in_ns(host, || Endpoint::open(&transport, &peers))
                .unwrap_or_else(|e| panic!("open unicast on host {host}: {e}"))
        };
        let endpoints = [open(1), open(2), open(3)];
        assert_eq!(endpoints[0].send(b"hello").expect("send"), 2);
        let mut buf = [0u8; 64];
        for receiver in &endpoints[1..] {
            let mut got = None;
            for _ in 0..80 {
                if let Some(datagram) = receiver.recv(&mut buf).expect("recv") {
                    got = Some(datagram);
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let (len, from) = got.expect("unicast datagram arrives");
            assert_eq!(&buf[..len], b"hello");
            assert_eq!(from, SocketAddr::new(addr(1), PORT));
        }
        assert!(delivered(&endpoints[2], &endpoints[1], ARRIVES), "3 -> 2");
        lan.partition(&[&[1, 2], &[3]]);
        assert!(
            !delivered(&endpoints[2], &endpoints[1], BLOCKED),
            "3 -> 2 partitioned"
        );
        assert!(
            !delivered(&endpoints[0], &endpoints[2], BLOCKED),
            "1 -> 3 partitioned"
        );
        assert!(
            delivered(&endpoints[0], &endpoints[1], ARRIVES),
            "1 -> 2 same side"
        );
        lan.heal_partition();
        assert!(
            delivered(&endpoints[2], &endpoints[1], ARRIVES),
            "3 -> 2 healed"
        );
    }
}

#[test]
fn partition_blocks_multicast_and_ping_between_groups_until_healed() {
    if !require_root() {
        return;
    }
    let lan = Lan::with_client(3);
    let mesh = Mesh::new(&lan, &[1, 2, 3]);
    lan.partition(&[&[1, 2], &[3]]);
    assert!(mesh.reaches(0, 1, ARRIVES), "1 -> 2 on the same side");
    assert!(mesh.reaches(1, 0, ARRIVES), "2 -> 1 on the same side");
    assert!(!mesh.reaches(0, 2, BLOCKED), "1 -> 3 across");
    assert!(!mesh.reaches(2, 0, BLOCKED), "3 -> 1 across");
    assert!(!mesh.reaches(2, 1, BLOCKED), "3 -> 2 across");
    assert!(!ping(&lan, 1, lan.addr4(3).into()), "ping 1 -> 3 across");
    assert!(!ping(&lan, 3, lan.addr6(2).into()), "ping 3 -> 2 across");
    // A host in no group, the client here, still reaches both sides.
    assert!(ping(&lan, CLIENT, lan.addr4(1).into()), "client -> 1");
    assert!(ping(&lan, CLIENT, lan.addr4(3).into()), "client -> 3");

    // A new partition replaces the old one.
    lan.partition(&[&[1], &[2, 3]]);
    assert!(mesh.reaches(2, 1, ARRIVES), "3 -> 2 now on the same side");
    assert!(!mesh.reaches(0, 1, BLOCKED), "1 -> 2 now across");

    lan.heal_partition();
    lan.heal_partition(); // healing twice is harmless
    for (from, to) in [(0, 1), (0, 2), (2, 0), (1, 0)] {
        assert!(
            mesh.reaches(from, to, ARRIVES),
            "host {} -> {} healed",
            from + 1,
            to + 1
        );
    }
    assert!(ping(&lan, 1, lan.addr4(3).into()), "ping 1 -> 3 healed");
}

#[test]
fn full_loss_blocks_both_directions_and_partial_loss_drops_some() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(3);
    let mesh = Mesh::new(&lan, &[1, 2, 3]);
    lan.loss(2, 100);
    assert!(!mesh.reaches(0, 1, BLOCKED), "1 -> 2 into the lossy host");
    assert!(!mesh.reaches(1, 0, BLOCKED), "2 -> 1 out of the lossy host");
    assert!(mesh.reaches(0, 2, ARRIVES), "1 -> 3 untouched");
    lan.clear_loss(2);
    lan.clear_loss(2); // clearing twice is harmless
    assert!(mesh.reaches(0, 1, ARRIVES), "1 -> 2 after clearing");
    assert!(mesh.reaches(1, 0, ARRIVES), "2 -> 1 after clearing");

    // Half of the frames into host 2 are lost: of 100 datagrams about 50
    // arrive (standard deviation 5); 15..=85 fails by chance once in ~10^12.
    lan.loss(2, 50);
    let (sender, receiver) = (&mesh.v4[0], &mesh.v4[1]);
    let mut buf = [0u8; 64];
    while receiver.recv(&mut buf).expect("recv").is_some() {}
    for _ in 0..100 {
        sender.send(b"lossy").expect("send");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut arrived = 0;
    while let Some((len, _)) = receiver.recv(&mut buf).expect("recv") {
        if &buf[..len] == b"lossy" {
            arrived += 1;
        }
    }
    assert!(
        (15..=85).contains(&arrived),
        "{arrived} of 100 arrived at 50% loss"
    );
    lan.clear_loss(2);
}

#[test]
fn a_cut_cable_blocks_until_healed() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(3);
    let mesh = Mesh::new(&lan, &[1, 2, 3]);
    lan.cut(3);
    assert!(!mesh.reaches(0, 2, BLOCKED), "1 -> 3 with 3's cable cut");
    assert!(!mesh.reaches(2, 0, BLOCKED), "3 -> 1 with 3's cable cut");
    assert!(mesh.reaches(0, 1, ARRIVES), "1 -> 2 unaffected");
    assert!(!ping(&lan, 1, lan.addr4(3).into()), "ping 1 -> 3 cut");
    lan.heal(3);
    assert!(mesh.reaches(0, 2, ARRIVES), "1 -> 3 healed");
    assert!(mesh.reaches(2, 0, ARRIVES), "3 -> 1 healed");
    assert!(ping(&lan, 1, lan.addr6(3).into()), "ping 1 -> 3 healed");
}

#[test]
fn daemons_on_one_host_share_a_group_port_on_lo() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(1);
    // Multicast on lo needs the MULTICAST flag: set here, inside the
    // namespace only, never on the machine's own lo.
    let up = lan.exec(1, &["ip", "link", "set", "lo", "multicast", "on"]);
    assert!(up.status.success(), "{up:?}");
    let open = |group: &str, loopback: bool| {
        let transport = Transport::Multicast {
            group: group.parse().expect("literal"),
            interface: "lo".into(),
            loopback,
            unicast: None,
        };
        lan.in_ns(1, || Endpoint::open(&transport, &[]))
            .unwrap_or_else(|e| panic!("open {group} on lo: {e}"))
    };
    let first = open("239.255.42.1:7475", true);
    let second = open("239.255.42.1:7475", true);
    let other_group = open("239.255.42.2:7475", true);
    assert!(delivered(&first, &second, ARRIVES), "first -> second");
    assert!(delivered(&second, &first, ARRIVES), "second -> first");
    assert!(
        delivered(&first, &first, ARRIVES),
        "loopback on: a sender hears itself"
    );
    assert!(
        !delivered(&first, &other_group, BLOCKED),
        "another group on the same port"
    );

    // On lo every frame sent comes back through the device itself, so each
    // member, the sender included, gets exactly one copy whatever `loopback`
    // says; the flag matters on real interfaces (see the eth0 tests).
    for loopback in [true, false] {
        let sender = open("239.255.42.1:7475", loopback);
        let payload = format!("copies {loopback}");
        sender.send(payload.as_bytes()).expect("send");
        std::thread::sleep(Duration::from_millis(100));
        for receiver in [&sender, &second] {
            let mut copies = 0;
            let mut buf = [0u8; 64];
            while let Some((len, _)) = receiver.recv(&mut buf).expect("recv") {
                if &buf[..len] == payload.as_bytes() {
                    copies += 1;
                }
            }
            assert_eq!(copies, 1, "copies on lo with loopback {loopback}");
        }
    }
}

#[test]
fn spawn_runs_in_the_namespace_and_keeps_stdio() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(2);
    let child = lan.spawn(
        2,
        Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", "eth0"])
            .stdout(Stdio::piped()),
    );
    let out = child.wait_with_output().expect("wait for ip");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}/24", lan.addr4(2))), "{text}");

    // /sys shows the namespace's interfaces, as under `ip netns exec`.
    let child = lan.spawn(
        1,
        Command::new("ls")
            .arg("/sys/class/net")
            .stdout(Stdio::piped()),
    );
    let out = child.wait_with_output().expect("wait for ls");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names, ["eth0", "lo"]);
}

#[test]
fn drop_kills_processes_and_removes_every_namespace() {
    if !require_root() {
        return;
    }
    let lan = Lan::with_client(2);
    let prefix = lan.prefix().to_owned();
    assert_eq!(namespaces_with_prefix(&prefix).len(), 4, "br, h1, h2, c");
    let mut sleeper = lan.spawn(1, Command::new("sleep").arg("600"));
    drop(lan);
    assert_no_namespaces(&prefix);
    let mut status = None;
    for _ in 0..200 {
        status = sleeper.try_wait().expect("try_wait");
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        status.is_some(),
        "a process left in a namespace is killed on drop"
    );
}

#[test]
fn a_panicking_test_still_cleans_up() {
    if !require_root() {
        return;
    }
    let prefix = Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let lan = Lan::new(2);
        lan.partition(&[&[1], &[2]]);
        lan.loss(1, 30);
        *prefix.lock().expect("not poisoned") = lan.prefix().to_owned();
        panic!("deliberate panic with a Lan alive");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().expect("not poisoned");
    assert!(!prefix.is_empty());
    assert_no_namespaces(&prefix);
}

#[test]
fn namespaces_of_dead_test_processes_are_swept() {
    if !require_root() {
        return;
    }
    // pid_max itself is never a live pid; our own pid always is.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").expect("read pid_max");
    let dead = format!("{}{}x0br", netns::FAMILY, pid_max.trim());
    let alive = format!("{}{}x999999br", netns::FAMILY, std::process::id());
    for name in [&dead, &alive] {
        let added = Command::new("ip").args(["netns", "add", name]).status();
        assert!(
            added.expect("ip netns add").success(),
            "ip netns add {name}"
        );
    }
    let lan = Lan::new(1);
    let left = namespaces_with_prefix(netns::FAMILY);
    let _ = Command::new("ip").args(["netns", "del", &alive]).status();
    assert!(!left.contains(&dead), "stale namespace {dead} was swept");
    assert!(
        left.contains(&alive),
        "a live process's namespace {alive} was kept"
    );
    drop(lan);
}

#[test]
fn a_routed_host_is_reached_through_the_router_and_multicast_stays_behind() {
    if !require_root() {
        return;
    }
    let lan = Lan::routed(3, &[3]);
    let far = lan.addr4(3);
    assert_ne!(far.octets()[2], lan.addr4(1).octets()[2], "another /24");
    for (from, to) in [(1, 3), (3, 2), (2, 1)] {
        assert!(
            ping(&lan, from, lan.addr4(to).into()),
            "ping {from} -> {to} through the router"
        );
    }
    // One hop: the reply from the far subnet arrives with its TTL cut by one.
    let out = lan.exec(1, &["ping", "-n", "-c", "1", "-W", "2", &far.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ttl=63"), "one router on the way:\n{text}");
    // Multicast with TTL 1 does not cross it.
    let mesh = Mesh::new(&lan, &[1, 2, 3]);
    assert!(mesh.v4_reaches(0, 1, ARRIVES), "1 -> 2 on the switch");
    assert!(!mesh.v4_reaches(0, 2, BLOCKED), "1 -> 3 crossed the router");
    let prefix = lan.prefix().to_owned();
    drop(mesh);
    drop(lan);
    assert_no_namespaces(&prefix);
}
