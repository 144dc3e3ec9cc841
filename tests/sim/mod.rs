//! A deterministic cluster simulator for the election core.
//!
//! N nodes, virtual time, one seed. The network loses, duplicates, delays and
//! reorders messages and can be partitioned symmetrically or one way; nodes
//! crash (keeping only what they persisted) and restart, or lose their state
//! file too and stay down, as the daemon refuses to start without one
//! (`regent init` is an operator's decision, not a restart's); each node's clock
//! runs at its own rate within the configured drift bound; hooks are slow or
//! fail; health checks flap; operators step leaders down and stop nodes;
//! state writes are slow, coalesced or fail; a node's event loop stalls.
//!
//! Hooks run through the daemon's own scheduler
//! (`regentd::hooks::schedule`): the simulator only models the processes,
//! each running for a drawn time (demotes within the demote budget, the
//! contract S3 rests on; others 1-30 ms, up to 1 s with slow hooks, killed
//! at the timeout). A stalled loop handles nothing (its events wait and are
//! handled in arrival order on resume), but hook processes end on time and
//! the lease guard (`regentd::core::Guard`) still fires: it kills the
//! daemon, runs the demote itself, and systemd restarts the daemon a second
//! after.
//!
//! After every event the invariants of the design brief are checked:
//! S1 (one leader per epoch), S2 (promised and led epochs never decrease, also
//! across restarts) and S3 (no instant with two leaders, in real time: a host
//! holds from its promote hook's start to the end of the demote for that
//! epoch, or of the start-up demote after a crash, or of the guard's demote). After
//! the faults heal, L1 (a leader emerges among the live nodes, the right
//! one) is checked, and in
//! runs whose only fault is loss that cannot cut a quorum off, L2 (no
//! leadership change). A failure panics with the seed and the event trace.
//!
//! Scripted runs (`tests/sim_scenarios.rs`) build a `Plan::fixed`, pin what
//! the seed would otherwise draw (clock rates, per-link delays, hook
//! durations) and schedule faults at given instants (`start_at`, `crash_at`,
//! `restart_at`, `block_at`, `unblock_at`, `health_at`, `reload_at`) before
//! running. The pinned knobs are unset in seeded runs, which then draw
//! exactly what they drew before: a seed still replays the same run.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use regentd::core::{
    guard_slack, CoreConfig, Effect, Epoch, Guard, GuardAction, HookKind, HookRequest, Incarnation,
    Input, Message, Node, NodeId, Persisted, Reason, Rng, Role, Time, Timing, Transition,
};
use regentd::hooks::schedule::{Action, Exit, Job, JobId, Schedule, ScheduleConfig, Work};
use regentd::persist::Coalescer;

/// What kind of run a seed makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every fault, then heal and check liveness.
    Chaos,
    /// Only random loss that cannot cut a quorum off: check stability.
    Lossy,
    /// Links that work one way only, from the start and never healed: a
    /// leader must emerge wherever some node hears a quorum both ways.
    OneWay,
}

/// Knobs of a run, all derived from the seed unless overridden.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub scenario: Scenario,
    pub nodes: usize,
    pub timing: Timing,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub holdoff: Duration,
    pub priorities: Vec<u32>,
    /// Which members are witnesses: they vote but never lead.
    pub witnesses: Vec<bool>,
    /// Virtual length of the fault phase.
    pub chaos: Duration,
    /// Loss percentage in `Lossy` runs.
    pub loss_percent: u32,
    /// A scripted run (`Plan::fixed`): the seed does not replay it.
    pub scripted: bool,
    /// A notify hook is configured (it shares the main lane).
    pub notify: bool,
    /// Refresh runs while leading, at this interval.
    pub refresh: Option<Duration>,
    /// A hook still running after this is killed and reports `TimedOut`.
    pub hook_timeout: Duration,
    /// Hosts beyond the first member list: not installed until a change
    /// adds them.
    pub spare: usize,
    /// The operator changes the member list during the fault phase, one
    /// member per generation, reloading each host in turn (§3.19).
    pub changes: bool,
}

impl Plan {
    /// A plan for a scripted run: `nodes` members with `timing`, priority
    /// 100 each, the daemon's election defaults (preemption on after 5 s,
    /// 10 s hold-off), and no faults of its own. Adjust the fields, build a
    /// `Sim`, pin its clocks and links and schedule its faults.
    pub fn fixed(nodes: usize, timing: Timing) -> Plan {
        Plan {
            seed: 0,
            scenario: Scenario::Chaos,
            nodes,
            timing,
            preempt: true,
            preempt_delay: Duration::from_millis(5_000),
            holdoff: Duration::from_millis(10_000),
            priorities: vec![100; nodes],
            witnesses: vec![false; nodes],
            chaos: Duration::ZERO,
            loss_percent: 0,
            scripted: true,
            notify: false,
            refresh: None,
            hook_timeout: Duration::from_secs(10),
            spare: 0,
            changes: false,
        }
    }

    /// Derives a plan from a seed.
    pub fn from_seed(seed: u64) -> Plan {
        let mut rng = Rng::new(seed ^ 0x5eed_0fc0_ffee);
        let scenario = if rng.chance(25) {
            Scenario::Lossy
        } else {
            Scenario::Chaos
        };
        let nodes = rng.range(1, 9) as usize;
        let fast = rng.chance(40);
        let (hb, dead) = if fast { (20, 100) } else { (100, 300) };
        let timing = Timing {
            heartbeat: Duration::from_millis(hb),
            dead_after: Duration::from_millis(dead),
            lease_margin: Duration::from_millis(if fast { 5 } else { 20 }),
            max_drift_ppm: [0, 1_000, 10_000, 50_000][rng.range(0, 3) as usize],
            demote_budget: Duration::from_millis(if fast { 10 } else { 25 }),
        };
        let priorities = (0..nodes)
            .map(|_| {
                if rng.chance(50) {
                    100
                } else {
                    rng.range(1, 200) as u32
                }
            })
            .collect();
        let mut plan = Plan {
            seed,
            scenario,
            nodes,
            timing,
            preempt: rng.chance(70),
            preempt_delay: Duration::from_millis(rng.range(0, 1500)),
            holdoff: Duration::from_millis(rng.range(200, 2000)),
            witnesses: vec![false; nodes],
            priorities,
            chaos: Duration::from_millis(rng.range(3_000, 12_000)),
            loss_percent: rng.range(5, 20) as u32,
            scripted: false,
            notify: rng.chance(50),
            refresh: rng
                .chance(50)
                .then(|| Duration::from_millis(rng.range(50, 1_000))),
            hook_timeout: Duration::from_millis(600),
            spare: 0,
            changes: false,
        };
        // Drawn last, so the other plans stay what they were.
        if plan.scenario == Scenario::Chaos && rng.chance(15) {
            plan.scenario = Scenario::OneWay;
        }
        // Two or four hosts and a witness, the safe small clusters.
        if rng.chance(20) {
            plan.nodes = if rng.chance(50) { 3 } else { 5 };
            plan.priorities = (0..plan.nodes).map(|_| rng.range(1, 200) as u32).collect();
            plan.witnesses = vec![false; plan.nodes];
            plan.witnesses[rng.range(0, plan.nodes as u64 - 1) as usize] = true;
        } else if plan.scenario == Scenario::Chaos && rng.chance(25) {
            // Members come and go while every fault runs: up to two hosts
            // wait outside the first list for a change to add them.
            plan.changes = true;
            plan.spare = rng.range(0, 2) as usize;
            for _ in 0..plan.spare {
                plan.priorities.push(rng.range(1, 200) as u32);
                plan.witnesses.push(false);
            }
            plan.nodes += plan.spare;
        }
        plan
    }
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        to: usize,
        msg: Message,
    },
    Timer {
        node: usize,
        generation: u64,
    },
    /// A hook process ended (in real time, whatever the loop does).
    ProcessEnd {
        node: usize,
        generation: u64,
        job: JobId,
        exit: Exit,
        /// The end of a kill, not of the run as drawn.
        killed: bool,
    },
    /// The event loop learns that a hook process ended.
    HookFinished {
        node: usize,
        generation: u64,
        job: JobId,
        exit: Exit,
    },
    /// A stalled event loop runs again.
    Resume {
        node: usize,
        generation: u64,
    },
    /// The lease guard's timer.
    GuardCheck {
        node: usize,
        generation: u64,
    },
    /// The demote the guard ran after fencing has ended.
    GuardDemoteEnd {
        node: usize,
        epoch: Epoch,
    },
    /// A write of the state file finished (or failed) on node's disk.
    Persisted {
        node: usize,
        generation: u64,
        state: Persisted,
        ok: bool,
    },
    /// The driver's probe of a failed state directory.
    StorageProbe {
        node: usize,
        generation: u64,
    },
    Fault(Fault),
}

#[derive(Clone, Debug)]
enum Fault {
    Crash(usize),
    /// A crash that also wipes the node's state file: the daemon refuses to
    /// start without it, so the node stays down for good.
    StateLoss(usize),
    Restart(usize),
    Stop(usize),
    Partition(Vec<usize>),
    OneWay {
        from: usize,
        to: usize,
    },
    // Lifts a one-way block (from a partition, too).
    Unblock {
        from: usize,
        to: usize,
    },
    HealNetwork,
    Loss(u32),
    Delay(u64),
    Duplicate(u32),
    Health {
        node: usize,
        ok: bool,
    },
    HookFailures {
        node: usize,
        percent: u32,
    },
    SlowHooks {
        node: usize,
        slow: bool,
    },
    /// The state disk's fsync takes 50 ms to 3 s (`slow`) or a millisecond.
    SlowDisk {
        node: usize,
        slow: bool,
    },
    /// This share of state writes fail (EIO).
    FailingDisk {
        node: usize,
        percent: u32,
    },
    StepDown {
        to: Option<usize>,
    },
    /// The node's event loop stops for this long (ns): nothing is handled,
    /// but hook processes and the guard go on.
    Stall {
        node: usize,
        ns: u64,
    },
    HealAll,
    // Node::reconfigure(cfg) on node .0; later restarts use cfg too.
    Reload(usize, Box<CoreConfig>),
    /// The operator starts the next member-list change: writes the new
    /// file to every host on either list and reloads them one by one.
    Change,
    /// The operator runs `regent reload` on a host: it takes its file if it
    /// runs an older one, and is asked again later (`tries` more times) if
    /// it refuses.
    ReloadFile {
        node: usize,
        tries: u32,
    },
    /// A host added by a change is installed and started.
    Install(usize),
    /// A host removed by a change is stopped for good.
    Retire(usize),
}

/// Something a scripted test may look at after (or during) the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A node's `Effect::Transition`.
    Transition { node: usize, transition: Transition },
    /// A promote hook started: the node holds from here.
    Promote { node: usize, epoch: Epoch },
    /// A demote hook was requested (not the start-up one).
    Demote {
        node: usize,
        epoch: Epoch,
        reason: Reason,
    },
    /// A demote hook ended (the daemon's, or the guard's): the hold ends.
    DemoteEnd { node: usize, epoch: Epoch },
    /// The node's event loop stalled.
    Stalled { node: usize },
    /// The guard killed the stalled daemon and runs the demote of `epoch`.
    Fence { node: usize, epoch: Epoch },
}

/// A hook process the simulator runs for a node.
struct Proc {
    /// The promote or demote it runs, if it is one.
    req: Option<HookRequest>,
    /// A kill was asked for: only the kill's end counts.
    killed: bool,
}

/// One simulated host: the core, its clock, its durable state and its hooks.
struct Host {
    id: NodeId,
    cfg: CoreConfig,
    node: Option<Node>,
    persisted: Persisted,
    incarnation: Incarnation,
    /// Bumped when the process goes away: writes in flight are lost.
    disk_generation: u64,
    /// The daemon's own coalescing rule: one write under way, and only the
    /// newest request waiting for it.
    disk: Coalescer,
    slow_disk: bool,
    disk_fail_percent: u32,
    /// Clock rate error in ppm, within the drift bound.
    rate_ppm: i64,
    /// Local time at real time zero.
    offset: u64,
    timer_generation: u64,
    /// The real instant of the timer event now pending, if any: a drain
    /// that wants the same instant schedules nothing new.
    timer_at: Option<u64>,
    /// The daemon's hook scheduler: the same code the daemon runs.
    sched: Option<Schedule>,
    /// Hook processes running, by job.
    procs: BTreeMap<JobId, Proc>,
    /// Bumped when the process goes away: its hooks die with it.
    proc_generation: u64,
    /// The event loop is stalled; events wait in `backlog`.
    stalled: bool,
    stall_generation: u64,
    backlog: VecDeque<Event>,
    /// The lease guard: a separate process, which survives the daemon.
    guard: Guard,
    guard_generation: u64,
    guard_scheduled: Option<Time>,
    /// The guard runs its demote; the daemon is down until it ends.
    fencing: bool,
    hook_fail_percent: u32,
    slow_hooks: bool,
    healthy: bool,
    /// Leadership held (epoch, real start): from the promote hook's start to
    /// the end of its demote (or of the start-up demote after a crash, or of
    /// the guard's demote).
    holding: Option<(Epoch, u64)>,
    last_led: Epoch,
    promised_seen: Epoch,
    /// A restart was asked for while the node was still shutting down.
    restart_on_exit: bool,
    /// Its state file is gone: the daemon refuses to start, whoever asks.
    lost: bool,
    /// It is on a member list, or was and still runs: a host a change has
    /// not added yet, or one it removed and stopped, is not.
    installed: bool,
}

/// The simulator.
pub struct Sim {
    pub plan: Plan,
    rng: Rng,
    /// Draws whether a crash also loses the state file: a stream of its
    /// own, so that every other draw, and so every plan without a state
    /// loss, stays what it was before state losses were drawn.
    state_loss_rng: Rng,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    hosts: Vec<Host>,
    blocked: Vec<Vec<bool>>,
    loss: u32,
    duplicate: u32,
    max_delay_us: u64,
    /// Fixed one-way delay per link (ns), overriding the random one.
    link_delay: Vec<Vec<Option<u64>>>,
    /// Fixed hook run time (ns), overriding the random one.
    hook_duration: Option<u64>,
    /// Fixed demote run time (ns), overriding the others for demotes.
    demote_duration: Option<u64>,
    /// Fixed state write time (ns), overriding the random one.
    disk_latency: Option<u64>,
    led: BTreeMap<Epoch, NodeId>,
    /// Transitions, promotes and demotes, with their real instants.
    observed: Vec<(u64, Observed)>,
    trace: VecDeque<(u64, TraceLine)>,
    full_trace: bool,
    /// Promote effects seen (count) after the last check point.
    pub promotions: usize,
    pub demotions: usize,
    /// The member list in the operator's file, and its generation.
    file_members: Vec<NodeId>,
    file_generation: u32,
    /// The operator's reloads, installs and removals happen before this
    /// (real ns): the end of the fault phase.
    change_deadline: u64,
}

const TRACE_KEEP: usize = 400;

impl Sim {
    pub fn new(plan: Plan) -> Sim {
        let mut rng = Rng::new(plan.seed);
        let first = plan.nodes - plan.spare;
        let ids: Vec<NodeId> = (1..=plan.nodes as u32).map(NodeId).collect();
        let members = ids[..first].to_vec();
        let drift = i64::from(plan.timing.max_drift_ppm);
        let hosts = (0..plan.nodes)
            .map(|i| {
                let cfg = CoreConfig {
                    id: ids[i],
                    members: members.clone(),
                    generation: 1,
                    priority: plan.priorities[i],
                    timing: plan.timing.clone(),
                    preempt: plan.preempt,
                    preempt_delay: plan.preempt_delay,
                    holdoff: plan.holdoff,
                    witness: plan.witnesses[i],
                };
                // Extremes of the drift bound are the interesting cases.
                let rate_ppm = match rng.range(0, 3) {
                    0 => drift,
                    1 => -drift,
                    _ => rng.range(0, 2 * drift as u64) as i64 - drift,
                };
                Host {
                    id: ids[i],
                    cfg,
                    node: None,
                    persisted: Persisted::default(),
                    incarnation: Incarnation(0),
                    disk_generation: 0,
                    disk: Coalescer::default(),
                    slow_disk: false,
                    disk_fail_percent: 0,
                    rate_ppm,
                    offset: rng.range(0, 1_000_000_000_000),
                    timer_generation: 0,
                    timer_at: None,
                    sched: None,
                    procs: BTreeMap::new(),
                    proc_generation: 0,
                    stalled: false,
                    stall_generation: 0,
                    backlog: VecDeque::new(),
                    guard: Guard::new(),
                    guard_generation: 0,
                    guard_scheduled: None,
                    fencing: false,
                    hook_fail_percent: 0,
                    slow_hooks: false,
                    healthy: true,
                    holding: None,
                    last_led: Epoch::default(),
                    promised_seen: Epoch::default(),
                    restart_on_exit: false,
                    lost: false,
                    installed: i < first,
                }
            })
            .collect();
        let n = plan.nodes;
        Sim {
            state_loss_rng: Rng::new(plan.seed ^ 0x57a7_e105),
            plan,
            rng,
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            hosts,
            blocked: vec![vec![false; n]; n],
            loss: 0,
            duplicate: 0,
            max_delay_us: 2_000,
            link_delay: vec![vec![None; n]; n],
            hook_duration: None,
            demote_duration: None,
            disk_latency: None,
            led: BTreeMap::new(),
            observed: Vec::new(),
            trace: VecDeque::new(),
            full_trace: std::env::var_os("SIM_TRACE").is_some(),
            promotions: 0,
            demotions: 0,
            file_members: members,
            file_generation: 1,
            change_deadline: u64::MAX,
        }
    }

    // ----- clocks -----

    fn local(&self, i: usize, real: u64) -> Time {
        let h = &self.hosts[i];
        let scaled = i128::from(real) * (1_000_000 + i128::from(h.rate_ppm)) / 1_000_000;
        Time(h.offset + scaled as u64)
    }

    fn real_at(&self, i: usize, local: Time) -> u64 {
        let h = &self.hosts[i];
        let l = i128::from(local.0.saturating_sub(h.offset));
        let rate = 1_000_000 + i128::from(h.rate_ppm);
        let mut real = ((l * 1_000_000 + rate - 1) / rate) as u64;
        while self.local(i, real) < local {
            real += 1;
        }
        real.max(self.now)
    }

    // ----- the event queue -----

    fn schedule(&mut self, at: u64, event: Event) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            order: self.order,
            event,
        }));
    }

    fn log(&mut self, line: String) {
        self.record(TraceLine::Text(line));
    }

    fn record(&mut self, line: TraceLine) {
        if self.full_trace {
            eprintln!("{:>10.3}ms {line}", self.now as f64 / 1e6);
        }
        if self.trace.len() == TRACE_KEEP {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, line));
    }

    /// Panics with the seed, the plan and the recent trace.
    pub fn fail(&self, what: &str) -> ! {
        let mut s = String::new();
        let _ = writeln!(s, "SIMULATION FAILED: {what}");
        if self.plan.scripted {
            let _ = writeln!(s, "scripted run (SIM_TRACE=1 prints every event)");
        } else {
            let _ = writeln!(
                s,
                "seed {} (replay: SIM_SEED={} cargo test --test simulator -- replay --nocapture)",
                self.plan.seed, self.plan.seed
            );
        }
        let _ = writeln!(s, "plan {:?}", self.plan);
        for (i, h) in self.hosts.iter().enumerate() {
            let Some(n) = &h.node else { continue };
            let st = n.status(self.local(i, self.now));
            let _ = writeln!(
                s,
                "n{}: {:?}, {}, committed {}, knows its majorities {}, list before {:?}",
                i + 1,
                st.role,
                st.membership,
                st.committed,
                st.confirmed,
                st.previous
            );
        }
        let _ = writeln!(s, "last {} events:", self.trace.len());
        for (at, line) in &self.trace {
            let _ = writeln!(s, "  {:>10.3}ms {line}", *at as f64 / 1e6);
        }
        panic!("{s}");
    }

    // ----- running -----

    /// Starts every installed node at time zero (or staggered).
    pub fn start(&mut self, staggered: bool) {
        let installed: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| self.hosts[i].installed)
            .collect();
        for i in installed {
            let at = if staggered {
                self.rng.range(0, 500_000_000)
            } else {
                0
            };
            self.schedule(at, Event::Fault(Fault::Restart(i)));
        }
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Duration) {
        let until = until.as_nanos() as u64;
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= until) {
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now = s.at;
            self.step(s.event);
        }
        self.now = until;
    }

    fn step(&mut self, event: Event) {
        // What the event loop of a node handles waits while it is stalled,
        // and is handled in arrival order when it resumes.
        let target = match &event {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. }
            | Event::HookFinished { node, .. }
            | Event::Persisted { node, .. }
            | Event::StorageProbe { node, .. }
            | Event::Fault(Fault::Health { node, .. }) => Some(*node),
            Event::Fault(Fault::Stop(i))
            | Event::Fault(Fault::Reload(i, _))
            | Event::Fault(Fault::ReloadFile { node: i, .. }) => Some(*i),
            _ => None,
        };
        if let Some(i) = target {
            if self.hosts[i].stalled {
                self.hosts[i].backlog.push_back(event);
                return;
            }
        }
        match event {
            Event::Deliver { to, msg } => {
                if self.hosts[to].node.is_some() {
                    let line = TraceLine::Deliver {
                        to,
                        msg: Box::new(msg.clone()),
                    };
                    self.record(line);
                    self.input(to, Input::Message(msg));
                }
            }
            Event::Timer { node, generation } => {
                if self.hosts[node].timer_generation == generation
                    && self.hosts[node].node.is_some()
                {
                    self.hosts[node].timer_at = None;
                    let local = self.local(node, self.now);
                    let h = &mut self.hosts[node];
                    if let Some(n) = h.node.as_mut() {
                        if n.next_timeout().is_some_and(|t| t <= local) {
                            n.handle_timeout(local);
                        }
                    }
                    if let Some(sched) = h.sched.as_mut() {
                        sched.tick(local);
                    }
                    self.drain(node);
                }
            }
            Event::ProcessEnd {
                node,
                generation,
                job,
                exit,
                killed,
            } => self.process_end(node, generation, job, exit, killed),
            Event::HookFinished {
                node,
                generation,
                job,
                exit,
            } => {
                if self.hosts[node].proc_generation != generation {
                    return;
                }
                let local = self.local(node, self.now);
                if let Some(sched) = self.hosts[node].sched.as_mut() {
                    sched.finished(local, job, exit);
                    self.drain(node);
                }
            }
            Event::Resume { node, generation } => {
                let h = &mut self.hosts[node];
                if h.stall_generation != generation || !h.stalled {
                    return;
                }
                h.stalled = false;
                let backlog = std::mem::take(&mut h.backlog);
                self.log(format!(
                    "n{} resumes: {} events waited",
                    node + 1,
                    backlog.len()
                ));
                for event in backlog {
                    self.step(event);
                }
            }
            Event::GuardCheck { node, generation } => {
                let h = &self.hosts[node];
                if h.guard_generation != generation || h.fencing {
                    return;
                }
                let slack = guard_slack(self.plan.timing.lease_margin);
                let local = self.local(node, self.now);
                if let GuardAction::Fence(epoch) = h.guard.poll(local, slack) {
                    self.fence(node, epoch);
                }
            }
            Event::GuardDemoteEnd { node, epoch } => {
                self.hosts[node].fencing = false;
                self.demote_ended(node, epoch, Reason::LeaseExpired);
                self.log(format!(
                    "n{} guard: demote {epoch} done; restart in 1 s",
                    node + 1
                ));
                self.schedule(self.now + 1_000_000_000, Event::Fault(Fault::Restart(node)));
            }
            Event::Persisted {
                node,
                generation,
                state,
                ok,
            } => {
                let h = &mut self.hosts[node];
                if h.disk_generation != generation || h.node.is_none() {
                    return;
                }
                if let (_, Some(next)) = h.disk.complete() {
                    self.start_write(node, next);
                }
                let promised = state.promised;
                let h = &mut self.hosts[node];
                if ok {
                    if promised < h.persisted.promised {
                        let what = format!(
                            "S2: n{} persisted promised {} below {}",
                            node + 1,
                            promised,
                            h.persisted.promised
                        );
                        self.fail(&what);
                    }
                    h.persisted = state;
                    h.promised_seen = h.promised_seen.max(promised);
                    self.input(node, Input::Persisted { promised });
                } else {
                    self.log(format!("n{} cannot persist epoch {promised}", node + 1));
                    self.input(node, Input::PersistFailed { promised });
                    self.schedule(
                        self.now + 2_000_000_000,
                        Event::StorageProbe { node, generation },
                    );
                }
            }
            Event::StorageProbe { node, generation } => {
                let h = &self.hosts[node];
                if h.disk_generation != generation || h.node.is_none() {
                    return;
                }
                if self.rng.chance(h.disk_fail_percent) {
                    self.schedule(
                        self.now + 2_000_000_000,
                        Event::StorageProbe { node, generation },
                    );
                } else {
                    self.input(node, Input::Storage { ok: true });
                }
            }
            Event::Fault(f) => self.fault(f),
        }
    }

    /// Asks node `i`'s state writer to persist `p`: written now if the
    /// writer is idle, else after the write under way, coalesced with any
    /// other request that waits.
    fn persist(&mut self, i: usize, p: Persisted) {
        if let Some(p) = self.hosts[i].disk.request(p) {
            self.start_write(i, p);
        }
    }

    /// Starts writing `state` to node `i`'s disk; it finishes later and
    /// may fail.
    fn start_write(&mut self, i: usize, state: Persisted) {
        let latency = if let Some(fixed) = self.disk_latency {
            fixed
        } else if self.hosts[i].slow_disk {
            self.rng.range(50, 3_000) * 1_000_000
        } else {
            self.rng.range(50, 2_000) * 1_000
        };
        let ok = !self.rng.chance(self.hosts[i].disk_fail_percent);
        let generation = self.hosts[i].disk_generation;
        self.schedule(
            self.now + latency,
            Event::Persisted {
                node: i,
                generation,
                state,
                ok,
            },
        );
    }

    fn input(&mut self, i: usize, input: Input) {
        let local = self.local(i, self.now);
        if let Some(n) = self.hosts[i].node.as_mut() {
            n.handle(local, input);
        }
        self.drain(i);
    }

    /// Carries out a node's effects in order, as the driver does: requests
    /// and transitions go to the hook scheduler with the lease as it is
    /// now, its actions start and kill processes and feed the core.
    fn drain(&mut self, i: usize) {
        loop {
            while let Some(effect) = self.hosts[i].node.as_mut().and_then(|n| n.poll_effect()) {
                match effect {
                    Effect::Persist(p) => self.persist(i, p),
                    Effect::Send(msg) => self.broadcast(i, msg),
                    Effect::RunHook(req) => self.request_hook(i, req),
                    Effect::Transition(t) => {
                        self.observed.push((
                            self.now,
                            Observed::Transition {
                                node: i,
                                transition: t.clone(),
                            },
                        ));
                        self.log(format!(
                            "n{} -> {} epoch {} leader {:?} ({})",
                            i + 1,
                            t.role,
                            t.epoch,
                            t.leader.map(|l| l.0),
                            t.reason
                        ));
                        let local = self.local(i, self.now);
                        if let Some(sched) = self.hosts[i].sched.as_mut() {
                            sched.notify(local, &t);
                        }
                    }
                    Effect::StepDownResult(r) => self.log(format!("n{} step-down: {r:?}", i + 1)),
                    Effect::NotFresh { from } => {
                        self.log(format!("n{} does not follow n{from}: not fresh", i + 1));
                    }
                    Effect::Foreign { from, theirs } => {
                        self.log(format!("n{} ignores n{from}: it runs {theirs}", i + 1));
                    }
                    Effect::Member(m) => {
                        let state = if m.alive { "up" } else { "down" };
                        self.log(format!("n{} sees n{} {state}", i + 1, m.id.0));
                    }
                    Effect::Exit => {
                        self.log(format!("n{} exits", i + 1));
                        self.down(i);
                        if std::mem::take(&mut self.hosts[i].restart_on_exit) {
                            self.fault(Fault::Restart(i));
                        }
                        return;
                    }
                }
            }
            let local = self.local(i, self.now);
            let h = &mut self.hosts[i];
            let (Some(n), Some(sched)) = (h.node.as_mut(), h.sched.as_mut()) else {
                return;
            };
            sched.set_lease(local, n.lease());
            let actions: Vec<Action> = std::iter::from_fn(|| sched.poll_action()).collect();
            let mut fed = false;
            for action in actions {
                match action {
                    Action::Start(job) => self.start_job(i, job),
                    Action::Kill(job) => self.kill_job(i, job),
                    Action::Done(done) => {
                        if done.kind == HookKind::Demote {
                            self.hosts[i].guard.release();
                        }
                        self.log(format!(
                            "n{} hook {} epoch {} done: {:?}",
                            i + 1,
                            done.kind.as_str(),
                            done.epoch,
                            done.outcome
                        ));
                        if let Some(n) = self.hosts[i].node.as_mut() {
                            n.handle(local, Input::HookDone(done));
                        }
                        fed = true;
                    }
                    Action::DemoteOverrun { epoch, took, .. } => {
                        self.log(format!("n{} demote {epoch} over budget: {took:?}", i + 1))
                    }
                    Action::Health(_) | Action::Note(_) => {}
                }
            }
            if !fed {
                break;
            }
        }
        self.renew_guard(i);
        let h = &self.hosts[i];
        let node_next = h.node.as_ref().and_then(|n| n.next_timeout());
        let sched_next = h.sched.as_ref().and_then(|s| s.next_timeout());
        let next = [node_next, sched_next].into_iter().flatten().min();
        let at = next.map(|t| self.real_at(i, t));
        let h = &mut self.hosts[i];
        if at.is_some() && at == h.timer_at {
            // The event already queued fires at that instant.
            return;
        }
        h.timer_generation += 1;
        h.timer_at = at;
        let generation = h.timer_generation;
        if let Some(at) = at {
            self.schedule(
                at,
                Event::Timer {
                    node: i,
                    generation,
                },
            );
        }
    }

    /// The daemon tells its guard of the lease after every drain; the
    /// guard's timer is set at the lease end plus its slack. The guard is
    /// released only when the demote starts or is reported (skipped with
    /// its promote), not when the core stops leading: a loop that stalls
    /// between the two would otherwise leave nobody to demote.
    fn renew_guard(&mut self, i: usize) {
        let slack = guard_slack(self.plan.timing.lease_margin);
        let h = &mut self.hosts[i];
        if let Some((epoch, end)) = h.node.as_ref().and_then(|n| n.lease()) {
            h.guard.renew(epoch, end);
        }
        let deadline = h.guard.deadline(slack);
        if deadline == h.guard_scheduled {
            return;
        }
        h.guard_scheduled = deadline;
        h.guard_generation += 1;
        let generation = h.guard_generation;
        if let Some(t) = deadline {
            let at = self.real_at(i, t);
            self.schedule(
                at,
                Event::GuardCheck {
                    node: i,
                    generation,
                },
            );
        }
    }

    /// The guard fires: the daemon and its hooks are killed, and the guard
    /// runs the demote of `epoch`; the host holds until it ends.
    fn fence(&mut self, i: usize, epoch: Epoch) {
        self.log(format!(
            "n{} guard: lease of epoch {epoch} over, FENCE",
            i + 1
        ));
        self.observed
            .push((self.now, Observed::Fence { node: i, epoch }));
        self.down(i);
        let h = &mut self.hosts[i];
        h.restart_on_exit = false;
        h.guard.release();
        h.guard_scheduled = None;
        h.fencing = true;
        let (ns, _) = self.draw_run(i, true);
        self.schedule(self.now + ns, Event::GuardDemoteEnd { node: i, epoch });
    }

    fn broadcast(&mut self, from: usize, msg: Message) {
        for to in 0..self.hosts.len() {
            if to == from || self.blocked[from][to] || self.rng.chance(self.loss) {
                continue;
            }
            let copies = if self.rng.chance(self.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = match self.link_delay[from][to] {
                    Some(fixed) => fixed,
                    None => self.rng.range(20, self.max_delay_us.max(20)) * 1000,
                };
                self.schedule(
                    self.now + delay,
                    Event::Deliver {
                        to,
                        msg: msg.clone(),
                    },
                );
            }
        }
    }

    // ----- hooks: the daemon's scheduler decides, the simulator runs processes -----

    fn request_hook(&mut self, i: usize, req: HookRequest) {
        self.log(format!(
            "n{} hook {} epoch {} ({}) requested",
            i + 1,
            req.kind.as_str(),
            req.epoch,
            req.reason
        ));
        if req.kind == HookKind::Demote && req.reason != Reason::Startup {
            self.demotions += 1;
            self.observed.push((
                self.now,
                Observed::Demote {
                    node: i,
                    epoch: req.epoch,
                    reason: req.reason,
                },
            ));
        }
        let local = self.local(i, self.now);
        let h = &mut self.hosts[i];
        if let (Some(n), Some(sched)) = (h.node.as_ref(), h.sched.as_mut()) {
            // As the driver: the lease as it is now, then the request.
            sched.set_lease(local, n.lease());
            sched.request(local, req);
        }
    }

    /// How long a run takes and how it ends: demotes within the demote
    /// budget (the contract S3 rests on), others 1-30 ms, or up to 1 s with
    /// slow hooks; a run that reaches the timeout is killed there.
    fn draw_run(&mut self, i: usize, demote: bool) -> (u64, Exit) {
        let fail = self.rng.chance(self.hosts[i].hook_fail_percent);
        let exit = if fail { Exit::Failed } else { Exit::Ok };
        let timeout = self.plan.hook_timeout.as_nanos() as u64;
        let fixed = if demote {
            self.demote_duration.or(self.hook_duration)
        } else {
            self.hook_duration
        };
        if let Some(fixed) = fixed {
            return (fixed, exit);
        }
        if demote {
            let budget_us = self.plan.timing.demote_budget.as_micros() as u64;
            return (
                self.rng.range(1_000.min(budget_us), budget_us) * 1_000,
                exit,
            );
        }
        if fail && self.rng.chance(30) {
            return (timeout, Exit::TimedOut);
        }
        let ns = if self.hosts[i].slow_hooks {
            self.rng.range(100, 1_000) * 1_000_000
        } else {
            self.rng.range(1, 30) * 1_000_000
        };
        if ns >= timeout {
            (timeout, Exit::TimedOut)
        } else {
            (ns, exit)
        }
    }

    /// The scheduler starts a job: a process runs for a drawn time. A
    /// promote's start is where S1-S3 are checked and the hold begins; a
    /// demote's start releases the guard.
    fn start_job(&mut self, i: usize, job: Job) {
        let req = match &job.work {
            Work::Transition(req) => Some(req.clone()),
            _ => None,
        };
        self.log(format!(
            "n{} starts {} (job {})",
            i + 1,
            job.work.label(),
            job.id.0
        ));
        if let Some(req) = &req {
            match req.kind {
                HookKind::Promote => self.promote_started(i, req.epoch),
                HookKind::Demote => {
                    // The guard now watches the demote instead of the lease.
                    let h = &mut self.hosts[i];
                    h.guard.demoting(req.epoch);
                    h.guard_scheduled = None;
                }
            }
        }
        let demote = req.as_ref().is_some_and(|r| r.kind == HookKind::Demote);
        let (ns, exit) = self.draw_run(i, demote);
        let h = &mut self.hosts[i];
        h.procs.insert(job.id, Proc { req, killed: false });
        let generation = h.proc_generation;
        self.schedule(
            self.now + ns,
            Event::ProcessEnd {
                node: i,
                generation,
                job: job.id,
                exit,
                killed: false,
            },
        );
    }

    /// SIGKILL to a job's process group: it ends at once.
    fn kill_job(&mut self, i: usize, job: JobId) {
        let h = &mut self.hosts[i];
        let Some(p) = h.procs.get_mut(&job) else {
            return;
        };
        if p.killed {
            return;
        }
        p.killed = true;
        let generation = h.proc_generation;
        self.schedule(
            self.now + 100_000,
            Event::ProcessEnd {
                node: i,
                generation,
                job,
                exit: Exit::Failed,
                killed: true,
            },
        );
    }

    /// A process ended, in real time: a demote ends the hold now, whether
    /// or not the loop runs; the loop learns of it when it can.
    fn process_end(&mut self, i: usize, generation: u64, job: JobId, exit: Exit, killed: bool) {
        let h = &mut self.hosts[i];
        if h.proc_generation != generation || !h.procs.get(&job).is_some_and(|p| p.killed == killed)
        {
            return;
        }
        let Some(p) = h.procs.remove(&job) else {
            return;
        };
        if let Some(req) = p.req.filter(|r| r.kind == HookKind::Demote) {
            self.demote_ended(i, req.epoch, req.reason);
        }
        self.step(Event::HookFinished {
            node: i,
            generation,
            job,
            exit,
        });
    }

    fn demote_ended(&mut self, i: usize, epoch: Epoch, reason: Reason) {
        self.log(format!("n{} demote {epoch} ({reason}) ended", i + 1));
        let h = &mut self.hosts[i];
        if h.holding
            .is_some_and(|(held, _)| held == epoch || reason == Reason::Startup)
        {
            h.holding = None;
            self.observed
                .push((self.now, Observed::DemoteEnd { node: i, epoch }));
        }
    }

    /// A promote starts: S1, S2 and S3 are checked, and the hold begins.
    fn promote_started(&mut self, i: usize, epoch: Epoch) {
        let h = &self.hosts[i];
        if let Some((e, _)) = h.holding {
            let what = format!("n{} promoted epoch {epoch} while holding {e}", i + 1);
            self.fail(&what);
        }
        if epoch <= h.last_led {
            let what = format!("S2: n{} led epoch {epoch} after {}", i + 1, h.last_led);
            self.fail(&what);
        }
        if let Some(other) = self.led.get(&epoch) {
            let what = format!("S1: epoch {epoch} led by n{} and n{}", other, i + 1);
            self.fail(&what);
        }
        for (j, o) in self.hosts.iter().enumerate() {
            if let Some((e, since)) = o.holding {
                let what = format!(
                    "S3: n{} promoted epoch {epoch} while n{} holds epoch {e} since {:.3}ms",
                    i + 1,
                    j + 1,
                    since as f64 / 1e6
                );
                self.fail(&what);
            }
        }
        self.led.insert(epoch, self.hosts[i].id);
        self.observed
            .push((self.now, Observed::Promote { node: i, epoch }));
        let h = &mut self.hosts[i];
        h.last_led = epoch;
        h.holding = Some((epoch, self.now));
        self.promotions += 1;
    }

    // ----- faults -----

    /// The daemon goes away (crash, exit, fence) with its hooks; what it
    /// holds stays held until a demote ends.
    fn down(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        h.node = None;
        h.sched = None;
        h.procs.clear();
        h.proc_generation += 1;
        h.stalled = false;
        h.stall_generation += 1;
        h.backlog.clear();
        h.timer_generation += 1;
        h.timer_at = None;
        h.disk_generation += 1;
        h.disk = Coalescer::default();
    }

    fn fault(&mut self, f: Fault) {
        self.log(format!("FAULT {f:?}"));
        match f {
            Fault::Crash(i) => {
                // A demote under way dies with the daemon (its cgroup is
                // killed): the guard, which outlives it, demotes again.
                let redo = self.hosts[i].guard.daemon_gone();
                self.down(i);
                self.hosts[i].restart_on_exit = false;
                if let Some(epoch) = redo {
                    if !self.hosts[i].fencing {
                        self.fence(i, epoch);
                    }
                }
            }
            Fault::StateLoss(i) => {
                self.fault(Fault::Crash(i));
                let h = &mut self.hosts[i];
                h.persisted = Persisted::default();
                h.lost = true;
            }
            Fault::Stop(i) => {
                if self.hosts[i].node.is_some() {
                    self.input(i, Input::Shutdown);
                }
            }
            Fault::Restart(i) => {
                if !self.hosts[i].installed {
                    return;
                }
                if self.hosts[i].lost {
                    self.log(format!(
                        "n{} refuses to start: its state file is gone",
                        i + 1
                    ));
                    return;
                }
                if self.hosts[i].fencing {
                    // The guard's demote runs; systemd restarts after it.
                    return;
                }
                if self.hosts[i].node.is_some() {
                    self.hosts[i].restart_on_exit = true;
                    return;
                }
                let local = self.local(i, self.now);
                let h = &mut self.hosts[i];
                if h.persisted.promised < h.promised_seen {
                    let what = format!(
                        "S2: n{} restarted with promised {} below {}",
                        i + 1,
                        h.persisted.promised,
                        h.promised_seen
                    );
                    self.fail(&what);
                }
                h.incarnation = Incarnation(h.incarnation.0 + 1);
                let seed = self
                    .plan
                    .seed
                    .wrapping_mul(31)
                    .wrapping_add(h.incarnation.0 * 7 + i as u64);
                h.node = Some(Node::new(
                    h.cfg.clone(),
                    h.persisted.clone(),
                    h.incarnation,
                    seed,
                    local,
                ));
                let sched = ScheduleConfig {
                    promote: true,
                    demote: true,
                    notify: self.plan.notify,
                    check: false,
                    refresh_interval: self.plan.refresh,
                    check_interval: Duration::from_secs(2),
                    check_fall: 1,
                    check_rise: 1,
                    demote_budget: self.plan.timing.demote_budget,
                };
                h.sched = Some(Schedule::new(sched, local));
                self.drain(i);
                if !self.hosts[i].healthy {
                    self.input(i, Input::Health { ok: false });
                }
            }
            Fault::Partition(side) => {
                let n = self.hosts.len();
                for a in 0..n {
                    for b in 0..n {
                        if side.contains(&a) != side.contains(&b) {
                            self.blocked[a][b] = true;
                        }
                    }
                }
            }
            Fault::OneWay { from, to } => self.blocked[from][to] = true,
            Fault::Unblock { from, to } => self.blocked[from][to] = false,
            Fault::HealNetwork => {
                for row in &mut self.blocked {
                    row.fill(false);
                }
            }
            Fault::Loss(p) => self.loss = p,
            Fault::Delay(us) => self.max_delay_us = us,
            Fault::Duplicate(p) => self.duplicate = p,
            Fault::Health { node, ok } => {
                self.hosts[node].healthy = ok;
                if self.hosts[node].node.is_some() {
                    self.input(node, Input::Health { ok });
                }
            }
            Fault::HookFailures { node, percent } => self.hosts[node].hook_fail_percent = percent,
            Fault::SlowHooks { node, slow } => self.hosts[node].slow_hooks = slow,
            Fault::SlowDisk { node, slow } => self.hosts[node].slow_disk = slow,
            Fault::FailingDisk { node, percent } => self.hosts[node].disk_fail_percent = percent,
            Fault::Stall { node, ns } => {
                let h = &mut self.hosts[node];
                if h.node.is_none() || h.stalled {
                    return;
                }
                h.stalled = true;
                h.stall_generation += 1;
                let generation = h.stall_generation;
                self.observed.push((self.now, Observed::Stalled { node }));
                self.schedule(self.now + ns, Event::Resume { node, generation });
            }
            Fault::StepDown { to } => {
                let leader = (0..self.hosts.len()).find(|&i| {
                    self.hosts[i]
                        .node
                        .as_ref()
                        .is_some_and(|n| n.leading().is_some())
                });
                if let Some(l) = leader.filter(|&l| self.hosts[l].stalled) {
                    // The control socket waits for the stalled loop too.
                    let event = Event::Fault(Fault::StepDown { to });
                    self.hosts[l].backlog.push_back(event);
                } else if let Some(l) = leader {
                    let to = to.filter(|&t| t != l).map(|t| self.hosts[t].id);
                    self.input(l, Input::StepDown { to });
                }
            }
            Fault::HealAll => {
                for row in &mut self.blocked {
                    row.fill(false);
                }
                self.loss = 0;
                self.duplicate = 0;
                self.max_delay_us = 2_000;
                for i in 0..self.hosts.len() {
                    // A stop or a health verdict still queued behind a stalled
                    // loop is withdrawn: after healing every node runs and is
                    // healthy (two queued stops and one restart used to leave
                    // a node down for good; a queued failing check, a node
                    // unhealthy).
                    self.hosts[i].backlog.retain(|e| {
                        !matches!(e, Event::Fault(Fault::Stop(_) | Fault::Health { .. }))
                    });
                    self.hosts[i].hook_fail_percent = 0;
                    self.hosts[i].slow_hooks = false;
                    self.hosts[i].slow_disk = false;
                    self.hosts[i].disk_fail_percent = 0;
                    if !self.hosts[i].healthy {
                        self.fault(Fault::Health { node: i, ok: true });
                    }
                    if self.plan.changes {
                        self.finish_change(i);
                    }
                    if self.hosts[i].node.is_none() {
                        self.fault(Fault::Restart(i));
                    }
                }
            }
            Fault::Change => self.change_members(),
            Fault::ReloadFile { node, tries } => {
                let file = self.hosts[node].cfg.clone();
                let local = self.local(node, self.now);
                let Some(n) = self.hosts[node].node.as_mut() else {
                    // Down: it reads the file when it starts.
                    return;
                };
                if n.membership().generation >= file.generation {
                    return;
                }
                if let Err(e) = n.reconfigure(file, local) {
                    self.log(format!("n{} refuses the reload: {e}", node + 1));
                    let again = self.now + self.rng.range(100, 800) * 1_000_000;
                    if tries > 0 && again < self.change_deadline {
                        let retry = Fault::ReloadFile {
                            node,
                            tries: tries - 1,
                        };
                        self.schedule(again, Event::Fault(retry));
                    }
                }
                self.drain(node);
            }
            Fault::Install(i) => {
                if !self.hosts[i].installed {
                    self.hosts[i].installed = true;
                    self.fault(Fault::Restart(i));
                }
            }
            Fault::Retire(i) => {
                if self.hosts[i].installed && !self.on_list(i) {
                    self.fault(Fault::Crash(i));
                    self.hosts[i].installed = false;
                }
            }
            Fault::Reload(node, cfg) => {
                // The file changes whether or not the daemon takes it: a
                // restart reads it.
                self.hosts[node].cfg = (*cfg).clone();
                let local = self.local(node, self.now);
                if let Some(n) = self.hosts[node].node.as_mut() {
                    let verdict = n.reconfigure(*cfg, local);
                    if let Err(e) = verdict {
                        self.log(format!("n{} refuses the reload: {e}", node + 1));
                    }
                    self.drain(node);
                }
            }
        }
    }

    /// Plans random faults between `from` and `to` (virtual time). One
    /// crash in ten also loses the node's state, as long as a quorum of
    /// nodes keeps theirs, so that L1 still has a quorum to elect.
    pub fn plan_chaos(&mut self, from: Duration, to: Duration) {
        let n = self.hosts.len();
        let mut t = from.as_nanos() as u64;
        let end = to.as_nanos() as u64;
        let mut lost: Vec<bool> = self.hosts.iter().map(|h| h.lost).collect();
        // With changing lists a lost host could leave a later list without
        // a majority that can start: no state losses then.
        let may_lose = if self.plan.changes {
            0
        } else {
            n - regentd::core::quorum(n)
        };
        if self.plan.changes {
            // Everything the operator does lands before the heal.
            self.change_deadline = end.saturating_sub(1_000_000);
            for _ in 0..self.rng.range(1, 4) {
                let at = self.rng.range(from.as_nanos() as u64, self.change_deadline);
                self.schedule(at, Event::Fault(Fault::Change));
            }
        }
        loop {
            t += self.rng.range(50, 1_500) * 1_000_000;
            if t >= end {
                break;
            }
            let node = self.rng.range(0, n as u64 - 1) as usize;
            let f = match self.rng.range(0, 19) {
                0 | 1 => {
                    let back = t + self.rng.range(10, 3_000) * 1_000_000;
                    // Scheduled all the same: systemd restarts it, and
                    // the daemon refuses.
                    self.schedule(back.min(end), Event::Fault(Fault::Restart(node)));
                    let room = lost.iter().filter(|&&l| l).count() < may_lose;
                    if room && !lost[node] && self.state_loss_rng.chance(10) {
                        lost[node] = true;
                        Fault::StateLoss(node)
                    } else {
                        Fault::Crash(node)
                    }
                }
                2 => {
                    let back = t + self.rng.range(10, 2_000) * 1_000_000;
                    self.schedule(back.min(end), Event::Fault(Fault::Restart(node)));
                    Fault::Stop(node)
                }
                3 | 4 => {
                    let side = (0..n).filter(|_| self.rng.chance(50)).collect();
                    let heal = t + self.rng.range(100, 4_000) * 1_000_000;
                    self.schedule(heal.min(end), Event::Fault(Fault::HealNetwork));
                    Fault::Partition(side)
                }
                5 => {
                    let other = self.rng.range(0, n as u64 - 1) as usize;
                    let heal = t + self.rng.range(100, 3_000) * 1_000_000;
                    self.schedule(heal.min(end), Event::Fault(Fault::HealNetwork));
                    Fault::OneWay {
                        from: node,
                        to: other,
                    }
                }
                6 => Fault::Loss(self.rng.range(0, 40) as u32),
                7 => Fault::Delay([500, 2_000, 20_000, 150_000][self.rng.range(0, 3) as usize]),
                8 => Fault::Duplicate(self.rng.range(0, 20) as u32),
                9 | 10 => Fault::Health {
                    node,
                    ok: self.rng.chance(60),
                },
                11 => Fault::HookFailures {
                    node,
                    percent: [0, 30, 100][self.rng.range(0, 2) as usize],
                },
                12 => Fault::SlowHooks {
                    node,
                    slow: self.rng.chance(50),
                },
                13 => Fault::SlowDisk {
                    node,
                    slow: self.rng.chance(50),
                },
                14 => Fault::FailingDisk {
                    node,
                    percent: [0, 30, 100][self.rng.range(0, 2) as usize],
                },
                16 | 17 => {
                    // 0.1 to 3 dead_afters, sometimes up to 10.
                    let hundredths = if self.rng.chance(15) {
                        self.rng.range(300, 1_000)
                    } else {
                        self.rng.range(10, 300)
                    };
                    let dead = self.plan.timing.dead_after.as_nanos() as u64;
                    Fault::Stall {
                        node,
                        ns: dead * hundredths / 100,
                    }
                }
                _ => {
                    let to = self.rng.chance(50).then_some(node);
                    Fault::StepDown { to }
                }
            };
            self.schedule(t, Event::Fault(f));
        }
        self.schedule(end, Event::Fault(Fault::HealAll));
    }

    // ----- the operator's member-list changes -----

    /// Whether host `i` is on the operator's current list.
    fn on_list(&self, i: usize) -> bool {
        self.file_members.contains(&self.hosts[i].id)
    }

    /// The next change, one member added or removed: the new file goes to
    /// every host on the new list, each is reloaded in turn (some much
    /// later, as if missed), an added host is installed and started, and a
    /// removed one keeps running its old file for a while before it stops.
    fn change_members(&mut self) {
        let deadline = self.change_deadline;
        // As the README has it: the next change waits until every running
        // host runs the last one and has seen it committed; the operator
        // looks again a little later.
        let lagging = (0..self.hosts.len()).any(|i| {
            self.on_list(i)
                && self.hosts[i].node.as_ref().is_some_and(|n| {
                    n.membership().generation < self.file_generation || !n.committed()
                })
        });
        // ... and some host runs it and says so.
        let seen = (0..self.hosts.len()).any(|i| {
            self.on_list(i)
                && self.hosts[i].node.as_ref().is_some_and(|n| {
                    n.membership().generation == self.file_generation && n.committed()
                })
        });
        if lagging || !seen {
            let again = self.now + self.rng.range(300, 1_500) * 1_000_000;
            if again < deadline {
                self.schedule(again, Event::Fault(Fault::Change));
            }
            return;
        }
        let cur = self.file_members.clone();
        let outside: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| !self.hosts[i].installed && !cur.contains(&self.hosts[i].id))
            .filter(|&i| self.hosts[i].persisted == Persisted::default())
            .collect();
        let add = !outside.is_empty() && (cur.len() < 3 || self.rng.chance(50));
        let mut next = cur.clone();
        let (added, removed) = if add {
            let a = outside[self.rng.range(0, outside.len() as u64 - 1) as usize];
            next.push(self.hosts[a].id);
            (Some(a), None)
        } else if cur.len() >= 3 {
            // Two members cannot shrink to one: one of two is no majority
            // of the list before, so that change could never commit.
            let r = self.rng.range(0, cur.len() as u64 - 1) as usize;
            let id = next.remove(r);
            let r = (0..self.hosts.len())
                .find(|&i| self.hosts[i].id == id)
                .unwrap_or(0);
            (None, Some(r))
        } else {
            return;
        };
        // `regent check` on the new file: a majority of the new list must
        // run and be on the list in force, or the reloads would be refused.
        let ready = next
            .iter()
            .filter(|&&id| {
                self.hosts.iter().any(|h| {
                    h.id == id
                        && h.node.as_ref().is_some_and(|n| {
                            n.membership().generation == self.file_generation && n.committed()
                        })
                })
            })
            .count();
        if ready < regentd::core::quorum(next.len()) {
            let again = self.now + self.rng.range(300, 1_500) * 1_000_000;
            if again < deadline {
                self.schedule(again, Event::Fault(Fault::Change));
            }
            return;
        }
        self.file_generation += 1;
        self.file_members = next.clone();
        self.log(format!(
            "operator: generation {} is {:?}",
            self.file_generation,
            next.iter().map(|id| id.0).collect::<Vec<_>>()
        ));
        let generation = self.file_generation;
        for i in 0..self.hosts.len() {
            if !next.contains(&self.hosts[i].id) {
                continue;
            }
            self.hosts[i].cfg.members = next.clone();
            self.hosts[i].cfg.generation = generation;
            if Some(i) == added {
                let at = (self.now + self.rng.range(0, 3_000) * 1_000_000).min(deadline);
                self.schedule(at, Event::Fault(Fault::Install(i)));
                continue;
            }
            // One host in five misses the change for a long while.
            let delay = if self.rng.chance(20) {
                self.rng.range(2_000, 8_000)
            } else {
                self.rng.range(0, 1_500)
            };
            let at = (self.now + delay * 1_000_000).min(deadline);
            let reload = Fault::ReloadFile { node: i, tries: 20 };
            self.schedule(at, Event::Fault(reload));
        }
        if let Some(r) = removed {
            let at = (self.now + self.rng.range(0, 4_000) * 1_000_000).min(deadline);
            self.schedule(at, Event::Fault(Fault::Retire(r)));
        }
    }

    /// At the heal the operator finishes what is left: a removed host still
    /// running stops, and one still on an older file than its own (its
    /// reloads refused) is restarted on it.
    fn finish_change(&mut self, i: usize) {
        if !self.hosts[i].installed {
            return;
        }
        if !self.on_list(i) {
            self.fault(Fault::Retire(i));
            return;
        }
        let behind = self.hosts[i]
            .node
            .as_ref()
            .is_some_and(|n| n.membership().generation < self.file_generation);
        if behind {
            self.fault(Fault::Crash(i));
        }
    }

    // ----- scripted runs: pin what the seed draws, schedule faults -----

    /// Installs host `i` (outside the first member list) and starts it.
    pub fn install_at(&mut self, i: usize, at: Duration) {
        self.schedule(at.as_nanos() as u64, Event::Fault(Fault::Install(i)));
    }

    /// The generation of the member list node `i` runs, if it runs.
    pub fn running_generation(&self, i: usize) -> Option<u32> {
        self.hosts[i]
            .node
            .as_ref()
            .map(|n| n.membership().generation)
    }

    /// Sets node `i`'s clock rate error, in ppm (positive: the clock runs
    /// fast). Call before the run; it must lie within the plan's drift bound,
    /// the bound S3 is promised under.
    pub fn set_rate_ppm(&mut self, i: usize, ppm: i64) {
        assert!(
            self.now == 0 && self.hosts[i].node.is_none(),
            "clock rates are set before the run"
        );
        assert!(
            ppm.unsigned_abs() <= u64::from(self.plan.timing.max_drift_ppm),
            "rate {ppm} ppm is outside the drift bound {} ppm",
            self.plan.timing.max_drift_ppm
        );
        self.hosts[i].rate_ppm = ppm;
    }

    /// Every message from `from` to `to` takes exactly `delay` from now on.
    pub fn set_link_delay(&mut self, from: usize, to: usize, delay: Duration) {
        self.link_delay[from][to] = Some(delay.as_nanos() as u64);
    }

    /// Every message on every link takes exactly `delay` from now on.
    pub fn set_all_delays(&mut self, delay: Duration) {
        let n = self.hosts.len();
        for from in 0..n {
            for to in 0..n {
                self.set_link_delay(from, to, delay);
            }
        }
    }

    /// Every hook runs exactly `d` and succeeds (unless hook failures are set).
    pub fn set_hook_duration(&mut self, d: Duration) {
        self.hook_duration = Some(d.as_nanos() as u64);
    }

    /// Every demote (and the guard's) runs exactly `d`, other hooks as set.
    pub fn set_demote_duration(&mut self, d: Duration) {
        self.demote_duration = Some(d.as_nanos() as u64);
    }

    /// At `at`, node `i`'s event loop stalls for `d`.
    pub fn stall_at(&mut self, i: usize, at: Duration, d: Duration) {
        self.schedule(
            at.as_nanos() as u64,
            Event::Fault(Fault::Stall {
                node: i,
                ns: d.as_nanos() as u64,
            }),
        );
    }

    /// Every state write takes exactly `d` and succeeds (unless disk
    /// failures are set).
    pub fn set_disk_latency(&mut self, d: Duration) {
        self.disk_latency = Some(d.as_nanos() as u64);
    }

    /// Node `i`'s configuration, to derive a reload from.
    pub fn config(&self, i: usize) -> &CoreConfig {
        &self.hosts[i].cfg
    }

    /// Starts node `i` at virtual time `at` (instead of `start`).
    pub fn start_at(&mut self, i: usize, at: Duration) {
        self.restart_at(i, at);
    }

    /// Crashes node `i` at virtual time `at`.
    pub fn crash_at(&mut self, i: usize, at: Duration) {
        self.schedule(at.as_nanos() as u64, Event::Fault(Fault::Crash(i)));
    }

    /// Crashes node `i` at `at` and wipes its state file: it stays down.
    pub fn lose_state_at(&mut self, i: usize, at: Duration) {
        self.schedule(at.as_nanos() as u64, Event::Fault(Fault::StateLoss(i)));
    }

    /// Restarts node `i` at `at`: a new incarnation from what it persisted.
    pub fn restart_at(&mut self, i: usize, at: Duration) {
        self.schedule(at.as_nanos() as u64, Event::Fault(Fault::Restart(i)));
    }

    /// From `at`, messages from `from` to `to` are lost (one way).
    pub fn block_at(&mut self, from: usize, to: usize, at: Duration) {
        self.schedule(
            at.as_nanos() as u64,
            Event::Fault(Fault::OneWay { from, to }),
        );
    }

    /// From `at`, messages from `from` to `to` get through again.
    pub fn unblock_at(&mut self, from: usize, to: usize, at: Duration) {
        self.schedule(
            at.as_nanos() as u64,
            Event::Fault(Fault::Unblock { from, to }),
        );
    }

    /// From `at`, node `i`'s health check passes (`ok`) or fails; a node
    /// started later begins with that verdict.
    pub fn health_at(&mut self, i: usize, at: Duration, ok: bool) {
        self.schedule(
            at.as_nanos() as u64,
            Event::Fault(Fault::Health { node: i, ok }),
        );
    }

    /// At `at`, node `i` reloads `cfg` (`Node::reconfigure`); a restart
    /// after that uses it too.
    pub fn reload_at(&mut self, i: usize, at: Duration, cfg: CoreConfig) {
        self.schedule(
            at.as_nanos() as u64,
            Event::Fault(Fault::Reload(i, Box::new(cfg))),
        );
    }

    /// Transitions, promotes and demotes so far, at their real instants.
    pub fn observed(&self) -> impl Iterator<Item = (Duration, &Observed)> + '_ {
        self.observed
            .iter()
            .map(|(at, o)| (Duration::from_nanos(*at), o))
    }

    pub fn set_loss(&mut self, percent: u32) {
        self.loss = percent;
    }

    // ----- checks at a point in time -----

    /// L1: exactly one leader, every live node follows it at its epoch, and
    /// with preemption it is the highest-ranked live node. A node that lost
    /// its state is down for good and counts for nothing.
    pub fn check_one_leader(&self, context: &str) {
        let local_now = |i| self.local(i, self.now);
        let leaders: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| {
                self.hosts[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.leading().is_some())
            })
            .collect();
        if leaders.len() != 1 {
            self.fail(&format!(
                "L1 ({context}): {} leaders: {:?}",
                leaders.len(),
                leaders.iter().map(|i| i + 1).collect::<Vec<_>>()
            ));
        }
        let l = leaders[0];
        let epoch = self.hosts[l].node.as_ref().and_then(|n| n.leading());
        if self.plan.preempt {
            let best = (0..self.hosts.len())
                .filter(|&i| {
                    !self.hosts[i].lost && !self.hosts[i].cfg.witness && self.hosts[i].installed
                })
                .max_by_key(|&i| (self.hosts[i].cfg.priority, self.hosts[i].id))
                .unwrap_or(0);
            if best != l {
                self.fail(&format!(
                    "L1 ({context}): n{} leads but n{} ranks highest",
                    l + 1,
                    best + 1
                ));
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let Some(n) = &h.node else {
                if h.lost || !h.installed {
                    continue;
                }
                self.fail(&format!("L1 ({context}): n{} is down after healing", i + 1));
            };
            let s = n.status(local_now(i));
            if s.leader != Some(self.hosts[l].id) || s.epoch != epoch {
                self.fail(&format!(
                    "L1 ({context}): n{} sees leader {:?} epoch {:?}, not n{} epoch {:?}",
                    i + 1,
                    s.leader.map(|x| x.0),
                    s.epoch,
                    l + 1,
                    epoch
                ));
            }
            if s.role == Role::Leader && i != l {
                self.fail(&format!("L1 ({context}): n{} also reports leader", i + 1));
            }
        }
    }

    /// Whether node `i`'s daemon runs.
    pub fn up(&self, i: usize) -> bool {
        self.hosts[i].node.is_some()
    }

    /// How many nodes lost their state (and so are down for good).
    pub fn lost(&self) -> usize {
        self.hosts.iter().filter(|h| h.lost).count()
    }

    pub fn leader(&self) -> Option<(usize, Epoch)> {
        (0..self.hosts.len()).find_map(|i| {
            self.hosts[i]
                .node
                .as_ref()
                .and_then(|n| n.leading())
                .map(|e| (i, e))
        })
    }

    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }
}

/// An event queued for a virtual instant; ties keep scheduling order.
struct Scheduled {
    at: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A trace line, formatted only when shown.
enum TraceLine {
    Text(String),
    Deliver { to: usize, msg: Box<Message> },
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceLine::Text(s) => f.write_str(s),
            TraceLine::Deliver { to, msg } => {
                write!(
                    f,
                    "n{} <- n{} #{} {:?}",
                    to + 1,
                    msg.from,
                    msg.seq,
                    msg.body
                )
            }
        }
    }
}

/// The bound within which a leader must emerge after all faults heal.
pub fn liveness_bound(plan: &Plan) -> Duration {
    let t = &plan.timing;
    // A slow hook still running, a hold-off set just before healing, a
    // preemption delay, promises that must lapse, and election rounds.
    Duration::from_millis(1_000)
        + plan.holdoff
        + plan.preempt_delay
        // a handover by preemption that failed just before healing: the
        // next waits up to 8 preemption delays
        + plan.preempt_delay * 8
        + t.dead_after * 4
        + t.heartbeat * 20
        // the longest back-off after lost claims: 1.5 heartbeats, doubled 3 times
        + t.heartbeat * 12
        // a state write begun on a slow disk before healing (up to 3 s) that
        // then fails, and the driver's probe that finds the disk working
        // again (every 2 s) before the node is eligible again
        + Duration::from_secs(5)
        // a stall begun just before healing (up to 10 dead_afters), the
        // guard's demote and the restart a second later
        + t.dead_after * 10
        + Duration::from_secs(1)
        // a host restarted on the current list at the heal (its quiet
        // period), the change committed, and the joint rule's wait after it
        + if plan.changes {
            t.dead_after * 4
        } else {
            Duration::ZERO
        }
}

/// Runs one seed to completion; panics with the trace on a violation.
pub fn run_seed(seed: u64) {
    let plan = Plan::from_seed(seed);
    let mut sim = Sim::new(plan.clone());
    match plan.scenario {
        Scenario::Chaos => {
            sim.start(true);
            let chaos_end = Duration::from_millis(500) + plan.chaos;
            sim.plan_chaos(Duration::from_millis(500), chaos_end);
            let settled = chaos_end + liveness_bound(&plan);
            sim.run_until(settled);
            sim.check_one_leader("after healing");
            // And it stays that way on a clean network.
            let (l, e) = sim.leader().unwrap_or_else(|| sim.fail("no leader"));
            sim.run_until(settled + plan.timing.dead_after * 10);
            sim.check_one_leader("stable after healing");
            if sim.leader() != Some((l, e)) {
                sim.fail("L2: leadership changed on a healed, quiet network");
            }
        }
        Scenario::Lossy => {
            sim.start(false);
            let settle =
                plan.timing.dead_after * 3 + plan.preempt_delay + Duration::from_millis(1_500);
            sim.run_until(settle);
            sim.check_one_leader("before loss");
            let before = sim.leader();
            let promotions = sim.promotions;
            let demotions = sim.demotions;
            sim.set_loss(plan.loss_percent);
            sim.run_until(settle + Duration::from_secs(20));
            if sim.promotions != promotions || sim.demotions != demotions || sim.leader() != before
            {
                sim.fail(&format!(
                    "L2: leadership changed under {}% loss (promotions {} -> {}, demotions {} -> {})",
                    plan.loss_percent, promotions, sim.promotions, demotions, sim.demotions
                ));
            }
            sim.set_loss(0);
            sim.run_until(settle + Duration::from_secs(21));
            sim.check_one_leader("after loss");
        }
        Scenario::OneWay => run_one_way(&mut sim, &plan),
    }
}

/// Blocks a random share of the directed links for good, then checks that a
/// node that hears a quorum both ways (itself included) leads within the
/// bound, alone, and keeps leading.
fn run_one_way(sim: &mut Sim, plan: &Plan) {
    let n = plan.nodes;
    let percent = sim.rng.range(10, 40) as u32;
    let mut blocked = vec![vec![false; n]; n];
    for (a, row) in blocked.iter_mut().enumerate() {
        for (b, cut) in row.iter_mut().enumerate() {
            if a != b && sim.rng.chance(percent) {
                *cut = true;
                sim.block_at(a, b, Duration::ZERO);
            }
        }
    }
    let both_ways = |a: usize, b: usize| !blocked[a][b] && !blocked[b][a];
    let quorum = regentd::core::quorum(n);
    let can_lead: Vec<usize> = (0..n)
        .filter(|&i| !plan.witnesses[i])
        .filter(|&i| 1 + (0..n).filter(|&j| j != i && both_ways(i, j)).count() >= quorum)
        .collect();
    sim.start(true);
    let settled = Duration::from_millis(500) + liveness_bound(plan);
    sim.run_until(settled);
    let leaders = |sim: &Sim| -> Vec<usize> {
        (0..n)
            .filter(|&i| {
                sim.hosts[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.leading().is_some())
            })
            .collect()
    };
    let first = leaders(sim);
    if can_lead.is_empty() {
        if !first.is_empty() {
            sim.fail(&format!(
                "L1 (one-way links): {first:?} lead, but no node hears a quorum both ways"
            ));
        }
        return;
    }
    let [l] = first[..] else {
        sim.fail(&format!(
            "L1 (one-way links): leaders {:?}, yet n{:?} hear a quorum both ways",
            first.iter().map(|i| i + 1).collect::<Vec<_>>(),
            can_lead.iter().map(|i| i + 1).collect::<Vec<_>>()
        ));
    };
    if !can_lead.contains(&l) {
        sim.fail(&format!(
            "L1 (one-way links): n{} leads without a quorum both ways",
            l + 1
        ));
    }
    let epoch = sim.leader();
    sim.run_until(settled + plan.timing.dead_after * 10);
    if sim.leader() != epoch || leaders(sim).len() != 1 {
        sim.fail("L2: leadership changed under steady one-way links");
    }
}
