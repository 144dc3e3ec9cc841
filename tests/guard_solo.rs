//! The lease guard, with real processes and no namespaces: a one-member
//! cluster leads alone on loopback; its daemon is then stopped (SIGSTOP),
//! crashed (SIGKILL) or stopped gracefully (SIGTERM), and the hook log says
//! who ran the demote, when, and why.
//!
//! The hook records `$1 $2 $REGENT_REASON $PPID`: a demote whose parent is
//! the guard, not the daemon, was run by the guard.

#![allow(clippy::disallowed_methods)]

#[path = "solo/mod.rs"]
mod solo;

use std::time::{Duration, Instant};

use solo::{wait_until, Solo};

/// The solo daemon's lease: dead_after 300 ms, less 1% drift twice, the
/// 20 ms lease margin and the 25 ms demote budget.
const LEASE: Duration = Duration::from_millis(249);
const MARGIN: Duration = Duration::from_millis(20);
/// Scheduling on a busy two-core test machine: the hook is a shell that
/// must start, and the test polls its log.
const TOLERANCE: Duration = Duration::from_millis(300);

fn leading_solo(name: &str) -> (Solo, u32) {
    let mut solo = Solo::new(name);
    solo.write_hook(&format!(
        "echo \"$1 $2 $REGENT_REASON $PPID\" >> {}",
        solo.dir.join("hooks.log").display()
    ));
    solo.start();
    assert!(
        wait_until(Duration::from_secs(10), || solo.leading()
            && solo.hooks_log().iter().any(|l| l.starts_with("promote"))),
        "the solo daemon did not lead: {}",
        solo.log()
    );
    let guard = solo
        .log()
        .lines()
        .find_map(|l| {
            l.split("lease guard started, pid ")
                .nth(1)
                .map(str::to_owned)
        })
        .and_then(|p| p.trim().parse().ok())
        .expect("the daemon names its guard");
    (solo, guard)
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(pid, 0) only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// The demotes after the promote, as (epoch, reason, parent pid).
fn demotes_after_promote(solo: &Solo) -> Vec<(String, String, u32)> {
    solo.hooks_log()
        .iter()
        .skip_while(|l| !l.starts_with("promote"))
        .filter(|l| l.starts_with("demote"))
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (
                w[1].to_string(),
                w[2].to_string(),
                w[3].parse().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn a_stopped_leader_is_fenced_by_its_guard_at_the_lease_end() {
    let (mut solo, guard) = leading_solo("guard-stop");
    let daemon = solo.pid().expect("running");
    let epoch = solo
        .hooks_log()
        .iter()
        .find_map(|l| {
            l.strip_prefix("promote ")
                .map(|r| r.split(' ').next().unwrap_or("").to_string())
        })
        .expect("promote epoch");
    let stopped = Instant::now();
    solo.signal(libc::SIGSTOP);
    assert!(
        wait_until(Duration::from_secs(5), || !demotes_after_promote(&solo)
            .is_empty()),
        "no demote after SIGSTOP: {}",
        solo.log()
    );
    let took = stopped.elapsed();
    eprintln!("demote seen {took:?} after SIGSTOP");
    let demotes = demotes_after_promote(&solo);
    assert_eq!(
        demotes[0],
        (epoch, "lease-expired".to_string(), guard),
        "the guard runs the demote for the led epoch"
    );
    assert!(
        took <= LEASE + MARGIN + TOLERANCE,
        "demote {took:?} after SIGSTOP; lease {LEASE:?} + margin {MARGIN:?}"
    );
    let status = solo
        .wait_exit(Duration::from_secs(5))
        .expect("the daemon dies");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "killed by the guard");
    assert!(
        wait_until(Duration::from_secs(5), || !alive(guard)),
        "the guard exits"
    );
    assert!(!alive(daemon));
    let log = solo.log();
    assert!(log.contains("did not let go"), "{log}");
    assert!(log.contains("fenced epoch"), "{log}");
}

#[test]
fn a_crashed_leader_is_demoted_by_its_guard_at_the_lease_end() {
    let (mut solo, guard) = leading_solo("guard-crash");
    let killed = Instant::now();
    solo.signal(libc::SIGKILL);
    assert!(solo.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        wait_until(Duration::from_secs(5), || !demotes_after_promote(&solo)
            .is_empty()),
        "no demote after the crash: {}",
        solo.log()
    );
    let took = killed.elapsed();
    eprintln!("demote seen {took:?} after SIGKILL");
    let demotes = demotes_after_promote(&solo);
    assert_eq!(demotes.len(), 1, "{demotes:?}");
    assert_eq!(demotes[0].1, "lease-expired");
    assert_eq!(demotes[0].2, guard, "run by the guard");
    assert!(took <= LEASE + MARGIN + TOLERANCE, "{took:?}");
    assert!(
        wait_until(Duration::from_secs(5), || !alive(guard)),
        "the guard exits"
    );
}

#[test]
fn a_graceful_stop_releases_the_guard() {
    let (mut solo, guard) = leading_solo("guard-term");
    let daemon = solo.pid().expect("running");
    solo.signal(libc::SIGTERM);
    assert!(
        solo.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        solo.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || !alive(guard)),
        "the guard exits"
    );
    // Past any lease: the guard must not have demoted a second time.
    std::thread::sleep(LEASE + MARGIN + Duration::from_millis(100));
    let demotes = demotes_after_promote(&solo);
    assert_eq!(demotes.len(), 1, "{demotes:?}");
    assert_eq!(demotes[0].1, "shutdown");
    assert_eq!(demotes[0].2, daemon, "run by the daemon itself");
    assert!(!solo.log().contains("fenced epoch"), "{}", solo.log());
}
