//! The event loop: the one place that reads the clock and does I/O for the core.
//!
//! It owns the heartbeat socket, the signals, the hook runner, the state file,
//! the control socket and the systemd notifications, feeds everything into
//! `core::Node` as inputs with `now`, and carries out the node's effects in
//! order.
//!
//! Architecture Invariant: effects are carried out strictly in the order the
//! core returns them, and a `Send` of a claim or ack is dropped unless the
//! `Persist` before it reached the disk.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::{Config, ConfigErrors, Reload, Transport};
use crate::control::{self, ClientId, ControlServer, Counters, MetricsHttp, Request, Snapshot};
use crate::core::HookKind;
use crate::core::{
    Effect, Epoch, Incarnation, Input, Message, Node, NodeId, Persisted, Role, Time,
};
use crate::guard::GuardClient;
use crate::hooks::{HookConfig, HookRunner};
use crate::logging::Took;
use crate::net::Endpoint;
use crate::notify::Notifier;
use crate::persist::{Done, Writer};
use crate::state::{next_incarnation, Init, StateError, StateFile, Stored};
use crate::wire::{Codec, Drop, DropCounters, DropLog, Filter, KeyId, MAX_DATAGRAM};

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);
const WRITER: Token = Token(2);
const CONTROL_BASE: usize = 100;
const METRICS_BASE: usize = 500;
const HOOKS_BASE: usize = 1000;

/// How often the state directory is probed while it fails, or while leading.
const STATE_PROBE: Duration = Duration::from_secs(2);

/// How many of its own datagrams a node remembers (sequence number and the
/// start of the tag), to tell its own datagrams coming back (multicast
/// loopback, a replay) from another host's that carry its id.
const SENT_MEMORY: usize = 512;

/// Datagrams read from the heartbeat socket per turn of the event loop. A
/// flood that arrives faster than it is read must not keep the loop from its
/// timers: a leader that stops sending heartbeats loses its lease.
const RECEIVE_BUDGET: usize = 256;

/// The exit status of a daemon whose configuration is missing or invalid:
/// `EX_CONFIG` of sysexits.h. The units do not restart on it
/// (`RestartPreventExitStatus=78`), since a restart reads the same file.
pub const EX_CONFIG: u8 = 78;

/// Why the daemon could not start, or stopped on an error.
#[derive(Debug)]
pub enum Fatal {
    /// The configuration file cannot be read or is invalid; exit [`EX_CONFIG`].
    Config(ConfigErrors),
    /// The state file is missing, damaged or another node's: only the
    /// operator can mend it (`regent init`, or restoring the file), so it
    /// exits [`EX_CONFIG`] too rather than restart in a loop.
    State(String),
    /// Anything else (a socket that cannot be bound, a state file that
    /// cannot be read, the event loop failing); exit 1, and systemd
    /// restarts the daemon, since the cause may pass.
    Run(String),
}

impl Fatal {
    /// The process's exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::Config(_) | Fatal::State(_) => EX_CONFIG,
            Fatal::Run(_) => 1,
        }
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Config(errors) => write!(
                f,
                "not starting: the configuration is invalid (`regent check` shows the same)\n{errors}"
            ),
            Fatal::State(reason) | Fatal::Run(reason) => f.write_str(reason),
        }
    }
}

impl From<String> for Fatal {
    fn from(reason: String) -> Fatal {
        Fatal::Run(reason)
    }
}

/// Runs the daemon until it is stopped.
pub fn run(config_path: &Path) -> Result<(), Fatal> {
    let cfg = Config::load(config_path).map_err(Fatal::Config)?;
    let mut driver = Driver::start(config_path.to_path_buf(), cfg)?;
    Ok(driver.run()?)
}

/// `regent init`: loads and checks the configuration as `run` does, then
/// creates this node's state file (promised epoch 0, the wall-clock second
/// as its incarnation) unless a valid one is there. Returns the file's path
/// and what was done; an `Err` is a reason to exit 1.
pub fn init(config_path: &Path) -> Result<(PathBuf, Init), String> {
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let incarnation = next_incarnation(0, unix_seconds());
    StateFile::init(&cfg.state.dir, &cfg.cluster, cfg.node, incarnation).map_err(|e| e.to_string())
}

/// The running daemon.
struct Driver {
    config_path: PathBuf,
    cfg: Config,
    start: Instant,
    /// The wall-clock second the daemon started, since the Unix epoch: read
    /// once, with the incarnation floor, and only shown in metrics.
    start_unix_s: u64,
    /// The members that are witnesses (the member list is fixed until a
    /// restart), for status.
    witnesses: Vec<crate::core::NodeId>,
    poll: Poll,
    node: Node,
    codec: Codec,
    filter: Filter,
    endpoint: Endpoint,
    drops: DropCounters,
    drop_log: DropLog,
    /// The state writer thread: every write and probe of the state dir.
    writer: Writer,
    incarnation: Incarnation,
    /// Set when a write of the state failed; cleared by a successful probe.
    storage_failed: bool,
    next_state_probe: Instant,
    hooks: HookRunner,
    /// The lease guard process: told of every renewal and release.
    guard: GuardClient,
    signals: Signals,
    control: Option<ControlServer>,
    metrics_http: Option<MetricsHttp>,
    /// The control client waiting for a step-down answer.
    step_down_client: Option<ClientId>,
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    counters: Counters,
    /// Last source address and incarnation per sender, to spot two hosts with one id.
    sources: HashMap<NodeId, (IpAddr, Incarnation, Instant)>,
    /// This node's recent datagrams, oldest first.
    sent: SentMemory,
    /// When a DUPLICATE NODE ID line was last logged: a flood of them is
    /// counted, not logged one by one.
    duplicate_logged: Option<Instant>,
    /// The last read from the heartbeat socket stopped at its budget, so
    /// datagrams may be waiting that no readiness event will announce again
    /// (mio is edge-triggered).
    socket_backlog: bool,
    last_leader: Option<(NodeId, Epoch)>,
    role_since: Instant,
    last_lateness_warning: Option<Instant>,
    stopping: bool,
    /// READY=1 went to the service manager.
    ready: bool,
    /// The newest state the core asked to persist, for a retry after a
    /// failed write.
    last_persist: Persisted,
    exit: bool,
}

impl Driver {
    #[allow(clippy::disallowed_methods)] // the driver is the clock's one reader
    fn now() -> Instant {
        Instant::now()
    }

    fn start(config_path: PathBuf, cfg: Config) -> Result<Driver, Fatal> {
        // Read first, so that a lease end handed to the guard on this clock
        // is never later than the driver's own.
        let origin_ns = crate::guard::monotonic_ns();
        let start = Self::now();
        crate::guard::lock_memory("regent");
        let (mut state, stored) =
            StateFile::open(&cfg.state.dir, &cfg.cluster, cfg.node).map_err(|e| match e {
                StateError::Read { .. }
                | StateError::CreateDir { .. }
                | StateError::Write { .. } => Fatal::Run(e.to_string()),
                _ => Fatal::State(e.to_string()),
            })?;
        let start_unix_s = unix_seconds();
        let incarnation = Incarnation(next_incarnation(stored.incarnation, start_unix_s));
        state
            .store(Stored {
                incarnation: incarnation.0,
                ..stored.clone()
            })
            .map_err(|e| format!("cannot record the new incarnation: {e}"))?;
        info!(
            "starting node {} of cluster {}: promised epoch {}, incarnation {}",
            cfg.node, cfg.cluster, stored.promised, incarnation
        );

        let peers = unicast_peers(&cfg);
        let mut endpoint = Endpoint::open(&cfg.network.transport, &peers)
            .map_err(|e| format!("cannot open the heartbeat socket: {e}"))?;
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let waker = mio::Waker::new(poll.registry(), WRITER)
            .map_err(|e| format!("cannot create the event loop's waker: {e}"))?;
        let writer = Writer::spawn(
            state,
            incarnation.0,
            cfg.state.dir.clone(),
            std::sync::Arc::new(waker),
        )
        .map_err(|e| format!("cannot start the state writer thread: {e}"))?;
        endpoint
            .register(poll.registry(), SOCKET)
            .map_err(|e| format!("cannot watch the heartbeat socket: {e}"))?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("cannot watch signals: {e}"))?;

        let control = ControlServer::bind(
            &cfg.control.socket,
            cfg.control.group.as_deref(),
            poll.registry(),
            CONTROL_BASE,
        )
        .map_err(|e| {
            format!(
                "cannot open the control socket {}: {e}",
                cfg.control.socket.display()
            )
        })?;
        let metrics_http = match cfg.control.metrics_listen {
            Some(addr) => Some(
                MetricsHttp::bind(addr, poll.registry(), METRICS_BASE)
                    .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?,
            ),
            None => None,
        };

        let codec = codec(&cfg);
        if codec.is_insecure() {
            warn!("auth.insecure = true: anyone on the network can forge heartbeats");
        }
        let members: Vec<NodeId> = cfg.members.iter().map(|m| m.id).collect();
        let filter = Filter::new(cfg.node, &members);
        let hooks = HookRunner::new(hook_config(&cfg), HOOKS_BASE, start);
        let guard = GuardClient::spawn(&crate::guard::Settings::from_config(&cfg), origin_ns)
            .map_err(|e| format!("cannot start the lease guard: {e}"))?;
        info!("lease guard started, pid {}", guard.pid());
        let seed = incarnation.0 ^ u64::from(std::process::id()).rotate_left(32);
        let node = Node::new(
            cfg.core(),
            Persisted {
                promised: stored.promised,
                leader: stored.leader,
                membership: stored.membership.clone(),
            },
            incarnation,
            seed,
            Time::ZERO,
        );
        if node.outdated() {
            let ran = stored
                .membership
                .as_ref()
                .map_or(String::new(), |m| m.membership.to_string());
            return Err(Fatal::State(format!(
                "this host ran member list {ran}, and {} of {} is not a later one: a list \
                 changes only with a higher generation, and a host never goes back to an \
                 older one (docs/PROTOCOL.md §3.19); give it the current file",
                node.membership(),
                config_path.display()
            )));
        }
        let notifier = Notifier::from_env();
        let watchdog = crate::notify::watchdog_interval();
        let mut driver = Driver {
            config_path,
            start,
            start_unix_s,
            witnesses: cfg
                .members
                .iter()
                .filter(|m| m.witness)
                .map(|m| m.id)
                .collect(),
            poll,
            node,
            codec,
            filter,
            endpoint,
            drops: DropCounters::new(),
            drop_log: DropLog::new(),
            writer,
            incarnation,
            storage_failed: false,
            next_state_probe: start + STATE_PROBE,
            hooks,
            guard,
            signals,
            control: Some(control),
            metrics_http,
            step_down_client: None,
            notifier,
            watchdog,
            next_watchdog: watchdog.map(|_| start),
            counters: Counters::default(),
            sources: HashMap::new(),
            sent: SentMemory::default(),
            duplicate_logged: None,
            socket_backlog: false,
            last_leader: None,
            role_since: start,
            last_lateness_warning: None,
            stopping: false,
            ready: false,
            last_persist: Persisted {
                promised: stored.promised,
                leader: stored.leader,
                membership: stored.membership,
            },
            exit: false,
            cfg,
        };
        info!("{}", driver.cfg.summary());
        for advice in driver.cfg.advice() {
            warn!("{advice}");
        }
        driver.drain(start);
        if let Some(n) = driver.notifier.as_mut() {
            n.status("starting: running the start-up demote hook");
        }
        Ok(driver)
    }

    fn time(&self, at: Instant) -> Time {
        Time::from_duration(at.saturating_duration_since(self.start))
    }

    fn instant(&self, t: Time) -> Instant {
        self.start + t.as_duration()
    }

    /// How long after the last datagram of a second host with the same id
    /// it still counts as present.
    fn duplicate_window(&self) -> Duration {
        self.cfg.timing.dead_after * 10
    }

    fn run(&mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(256);
        while !self.exit {
            let now = Self::now();
            let timeout = if self.socket_backlog {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(now))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("event loop failed: {e}")),
            }
            crate::logging::tick(Self::now());
            let mut socket_ready = false;
            for event in events.iter() {
                // Each event is dated by a reading taken after it was seen,
                // not by one taken before the handlers ahead of it ran.
                let now = Self::now();
                match event.token() {
                    SOCKET => socket_ready = true,
                    WRITER => self.on_writer(),
                    SIGNALS => self.on_signals(now),
                    t if self.hooks.owns_token(t) => {
                        self.hooks.on_readable(t, self.poll.registry(), now)
                    }
                    t if self.control.as_ref().is_some_and(|c| c.owns_token(t)) => {
                        self.on_control(t, now)
                    }
                    t if self.metrics_http.as_ref().is_some_and(|m| m.owns_token(t)) => {
                        self.on_metrics_http(t, now)
                    }
                    _ => {}
                }
            }
            if socket_ready || self.socket_backlog {
                self.socket_backlog = self.receive();
            }
            self.on_timers(Self::now());
        }
        self.shutdown();
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.node.next_timeout().map(|t| self.instant(t)),
            self.hooks.next_timeout(),
            self.next_watchdog,
            Some(self.next_state_probe),
            self.control.as_ref().and_then(|c| c.next_timeout()),
            self.metrics_http.as_ref().and_then(|m| m.next_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timers(&mut self, now: Instant) {
        if self.hooks.next_timeout().is_some_and(|t| t <= now) {
            self.hooks.on_timeout(self.poll.registry(), now);
        }
        if let Some(c) = self.control.as_mut() {
            if c.next_timeout().is_some_and(|t| t <= now) {
                c.on_timeout(now, self.poll.registry());
            }
        }
        if let Some(m) = self.metrics_http.as_mut() {
            if m.next_timeout().is_some_and(|t| t <= now) {
                m.on_timeout(now, self.poll.registry());
            }
        }
        if let Some(due) = self.node.next_timeout().map(|t| self.instant(t)) {
            if due <= now {
                self.watch_lateness(now.duration_since(due), now);
                let t = self.time(now);
                self.node.handle_timeout(t);
            }
        }
        if now >= self.next_state_probe {
            self.next_state_probe = now + STATE_PROBE;
            self.probe_state(now);
        }
        self.drain(now);
        if let (Some(interval), Some(due)) = (self.watchdog, self.next_watchdog) {
            if now >= due {
                if let Some(n) = self.notifier.as_mut() {
                    n.watchdog();
                }
                self.next_watchdog = Some(now + interval);
            }
        }
    }

    /// The lease margin covers timer lateness; a loop that wakes later than
    /// half of it means the host is too busy for the configured timing.
    fn watch_lateness(&mut self, late: Duration, now: Instant) {
        if late <= self.cfg.timing.lease_margin / 2 {
            return;
        }
        if self
            .last_lateness_warning
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_lateness_warning = Some(now);
        warn!(
            "the event loop woke {:.1} ms late (lease_margin_ms is {}): this host is too busy \
             for the timing; raise timing.lease_margin_ms or give regent more CPU priority",
            late.as_secs_f64() * 1000.0,
            self.cfg.timing.lease_margin.as_millis()
        );
    }

    // ----- the heartbeat socket -----

    /// Reads and handles up to `RECEIVE_BUDGET` datagrams; true if it
    /// stopped at the budget, so more may be waiting. Each datagram is
    /// stamped with a clock reading taken after its `recv` returned: never
    /// before it arrived, and not as early as the start of the batch.
    fn receive(&mut self) -> bool {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        for _ in 0..RECEIVE_BUDGET {
            let received = self.endpoint.recv(&mut buf);
            let now = Self::now();
            let (len, from) = match received {
                Ok(Some(r)) => r,
                Ok(None) => return false,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.drop_packet(Drop::Oversized, now, &"an unknown sender");
                    continue;
                }
                Err(e) => {
                    warn!("receive failed: {e}");
                    return false;
                }
            };
            self.counters.packets_received += 1;
            self.counters.bytes_received += len as u64;
            let msg = match self.codec.decode(&buf[..len]) {
                Ok(m) => m,
                Err(d) => {
                    self.drop_packet(d, now, &from);
                    continue;
                }
            };
            if msg.from == self.cfg.node
                && msg.incarnation == self.incarnation
                && !self.sent.foreign(msg.seq.0, &buf[..len])
            {
                // Our own datagram looped back (local demos) or replayed.
                self.drop_packet(Drop::OwnId, now, &from);
                continue;
            }
            self.watch_identity(&msg, from, now);
            if let Err(d) = self.filter.admit(&msg) {
                self.drop_packet(d, now, &from);
                continue;
            }
            let t = self.time(now);
            self.node.handle(t, Input::Message(msg));
            self.drain(now);
        }
        true
    }

    fn drop_packet(&mut self, d: Drop, now: Instant, source: &dyn std::fmt::Display) {
        self.drops.count(d);
        let t = self.time(now);
        self.drop_log.log(d, t, source);
    }

    /// Two hosts sending as one node id break every guarantee: say so loudly.
    ///
    /// A datagram with this node's id that this node did not send (a higher
    /// incarnation, or this incarnation with a sequence number or tag it
    /// never sent) proves a second host with this id: from then until
    /// `duplicate_window` after the last such datagram this node is not
    /// eligible (a leader resigns) and sends no Claim or Ack, so the two can
    /// never lead together or vote twice. A lower incarnation may be a replay
    /// of this node's own earlier run, which anyone can send: it is reported
    /// but changes nothing; the other host, seeing this node's higher
    /// incarnation, stands aside.
    fn watch_identity(&mut self, msg: &Message, from: SocketAddr, now: Instant) {
        if msg.from == self.cfg.node {
            self.counters.duplicate_id += 1;
            let proven = msg.incarnation >= self.incarnation;
            let due = self.duplicate_logged.map_or(true, |t| {
                now.duration_since(t) >= crate::wire::DropLog::INTERVAL
            });
            if due {
                self.duplicate_logged = Some(now);
                error!(
                    "DUPLICATE NODE ID: {} sends as node {} (this node's id, incarnation {} vs ours {}); \
                     give every host its own `node` id{}",
                    from.ip(),
                    msg.from,
                    msg.incarnation,
                    self.incarnation,
                    if proven {
                        "; not eligible to lead or vote while it lasts"
                    } else {
                        " (or a replay of this node's earlier run)"
                    }
                );
            }
            if proven {
                let t = self.time(now);
                self.node.handle(t, Input::Impostor);
                self.drain(now);
            }
            return;
        }
        if !self.cfg.members.iter().any(|m| m.id == msg.from) {
            // The filter drops it as `unknown_node`. Remembering its source
            // would let anyone with the key grow `sources` by one entry per
            // id they make up.
            return;
        }
        let window = self.duplicate_window();
        match self.sources.get(&msg.from) {
            Some(&(ip, inc, seen))
                if ip != from.ip()
                    && inc != msg.incarnation
                    && now.duration_since(seen) < window =>
            {
                self.counters.duplicate_id += 1;
                error!(
                    "DUPLICATE NODE ID: node {} is sent by both {} and {}; \
                     give every host its own `node` id",
                    msg.from,
                    ip,
                    from.ip()
                );
            }
            _ => {}
        }
        self.sources
            .insert(msg.from, (from.ip(), msg.incarnation, now));
    }

    fn send(&mut self, msg: &Message) {
        let bytes = match self.codec.encode(msg) {
            Ok(b) => b,
            Err(e) => {
                error!("cannot encode {:?}: {e}", msg.body);
                return;
            }
        };
        self.sent.remember(msg.seq.0, &bytes);
        match self.endpoint.send(&bytes) {
            Ok(n) => {
                self.counters.packets_sent += n as u64;
                self.counters.bytes_sent += (n * bytes.len()) as u64;
            }
            Err(e) => {
                self.counters.send_errors += 1;
                if self.counters.send_errors.is_power_of_two() {
                    warn!(
                        "send failed ({} failures so far): {e}",
                        self.counters.send_errors
                    );
                }
            }
        }
    }

    // ----- effects -----

    /// Carries out the node's effects and feeds back hook results until quiet.
    /// `now` dates the effects' bookkeeping; results fed back to the core
    /// get a fresh reading.
    fn drain(&mut self, now: Instant) {
        loop {
            while let Some(effect) = self.node.poll_effect() {
                match effect {
                    // Off the loop: the writer thread reports back through
                    // the waker, and the core holds its Claim or Ack till then.
                    Effect::Persist(p) => {
                        self.last_persist = p.clone();
                        self.writer.persist(p);
                    }
                    Effect::NotFresh { from } => {
                        self.drop_packet(Drop::NotFresh, now, &format_args!("node {from}"));
                    }
                    Effect::Foreign { from, theirs } => {
                        let ours = self.node.membership();
                        self.drop_packet(
                            Drop::Membership,
                            now,
                            &format_args!(
                                "node {from}, which runs {theirs}; this node runs {ours}"
                            ),
                        );
                    }
                    Effect::Send(msg) => self.send(&msg),
                    Effect::RunHook(req) => {
                        // A persist before this may have taken long: the
                        // lease is checked against the clock as it is now.
                        let fresh = Self::now();
                        self.grant(fresh);
                        self.hooks.request(req, self.poll.registry(), fresh);
                    }
                    Effect::Transition(t) => self.on_transition(&t, now),
                    Effect::Member(m) => log_member(&m),
                    Effect::StepDownResult(r) => {
                        let registry = self.poll.registry();
                        if let (Some(c), Some(client)) =
                            (self.control.as_mut(), self.step_down_client.take())
                        {
                            match r {
                                Ok(to) => c.reply(
                                    client,
                                    format!("handing over to node {to}\n"),
                                    registry,
                                    now,
                                ),
                                Err(e) => {
                                    warn!("step-down refused: {e}");
                                    c.reply_error(client, &e, registry, now)
                                }
                            }
                        }
                    }
                    Effect::Exit => self.exit = true,
                }
            }
            let t = self.time(Self::now());
            let mut fed = false;
            // The guard watches a demote from its start to its end: if the
            // daemon dies in between, the guard demotes again at once.
            while let Some(epoch) = self.hooks.poll_demote_started() {
                self.guard.demoting(epoch);
            }
            while let Some(done) = self.hooks.poll_done() {
                if done.kind == HookKind::Demote {
                    self.guard.release();
                }
                self.node.handle(t, Input::HookDone(done));
                fed = true;
            }
            while let Some(ok) = self.hooks.poll_health() {
                if ok {
                    info!("health check passes: eligible to lead");
                } else {
                    warn!("health check fails: not eligible to lead");
                }
                self.node.handle(t, Input::Health { ok });
                fed = true;
            }
            if !fed {
                break;
            }
        }
        if !self.ready && self.node.started() {
            // Ready once the start-up demote has ended: until then the host
            // may still hold what an earlier run held.
            self.ready = true;
            if let Some(n) = self.notifier.as_mut() {
                n.ready();
                n.status("start-up demote done: joining the cluster");
            }
        }
        self.guard.update(self.node.lease());
        self.counters.guard_renewals = self.guard.renewals;
        self.counters.guard_lost = self.guard.lost;
        self.counters.log_lines_dropped = crate::logging::dropped_total();
        self.grant(Self::now());
    }

    /// Hands the hook runner the lease the core holds now, so a promote or
    /// refresh starts only inside it.
    fn grant(&mut self, now: Instant) {
        let authority = self.node.lease().map(|(e, end)| (e, self.instant(end)));
        self.hooks
            .set_authority(authority, self.poll.registry(), now);
    }

    /// While the state directory fails, retry the write; while leading,
    /// check it is still writable, so a leader that could not persist its
    /// next promise steps down instead of leading on. The probe runs on the
    /// writer thread; `on_writer` hands its verdict to the core.
    fn probe_state(&mut self, now: Instant) {
        let status = self.node.status(self.time(now));
        if self.storage_failed {
            self.writer.probe(Some(self.last_persist.clone()));
        } else if status.role == Role::Leader {
            self.writer.probe(None);
        }
    }

    /// Feeds the writer thread's results to the core, each stamped when
    /// the loop handles it.
    fn on_writer(&mut self) {
        while let Some(done) = self.writer.poll_done() {
            let now = Self::now();
            let t = self.time(now);
            match done {
                Done::Written {
                    promised,
                    result: Ok(()),
                } => self.node.handle(t, Input::Persisted { promised }),
                Done::Written {
                    promised,
                    result: Err(e),
                } => {
                    error!("cannot persist promised epoch {promised}: {e}");
                    if !self.storage_failed {
                        self.storage_failed = true;
                        self.next_state_probe = now + STATE_PROBE;
                    }
                    self.node.handle(t, Input::PersistFailed { promised });
                }
                Done::Probed { result: Ok(()) } if self.storage_failed => {
                    info!(
                        "state directory {} is writable again",
                        self.writer.dir().display()
                    );
                    self.storage_failed = false;
                    self.node.handle(t, Input::Storage { ok: true });
                }
                Done::Probed { result: Ok(()) } => {}
                Done::Probed { result: Err(_) } if self.storage_failed => {}
                Done::Probed { result: Err(e) } => {
                    error!(
                        "state directory {} is not writable: {e}",
                        self.writer.dir().display()
                    );
                    self.storage_failed = true;
                    self.node.handle(t, Input::Storage { ok: false });
                }
            }
            self.drain(now);
        }
    }

    fn on_transition(&mut self, t: &crate::core::Transition, now: Instant) {
        self.counters.transitions += 1;
        let held = now.duration_since(self.role_since);
        self.role_since = now;
        let leader = t.leader.map_or("none".to_string(), |l| l.to_string());
        let lost = t.lost.map_or(String::new(), |l| match l.silent_for {
            Some(d) => format!(" (leader {} last heard {} ago)", l.id, Took(d)),
            None => format!(" (leader {} not heard since this daemon started)", l.id),
        });
        info!(
            "transition: {} epoch {} leader {} reason {}{lost} (previous state held {})",
            t.role,
            t.epoch,
            leader,
            t.reason,
            Took(held)
        );
        if t.role == Role::Leader {
            self.counters.elections_won += 1;
        }
        let current = t.leader.map(|l| (l, t.epoch));
        if current.is_some() && current != self.last_leader {
            self.counters.leader_changes += 1;
            self.last_leader = current;
        }
        if let Some(n) = self.notifier.as_mut() {
            n.status(&format!("{} epoch {} leader {}", t.role, t.epoch, leader));
        }
        self.hooks.notify(t, self.poll.registry(), now);
    }

    // ----- signals -----

    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGTERM | SIGINT => {
                    if self.stopping {
                        warn!("second stop signal: exiting without waiting for hooks");
                        self.exit = true;
                        return;
                    }
                    info!("stop requested: resigning and exiting");
                    self.stopping = true;
                    if let Some(n) = self.notifier.as_mut() {
                        n.stopping();
                    }
                    let t = self.time(now);
                    self.node.handle(t, Input::Shutdown);
                    self.drain(now);
                }
                SIGHUP => {
                    // The verdict is in the log; no one waits for an answer.
                    let _ = self.reload(now);
                }
                SIGCHLD => self.hooks.on_sigchld(self.poll.registry(), now),
                _ => {}
            }
        }
    }

    /// Re-reads the configuration file, on SIGHUP or a `reload` request.
    /// A file the daemon may take is applied, and the answer says what
    /// changed; one that does not validate, or that changes what only a
    /// restart applies, is refused with every reason, each at its line, and
    /// the running configuration stays. Either way the verdict is logged.
    fn reload(&mut self, now: Instant) -> Result<String, String> {
        if let Some(n) = self.notifier.as_mut() {
            n.reloading();
        }
        let file = self.config_path.display().to_string();
        let verdict = match self.cfg.reload(&self.config_path) {
            Err(errors) => {
                let text = format!("reload refused, the running configuration stays:\n{errors}");
                error!("{text}");
                Err(text)
            }
            Ok(Reload {
                config: new,
                changes,
            }) => match self.take_members(&new, now) {
                Err(reason) => {
                    let text = format!(
                        "reload refused, the running configuration stays:\n{file}: {reason}"
                    );
                    error!("{text}");
                    Err(text)
                }
                Ok(()) => Ok(self.take_config(new, &changes, &file, now)),
            },
        };
        if let Some(n) = self.notifier.as_mut() {
            n.ready();
        }
        verdict
    }

    /// Gives the core the new configuration, which refuses a member list
    /// it may not take now (§3.19); then points the sockets and the replay
    /// filter at the new list.
    fn take_members(&mut self, new: &Config, now: Instant) -> Result<(), String> {
        let multicast = matches!(new.network.transport, Transport::Multicast { .. });
        let peers = unicast_peers(new);
        // Checked before the core takes anything, so a refusal changes nothing.
        if multicast && !peers.is_empty() && !self.endpoint.has_unicast_side() {
            return Err(
                "members reached by unicast beside the group need a restart \
                 to open their socket"
                    .to_string(),
            );
        }
        let t = self.time(now);
        self.node.reconfigure(new.core(), t)?;
        if let Err(e) = self.endpoint.set_peers(&peers, multicast) {
            warn!("cannot send to the new member list's unicast addresses: {e}");
        }
        let members: Vec<NodeId> = new.members.iter().map(|m| m.id).collect();
        self.filter.set_members(&members);
        self.witnesses = new
            .members
            .iter()
            .filter(|m| m.witness)
            .map(|m| m.id)
            .collect();
        self.sources.retain(|id, _| members.contains(id));
        Ok(())
    }

    /// Applies a reload the core has taken: hooks, keys, log level.
    fn take_config(&mut self, new: Config, changes: &[String], file: &str, now: Instant) -> String {
        self.hooks.set_config(hook_config(&new));
        self.codec = codec(&new);
        crate::logging::set_level(new.log.level);
        let text = if changes.is_empty() {
            format!("reloaded {file}: nothing changed")
        } else {
            format!("reloaded {file}:\n  {}", changes.join("\n  "))
        };
        info!("configuration {text}");
        info!("configuration in force: {}", new.summary());
        self.cfg = new;
        self.drain(now);
        text
    }

    // ----- control -----

    /// The answer to `role`: whether this node leads now, in one line.
    fn role_line(&self, now: Instant) -> String {
        let t = self.time(now);
        match self.node.lease() {
            Some((epoch, end)) if t < end => format!("leader epoch {epoch}\n"),
            _ => match self.node.status(t).leader {
                Some(l) if l != self.cfg.node => format!("follower of node {l}\n"),
                _ => "follower, no leader known\n".to_string(),
            },
        }
    }

    fn on_control(&mut self, token: Token, now: Instant) {
        let Some(c) = self.control.as_mut() else {
            return;
        };
        let requests = c.on_event(token, self.poll.registry(), now);
        self.counters.control_denied = c.denied();
        for (client, request) in requests {
            let reply = match request {
                Request::Status { json: true } => Ok(self.render(now, control::render_status_json)),
                Request::Status { json: false } => Ok(self.render(now, control::render_status)),
                Request::Metrics => Ok(self.render(now, control::render_metrics)),
                Request::Reload => self.reload(now).map(|text| format!("{text}\n")),
                Request::Role => Ok(self.role_line(now)),
                Request::StepDown { to } => {
                    if self.step_down_client.is_some() {
                        Err("a step-down is already under way".to_string())
                    } else {
                        info!(
                            "step-down requested{}",
                            to.map_or(String::new(), |t| format!(" to node {t}"))
                        );
                        self.step_down_client = Some(client);
                        let t = self.time(now);
                        self.node.handle(t, Input::StepDown { to });
                        self.drain(now);
                        continue;
                    }
                }
            };
            let registry = self.poll.registry();
            if let Some(c) = self.control.as_mut() {
                match reply {
                    Ok(text) => c.reply(client, text, registry, now),
                    Err(e) => c.reply_error(client, &e, registry, now),
                }
            }
        }
    }

    fn on_metrics_http(&mut self, token: Token, now: Instant) {
        let Some(m) = self.metrics_http.as_mut() else {
            return;
        };
        let clients = m.on_event(token, self.poll.registry(), now);
        if clients.is_empty() {
            return;
        }
        let text = self.render(now, control::render_metrics);
        let registry = self.poll.registry();
        if let Some(m) = self.metrics_http.as_mut() {
            for client in clients {
                m.reply(client, &text, registry, now);
            }
        }
    }

    fn render(&self, now: Instant, f: impl Fn(&Snapshot) -> String) -> String {
        let status = self.node.status(self.time(now));
        let hooks = self.hooks.stats();
        let snap = Snapshot {
            cluster: &self.cfg.cluster,
            rank: self.node.rank(),
            witnesses: &self.witnesses,
            status: &status,
            dead_after: self.cfg.timing.dead_after,
            counters: &self.counters,
            drops: &self.drops,
            hooks: &hooks,
            uptime: now.duration_since(self.start),
            start_unix_s: self.start_unix_s,
        };
        f(&snap)
    }

    fn shutdown(&mut self) {
        self.hooks.shutdown();
        if let Some(mut c) = self.control.take() {
            c.close_all(self.poll.registry());
        }
        if let Some(mut m) = self.metrics_http.take() {
            m.close_all(self.poll.registry());
        }
        info!("stopped");
    }
}

/// The sequence numbers and tag starts of this node's last `SENT_MEMORY`
/// datagrams. A tag is an HMAC: no one without the key makes one, and no two
/// different datagrams share one.
#[derive(Debug, Default)]
struct SentMemory {
    /// `(seq, last 8 bytes of the datagram)`, oldest first, seqs increasing.
    recent: std::collections::VecDeque<(u64, [u8; 8])>,
    /// The first seq this run sent: a run numbers its messages upward from
    /// its own random start, so nothing below it is this run's.
    first: Option<u64>,
}

impl SentMemory {
    /// Remembers a datagram about to be sent.
    fn remember(&mut self, seq: u64, datagram: &[u8]) {
        self.first.get_or_insert(seq);
        if self.recent.len() == SENT_MEMORY {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, tag_end(datagram)));
    }

    /// Whether a received datagram of this node's id and incarnation was
    /// surely sent by someone else: its seq was never sent yet (above the
    /// newest, or below this run's first), or a different datagram was sent
    /// with it. One older than the memory but not below the first may be an
    /// old datagram of ours replayed, so it is not.
    fn foreign(&self, seq: u64, datagram: &[u8]) -> bool {
        let Some(&(newest, _)) = self.recent.back() else {
            return true;
        };
        if seq > newest || self.first.is_some_and(|first| seq < first) {
            return true;
        }
        match self.recent.binary_search_by_key(&seq, |&(s, _)| s) {
            Ok(i) => self.recent[i].1 != tag_end(datagram),
            // Inside the remembered range but never sent: someone else's.
            Err(i) => i > 0,
        }
    }
}

/// The last 8 bytes of a datagram: the end of its tag.
/// A member came back or fell silent: one line each way, so the journal
/// tells when a host died and when it returned.
fn log_member(m: &crate::core::MemberChange) {
    let ago = Took(m.silent_for);
    match (m.alive, m.left) {
        (true, _) => info!("member {} is up", m.id),
        (false, true) => info!("member {} left: it said it is stopping", m.id),
        (false, false) => warn!("member {} is down: last heard {ago} ago", m.id),
    }
}

fn tag_end(datagram: &[u8]) -> [u8; 8] {
    let mut end = [0u8; 8];
    let n = datagram.len().min(8);
    end[8 - n..].copy_from_slice(&datagram[datagram.len() - n..]);
    end
}

/// The addresses each datagram goes to by unicast: every other member's in
/// unicast mode; with multicast, those of the members reached by unicast
/// beside the group (on the group's port), if any.
fn unicast_peers(cfg: &Config) -> Vec<SocketAddr> {
    let (port, all) = match &cfg.network.transport {
        Transport::Multicast { unicast: None, .. } => return Vec::new(),
        Transport::Multicast { group, .. } => (group.port(), false),
        Transport::Unicast { port, .. } => (*port, true),
    };
    cfg.members
        .iter()
        .filter(|m| m.id != cfg.node && (all || m.unicast))
        .filter_map(|m| {
            m.address
                .map(|a| SocketAddr::new(a, m.port.unwrap_or(port)))
        })
        .collect()
}

/// The codec of this node's keys: it sends with `auth.key` under
/// `auth.key_id` and accepts that key and every `[[auth.accept]]` one; with
/// no key, the insecure one derived from the cluster name.
fn codec(cfg: &Config) -> Codec {
    let a = &cfg.auth;
    let Some(key) = a.key.as_deref() else {
        return Codec::new(&cfg.cluster, None);
    };
    // `Config::load` read every key file; a key missing here would only
    // leave datagrams under its id unaccepted.
    let accept: Vec<(KeyId, &[u8])> = a
        .accept
        .iter()
        .filter_map(|k| Some((k.id, k.key.as_deref()?)))
        .collect();
    Codec::with_keys(&cfg.cluster, (a.key_id, key), &accept)
}

/// The hooks this node runs: none on a witness, which never leads.
fn hook_config(cfg: &Config) -> HookConfig {
    let h = &cfg.hooks;
    let runs = !cfg.witness();
    HookConfig {
        promote: h.promote.clone().filter(|_| runs),
        demote: h.demote.clone().filter(|_| runs),
        notify: h.notify.clone().filter(|_| runs),
        check: h.check.clone().filter(|_| runs),
        timeout: h.timeout,
        kill_grace: h.kill_grace,
        refresh_interval: h.refresh_interval,
        output_max_bytes: h.output_max_bytes,
        check_interval: h.check_interval,
        check_timeout: h.check_timeout,
        check_fall: h.check_fall,
        check_rise: h.check_rise,
        demote_budget: cfg.timing.demote_budget,
        node: cfg.node,
        cluster: cfg.cluster.clone(),
    }
}

/// Seconds since the Unix epoch: only a floor for the incarnation and the
/// start time shown in metrics, never a protocol time.
fn unix_seconds() -> u64 {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_memory_tells_own_datagrams_from_a_duplicates() {
        let datagram = |seq: u64, who: u8| {
            let mut d = vec![1, who];
            d.extend_from_slice(&seq.to_be_bytes());
            d.extend_from_slice(&[who; 32]);
            d[40] = seq as u8; // the "tag" differs per datagram
            d
        };
        let mut m = SentMemory::default();
        assert!(m.foreign(1, &datagram(1, 0)), "nothing sent yet");
        for seq in [1, 2, 3, 5] {
            m.remember(seq, &datagram(seq, 0));
        }
        assert!(!m.foreign(2, &datagram(2, 0)), "our own, looped back");
        assert!(!m.foreign(5, &datagram(5, 0)), "our newest");
        assert!(m.foreign(2, &datagram(2, 9)), "same seq, another tag");
        assert!(
            m.foreign(4, &datagram(4, 0)),
            "a seq never sent inside the range"
        );
        assert!(m.foreign(6, &datagram(6, 0)), "a seq not sent yet");
        assert!(
            m.foreign(0, &datagram(0, 9)),
            "below this run's first seq: never ours"
        );
        for seq in 6..6 + SENT_MEMORY as u64 {
            m.remember(seq, &datagram(seq, 0));
        }
        assert_eq!(m.recent.len(), SENT_MEMORY);
        assert!(!m.foreign(3, &datagram(3, 9)), "forgotten: maybe a replay");
        assert!(m.foreign(0, &datagram(0, 9)), "still below the first");
    }
}
