//! Real `regent run` daemons on an emulated LAN, with a shared hook log.
//!
//! Every host's promote/demote hook appends `REALTIME_NS EPOCH KIND NODE
//! REASON` to one file, so the test can check across hosts that no two
//! leadership intervals overlap and that no epoch repeats. A demote appends a
//! second line, `demote-end`, once its work is done: S3 counts a leader as
//! holding until its demote has ended.
//!
//! Times: `date +%s%N` in the hook, CLOCK_REALTIME. Network namespaces do not
//! virtualise clocks, so every host, hook and this test read the one system
//! clock, and the test's own instants (`realtime_ns`, signals, crashes) are
//! on the same scale. CLOCK_MONOTONIC would be immune to a wall clock step,
//! but a shell hook cannot read it without a helper program, and
//! `/proc/uptime` only has 10 ms resolution, coarser than the margins under
//! test. The wall clock is only slewed (at most 500 ppm) by NTP during a
//! run, which does not matter over seconds; a step would show as a jump in
//! the timeline a failure prints. A stamp is taken inside the hook, so a
//! promote is logged a little after the hook started and a demote-end a
//! little before it exited: the logged window is what the hook itself held
//! (it is the resource), and is a few ms shorter than the process's life.

#![allow(dead_code, clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::netns::Lan;

/// One line of a timeline: when, what, and the (node, epoch) of a refresh.
type TimelineRow = (u128, String, Option<(usize, u64)>);

/// How the cluster is set up.
#[derive(Clone, Debug)]
pub struct Opts {
    pub heartbeat_ms: u64,
    pub dead_after_ms: u64,
    pub priorities: Vec<u32>,
    pub unicast: bool,
    pub ipv6: bool,
    pub preempt: bool,
    pub preempt_delay_ms: u64,
    /// Extra TOML appended to the [hooks] table.
    pub hooks_extra: String,
    /// Use this hook script instead of the logging one.
    pub hook: Option<PathBuf>,
    /// How many hosts are `[[member]]`s (hosts `1..=members`); `None` for
    /// all. Hosts beyond get no configuration: a test writes its own.
    pub members: Option<usize>,
    /// The logging hook's demote sleeps this long between its `demote` and
    /// its `demote-end` line (a demote that takes its time).
    pub demote_sleep_ms: u64,
    /// The logging hook logs `refresh` runs too (by default it ignores them).
    pub log_refresh: bool,
    /// Hosts that are witnesses, reached by unicast (`transport =
    /// "unicast"`) beside the group: put them behind the router of a
    /// [`Lan::routed`].
    pub witnesses: Vec<usize>,
    /// Float the LAN's IPv4 VIP ([`Lan::vip4`]) on `eth0` with the shipped
    /// `conf/hooks/vip`, through a wrapper that logs to the hook log as the
    /// logging hook does, instead of the logging hook (see [`VIP_WRAPPER`]).
    pub vip_hook: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            heartbeat_ms: 100,
            dead_after_ms: 300,
            priorities: Vec::new(),
            unicast: false,
            ipv6: false,
            preempt: true,
            preempt_delay_ms: 2000,
            hooks_extra: String::new(),
            hook: None,
            members: None,
            demote_sleep_ms: 0,
            log_refresh: false,
            witnesses: Vec::new(),
            vip_hook: false,
        }
    }
}

/// The hook of [`Opts::vip_hook`]: the harness's `time epoch kind node
/// reason` line at the start of promote and demote, `demote-end` after a
/// demote, and the shipped vip hook in between. `REGENT_REASON` is logged
/// so that a restarted daemon's start-up demote can be told from a demote
/// that ends a leadership.
pub const VIP_WRAPPER: &str = r#"#!/bin/sh
log='@DIR@/hooks.log'
[ "$1" = refresh ] || echo "$(date +%s%N) $2 $1 $REGENT_NODE $REGENT_REASON" >> "$log"
REGENT_VIP_ENV='@DIR@/vip.env'
export REGENT_VIP_ENV
'@VIP@' "$@"
rc=$?
[ "$1" = demote ] && echo "$(date +%s%N) $2 demote-end $REGENT_NODE $REGENT_REASON" >> "$log"
exit $rc
"#;

/// One line of the shared hook log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookEvent {
    pub at_ns: u128,
    pub epoch: u64,
    pub kind: String,
    pub node: usize,
    /// `REGENT_REASON` of the run, when the hook logged it ("" otherwise).
    pub reason: String,
}

/// One host's hold on leadership as the shared hook log shows it: from the
/// start of a promote to the end of the demote that followed (whatever its
/// epoch: the demote of that epoch, or the next start-up demote), or to a
/// crash the test caused. `end_ns` is `None` while it still holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub node: usize,
    pub epoch: u64,
    pub start_ns: u128,
    pub end_ns: Option<u128>,
    /// What ended it, for the timeline.
    pub ended_by: String,
}

impl Window {
    /// Whether this window and `other` share an instant.
    pub fn overlaps(&self, other: &Window) -> bool {
        let before = |end: Option<u128>, start: u128| end.is_some_and(|e| e <= start);
        !before(self.end_ns, other.start_ns) && !before(other.end_ns, self.start_ns)
    }
}

pub struct Cluster {
    pub lan: Lan,
    pub dir: PathBuf,
    pub opts: Opts,
    children: Vec<Option<Child>>,
    /// Hosts (index host - 1) whose `regent init` has run.
    initialised: Vec<bool>,
    /// Clusters of one test binary run one at a time: timing-sensitive
    /// daemons on a 2-core machine should not compete with each other.
    _serial: std::sync::MutexGuard<'static, ()>,
    /// Extra environment for every daemon started from now on.
    env: Vec<(String, String)>,
    /// Extra environment for one host's daemons (index host - 1), after `env`.
    host_env: Vec<Vec<(String, String)>>,
    /// What the test did and when (realtime ns), for the timeline.
    marks: std::sync::Mutex<Vec<(u128, String)>>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub fn regent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_regent")
}

impl Cluster {
    pub fn new(lan: Lan, opts: Opts) -> Cluster {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("regent-test-{}", lan.prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let n = lan.hosts();
        let c = Cluster {
            lan,
            dir,
            opts,
            children: (0..n).map(|_| None).collect(),
            initialised: vec![false; n],
            _serial: serial,
            env: Vec::new(),
            host_env: (0..n).map(|_| Vec::new()).collect(),
            marks: std::sync::Mutex::new(Vec::new()),
        };
        c.write_files();
        c
    }

    pub fn hosts(&self) -> usize {
        self.lan.hosts()
    }

    fn write_files(&self) {
        let key = self.dir.join("key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        self.write_hook(&self.dir.join("hook"), "$REGENT_NODE");
        if self.opts.vip_hook {
            self.write_vip_hook();
        }
        for host in 1..=self.members() {
            std::fs::write(self.config_path(host), self.config(host)).expect("config");
        }
    }

    /// Writes the logging hook to `path`, logging `node` (a literal host
    /// number, or `$REGENT_NODE`) as the node that ran it.
    /// A demote also logs `demote-end` when done, after sleeping
    /// `demote_sleep_ms` if set; `refresh` is logged if `log_refresh`.
    pub fn write_hook(&self, path: &Path, node: &str) {
        let log = self.hook_log();
        let log = log.display();
        let refresh = if self.opts.log_refresh {
            ""
        } else {
            "[ \"$1\" = refresh ] && exit 0\n"
        };
        let sleep = match self.opts.demote_sleep_ms {
            0 => String::new(),
            ms => format!("    sleep {}.{:03}\n", ms / 1000, ms % 1000),
        };
        std::fs::write(
            path,
            format!(
                "#!/bin/sh\n{refresh}\
                 echo \"$(date +%s%N) $2 $1 {node} $REGENT_REASON\" >> {log}\n\
                 if [ \"$1\" = demote ]; then\n{sleep}\
                 \x20   echo \"$(date +%s%N) $2 demote-end {node} $REGENT_REASON\" >> {log}\n\
                 fi\n",
            ),
        )
        .expect("hook");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The hook of [`Opts::vip_hook`] and its environment file.
    fn write_vip_hook(&self) {
        let vip = self.lan.vip4();
        std::fs::write(
            self.dir.join("vip.env"),
            format!(
                "VIP=\"{vip}/24\"\nDEV=eth0\nREGENT={}\nARP_COUNT=1\n",
                regent_bin()
            ),
        )
        .expect("vip.env");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/hooks/vip");
        let script = VIP_WRAPPER
            .replace("@DIR@", &self.dir.display().to_string())
            .replace("@VIP@", &shipped.display().to_string());
        let path = self.vip_hook_path();
        std::fs::write(&path, script).expect("hook");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn vip_hook_path(&self) -> PathBuf {
        self.dir.join("vip-hook")
    }

    /// How many hosts are members.
    pub fn members(&self) -> usize {
        self.opts.members.unwrap_or(self.hosts())
    }

    pub fn config_path(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}.toml"))
    }

    pub fn socket(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}.sock"))
    }

    pub fn hook_log(&self) -> PathBuf {
        self.dir.join("hooks.log")
    }

    pub fn daemon_log(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}.log"))
    }

    /// The configuration text for `host`, on the first member list
    /// (hosts `1..=members`, no `generation` key, so generation 1).
    pub fn config(&self, host: usize) -> String {
        let members: Vec<usize> = (1..=self.members()).collect();
        self.render_config(host, &members, None)
    }

    /// The configuration text for `host` on the member list `members` (host
    /// numbers) at `generation`, as an operator writes it for a change of
    /// the list (one member added or removed per generation).
    pub fn config_with(&self, host: usize, members: &[usize], generation: u32) -> String {
        self.render_config(host, members, Some(generation))
    }

    /// Writes [`Cluster::config_with`] to host's configuration file, for its
    /// next reload or start.
    pub fn write_config(&self, host: usize, members: &[usize], generation: u32) {
        std::fs::write(
            self.config_path(host),
            self.config_with(host, members, generation),
        )
        .expect("config");
    }

    fn render_config(&self, host: usize, members: &[usize], generation: Option<u32>) -> String {
        let o = &self.opts;
        let prio = o.priorities.get(host - 1).copied().unwrap_or(100);
        let mut s = format!("cluster = \"test\"\nnode = {host}\npriority = {prio}\n");
        if let Some(g) = generation {
            let _ = writeln!(s, "generation = {g}");
        }
        for &h in members {
            let addr = if o.ipv6 {
                self.lan.addr6(h).to_string()
            } else {
                self.lan.addr4(h).to_string()
            };
            let _ = write!(s, "\n[[member]]\nid = {h}\naddress = \"{addr}\"\n");
            if o.witnesses.contains(&h) {
                s.push_str("witness = true\ntransport = \"unicast\"\n");
            }
        }
        if o.unicast {
            s.push_str("\n[network]\nport = 7475\n");
        } else if o.ipv6 {
            s.push_str("\n[network]\ninterface = \"eth0\"\nmulticast = \"[ff02::4242]:7475\"\n");
        } else {
            s.push_str("\n[network]\ninterface = \"eth0\"\nmulticast = \"239.255.42.1:7475\"\n");
        }
        let hook = if o.vip_hook {
            self.vip_hook_path()
        } else {
            o.hook.clone().unwrap_or_else(|| self.dir.join("hook"))
        };
        let _ = write!(
            s,
            "\n[timing]\nheartbeat_ms = {}\ndead_after_ms = {}\n\n\
             [election]\npreempt = {}\npreempt_delay_ms = {}\nholdoff_ms = 3000\n\n\
             [hooks]\npromote = \"{h}\"\ndemote = \"{h}\"\ntimeout_ms = 5000\n{}\n\n\
             [auth]\nkey_file = \"{}\"\n\n[state]\ndir = \"{}\"\n\n[control]\nsocket = \"{}\"\n\n[log]\nlevel = \"debug\"\n",
            o.heartbeat_ms,
            o.dead_after_ms,
            o.preempt,
            o.preempt_delay_ms,
            o.hooks_extra,
            self.dir.join("key").display(),
            self.dir.join(format!("state{host}")).display(),
            self.socket(host).display(),
            h = hook.display(),
        );
        s
    }

    /// Sets extra environment variables for every daemon started from now on.
    pub fn set_env(&mut self, vars: &[(&str, String)]) {
        self.env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
    }

    /// Sets extra environment variables for host's daemons started from now
    /// on (on top of, and overriding, `set_env`'s).
    pub fn set_host_env(&mut self, host: usize, vars: &[(&str, String)]) {
        self.host_env[host - 1] = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
    }

    /// Notes in the timeline that the test did `what` now.
    pub fn mark(&self, what: impl Into<String>) -> u128 {
        let at = realtime_ns();
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at, what.into()));
        at
    }

    /// Notes in the timeline that `what` happened at `at` (realtime ns), for
    /// events the test learns of after the fact (a shim's log, say).
    pub fn mark_at(&self, at: u128, what: impl Into<String>) {
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at, what.into()));
    }

    /// Runs `regent init` in host's namespace, as an operator does once
    /// before the first start, its output going to the host's log. Returns
    /// whether it succeeded.
    pub fn init(&mut self, host: usize) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log(host))
            .expect("log file");
        let mut cmd = Command::new(regent_bin());
        cmd.arg("init")
            .arg("-c")
            .arg(self.config_path(host))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let status = self
            .lan
            .spawn(host, &mut cmd)
            .wait()
            .expect("wait for regent init");
        self.mark(format!("host {host}: regent init, {status}"));
        self.initialised[host - 1] = true;
        status.success()
    }

    /// Starts `regent run` in host's namespace, logging to its file. The
    /// first start of a host runs `regent init` first; later ones find
    /// whatever state the host has (or lost).
    pub fn start(&mut self, host: usize) {
        if !self.initialised[host - 1] && !self.init(host) {
            panic!("regent init failed on host {host}\n{}", self.dump());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log(host))
            .expect("log file");
        let mut cmd = Command::new(regent_bin());
        cmd.arg("run")
            .arg("-c")
            .arg(self.config_path(host))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.host_env[host - 1].iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = self.lan.spawn(host, &mut cmd);
        self.mark(format!("host {host}: daemon started (pid {})", child.id()));
        self.children[host - 1] = Some(child);
    }

    pub fn start_all(&mut self) {
        for h in 1..=self.members() {
            self.start(h);
        }
    }

    pub fn running(&mut self, host: usize) -> bool {
        match self.children[host - 1].as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` to host's daemon; returns the realtime instant.
    pub fn signal(&mut self, host: usize, signal: i32) -> u128 {
        let at = self.mark(format!(
            "host {host}: {} to the daemon",
            signal_name(signal)
        ));
        if let Some(c) = &self.children[host - 1] {
            // SAFETY: kill(2) on our own child; no memory is involved.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
        at
    }

    /// Waits for host's daemon to exit; returns its exit code.
    pub fn wait_exit(&mut self, host: usize, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.children[host - 1].as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.children[host - 1] = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM to host's daemon, which must exit cleanly within 10 s.
    pub fn stop(&mut self, host: usize) {
        self.signal(host, libc::SIGTERM);
        assert_eq!(
            self.wait_exit(host, Duration::from_secs(10)),
            Some(0),
            "host {host} did not exit cleanly after SIGTERM\n{}",
            self.dump()
        );
    }

    /// The pid of host's daemon, while it runs.
    pub fn pid(&self, host: usize) -> Option<u32> {
        self.children[host - 1].as_ref().map(|c| c.id())
    }

    /// The resident memory of host's daemon in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self, host: usize) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(host)?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// One sample of host's metrics: `name`, with the label `key="value"`
    /// among its labels if `label` is given. `None` if the daemon does not answer or has no such sample.
    pub fn metric(&self, host: usize, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        let (ok, text) = self.ctl(host, &["metrics"]);
        if !ok {
            return None;
        }
        let label = label.map(|(k, v)| format!("{k}=\"{v}\""));
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .find(|l| {
                label
                    .as_ref()
                    .map_or(true, |want| l.contains(want.as_str()))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// host's count of datagrams dropped for `reason` (0 if it cannot say).
    pub fn dropped(&self, host: usize, reason: &str) -> f64 {
        self.metric(
            host,
            "regent_packets_dropped_total",
            Some(("reason", reason)),
        )
        .unwrap_or(0.0)
    }

    pub fn kill(&mut self, host: usize) -> u128 {
        let at = self.signal(host, libc::SIGKILL);
        if let Some(mut c) = self.children[host - 1].take() {
            let _ = c.wait();
        }
        at
    }

    /// Every line of the shared hook log, in time order.
    pub fn hook_events(&self) -> Vec<HookEvent> {
        let text = std::fs::read_to_string(self.hook_log()).unwrap_or_default();
        let mut events: Vec<HookEvent> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some(HookEvent {
                    at_ns: w.next()?.parse().ok()?,
                    epoch: w.next()?.parse().ok()?,
                    kind: w.next()?.to_string(),
                    node: w.next()?.parse().ok()?,
                    reason: w.next().unwrap_or("").to_string(),
                })
            })
            .collect();
        events.sort_by_key(|e| e.at_ns);
        events
    }

    /// Waits for a promote after `since_ns` by a node not in `not`.
    pub fn wait_promote(
        &self,
        since_ns: u128,
        not: &[usize],
        limit: Duration,
    ) -> Option<HookEvent> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(e) = self
                .hook_events()
                .into_iter()
                .find(|e| e.kind == "promote" && e.at_ns >= since_ns && !not.contains(&e.node))
            {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// The node holding leadership according to the hook log, if any.
    pub fn holder(&self) -> Option<(usize, u64)> {
        let mut holding: Vec<Option<u64>> = vec![None; self.hosts() + 1];
        for e in self.hook_events() {
            match e.kind.as_str() {
                "promote" => holding[e.node] = Some(e.epoch),
                "demote" => holding[e.node] = None,
                _ => {}
            }
        }
        let holders: Vec<(usize, u64)> = holding
            .iter()
            .enumerate()
            .filter_map(|(n, h)| h.map(|e| (n, e)))
            .collect();
        assert!(
            holders.len() <= 1,
            "more than one holder: {holders:?}\n{}",
            self.dump()
        );
        holders.first().copied()
    }

    /// Across all hosts: no two leadership intervals overlap, no epoch is
    /// promoted twice, and each node's epochs increase. A crashed node's
    /// interval ends at `crashes` (node, realtime) entries.
    pub fn check_history(&self, crashes: &[(usize, u128)]) {
        let events = self.hook_events();
        let mut holding: Vec<Option<(u64, u128)>> = vec![None; self.hosts() + 1];
        let mut seen = std::collections::BTreeSet::new();
        let mut last_epoch = vec![0u64; self.hosts() + 1];
        let mut all: Vec<(u128, usize, String, u64)> = events
            .iter()
            .map(|e| (e.at_ns, e.node, e.kind.clone(), e.epoch))
            .collect();
        all.extend(crashes.iter().map(|&(n, t)| (t, n, "crash".to_string(), 0)));
        all.sort_by_key(|e| e.0);
        for (at, node, kind, epoch) in all {
            match kind.as_str() {
                "promote" => {
                    for (other, h) in holding.iter().enumerate() {
                        if let Some((e, since)) = h {
                            assert!(
                                other == node,
                                "overlap: node {node} promoted epoch {epoch} at {at} while node {other} \
                                 held epoch {e} since {since}\n{}",
                                self.dump()
                            );
                        }
                    }
                    assert!(
                        seen.insert(epoch),
                        "epoch {epoch} promoted twice\n{}",
                        self.dump()
                    );
                    assert!(
                        epoch > last_epoch[node],
                        "node {node} epochs went back\n{}",
                        self.dump()
                    );
                    last_epoch[node] = epoch;
                    holding[node] = Some((epoch, at));
                }
                _ => holding[node] = None,
            }
        }
    }

    /// The leadership windows of every host over the whole run, in order of
    /// their start. `crashes` are (node, realtime) instants at which the
    /// test took a host off the LAN and killed it: a window open then ends
    /// there.
    pub fn windows(&self, crashes: &[(usize, u128)]) -> Vec<Window> {
        let mut all: Vec<(u128, usize, String, u64, String)> = self
            .hook_events()
            .into_iter()
            .map(|e| (e.at_ns, e.node, e.kind, e.epoch, e.reason))
            .collect();
        all.extend(
            crashes
                .iter()
                .map(|&(n, t)| (t, n, "crash".to_string(), 0, String::new())),
        );
        all.sort_by_key(|e| e.0);
        let mut open: Vec<Option<Window>> = vec![None; self.hosts() + 1];
        let mut done = Vec::new();
        for (at, node, kind, epoch, reason) in all {
            let Some(slot) = open.get_mut(node) else {
                continue;
            };
            match kind.as_str() {
                // A promote while still holding (a demote that never ended)
                // extends the window it is in.
                "promote" if slot.is_none() => {
                    *slot = Some(Window {
                        node,
                        epoch,
                        start_ns: at,
                        end_ns: None,
                        ended_by: "still holding at the end".to_string(),
                    });
                }
                "demote-end" | "crash" => {
                    if let Some(mut w) = slot.take() {
                        w.end_ns = Some(at);
                        w.ended_by = if kind == "crash" {
                            "crash".to_string()
                        } else {
                            format!("demote-end of epoch {epoch} ({reason})")
                        };
                        done.push(w);
                    }
                }
                _ => {}
            }
        }
        done.extend(open.into_iter().flatten());
        done.sort_by_key(|w| w.start_ns);
        done
    }

    /// The whole run as text: every hook line, crash and test mark in time
    /// order, in ms since the first, then the windows.
    pub fn timeline(&self, crashes: &[(usize, u128)]) -> String {
        // (time, text, refresh run of (node, epoch)): refreshes in a row
        // print as one line, or they would drown everything else.
        let mut rows: Vec<TimelineRow> = self
            .hook_events()
            .into_iter()
            .map(|e| {
                let refresh = (e.kind == "refresh").then_some((e.node, e.epoch));
                let text = format!(
                    "node {} {:<10} epoch {:<3} {}",
                    e.node, e.kind, e.epoch, e.reason
                );
                (e.at_ns, text, refresh)
            })
            .collect();
        rows.extend(
            crashes
                .iter()
                .map(|&(n, t)| (t, format!("-- node {n} crashed (cable cut, SIGKILL)"), None)),
        );
        rows.extend(
            self.marks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(t, m)| (*t, format!("-- {m}"), None)),
        );
        rows.sort_by_key(|r| r.0);
        let t0 = rows.first().map_or(0, |r| r.0);
        let rel = |t: u128| (t as f64 - t0 as f64) / 1e6;
        let mut s = String::from("--- timeline (ms since the first line) ---\n");
        let mut i = 0;
        while i < rows.len() {
            let (t, text, refresh) = &rows[i];
            let mut j = i + 1;
            while refresh.is_some() && j < rows.len() && rows[j].2 == *refresh {
                j += 1;
            }
            if j - i > 1 {
                let _ = writeln!(
                    s,
                    "{:>10.1}  {text} x{} until {:.1}",
                    rel(*t),
                    j - i,
                    rel(rows[j - 1].0)
                );
            } else {
                let _ = writeln!(s, "{:>10.1}  {text}", rel(*t));
            }
            i = j;
        }
        s += "--- leadership windows (promote start .. demote end) ---\n";
        for w in self.windows(crashes) {
            let end = w
                .end_ns
                .map_or("open".to_string(), |e| format!("{:.1}", rel(e)));
            let _ = writeln!(
                s,
                "node {} epoch {:<3} {:>10.1} .. {:<10} ended by {}",
                w.node,
                w.epoch,
                rel(w.start_ns),
                end,
                w.ended_by
            );
        }
        s
    }

    /// S1, S2 and S3 from the hook log over the whole run, as strictly as the
    /// log allows: no two hosts' windows (promote start to demote end, see
    /// [`Cluster::windows`]) share an instant; no epoch is promoted twice, by
    /// two hosts or by one; each host's promoted epochs increase; and no host
    /// refreshes outside its own window (a leader acting after it let go).
    /// Panics with the timeline. Returns the windows.
    pub fn check_no_overlap(&self, crashes: &[(usize, u128)]) -> Vec<Window> {
        let windows = self.windows(crashes);
        let fail =
            |what: String| -> ! { panic!("{what}\n{}\n{}", self.timeline(crashes), self.dump()) };
        for (i, a) in windows.iter().enumerate() {
            for b in &windows[i + 1..] {
                if a.node != b.node && a.overlaps(b) {
                    let end = a.end_ns.map_or("still open".to_string(), |e| {
                        format!("{:.1} ms after", (e as f64 - b.start_ns as f64) / 1e6)
                    });
                    fail(format!(
                        "S3 overlap: node {} promoted epoch {} while node {} still held epoch {} \
                         (its window ended {end} that promote)",
                        b.node, b.epoch, a.node, a.epoch
                    ));
                }
            }
        }
        let events = self.hook_events();
        let mut led: Vec<(u64, usize)> = Vec::new();
        let mut last = vec![0u64; self.hosts() + 1];
        for e in events.iter().filter(|e| e.kind == "promote") {
            if let Some(&(_, other)) = led.iter().find(|(epoch, _)| *epoch == e.epoch) {
                fail(format!(
                    "S1: epoch {} led twice, by node {other} and by node {}",
                    e.epoch, e.node
                ));
            }
            led.push((e.epoch, e.node));
            if e.epoch <= last[e.node] {
                fail(format!(
                    "S2: node {} promoted epoch {} after epoch {}",
                    e.node, e.epoch, last[e.node]
                ));
            }
            last[e.node] = e.epoch;
        }
        for e in events.iter().filter(|e| e.kind == "refresh") {
            let inside = windows.iter().any(|w| {
                w.node == e.node
                    && w.start_ns <= e.at_ns
                    && w.end_ns.map_or(true, |end| e.at_ns <= end)
            });
            if !inside {
                fail(format!(
                    "node {} refreshed epoch {} outside its leadership window",
                    e.node, e.epoch
                ));
            }
        }
        windows
    }

    /// `regent status --json` of host, if its daemon answers.
    pub fn status_json(&self, host: usize) -> Option<String> {
        let (ok, text) = self.ctl(host, &["status", "--json"]);
        ok.then_some(text)
    }

    /// Waits until host's daemon says it follows `leader` at `epoch`;
    /// returns how long that took.
    pub fn wait_follows(
        &self,
        host: usize,
        (leader, epoch): (usize, u64),
        limit: Duration,
    ) -> Option<Duration> {
        let began = Instant::now();
        let follows = wait_until(limit, || {
            self.status_json(host).is_some_and(|j| {
                json_field(&j, "role").as_deref() == Some("follower")
                    && json_field(&j, "leader") == Some(leader.to_string())
                    && json_field(&j, "epoch") == Some(epoch.to_string())
            })
        });
        follows.then(|| began.elapsed())
    }

    /// Waits until host's daemon says it is linked both ways with each of
    /// `peers` (`alive` and `hears_us` in its status); returns whether it is.
    pub fn wait_linked(&self, host: usize, peers: &[usize], limit: Duration) -> bool {
        wait_until(limit, || {
            self.status_json(host).is_some_and(|j| {
                peers.iter().all(|&p| {
                    let Some(at) = j.find(&format!("{{\"id\":{p},")) else {
                        return false;
                    };
                    let peer = &j[at..];
                    let peer = &peer[..peer.find('}').unwrap_or(peer.len())];
                    json_field(peer, "alive").as_deref() == Some("true")
                        && json_field(peer, "hears_us").as_deref() == Some("true")
                })
            })
        })
    }

    /// The leadership changes the hook log shows since `since_ns`: every
    /// promote, and every demote but the start-up demote of a daemon that
    /// just started (which holds nothing). Needs a hook that logs
    /// `REGENT_REASON`, as [`Opts::vip_hook`]'s does.
    pub fn leadership_changes_since(&self, since_ns: u128) -> Vec<HookEvent> {
        self.hook_events()
            .into_iter()
            .filter(|e| e.at_ns >= since_ns)
            .filter(|e| e.kind == "promote" || (e.kind == "demote" && e.reason != "startup"))
            .collect()
    }

    /// The generation of the member list host runs: what `status --json`
    /// reports in its `membership` object, or, from a daemon that does not
    /// report it (or does not run), the generation of the list its state
    /// file says it confirmed last. `None` when neither says.
    pub fn generation(&self, host: usize) -> Option<u32> {
        let reported = self.status_json(host).and_then(|j| {
            let at = j.find("\"membership\":{")?;
            json_field(&j[at..], "generation")?.parse().ok()
        });
        reported.or_else(|| self.confirmed_generation(host))
    }

    /// The generation of the member list host's state file says it
    /// confirmed last (`membership GENERATION DIGEST PREVIOUS`).
    pub fn confirmed_generation(&self, host: usize) -> Option<u32> {
        let file = self.dir.join(format!("state{host}")).join("test.state");
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("membership "))?;
        line.split(' ').next()?.parse().ok()
    }

    /// Runs `regent REQUEST` against host's control socket.
    pub fn ctl(&self, host: usize, args: &[&str]) -> (bool, String) {
        let out = Command::new(regent_bin())
            .args(args)
            .arg("--socket")
            .arg(self.socket(host))
            .output()
            .expect("run regent");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// Hook log and daemon logs, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::from("--- hook log ---\n");
        s += &std::fs::read_to_string(self.hook_log()).unwrap_or_default();
        for h in 1..=self.hosts() {
            let log = std::fs::read_to_string(self.daemon_log(h)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let _ = writeln!(s, "--- host {h} (last 40 lines) ---");
            for l in tail.into_iter().rev() {
                s += l;
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test files kept in {}", self.dir.display());
        }
    }
}

/// The value of `key` in a flat JSON object as text: a number, `null`,
/// `true`/`false`, or a string without its quotes. Enough for `status --json`.
pub fn json_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next().map(str::to_string);
    }
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// How long two different hosts held leadership at once over `windows`,
/// in ms; a window still open counts up to now.
pub fn overlap_ms(windows: &[Window]) -> f64 {
    let now = realtime_ns();
    let mut ns = 0u128;
    for (i, a) in windows.iter().enumerate() {
        for b in windows[i + 1..].iter().filter(|b| b.node != a.node) {
            let start = a.start_ns.max(b.start_ns);
            let end = a.end_ns.unwrap_or(now).min(b.end_ns.unwrap_or(now));
            ns += end.saturating_sub(start);
        }
    }
    ns as f64 / 1e6
}

/// The usual name of the signals tests send.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGSTOP => "SIGSTOP".into(),
        libc::SIGCONT => "SIGCONT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        n => format!("signal {n}"),
    }
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
