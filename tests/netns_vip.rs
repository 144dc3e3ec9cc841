//! The shipped `vip` hook and `regent announce` on an emulated LAN, with
//! real daemons: a client watches the VIP move on crash and graceful stop,
//! follows the one leader after a partition heals, hooks stay ordered and
//! exclusive under a flapping health check, hung and broken hooks are
//! handled, and hooks get exactly the documented environment.
//!
//! Every host runs a wrapper hook (written by [`vip_cluster`]) that logs its
//! start and end, appends the cluster harness's `time epoch kind node` line,
//! and runs the real `conf/hooks/vip` with an env file the test writes.
//!
//! Needs root (skips otherwise, fails under `CI=true`). Run with
//! `--nocapture` to see the measured figures.

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster::{realtime_ns, regent_bin, wait_until, Cluster, HookEvent, Opts};
use netns::{require_root, Lan, CLIENT};
use regentd::announce::{gratuitous_arp, MacAddr, ARP_FRAME_BYTES};

/// The UDP port the echo responders listen on.
const ECHO_PORT: u16 = 7600;

/// Time between two probes of the client.
const PROBE_EVERY: Duration = Duration::from_millis(2);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// The cluster with the vip hook.

/// What the wrapper hook does besides logging and running the vip hook.
#[derive(Default)]
struct Wrapper {
    /// Shell run first, before anything else (`$DIR` is the test dir).
    first: &'static str,
    /// Shell run after the log lines, before the vip hook.
    before_vip: &'static str,
}

/// The test dir `Cluster::new` will use for `lan`.
fn cluster_dir(lan: &Lan) -> PathBuf {
    std::env::temp_dir().join(format!("regent-test-{}", lan.prefix()))
}

/// A cluster whose hook is the wrapper around `conf/hooks/vip`, floating
/// `lan.vip4()/24` and `lan.vip6()/64` on eth0, with `settings` (lines of
/// the vip hook's env file, e.g. `ARP_COUNT=1`) added. Not started.
fn vip_cluster(lan: Lan, mut opts: Opts, settings: &str, wrapper: Wrapper) -> Cluster {
    let dir = cluster_dir(&lan);
    let hook = dir.join("vip-hook");
    opts.hook = Some(hook.clone());
    let (vip4, vip6) = (lan.vip4(), lan.vip6());
    let c = Cluster::new(lan, opts);
    assert_eq!(c.dir, dir, "the cluster harness changed its directory");
    std::fs::write(
        dir.join("vip.env"),
        format!(
            "VIP=\"{vip4}/24 {vip6}/64\"\nDEV=eth0\nREGENT={}\n{settings}\n",
            regent_bin()
        ),
    )
    .expect("vip.env");
    let vip = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/hooks/vip");
    let script = WRAPPER
        .replace("@DIR@", &dir.display().to_string())
        .replace("@FIRST@", wrapper.first)
        .replace("@BEFORE_VIP@", wrapper.before_vip)
        .replace("@VIP@", &vip.display().to_string());
    write_executable(&hook, &script);
    c
}

/// The wrapper hook. It appends the cluster harness's line to `hooks.log`
/// at the start of promote and demote, and per node keeps `runs.N.log`:
/// start and end of every run, and OVERLAP if the previous run's process
/// still lives when the next starts (a run killed by regent logs no end, so
/// the marker's pid is how exclusivity is checked).
const WRAPPER: &str = r#"#!/bin/sh
# The time first, and the harness's line at once: the cluster checks
# compare these times across hosts, so they must lag regent's own start of
# the run as little as possible.
t=$(date +%s%N)
DIR='@DIR@'
if [ "$1" != refresh ]; then
    echo "$t $2 $1 $REGENT_NODE" >> "$DIR/hooks.log"
fi
@FIRST@
runs="$DIR/runs.$REGENT_NODE.log"
marker="$DIR/running.$REGENT_NODE"
if [ -f "$marker" ]; then
    prev=$(cat "$marker")
    if kill -0 "${prev%% *}" 2>/dev/null; then
        echo "$t OVERLAP $1 $2 $$ while $prev runs" >> "$runs"
    fi
fi
echo "$$ $1 $2" > "$marker"
echo "$t start $1 $2 $$" >> "$runs"
@BEFORE_VIP@
REGENT_VIP_ENV="$DIR/vip.env"
export REGENT_VIP_ENV
'@VIP@' "$@"
rc=$?
echo "$(date +%s%N) end $1 $2 $$ $rc" >> "$runs"
rm -f "$marker"
exit $rc
"#;

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// One line of a node's `runs.N.log`.
#[derive(Clone, Debug)]
struct RunLine {
    at_ns: u128,
    what: String,
    kind: String,
    epoch: u64,
    pid: u32,
}

fn runs(c: &Cluster, node: usize) -> Vec<RunLine> {
    let text = std::fs::read_to_string(c.dir.join(format!("runs.{node}.log"))).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some(RunLine {
                at_ns: w.first()?.parse().ok()?,
                what: w.get(1)?.to_string(),
                kind: w.get(2)?.to_string(),
                epoch: w.get(3)?.parse().ok()?,
                pid: w.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// Waits until `node`'s wrapper logged the end of a `kind` run after `since_ns`.
fn wait_run_end(c: &Cluster, node: usize, kind: &str, since_ns: u128, limit: Duration) -> bool {
    wait_until(limit, || {
        runs(c, node)
            .iter()
            .any(|r| r.what == "end" && r.kind == kind && r.at_ns >= since_ns)
    })
}

fn first_leader(c: &Cluster, limit: Duration) -> HookEvent {
    c.wait_promote(0, &[], limit)
        .unwrap_or_else(|| panic!("no leader within {limit:?}\n{}", c.dump()))
}

/// Which hosts hold the VIP (both addresses; half is a failure).
fn vip_holders(c: &Cluster) -> Vec<usize> {
    let (vip4, vip6) = (c.lan.vip4().to_string(), c.lan.vip6().to_string());
    (1..=c.hosts())
        .filter(|&h| {
            let out = c.lan.exec(h, &["ip", "-o", "addr", "show", "dev", "eth0"]);
            let text = String::from_utf8_lossy(&out.stdout);
            let has = |a: &str| text.contains(&format!(" {a}/"));
            assert_eq!(
                has(&vip4),
                has(&vip6),
                "host {h} holds half the VIP: {text}"
            );
            has(&vip4)
        })
        .collect()
}

fn daemon_log(c: &Cluster, host: usize) -> String {
    std::fs::read_to_string(c.daemon_log(host)).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Echo responders on the hosts, a prober on the client.

/// Threads that stop and are joined on drop.
struct Threads {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    fn new() -> Threads {
        Threads {
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn udp_v6(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, None)?;
    s.set_only_v6(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// On every host, UDP echo responders on 0.0.0.0 and [::] port
/// `ECHO_PORT` that answer each probe with its sequence number and the host's
/// number. Sockets keep the namespace they were made in.
fn start_responders(lan: &Lan, threads: &mut Threads) {
    for host in 1..=lan.hosts() {
        let (v4, v6) = lan.in_ns(host, || {
            let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT)).expect("bind v4");
            let v6 = udp_v6((Ipv6Addr::UNSPECIFIED, ECHO_PORT).into()).expect("bind v6");
            (v4, v6)
        });
        for socket in [v4, v6] {
            let stop = threads.stop.clone();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            threads.handles.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        if n >= 4 {
                            let mut reply = [0u8; 5];
                            reply[..4].copy_from_slice(&buf[..4]);
                            reply[4] = host as u8;
                            let _ = socket.send_to(&reply, from);
                        }
                    }
                }
            }));
        }
    }
}

/// One probe of the client: when it was sent, who answered and when.
#[derive(Clone, Copy, Debug)]
struct Probe {
    sent: Instant,
    answer: Option<(usize, Instant)>,
}

type Probes = Arc<Mutex<Vec<Probe>>>;

/// A client thread that sends a probe to `target` every `PROBE_EVERY` and
/// records the answers.
fn start_prober(lan: &Lan, target: SocketAddr, threads: &mut Threads) -> Probes {
    let socket = lan.in_ns(CLIENT, || match target {
        SocketAddr::V4(_) => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind"),
        SocketAddr::V6(_) => udp_v6((Ipv6Addr::UNSPECIFIED, 0).into()).expect("bind"),
    });
    socket.set_nonblocking(true).expect("non-blocking");
    let probes: Probes = Arc::new(Mutex::new(Vec::new()));
    let record = probes.clone();
    let stop = threads.stop.clone();
    threads.handles.push(std::thread::spawn(move || {
        let mut next = Instant::now();
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                let mut p = record.lock().expect("probes");
                let seq = p.len() as u32;
                p.push(Probe {
                    sent: now,
                    answer: None,
                });
                drop(p);
                // While no host holds the VIP the send may fail: a lost probe.
                let _ = socket.send_to(&seq.to_be_bytes(), target);
                next += PROBE_EVERY;
                if next < now {
                    next = now + PROBE_EVERY;
                }
                continue;
            }
            // poll(2), not a read timeout: SO_RCVTIMEO counts in jiffies,
            // which can be 10 ms, and would stretch the probe interval
            // exactly while answers are missing.
            let wait_ms = (next - now).as_micros().div_ceil(1000) as i32;
            let mut pfd = libc::pollfd {
                fd: socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, wait_ms) };
            while let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n != 5 {
                    continue;
                }
                let at = Instant::now();
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                let mut p = record.lock().expect("probes");
                if let Some(probe) = p.get_mut(seq) {
                    probe.answer.get_or_insert((usize::from(buf[4]), at));
                }
            }
        }
    }));
    probes
}

fn snapshot(probes: &Probes) -> Vec<Probe> {
    probes.lock().expect("probes").clone()
}

/// Waits until the last 50 probes old enough to have been answered (sent
/// more than 20 ms ago) were all answered by `host`.
fn wait_served_by(probes: &Probes, host: usize, limit: Duration) -> bool {
    wait_until(limit, || {
        let p = snapshot(probes);
        let ripe = Instant::now() - Duration::from_millis(20);
        let recent: Vec<&Probe> = p.iter().filter(|x| x.sent < ripe).rev().take(50).collect();
        recent.len() == 50 && recent.iter().all(|x| x.answer.map(|a| a.0) == Some(host))
    })
}

/// What the client saw between `from` and `to`.
#[derive(Debug)]
struct Outage {
    /// The longest time without any answer arriving.
    downtime: Duration,
    /// Probes sent in the window that were never answered.
    lost: usize,
    /// Probes sent in the window.
    sent: usize,
    /// Answers per host, in the window.
    by_host: BTreeMap<usize, usize>,
    /// The longest time between two probes sent: the resolution of
    /// `downtime`.
    probe_gap: Duration,
}

fn outage(probes: &[Probe], from: Instant, to: Instant) -> Outage {
    let window: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.sent >= from && p.sent <= to)
        .collect();
    let mut arrivals: Vec<Instant> = window
        .iter()
        .filter_map(|p| p.answer.map(|a| a.1))
        .collect();
    arrivals.sort();
    let mut downtime = Duration::ZERO;
    let mut last = from;
    for at in arrivals.iter().copied().chain(std::iter::once(to)) {
        downtime = downtime.max(at.saturating_duration_since(last));
        last = last.max(at);
    }
    let mut by_host = BTreeMap::new();
    for p in &window {
        if let Some((h, _)) = p.answer {
            *by_host.entry(h).or_insert(0) += 1;
        }
    }
    let probe_gap = window
        .windows(2)
        .map(|w| w[1].sent - w[0].sent)
        .max()
        .unwrap_or_default();
    Outage {
        probe_gap,
        downtime,
        lost: window.iter().filter(|p| p.answer.is_none()).count(),
        sent: window.len(),
        by_host,
    }
}

// ---------------------------------------------------------------------------
// 1. The client follows the VIP through a crash and a graceful stop.

#[test]
fn client_follows_the_vip_through_crash_and_graceful_stop() {
    if !require_root() {
        return;
    }
    let opts = Opts {
        preempt: false,
        ..Opts::default()
    };
    let dead_after = Duration::from_millis(opts.dead_after_ms);
    let mut c = vip_cluster(Lan::with_client(3), opts, "ARP_COUNT=3", Wrapper::default());
    let mut threads = Threads::new();
    start_responders(&c.lan, &mut threads);
    let v4 = start_prober(
        &c.lan,
        SocketAddr::new(IpAddr::V4(c.lan.vip4()), ECHO_PORT),
        &mut threads,
    );
    let v6 = start_prober(
        &c.lan,
        SocketAddr::new(IpAddr::V6(c.lan.vip6()), ECHO_PORT),
        &mut threads,
    );
    c.start_all();
    let first = first_leader(&c, Duration::from_secs(5));
    let a = first.node;
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        assert!(
            wait_served_by(probes, a, Duration::from_secs(5)),
            "the client never reached leader {a} over {name}\n{}",
            c.dump()
        );
    }

    // Crash: the cable is pulled and the daemon killed; its VIP stays on
    // its eth0, unreachable.
    std::thread::sleep(Duration::from_millis(300));
    let crashed_at = Instant::now();
    c.lan.cut(a);
    let killed = c.kill(a);
    let next = c
        .wait_promote(killed, &[a], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no new leader after the crash\n{}", c.dump()));
    let b = next.node;
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        assert!(
            wait_served_by(probes, b, Duration::from_secs(5)),
            "after the crash the client never reached node {b} over {name}\n{}",
            c.dump()
        );
    }
    let crash_end = Instant::now();
    let crash_bound = dead_after * 3 + Duration::from_millis(200);
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        let o = outage(
            &snapshot(probes),
            crashed_at - Duration::from_millis(200),
            crash_end,
        );
        println!(
            "crash of node {a}, {name}: client-observed downtime {:.1} ms, {} of {} probes lost (longest gap between probes {:.1} ms), answers {:?} (node {b} promoted {:.1} ms after the kill; dead_after {} ms)",
            ms(o.downtime),
            o.lost,
            o.sent,
            ms(o.probe_gap),
            o.by_host,
            (next.at_ns - killed) as f64 / 1e6,
            dead_after.as_millis()
        );
        assert!(
            o.downtime < crash_bound,
            "{name} downtime {:.1} ms after a crash exceeds {crash_bound:?}\n{}",
            ms(o.downtime),
            c.dump()
        );
    }

    // The crashed host comes back: its daemon starts still cut off, its
    // start-up demote removes the stale VIP, and only then is it cabled.
    let restarted = realtime_ns();
    c.start(a);
    assert!(
        wait_run_end(&c, a, "demote", restarted, Duration::from_secs(5)),
        "node {a} ran no start-up demote\n{}",
        c.dump()
    );
    c.lan.heal(a);
    // The new leader's promote (arping, 3 s) ends, and node a rejoins.
    assert!(wait_run_end(&c, b, "promote", 0, Duration::from_secs(8)));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.holder().map(|h| h.0), Some(b), "{}", c.dump());

    // Planned switchover: `regent step-down` on the leader hands over to the
    // next-ranked node with no overlap.
    let step_at = Instant::now();
    let asked = realtime_ns();
    let (ok, text) = c.ctl(b, &["step-down"]);
    assert!(ok, "step-down refused: {text}\n{}", c.dump());
    let successor = c
        .wait_promote(asked, &[b], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no leader after step-down\n{}", c.dump()));
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        assert!(
            wait_served_by(probes, successor.node, Duration::from_secs(5)),
            "after step-down the client never reached node {} over {name}\n{}",
            successor.node,
            c.dump()
        );
    }
    let step_end = Instant::now();
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        let o = outage(
            &snapshot(probes),
            step_at - Duration::from_millis(200),
            step_end,
        );
        println!(
            "step-down of node {b}, {name}: client-observed downtime {:.1} ms, {} of {} probes lost, answers {:?} (node {} promoted {:.1} ms after the request)",
            ms(o.downtime),
            o.lost,
            o.sent,
            o.by_host,
            successor.node,
            (successor.at_ns - asked) as f64 / 1e6
        );
        assert!(
            o.downtime < dead_after,
            "{name} downtime {:.1} ms after step-down is not below dead_after\n{}",
            ms(o.downtime),
            c.dump()
        );
    }
    assert!(wait_run_end(
        &c,
        successor.node,
        "promote",
        asked,
        Duration::from_secs(8)
    ));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.holder().map(|h| h.0),
        Some(successor.node),
        "{}",
        c.dump()
    );
    let b = successor.node;

    // Graceful stop of the new leader: demote, resign, the next one claims.
    let stop_at = Instant::now();
    let stopped = c.signal(b, libc::SIGTERM);
    let third = c
        .wait_promote(stopped, &[b], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no leader after SIGTERM\n{}", c.dump()));
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        assert!(
            wait_served_by(probes, third.node, Duration::from_secs(5)),
            "after SIGTERM the client never reached node {} over {name}\n{}",
            third.node,
            c.dump()
        );
    }
    let graceful_end = Instant::now();
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        let o = outage(
            &snapshot(probes),
            stop_at - Duration::from_millis(200),
            graceful_end,
        );
        println!(
            "SIGTERM of node {b}, {name}: client-observed downtime {:.1} ms, {} of {} probes lost (longest gap between probes {:.1} ms), answers {:?} (node {} promoted {:.1} ms after SIGTERM)",
            ms(o.downtime),
            o.lost,
            o.sent,
            ms(o.probe_gap),
            o.by_host,
            third.node,
            (third.at_ns - stopped) as f64 / 1e6
        );
        assert!(
            o.downtime < dead_after,
            "{name} downtime {:.1} ms after SIGTERM is not below dead_after\n{}",
            ms(o.downtime),
            c.dump()
        );
    }
    assert_eq!(c.wait_exit(b, Duration::from_secs(5)), Some(0));
    assert_eq!(vip_holders(&c), [third.node], "{}", c.dump());
    c.check_history(&[(a, killed)]);
}

// ---------------------------------------------------------------------------
// 2. After a partition heals the client talks to the one leader.

/// The MAC of host's eth0.
fn mac_of(lan: &Lan, host: usize) -> MacAddr {
    let out = lan.exec(host, &["cat", "/sys/class/net/eth0/address"]);
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .expect("a MAC address")
}

fn shown(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| format!("{:.1} ms", ms(d)))
}

/// How long after `from` the client's probes were, from then on, all
/// answered by `host` (up to `to`); `None` if they never were.
fn converged_after(probes: &[Probe], host: usize, from: Instant, to: Instant) -> Option<Duration> {
    let window: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.sent >= from && p.sent + Duration::from_millis(20) <= to)
        .collect();
    let last_bad = window
        .iter()
        .rposition(|p| p.answer.map(|a| a.0) != Some(host));
    match last_bad {
        None => Some(Duration::ZERO),
        Some(i) if i + 1 < window.len() => Some(window[i + 1].sent - from),
        Some(_) => None,
    }
}

#[test]
fn after_a_partition_heals_the_client_reaches_the_one_leader_within_a_refresh() {
    if !require_root() {
        return;
    }
    let refresh = Duration::from_millis(1000);
    let arp_count: u32 = 1;
    let opts = Opts {
        preempt: false,
        hooks_extra: format!("refresh_interval_ms = {}", refresh.as_millis()),
        ..Opts::default()
    };
    let settings = format!("ARP_COUNT={arp_count}");
    let mut c = vip_cluster(Lan::with_client(3), opts, &settings, Wrapper::default());
    let mut threads = Threads::new();
    start_responders(&c.lan, &mut threads);
    let v4 = start_prober(
        &c.lan,
        SocketAddr::new(IpAddr::V4(c.lan.vip4()), ECHO_PORT),
        &mut threads,
    );
    let v6 = start_prober(
        &c.lan,
        SocketAddr::new(IpAddr::V6(c.lan.vip6()), ECHO_PORT),
        &mut threads,
    );
    c.start_all();
    let old = first_leader(&c, Duration::from_secs(5)).node;
    assert!(wait_served_by(&v4, old, Duration::from_secs(5)));
    let others: Vec<usize> = (1..=3).filter(|&h| h != old).collect();

    // The old leader alone on one side; the client with the majority.
    let cut_at = realtime_ns();
    c.lan.partition(&[&[old], &[others[0], others[1], CLIENT]]);
    let new = c
        .wait_promote(cut_at, &[old], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the majority elected no leader\n{}", c.dump()))
        .node;
    assert!(
        wait_served_by(&v4, new, Duration::from_secs(5)),
        "{}",
        c.dump()
    );
    std::thread::sleep(Duration::from_millis(500));

    let healed = Instant::now();
    let healed_ns = realtime_ns();
    c.lan.heal_partition();
    let slack = Duration::from_millis(500);
    // A refresh run of the vip hook lasts about ARP_COUNT seconds (arping
    // waits a second after its last packet); a refresh due while one runs
    // is skipped, so announcements come every interval + run length at
    // worst.
    let run = Duration::from_secs(u64::from(arp_count));
    let bound = refresh + run + slack;
    std::thread::sleep(bound + Duration::from_millis(300));
    let (leader, epoch) = c
        .holder()
        .unwrap_or_else(|| panic!("no leader after healing\n{}", c.dump()));
    // Without preemption the majority's leader stays; only a machine so
    // loaded that a daemon misses its lease moves it. Then convergence is
    // timed from the new leader's promote.
    let mut since = healed;
    if leader != new {
        let promoted = c
            .hook_events()
            .iter()
            .find(|e| e.kind == "promote" && e.epoch == epoch)
            .map_or(healed_ns, |e| e.at_ns);
        since += Duration::from_nanos(promoted.saturating_sub(healed_ns) as u64);
        println!("leadership moved after the heal: node {new} to node {leader} (epoch {epoch})");
    }
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        let after = converged_after(&snapshot(probes), leader, since, Instant::now());
        println!(
            "partition healed, {name}: the client is answered only by leader {leader} from {} after the heal",
            shown(after)
        );
        assert!(
            after.is_some_and(|d| d <= refresh + slack),
            "{name}: not converged on leader {leader} within {:?}: {after:?}\n{}",
            refresh + slack,
            c.dump()
        );
    }

    // A client that missed every announcement: its cache entry points at
    // the old leader's MAC (another host's, should the old one lead). The next refresh of the leader corrects it.
    let wrong = if leader == old { others[0] } else { old };
    let stale = mac_of(&c.lan, wrong).to_string();
    let poisoned = Instant::now();
    for vip in [c.lan.vip4().to_string(), c.lan.vip6().to_string()] {
        let out = c.lan.exec(
            CLIENT,
            &[
                "ip", "neigh", "replace", &vip, "lladdr", &stale, "dev", "eth0", "nud", "stale",
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    std::thread::sleep(bound + Duration::from_millis(500));
    let refreshes = runs(&c, leader)
        .iter()
        .filter(|r| r.kind == "refresh" && r.what == "start")
        .count();
    for (name, probes) in [("IPv4", &v4), ("IPv6", &v6)] {
        let after = converged_after(&snapshot(probes), leader, poisoned, Instant::now());
        println!(
            "stale client cache, {name}: converged on leader {leader} {} after the poisoning (refresh {} ms, vip hook run {} s; {refreshes} refreshes so far)",
            shown(after),
            refresh.as_millis(),
            arp_count
        );
        assert!(
            after.is_some_and(|d| d <= bound),
            "{name}: a stale client cache was not corrected within {bound:?}: {after:?}\n{}",
            c.dump()
        );
    }
    c.check_history(&[]);
}

// ---------------------------------------------------------------------------
// 3. Hooks stay ordered and exclusive under a flapping health check.

#[test]
fn hooks_stay_ordered_and_exclusive_under_a_flapping_health_check() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(3);
    let dir = cluster_dir(&lan);
    let flag = |node: usize| dir.join(format!("healthy.{node}"));
    let opts = Opts {
        hooks_extra: format!(
            "check = [\"/bin/sh\", \"-c\", \"test -e {}/healthy.$REGENT_NODE\"]\n\
             check_interval_ms = 50\ncheck_fall = 1\ncheck_rise = 1",
            dir.display()
        ),
        ..Opts::default()
    };
    let mut c = vip_cluster(lan, opts, "ARP_COUNT=1", Wrapper::default());
    for node in 1..=3 {
        std::fs::write(flag(node), "").expect("flag");
    }
    c.start_all();
    first_leader(&c, Duration::from_secs(5));
    let began = Instant::now();
    let mut toggles = 0;
    while began.elapsed() < Duration::from_secs(5) {
        // Take the health of whoever leads; give it back to everyone else.
        let holder = c.holder().map(|h| h.0);
        for node in 1..=3 {
            if Some(node) == holder {
                let _ = std::fs::remove_file(flag(node));
                toggles += 1;
            } else {
                std::fs::write(flag(node), "").expect("flag");
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for node in 1..=3 {
        std::fs::write(flag(node), "").expect("flag");
    }
    // Once everyone is healthy again: one leader, its promote finished,
    // and the addresses on it alone, however many promotes were cut short.
    let settled = wait_until(Duration::from_secs(10), || {
        let Some((leader, epoch)) = c.holder() else {
            return false;
        };
        let promoted = runs(&c, leader)
            .iter()
            .any(|r| r.what == "end" && r.kind == "promote" && r.epoch == epoch);
        promoted && vip_holders(&c) == [leader]
    });
    assert!(
        settled,
        "no leader holding the VIP alone once every node is healthy: leader {:?}, VIP on {:?}\n{}",
        c.holder(),
        vip_holders(&c),
        c.dump()
    );
    // Stop every daemon (the leader demotes first), so that no hook is
    // still running while the logs are read.
    for node in 1..=3 {
        c.signal(node, libc::SIGTERM);
    }
    for node in 1..=3 {
        assert_eq!(
            c.wait_exit(node, Duration::from_secs(10)),
            Some(0),
            "node {node} did not stop\n{}",
            c.dump()
        );
    }

    let mut promotes = 0;
    let mut killed = 0;
    for node in 1..=3 {
        let lines = runs(&c, node);
        assert!(
            !lines.iter().any(|l| l.what == "OVERLAP"),
            "node {node}: two hooks at once\n{}",
            c.dump()
        );
        // Transitions alternate: never promote twice without a demote.
        let mut last: Option<&str> = None;
        for l in lines.iter().filter(|l| l.what == "start") {
            if l.kind == "promote" {
                promotes += 1;
                assert_ne!(
                    last,
                    Some("promote"),
                    "node {node}: promote epoch {} without a demote after the last promote\n{}",
                    l.epoch,
                    c.dump()
                );
            }
            if l.kind != "refresh" {
                last = Some(l.kind.as_str());
            }
        }
        // A start without an end is a run regent killed (a promote cut
        // short by a demote); its process was gone when the next started,
        // or the wrapper would have logged OVERLAP. Every daemon has
        // exited, so no run is still going.
        let cut_short: Vec<&RunLine> = lines
            .iter()
            .filter(|s| s.what == "start")
            .filter(|s| !lines.iter().any(|e| e.what == "end" && e.pid == s.pid))
            .collect();
        // Only a promote or a refresh is ever cut short; a demote runs to
        // its end.
        assert!(
            cut_short.iter().all(|r| r.kind != "demote"),
            "node {node}: a demote was killed: {cut_short:?}\n{}",
            c.dump()
        );
        killed += cut_short.len();
    }
    println!(
        "flapping health check: {toggles} toggles, {promotes} promotes, {killed} runs killed mid-way, \
         no overlap on any node"
    );
    assert!(
        promotes >= 3,
        "too few transitions to mean anything\n{}",
        c.dump()
    );
    c.check_history(&[]);
}

// ---------------------------------------------------------------------------
// 4. Hung, missing and non-executable hooks.

/// Rewrites host's configuration with `f`.
fn edit_config(c: &Cluster, host: usize, f: impl Fn(String) -> String) {
    let text = f(c.config(host));
    std::fs::write(c.config_path(host), text).expect("config");
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_hung_promote_is_killed_at_its_deadline_and_the_next_node_leads() {
    if !require_root() {
        return;
    }
    // Node 3 ranks highest and, with preemption, leads as soon as it is
    // up. Its first promote hangs; only its hooks have the 1 s deadline
    // (the others keep 5 s, so that a loaded machine cannot time them out).
    let opts = Opts {
        priorities: vec![100, 200, 300],
        preempt: true,
        preempt_delay_ms: 200,
        ..Opts::default()
    };
    let wrapper = Wrapper {
        first: "",
        // Node 3's first promote hangs, in a child that must die with it.
        before_vip: r#"if [ "$1" = promote ] && [ "$REGENT_NODE" = 3 ] && mkdir "$DIR/hung" 2>/dev/null; then
    sleep 100000 &
    echo $! > "$DIR/sleeper"
    wait
fi"#,
    };
    let mut c = vip_cluster(Lan::new(3), opts, "ARP_COUNT=1\nARP_TOOL=regent", wrapper);
    edit_config(&c, 3, |t| {
        t.replace("timeout_ms = 5000", "timeout_ms = 1000")
    });
    c.start_all();
    let hung = c
        .wait_promote(0, &[1, 2], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("node 3 never promoted\n{}", c.dump()));
    let next = c
        .wait_promote(hung.at_ns, &[3], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no node led after the hung promote\n{}", c.dump()));
    let events = c.hook_events();
    let demote = events
        .iter()
        .find(|e| e.node == 3 && e.kind == "demote" && e.at_ns > hung.at_ns)
        .unwrap_or_else(|| panic!("node 3 did not demote\n{}", c.dump()));
    let killed_after = Duration::from_nanos((demote.at_ns - hung.at_ns) as u64);
    println!(
        "hung promote: node 3 epoch {} demoted {:.0} ms after its wrapper logged the promote (timeout 1000 ms); node {} promoted epoch {} {:.0} ms after that",
        hung.epoch,
        ms(killed_after),
        next.node,
        next.epoch,
        (next.at_ns - demote.at_ns) as f64 / 1e6
    );
    // The wrapper logs a little after regent starts it (later still on a
    // loaded machine), so the deadline is checked in the daemon's own log.
    assert!(killed_after < Duration::from_secs(5), "{}", c.dump());
    assert!(next.epoch > hung.epoch);
    assert!(demote.at_ns <= next.at_ns);
    let log = daemon_log(&c, 3);
    let line = log
        .lines()
        .find(|l| l.contains("hook promote[") && l.contains("timed out"))
        .unwrap_or_else(|| panic!("no timeout in node 3's log\n{log}"));
    println!("node 3's log: {line}");
    // Durations read `1.001 s` (or `837.5 ms` below a second).
    let ran: f64 = line
        .rsplit_once(" after ")
        .and_then(|(_, d)| match d.trim().split_once(' ') {
            Some((n, "s")) => n.parse().ok(),
            Some((n, "ms")) => n.parse::<f64>().ok().map(|ms| ms / 1e3),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no duration in {line:?}"));
    // Killed at the deadline by SIGTERM: the kill grace (2 s) was not needed.
    assert!((1.0..2.5).contains(&ran), "{line}");
    assert!(line.contains("signal 15"), "{line}");
    let sleeper: i32 = std::fs::read_to_string(c.dir.join("sleeper"))
        .expect("sleeper pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        wait_until(Duration::from_secs(2), || !pid_alive(sleeper)),
        "the hung hook's child {sleeper} outlived it"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.holder().map(|h| h.0), Some(next.node));
    c.check_history(&[]);
}

#[test]
fn missing_or_non_executable_hooks_are_named_by_check_and_at_run_time() {
    if !require_root() {
        return;
    }
    let opts = Opts {
        priorities: vec![100, 200, 300],
        preempt: false,
        ..Opts::default()
    };
    let mut c = vip_cluster(Lan::new(3), opts, "ARP_COUNT=1", Wrapper::default());
    let good = c.dir.join("vip-hook");
    // Node 3 gets its own copy, to break later.
    let own = c.dir.join("vip-hook-3");
    std::fs::copy(&good, &own).expect("copy hook");
    let good_text = good.display().to_string();
    let own_text = own.display().to_string();
    edit_config(&c, 3, |t| t.replace(&good_text, &own_text));

    // `regent check`: fine, then a missing hook, then one not executable.
    // It runs on host 3, as an operator would: the file's interface, eth0,
    // is the namespace's, and the check looks it up there.
    let check = |path: &Path| {
        let path = path.to_str().expect("UTF-8 path");
        let out = c.lan.exec(3, &[regent_bin(), "check", "-c", path]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = check(&c.config_path(3));
    assert_eq!(code, Some(0), "{text}");
    let missing = c.dir.join("no-such-hook");
    let broken = c.dir.join("broken.toml");
    std::fs::write(
        &broken,
        c.config(1)
            .replace(&good_text, &missing.display().to_string()),
    )
    .expect("config");
    let (code, text) = check(&broken);
    println!("regent check, missing hook: exit {code:?}: {}", text.trim());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("does not exist"),
        "{text}"
    );
    let plain = c.dir.join("plain-hook");
    std::fs::copy(&good, &plain).expect("copy");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(
        &broken,
        c.config(1)
            .replace(&good_text, &plain.display().to_string()),
    )
    .expect("config");
    let (code, text) = check(&broken);
    println!(
        "regent check, non-executable hook: exit {code:?}: {}",
        text.trim()
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&plain.display().to_string()) && text.contains("not executable"),
        "{text}"
    );

    // At run time: nodes 1 and 2 elect node 2; node 3 (highest ranked,
    // no preemption) joins as a follower; then its hook loses its x bit
    // and node 2 stops. Node 3 cannot promote, so node 1 leads.
    let began = realtime_ns();
    c.start(1);
    c.start(2);
    let two = c
        .wait_promote(began, &[1, 3], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("node 2 did not lead\n{}", c.dump()));
    let joined = realtime_ns();
    c.start(3);
    assert!(
        wait_run_end(&c, 3, "demote", joined, Duration::from_secs(5)),
        "node 3 ran no start-up demote\n{}",
        c.dump()
    );
    std::thread::sleep(Duration::from_millis(500));
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let stopped = c.signal(2, libc::SIGTERM);
    let one = c
        .wait_promote(stopped, &[2, 3], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("node 1 did not lead\n{}", c.dump()));
    assert!(one.epoch > two.epoch);
    let log = daemon_log(&c, 3);
    let line = log
        .lines()
        .find(|l| l.contains("cannot run") && l.contains(&own_text))
        .unwrap_or_else(|| panic!("no clear error in node 3's log\n{log}"));
    println!("node 3's log: {line}");
    assert!(line.contains("Permission denied"), "{line}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !c.hook_events()
            .iter()
            .any(|e| e.node == 3 && e.kind == "promote"),
        "node 3 ran a promote\n{}",
        c.dump()
    );
    assert_eq!(c.holder().map(|h| h.0), Some(1), "{}", c.dump());
    let (ok, status) = c.ctl(3, &["status", "--json"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("\"leader\":1"),
        "node 3 does not follow node 1: {status}"
    );
    c.check_history(&[]);
}

// ---------------------------------------------------------------------------
// 5. Exactly the documented environment and argv.

#[test]
fn hooks_get_exactly_the_documented_environment_and_argv() {
    if !require_root() {
        return;
    }
    let wrapper = Wrapper {
        // Written aside, then renamed: the test reads a file only once
        // it is whole.
        first: r#"printf '%s\n' "$0" "$#" "$@" > "$DIR/.argv.$1.$REGENT_NODE"
mv "$DIR/.argv.$1.$REGENT_NODE" "$DIR/argv.$1.$REGENT_NODE"
env > "$DIR/.env.$1.$REGENT_NODE"
mv "$DIR/.env.$1.$REGENT_NODE" "$DIR/env.$1.$REGENT_NODE""#,
        before_vip: "",
    };
    let mut c = vip_cluster(Lan::new(3), Opts::default(), "ARP_COUNT=1", wrapper);
    c.start_all();
    let leader = first_leader(&c, Duration::from_secs(5));
    let node = leader.node;
    let hook = c.dir.join("vip-hook").display().to_string();
    let read = |name: String| {
        std::fs::read_to_string(c.dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert!(wait_until(Duration::from_secs(2), || c
        .dir
        .join(format!("env.promote.{node}"))
        .exists()));
    let env: BTreeMap<String, String> = read(format!("env.promote.{node}"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    println!("promote hook environment: {env:?}");
    // dash, /bin/sh here, adds PWD; bash would add SHLVL and _ as well.
    let from_shell = ["PWD", "SHLVL", "_", "OLDPWD"];
    let documented = [
        "PATH",
        "REGENT_ROLE",
        "REGENT_EPOCH",
        "REGENT_NODE",
        "REGENT_CLUSTER",
        "REGENT_LEADER",
        "REGENT_REASON",
    ];
    for key in env.keys() {
        assert!(
            documented.contains(&key.as_str()) || from_shell.contains(&key.as_str()),
            "undocumented variable {key} in the hook's environment: {env:?}"
        );
    }
    let epoch = leader.epoch.to_string();
    let node_text = node.to_string();
    let expect = [
        ("PATH", regentd::hooks::HOOK_PATH),
        ("REGENT_ROLE", "leader"),
        ("REGENT_EPOCH", epoch.as_str()),
        ("REGENT_NODE", node_text.as_str()),
        ("REGENT_CLUSTER", "test"),
        ("REGENT_LEADER", node_text.as_str()),
    ];
    for (key, value) in expect {
        assert_eq!(
            env.get(key).map(String::as_str),
            Some(value),
            "{key}: {env:?}"
        );
    }
    assert!(
        env.get("REGENT_REASON").is_some_and(|r| !r.is_empty()),
        "{env:?}"
    );
    let argv = read(format!("argv.promote.{node}"));
    assert_eq!(
        argv.lines().collect::<Vec<_>>(),
        [hook.as_str(), "2", "promote", epoch.as_str()]
    );

    // The start-up demote of a follower: same variables, its own values.
    let follower = (1..=3).find(|&h| h != node).expect("a follower");
    let env = read(format!("env.demote.{follower}"));
    let keys: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !from_shell.contains(k))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    let mut want = documented.to_vec();
    want.sort_unstable();
    assert_eq!(sorted, want, "{env}");
    assert!(env.contains("REGENT_ROLE=follower\n"), "{env}");
    let argv = read(format!("argv.demote.{follower}"));
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(argv[..3], [hook.as_str(), "2", "demote"], "{argv:?}");
}

// ---------------------------------------------------------------------------
// regent announce on the wire.

/// A raw packet socket on host's eth0 that sees every frame.
fn capture(lan: &Lan, host: usize) -> OwnedFd {
    lan.in_ns(host, || {
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let index = regentd::net::interface_index("eth0").expect("eth0");
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = all;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        socket2::SockRef::from(&fd)
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        fd
    })
}

/// The ICMPv6 checksum of `message` from `src` to `dst` (RFC 4443, 2.3).
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut data = Vec::new();
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(message.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(message);
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn announce_sends_gratuitous_arp_and_neighbour_advertisements_on_the_wire() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(2);
    let (vip4, vip6) = (lan.vip4(), lan.vip6());
    let mac = mac_of(&lan, 1);
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
    };
    ok(lan.exec(
        1,
        &["ip", "addr", "add", &format!("{vip4}/24"), "dev", "eth0"],
    ));
    ok(lan.exec(
        1,
        &[
            "ip",
            "addr",
            "add",
            &format!("{vip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    ));
    // Host 2 caches both addresses at a wrong MAC; the announcements must
    // override that.
    for vip in [vip4.to_string(), vip6.to_string()] {
        ok(lan.exec(
            2,
            &[
                "ip",
                "neigh",
                "replace",
                &vip,
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "eth0",
                "nud",
                "stale",
            ],
        ));
    }
    let fd = capture(&lan, 2);

    let out = lan.exec(
        1,
        &[
            regent_bin(),
            "announce",
            "--dev",
            "eth0",
            "--count",
            "2",
            "--interval-ms",
            "100",
            &format!("{vip4}/24"),
            &vip6.to_string(),
        ],
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    assert!(out.status.success(), "{out:?}");

    let mut arps = 0;
    let mut nas = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && (arps < 2 || nas < 2) {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let frame = &buf[..n];
        if frame.len() < 14 || frame[6..12] != mac.0 {
            continue;
        }
        match u16::from_be_bytes([frame[12], frame[13]]) {
            0x0806 if frame.len() >= ARP_FRAME_BYTES => {
                assert_eq!(frame[..ARP_FRAME_BYTES], gratuitous_arp(vip4, mac));
                arps += 1;
            }
            0x86dd if frame.len() >= 14 + 40 + 32 => {
                let ip = &frame[14..54];
                let icmp = &frame[54..];
                if ip[6] != 58 || icmp[0] != 136 {
                    continue;
                }
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16"));
                let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16"));
                let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                assert_eq!(frame[..6], [0x33, 0x33, 0, 0, 0, 1], "to all nodes");
                assert_eq!(ip[7], 255, "hop limit");
                assert_eq!((src, dst), (vip6, "ff02::1".parse().expect("ff02::1")));
                assert_eq!(len, 32);
                let message = &icmp[..len];
                assert_eq!(message[1], 0, "code");
                assert_eq!(message[4], 0x20, "Override set, Solicited and Router clear");
                assert_eq!(message[8..24], vip6.octets(), "target");
                assert_eq!(message[24..26], [2, 1], "Target Link-Layer Address option");
                assert_eq!(message[26..32], mac.0, "our MAC");
                assert_eq!(icmpv6_checksum(src, dst, message), 0, "checksum");
                nas += 1;
            }
            _ => {}
        }
    }
    println!(
        "captured on host 2: {arps} gratuitous ARP, {nas} neighbour advertisements from {mac}"
    );
    assert_eq!((arps, nas), (2, 2));
    let neigh = |vip: String| {
        let out = lan.exec(2, &["ip", "neigh", "show", &vip, "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for vip in [vip4.to_string(), vip6.to_string()] {
        let entry = neigh(vip.clone());
        assert!(
            entry.contains(&mac.to_string()),
            "host 2 did not learn {vip} at {mac}: {entry}"
        );
    }

    // Clear errors: an address the interface lacks, an interface missing.
    let out = lan.exec(
        1,
        &[regent_bin(), "announce", "--dev", "eth0", "10.255.255.1"],
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("10.255.255.1 is not assigned to eth0"),
        "{text}"
    );
    let out = lan.exec(
        1,
        &[regent_bin(), "announce", "--dev", "eth9", &vip4.to_string()],
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("eth9"), "{text}");
}

// ---------------------------------------------------------------------------
// The vip hook on its own.

#[test]
fn vip_hook_is_idempotent_and_fails_clearly() {
    if !require_root() {
        return;
    }
    let lan = Lan::new(1);
    let dir = cluster_dir(&lan);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (vip4, vip6) = (lan.vip4(), lan.vip6());
    let env_file = dir.join("vip.env");
    let settings = |extra: &str| {
        std::fs::write(
            &env_file,
            format!(
                "VIP=\"{vip4}/24 {vip6}/64\"\nDEV=eth0\nARP_COUNT=1\nREGENT={}\n{extra}\n",
                regent_bin()
            ),
        )
        .expect("env file");
    };
    let vip = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/hooks/vip");
    let vip = vip.display().to_string();
    let env_arg = format!("REGENT_VIP_ENV={}", env_file.display());
    let path_arg = format!("PATH={}", regentd::hooks::HOOK_PATH);
    // As regent runs it: a clean environment (and the wrapper's variable).
    let hook = |args: &[&str]| {
        let mut cmd = vec!["env", "-i", &path_arg, &env_arg, &vip];
        cmd.extend_from_slice(args);
        let out = lan.exec(1, &cmd);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let held = || {
        let out = lan.exec(1, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (
            text.contains(&format!(" {vip4}/24 ")),
            text.contains(&format!(" {vip6}/64 ")),
        )
    };

    settings("ARP_TOOL=regent");
    let (code, text) = hook(&["demote", "0"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to remove"), "{text}");
    assert_eq!(held(), (false, false));

    let (code, text) = hook(&["promote", "1"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(held(), (true, true), "{text}");
    assert!(text.contains(&format!("announced {vip6}")), "{text}");
    assert!(text.contains(&format!("announced {vip4}")), "{text}");
    println!("vip promote:\n{text}");

    // Again: still one of each, nothing fails.
    let (code, text) = hook(&["promote", "1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("already on eth0"), "{text}");

    // An address that went missing comes back at the next refresh.
    let out = lan.exec(
        1,
        &["ip", "addr", "del", &format!("{vip4}/24"), "dev", "eth0"],
    );
    assert!(out.status.success(), "{out:?}");
    let (code, text) = hook(&["refresh", "1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("was missing"), "{text}");
    assert_eq!(held(), (true, true), "{text}");

    // With arping (if installed) as the IPv4 announcer.
    settings("ARP_TOOL=arping");
    let (code, text) = hook(&["refresh", "1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("failed"), "{text}");

    let (code, text) = hook(&["demote", "1"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(held(), (false, false), "{text}");
    let (code, text) = hook(&["demote", "1"]);
    assert_eq!(code, Some(0), "{text}");

    // Real failures: exit 1 and say why.
    settings("DEV=eth9");
    let (code, text) = hook(&["promote", "2"]);
    println!(
        "vip promote with a missing interface: exit {code:?}: {}",
        text.trim()
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("interface eth9 does not exist"), "{text}");
    settings("VIP=10.255.255.1");
    let (code, text) = hook(&["promote", "2"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no prefix length"), "{text}");
    settings("");
    let (code, text) = hook(&["promote", "not-a-number"]);
    assert_eq!(code, Some(1), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A network namespace of its own, removed on drop (so also on a failed
/// assertion), with an `eth0` that is up (one end of a veth pair: not every
/// kernel has the dummy driver): the interface an unconfigured hook used to
/// take for granted.
struct BareNetns(String);

impl BareNetns {
    fn new(tag: &str) -> BareNetns {
        let name = format!("regent-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ns = BareNetns(name);
        for args in [
            vec!["netns", "add", &ns.0],
            vec![
                "-n", &ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
            ],
            vec!["-n", &ns.0, "link", "set", "peer0", "up"],
            vec!["-n", &ns.0, "link", "set", "eth0", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        ns
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Every global address on `eth0` (none is there until something adds
    /// one; the kernel's own link-local address is not listed).
    fn addresses(&self) -> String {
        let out = self.exec(&["ip", "-o", "addr", "show", "dev", "eth0", "scope", "global"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for BareNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The hook as shipped, with no environment file: promote and refresh
/// refuse and name what is missing, nothing is added to the interface, and
/// demote (which regent runs once at every start) succeeds with nothing to
/// remove.
#[test]
fn vip_hook_without_configuration_refuses_to_promote_and_touches_nothing() {
    if !require_root() {
        return;
    }
    let ns = BareNetns::new("vip-unconfigured");
    let dir = std::env::temp_dir().join(format!("regent-vip-unconfigured-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let empty = dir.join("vip.env");
    std::fs::write(&empty, "# nothing set yet\n").expect("env file");
    let vip = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/hooks/vip");
    let vip = vip.display().to_string();
    let path_arg = format!("PATH={}", regentd::hooks::HOOK_PATH);
    let empty_arg = format!("REGENT_VIP_ENV={}", empty.display());

    // With no file at all (the default path, as on a fresh install), and
    // with a file that sets nothing.
    let mut envs: Vec<Vec<&str>> = vec![vec![&empty_arg]];
    let default_file = Path::new("/etc/regent/vip.env");
    if default_file.exists() {
        println!(
            "{} exists on this host: only the empty file is tried",
            default_file.display()
        );
    } else {
        envs.push(vec![]);
    }
    for env in envs {
        let hook = |args: &[&str]| {
            let mut cmd = vec!["env", "-i", &path_arg];
            cmd.extend_from_slice(&env);
            cmd.push(&vip);
            cmd.extend_from_slice(args);
            let out = ns.exec(&cmd);
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code(), text)
        };
        let file = if env.is_empty() {
            "/etc/regent/vip.env".to_string()
        } else {
            empty.display().to_string()
        };
        for action in ["promote", "refresh"] {
            let (code, text) = hook(&[action, "1"]);
            println!(
                "vip {action} unconfigured ({env:?}): exit {code:?}: {}",
                text.trim()
            );
            assert_eq!(code, Some(1), "{text}");
            assert!(text.contains("not configured"), "{text}");
            assert!(text.contains("VIP and DEV"), "{text}");
            assert!(text.contains(&file), "{text}");
            let held = ns.addresses();
            assert!(
                !held.contains(" inet"),
                "the unconfigured hook added an address: {held}"
            );
        }
        let (code, text) = hook(&["demote", "0"]);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("nothing to remove"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
