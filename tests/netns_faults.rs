//! The daemon's own faults, on real processes: S3 (no two leaders at any
//! instant, counted from the promote hook's start to the demote hook's end)
//! and S1/S2 must hold for the whole daemon, not only its core, when its
//! process is stopped past its lease, when fsync stalls or fails under it,
//! when its event loop is held inside a receive call, and when its demote
//! takes the whole budget.
//!
//! Each test runs three `regent run` processes on a namespace LAN with the
//! shared hook log of `tests/cluster`, makes one fault, and checks the whole
//! run with `Cluster::check_no_overlap`, which prints a timeline (hook lines,
//! signals, crashes, in ms) when it fails.
//!
//! Disk faults come from `tests/shim/fsync_fault.c`, an `LD_PRELOAD` library
//! compiled here with `cc` (as `tests/clock.rs` does for its clock shim):
//! while a host's control file exists its `fsync`, `fdatasync` and `syncfs`
//! stall, or fail with EIO. Each host has its own control files, so one
//! host's disk is faulted while the others' work. A held event loop comes
//! from `tests/shim/recv_stall.c`, built the same way and preloaded into one
//! host: its next `recvfrom`/`recvmsg` after a control file appears sleeps
//! first, while datagrams pile up in the socket, so the daemon reads them
//! in one batch after the hold.
//!
//! Needs root (skips otherwise, fails under `CI=true`).

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster::{json_field, realtime_ns, regent_bin, wait_until, Cluster, HookEvent, Opts};
use netns::{require_root, Lan};

const HEARTBEAT_MS: u64 = 100;
/// Longer than the default 300 ms, so that a busy 2-core machine does not
/// eat the margins under test.
const DEAD_AFTER_MS: u64 = 600;
/// The default `timing.lease_margin_ms` and `timing.max_drift_ppm`.
const LEASE_MARGIN_MS: u64 = 20;
const MAX_DRIFT_PPM: u64 = 10_000;
/// Room for the logging demote (a shell and two `date`s) on a busy machine,
/// whether the daemon or its lease guard runs it.
const DEMOTE_BUDGET_MS: u64 = 100;

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

/// The lease the daemon derives from its config (see conf/regent.toml).
fn lease_ms(dead_after_ms: u64, budget_ms: u64) -> u64 {
    dead_after_ms * (1_000_000 - MAX_DRIFT_PPM) / (1_000_000 + MAX_DRIFT_PPM)
        - LEASE_MARGIN_MS
        - budget_ms
}

/// Three hosts, ranked 3 > 2 > 1 by priority so the leader and the next in
/// line are known, no preemption (a restarted host comes back as a
/// follower), refreshes every 200 ms and logged, so a leader that acts when
/// it should not shows in the log.
fn opts(budget_ms: u64) -> Opts {
    Opts {
        heartbeat_ms: HEARTBEAT_MS,
        dead_after_ms: DEAD_AFTER_MS,
        priorities: vec![300, 200, 100],
        preempt: false,
        hooks_extra: format!("demote_budget_ms = {budget_ms}\nrefresh_interval_ms = 200\n"),
        log_refresh: true,
        ..Opts::default()
    }
}

/// Waits for the first promote; returns it.
fn first_leader(c: &Cluster) -> HookEvent {
    c.wait_promote(0, &[], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no leader within 5 s\n{}", c.dump()))
}

/// The role host's daemon reports, if it answers.
fn role(c: &Cluster, host: usize) -> Option<(String, Option<u64>)> {
    let json = c.status_json(host)?;
    let role = json_field(&json, "role")?;
    let leader = json_field(&json, "leader").and_then(|l| l.parse().ok());
    Some((role, leader))
}

/// The epoch host has promised (persisted), from `status --json`.
fn promised(c: &Cluster, host: usize) -> Option<u64> {
    json_field(&c.status_json(host)?, "promised_epoch")?
        .parse()
        .ok()
}

// ----- the fsync shim -----

/// Where each host's fault control files and the shim's log live.
struct Disk {
    dir: PathBuf,
}

impl Disk {
    fn stall_file(&self, host: usize) -> PathBuf {
        self.dir.join(format!("fsync-stall-h{host}"))
    }

    fn fail_file(&self, host: usize) -> PathBuf {
        self.dir.join(format!("fsync-fail-h{host}"))
    }

    fn log(&self, host: usize) -> PathBuf {
        self.dir.join(format!("fsync-h{host}.log"))
    }

    /// The faulted calls host's processes made so far (the shim's log).
    fn faulted(&self, host: usize) -> Vec<String> {
        std::fs::read_to_string(self.log(host))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn set(&self, file: &Path, on: bool) {
        if on {
            std::fs::write(file, "").expect("fault control file");
        } else {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Compiles `tests/shim/NAME.c` into the cluster's directory.
fn build_shim(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/shim/{name}.c"));
    let lib = dir.join(format!("{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// Preloads the shim into every daemon started from now on, each host with
/// its own control files.
fn with_shim(c: &mut Cluster) -> Disk {
    let lib = build_shim(&c.dir, "fsync_fault");
    let disk = Disk { dir: c.dir.clone() };
    for h in 1..=c.hosts() {
        c.set_host_env(
            h,
            &[
                ("LD_PRELOAD", lib.display().to_string()),
                (
                    "REGENT_TEST_FSYNC_STALL_FILE",
                    disk.stall_file(h).display().to_string(),
                ),
                (
                    "REGENT_TEST_FSYNC_FAIL_FILE",
                    disk.fail_file(h).display().to_string(),
                ),
                ("REGENT_TEST_FSYNC_LOG", disk.log(h).display().to_string()),
            ],
        );
    }
    disk
}

// ----- the receive-stall shim -----

/// One host's receive stall (`tests/shim/recv_stall.c`): its control file
/// and the shim's log.
struct RecvStall {
    file: PathBuf,
    log: PathBuf,
}

impl RecvStall {
    /// Preloads the shim into host's daemons started from now on.
    fn preload(c: &mut Cluster, host: usize) -> RecvStall {
        let lib = build_shim(&c.dir, "recv_stall");
        let stall = RecvStall {
            file: c.dir.join(format!("recv-stall-h{host}")),
            log: c.dir.join(format!("recv-h{host}.log")),
        };
        c.set_host_env(
            host,
            &[
                ("LD_PRELOAD", lib.display().to_string()),
                (
                    "REGENT_TEST_RECV_STALL_FILE",
                    stall.file.display().to_string(),
                ),
                ("REGENT_TEST_RECV_LOG", stall.log.display().to_string()),
            ],
        );
        stall
    }

    /// Holds the daemon's next receive call for `ms`.
    fn arm(&self, ms: u64) {
        std::fs::write(&self.file, format!("{ms}\n")).expect("receive stall file");
    }

    /// The shim's log lines whose third field is `what`, as (value, realtime
    /// ns): `stalling`/`stalled` give the stall's length, `batch` the
    /// datagrams read after it until the socket was empty.
    fn noted(&self, what: &str) -> Vec<(u64, u128)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() != 5 || w[2] != what {
                    return None;
                }
                Some((w[3].parse().ok()?, w[4].parse().ok()?))
            })
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Sleeps until the realtime instant `at_ns` (at once if it has passed).
fn sleep_until(at_ns: u128) {
    let now = realtime_ns();
    if at_ns > now {
        std::thread::sleep(Duration::from_nanos((at_ns - now) as u64));
    }
}

// ----- the tests -----

#[test]
fn sigstop_leader_for_twice_its_lease() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(Lan::new(3), opts(DEMOTE_BUDGET_MS));
    c.start_all();
    let first = first_leader(&c);
    let (old, epoch) = (first.node, first.epoch);
    std::thread::sleep(Duration::from_millis(1000));
    let lease = lease_ms(DEAD_AFTER_MS, DEMOTE_BUDGET_MS);
    let stop_for = Duration::from_millis(2 * lease);
    let stopped = c.signal(old, libc::SIGSTOP);
    std::thread::sleep(stop_for);
    let woke = c.signal(old, libc::SIGCONT);
    let next = c
        .wait_promote(stopped, &[old], Duration::from_secs(3))
        .unwrap_or_else(|| {
            panic!(
                "no new leader after node {old} was stopped\n{}\n{}",
                c.timeline(&[]),
                c.dump()
            )
        });
    // Give the woken daemon time to do whatever it would.
    std::thread::sleep(Duration::from_millis(1500));
    let acted: Vec<HookEvent> = c
        .hook_events()
        .into_iter()
        .filter(|e| {
            e.node == old && e.at_ns >= woke && (e.kind == "promote" || e.kind == "refresh")
        })
        .collect();
    let survived = c.running(old);
    println!(
        "node {old} (epoch {epoch}, lease {lease} ms) stopped for {} ms; node {} promoted \
         epoch {} {:.1} ms after the stop; the woken daemon {}",
        stop_for.as_millis(),
        next.node,
        next.epoch,
        ms(next.at_ns - stopped),
        if survived {
            "still runs"
        } else {
            "is gone (fenced by its guard)"
        }
    );
    assert!(
        acted.is_empty(),
        "node {old} acted as leader after it woke: {acted:?}\n{}\n{}",
        c.timeline(&[]),
        c.dump()
    );
    // Its old epoch was let go while it was stopped: the demote of `epoch`
    // ended before the new leader's promote started (check_no_overlap says
    // the same over the whole run; this names the one that matters).
    let demoted = c
        .hook_events()
        .into_iter()
        .find(|e| e.node == old && e.kind == "demote-end" && e.epoch == epoch);
    match &demoted {
        Some(d) => {
            let gap = (next.at_ns as f64 - d.at_ns as f64) / 1e6;
            println!(
                "node {old}'s demote of epoch {epoch} ended {:.1} ms after the stop, {:.1} ms \
                 {} node {}'s promote",
                ms(d.at_ns - stopped),
                gap.abs(),
                if gap >= 0.0 { "before" } else { "AFTER" },
                next.node
            )
        }
        None => println!("node {old} never finished a demote of epoch {epoch}"),
    }
    c.check_no_overlap(&[]);
    // Restarted by hand (no systemd here), it comes back as a follower of
    // the new leader.
    if !survived {
        c.start(old);
    }
    let follows = wait_until(Duration::from_secs(5), || {
        role(&c, old).is_some_and(|(r, l)| r == "follower" && l == Some(next.node as u64))
    });
    assert!(
        follows,
        "node {old} does not follow node {} after it woke{}: {:?}\n{}\n{}",
        next.node,
        if survived { "" } else { " and was restarted" },
        role(&c, old),
        c.timeline(&[]),
        c.dump()
    );
    std::thread::sleep(Duration::from_millis(500));
    let windows = c.check_no_overlap(&[]);
    assert!(
        c.hook_events()
            .iter()
            .all(|e| !(e.node == old && e.kind == "promote" && e.at_ns >= woke)),
        "node {old} led again\n{}",
        c.timeline(&[])
    );
    println!("{}", c.timeline(&[]));
    println!("{} leadership windows, none overlapping", windows.len());
}

#[test]
fn sigstop_a_follower() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(Lan::new(3), opts(DEMOTE_BUDGET_MS));
    c.start_all();
    let first = first_leader(&c);
    assert_eq!(
        first.node,
        1,
        "node 1 has the highest priority\n{}",
        c.dump()
    );
    std::thread::sleep(Duration::from_millis(1000));
    // Node 2 is next in line: the one that would claim if, on waking, it
    // took its stale view of the leader for the truth.
    let follower = 2;
    c.signal(follower, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    c.signal(follower, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));
    let promotes: Vec<HookEvent> = c
        .hook_events()
        .into_iter()
        .filter(|e| e.kind == "promote")
        .collect();
    println!("{}", c.timeline(&[]));
    assert_eq!(
        promotes,
        vec![first.clone()],
        "the leader changed because a follower was stopped\n{}\n{}",
        c.timeline(&[]),
        c.dump()
    );
    assert_eq!(c.holder(), Some((first.node, first.epoch)));
    let follows = wait_until(Duration::from_secs(2), || {
        role(&c, follower).is_some_and(|(r, l)| r == "follower" && l == Some(1))
    });
    assert!(
        follows,
        "the woken follower does not follow node 1: {:?}\n{}",
        role(&c, follower),
        c.dump()
    );
    c.check_no_overlap(&[]);
    println!(
        "node {follower} stopped for 3 s: node 1 kept epoch {}",
        first.epoch
    );
}

#[test]
fn fsync_stalls_on_the_leader() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(Lan::new(3), opts(DEMOTE_BUDGET_MS));
    let disk = with_shim(&mut c);
    c.start_all();
    let first = first_leader(&c);
    assert_eq!(
        first.node,
        1,
        "node 1 has the highest priority\n{}",
        c.dump()
    );
    std::thread::sleep(Duration::from_millis(1000));
    // Every fsync on node 1 now blocks until the file goes: its own state
    // writes and the leader's periodic check that the state directory is
    // writable alike.
    disk.set(&disk.stall_file(1), true);
    let stalled = c.mark("host 1: fsync stalls from now on");
    // A leader checks every 2 s that its state directory is writable: wait
    // (a little longer) for that fsync to block, so the election below
    // comes while the leader has a write in flight. A daemon that makes no
    // fsync while it leads is not waited for beyond that.
    let in_flight = wait_until(Duration::from_millis(2500), || {
        disk.faulted(1).iter().any(|l| l.contains("stalling"))
    });
    c.mark(if in_flight {
        "host 1: an fsync is stalled"
    } else {
        "host 1: no fsync while leading"
    });
    // A new election while it stalls: ask the leader to step down. The
    // request may wait on a stalled daemon, so it runs beside the test.
    let socket = c.socket(1);
    c.mark("host 1: step-down requested");
    let step_down = std::thread::spawn(move || {
        let out = Command::new(regent_bin())
            .args(["step-down", "--socket"])
            .arg(&socket)
            .output()
            .expect("run regent step-down");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    });
    let asked = realtime_ns();
    let next = c.wait_promote(stalled, &[1], Duration::from_millis(2800));
    // The stall lasts 3 s from the election on.
    let left = Duration::from_millis(3000)
        .saturating_sub(Duration::from_nanos((realtime_ns() - asked) as u64));
    std::thread::sleep(left);
    disk.set(&disk.stall_file(1), false);
    c.mark("host 1: fsync works again");
    let (ok, text) = step_down.join().expect("step-down thread");
    c.mark(format!(
        "host 1: step-down answered ({}): {}",
        if ok { "ok" } else { "failed" },
        text.trim()
    ));
    std::thread::sleep(Duration::from_secs(2));
    let next = next.or_else(|| c.wait_promote(stalled, &[1], Duration::from_secs(2)));
    println!("{}", c.timeline(&[]));
    println!("fsync calls faulted on host 1: {:?}", disk.faulted(1));
    c.check_no_overlap(&[]);
    let next = next.unwrap_or_else(|| {
        panic!(
            "no other node led after node 1 stepped down\n{}\n{}",
            c.timeline(&[]),
            c.dump()
        )
    });
    assert!(
        disk.faulted(1).iter().any(|l| l.contains("stalled ")),
        "no fsync of host 1 stalled: the test did not test anything\n{}",
        c.dump()
    );
    println!(
        "node {} promoted epoch {} {:.1} ms after node 1 was asked to step down \
         (an fsync of node 1 was {}stalled then)",
        next.node,
        next.epoch,
        (next.at_ns as f64 - asked as f64) / 1e6,
        if in_flight { "" } else { "not " }
    );
    assert!(
        wait_until(Duration::from_secs(3), || c.holder().is_some()),
        "no leader once the disk works again\n{}",
        c.dump()
    );
}

#[test]
fn fsync_fails_on_a_claim() {
    if !require_root() {
        return;
    }
    let mut c = Cluster::new(Lan::new(3), opts(DEMOTE_BUDGET_MS));
    let disk = with_shim(&mut c);
    c.start_all();
    let first = first_leader(&c);
    assert_eq!(
        first.node,
        1,
        "node 1 has the highest priority\n{}",
        c.dump()
    );
    std::thread::sleep(Duration::from_millis(1000));
    // S2 from the daemons' own account: each host's promised epoch, sampled
    // as the test goes, never goes down, restarts included.
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); 4];
    let mut sample = |c: &Cluster| {
        for (h, s) in samples.iter_mut().enumerate().skip(1) {
            if let Some(p) = promised(c, h) {
                s.push(p);
            }
        }
    };
    sample(&c);
    // Node 2, next in line, cannot write its state any more; then the
    // leader's host dies. Node 2 must not claim or ack an epoch it could not
    // persist, so no quorum can form until node 1 is back.
    disk.set(&disk.fail_file(2), true);
    c.mark("host 2: fsync fails with EIO");
    c.lan.cut(1);
    let crashed = c.kill(1);
    std::thread::sleep(Duration::from_millis(2000));
    sample(&c);
    let failed_writes = disk.faulted(2);
    c.lan.heal(1);
    c.start(1);
    let next = c
        .wait_promote(crashed, &[2], Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "no leader among nodes 1 and 3 while node 2's disk fails\n{}\n{}",
                c.timeline(&[(1, crashed)]),
                c.dump()
            )
        });
    std::thread::sleep(Duration::from_millis(500));
    sample(&c);
    let before = promised(&c, 2).unwrap_or_else(|| {
        panic!(
            "node 2 does not answer status while its disk fails\n{}",
            c.dump()
        )
    });
    // Node 2 crashes and comes back with a working disk...
    c.kill(2);
    disk.set(&disk.fail_file(2), false);
    c.mark("host 2: fsync works again");
    c.start(2);
    let rejoined = wait_until(Duration::from_secs(5), || {
        role(&c, 2).is_some_and(|(r, l)| r == "follower" && l == Some(next.node as u64))
    });
    assert!(
        rejoined,
        "node 2 does not follow node {} after its restart: {:?}\n{}",
        next.node,
        role(&c, 2),
        c.dump()
    );
    sample(&c);
    // ...and is handed the lead: the epoch it leads must be above anything
    // it promised before.
    let asked = realtime_ns();
    let (ok, text) = c.ctl(next.node, &["step-down", "--to", "2"]);
    assert!(ok, "step-down --to 2: {text}\n{}", c.dump());
    let led = c
        .wait_promote(asked, &[1, 3], Duration::from_secs(3))
        .unwrap_or_else(|| panic!("node 2 did not take over\n{}", c.dump()));
    std::thread::sleep(Duration::from_millis(500));
    sample(&c);
    let crashes = [(1, crashed)];
    println!("{}", c.timeline(&crashes));
    println!("failed fsync calls of host 2 while node 1 was down: {failed_writes:?}");
    println!("promised epochs sampled per host: {:?}", &samples[1..]);
    assert!(
        failed_writes.iter().any(|l| l.contains("failed")),
        "node 2 never tried to write its state: the test did not test anything\n{}",
        c.dump()
    );
    c.check_no_overlap(&crashes);
    let events = c.hook_events();
    let promoted_while_failing: Vec<&HookEvent> = events
        .iter()
        .filter(|e| e.node == 2 && e.kind == "promote" && e.at_ns < asked)
        .collect();
    assert!(
        promoted_while_failing.is_empty(),
        "node 2 promoted while its disk failed: {promoted_while_failing:?}\n{}",
        c.timeline(&crashes)
    );
    assert!(
        led.epoch > before,
        "node 2 led epoch {} after promising {before} before its restart\n{}",
        led.epoch,
        c.timeline(&crashes)
    );
    // Last, as it is about what the daemon reports rather than what it did:
    // a promised epoch `status` shows must be one the node will still hold
    // after a restart.
    for (h, s) in samples.iter().enumerate().skip(1) {
        assert!(
            s.windows(2).all(|w| w[0] <= w[1]),
            "S2: node {h}'s promised epoch, as `status --json` reports it, went down: {s:?} \
             (samples: start, node 1 down, new leader, node 2 restarted, node 2 leads). A \
             promise reported while the disk failed was not durable.\n{}\n{}",
            c.timeline(&crashes),
            c.dump()
        );
    }
    println!(
        "node {} led epoch {} with node 2's disk failing; node 2, restarted, led epoch {} \
         (it had promised {before})",
        next.node, next.epoch, led.epoch
    );
}

#[test]
fn demote_takes_its_whole_budget() {
    if !require_root() {
        return;
    }
    const BUDGET_MS: u64 = 150;
    const DEMOTE_MS: u64 = 120;
    let mut c = Cluster::new(
        Lan::new(3),
        Opts {
            demote_sleep_ms: DEMOTE_MS,
            ..opts(BUDGET_MS)
        },
    );
    c.start_all();
    let first = first_leader(&c);
    let (old, epoch) = (first.node, first.epoch);
    std::thread::sleep(Duration::from_millis(1000));
    let others: Vec<usize> = (1..=3).filter(|&h| h != old).collect();
    let cut = c.mark(format!("partition: node {old} alone"));
    c.lan.partition(&[&[old], &others]);
    let next = c
        .wait_promote(cut, &[old], Duration::from_secs(4))
        .unwrap_or_else(|| {
            panic!(
                "the majority elected no leader\n{}\n{}",
                c.timeline(&[]),
                c.dump()
            )
        });
    std::thread::sleep(Duration::from_millis(500));
    c.lan.heal_partition();
    c.mark("partition healed");
    std::thread::sleep(Duration::from_millis(1000));
    println!("{}", c.timeline(&[]));
    let events = c.hook_events();
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e.node == old && e.kind == kind && e.epoch == epoch && e.at_ns >= cut)
            .cloned()
    };
    let (Some(start), Some(end)) = (find("demote"), find("demote-end")) else {
        panic!(
            "node {old} did not run a whole demote of epoch {epoch}\n{}\n{}",
            c.timeline(&[]),
            c.dump()
        );
    };
    let took = ms(end.at_ns - start.at_ns);
    let overrun = c.metric(old, "regent_demote_overrun_total", None);
    println!(
        "lease {} ms; node {old}'s demote started {:.1} ms after the cut, took {took:.1} ms \
         (budget {BUDGET_MS} ms, overruns counted {overrun:?}); node {} promoted epoch {} \
         {:.1} ms after it ended",
        lease_ms(DEAD_AFTER_MS, BUDGET_MS),
        ms(start.at_ns - cut),
        next.node,
        next.epoch,
        (next.at_ns as f64 - end.at_ns as f64) / 1e6
    );
    assert!(
        end.at_ns < next.at_ns,
        "node {}'s promote of epoch {} started {:.1} ms before node {old}'s demote ended \
         (the demote took {took:.1} ms of its {BUDGET_MS} ms budget)\n{}\n{}",
        next.node,
        next.epoch,
        (end.at_ns as f64 - next.at_ns as f64) / 1e6,
        c.timeline(&[]),
        c.dump()
    );
    c.check_no_overlap(&[]);
}

/// A follower whose loop is held inside a receive call dates what it then
/// reads no earlier than the moment it reads it (§3.13, §4.1: "the promises
/// are dated after their messages arrived"). A loop that took one clock
/// reading per batch dated every datagram of the batch at that reading; a
/// hold inside the batch then made the follower's promises end early while
/// the leader counted them in full, and a second node could be elected
/// under a live lease.
///
/// L is node 1 (priority 300, leads), C node 3 (priority 200, next in line),
/// F node 2, a voter that cannot lead (its health check is `false`), so that
/// only F's promises, never a claim of its own, are in play. D = `dead_after`
/// 600 ms, the lease is ℓ = 468 ms (D·0.99/1.01 − margin 20 − budget 100),
/// the stall S = 3·D = 1800 ms. Times are from t0, the instant F's shim
/// starts the stall (its log says when).
///
/// Why C hears L until shortly before the stall ends: with three hosts, a
/// C that never hears L leaves L's lease on F alone, and a stall of F longer
/// than ℓ lets that lease run out: L steps down during the stall and there
/// is nothing left to overlap with. So C carries L's lease through the stall,
/// and is then cut off from L so that its promise lapses and it claims at a
/// known time. L → F is blocked just before the stall ends, so that the
/// newest L heartbeats F reads are in its held batch and none come after.
///
/// - Before t0: L leads, F and C follow it and echo each heartbeat.
/// - t0: F's loop is in `recvmsg`, held 1800 ms. F sends nothing. L's
///   heartbeats (re-sent every 10 ms while an alive follower has not acked,
///   F for D, C after the cut) and C's messages queue at F: about 150
///   datagrams, below the loop's batch of 256 (the shim counts them).
/// - ≈1500 (x): L and C are cut off from each other. C last heard L at
///   h ∈ (x − 100, x]; L's lease, resting on C's echoes, runs to h + ℓ, past
///   the stall's end, so L still leads when F's echoes arrive.
/// - ≈1750 (y): L → F blocked (F → L still passes). The newest L heartbeat
///   queued at F was sent at y' ≈ y.
/// - 1800: the stall ends; F reads the queue in one batch and echoes L's
///   heartbeats; L's lease now rests on F's ack: y' + ℓ ≈ 2220. F hears
///   nothing of L from then on.
/// - h + 600 ≈ 1950–2100: C's promise to L lapses, L is silent in its view,
///   F alive again: C claims on the fast path. C + F are a quorum; L cannot
///   hear the claim.
///
/// Correct stamps: F stamped each datagram of the batch when it read it, at
/// ≥ 1800, so its promise to L runs to ≥ 2400 and L is alive in its view
/// until then. F refuses C (rule 4, LiveLeader; rule 5 too) and defers C's
/// later claims until 2400. L's lease ends at y' + ℓ ≈ 2220, its demote
/// starts within the margin and ends within its budget, by ≈ 2340. C
/// promotes after 2400: no overlap.
///
/// One reading per batch (the old loop): F dated the whole batch t0. Its
/// promise to L, renewed by every L heartbeat of the batch, ran to t0 + 600,
/// and L was last heard at t0, so L is not alive in F's view either. F
/// still echoed those heartbeats, and L counts each as a promise of D from
/// its send: lease to y' + ℓ. When C claims at ≈ 2000, F holds no promise
/// and sees no contender above C: it acks. C promotes at ≈ 2000 plus two
/// fsyncs and a round trip, while L leads until ≈ 2220 and holds until its
/// demote ends: the windows overlap by 100 ms or more, and
/// `check_no_overlap` fails.
///
/// Not deterministic: the cuts are nft commands (10–70 ms on a busy 2-core
/// machine, so each is started 40 ms early), and h is known only to within
/// a heartbeat. The stale case overlaps if h < y' − (D − ℓ) − C's claim
/// time + L's demote time (≈ 1550–1600); the scenario holds at all only if
/// h + ℓ comes after F's echo (h > ≈ 1350) and L → F is blocked before the
/// stall ends, which the test checks: otherwise the run tested nothing and
/// says so.
#[test]
fn a_follower_held_inside_a_receive_dates_nothing_early() {
    if !require_root() {
        return;
    }
    const L: usize = 1;
    const F: usize = 2;
    const C: usize = 3;
    const STALL_MS: u64 = 3 * DEAD_AFTER_MS;
    /// When L and C are cut off, and L → F is blocked, from t0.
    const CUT_L_C_MS: u64 = 1500;
    const BLOCK_L_F_MS: u64 = 1750;
    /// How early each nft command is started (its usual run time).
    const NFT_LEAD_MS: u64 = 40;
    let mut c = Cluster::new(
        Lan::new(3),
        Opts {
            priorities: vec![300, 100, 200],
            ..opts(DEMOTE_BUDGET_MS)
        },
    );
    let voter = c.config(F).replace(
        "[hooks]\n",
        "[hooks]\ncheck = \"/bin/false\"\ncheck_interval_ms = 100\ncheck_fall = 1\n",
    );
    assert!(voter.contains("check = "), "no [hooks] table in\n{voter}");
    std::fs::write(c.config_path(F), voter).expect("config of F");
    let stall = RecvStall::preload(&mut c, F);
    c.start_all();
    let first = first_leader(&c);
    assert_eq!(
        first.node,
        L,
        "node {L} has the highest priority\n{}",
        c.dump()
    );
    let steady = wait_until(Duration::from_secs(5), || {
        let follows = |h| role(&c, h).is_some_and(|(r, l)| r == "follower" && l == Some(L as u64));
        follows(F)
            && follows(C)
            && c.status_json(F)
                .and_then(|j| json_field(&j, "eligible"))
                .is_some_and(|e| e == "false")
    });
    assert!(
        steady,
        "F and C do not both follow L, or F can still lead: F {:?}, C {:?}\n{}",
        role(&c, F),
        role(&c, C),
        c.dump()
    );
    std::thread::sleep(Duration::from_millis(500));
    stall.arm(STALL_MS);
    c.mark(format!("host {F}: next receive held {STALL_MS} ms"));
    let began = wait_until(Duration::from_secs(2), || {
        !stall.noted("stalling").is_empty()
    });
    assert!(
        began,
        "F's daemon made no recvfrom/recvmsg call within 2 s of arming the stall\n{}",
        c.dump()
    );
    let t0 = stall.noted("stalling")[0].1;
    c.mark_at(t0, format!("host {F}: receive held (t0)"));
    let rel = |at: u128| (at as f64 - t0 as f64) / 1e6;

    sleep_until(t0 + u128::from(CUT_L_C_MS - NFT_LEAD_MS) * 1_000_000);
    let asked = realtime_ns();
    c.lan.block(&[(L, C), (C, L)]);
    let done = c.mark(format!(
        "L and C cut off from each other (nft from {:.1})",
        rel(asked)
    ));
    let cut_l_c = (asked, done);
    sleep_until(t0 + u128::from(BLOCK_L_F_MS - NFT_LEAD_MS) * 1_000_000);
    let asked = realtime_ns();
    c.lan.block(&[(L, C), (C, L), (L, F)]);
    let done = c.mark(format!("L -> F blocked (nft from {:.1})", rel(asked)));
    let block_l_f = (asked, done);

    let ended = wait_until(Duration::from_millis(STALL_MS + 1000), || {
        !stall.noted("stalled").is_empty()
    });
    assert!(ended, "F's stall never ended\n{}", stall.log_text());
    let t_end = stall.noted("stalled")[0].1;
    c.mark_at(t_end, format!("host {F}: receive returns (stall over)"));
    let next = c.wait_promote(t0, &[L], Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(1000));
    let batch = stall.noted("batch").first().map(|b| b.0);
    if let Some((_, at)) = stall.noted("batch").first() {
        c.mark_at(*at, format!("host {F}: socket empty again"));
    }
    println!("{}", c.timeline(&[]));
    println!("receive shim on host {F}:\n{}", stall.log_text().trim_end());
    let events = c.hook_events();
    let l_demote = events
        .iter()
        .find(|e| e.node == L && e.kind == "demote" && e.epoch == first.epoch && e.at_ns >= t0)
        .cloned();
    println!(
        "t0 = F's stall start; stall {STALL_MS} ms, over at {:.1}; L-C cut by {:.1} (nft {:.1}..{:.1}); \
         L->F blocked by {:.1} (nft {:.1}..{:.1}); F read {} datagrams after the stall; \
         L's demote of epoch {} at {}; next promote: {}",
        rel(t_end),
        rel(cut_l_c.1),
        rel(cut_l_c.0),
        rel(cut_l_c.1),
        rel(block_l_f.1),
        rel(block_l_f.0),
        rel(block_l_f.1),
        batch.map_or("an unknown number of".to_string(), |n| n.to_string()),
        first.epoch,
        l_demote
            .as_ref()
            .map_or("none".to_string(), |d| format!("{:.1} ({})", rel(d.at_ns), d.reason)),
        next.as_ref().map_or("none".to_string(), |n| format!(
            "node {} epoch {} at {:.1}",
            n.node,
            n.epoch,
            rel(n.at_ns)
        )),
    );
    c.check_no_overlap(&[]);
    // The run tested something only if L still led when F's held batch was
    // handled, and F read that batch as one.
    let l_demote = l_demote.unwrap_or_else(|| {
        panic!(
            "L never let go of epoch {} though cut off from both followers\n{}\n{}",
            first.epoch,
            c.timeline(&[]),
            c.dump()
        )
    });
    assert!(
        l_demote.at_ns > t_end,
        "L's lease ran out during F's stall ({:.1} ms after t0, the stall ended at {:.1}): \
         the run tested nothing; C's echoes stopped backing it too early\n{}\n{}",
        rel(l_demote.at_ns),
        rel(t_end),
        c.timeline(&[]),
        c.dump()
    );
    assert!(
        block_l_f.1 < t_end,
        "L -> F was blocked only {:.1} ms after F's stall ended: the run tested nothing\n{}",
        rel(block_l_f.1) - rel(t_end),
        c.timeline(&[])
    );
    if let Some(n) = batch {
        assert!(
            n < 256,
            "F read {n} datagrams after its stall, more than one batch of the loop: the run \
             tested less than it should\n{}",
            c.timeline(&[])
        );
    }
    // Liveness: once F's promise to L (dated when F read its heartbeat)
    // lapses, C is elected.
    let next = next.unwrap_or_else(|| {
        panic!(
            "no new leader within 4 s of the stall\n{}\n{}",
            c.timeline(&[]),
            c.dump()
        )
    });
    assert_eq!(next.node, C, "{}", c.timeline(&[]));
    println!(
        "C promoted epoch {} {:.1} ms after L's demote of epoch {} started, {:.1} ms after F's \
         stall ended",
        next.epoch,
        (next.at_ns as f64 - l_demote.at_ns as f64) / 1e6,
        first.epoch,
        (next.at_ns as f64 - t_end as f64) / 1e6
    );
}
