//! The hook queue's policy: which hook runs next, which is skipped or
//! killed, when refreshes and health checks are due, and what the core is
//! told. The daemon (through `HookRunner`) and the simulator run this same
//! code; only the processes differ.
//!
//! The shape is the core's: inputs carry `now` (`request`, `notify`,
//! `set_lease`, `finished`, `tick`), and everything to be done comes out of
//! [`Schedule::poll_action`] in order. After any input, drain the actions.
//!
//! Two lanes. The main lane runs promote, demote, refresh and notify, one at
//! a time: a queued promote or demote first (in request order), then a
//! waiting notification, then a refresh that is due. The health check runs
//! on a lane of its own: it is not a transition hook and must not wait
//! behind one (nor delay one).
//!
//! Policy, in short:
//! - A demote for epoch E whose latest queued request is the promote of E
//!   cancels it: both are reported `Skipped`, in order.
//! - A demote kills a running promote at once (reported `Failed`, counted
//!   as cancelled, unless it had already passed its deadline: `TimedOut`).
//!   Any promote or demote kills a running refresh or notify.
//! - The lease gate: a promote or refresh starts only while the lease of its
//!   epoch holds (`set_lease`). A promote that finds no lease is held at the
//!   front of the queue until the lease is renewed or a demote skips it.
//! - A demote (not the start-up one) that runs longer than `demote_budget`
//!   is reported (`Action::DemoteOverrun`) and counted; it is not killed.
//!
//! Architecture Invariant: no I/O, no clock, no processes, no logging. Time
//! comes in as `now` on the caller's monotonic clock, the same clock as the
//! lease ends given to `set_lease`. What to log is an `Action` too.

use std::collections::VecDeque;
use std::time::Duration;

use super::histogram::DurationHistogram;
use crate::core::{Epoch, HookDone, HookKind, HookOutcome, HookRequest, Reason, Time, Transition};

/// Transitions that may wait for the notify hook; beyond this the oldest
/// waiting is dropped.
pub const NOTIFY_QUEUE_MAX: usize = 4;

/// The shortest refresh or check interval honoured, so a zero cannot spin.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What the policy needs to know of the configuration: which hooks exist
/// and the schedules. Paths, deadlines and output limits are the process
/// shell's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// A promote hook is configured (it also runs the refreshes).
    pub promote: bool,
    /// A demote hook is configured.
    pub demote: bool,
    /// A notify hook is configured.
    pub notify: bool,
    /// A health check is configured.
    pub check: bool,
    /// Interval of refresh runs while leading; `None` disables them.
    pub refresh_interval: Option<Duration>,
    /// Time between the starts of two health checks.
    pub check_interval: Duration,
    /// Consecutive failed checks that make a healthy node unhealthy (at least 1).
    pub check_fall: u32,
    /// Consecutive passed checks that make an unhealthy node healthy (at least 1).
    pub check_rise: u32,
    /// The longest a demote may take and keep S3 (`Timing::demote_budget`).
    pub demote_budget: Duration,
}

/// Identifies one started job, so that its end can be matched to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

/// What a job runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// A promote or demote the core asked for.
    Transition(HookRequest),
    /// The promote hook as `refresh EPOCH`, while leading.
    Refresh(Epoch),
    /// The notify hook for a transition.
    Notify(Transition),
    /// The health check.
    Check,
}

impl Work {
    /// The hook's name, for logs and counters.
    pub fn label(&self) -> &'static str {
        match self {
            Work::Transition(req) => req.kind.as_str(),
            Work::Refresh(_) => "refresh",
            Work::Notify(_) => "notify",
            Work::Check => "check",
        }
    }
}

/// A run to start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Its id, for `Schedule::finished` and `Action::Kill`.
    pub id: JobId,
    /// What to run.
    pub work: Work,
}

/// How a process ended, as the process shell saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exit status 0.
    Ok,
    /// Non-zero exit, killed by a signal, or status lost.
    Failed,
    /// Its deadline passed and it was killed.
    TimedOut,
    /// It could not be started at all.
    NotStarted,
}

/// Something the scheduler wants done or said, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start this job now.
    Start(Job),
    /// Kill this running job at once; its end is still reported.
    Kill(JobId),
    /// Report this to the core.
    Done(HookDone),
    /// The health verdict changed (`true`: healthy).
    Health(bool),
    /// A demote ran longer than the demote budget (it was not killed).
    DemoteOverrun {
        /// The demote's epoch.
        epoch: Epoch,
        /// How long it ran.
        took: Duration,
        /// The budget it exceeded.
        budget: Duration,
    },
    /// Something worth a log line; nothing to do.
    Note(Note),
}

/// What the scheduler decided that the log should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A promote waits: no lease covers it now.
    Held(Epoch),
    /// A queued promote and its demote both skipped.
    Collapsed(Epoch),
    /// A running job is killed because this request superseded it.
    Superseded {
        /// The job killed.
        job: JobId,
        /// What it ran.
        label: &'static str,
        /// The request that superseded it.
        by: HookKind,
        /// That request's epoch.
        epoch: Epoch,
    },
    /// A notification dropped from a full queue.
    NotifyDropped(Transition),
    /// A refresh due was skipped: no lease, or the lane was busy.
    RefreshSkipped(Epoch),
    /// The request came after shutdown and was not run.
    AfterShutdown(HookKind, Epoch),
    /// No hook of this kind is configured: the request is done at once.
    NotConfigured(HookKind, Epoch),
    /// The health verdict moved after a streak of this many results.
    HealthStreak {
        /// The new verdict.
        healthy: bool,
        /// The streak that moved it.
        streak: u32,
    },
    /// The health check was removed by a reload: healthy.
    CheckRemoved,
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
    /// by a demote, a refresh or notify killed by any request (not failures either).
    pub cancelled: u64,
    /// Promotes held back because no lease covered them when the main lane
    /// was free; each then started late or was skipped.
    pub held: u64,
    /// Demotes (not the start-up one) that ran longer than the demote budget.
    pub overruns: u64,
    /// Time of the last finished run.
    pub last_duration: Option<Duration>,
    /// Time of every finished run, in buckets.
    pub durations: DurationHistogram,
}

/// Counters of the hooks, for metrics.
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
    /// Output bytes read beyond the per-run cap and discarded, all kinds
    /// (counted by the process shell).
    pub output_dropped_bytes: u64,
}

impl HookStats {
    /// Every kind with its name (the `hook` label of metrics), in a fixed order.
    pub fn iter(&self) -> [(&'static str, &KindStats); 5] {
        [
            ("promote", &self.promote),
            ("demote", &self.demote),
            ("refresh", &self.refresh),
            ("notify", &self.notify),
            ("check", &self.check),
        ]
    }

    fn of(&mut self, work: &Work) -> &mut KindStats {
        match work {
            Work::Transition(req) => match req.kind {
                HookKind::Promote => &mut self.promote,
                HookKind::Demote => &mut self.demote,
            },
            Work::Refresh(_) => &mut self.refresh,
            Work::Notify(_) => &mut self.notify,
            Work::Check => &mut self.check,
        }
    }
}

/// The hook queue's policy. See the module docs.
#[derive(Clone, Debug)]
pub struct Schedule {
    cfg: ScheduleConfig,
    /// Promote and demote requests not yet started, in request order.
    queue: VecDeque<Queued>,
    /// Transitions waiting for the notify hook.
    notify_queue: VecDeque<Transition>,
    /// The job on the main lane.
    main: Option<Running>,
    /// The health check running, if any.
    check: Option<Running>,
    /// The epoch led and the instant its lease ends, as last reported.
    lease: Option<(Epoch, Time)>,
    /// The epoch this node leads as far as hooks know: set when a promote
    /// succeeds with nothing queued behind it, cleared by any request.
    leading: Option<Epoch>,
    /// The epoch of the promote last reported as held.
    held: Option<Epoch>,
    next_refresh: Option<Time>,
    next_check: Option<Time>,
    health: Health,
    actions: VecDeque<Action>,
    next_id: u64,
    shut_down: bool,
    stats: HookStats,
}

#[derive(Clone, Debug)]
struct Queued {
    req: HookRequest,
    /// Collapsed with a neighbour: report `Skipped` when its turn comes.
    skipped: bool,
}

#[derive(Clone, Debug)]
struct Running {
    job: Job,
    started: Time,
    /// Killed because a later request superseded it.
    cancelled: bool,
}

#[derive(Clone, Debug)]
struct Health {
    healthy: bool,
    /// No check has passed since start: the first pass makes the node healthy.
    never_passed: bool,
    passes: u32,
    failures: u32,
}

impl Schedule {
    /// A scheduler at `now`. With a health check configured the node starts
    /// unhealthy (the first action is `Health(false)`) and becomes healthy at
    /// its first passing check, not after `check_rise` of them; the first
    /// check is due at once.
    pub fn new(cfg: ScheduleConfig, now: Time) -> Schedule {
        let mut s = Schedule {
            health: Health {
                healthy: !cfg.check,
                never_passed: true,
                passes: 0,
                failures: 0,
            },
            cfg,
            queue: VecDeque::new(),
            notify_queue: VecDeque::new(),
            main: None,
            check: None,
            lease: None,
            leading: None,
            held: None,
            next_refresh: None,
            next_check: None,
            actions: VecDeque::new(),
            next_id: 0,
            shut_down: false,
            stats: HookStats::default(),
        };
        if s.cfg.check {
            s.actions.push_back(Action::Health(false));
            s.next_check = Some(now);
        }
        s
    }

    /// A new configuration (a reload). Jobs running keep going; schedules
    /// follow the new one. Removing the check makes the node healthy;
    /// adding one keeps the current verdict until `check_fall` failures.
    pub fn set_config(&mut self, now: Time, cfg: ScheduleConfig) {
        self.cfg = cfg;
        match (self.refresh_interval(), self.leading) {
            (Some(interval), Some(_)) => {
                if self.next_refresh.is_none() {
                    self.next_refresh = Some(now + interval);
                }
            }
            _ => self.next_refresh = None,
        }
        if self.cfg.check {
            if self.next_check.is_none() {
                self.next_check = Some(now);
            }
        } else {
            self.next_check = None;
            self.health.passes = 0;
            self.health.failures = 0;
            if !self.health.healthy {
                self.note(Note::CheckRemoved);
                self.set_health(true);
            }
        }
        self.step(now);
    }

    /// Queues a promote or demote behind any running or queued one. See the
    /// module docs for what it collapses with and what it kills.
    pub fn request(&mut self, now: Time, req: HookRequest) {
        self.leading = None;
        self.next_refresh = None;
        if self.shut_down {
            self.note(Note::AfterShutdown(req.kind, req.epoch));
            self.done(&req, HookOutcome::Skipped);
            return;
        }
        if let Some(run) = &mut self.main {
            let supersedes = match &run.job.work {
                Work::Refresh(_) | Work::Notify(_) => true,
                Work::Transition(running) => {
                    running.kind == HookKind::Promote && req.kind == HookKind::Demote
                }
                Work::Check => false,
            };
            if supersedes && !run.cancelled {
                run.cancelled = true;
                let (job, label) = (run.job.id, run.job.work.label());
                self.note(Note::Superseded {
                    job,
                    label,
                    by: req.kind,
                    epoch: req.epoch,
                });
                self.actions.push_back(Action::Kill(job));
            }
        }
        let mut skipped = false;
        if req.kind == HookKind::Demote {
            if let Some(last) = self.queue.iter_mut().rev().find(|q| !q.skipped) {
                if last.req.kind == HookKind::Promote && last.req.epoch == req.epoch {
                    last.skipped = true;
                    skipped = true;
                }
            }
            if skipped {
                self.note(Note::Collapsed(req.epoch));
            }
        }
        self.queue.push_back(Queued { req, skipped });
        self.step(now);
    }

    /// Queues the notify hook for a transition, if one is configured, behind
    /// the transition hooks. Up to `NOTIFY_QUEUE_MAX` wait; beyond that the
    /// oldest waiting is dropped.
    pub fn notify(&mut self, now: Time, t: &Transition) {
        if !self.cfg.notify || self.shut_down {
            return;
        }
        self.notify_queue.push_back(t.clone());
        while self.notify_queue.len() > NOTIFY_QUEUE_MAX {
            if let Some(old) = self.notify_queue.pop_front() {
                self.stats.notify.skipped += 1;
                self.note(Note::NotifyDropped(old));
            }
        }
        self.step(now);
    }

    /// The epoch this node leads and the instant its lease ends (`None`: it
    /// leads none). A held promote starts here if the lease now covers it.
    pub fn set_lease(&mut self, now: Time, lease: Option<(Epoch, Time)>) {
        if self.lease != lease {
            self.lease = lease;
            self.step(now);
        }
    }

    /// Time passed: start what is due.
    pub fn tick(&mut self, now: Time) {
        self.step(now);
    }

    /// A started job ended (or could not start). Unknown ids (a job already
    /// reported, or from before `shutdown`) are ignored.
    pub fn finished(&mut self, now: Time, id: JobId, exit: Exit) {
        let run = if self.main.as_ref().is_some_and(|r| r.job.id == id) {
            self.main.take()
        } else if self.check.as_ref().is_some_and(|r| r.job.id == id) {
            self.check.take()
        } else {
            None
        };
        let Some(run) = run else { return };
        let took = now.since(run.started);
        let outcome = match exit {
            Exit::TimedOut => HookOutcome::TimedOut,
            _ if run.cancelled => HookOutcome::Failed,
            Exit::Ok => HookOutcome::Ok,
            Exit::Failed | Exit::NotStarted => HookOutcome::Failed,
        };
        let stats = self.stats.of(&run.job.work);
        stats.last_duration = Some(took);
        stats.durations.record(took);
        match outcome {
            HookOutcome::TimedOut => stats.timeouts += 1,
            HookOutcome::Failed if run.cancelled => stats.cancelled += 1,
            HookOutcome::Failed => stats.failures += 1,
            HookOutcome::Ok | HookOutcome::Skipped => {}
        }
        match run.job.work {
            Work::Transition(req) => {
                let budget = self.cfg.demote_budget;
                if req.kind == HookKind::Demote && req.reason != Reason::Startup && took > budget {
                    self.stats.demote.overruns += 1;
                    self.actions.push_back(Action::DemoteOverrun {
                        epoch: req.epoch,
                        took,
                        budget,
                    });
                }
                self.complete(&req, outcome, now);
            }
            Work::Refresh(_) | Work::Notify(_) => {}
            // A check removed by a reload while it ran gives no verdict.
            Work::Check if !self.cfg.check => {}
            Work::Check => {
                self.next_check = Some((run.started + self.check_interval()).max(now));
                self.check_verdict(outcome == HookOutcome::Ok);
            }
        }
        self.step(now);
    }

    /// Stops: the running transition is reported `Failed` and the queued
    /// ones `Skipped` at once, every running job is killed, and later
    /// requests are reported `Skipped`. Idempotent.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        for run in [self.main.take(), self.check.take()].into_iter().flatten() {
            if let Work::Transition(req) = &run.job.work {
                self.done(req, HookOutcome::Failed);
            }
            self.actions.push_back(Action::Kill(run.job.id));
        }
        for q in std::mem::take(&mut self.queue) {
            self.done(&q.req, HookOutcome::Skipped);
        }
        self.notify_queue.clear();
        self.next_refresh = None;
        self.next_check = None;
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `tick` is next needed: a refresh or check that falls due.
    pub fn next_timeout(&self) -> Option<Time> {
        let check = self.next_check.filter(|_| self.check.is_none());
        [self.next_refresh, check].into_iter().flatten().min()
    }

    /// The current health verdict.
    pub fn healthy(&self) -> bool {
        self.health.healthy
    }

    /// No promote, demote, refresh or notify runs or waits, and every action
    /// has been polled. The periodic health check does not count.
    pub fn is_idle(&self) -> bool {
        self.main.is_none()
            && self.queue.is_empty()
            && self.notify_queue.is_empty()
            && self.actions.is_empty()
    }

    /// The epoch of the first promote waiting in the queue, if any.
    pub fn waiting_promote(&self) -> Option<Epoch> {
        self.queue
            .iter()
            .find(|q| q.req.kind == HookKind::Promote && !q.skipped)
            .map(|q| q.req.epoch)
    }

    /// The epoch led as far as hooks know (a promote succeeded, nothing since).
    pub fn leading(&self) -> Option<Epoch> {
        self.leading
    }

    /// The counters.
    pub fn stats(&self) -> &HookStats {
        &self.stats
    }

    /// Starts what can start: the main lane's next job, then the check.
    fn step(&mut self, now: Time) {
        if self.shut_down {
            return;
        }
        self.start_main(now);
        self.start_check(now);
    }

    fn start_main(&mut self, now: Time) {
        while self.main.is_none() {
            if let Some(q) = self.queue.front() {
                let epoch = q.req.epoch;
                if q.req.kind == HookKind::Promote && !q.skipped && !self.authorized(epoch, now) {
                    if self.held != Some(epoch) {
                        self.held = Some(epoch);
                        self.stats.promote.held += 1;
                        self.note(Note::Held(epoch));
                    }
                    // Nothing overtakes a held promote: it waits for its
                    // lease or its demote, both of which come soon.
                    return;
                }
            }
            if let Some(q) = self.queue.pop_front() {
                let kind = q.req.kind;
                if q.skipped {
                    self.stats.of(&Work::Transition(q.req.clone())).skipped += 1;
                    self.done(&q.req, HookOutcome::Skipped);
                    continue;
                }
                let configured = match kind {
                    HookKind::Promote => self.cfg.promote,
                    HookKind::Demote => self.cfg.demote,
                };
                if !configured {
                    self.note(Note::NotConfigured(kind, q.req.epoch));
                    self.complete(&q.req, HookOutcome::Ok, now);
                    continue;
                }
                self.start(now, Work::Transition(q.req));
                continue;
            }
            if let Some(t) = self.notify_queue.pop_front() {
                self.start(now, Work::Notify(t));
                continue;
            }
            break;
        }
        let Some(due) = self.next_refresh else { return };
        if now < due {
            return;
        }
        self.next_refresh = self.refresh_interval().map(|interval| {
            let next = due + interval;
            if next <= now {
                now + interval
            } else {
                next
            }
        });
        let Some(epoch) = self.leading.filter(|_| self.cfg.promote) else {
            return;
        };
        if !self.authorized(epoch, now) || self.main.is_some() {
            self.stats.refresh.skipped += 1;
            self.note(Note::RefreshSkipped(epoch));
            return;
        }
        self.start(now, Work::Refresh(epoch));
    }

    fn start_check(&mut self, now: Time) {
        if self.check.is_some() || !self.next_check.is_some_and(|t| t <= now) {
            return;
        }
        if !self.cfg.check {
            self.next_check = None;
            return;
        }
        self.start(now, Work::Check);
    }

    /// Hands out a job for `work` and puts it on its lane.
    fn start(&mut self, now: Time, work: Work) {
        self.next_id += 1;
        let job = Job {
            id: JobId(self.next_id),
            work,
        };
        self.stats.of(&job.work).runs += 1;
        let run = Running {
            job: job.clone(),
            started: now,
            cancelled: false,
        };
        if job.work == Work::Check {
            self.check = Some(run);
        } else {
            self.main = Some(run);
        }
        self.actions.push_back(Action::Start(job));
    }

    /// Whether the lease of `epoch` holds at `now`.
    fn authorized(&self, epoch: Epoch, now: Time) -> bool {
        self.lease
            .is_some_and(|(leads, until)| leads == epoch && now < until)
    }

    /// Reports a finished promote or demote and updates the refresh state.
    fn complete(&mut self, req: &HookRequest, outcome: HookOutcome, now: Time) {
        self.done(req, outcome);
        let leads =
            req.kind == HookKind::Promote && outcome == HookOutcome::Ok && self.queue.is_empty();
        self.leading = leads.then_some(req.epoch);
        self.next_refresh = match (self.leading, self.refresh_interval()) {
            (Some(_), Some(interval)) => Some(now + interval),
            _ => None,
        };
    }

    fn done(&mut self, req: &HookRequest, outcome: HookOutcome) {
        self.actions.push_back(Action::Done(HookDone {
            kind: req.kind,
            epoch: req.epoch,
            outcome,
        }));
    }

    fn note(&mut self, note: Note) {
        self.actions.push_back(Action::Note(note));
    }

    /// The refresh interval, if refreshes can run: enabled, and a promote
    /// hook to run them with.
    fn refresh_interval(&self) -> Option<Duration> {
        let interval = self.cfg.refresh_interval.filter(|_| self.cfg.promote)?;
        Some(interval.max(MIN_INTERVAL))
    }

    fn check_interval(&self) -> Duration {
        self.cfg.check_interval.max(MIN_INTERVAL)
    }

    /// Counts a check result and moves the verdict when a streak is long enough.
    fn check_verdict(&mut self, passed: bool) {
        let h = &mut self.health;
        if passed {
            h.failures = 0;
            h.passes = h.passes.saturating_add(1);
            let rise = self.cfg.check_rise.max(1);
            if !h.healthy && (h.never_passed || h.passes >= rise) {
                let streak = h.passes;
                self.note(Note::HealthStreak {
                    healthy: true,
                    streak,
                });
                self.set_health(true);
            }
            self.health.never_passed = false;
        } else {
            h.passes = 0;
            h.failures = h.failures.saturating_add(1);
            let fall = self.cfg.check_fall.max(1);
            if h.healthy && h.failures >= fall {
                let streak = h.failures;
                self.note(Note::HealthStreak {
                    healthy: false,
                    streak,
                });
                self.set_health(false);
            }
        }
    }

    fn set_health(&mut self, healthy: bool) {
        if self.health.healthy != healthy {
            self.health.healthy = healthy;
            self.actions.push_back(Action::Health(healthy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{NodeId, Role};

    const MS: u64 = 1_000_000;

    fn cfg() -> ScheduleConfig {
        ScheduleConfig {
            promote: true,
            demote: true,
            notify: true,
            check: false,
            refresh_interval: None,
            check_interval: Duration::from_secs(2),
            check_fall: 2,
            check_rise: 3,
            demote_budget: Duration::from_millis(25),
        }
    }

    fn req(kind: HookKind, epoch: u64) -> HookRequest {
        HookRequest {
            kind,
            epoch: Epoch(epoch),
            leader: Some(NodeId(1)),
            reason: match kind {
                HookKind::Promote => Reason::Elected,
                HookKind::Demote => Reason::LeaseExpired,
            },
        }
    }

    fn done(kind: HookKind, epoch: u64, outcome: HookOutcome) -> Action {
        Action::Done(HookDone {
            kind,
            epoch: Epoch(epoch),
            outcome,
        })
    }

    /// The actions, without the notes.
    fn drain(s: &mut Schedule) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action())
            .filter(|a| !matches!(a, Action::Note(_)))
            .collect()
    }

    fn started(actions: &[Action]) -> Vec<JobId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start(job) => Some(job.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_promote_waits_for_its_lease_and_is_skipped_with_its_demote() {
        let mut s = Schedule::new(cfg(), Time::ZERO);
        s.request(Time(MS), req(HookKind::Promote, 5));
        assert_eq!(drain(&mut s), [], "no lease: held");
        s.set_lease(Time(2 * MS), Some((Epoch(5), Time(2 * MS))));
        assert_eq!(drain(&mut s), [], "a lease already ended");
        s.set_lease(Time(3 * MS), Some((Epoch(4), Time(100 * MS))));
        assert_eq!(drain(&mut s), [], "another epoch's lease");
        assert_eq!(s.stats().promote.held, 1);
        s.request(Time(4 * MS), req(HookKind::Demote, 5));
        assert_eq!(
            drain(&mut s),
            [
                done(HookKind::Promote, 5, HookOutcome::Skipped),
                done(HookKind::Demote, 5, HookOutcome::Skipped)
            ]
        );
        s.request(Time(5 * MS), req(HookKind::Promote, 6));
        s.set_lease(Time(5 * MS), Some((Epoch(6), Time(100 * MS))));
        let a = drain(&mut s);
        assert_eq!(started(&a).len(), 1, "renewed: it starts {a:?}");
    }

    #[test]
    fn a_demote_kills_a_running_promote_which_then_reports_failed() {
        let mut s = Schedule::new(cfg(), Time::ZERO);
        s.set_lease(Time::ZERO, Some((Epoch(4), Time(100 * MS))));
        s.request(Time(MS), req(HookKind::Promote, 4));
        let promote = started(&drain(&mut s))[0];
        s.request(Time(2 * MS), req(HookKind::Demote, 4));
        assert_eq!(drain(&mut s), [Action::Kill(promote)]);
        s.finished(Time(3 * MS), promote, Exit::Failed);
        let a = drain(&mut s);
        assert_eq!(a[0], done(HookKind::Promote, 4, HookOutcome::Failed));
        assert_eq!(started(&a).len(), 1, "the demote starts {a:?}");
        assert_eq!(s.stats().promote.cancelled, 1);
        assert_eq!(s.stats().promote.failures, 0);
    }

    #[test]
    fn every_finished_run_is_timed_with_its_kind() {
        let mut s = Schedule::new(cfg(), Time::ZERO);
        s.set_lease(Time::ZERO, Some((Epoch(4), Time(100 * MS))));
        s.request(Time(MS), req(HookKind::Promote, 4));
        let promote = started(&drain(&mut s))[0];
        // Killed by the demote after 4 ms: timed all the same.
        s.request(Time(2 * MS), req(HookKind::Demote, 4));
        s.finished(Time(5 * MS), promote, Exit::Failed);
        let demote = started(&drain(&mut s))[0];
        assert_eq!(s.stats().demote.durations.count(), 0, "still running");
        s.finished(Time(35 * MS), demote, Exit::Ok);
        // A job already reported is not timed twice.
        s.finished(Time(40 * MS), demote, Exit::Ok);
        let stats = s.stats();
        assert_eq!(stats.promote.durations.count(), 1);
        assert_eq!(stats.promote.durations.sum(), Duration::from_millis(4));
        assert_eq!(stats.demote.durations.count(), 1);
        assert_eq!(stats.demote.durations.sum(), Duration::from_millis(30));
        assert_eq!(stats.demote.last_duration, Some(Duration::from_millis(30)));
        assert_eq!(stats.refresh.durations.count(), 0);
    }

    #[test]
    fn outcomes_follow_the_exit_and_whether_the_job_was_killed() {
        // (exit reported, killed by a demote, outcome)
        let table = [
            (Exit::Ok, false, HookOutcome::Ok),
            (Exit::Failed, false, HookOutcome::Failed),
            (Exit::NotStarted, false, HookOutcome::Failed),
            (Exit::TimedOut, false, HookOutcome::TimedOut),
            (Exit::Ok, true, HookOutcome::Failed),
            (Exit::Failed, true, HookOutcome::Failed),
            (Exit::TimedOut, true, HookOutcome::TimedOut),
        ];
        for (exit, killed, want) in table {
            let mut s = Schedule::new(cfg(), Time::ZERO);
            s.set_lease(Time::ZERO, Some((Epoch(1), Time(100 * MS))));
            s.request(Time(MS), req(HookKind::Promote, 1));
            let id = started(&drain(&mut s))[0];
            if killed {
                s.request(Time(MS), req(HookKind::Demote, 1));
            }
            s.finished(Time(2 * MS), id, exit);
            let a = drain(&mut s);
            let got = a.iter().find(|a| matches!(a, Action::Done(_)));
            assert_eq!(
                got,
                Some(&done(HookKind::Promote, 1, want)),
                "{exit:?} killed {killed}"
            );
        }
    }

    #[test]
    fn queued_promote_and_demote_of_one_epoch_collapse() {
        let mut s = Schedule::new(cfg(), Time::ZERO);
        s.request(Time::ZERO, req(HookKind::Demote, 0));
        let first = started(&drain(&mut s))[0];
        s.request(Time::ZERO, req(HookKind::Promote, 1));
        s.request(Time::ZERO, req(HookKind::Demote, 1));
        assert_eq!(drain(&mut s), []);
        s.finished(Time(MS), first, Exit::Ok);
        assert_eq!(
            drain(&mut s),
            [
                done(HookKind::Demote, 0, HookOutcome::Ok),
                done(HookKind::Promote, 1, HookOutcome::Skipped),
                done(HookKind::Demote, 1, HookOutcome::Skipped)
            ]
        );
    }

    #[test]
    fn notify_runs_after_the_transition_hook_on_the_same_lane() {
        let mut s = Schedule::new(cfg(), Time::ZERO);
        s.set_lease(Time::ZERO, Some((Epoch(2), Time(100 * MS))));
        let t = Transition {
            lost: None,
            role: Role::Leader,
            epoch: Epoch(2),
            leader: Some(NodeId(1)),
            reason: Reason::Elected,
        };
        s.request(Time::ZERO, req(HookKind::Promote, 2));
        s.notify(Time::ZERO, &t);
        let a = drain(&mut s);
        assert_eq!(started(&a).len(), 1, "only the promote: {a:?}");
        s.finished(Time(MS), started(&a)[0], Exit::Ok);
        let a = drain(&mut s);
        assert_eq!(a[0], done(HookKind::Promote, 2, HookOutcome::Ok));
        assert!(matches!(&a[1], Action::Start(Job { work: Work::Notify(n), .. }) if *n == t));
    }

    #[test]
    fn a_demote_over_its_budget_is_reported_not_killed() {
        // (demote reason, run time in ms, overrun reported)
        let table = [
            (Reason::LeaseExpired, 25, false),
            (Reason::LeaseExpired, 26, true),
            (Reason::Startup, 500, false),
        ];
        for (reason, took, overrun) in table {
            let mut s = Schedule::new(cfg(), Time::ZERO);
            let mut r = req(HookKind::Demote, 3);
            r.reason = reason;
            s.request(Time::ZERO, r);
            let a = drain(&mut s);
            assert!(!a.iter().any(|a| matches!(a, Action::Kill(_))));
            s.finished(Time(took * MS), started(&a)[0], Exit::Ok);
            let a = drain(&mut s);
            let reported = a.iter().any(|a| matches!(a, Action::DemoteOverrun { .. }));
            assert_eq!(reported, overrun, "{reason} {took} ms");
            assert_eq!(s.stats().demote.overruns, u64::from(overrun));
        }
    }

    #[test]
    fn health_verdict_follows_fall_and_rise() {
        let mut c = cfg();
        c.check = true;
        let mut s = Schedule::new(c, Time::ZERO);
        let mut verdicts = vec![];
        let mut now = Time::ZERO;
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
            s.tick(now);
            let mut id = None;
            while let Some(a) = s.poll_action() {
                match a {
                    Action::Start(job) => id = Some(job.id),
                    Action::Health(v) => verdicts.push(v),
                    _ => {}
                }
            }
            let id = id.unwrap_or_else(|| panic!("step {i}: no check started"));
            let exit = if passed { Exit::Ok } else { Exit::Failed };
            s.finished(now, id, exit);
            while let Some(a) = s.poll_action() {
                if let Action::Health(v) = a {
                    verdicts.push(v);
                }
            }
            assert_eq!(s.healthy(), healthy, "step {i}");
            now = now + Duration::from_secs(2);
        }
        assert_eq!(verdicts, [false, true, false, true]);
    }
}
