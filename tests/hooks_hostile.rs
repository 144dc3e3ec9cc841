//! Hooks that turn on the daemon running them, through a real `regent run`:
//! one that prints a gibibyte, one that ignores SIGTERM and leaves children
//! behind, one replaced by a non-executable file while the daemon runs.
//! The deadlines hold, the process group dies, memory stays bounded, and
//! every failure is reported. (`src/hooks.rs`'s unit tests cover the same
//! runner piece by piece.)
//!
//! No root needed.

#![allow(clippy::disallowed_methods)]

#[path = "solo/mod.rs"]
mod solo;

use std::time::{Duration, Instant};

use solo::{wait_until, Solo};

const GIB: u64 = 1 << 30;

#[test]
fn a_promote_hook_printing_a_gibibyte_costs_the_daemon_no_memory() {
    let mut solo = Solo::new("hook-gib");
    let log = solo.dir.join("hooks.log");
    // Half as one endless line, half as short lines; then it succeeds.
    solo.write_hook(&format!(
        "if [ \"$1\" = promote ]; then\n\
         head -c {half} /dev/zero | tr '\\0' x\n\
         yes 'a line of hook output' | head -c {half}\n\
         fi\n\
         echo \"$1 $2\" >> {log}",
        half = GIB / 2,
        log = log.display()
    ));
    solo.write_config("timeout_ms = 300000");
    solo.start();
    let began = Instant::now();
    let mut peak = 0;
    let deadline = began + Duration::from_secs(300);
    while !solo.hooks_log().iter().any(|l| l == "promote 1") {
        assert!(
            Instant::now() < deadline,
            "promote never finished\n{}",
            solo.log()
        );
        peak = peak.max(solo.rss_kib().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = began.elapsed();
    let after = solo.rss_kib().expect("the daemon runs");
    let text = solo.log();
    println!(
        "1 GiB of hook output read in {:.1} s; daemon VmRSS at most {peak} KiB during, {after} KiB after",
        took.as_secs_f64()
    );
    // The daemon needs about 4 MiB; holding the output would take 1 GiB.
    assert!(
        peak <= 32 * 1024,
        "the daemon grew to {peak} KiB while the hook printed"
    );
    let discarded = GIB - 64 * 1024; // output_max_bytes, the default, was logged
    assert!(
        text.contains(&format!("{discarded} bytes of output discarded")),
        "the discarded output is not reported\n{}",
        &text[text.len().saturating_sub(3000)..]
    );
    assert!(solo.leading(), "the promote did not succeed");
    assert_eq!(
        solo.metric("regent_hook_failures_total", Some(("hook", "promote"))),
        Some(0.0)
    );
}

#[test]
fn a_promote_hook_that_ignores_sigterm_and_forks_dies_with_its_children_at_the_deadline() {
    let mut solo = Solo::new("hook-stubborn");
    let log = solo.dir.join("hooks.log");
    let pids = solo.dir.join("pids");
    solo.write_hook(&format!(
        "echo \"$1 $2\" >> {log}\n\
         if [ \"$1\" = promote ]; then\n\
         trap '' TERM\n\
         sleep 1000 & echo $! >> {pids}\n\
         (trap '' TERM; sleep 1000) & echo $! >> {pids}\n\
         while :; do sleep 1; done\n\
         fi",
        log = log.display(),
        pids = pids.display()
    ));
    solo.write_config("timeout_ms = 500\nkill_grace_ms = 300");
    solo.start();
    // The promote times out (500 ms + 300 ms grace); the daemon demotes
    // with reason promote-failed and holds off.
    let reported = wait_until(Duration::from_secs(15), || {
        solo.metric("regent_hook_timeouts_total", Some(("hook", "promote")))
            .is_some_and(|n| n >= 1.0)
    });
    assert!(reported, "no promote timeout reported\n{}", solo.log());
    let demoted = wait_until(Duration::from_secs(5), || {
        solo.hooks_log()
            .iter()
            .filter(|l| l.starts_with("demote"))
            .count()
            >= 2
    });
    assert!(
        demoted,
        "no demote after the failed promote: {:?}",
        solo.hooks_log()
    );
    // The log reaches its file through the daemon's logging thread.
    let logged = wait_until(Duration::from_secs(3), || {
        solo.log().contains("promote-failed")
    });
    assert!(logged, "{}", solo.log());
    let children: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(children.len(), 2, "the hook did not start its children");
    let gone = wait_until(Duration::from_secs(5), || {
        // SAFETY: kill(pid, 0) only asks whether the process exists.
        children
            .iter()
            .all(|&pid| unsafe { libc::kill(pid, 0) } != 0 || is_zombie(pid))
    });
    assert!(gone, "the hook's children outlived it: {children:?}");
}

/// A dead process not yet reaped by its parent.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn a_hook_replaced_by_a_non_executable_file_fails_and_is_reported() {
    let mut solo = Solo::new("hook-replaced");
    solo.write_config("refresh_interval_ms = 200");
    solo.start();
    let led = wait_until(Duration::from_secs(10), || {
        solo.hooks_log().iter().any(|l| l == "promote 1")
    });
    assert!(led, "{}", solo.log());
    // Replace it the way a package upgrade or a careless copy would: a new
    // file renamed over the old one, without the execute bit.
    let new = solo.dir.join("hook.new");
    std::fs::write(&new, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::rename(&new, solo.hook()).expect("rename");
    // The next refresh (of the promote hook) cannot run: reported, counted,
    // and the node keeps leading (a refresh is a re-announcement).
    let reported = wait_until(Duration::from_secs(5), || {
        solo.metric("regent_hook_failures_total", Some(("hook", "refresh")))
            .is_some_and(|n| n >= 1.0)
    });
    assert!(
        reported,
        "the failed refresh is not counted\n{}",
        solo.log()
    );
    let said = wait_until(Duration::from_secs(3), || {
        let log = solo.log();
        log.contains("cannot run") && log.contains("ermission denied")
    });
    assert!(said, "the log does not say why\n{}", solo.log());
    assert!(solo.leading());
    // Stopping still works: the demote fails, is reported, and the daemon
    // exits 0 promptly rather than waiting for a hook that cannot run.
    solo.signal(libc::SIGTERM);
    let status = solo.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", solo.log());
    let text = solo.log();
    let demote_failed = text
        .lines()
        .any(|l| l.contains("demote") && l.contains("cannot run"));
    assert!(demote_failed, "the failed demote is not reported\n{text}");
}
