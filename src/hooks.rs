//! Running the operator's hooks: promote, demote and refresh one at a time in
//! request order; the notify hook and the health check each on a lane of
//! their own. Every run has a deadline, its own process group and its output
//! sent to the log line by line.
//!
//! The driver owns the event loop and the clock. It hands this module the
//! core's `Effect::RunHook` requests, forwards `SIGCHLD`, readiness of the
//! tokens this module registered and the passage of time, and polls
//! [`HookRunner::poll_done`] for the `Input::HookDone` reports the core
//! expects, one per request, in request order.
//!
//! Architecture Invariant: nothing here blocks the event loop or reads the
//! clock. Processes are started with fork/exec (bounded), reaped with
//! `WNOHANG` only, and their output is read from non-blocking pipes
//! registered with the driver's `mio::Registry`. Every entry point takes
//! `now`.
//!
//! Architecture Invariant: nothing a hook starts outlives it. Each run is the
//! leader of a new process group; when its main process exits, or when its
//! deadline passes, the whole group is killed. The group is signalled only
//! while its leader is an unreaped zombie or alive, so the group id cannot
//! have been reused. (A hook that deliberately leaves its group with
//! `setsid` escapes this; only a cgroup could hold it.)
//!
//! Architecture Invariant: a promote or refresh starts only inside the lease
//! of its epoch, as the driver last reported it with `set_authority` and a
//! fresh `now`. A promote whose lease ended before the main lane was free
//! (a slow fsync, a slow demote before it) waits: the core either renews
//! the lease and the promote starts, or demotes and both are skipped.
//!
//! Architecture Invariant: no hook sees the daemon's environment. Each gets
//! `PATH` and the `REGENT_*` variables, nothing else (no `NOTIFY_SOCKET`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::core::{Epoch, HookDone, HookKind, HookOutcome, HookRequest, NodeId, Role, Transition};

/// The only `PATH` a hook sees.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The longest line of hook output logged as one record; longer lines are
/// split into records of this many bytes.
pub const LINE_MAX_BYTES: usize = 4096;

/// How many notify runs may wait behind a running one; when more arrive the
/// oldest waiting one is dropped (and counted), so the last one always runs.
pub const NOTIFY_QUEUE_MAX: usize = 4;

/// How many consecutive mio tokens a runner uses, from its `token_base` on.
pub const TOKENS: usize = LANES * 2;

/// How often running children are polled for exit when no `SIGCHLD` comes:
/// the driver forwards the signal, but a lost or coalesced one must not leave
/// a finished hook unnoticed until its deadline.
const CHILD_POLL: Duration = Duration::from_millis(100);

/// Bytes read from one pipe per readiness event or step before yielding to
/// the event loop; a hook that writes without pause must not starve it.
const READ_BUDGET_BYTES: usize = 256 * 1024;

/// Size of the scratch buffer pipes are read into.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The shortest refresh or check interval honoured: a zero from a bad
/// configuration must not spin the event loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Read budgets spent draining a finished run's pipe before it is closed.
const FINISH_READS: usize = 4;

/// How long `shutdown` waits, in total, for killed hooks to be reaped.
const SHUTDOWN_REAP_TRIES: u32 = 100;
const SHUTDOWN_REAP_PAUSE: Duration = Duration::from_millis(10);

/// Lane of promote, demote and refresh: strictly one at a time.
const MAIN: usize = 0;
/// Lane of the notify hook.
const NOTIFY: usize = 1;
/// Lane of the health check.
const CHECK: usize = 2;
const LANES: usize = 3;

/// What the runner needs to know: the hooks, their deadlines and this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// Run as `PROMOTE promote EPOCH`, and `PROMOTE refresh EPOCH` while leading.
    pub promote: Option<PathBuf>,
    /// Run as `DEMOTE demote EPOCH`.
    pub demote: Option<PathBuf>,
    /// Run as `NOTIFY ROLE EPOCH` after every transition, on its own lane.
    pub notify: Option<PathBuf>,
    /// The health check's argv; exit status 0 means healthy.
    pub check: Option<Vec<String>>,
    /// Deadline of promote, demote, refresh and notify runs; then SIGTERM.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL to a late run's process group.
    pub kill_grace: Duration,
    /// Interval of `refresh` runs while leading; `None` disables them.
    pub refresh_interval: Option<Duration>,
    /// Output bytes logged per run; the rest is read, counted and discarded.
    pub output_max_bytes: usize,
    /// Time between the starts of two health checks.
    pub check_interval: Duration,
    /// Deadline of one health check; then SIGTERM, and SIGKILL after `kill_grace`.
    pub check_timeout: Duration,
    /// Consecutive failed checks that make a healthy node unhealthy (at least 1).
    pub check_fall: u32,
    /// Consecutive passed checks that make an unhealthy node healthy (at least 1).
    pub check_rise: u32,
    /// This node, for `REGENT_NODE` and for `REGENT_LEADER` in refresh runs.
    pub node: NodeId,
    /// The cluster name, for `REGENT_CLUSTER`.
    pub cluster: String,
}

impl HookConfig {
    /// A configuration with no hooks, no check and the default deadlines:
    /// timeout 10 s, kill grace 2 s, no refresh, 64 KiB of output per run,
    /// a check every 2 s with a 2 s deadline, fall 3, rise 2.
    pub fn new(node: NodeId, cluster: impl Into<String>) -> HookConfig {
        HookConfig {
            promote: None,
            demote: None,
            notify: None,
            check: None,
            timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            refresh_interval: None,
            output_max_bytes: 64 * 1024,
            check_interval: Duration::from_secs(2),
            check_timeout: Duration::from_secs(2),
            check_fall: 3,
            check_rise: 2,
            node,
            cluster: cluster.into(),
        }
    }

    /// The health check's argv, if one is configured and not empty.
    fn check_argv(&self) -> Option<&[String]> {
        self.check.as_deref().filter(|argv| !argv.is_empty())
    }
}

/// Counters of one kind of run, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Runs started, or attempted: a hook that could not be executed counts.
    pub runs: u64,
    /// Runs that exited non-zero, died of a signal or could not be executed.
    pub failures: u64,
    /// Runs killed at their deadline (not also counted as failures).
    pub timeouts: u64,
    /// Runs that never started: collapsed promote/demote pairs, refreshes
    /// due while another hook ran, notifies dropped from a full queue.
    pub skipped: u64,
    /// Runs killed because a later request superseded them: a promote killed
    /// by a demote, a refresh killed by any request (not failures either).
    pub cancelled: u64,
    /// Promotes held back because no lease covered them when the main lane
    /// was free; each then started late or was skipped.
    pub held: u64,
    /// Wall time of the last finished run.
    pub last_duration: Option<Duration>,
}

/// Counters of the runner, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    /// Promote runs.
    pub promote: KindStats,
    /// Demote runs.
    pub demote: KindStats,
    /// Refresh runs (never reported to the core).
    pub refresh: KindStats,
    /// Notify runs.
    pub notify: KindStats,
    /// Health check runs; a timed-out check counts as a timeout.
    pub check: KindStats,
    /// Output bytes read beyond `output_max_bytes` and discarded, all kinds.
    pub output_dropped_bytes: u64,
}

/// Runs hooks without blocking the event loop. See the module docs.
///
/// The driver's duties, after any call: register nothing itself for the
/// tokens [`HookRunner::owns_token`] claims, route their events to
/// [`HookRunner::on_readable`], forward `SIGCHLD` to
/// [`HookRunner::on_sigchld`], wake at [`HookRunner::next_timeout`] (an
/// instant that may already have passed) and call
/// [`HookRunner::on_timeout`], and drain [`HookRunner::poll_done`] and
/// [`HookRunner::poll_health`].
#[derive(Debug)]
pub struct HookRunner {
    cfg: HookConfig,
    token_base: usize,
    /// The running process of each lane.
    lanes: [Option<Run>; LANES],
    /// Promote and demote requests not yet started, in request order.
    queue: VecDeque<Queued>,
    /// Transitions waiting for the notify lane.
    notify_queue: VecDeque<Transition>,
    /// Reports for the core, in request order.
    done: VecDeque<HookDone>,
    /// The epoch this node leads, as far as hooks know: set when a promote
    /// succeeds with nothing queued behind it, cleared by any request.
    leading: Option<Epoch>,
    /// The epoch this node leads and the instant its lease ends, as the
    /// driver last read them from the core. A promote or refresh starts
    /// only inside this lease.
    authority: Option<(Epoch, Instant)>,
    /// The epoch of the promote last logged as held for want of a lease.
    held: Option<Epoch>,
    next_refresh: Option<Instant>,
    next_check: Option<Instant>,
    health: Health,
    health_changes: VecDeque<bool>,
    /// The `now` of the latest call; the base of the child poll tick.
    last_step: Instant,
    /// A new configuration waits to be applied to the schedules.
    reconfigured: bool,
    shut_down: bool,
    stats: HookStats,
    /// Pipes are read into this, so no per-read allocation.
    scratch: Box<[u8]>,
    /// The most bytes any line buffer ever held (it never exceeds
    /// `LINE_MAX_BYTES`); tests check it.
    line_high_water: usize,
}

/// A promote or demote request waiting for the main lane.
#[derive(Debug)]
struct Queued {
    req: HookRequest,
    /// Collapsed with a neighbour: report `Skipped` when its turn comes.
    skipped: bool,
}

/// What a run is for.
#[derive(Debug)]
enum Job {
    Transition(HookRequest),
    Refresh(Epoch),
    Notify(Transition),
    Check,
}

impl Job {
    fn label(&self) -> &'static str {
        match self {
            Job::Transition(req) => req.kind.as_str(),
            Job::Refresh(_) => "refresh",
            Job::Notify(_) => "notify",
            Job::Check => "check",
        }
    }

    /// What the run was for, for the log line that closes it.
    fn subject(&self) -> String {
        match self {
            Job::Transition(req) => format!("epoch {} ({})", req.epoch, req.reason),
            Job::Refresh(epoch) => format!("epoch {epoch}"),
            Job::Notify(t) => format!("{} epoch {} ({})", t.role, t.epoch, t.reason),
            Job::Check => "health".to_string(),
        }
    }
}

/// One running process and its output.
#[derive(Debug)]
struct Run {
    job: Job,
    child: Child,
    pid: libc::pid_t,
    started: Instant,
    deadline: Instant,
    kill_grace: Duration,
    /// When SIGTERM went to the group because the deadline passed.
    term_sent: Option<Instant>,
    /// SIGKILL went to the group (deadline plus grace, or cancelled).
    killed: bool,
    /// Killed because a later request superseded it.
    cancelled: bool,
    /// stdout and stderr; `None` once closed.
    pipes: [Option<Pipe>; 2],
    output: OutputCap,
}

/// The read end of a hook's stdout or stderr.
#[derive(Debug)]
struct Pipe {
    file: File,
    token: Token,
    stderr: bool,
    /// The current partial line, never longer than `LINE_MAX_BYTES`.
    line: Vec<u8>,
    /// Reading stopped at the budget, not at `EAGAIN`: with edge-triggered
    /// readiness no new event will come, so the next step reads on.
    more: bool,
}

/// The output allowance of one run, shared by its stdout and stderr.
#[derive(Debug)]
struct OutputCap {
    max: usize,
    kept: usize,
    dropped: u64,
}

impl OutputCap {
    /// Admits up to `n` more bytes and returns how many fit.
    fn admit(&mut self, n: usize) -> usize {
        let fit = n.min(self.max.saturating_sub(self.kept));
        self.kept += fit;
        self.dropped += (n - fit) as u64;
        fit
    }
}

/// The health verdict and the streaks that move it.
#[derive(Debug)]
struct Health {
    healthy: bool,
    /// No check has passed since start: the first pass makes the node healthy.
    never_passed: bool,
    passes: u32,
    failures: u32,
}

/// How a process ended, as far as we could learn.
#[derive(Debug)]
enum Exit {
    Status(ExitStatus),
    /// Reaped by someone else, or `waitid` failed: status unknown.
    Lost(io::Error),
}

impl HookRunner {
    /// A runner that may register mio tokens `token_base .. token_base + TOKENS`.
    ///
    /// With a health check configured the node starts unhealthy, and the
    /// first [`HookRunner::poll_health`] returns `Some(false)`: it becomes
    /// healthy at its first passing check (not after `check_rise` of them),
    /// so a node never leads before its check has passed once. The first
    /// check runs at the first `on_timeout`, which `next_timeout` asks for at
    /// once.
    pub fn new(cfg: HookConfig, token_base: usize, now: Instant) -> HookRunner {
        let checked = cfg.check_argv().is_some();
        let mut health_changes = VecDeque::new();
        if checked {
            health_changes.push_back(false);
        }
        HookRunner {
            cfg,
            token_base,
            lanes: [None, None, None],
            queue: VecDeque::new(),
            notify_queue: VecDeque::new(),
            done: VecDeque::new(),
            leading: None,
            authority: None,
            held: None,
            next_refresh: None,
            next_check: None,
            health: Health {
                healthy: !checked,
                never_passed: true,
                passes: 0,
                failures: 0,
            },
            health_changes,
            last_step: now,
            reconfigured: true,
            shut_down: false,
            stats: HookStats::default(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            line_high_water: 0,
        }
    }

    /// Replaces the configuration (a reload). Runs in progress keep their
    /// deadlines; the next run of each kind uses the new paths and limits.
    /// Schedules (refresh, check) are adjusted at the next `on_timeout`,
    /// which `next_timeout` asks for at once. Removing the check makes the
    /// node healthy; adding one keeps the current verdict until `check_fall`
    /// failures.
    pub fn set_config(&mut self, cfg: HookConfig) {
        self.cfg = cfg;
        self.reconfigured = true;
    }

    /// Queues a promote or demote behind any running or queued one.
    ///
    /// A demote for epoch E whose latest queued (not started) request is the
    /// promote of E cancels it: both are reported `Skipped`, in order. A
    /// demote that arrives while a promote runs kills that promote at once
    /// (SIGKILL to its group), which is reported `Failed` (it was killed by
    /// a signal; it did not reach its deadline) and counted as cancelled,
    /// so the demote starts as soon as the promote is reaped (a promote
    /// already past its deadline stays `TimedOut`). Any request kills a
    /// running refresh the same way and stops refreshes until a promote
    /// succeeds again.
    pub fn request(&mut self, req: HookRequest, registry: &Registry, now: Instant) {
        self.leading = None;
        self.next_refresh = None;
        if self.shut_down {
            log::warn!(
                "hook {} for epoch {} not run: shutting down",
                req.kind.as_str(),
                req.epoch
            );
            self.done.push_back(HookDone {
                kind: req.kind,
                epoch: req.epoch,
                outcome: HookOutcome::Skipped,
            });
            return;
        }
        if let Some(run) = &mut self.lanes[MAIN] {
            let supersedes = match &run.job {
                Job::Refresh(_) => true,
                Job::Transition(running) => {
                    running.kind == HookKind::Promote && req.kind == HookKind::Demote
                }
                Job::Notify(_) | Job::Check => false,
            };
            if supersedes && !run.killed {
                log::warn!(
                    "hook {}[{}]: killed, superseded by {} for epoch {}",
                    run.job.label(),
                    run.pid,
                    req.kind.as_str(),
                    req.epoch
                );
                run.cancel();
            }
        }
        let mut skipped = false;
        if req.kind == HookKind::Demote {
            if let Some(last) = self.queue.iter_mut().rev().find(|q| !q.skipped) {
                if last.req.kind == HookKind::Promote && last.req.epoch == req.epoch {
                    log::info!(
                        "hooks promote and demote for epoch {}: neither started, both skipped",
                        req.epoch
                    );
                    last.skipped = true;
                    skipped = true;
                }
            }
        }
        self.queue.push_back(Queued { req, skipped });
        self.step(registry, now);
    }

    /// Tells the runner which epoch this node leads and until when its lease
    /// holds (`None`: it leads none). `now` must be fresh: a promote that
    /// waits for its lease starts here when the lease covers it.
    pub fn set_authority(
        &mut self,
        authority: Option<(Epoch, Instant)>,
        registry: &Registry,
        now: Instant,
    ) {
        if self.authority == authority {
            return;
        }
        self.authority = authority;
        let waiting = self
            .queue
            .front()
            .is_some_and(|q| q.req.kind == HookKind::Promote && !q.skipped);
        if waiting && self.lanes[MAIN].is_none() {
            self.step(registry, now);
        }
    }

    /// Whether the lease of `epoch` holds at `now`.
    fn authorized(&self, epoch: Epoch, now: Instant) -> bool {
        self.authority
            .is_some_and(|(leads, until)| leads == epoch && now < until)
    }

    /// Runs the notify hook, if configured, for a transition, on its own
    /// lane: it never delays promote or demote. Up to `NOTIFY_QUEUE_MAX`
    /// wait behind a running one; beyond that the oldest waiting is dropped.
    pub fn notify(&mut self, t: &Transition, registry: &Registry, now: Instant) {
        if self.cfg.notify.is_none() || self.shut_down {
            return;
        }
        self.notify_queue.push_back(t.clone());
        while self.notify_queue.len() > NOTIFY_QUEUE_MAX {
            if let Some(old) = self.notify_queue.pop_front() {
                log::warn!(
                    "hook notify {} {}: dropped, too many notifications waiting",
                    old.role,
                    old.epoch
                );
                self.stats.notify.skipped += 1;
            }
        }
        self.step(registry, now);
    }

    /// Whether `token` is one of this runner's.
    pub fn owns_token(&self, token: Token) -> bool {
        (self.token_base..self.token_base + TOKENS).contains(&token.0)
    }

    /// A token of this runner is readable: log what the hook wrote.
    pub fn on_readable(&mut self, token: Token, registry: &Registry, now: Instant) {
        if self.owns_token(token) {
            let index = token.0 - self.token_base;
            let (lane, stream) = (index / 2, index % 2);
            if let Some(run) = &mut self.lanes[lane] {
                run.read(
                    stream,
                    registry,
                    &mut self.scratch,
                    &mut self.line_high_water,
                );
            }
        }
        self.step(registry, now);
    }

    /// The daemon got `SIGCHLD`: reap finished hooks (only ours, by pid).
    pub fn on_sigchld(&mut self, registry: &Registry, now: Instant) {
        self.step(registry, now);
    }

    /// When the runner next needs `on_timeout`: a deadline, a schedule, the
    /// child poll tick, or at once (an instant already past) when output is
    /// left unread or a new configuration waits.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        let unread = self
            .lanes
            .iter()
            .flatten()
            .any(|run| run.pipes.iter().flatten().any(|p| p.more));
        if self.reconfigured || unread {
            return Some(self.last_step);
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for run in self.lanes.iter().flatten() {
            consider(run.timer());
            consider(Some(later(self.last_step, CHILD_POLL)));
        }
        consider(self.next_refresh);
        if self.lanes[CHECK].is_none() {
            consider(self.next_check);
        }
        next
    }

    /// Time passed: enforce deadlines, poll children, start scheduled runs.
    pub fn on_timeout(&mut self, registry: &Registry, now: Instant) {
        self.step(registry, now);
    }

    /// The next report for the core, in request order.
    pub fn poll_done(&mut self) -> Option<HookDone> {
        self.done.pop_front()
    }

    /// The next change of the health verdict (`true` = healthy).
    pub fn poll_health(&mut self) -> Option<bool> {
        self.health_changes.pop_front()
    }

    /// The current health verdict.
    pub fn healthy(&self) -> bool {
        self.health.healthy
    }

    /// No promote, demote, refresh or notify runs or waits, and every report
    /// has been polled. The periodic health check does not count.
    pub fn is_idle(&self) -> bool {
        self.lanes[MAIN].is_none()
            && self.lanes[NOTIFY].is_none()
            && self.queue.is_empty()
            && self.notify_queue.is_empty()
            && self.done.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> &HookStats {
        &self.stats
    }

    /// Kills every running hook's process group with SIGKILL and reaps them,
    /// waiting at most about a second in all (a process stuck in the kernel
    /// is left to init). The running request is reported `Failed` and the
    /// queued ones `Skipped`, so the core still gets a report for each;
    /// later requests are reported `Skipped` at once. Idempotent; also run
    /// on drop.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        if let Some(Run {
            job: Job::Transition(req),
            ..
        }) = &self.lanes[MAIN]
        {
            self.done.push_back(HookDone {
                kind: req.kind,
                epoch: req.epoch,
                outcome: HookOutcome::Failed,
            });
        }
        for q in self.queue.drain(..) {
            self.done.push_back(HookDone {
                kind: q.req.kind,
                epoch: q.req.epoch,
                outcome: HookOutcome::Skipped,
            });
        }
        for run in self.lanes.iter_mut().flatten() {
            log::warn!(
                "hook {}[{}]: killed, shutting down",
                run.job.label(),
                run.pid
            );
            run.cancel();
        }
        let mut tries = 0;
        while self.lanes.iter().any(Option::is_some) && tries < SHUTDOWN_REAP_TRIES {
            for slot in &mut self.lanes {
                if slot.as_mut().is_some_and(|run| run.poll_exit().is_some()) {
                    *slot = None;
                }
            }
            if self.lanes.iter().any(Option::is_some) {
                std::thread::sleep(SHUTDOWN_REAP_PAUSE);
            }
            tries += 1;
        }
        for run in self.lanes.iter().flatten() {
            log::error!(
                "hook {}[{}]: not reaped after SIGKILL; left to init",
                run.job.label(),
                run.pid
            );
        }
        // Dropping the runs closes their pipes, which removes them from epoll.
        for slot in &mut self.lanes {
            *slot = None;
        }
        self.notify_queue.clear();
        self.next_refresh = None;
        self.next_check = None;
    }

    /// Everything that follows an input: apply a new configuration, read
    /// left-over output, reap, enforce deadlines, start what is due.
    fn step(&mut self, registry: &Registry, now: Instant) {
        self.last_step = now;
        if self.shut_down {
            return;
        }
        if self.reconfigured {
            self.reconfigured = false;
            self.apply_config(now);
        }
        for lane in 0..LANES {
            self.step_lane(lane, registry, now);
        }
        self.start_main(registry, now);
        self.start_notify(registry, now);
        self.start_check(registry, now);
    }

    /// Brings the schedules in line with the configuration.
    fn apply_config(&mut self, now: Instant) {
        match (self.refresh_interval(), self.leading) {
            (Some(interval), Some(_)) => {
                if self.next_refresh.is_none() {
                    self.next_refresh = Some(later(now, interval));
                }
            }
            _ => self.next_refresh = None,
        }
        if self.cfg.check_argv().is_some() {
            if self.next_check.is_none() {
                self.next_check = Some(now);
            }
        } else {
            self.next_check = None;
            self.health.passes = 0;
            self.health.failures = 0;
            if !self.health.healthy {
                log::info!("health check removed: healthy");
                self.set_health(true);
            }
        }
    }

    /// Reads left-over output of a lane's run, reaps it if it exited, and
    /// enforces its deadline if not.
    fn step_lane(&mut self, lane: usize, registry: &Registry, now: Instant) {
        let Some(run) = &mut self.lanes[lane] else {
            return;
        };
        for stream in 0..2 {
            if run.pipes[stream].as_ref().is_some_and(|p| p.more) {
                run.read(
                    stream,
                    registry,
                    &mut self.scratch,
                    &mut self.line_high_water,
                );
            }
        }
        match run.poll_exit() {
            Some(exit) => {
                if let Some(run) = self.lanes[lane].take() {
                    self.finish(run, exit, registry, now);
                }
            }
            None => run.enforce_deadline(now),
        }
    }

    /// Closes a reaped run: logs the rest of its output, records its outcome.
    fn finish(&mut self, mut run: Run, exit: Exit, registry: &Registry, now: Instant) {
        for stream in 0..2 {
            // The main process is gone and its group killed: what is in the
            // pipe now is all there will be, unless a process escaped the
            // group; its later output is not waited for, and a bounded number
            // of reads keeps it from holding the loop.
            for _ in 0..FINISH_READS {
                let open = run.read(
                    stream,
                    registry,
                    &mut self.scratch,
                    &mut self.line_high_water,
                );
                if !open || !run.pipes[stream].as_ref().is_some_and(|p| p.more) {
                    break;
                }
            }
            run.close(stream, registry);
        }
        let label = run.job.label();
        let pid = run.pid;
        let elapsed = now.saturating_duration_since(run.started);
        if run.output.dropped > 0 {
            log::warn!(
                "hook {label}[{pid}]: {} bytes of output discarded",
                run.output.dropped
            );
            self.stats.output_dropped_bytes += run.output.dropped;
        }
        // A run past its deadline is TimedOut even if then cancelled.
        let outcome = match &exit {
            _ if run.term_sent.is_some() => HookOutcome::TimedOut,
            _ if run.cancelled => HookOutcome::Failed,
            Exit::Status(status) if status.success() => HookOutcome::Ok,
            Exit::Status(_) | Exit::Lost(_) => HookOutcome::Failed,
        };
        let how = match &exit {
            Exit::Status(status) => describe(*status),
            Exit::Lost(e) => format!("status lost ({e})"),
        };
        let quiet = matches!(run.job, Job::Check);
        let subject = run.job.subject();
        match outcome {
            HookOutcome::Ok if quiet => {
                log::debug!("hook {label}[{pid}]: {subject}: {how} after {elapsed:?}")
            }
            HookOutcome::Ok => {
                log::info!("hook {label}[{pid}]: {subject}: {how} after {elapsed:?}")
            }
            HookOutcome::Failed if run.cancelled => {
                log::info!("hook {label}[{pid}]: {subject}: cancelled, {how} after {elapsed:?}")
            }
            HookOutcome::TimedOut => {
                log::warn!("hook {label}[{pid}]: {subject}: timed out, {how} after {elapsed:?}")
            }
            _ => log::warn!("hook {label}[{pid}]: {subject}: failed, {how} after {elapsed:?}"),
        }
        let stats = kind_stats(&mut self.stats, &run.job);
        stats.last_duration = Some(elapsed);
        match outcome {
            HookOutcome::TimedOut => stats.timeouts += 1,
            HookOutcome::Failed if run.cancelled => stats.cancelled += 1,
            HookOutcome::Failed => stats.failures += 1,
            HookOutcome::Ok | HookOutcome::Skipped => {}
        }
        match run.job {
            Job::Transition(req) => self.complete(&req, outcome, now),
            Job::Refresh(_) | Job::Notify(_) => {}
            // A check removed by a reload while it ran gives no verdict.
            Job::Check if self.cfg.check_argv().is_none() => {}
            Job::Check => {
                self.next_check = Some(later(run.started, self.check_interval()).max(now));
                self.check_verdict(outcome == HookOutcome::Ok);
            }
        }
    }

    /// Reports a finished promote or demote and updates the refresh state.
    fn complete(&mut self, req: &HookRequest, outcome: HookOutcome, now: Instant) {
        self.done.push_back(HookDone {
            kind: req.kind,
            epoch: req.epoch,
            outcome,
        });
        let leads =
            req.kind == HookKind::Promote && outcome == HookOutcome::Ok && self.queue.is_empty();
        self.leading = leads.then_some(req.epoch);
        self.next_refresh = match (self.leading, self.refresh_interval()) {
            (Some(_), Some(interval)) => Some(later(now, interval)),
            _ => None,
        };
    }

    /// Starts the next queued request on an idle main lane, or a refresh
    /// that is due. Requests that need no process complete on the spot.
    fn start_main(&mut self, registry: &Registry, now: Instant) {
        while self.lanes[MAIN].is_none() {
            if let Some(q) = self.queue.front() {
                let epoch = q.req.epoch;
                if q.req.kind == HookKind::Promote && !q.skipped && !self.authorized(epoch, now) {
                    if self.held != Some(epoch) {
                        self.held = Some(epoch);
                        self.stats.promote.held += 1;
                        log::warn!(
                            "hook promote for epoch {epoch} held: no lease covers it now \
                             (the event loop or the hook before it was slow)"
                        );
                    }
                    break;
                }
            }
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            let kind = q.req.kind;
            if q.skipped {
                match kind {
                    HookKind::Promote => self.stats.promote.skipped += 1,
                    HookKind::Demote => self.stats.demote.skipped += 1,
                }
                self.done.push_back(HookDone {
                    kind,
                    epoch: q.req.epoch,
                    outcome: HookOutcome::Skipped,
                });
                continue;
            }
            let path = match kind {
                HookKind::Promote => self.cfg.promote.clone(),
                HookKind::Demote => self.cfg.demote.clone(),
            };
            let Some(path) = path else {
                log::debug!(
                    "no {} hook configured: epoch {} done",
                    kind.as_str(),
                    q.req.epoch
                );
                self.complete(&q.req, HookOutcome::Ok, now);
                continue;
            };
            let role = match kind {
                HookKind::Promote => Role::Leader,
                HookKind::Demote => Role::Follower,
            };
            let args = vec![
                OsString::from(kind.as_str()),
                OsString::from(q.req.epoch.to_string()),
            ];
            let env = self.env(role, q.req.epoch, q.req.leader, q.req.reason.as_str());
            let job = Job::Transition(q.req);
            let timeout = self.cfg.timeout;
            if let Err(Job::Transition(req)) = self.spawn(
                MAIN,
                job,
                path.into_os_string(),
                args,
                env,
                timeout,
                registry,
                now,
            ) {
                self.complete(&req, HookOutcome::Failed, now);
            }
        }
        let Some(due) = self.next_refresh else { return };
        if now < due {
            return;
        }
        self.next_refresh = self.refresh_interval().map(|interval| {
            let next = later(due, interval);
            if next <= now {
                later(now, interval)
            } else {
                next
            }
        });
        let (Some(epoch), Some(path)) = (self.leading, self.cfg.promote.clone()) else {
            return;
        };
        if !self.authorized(epoch, now) {
            log::debug!("refresh for epoch {epoch} skipped: no lease covers it now");
            self.stats.refresh.skipped += 1;
            return;
        }
        if let Some(run) = &self.lanes[MAIN] {
            log::debug!(
                "refresh for epoch {epoch} skipped: hook {}[{}] is running",
                run.job.label(),
                run.pid
            );
            self.stats.refresh.skipped += 1;
            return;
        }
        let args = vec![OsString::from("refresh"), OsString::from(epoch.to_string())];
        let env = self.env(Role::Leader, epoch, Some(self.cfg.node), "refresh");
        let timeout = self.cfg.timeout;
        // A refresh that cannot start is logged and counted by `spawn`.
        let _ = self.spawn(
            MAIN,
            Job::Refresh(epoch),
            path.into_os_string(),
            args,
            env,
            timeout,
            registry,
            now,
        );
    }

    /// Starts the next waiting notification on an idle notify lane.
    fn start_notify(&mut self, registry: &Registry, now: Instant) {
        while self.lanes[NOTIFY].is_none() {
            let Some(t) = self.notify_queue.pop_front() else {
                break;
            };
            let Some(path) = self.cfg.notify.clone() else {
                self.notify_queue.clear();
                break;
            };
            let args = vec![
                OsString::from(t.role.to_string()),
                OsString::from(t.epoch.to_string()),
            ];
            let env = self.env(t.role, t.epoch, t.leader, t.reason.as_str());
            let timeout = self.cfg.timeout;
            // A notify that cannot start is logged and counted by `spawn`.
            let _ = self.spawn(
                NOTIFY,
                Job::Notify(t),
                path.into_os_string(),
                args,
                env,
                timeout,
                registry,
                now,
            );
        }
    }

    /// Starts the health check when it is due.
    fn start_check(&mut self, registry: &Registry, now: Instant) {
        if self.lanes[CHECK].is_some() || !self.next_check.is_some_and(|t| t <= now) {
            return;
        }
        let Some(argv) = self.cfg.check_argv() else {
            self.next_check = None;
            return;
        };
        let program = OsString::from(&argv[0]);
        let args = argv[1..].iter().map(OsString::from).collect();
        let env = vec![
            ("PATH", HOOK_PATH.to_string()),
            ("REGENT_NODE", self.cfg.node.to_string()),
            ("REGENT_CLUSTER", self.cfg.cluster.clone()),
        ];
        let timeout = self.cfg.check_timeout;
        if self
            .spawn(
                CHECK,
                Job::Check,
                program,
                args,
                env,
                timeout,
                registry,
                now,
            )
            .is_err()
        {
            self.next_check = Some(later(now, self.check_interval()));
            self.check_verdict(false);
        }
    }

    /// The refresh interval, if refreshes can run: enabled, and a promote
    /// hook to run them with.
    fn refresh_interval(&self) -> Option<Duration> {
        let interval = self
            .cfg
            .refresh_interval
            .filter(|_| self.cfg.promote.is_some())?;
        Some(interval.max(MIN_INTERVAL))
    }

    fn check_interval(&self) -> Duration {
        self.cfg.check_interval.max(MIN_INTERVAL)
    }

    /// The environment of a promote, demote, refresh or notify run.
    fn env(
        &self,
        role: Role,
        epoch: Epoch,
        leader: Option<NodeId>,
        reason: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("PATH", HOOK_PATH.to_string()),
            ("REGENT_ROLE", role.to_string()),
            ("REGENT_EPOCH", epoch.to_string()),
            ("REGENT_NODE", self.cfg.node.to_string()),
            ("REGENT_CLUSTER", self.cfg.cluster.clone()),
            (
                "REGENT_LEADER",
                leader.map(|n| n.to_string()).unwrap_or_default(),
            ),
            ("REGENT_REASON", reason.to_string()),
        ]
    }

    /// Starts `job` on `lane`. On failure logs why, counts the run as a
    /// failed one and hands the job back.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        lane: usize,
        job: Job,
        program: OsString,
        args: Vec<OsString>,
        env: Vec<(&'static str, String)>,
        timeout: Duration,
        registry: &Registry,
        now: Instant,
    ) -> Result<(), Job> {
        let label = job.label();
        let stats = kind_stats(&mut self.stats, &job);
        stats.runs += 1;
        let mut command = Command::new(&program);
        command
            .args(&args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                log::error!(
                    "hook {label}: cannot run {}: {e}",
                    program.to_string_lossy()
                );
                stats.failures += 1;
                stats.last_duration = Some(Duration::ZERO);
                return Err(job);
            }
        };
        // Never fails on Linux: pids fit in pid_t.
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
        let quiet = matches!(job, Job::Check);
        let log_start = |level| {
            let argv: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            log::log!(
                level,
                "hook {label}[{pid}]: started {} {}",
                program.to_string_lossy(),
                argv.join(" ")
            );
        };
        log_start(if quiet {
            log::Level::Debug
        } else {
            log::Level::Info
        });
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let mut run = Run {
            job,
            child,
            pid,
            started: now,
            deadline: later(now, timeout),
            kill_grace: self.cfg.kill_grace,
            term_sent: None,
            killed: false,
            cancelled: false,
            pipes: [None, None],
            output: OutputCap {
                max: self.cfg.output_max_bytes,
                kept: 0,
                dropped: 0,
            },
        };
        for (stream, fd) in [stdout, stderr].into_iter().enumerate() {
            let Some(fd) = fd else { continue };
            let token = Token(self.token_base + lane * 2 + stream);
            match open_pipe(fd, token, registry) {
                Ok(file) => {
                    run.pipes[stream] = Some(Pipe {
                        file,
                        token,
                        stderr: stream == 1,
                        line: Vec::with_capacity(LINE_MAX_BYTES),
                        more: true,
                    })
                }
                Err(e) => log::error!("hook {label}[{pid}]: output not logged: {e}"),
            }
        }
        self.lanes[lane] = Some(run);
        Ok(())
    }

    /// Counts a check result and moves the verdict when a streak is long enough.
    fn check_verdict(&mut self, passed: bool) {
        let h = &mut self.health;
        if passed {
            h.failures = 0;
            h.passes = h.passes.saturating_add(1);
            let rise = self.cfg.check_rise.max(1);
            if !h.healthy && (h.never_passed || h.passes >= rise) {
                log::info!("health check passed {} time(s) in a row: healthy", h.passes);
                self.set_health(true);
            }
            self.health.never_passed = false;
        } else {
            h.passes = 0;
            h.failures = h.failures.saturating_add(1);
            let fall = self.cfg.check_fall.max(1);
            if h.healthy && h.failures >= fall {
                log::warn!(
                    "health check failed {} time(s) in a row: unhealthy",
                    h.failures
                );
                self.set_health(false);
            }
        }
    }

    fn set_health(&mut self, healthy: bool) {
        if self.health.healthy != healthy {
            self.health.healthy = healthy;
            self.health_changes.push_back(healthy);
        }
    }
}

impl Drop for HookRunner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Run {
    /// The next instant at which the deadline logic must act.
    fn timer(&self) -> Option<Instant> {
        match self.term_sent {
            _ if self.killed => None,
            None => Some(self.deadline),
            Some(sent) => Some(later(sent, self.kill_grace)),
        }
    }

    /// SIGTERM to the group at the deadline, SIGKILL after the grace period.
    fn enforce_deadline(&mut self, now: Instant) {
        if self.killed {
            return;
        }
        match self.term_sent {
            None if now >= self.deadline => {
                log::warn!(
                    "hook {}[{}]: deadline passed, SIGTERM to its process group",
                    self.job.label(),
                    self.pid
                );
                signal_group(self.pid, libc::SIGTERM);
                self.term_sent = Some(now);
            }
            Some(sent) if now >= later(sent, self.kill_grace) => {
                log::warn!(
                    "hook {}[{}]: still running, SIGKILL to its process group",
                    self.job.label(),
                    self.pid
                );
                signal_group(self.pid, libc::SIGKILL);
                self.killed = true;
            }
            _ => {}
        }
    }

    /// Kills the whole group at once because the run is no longer wanted.
    fn cancel(&mut self) {
        signal_group(self.pid, libc::SIGKILL);
        self.killed = true;
        self.cancelled = true;
    }

    /// Reaps the main process if it exited, after killing the rest of its
    /// group while the zombie still pins the group id.
    fn poll_exit(&mut self) -> Option<Exit> {
        match has_exited(self.pid) {
            Ok(false) => None,
            Ok(true) => {
                signal_group(self.pid, libc::SIGKILL);
                match self.child.try_wait() {
                    Ok(Some(status)) => Some(Exit::Status(status)),
                    // waitid just saw it exit; nothing else reaps by our pid.
                    Ok(None) => None,
                    Err(e) => Some(Exit::Lost(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                log::error!(
                    "hook {}[{}]: cannot wait for it: {e}",
                    self.job.label(),
                    self.pid
                );
                Some(Exit::Lost(e))
            }
        }
    }

    /// Reads one of the run's pipes up to the budget, logging whole lines.
    /// Returns whether the pipe is still open.
    fn read(
        &mut self,
        stream: usize,
        registry: &Registry,
        scratch: &mut [u8],
        high_water: &mut usize,
    ) -> bool {
        let label = self.job.label();
        let pid = self.pid;
        let quiet = matches!(self.job, Job::Check);
        let Some(pipe) = &mut self.pipes[stream] else {
            return false;
        };
        let mut budget = READ_BUDGET_BYTES;
        let open = loop {
            if budget == 0 {
                pipe.more = true;
                break true;
            }
            let want = scratch.len().min(budget);
            match pipe.file.read(&mut scratch[..want]) {
                Ok(0) => break false,
                Ok(n) => {
                    budget -= n;
                    let over_before = self.output.dropped > 0;
                    let fit = self.output.admit(n);
                    pipe.feed(&scratch[..fit], label, pid, quiet, high_water);
                    if fit < n && !over_before {
                        pipe.flush(label, pid, quiet);
                        log::warn!(
                            "hook {label}[{pid}]: more than {} bytes of output; the rest is discarded",
                            self.output.max
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pipe.more = false;
                    break true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("hook {label}[{pid}]: reading its output: {e}");
                    break false;
                }
            }
        };
        if !open {
            self.close(stream, registry);
        }
        open
    }

    /// Logs any partial line, deregisters and closes a pipe.
    fn close(&mut self, stream: usize, registry: &Registry) {
        if let Some(mut pipe) = self.pipes[stream].take() {
            pipe.flush(self.job.label(), self.pid, matches!(self.job, Job::Check));
            if let Err(e) = registry.deregister(&mut SourceFd(&pipe.file.as_raw_fd())) {
                log::debug!(
                    "hook {}[{}]: deregistering {:?}: {e}",
                    self.job.label(),
                    self.pid,
                    pipe.token
                );
            }
        }
    }
}

impl Pipe {
    /// Splits admitted output into lines of at most `LINE_MAX_BYTES`.
    fn feed(
        &mut self,
        mut bytes: &[u8],
        label: &str,
        pid: libc::pid_t,
        quiet: bool,
        high_water: &mut usize,
    ) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let chunk = &bytes[..end.unwrap_or(bytes.len())];
            let mut rest = chunk;
            while !rest.is_empty() {
                let take = rest.len().min(LINE_MAX_BYTES - self.line.len());
                self.line.extend_from_slice(&rest[..take]);
                *high_water = (*high_water).max(self.line.len());
                rest = &rest[take..];
                if self.line.len() == LINE_MAX_BYTES {
                    self.flush(label, pid, quiet);
                }
            }
            match end {
                Some(i) => {
                    self.flush(label, pid, quiet);
                    bytes = &bytes[i + 1..];
                }
                None => bytes = &[],
            }
        }
    }

    /// Logs the buffered line, if not empty.
    fn flush(&mut self, label: &str, pid: libc::pid_t, quiet: bool) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if !line.is_empty() {
            let text = String::from_utf8_lossy(line);
            let level = match (quiet, self.stderr) {
                (true, _) => log::Level::Debug,
                (false, false) => log::Level::Info,
                (false, true) => log::Level::Warn,
            };
            log::log!(level, "hook {label}[{pid}]: {text}");
        }
        self.line.clear();
    }
}

/// The counters of a job's kind.
fn kind_stats<'a>(stats: &'a mut HookStats, job: &Job) -> &'a mut KindStats {
    match job {
        Job::Transition(HookRequest {
            kind: HookKind::Promote,
            ..
        }) => &mut stats.promote,
        Job::Transition(HookRequest {
            kind: HookKind::Demote,
            ..
        }) => &mut stats.demote,
        Job::Refresh(_) => &mut stats.refresh,
        Job::Notify(_) => &mut stats.notify,
        Job::Check => &mut stats.check,
    }
}

/// Makes a pipe's read end non-blocking and registers it.
fn open_pipe(fd: OwnedFd, token: Token, registry: &Registry) -> io::Result<File> {
    let raw = fd.as_raw_fd();
    // SAFETY: `raw` is an open descriptor owned by `fd`; F_GETFL/F_SETFL
    // touch only its status flags.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags == -1 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    registry.register(&mut SourceFd(&raw), token, Interest::READABLE)?;
    Ok(File::from(fd))
}

/// `at + d`, or a year after `at` if that overflows: a huge configured
/// duration means "never" and must not panic.
fn later(at: Instant, d: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(YEAR))
        .unwrap_or(at)
}

/// Whether `pid` (our child) has exited, without reaping it: while it is an
/// unreaped zombie its pid, and so its process group id, cannot be reused.
fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: siginfo_t is a plain C struct; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let options = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is valid and writable for the duration of the call.
    let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, options) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid either filled `info` for a child state change or left
    // it zeroed; in both cases si_pid reads initialised memory.
    Ok(unsafe { info.si_pid() } != 0)
}

/// Sends `signal` to the process group led by `pid`, or to `pid` alone if it
/// no longer leads a group (it called setpgid itself).
fn signal_group(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(-pid, signal) } == -1 {
        // SAFETY: as above.
        unsafe { libc::kill(pid, signal) };
    }
}

/// "exited 0", "exited 3", "killed by signal 9".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended ({status})"),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests stand in for the driver: they read the clock.
mod tests {
    use super::*;
    use crate::core::Reason;
    use crate::core::Role;
    use mio::{Events, Poll};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The longest a test loop turn waits: stands in for the driver's
    /// forwarding of SIGCHLD, which the harness simulates every turn.
    const TURN: Duration = Duration::from_millis(10);

    /// A fresh directory for one test's scripts and logs.
    fn test_dir(name: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("regent-hooks-{}-{name}-{n}", std::process::id()));
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
                .queue
                .iter()
                .find(|q| q.req.kind == HookKind::Promote && !q.skipped)
                .map(|q| q.req.epoch)
                .or(self.runner.leading);
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
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
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
    fn health_verdict_follows_fall_and_rise() {
        let mut cfg = config();
        cfg.check = Some(vec!["true".into()]);
        cfg.check_fall = 2;
        cfg.check_rise = 3;
        let mut runner = HookRunner::new(cfg, 0, Instant::now());
        let mut verdicts = vec![];
        // (the check passed, healthy afterwards)
        let steps = [
            (false, false),
            (false, false),
            (true, true), // the first pass at start suffices
            (false, true),
            (true, true),
            (false, true),
            (false, false), // check_fall = 2 in a row
            (true, false),
            (true, false),
            (false, false), // the streak starts again
            (true, false),
            (true, false),
            (true, true), // check_rise = 3 in a row
        ];
        for (i, (passed, healthy)) in steps.into_iter().enumerate() {
            runner.check_verdict(passed);
            assert_eq!(runner.healthy(), healthy, "step {i}");
            while let Some(v) = runner.poll_health() {
                verdicts.push(v);
            }
        }
        assert_eq!(verdicts, [false, true, false, true]);
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
    fn notify_has_its_own_lane_and_a_bounded_queue() {
        let dir = test_dir("notify");
        let log = dir.join("notify.log");
        let notify = script(
            &dir,
            "notify",
            &format!("sleep 0.2\necho \"$1 $2\" >> {}", log.display()),
        );
        let (hook, hook_log) = logging_hook(&dir, "0");
        let mut cfg = config();
        cfg.notify = Some(notify);
        cfg.promote = Some(hook);
        let mut h = Harness::new(cfg);
        for epoch in 1..=10 {
            let t = Transition {
                role: Role::Follower,
                epoch: Epoch(epoch),
                leader: None,
                reason: Reason::Startup,
            };
            h.runner.notify(&t, h.poll.registry(), Instant::now());
        }
        // A promote does not wait for the notify lane.
        h.request(req(HookKind::Promote, 11));
        let start = Instant::now();
        h.until(Duration::from_secs(1), "promote", |h| !h.done.is_empty());
        assert_eq!(
            read_lines(&hook_log),
            ["start promote 11", "end promote 11"]
        );
        assert!(
            read_lines(&log).is_empty(),
            "promote waited for notify: {:?} {:?}",
            start.elapsed(),
            read_lines(&log)
        );
        h.until(Duration::from_secs(4), "notifies", |h| h.runner.is_idle());
        // The first runs at once; of the nine that wait, the four newest stay.
        assert_eq!(
            read_lines(&log),
            [
                "follower 1",
                "follower 7",
                "follower 8",
                "follower 9",
                "follower 10"
            ]
        );
        assert_eq!(h.runner.stats().notify.skipped, 5);
        assert_eq!(h.runner.stats().notify.runs, 5);
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
}
