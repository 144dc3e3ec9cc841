//! The runner's tests: real processes under a mio loop driven the way the
//! driver drives it. The policy alone is tested, without processes, in
//! `schedule.rs`.

#![allow(clippy::disallowed_methods)] // Tests stand in for the driver: they read the clock.
use super::*;
use crate::core::{HookOutcome, Reason};
use mio::{Events, Poll};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The longest a test loop turn waits: stands in for the driver's
/// forwarding of SIGCHLD, which the harness simulates every turn.
const TURN: Duration = Duration::from_millis(10);

/// A fresh directory for one test's scripts and logs.
fn test_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("regent-hooks-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Writes an executable `#!/bin/sh` script. The file is written by `cp`
/// in a child process: if this (multi-threaded) test process held it open
/// for writing, a fork in another test could inherit that descriptor and
/// make exec fail with ETXTBSY.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let source = dir.join(format!("{name}.txt"));
    let path = dir.join(name);
    std::fs::write(&source, format!("#!/bin/sh\n{body}\n")).expect("write script source");
    let status = Command::new("cp")
        .arg(&source)
        .arg(&path)
        .status()
        .expect("run cp");
    assert!(status.success());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn config() -> HookConfig {
    let mut cfg = HookConfig::new(NodeId(7), "test");
    cfg.timeout = Duration::from_secs(5);
    cfg.kill_grace = Duration::from_millis(200);
    cfg
}

fn req(kind: HookKind, epoch: u64) -> HookRequest {
    let leader = (kind == HookKind::Promote).then_some(NodeId(7));
    let reason = if kind == HookKind::Promote {
        Reason::Elected
    } else {
        Reason::LeaseExpired
    };
    HookRequest {
        kind,
        epoch: Epoch(epoch),
        leader,
        reason,
    }
}

fn done(kind: HookKind, epoch: u64, outcome: HookOutcome) -> HookDone {
    HookDone {
        kind,
        epoch: Epoch(epoch),
        outcome,
    }
}

/// A mio loop driving a runner the way the driver does.
struct Harness {
    poll: Poll,
    events: Events,
    runner: HookRunner,
    /// Call `on_sigchld` every turn (the driver's forwarding); off to
    /// test that the runner does not depend on it.
    sigchld: bool,
    /// Grant every promote a lease, as a core that keeps its lease
    /// would; off to test the lease gate.
    lease: bool,
    done: Vec<HookDone>,
    health: Vec<bool>,
}

impl Harness {
    fn new(cfg: HookConfig) -> Harness {
        let poll = Poll::new().expect("mio poll");
        let runner = HookRunner::new(cfg, 100, Instant::now());
        Harness {
            poll,
            events: Events::with_capacity(64),
            runner,
            sigchld: true,
            lease: true,
            done: vec![],
            health: vec![],
        }
    }

    fn request(&mut self, r: HookRequest) {
        self.runner.request(r, self.poll.registry(), Instant::now());
        self.grant();
    }

    /// With `lease` on, a long lease for the first waiting promote, or
    /// else for the epoch being led.
    fn grant(&mut self) {
        if !self.lease {
            return;
        }
        let epoch = self
            .runner
            .schedule
            .waiting_promote()
            .or(self.runner.schedule.leading());
        if let Some(epoch) = epoch {
            let now = Instant::now();
            let until = now + Duration::from_secs(3600);
            self.runner
                .set_authority(Some((epoch, until)), self.poll.registry(), now);
        }
    }

    /// One turn of the event loop.
    fn turn(&mut self) {
        self.grant();
        let now = Instant::now();
        let wait = self
            .runner
            .next_timeout()
            .map_or(TURN, |t| t.saturating_duration_since(now))
            .min(TURN);
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            // The driver's signal handlers interrupt the wait; so may
            // a stop and continue of the test process.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => panic!("poll: {e}"),
        }
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        let now = Instant::now();
        for token in tokens {
            assert!(self.runner.owns_token(token), "foreign token {token:?}");
            self.runner.on_readable(token, self.poll.registry(), now);
        }
        if self.sigchld {
            self.runner.on_sigchld(self.poll.registry(), now);
        }
        if self.runner.next_timeout().is_some_and(|t| t <= now) {
            self.runner.on_timeout(self.poll.registry(), now);
        }
        while let Some(d) = self.runner.poll_done() {
            self.done.push(d);
        }
        while let Some(h) = self.runner.poll_health() {
            self.health.push(h);
        }
    }

    /// Turns until `cond` holds; panics after `limit`.
    fn until(&mut self, limit: Duration, what: &str, mut cond: impl FnMut(&Harness) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            self.turn();
        }
    }

    /// Turns for a while.
    fn run_for(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.turn();
        }
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether a process runs (a zombie waiting for init to reap it does not).
fn alive(pid: libc::pid_t) -> bool {
    // No signal: kill(2) only checks that the process exists.
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

fn wait_dead(pid: libc::pid_t) {
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "process {pid} outlived its hook"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_pid(path: &Path) -> libc::pid_t {
    let start = Instant::now();
    loop {
        if let Ok(pid) = std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .parse()
        {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no pid in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A hook that logs `start KIND EPOCH`, sleeps, logs `end KIND EPOCH`.
fn logging_hook(dir: &Path, sleep: &str) -> (PathBuf, PathBuf) {
    let log = dir.join("log");
    let body = format!(
        "echo \"start $1 $2\" >> {log}\nsleep {sleep}\necho \"end $1 $2\" >> {log}",
        log = log.display()
    );
    (script(dir, "hook", &body), log)
}

/// The log shows runs one after another: each start followed by its end.
fn assert_sequential(lines: &[String]) -> Vec<String> {
    assert_eq!(lines.len() % 2, 0, "{lines:?}");
    lines
        .chunks(2)
        .map(|pair| {
            let run = pair[0].strip_prefix("start ").expect("a start line");
            assert_eq!(pair[1], format!("end {run}"), "overlapping runs: {lines:?}");
            run.to_string()
        })
        .collect()
}

#[test]
fn runs_are_sequential_and_reported_in_request_order() {
    let dir = test_dir("order");
    let (hook, log) = logging_hook(&dir, "0.05");
    let mut cfg = config();
    cfg.promote = Some(hook.clone());
    cfg.demote = Some(hook);
    let mut h = Harness::new(cfg);
    // Distinct epochs: neither collapse nor kill applies, all four run.
    h.request(req(HookKind::Demote, 1));
    h.request(req(HookKind::Promote, 2));
    h.request(req(HookKind::Demote, 3));
    h.request(req(HookKind::Promote, 4));
    assert!(!h.runner.is_idle());
    h.until(Duration::from_secs(5), "four reports", |h| {
        h.done.len() == 4
    });
    let ok = HookOutcome::Ok;
    assert_eq!(
        h.done,
        [
            done(HookKind::Demote, 1, ok),
            done(HookKind::Promote, 2, ok),
            done(HookKind::Demote, 3, ok),
            done(HookKind::Promote, 4, ok)
        ]
    );
    let runs = assert_sequential(&read_lines(&log));
    assert_eq!(runs, ["demote 1", "promote 2", "demote 3", "promote 4"]);
    assert!(h.runner.is_idle());
    assert_eq!(h.runner.stats().promote.runs, 2);
    assert_eq!(h.runner.stats().demote.runs, 2);
    assert!(h
        .runner
        .stats()
        .promote
        .last_duration
        .is_some_and(|d| d >= Duration::from_millis(50)));
}

#[test]
fn promote_demote_pairs_in_quick_succession() {
    // The literal sequence promote 1, demote 1, promote 2, demote 2: the
    // demote kills the running promote 1, and the queued pair of epoch 2
    // collapses. Reports still come one per request, in order.
    let dir = test_dir("pairs");
    let (hook, log) = logging_hook(&dir, "0.05");
    let mut cfg = config();
    cfg.promote = Some(hook.clone());
    cfg.demote = Some(hook);
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Promote, 1));
    h.until(Duration::from_secs(2), "promote 1 to start", |_| {
        !read_lines(&log).is_empty()
    });
    h.request(req(HookKind::Demote, 1));
    h.request(req(HookKind::Promote, 2));
    h.request(req(HookKind::Demote, 2));
    h.until(Duration::from_secs(5), "four reports", |h| {
        h.done.len() == 4
    });
    assert_eq!(
        h.done,
        [
            done(HookKind::Promote, 1, HookOutcome::Failed),
            done(HookKind::Demote, 1, HookOutcome::Ok),
            done(HookKind::Promote, 2, HookOutcome::Skipped),
            done(HookKind::Demote, 2, HookOutcome::Skipped)
        ]
    );
    assert_eq!(
        read_lines(&log),
        ["start promote 1", "start demote 1", "end demote 1"]
    );
}

#[test]
fn queued_promote_and_demote_of_one_epoch_collapse() {
    let dir = test_dir("collapse");
    let (hook, log) = logging_hook(&dir, "0.3");
    let mut cfg = config();
    cfg.promote = Some(hook.clone());
    cfg.demote = Some(hook);
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Demote, 0));
    h.request(req(HookKind::Promote, 1));
    h.request(req(HookKind::Demote, 1));
    h.until(Duration::from_secs(5), "three reports", |h| {
        h.done.len() == 3
    });
    assert_eq!(
        h.done,
        [
            done(HookKind::Demote, 0, HookOutcome::Ok),
            done(HookKind::Promote, 1, HookOutcome::Skipped),
            done(HookKind::Demote, 1, HookOutcome::Skipped)
        ]
    );
    h.run_for(Duration::from_millis(100));
    assert_eq!(read_lines(&log), ["start demote 0", "end demote 0"]);
    assert_eq!(h.runner.stats().promote.skipped, 1);
    assert_eq!(h.runner.stats().demote.skipped, 1);
    assert_eq!(h.runner.stats().promote.runs, 0);
}

#[test]
fn deadline_terms_then_kills_the_group() {
    let dir = test_dir("deadline");
    let pid_file = dir.join("sleep.pid");
    let body = format!(
        "trap '' TERM\nsleep 1000 &\necho $! > {}\nwait\nwait",
        pid_file.display()
    );
    let mut cfg = config();
    cfg.promote = Some(script(&dir, "stubborn", &body));
    cfg.timeout = Duration::from_millis(200);
    cfg.kill_grace = Duration::from_millis(200);
    let mut h = Harness::new(cfg);
    let start = Instant::now();
    h.request(req(HookKind::Promote, 1));
    h.until(Duration::from_secs(3), "the report", |h| !h.done.is_empty());
    let elapsed = start.elapsed();
    assert_eq!(h.done, [done(HookKind::Promote, 1, HookOutcome::TimedOut)]);
    assert!(
        elapsed >= Duration::from_millis(400),
        "killed after {elapsed:?}, before timeout + grace"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "killed only after {elapsed:?}"
    );
    wait_dead(read_pid(&pid_file));
    assert_eq!(h.runner.stats().promote.timeouts, 1);
    assert_eq!(h.runner.stats().promote.failures, 0);
}

#[test]
fn background_children_die_with_their_hook() {
    let dir = test_dir("orphans");
    let pid_file = dir.join("sleep.pid");
    let body = format!(
        "sleep 1000 &\necho $! > {}\necho bye\nexit 0",
        pid_file.display()
    );
    let mut cfg = config();
    cfg.demote = Some(script(&dir, "forker", &body));
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Demote, 3));
    // The sleep holds the output pipe open: the run must end anyway.
    h.until(Duration::from_secs(2), "the report", |h| !h.done.is_empty());
    assert_eq!(h.done, [done(HookKind::Demote, 3, HookOutcome::Ok)]);
    wait_dead(read_pid(&pid_file));
    assert!(h.runner.is_idle());
}

#[test]
fn environment_and_argv_are_exactly_as_documented() {
    // The runner must not pass this on; set it as the daemon's would be.
    std::env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");
    let dir = test_dir("env");
    // /proc/$$/environ is the environment exactly as exec'd, before the
    // shell adds variables of its own.
    let body = format!(
        "tr '\\0' '\\n' < /proc/$$/environ | sort > {d}/env.$1\nprintf '%s\\n' \"$0\" \"$@\" > {d}/argv.$1",
        d = dir.display()
    );
    let hook = script(&dir, "hook", &body);
    let mut cfg = config();
    cfg.promote = Some(hook.clone());
    cfg.demote = Some(hook.clone());
    cfg.notify = Some(hook.clone());
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Promote, 5));
    h.until(Duration::from_secs(3), "promote", |h| h.done.len() == 1);
    h.request(HookRequest {
        kind: HookKind::Demote,
        epoch: Epoch(5),
        leader: None,
        reason: Reason::StepDown,
    });
    h.until(Duration::from_secs(3), "demote", |h| h.done.len() == 2);
    let t = Transition {
        lost: None,
        role: Role::Candidate,
        epoch: Epoch(6),
        leader: Some(NodeId(2)),
        reason: Reason::Claim,
    };
    h.runner.notify(&t, h.poll.registry(), Instant::now());
    h.until(Duration::from_secs(3), "notify to finish", |h| {
        h.runner.is_idle()
    });

    let path = format!("PATH={HOOK_PATH}");
    let env = |role: &str, leader: &str, reason: &str, epoch: u32| {
        let mut v = vec![
            path.clone(),
            "REGENT_CLUSTER=test".to_string(),
            format!("REGENT_EPOCH={epoch}"),
            format!("REGENT_LEADER={leader}"),
            "REGENT_NODE=7".to_string(),
            format!("REGENT_REASON={reason}"),
            format!("REGENT_ROLE={role}"),
        ];
        v.sort();
        v
    };
    assert_eq!(
        read_lines(&dir.join("env.promote")),
        env("leader", "7", "elected", 5)
    );
    assert_eq!(
        read_lines(&dir.join("env.demote")),
        env("follower", "", "step-down", 5)
    );
    assert_eq!(
        read_lines(&dir.join("env.candidate")),
        env("candidate", "2", "claim", 6)
    );
    let hook = hook.display().to_string();
    assert_eq!(
        read_lines(&dir.join("argv.promote")),
        [hook.as_str(), "promote", "5"]
    );
    assert_eq!(
        read_lines(&dir.join("argv.demote")),
        [hook.as_str(), "demote", "5"]
    );
    assert_eq!(
        read_lines(&dir.join("argv.candidate")),
        [hook.as_str(), "candidate", "6"]
    );
}

#[test]
fn output_beyond_the_cap_is_counted_and_discarded() {
    let dir = test_dir("output");
    let mut cfg = config();
    cfg.promote = Some(script(
        &dir,
        "chatty",
        "yes 0123456789abcdef | head -c 10485760",
    ));
    // One line of 100 000 bytes: split into records of LINE_MAX_BYTES.
    cfg.demote = Some(script(
        &dir,
        "long",
        "head -c 100000 /dev/zero | tr '\\0' x >&2",
    ));
    cfg.output_max_bytes = 64 * 1024;
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Promote, 1));
    h.until(Duration::from_secs(8), "the report", |h| !h.done.is_empty());
    assert_eq!(h.done, [done(HookKind::Promote, 1, HookOutcome::Ok)]);
    assert_eq!(h.runner.stats().output_dropped_bytes, 10_485_760 - 65_536);
    assert!(h.runner.line_high_water <= LINE_MAX_BYTES);
    h.request(req(HookKind::Demote, 1));
    h.until(Duration::from_secs(3), "the report", |h| h.done.len() == 2);
    assert_eq!(
        h.runner.stats().output_dropped_bytes,
        10_485_760 - 65_536 + 100_000 - 65_536
    );
    assert_eq!(h.runner.line_high_water, LINE_MAX_BYTES);
}

#[test]
fn missing_or_non_executable_hooks_fail() {
    let dir = test_dir("missing");
    let not_executable = script(&dir, "plain", "exit 0");
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let mut cfg = config();
    cfg.promote = Some(dir.join("no-such-hook"));
    cfg.demote = Some(not_executable);
    cfg.notify = Some(dir.join("no-such-notify"));
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Promote, 1));
    h.request(req(HookKind::Demote, 1));
    let t = Transition {
        lost: None,
        role: Role::Leader,
        epoch: Epoch(1),
        leader: Some(NodeId(7)),
        reason: Reason::Startup,
    };
    h.runner.notify(&t, h.poll.registry(), Instant::now());
    h.turn();
    assert_eq!(
        h.done,
        [
            done(HookKind::Promote, 1, HookOutcome::Failed),
            done(HookKind::Demote, 1, HookOutcome::Failed)
        ]
    );
    let stats = h.runner.stats();
    assert_eq!((stats.promote.runs, stats.promote.failures), (1, 1));
    assert_eq!((stats.demote.runs, stats.demote.failures), (1, 1));
    assert_eq!((stats.notify.runs, stats.notify.failures), (1, 1));
    assert!(h.runner.is_idle());
}

#[test]
fn hooks_not_configured_succeed_at_once() {
    let mut h = Harness::new(config());
    h.request(req(HookKind::Demote, 0));
    h.request(req(HookKind::Promote, 1));
    assert_eq!(
        h.runner.poll_done(),
        Some(done(HookKind::Demote, 0, HookOutcome::Ok))
    );
    assert_eq!(
        h.runner.poll_done(),
        Some(done(HookKind::Promote, 1, HookOutcome::Ok))
    );
    assert!(h.runner.is_idle());
    assert_eq!(h.runner.stats().promote.runs, 0);
}

#[test]
fn a_promote_starts_only_inside_its_lease() {
    let dir = test_dir("lease");
    let (hook, log) = logging_hook(&dir, "0");
    let mut cfg = config();
    cfg.promote = Some(hook.clone());
    cfg.demote = Some(hook);
    let mut h = Harness::new(cfg);
    h.lease = false;

    // No lease at all, then a lease that has already ended, then a lease
    // of another epoch: the promote is held every time.
    h.request(req(HookKind::Promote, 5));
    h.run_for(Duration::from_millis(100));
    let now = Instant::now();
    h.runner
        .set_authority(Some((Epoch(5), now)), h.poll.registry(), now);
    h.run_for(Duration::from_millis(100));
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    h.runner
        .set_authority(Some((Epoch(4), later)), h.poll.registry(), now);
    h.run_for(Duration::from_millis(100));
    assert!(
        read_lines(&log).is_empty(),
        "a promote ran without its lease"
    );
    assert!(h.done.is_empty());
    assert_eq!(h.runner.stats().promote.held, 1);

    // Its lease is renewed: it starts at once.
    h.runner
        .set_authority(Some((Epoch(5), later)), h.poll.registry(), Instant::now());
    h.until(Duration::from_secs(5), "promote 5 done", |h| {
        h.done.len() == 1
    });
    assert_eq!(h.done, [done(HookKind::Promote, 5, HookOutcome::Ok)]);

    // The lease ends before the next promote can start, and the core
    // demotes: neither runs.
    h.runner
        .set_authority(None, h.poll.registry(), Instant::now());
    h.request(req(HookKind::Demote, 5));
    h.request(req(HookKind::Promote, 6));
    h.until(Duration::from_secs(5), "demote 5 done", |h| {
        h.done.len() == 2
    });
    h.run_for(Duration::from_millis(100));
    h.request(req(HookKind::Demote, 6));
    h.until(Duration::from_secs(5), "four reports", |h| {
        h.done.len() == 4
    });
    assert_eq!(
        h.done[2..],
        [
            done(HookKind::Promote, 6, HookOutcome::Skipped),
            done(HookKind::Demote, 6, HookOutcome::Skipped)
        ]
    );
    assert_eq!(
        read_lines(&log),
        [
            "start promote 5",
            "end promote 5",
            "start demote 5",
            "end demote 5"
        ]
    );
    assert_eq!(h.runner.stats().promote.held, 2);
}

#[test]
fn demote_kills_a_running_promote_at_once() {
    let dir = test_dir("kill");
    let started = dir.join("started");
    let promote = script(
        &dir,
        "promote",
        &format!("trap '' TERM\ntouch {}\nsleep 1000", started.display()),
    );
    let (demote, log) = logging_hook(&dir, "0");
    let mut cfg = config();
    cfg.promote = Some(promote);
    cfg.demote = Some(demote);
    cfg.timeout = Duration::from_secs(30);
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Promote, 4));
    h.until(Duration::from_secs(2), "promote to start", |_| {
        started.exists()
    });
    let start = Instant::now();
    h.request(req(HookKind::Demote, 4));
    h.until(Duration::from_secs(2), "two reports", |h| h.done.len() == 2);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "demote waited {:?}",
        start.elapsed()
    );
    assert_eq!(
        h.done,
        [
            done(HookKind::Promote, 4, HookOutcome::Failed),
            done(HookKind::Demote, 4, HookOutcome::Ok)
        ]
    );
    assert_eq!(read_lines(&log), ["start demote 4", "end demote 4"]);
    let stats = h.runner.stats();
    assert_eq!(
        (
            stats.promote.cancelled,
            stats.promote.failures,
            stats.promote.timeouts
        ),
        (1, 0, 0)
    );
}

#[test]
fn a_demote_outlives_a_sigterm_to_its_process_group() {
    // What `systemctl stop` does to a unit's whole control group, a demote
    // started while it does so included.
    let dir = test_dir("sigterm");
    let demote = script(&dir, "demote", "kill -TERM 0\nsleep 0.2\necho released");
    let mut cfg = config();
    cfg.demote = Some(demote);
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Demote, 3));
    h.until(Duration::from_secs(5), "the report", |h| h.done.len() == 1);
    assert_eq!(h.done, [done(HookKind::Demote, 3, HookOutcome::Ok)]);
}

#[test]
fn refresh_runs_while_leading_one_at_a_time() {
    let dir = test_dir("refresh");
    let log = dir.join("log");
    // Refreshes take longer than their interval: those due while one runs
    // are skipped, never overlapped.
    let body = format!(
        "echo \"start $1 $2 $REGENT_ROLE $REGENT_REASON\" >> {l}\n[ \"$1\" = refresh ] && sleep 0.15\necho \"end $1 $2 $REGENT_ROLE $REGENT_REASON\" >> {l}",
        l = log.display()
    );
    let hook = script(&dir, "hook", &body);
    let mut cfg = config();
    cfg.promote = Some(hook.clone());
    cfg.demote = Some(hook);
    cfg.refresh_interval = Some(Duration::from_millis(100));
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Promote, 9));
    h.until(Duration::from_secs(2), "promote", |h| !h.done.is_empty());
    h.run_for(Duration::from_millis(900));
    let refreshes = h.runner.stats().refresh.runs;
    assert!(refreshes >= 2, "{refreshes} refreshes");
    assert!(
        h.runner.stats().refresh.skipped >= 1,
        "{:?}",
        h.runner.stats().refresh
    );
    h.request(req(HookKind::Demote, 9));
    h.until(Duration::from_secs(2), "demote", |h| h.done.len() == 2);
    h.run_for(Duration::from_millis(300));
    assert_eq!(
        h.runner.stats().refresh.runs,
        refreshes,
        "refresh after demote"
    );
    assert_eq!(
        h.done,
        [
            done(HookKind::Promote, 9, HookOutcome::Ok),
            done(HookKind::Demote, 9, HookOutcome::Ok)
        ]
    );

    let mut lines = read_lines(&log);
    // A refresh running when the demote came was killed mid-run.
    if let Some(i) = lines.iter().position(|l| l.starts_with("start demote")) {
        if i % 2 == 1 {
            assert!(lines[i - 1].starts_with("start refresh"), "{lines:?}");
            lines.remove(i - 1);
            assert_eq!(h.runner.stats().refresh.cancelled, 1);
        }
    }
    let runs = assert_sequential(&lines);
    assert_eq!(
        runs.first().map(String::as_str),
        Some("promote 9 leader elected")
    );
    assert_eq!(
        runs.last().map(String::as_str),
        Some("demote 9 follower lease-expired")
    );
    let middle = &runs[1..runs.len() - 1];
    assert!(
        middle.iter().all(|r| r == "refresh 9 leader refresh"),
        "{runs:?}"
    );
}

#[test]
fn health_check_falls_and_rises() {
    let dir = test_dir("health");
    let flag = dir.join("ok");
    let mut cfg = config();
    cfg.check = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("test -e {}", flag.display()),
    ]);
    cfg.check_interval = Duration::from_millis(30);
    cfg.check_fall = 2;
    cfg.check_rise = 3;
    let mut h = Harness::new(cfg);
    assert!(!h.runner.healthy());
    h.run_for(Duration::from_millis(150));
    assert_eq!(h.health, [false], "unhealthy until the first pass");
    let runs = |h: &Harness| h.runner.stats().check.runs;

    std::fs::write(&flag, "").expect("create flag");
    let before = runs(&h);
    h.until(Duration::from_secs(2), "healthy", |h| h.health.len() == 2);
    assert_eq!(h.health, [false, true], "one pass suffices at start");
    assert!(runs(&h) - before <= 2);

    std::fs::remove_file(&flag).expect("remove flag");
    let before = runs(&h);
    h.until(Duration::from_secs(2), "unhealthy", |h| h.health.len() == 3);
    assert_eq!(h.health, [false, true, false]);
    // A check already running when the flag went may fail as well, so
    // only check_fall - 1 new runs are certain here; the exact streak
    // rule is tested in `health_verdict_follows_fall_and_rise`.
    assert!(runs(&h) - before >= 1);

    std::fs::write(&flag, "").expect("create flag");
    let before = runs(&h);
    h.until(Duration::from_secs(2), "healthy again", |h| {
        h.health.len() == 4
    });
    assert_eq!(h.health, [false, true, false, true]);
    assert!(
        runs(&h) - before >= 2,
        "rose after fewer than check_rise passes"
    );
    assert!(h.runner.healthy());
}

#[test]
fn health_check_that_hangs_times_out_and_fails() {
    let mut cfg = config();
    cfg.check = Some(vec!["sleep".into(), "1000".into()]);
    cfg.check_interval = Duration::from_millis(20);
    cfg.check_timeout = Duration::from_millis(50);
    cfg.kill_grace = Duration::from_millis(50);
    let mut h = Harness::new(cfg);
    h.until(Duration::from_secs(2), "two timeouts", |h| {
        h.runner.stats().check.timeouts >= 2
    });
    assert_eq!(h.health, [false]);
    // Removing the check on reload makes the node healthy.
    let cfg = config();
    h.runner.set_config(cfg);
    h.until(Duration::from_secs(2), "healthy", |h| h.health.len() == 2);
    assert_eq!(h.health, [false, true]);
}

#[test]
fn notify_runs_serially_after_the_transition_hooks_with_a_bounded_queue() {
    let dir = test_dir("notify");
    // One script for all: it logs `start ARG1 ARG2`, sleeps, logs `end ...`.
    let (hook, log) = logging_hook(&dir, "0.05");
    let mut cfg = config();
    cfg.notify = Some(hook.clone());
    cfg.promote = Some(hook);
    let mut h = Harness::new(cfg);
    for epoch in 1..=10 {
        let t = Transition {
            lost: None,
            role: Role::Follower,
            epoch: Epoch(epoch),
            leader: None,
            reason: Reason::Startup,
        };
        h.runner.notify(&t, h.poll.registry(), Instant::now());
    }
    // The first notify started at once; the promote kills it and runs
    // before the notifications that wait.
    h.request(req(HookKind::Promote, 11));
    h.until(Duration::from_secs(4), "idle", |h| h.runner.is_idle());
    let mut lines = read_lines(&log);
    if lines.first().map(String::as_str) == Some("start follower 1") {
        lines.remove(0);
    }
    let runs = assert_sequential(&lines);
    // Of the nine that waited, the four newest stay.
    assert_eq!(
        runs,
        [
            "promote 11",
            "follower 7",
            "follower 8",
            "follower 9",
            "follower 10"
        ]
    );
    assert_eq!(h.done, [done(HookKind::Promote, 11, HookOutcome::Ok)]);
    let stats = h.runner.stats();
    assert_eq!(stats.notify.skipped, 5);
    assert_eq!(stats.notify.runs, 5);
    assert_eq!(stats.notify.cancelled, 1);
}

#[test]
fn exits_are_noticed_without_sigchld() {
    let dir = test_dir("nosigchld");
    let mut cfg = config();
    // The hook closes its output first: the pipes' end comes well before
    // the exit, so only the child poll tick can notice the exit.
    cfg.demote = Some(script(&dir, "quick", "exec >&- 2>&-\nsleep 0.1\nexit 3"));
    let mut h = Harness::new(cfg);
    h.sigchld = false;
    h.request(req(HookKind::Demote, 2));
    h.until(Duration::from_secs(2), "the report", |h| !h.done.is_empty());
    assert_eq!(h.done, [done(HookKind::Demote, 2, HookOutcome::Failed)]);
}

#[test]
fn shutdown_kills_and_reports_everything() {
    let dir = test_dir("shutdown");
    let pid_file = dir.join("pid");
    let mut cfg = config();
    cfg.demote = Some(script(
        &dir,
        "slow",
        &format!("echo $$ > {}\nexec sleep 1000", pid_file.display()),
    ));
    let mut h = Harness::new(cfg);
    h.request(req(HookKind::Demote, 1));
    h.request(req(HookKind::Promote, 2));
    let pid = read_pid(&pid_file);
    h.runner.shutdown();
    assert!(!alive(pid));
    h.request(req(HookKind::Demote, 2));
    h.turn();
    assert_eq!(
        h.done,
        [
            done(HookKind::Demote, 1, HookOutcome::Failed),
            done(HookKind::Promote, 2, HookOutcome::Skipped),
            done(HookKind::Demote, 2, HookOutcome::Skipped)
        ]
    );
    assert_eq!(h.runner.next_timeout(), None);
}
