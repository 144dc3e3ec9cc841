//! Running the operator's hooks: the `HookRunner` the driver uses.
//!
//! Three parts. `schedule.rs` is the policy (which run starts, which is
//! skipped or killed, the lease gate, refresh, health rise and fall, the
//! notify queue), pure, and shared with the simulator. `process.rs` is the
//! mechanism (fork/exec, process groups, deadlines, pipes, output to the
//! log). This module joins them: it feeds the scheduler the driver's inputs
//! and the processes' ends, turns its actions into processes, and converts
//! the driver's `Instant`s to the scheduler's `Time` (since its creation).
//!
//! The driver owns the event loop and the clock. It hands this module the
//! core's `Effect::RunHook` requests and transitions, the lease
//! (`set_authority`), forwards `SIGCHLD`, readiness of the tokens this
//! module registered and the passage of time, and polls
//! [`HookRunner::poll_done`] for the `Input::HookDone` reports the core
//! expects, one per request, in request order.
//!
//! Architecture Invariant: nothing here decides policy (that is
//! `schedule.rs`), blocks the event loop or reads the clock: every entry
//! point takes `now`.
//!
//! Architecture Invariant: at most one of promote, demote, refresh and
//! notify runs at a time (the main lane); the health check runs on a lane of
//! its own. A promote or refresh starts only inside the lease of its epoch,
//! as the driver last reported it with `set_authority` and a fresh `now`.
//!
//! Architecture Invariant: no hook sees the daemon's environment. Each gets
//! `PATH` and the `REGENT_*` variables, nothing else (no `NOTIFY_SOCKET`).

mod histogram;
mod process;
pub mod schedule;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::core::{Epoch, HookDone, HookKind, HookRequest, NodeId, Role, Time, Transition};
use crate::logging::Took;
use process::{Run, Spec, READ_CHUNK_BYTES};
use schedule::{Action, Exit, Job, Note, Schedule, ScheduleConfig, Work};

pub use histogram::DurationHistogram;
pub use process::LINE_MAX_BYTES;
pub use schedule::{HookStats, KindStats, NOTIFY_QUEUE_MAX};

/// The `PATH` every hook gets.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Lanes: the main lane (promote, demote, refresh, notify) and the check.
const MAIN: usize = 0;
const CHECK: usize = 1;
const LANES: usize = 2;

/// mio tokens the runner may register: stdout and stderr of each lane.
pub const TOKENS: usize = LANES * 2;

/// How often running children are polled for exit, in case a `SIGCHLD` was
/// missed or came before the pipes closed.
const CHILD_POLL: Duration = Duration::from_millis(100);

/// How long `shutdown` waits for killed hooks to be reaped, in all.
const SHUTDOWN_REAP_TRIES: u32 = 100;
const SHUTDOWN_REAP_PAUSE: Duration = Duration::from_millis(10);

/// What the runner needs to know: the hooks, their deadlines and this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// Run as `PROMOTE promote EPOCH`, and `PROMOTE refresh EPOCH` while leading.
    pub promote: Option<PathBuf>,
    /// Run as `DEMOTE demote EPOCH`.
    pub demote: Option<PathBuf>,
    /// Run as `NOTIFY ROLE EPOCH` after every transition, after its hook.
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
    /// A demote (not the start-up one) longer than this is logged and counted.
    pub demote_budget: Duration,
    /// This node, for `REGENT_NODE` and for `REGENT_LEADER` in refresh runs.
    pub node: NodeId,
    /// The cluster name, for `REGENT_CLUSTER`.
    pub cluster: String,
}

impl HookConfig {
    /// A configuration with no hooks, no check and the default deadlines:
    /// timeout 10 s, kill grace 2 s, no refresh, 64 KiB of output per run,
    /// a check every 2 s with a 2 s deadline, fall 3, rise 2, demote budget
    /// 25 ms.
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
            demote_budget: Duration::from_millis(25),
            node,
            cluster: cluster.into(),
        }
    }

    /// The health check's argv, if one is configured and not empty.
    fn check_argv(&self) -> Option<&[String]> {
        self.check.as_deref().filter(|argv| !argv.is_empty())
    }

    /// What the scheduler needs of it.
    fn schedule(&self) -> ScheduleConfig {
        ScheduleConfig {
            promote: self.promote.is_some(),
            demote: self.demote.is_some(),
            notify: self.notify.is_some(),
            check: self.check_argv().is_some(),
            refresh_interval: self.refresh_interval,
            check_interval: self.check_interval,
            check_fall: self.check_fall,
            check_rise: self.check_rise,
            demote_budget: self.demote_budget,
        }
    }
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
    /// The scheduler's clock starts here.
    base: Instant,
    schedule: Schedule,
    /// The running process of each lane.
    lanes: [Option<Run>; LANES],
    /// Reports for the core, in request order.
    done: VecDeque<HookDone>,
    /// Demote hooks whose process has started, by epoch, for the guard.
    demotes_started: VecDeque<Epoch>,
    health_changes: VecDeque<bool>,
    /// The lease as last given, to skip unchanged ones.
    authority: Option<(Epoch, Instant)>,
    /// The `now` of the latest call; the base of the child poll tick.
    last_step: Instant,
    /// A new configuration waits to be given to the scheduler.
    reconfigured: bool,
    shut_down: bool,
    output_dropped_bytes: u64,
    /// Pipes are read into this, so no per-read allocation.
    scratch: Box<[u8]>,
    /// The most bytes any line buffer ever held (it never exceeds
    /// `LINE_MAX_BYTES`); tests check it.
    line_high_water: usize,
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
        let schedule = Schedule::new(cfg.schedule(), Time::ZERO);
        let mut runner = HookRunner {
            cfg,
            token_base,
            base: now,
            schedule,
            lanes: [None, None],
            done: VecDeque::new(),
            demotes_started: VecDeque::new(),
            health_changes: VecDeque::new(),
            authority: None,
            last_step: now,
            reconfigured: false,
            shut_down: false,
            output_dropped_bytes: 0,
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            line_high_water: 0,
        };
        // Before any input the scheduler can only have given the initial
        // verdict; the first check starts at the first `on_timeout`.
        while let Some(action) = runner.schedule.poll_action() {
            runner.act_quietly(action);
        }
        runner.reconfigured = true;
        runner
    }

    /// Replaces the configuration (a reload). Runs in progress keep their
    /// deadlines; the next run of each kind uses the new paths and limits.
    /// Schedules (refresh, check) are adjusted at the next `on_timeout`,
    /// which `next_timeout` asks for at once.
    pub fn set_config(&mut self, cfg: HookConfig) {
        self.cfg = cfg;
        self.reconfigured = true;
    }

    /// Queues a promote or demote; see `schedule.rs` for the policy.
    pub fn request(&mut self, req: HookRequest, registry: &Registry, now: Instant) {
        let t = self.time(now);
        self.schedule.request(t, req);
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
        let lease = authority.map(|(e, until)| (e, self.time(until)));
        let t = self.time(now);
        self.schedule.set_lease(t, lease);
        self.step(registry, now);
    }

    /// Runs the notify hook, if configured, for a transition, on the main
    /// lane after the transition hooks. Up to `NOTIFY_QUEUE_MAX` wait;
    /// beyond that the oldest waiting is dropped.
    pub fn notify(&mut self, t: &Transition, registry: &Registry, now: Instant) {
        let at = self.time(now);
        self.schedule.notify(at, t);
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
        let unread = self.lanes.iter().flatten().any(Run::unread);
        if self.reconfigured || unread {
            return Some(self.last_step);
        }
        let mut next = self.schedule.next_timeout().map(|t| self.instant(t));
        for run in self.lanes.iter().flatten() {
            let poll = self.last_step.checked_add(CHILD_POLL);
            for t in [run.timer(), poll].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Time passed: enforce deadlines, poll children, start scheduled runs.
    pub fn on_timeout(&mut self, registry: &Registry, now: Instant) {
        let t = self.time(now);
        self.schedule.tick(t);
        self.step(registry, now);
    }

    /// The epoch of a demote hook whose process has started since the last
    /// call, for the lease guard.
    pub fn poll_demote_started(&mut self) -> Option<Epoch> {
        self.demotes_started.pop_front()
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
        self.schedule.healthy()
    }

    /// No promote, demote, refresh or notify runs or waits, and every report
    /// has been polled. The periodic health check does not count.
    pub fn is_idle(&self) -> bool {
        self.lanes[MAIN].is_none() && self.schedule.is_idle() && self.done.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> HookStats {
        let mut stats = self.schedule.stats().clone();
        stats.output_dropped_bytes = self.output_dropped_bytes;
        stats
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
        self.schedule.shutdown();
        while let Some(action) = self.schedule.poll_action() {
            match action {
                Action::Done(d) => self.done.push_back(d),
                Action::Kill(_) => {}
                other => self.act_quietly(other),
            }
        }
        for run in self.lanes.iter_mut().flatten() {
            log::warn!("hook {}[{}]: killed, shutting down", run.label(), run.pid);
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
                run.label(),
                run.pid
            );
        }
        // Dropping the runs closes their pipes, which removes them from epoll.
        for slot in &mut self.lanes {
            *slot = None;
        }
    }

    /// `now` on the scheduler's clock.
    fn time(&self, now: Instant) -> Time {
        Time::from_duration(now.saturating_duration_since(self.base))
    }

    /// A scheduler instant on the driver's clock.
    fn instant(&self, t: Time) -> Instant {
        self.base
            .checked_add(t.as_duration())
            .unwrap_or(self.last_step)
    }

    /// Everything that follows an input: a new configuration, left-over
    /// output, reaping, deadlines, and the scheduler's actions.
    fn step(&mut self, registry: &Registry, now: Instant) {
        self.last_step = now;
        if self.shut_down {
            self.drain_actions(registry, now);
            return;
        }
        let t = self.time(now);
        if self.reconfigured {
            self.reconfigured = false;
            self.schedule.set_config(t, self.cfg.schedule());
        }
        for lane in 0..LANES {
            let Some(run) = &mut self.lanes[lane] else {
                continue;
            };
            run.read_more(registry, &mut self.scratch, &mut self.line_high_water);
            match run.poll_exit() {
                Some(ending) => {
                    if let Some(run) = self.lanes[lane].take() {
                        let job = run.job;
                        let (exit, dropped) = run.finish(
                            ending,
                            registry,
                            &mut self.scratch,
                            &mut self.line_high_water,
                            now,
                        );
                        self.output_dropped_bytes += dropped;
                        self.schedule.finished(t, job, exit);
                    }
                }
                None => run.enforce_deadline(now),
            }
        }
        self.drain_actions(registry, now);
    }

    /// Carries out the scheduler's actions until it has none.
    fn drain_actions(&mut self, registry: &Registry, now: Instant) {
        while let Some(action) = self.schedule.poll_action() {
            match action {
                Action::Start(job) => {
                    if let Work::Transition(req) = &job.work {
                        if req.kind == HookKind::Demote {
                            self.demotes_started.push_back(req.epoch);
                        }
                    }
                    self.start(job, registry, now)
                }
                Action::Kill(id) => {
                    if let Some(run) = self.lanes.iter_mut().flatten().find(|r| r.job == id) {
                        run.cancel();
                    }
                }
                Action::Done(d) => self.done.push_back(d),
                other => self.act_quietly(other),
            }
        }
    }

    /// Actions that only log or report.
    fn act_quietly(&mut self, action: Action) {
        match action {
            Action::Health(ok) => self.health_changes.push_back(ok),
            Action::DemoteOverrun {
                epoch,
                took,
                budget,
            } => log::warn!(
                "hook demote for epoch {epoch} took {}, over the demote budget of {}: \
                 another host may have promoted before it ended",
                Took(took),
                Took(budget)
            ),
            Action::Note(note) => self.log_note(note),
            Action::Start(_) | Action::Kill(_) | Action::Done(_) => {}
        }
    }

    fn log_note(&self, note: Note) {
        match note {
            Note::Held(epoch) => log::warn!(
                "hook promote for epoch {epoch} held: no lease covers it now \
                 (the event loop or the hook before it was slow)"
            ),
            Note::Collapsed(epoch) => log::info!(
                "hooks promote and demote for epoch {epoch}: neither started, both skipped"
            ),
            Note::Superseded {
                job,
                label,
                by,
                epoch,
            } => {
                let pid = self.lanes.iter().flatten().find(|r| r.job == job);
                let pid = pid.map_or(0, |r| r.pid);
                log::warn!(
                    "hook {label}[{pid}]: killed, superseded by {} for epoch {epoch}",
                    by.as_str()
                )
            }
            Note::NotifyDropped(t) => log::warn!(
                "hook notify {} {}: dropped, too many notifications waiting",
                t.role,
                t.epoch
            ),
            Note::RefreshSkipped(epoch) => log::debug!(
                "refresh for epoch {epoch} skipped: no lease covers it now, or a hook is running"
            ),
            Note::AfterShutdown(kind, epoch) => log::warn!(
                "hook {} for epoch {epoch} not run: shutting down",
                kind.as_str()
            ),
            Note::NotConfigured(kind, epoch) => {
                log::debug!("no {} hook configured: epoch {epoch} done", kind.as_str())
            }
            Note::HealthStreak {
                healthy: true,
                streak,
            } => log::info!("health check passed {streak} time(s) in a row: healthy"),
            Note::HealthStreak {
                healthy: false,
                streak,
            } => log::warn!("health check failed {streak} time(s) in a row: unhealthy"),
            Note::CheckRemoved => log::info!("health check removed: healthy"),
        }
    }

    /// Starts a job's process, or reports at once that it could not start.
    fn start(&mut self, job: Job, registry: &Registry, now: Instant) {
        let lane = if job.work == Work::Check { CHECK } else { MAIN };
        let Some(spec) = self.spec(&job, lane) else {
            // The hook was removed by a reload the scheduler has not seen.
            let t = self.time(now);
            self.schedule.finished(t, job.id, Exit::NotStarted);
            return;
        };
        match Run::spawn(spec, registry, now) {
            Ok(run) => self.lanes[lane] = Some(run),
            Err(_) => {
                let t = self.time(now);
                self.schedule.finished(t, job.id, Exit::NotStarted);
            }
        }
    }

    /// How to run a job: program, argv, environment, deadline.
    fn spec(&self, job: &Job, lane: usize) -> Option<Spec> {
        let cfg = &self.cfg;
        let (program, args, env, timeout, subject) = match &job.work {
            Work::Transition(req) => {
                let path = match req.kind {
                    HookKind::Promote => cfg.promote.clone()?,
                    HookKind::Demote => cfg.demote.clone()?,
                };
                let role = match req.kind {
                    HookKind::Promote => Role::Leader,
                    HookKind::Demote => Role::Follower,
                };
                (
                    path.into_os_string(),
                    vec![
                        OsString::from(req.kind.as_str()),
                        OsString::from(req.epoch.to_string()),
                    ],
                    self.env(role, req.epoch, req.leader, req.reason.as_str()),
                    cfg.timeout,
                    format!("epoch {} ({})", req.epoch, req.reason),
                )
            }
            Work::Refresh(epoch) => (
                cfg.promote.clone()?.into_os_string(),
                vec![OsString::from("refresh"), OsString::from(epoch.to_string())],
                self.env(Role::Leader, *epoch, Some(cfg.node), "refresh"),
                cfg.timeout,
                format!("epoch {epoch}"),
            ),
            Work::Notify(t) => (
                cfg.notify.clone()?.into_os_string(),
                vec![
                    OsString::from(t.role.to_string()),
                    OsString::from(t.epoch.to_string()),
                ],
                self.env(t.role, t.epoch, t.leader, t.reason.as_str()),
                cfg.timeout,
                format!("{} epoch {} ({})", t.role, t.epoch, t.reason),
            ),
            Work::Check => {
                let argv = cfg.check_argv()?;
                (
                    OsString::from(&argv[0]),
                    argv[1..].iter().map(OsString::from).collect(),
                    vec![
                        ("PATH", HOOK_PATH.to_string()),
                        ("REGENT_NODE", cfg.node.to_string()),
                        ("REGENT_CLUSTER", cfg.cluster.clone()),
                    ],
                    cfg.check_timeout,
                    "health".to_string(),
                )
            }
        };
        Some(Spec {
            job: job.id,
            label: job.work.label(),
            subject,
            quiet: job.work == Work::Check,
            ignore_sigterm: matches!(&job.work, Work::Transition(req) if req.kind == HookKind::Demote),
            program,
            args,
            env,
            timeout,
            kill_grace: cfg.kill_grace,
            output_max: cfg.output_max_bytes,
            tokens: [
                Token(self.token_base + lane * 2),
                Token(self.token_base + lane * 2 + 1),
            ],
        })
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
}

impl Drop for HookRunner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
