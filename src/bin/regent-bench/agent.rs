//! The agents under test on an emulated LAN: `regent run` or keepalived on
//! every host, their configuration files, and the faults a scenario injects
//! into them (crash, graceful stop, step-down, reboot). The hosts sit on one
//! LAN, or two of them beside a witness behind a router ([`Topology`]).
//!
//! Everything it writes lives in one temporary directory, removed on drop
//! unless asked to keep it; everything it starts lives in the Lan's
//! namespaces and dies with them.

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::Lan;

/// Which failover agent runs on the hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    Regent,
    Keepalived,
}

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::Regent => "regent",
            Agent::Keepalived => "keepalived",
        }
    }
}

/// A timing profile: heartbeat (VRRP advert) interval and failure
/// detection, and regent's lease margin and demote budget (its defaults,
/// 20 ms and 25 ms, unless a profile's dead_after is too short for them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    pub heartbeat_ms: u64,
    pub dead_after_ms: u64,
    pub lease_margin_ms: u64,
    pub demote_budget_ms: u64,
}

/// Equal detection at 100 ms: regent's dead_after is three heartbeats, as
/// keepalived's master is dead after three adverts.
pub const COMPARISON: Profile = Profile {
    name: "comparison",
    heartbeat_ms: 100,
    dead_after_ms: 300,
    lease_margin_ms: 20,
    demote_budget_ms: 25,
};

/// regent's fast timing: dead_after is five heartbeats.
pub const FAST: Profile = Profile {
    name: "fast",
    heartbeat_ms: 20,
    dead_after_ms: 100,
    lease_margin_ms: 20,
    demote_budget_ms: 25,
};

/// Equal detection at 20 ms: three heartbeats, as keepalived's three
/// adverts. The lease margin and demote budget shrink to fit (60 ms less
/// 1 % drift, 5 ms and 10 ms leaves a 44 ms lease for 20 ms heartbeats).
pub const EQUAL_FAST: Profile = Profile {
    name: "equal-fast",
    heartbeat_ms: 20,
    dead_after_ms: 60,
    lease_margin_ms: 5,
    demote_budget_ms: 10,
};

/// Where the agents run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// This many hosts on the client's LAN, each able to lead, multicasting.
    Lan(usize),
    /// Two hosts on the client's LAN, multicasting, and for regent a
    /// witness ([`WITNESS`]) on a second subnet behind a router, which the
    /// hosts reach by unicast and which reaches them by unicast. keepalived
    /// has no witness: it runs on the two hosts alone.
    Witness,
}

/// The witness's host number in [`Topology::Witness`].
pub const WITNESS: usize = 3;

impl Topology {
    /// The hosts that can hold the VIP.
    pub fn hosts(self) -> usize {
        match self {
            Topology::Lan(n) => n,
            Topology::Witness => 2,
        }
    }

    /// The members that only vote.
    pub fn witnesses(self) -> usize {
        match self {
            Topology::Lan(_) => 0,
            Topology::Witness => 1,
        }
    }
}

/// What every group needs to know besides agent, profile and size.
#[derive(Clone, Debug)]
pub struct Setup {
    pub regent: PathBuf,
    /// The operator's VIP hook to use instead of the bench's own.
    pub hook: Option<PathBuf>,
    pub log_level: String,
    pub keep: bool,
}

/// Traffic counters of one host.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// One agent per host of an emulated LAN with a client.
#[derive(Debug)]
pub struct Group {
    pub agent: Agent,
    pub profile: Profile,
    pub topology: Topology,
    dir: PathBuf,
    setup: Setup,
    children: Vec<Option<Child>>,
    /// Declared last: dropped after the children are reaped.
    pub lan: Lan,
}

impl Group {
    pub fn new(
        agent: Agent,
        profile: Profile,
        topology: Topology,
        setup: &Setup,
    ) -> io::Result<Group> {
        let lan = match (topology, agent) {
            (Topology::Lan(n), _) => Lan::with_client(n),
            (Topology::Witness, Agent::Regent) => Lan::routed_with_client(WITNESS, &[WITNESS]),
            (Topology::Witness, Agent::Keepalived) => Lan::with_client(2),
        };
        let hosts = lan.hosts();
        let dir = std::env::temp_dir().join(format!("regent-bench-{}", lan.prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let group = Group {
            agent,
            profile,
            topology,
            dir,
            setup: setup.clone(),
            children: (0..hosts).map(|_| None).collect(),
            lan,
        };
        group.write_files()?;
        Ok(group)
    }

    /// Every host with an agent, a witness included.
    pub fn hosts(&self) -> usize {
        self.lan.hosts()
    }

    /// The host of the witness, if this group has one.
    pub fn witness(&self) -> Option<usize> {
        (self.topology == Topology::Witness && self.agent == Agent::Regent).then_some(WITNESS)
    }

    /// The hosts that can hold the VIP: every host but a witness.
    pub fn leaders(&self) -> Vec<usize> {
        (1..=self.hosts())
            .filter(|&h| Some(h) != self.witness())
            .collect()
    }

    /// The VIP with its prefix length, as the agents configure it.
    pub fn vip_cidr(&self) -> String {
        format!("{}/24", self.lan.vip4())
    }

    /// A distinct priority per host; host `hosts` ranks highest.
    fn priority(&self, host: usize) -> u32 {
        100 + host as u32
    }

    fn write_files(&self) -> io::Result<()> {
        match self.agent {
            Agent::Regent => {
                let key = self.dir.join("key");
                std::fs::write(&key, "0123456789abcdef0123456789abcdef\n")?;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
                let hook = self.dir.join("hook");
                std::fs::write(&hook, self.hook_script())?;
                std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
                if self.setup.hook.is_some() {
                    let vip = self.vip_cidr();
                    std::fs::write(
                        self.dir.join("vip.env"),
                        format!("VIP=\"{vip}\"\nDEV=eth0\n"),
                    )?;
                }
                for host in 1..=self.hosts() {
                    std::fs::write(self.config_path(host), self.regent_config(host))?;
                    self.init(host)?;
                }
            }
            Agent::Keepalived => {
                for host in 1..=self.hosts() {
                    std::fs::write(self.config_path(host), self.keepalived_config(host))?;
                }
            }
        }
        Ok(())
    }

    /// `regent init` on `host`, as an operator runs it once the
    /// configuration is written: `regent run` refuses to start without it.
    fn init(&self, host: usize) -> io::Result<()> {
        let mut cmd = Command::new(&self.setup.regent);
        cmd.arg("init")
            .arg("-c")
            .arg(self.config_path(host))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = self.lan.spawn(host, &mut cmd).wait_with_output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "regent init on host {host} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// The bench's own VIP hook, or a wrapper that points the operator's
    /// hook at this LAN's VIP through its environment file.
    fn hook_script(&self) -> String {
        let vip = self.vip_cidr();
        match &self.setup.hook {
            Some(path) => format!(
                "#!/bin/sh\n# regent-bench: the operator's VIP hook, configured for this LAN.\n\
                 export REGENT_VIP_ENV={env}\nexport VIP=\"{vip}\" DEV=eth0\nexec {hook} \"$@\"\n",
                env = self.dir.join("vip.env").display(),
                hook = path.display(),
            ),
            None => format!(
                "#!/bin/sh\n# regent-bench VIP hook: HOOK promote|demote|refresh EPOCH\n\
                 VIP={vip}\n\
                 case \"$1\" in\n\
                 promote|refresh)\n    ip addr replace \"$VIP\" dev eth0 || exit 1\n    \
                 arping -q -U -c 2 -I eth0 \"${{VIP%/*}}\" || true ;;\n\
                 demote)\n    ip addr del \"$VIP\" dev eth0 2>/dev/null || true ;;\n\
                 esac\nexit 0\n"
            ),
        }
    }

    fn config_path(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}.conf"))
    }

    pub fn socket(&self, host: usize) -> PathBuf {
        socket_path(&self.dir, host)
    }

    pub fn log_path(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}.log"))
    }

    fn pid_file(&self, host: usize, which: &str) -> PathBuf {
        self.dir.join(format!("h{host}.{which}.pid"))
    }

    fn regent_config(&self, host: usize) -> String {
        let members: Vec<Ipv4Addr> = (1..=self.hosts()).map(|h| self.lan.addr4(h)).collect();
        regent_config(&RegentFile {
            node: host,
            priority: self.priority(host),
            members: &members,
            witness: self.witness(),
            profile: self.profile,
            dir: &self.dir,
            log_level: &self.setup.log_level,
        })
    }

    fn keepalived_config(&self, host: usize) -> String {
        // advert_int is the heartbeat, in seconds; VRRPv3 takes centiseconds.
        let advert = self.profile.heartbeat_ms as f64 / 1000.0;
        format!(
            "global_defs {{\n  router_id h{host}\n  vrrp_version 3\n}}\n\n\
             vrrp_instance bench {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  \
             virtual_router_id 51\n  priority {prio}\n  advert_int {advert}\n  \
             virtual_ipaddress {{\n    {vip} dev eth0\n  }}\n}}\n",
            prio = self.priority(host),
            vip = self.vip_cidr(),
        )
    }

    /// Starts the agent on `host`, logging to its file.
    pub fn start(&mut self, host: usize) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(host))?;
        let mut cmd = match self.agent {
            Agent::Regent => {
                let mut c = Command::new(&self.setup.regent);
                c.arg("run").arg("-c").arg(self.config_path(host));
                c
            }
            Agent::Keepalived => {
                let _ = std::fs::remove_file(self.pid_file(host, "main"));
                let _ = std::fs::remove_file(self.pid_file(host, "vrrp"));
                let mut c = Command::new("keepalived");
                c.args(["-n", "-l", "-D", "-P", "-f"])
                    .arg(self.config_path(host))
                    .arg("-p")
                    .arg(self.pid_file(host, "main"))
                    .arg("-r")
                    .arg(self.pid_file(host, "vrrp"));
                c
            }
        };
        // Both streams into one pipe, read by a thread that stamps each
        // line with the bench's clock (the daemons log no time of their own),
        // so transitions line up with what the client saw.
        let (reader, writer) = pipe()?;
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            // Its own process group: a Ctrl-C at the terminal reaches the
            // bench, which then cleans up, not the agents behind its back.
            .process_group(0);
        std::thread::Builder::new()
            .name(format!("log-h{host}"))
            .spawn(move || stamp_lines(reader, log))?;
        let child = self.lan.spawn(host, &mut cmd);
        // The parent's copies of the write end go with `cmd`, so the reader
        // sees the end of the stream when the agent and its hooks are gone.
        drop(cmd);
        self.children[host - 1] = Some(child);
        Ok(())
    }

    pub fn running(&mut self, host: usize) -> bool {
        match self.children[host - 1].as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The processes that make up the agent on `host`: regent's daemon, or
    /// keepalived's parent and its VRRP child.
    pub fn pids(&self, host: usize) -> Vec<u32> {
        let mut pids: Vec<u32> = self.children[host - 1].iter().map(Child::id).collect();
        if self.agent == Agent::Keepalived {
            if let Some(pid) = std::fs::read_to_string(self.pid_file(host, "vrrp"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Whether anything besides the agent runs on `host`: a hook (the VIP
    /// hook's arping runs for a second after a promote or refresh). regent's
    /// lease guard (`regent guard`, a child of the daemon that lives as
    /// long as it) is part of the agent, not a hook.
    pub fn busy(&self, host: usize) -> bool {
        let agent = self.pids(host);
        ns_pids(&self.lan.ns(host))
            .into_iter()
            .any(|pid| !agent.contains(&pid) && !self.is_guard(pid, &agent))
    }

    /// Whether `pid` is the lease guard of one of the `agent` processes.
    fn is_guard(&self, pid: u32, agent: &[u32]) -> bool {
        if self.agent != Agent::Regent {
            return false;
        }
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // The parent is the second field after the command name,
                // which may hold spaces.
                let rest = stat.rsplit_once(") ")?.1;
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        let guard_argv = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|argv| argv.split(|&b| b == 0).nth(1) == Some(b"guard".as_slice()));
        parent.is_some_and(|p| agent.contains(&p)) && guard_argv
    }

    /// A crash of `host`: its cable is pulled, then every process in its
    /// namespace (the agent, a hook it runs) gets SIGKILL, as at a power
    /// cut. The cable goes first: the responder is a thread of the bench,
    /// not a process of the host, and would answer until the cut.
    pub fn crash(&mut self, host: usize) {
        self.lan.cut(host);
        for pid in ns_pids(&self.lan.ns(host)) {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(mut c) = self.children[host - 1].take() {
            let _ = c.wait();
        }
    }

    /// Brings a crashed host back as a reboot would: without the VIP (an
    /// address does not survive a reboot), cable in, agent started.
    pub fn reboot(&mut self, host: usize) -> io::Result<()> {
        let vip = self.vip_cidr();
        let _ = self
            .lan
            .exec(host, &["ip", "addr", "del", &vip, "dev", "eth0"]);
        self.lan.heal(host);
        self.start(host)
    }

    /// Sends `signal` to the agent's main process on `host`.
    pub fn signal(&self, host: usize, signal: Signal) {
        if let Some(child) = &self.children[host - 1] {
            let _ = kill(Pid::from_raw(child.id() as libc::pid_t), signal);
        }
    }

    /// Waits for the agent on `host` to exit; kills it after `limit`.
    pub fn wait_exit(&mut self, host: usize, limit: Duration) -> Result<(), String> {
        let Some(child) = self.children[host - 1].as_mut() else {
            return Ok(());
        };
        let deadline = now() + limit;
        while now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.children[host - 1] = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        self.children[host - 1] = None;
        Err(format!("host {host} did not exit within {limit:?}"))
    }

    /// `regent step-down` on `host`.
    pub fn step_down(&self, host: usize) -> Result<String, String> {
        match self.agent {
            Agent::Regent => {
                regentd::control::request(&self.socket(host), "step-down", Duration::from_secs(10))
            }
            Agent::Keepalived => Err("keepalived has no step-down".into()),
        }
    }

    /// `regent status --json` on `host`.
    pub fn status(&self, host: usize) -> Result<String, String> {
        regentd::control::request(&self.socket(host), "status json", Duration::from_secs(2))
    }

    /// Whether the agents say they are settled: for regent, every running
    /// daemon sees every running member alive and every one but a witness
    /// able to lead, runs no hook, and names one leader (a member whose
    /// daemon does not run is not asked).
    /// keepalived has no such view; the holders decide for it.
    pub fn settled(&mut self) -> bool {
        if self.agent == Agent::Keepalived {
            return (1..=self.hosts()).all(|h| self.running(h));
        }
        let running = (1..=self.hosts()).filter(|&h| self.running(h)).count();
        // A witness never can lead; every other running member must be able to.
        let able = running - self.witness().map_or(0, |w| usize::from(self.running(w)));
        let mut leaders = Vec::new();
        for h in 1..=self.hosts() {
            if !self.running(h) {
                continue;
            }
            let Ok(json) = self.status(h) else {
                return false;
            };
            let alive = json_number(&json, "alive");
            let transitioning = json.contains("\"transitioning\":true");
            // After a step-down the old leader is in hold-off for a while;
            // the next trial waits until every member could lead again.
            let can_lead = json.matches("\"can_lead\":true").count();
            // A daemon that just started does not claim for a while (it
            // cannot know yet whether a leader it has not heard exists):
            // a trial starts once every daemon is past that.
            let warm = json_number(&json, "uptime_ms")
                .is_some_and(|up| up >= 3 * self.profile.dead_after_ms + 500);
            if alive != Some(running as u64) || transitioning || can_lead != able || !warm {
                return false;
            }
            leaders.push(json_number(&json, "leader"));
        }
        leaders.first().is_some_and(|l| l.is_some()) && leaders.iter().all(|l| *l == leaders[0])
    }

    /// The agent's traffic on `host`: regent's own counters (UDP payload
    /// bytes), or for keepalived the interface counters of `eth0` (frames).
    pub fn traffic(&self, host: usize) -> Traffic {
        match self.agent {
            Agent::Regent => {
                let text = regentd::control::request(
                    &self.socket(host),
                    "metrics",
                    Duration::from_secs(2),
                )
                .unwrap_or_default();
                let v = |name: &str| metric(&text, name).unwrap_or(0);
                Traffic {
                    tx_packets: v("regent_packets_sent_total"),
                    tx_bytes: v("regent_bytes_sent_total"),
                    rx_packets: v("regent_packets_received_total"),
                    rx_bytes: v("regent_bytes_received_total"),
                }
            }
            Agent::Keepalived => self.wire_traffic(host),
        }
    }

    /// `eth0`'s counters on `host`, read from its namespace's /proc.
    pub fn wire_traffic(&self, host: usize) -> Traffic {
        let text = self
            .lan
            .in_ns(host, || {
                std::fs::read_to_string("/proc/thread-self/net/dev")
            })
            .unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.trim_start().starts_with("eth0:")) else {
            return Traffic::default();
        };
        let f: Vec<u64> = line
            .split_once(':')
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 10 {
            return Traffic::default();
        }
        Traffic {
            rx_bytes: f[0],
            rx_packets: f[1],
            tx_bytes: f[8],
            tx_packets: f[9],
        }
    }

    /// The last `lines` lines of every host's log, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for h in 1..=self.hosts() {
            let log = std::fs::read_to_string(self.log_path(h)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            let _ = writeln!(s, "--- {} host {h} ---", self.agent.name());
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Keep the files (logs, configs) when the group drops.
    pub fn keep_files(&mut self) {
        self.setup.keep = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.setup.keep {
            eprintln!("regent-bench: files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What one host's regent configuration file says.
#[derive(Clone, Copy, Debug)]
struct RegentFile<'a> {
    /// The host whose file this is.
    node: usize,
    priority: u32,
    /// Every member's address, host 1 first.
    members: &'a [Ipv4Addr],
    /// The member that only votes, if any: reached by unicast, while the
    /// others multicast on their LAN.
    witness: Option<usize>,
    profile: Profile,
    /// The group's directory: key, hook, state, control sockets.
    dir: &'a Path,
    log_level: &'a str,
}

fn socket_path(dir: &Path, host: usize) -> PathBuf {
    dir.join(format!("h{host}.sock"))
}

/// The text of a regent configuration file. Every host gets the same
/// members and network; a witness sees the same file as all-unicast.
fn regent_config(f: &RegentFile<'_>) -> String {
    let mut s = format!(
        "cluster = \"bench\"\nnode = {}\npriority = {}\n",
        f.node, f.priority
    );
    for (i, address) in f.members.iter().enumerate() {
        let h = i + 1;
        let _ = write!(s, "\n[[member]]\nid = {h}\naddress = \"{address}\"\n");
        if f.witness == Some(h) {
            s.push_str("witness = true\ntransport = \"unicast\"\n");
        }
    }
    let hook = f.dir.join("hook");
    let _ = write!(
        s,
        "\n[network]\ninterface = \"eth0\"\nmulticast = \"239.255.42.1:7475\"\n\n\
         [timing]\nheartbeat_ms = {hb}\ndead_after_ms = {dead}\nlease_margin_ms = {margin}\n\n\
         [election]\n# Trials move leadership around; keep it where it lands.\n\
         preempt = false\nholdoff_ms = 1000\n\n\
         [hooks]\npromote = \"{hook}\"\ndemote = \"{hook}\"\ntimeout_ms = 5000\n\
         demote_budget_ms = {budget}\n\n\
         [auth]\nkey_file = \"{key}\"\n\n[state]\ndir = \"{state}\"\n\n\
         [control]\nsocket = \"{sock}\"\n\n[log]\nlevel = \"{level}\"\n",
        hb = f.profile.heartbeat_ms,
        dead = f.profile.dead_after_ms,
        margin = f.profile.lease_margin_ms,
        budget = f.profile.demote_budget_ms,
        hook = hook.display(),
        key = f.dir.join("key").display(),
        state = f.dir.join(format!("state{}", f.node)).display(),
        sock = socket_path(f.dir, f.node).display(),
        level = f.log_level,
    );
    s
}

#[allow(clippy::disallowed_methods)] // the bench measures real time
fn now() -> Instant {
    Instant::now()
}

/// Copies lines from `from` to `to`, each prefixed with the bench's clock
/// in milliseconds (`crate::stamp`), until every writer has closed.
fn stamp_lines(from: std::fs::File, mut to: std::fs::File) {
    use std::io::{BufRead, Write};
    for line in io::BufReader::new(from).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(to, "{:>10.1} {line}", crate::stamp());
    }
}

/// A pipe, both ends close-on-exec (a child gets its copy through Stdio).
fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

/// The processes in network namespace `ns`, this one excepted.
fn ns_pids(ns: &str) -> Vec<u32> {
    let me = std::process::id();
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|&p| p != me)
                .collect()
        })
        .unwrap_or_default()
}

/// The first `"key":NUMBER` in a JSON text (regent's status puts the
/// top-level fields before the per-peer ones).
pub fn json_number(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let mut rest = json;
    while let Some(i) = rest.find(&pat) {
        rest = &rest[i + pat.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            return digits.parse().ok();
        }
        if rest.starts_with("null") {
            return None;
        }
    }
    None
}

/// The first `"key":"TEXT"` in a JSON text, without its quotes (regent's
/// status puts the top-level fields before the per-peer ones). Enough for
/// the words status uses, which hold no escapes.
pub fn json_text<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = json.find(&pat)? + pat.len();
    json[start..].split('"').next()
}

/// The value of a sample whose only label is the cluster's.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let n = series.split('{').next()?;
            (n == name).then(|| v.trim().parse::<f64>().ok())?
        })
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use regentd::config::{Config, DiskChecks, Transport};

    use super::*;

    #[test]
    fn json_number_takes_the_first_numeric_value_of_a_key() {
        let json = r#"{"alive":3,"leader":2,"peers":[{"alive":true}],"uptime_ms":1200}"#;
        assert_eq!(json_number(json, "alive"), Some(3));
        assert_eq!(json_number(json, "leader"), Some(2));
        assert_eq!(json_number(json, "uptime_ms"), Some(1200));
        assert_eq!(json_number(r#"{"leader":null}"#, "leader"), None);
        assert_eq!(json_number(json, "missing"), None);
    }

    #[test]
    fn json_text_takes_the_first_string_value_of_a_key() {
        let json = r#"{"role":"leader","peers":[{"role":"follower"}],"leader":2}"#;
        assert_eq!(json_text(json, "role"), Some("leader"));
        assert_eq!(json_text(json, "leader"), None, "a number is no text");
        assert_eq!(json_text(json, "missing"), None);
    }

    /// The configuration of `node` in a cluster of `members` hosts, with
    /// `witness` as the witness, parsed as the daemon would (no disk).
    fn parsed(node: usize, members: usize, witness: Option<usize>) -> (String, Config) {
        parsed_with(node, members, witness, COMPARISON)
    }

    fn parsed_with(
        node: usize,
        members: usize,
        witness: Option<usize>,
        profile: Profile,
    ) -> (String, Config) {
        let addresses: Vec<Ipv4Addr> = (1..=members)
            .map(|h| Ipv4Addr::new(10, 9, 8, h as u8))
            .collect();
        let text = regent_config(&RegentFile {
            node,
            priority: 100 + node as u32,
            members: &addresses,
            witness,
            profile,
            dir: Path::new("/tmp/regent-bench-test"),
            log_level: "info",
        });
        let config = Config::parse(&text, Path::new("/tmp/h.conf"), DiskChecks::Skip)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        (text, config)
    }

    /// Every profile makes a configuration the daemon takes, with the
    /// profile's timing: detection at three heartbeats where it says so.
    #[test]
    fn every_profile_is_a_valid_daemon_configuration() {
        for profile in [COMPARISON, FAST, EQUAL_FAST] {
            let (_, config) = parsed_with(1, 3, None, profile);
            let t = &config.timing;
            assert_eq!(t.heartbeat.as_millis(), u128::from(profile.heartbeat_ms));
            assert_eq!(t.dead_after.as_millis(), u128::from(profile.dead_after_ms));
            assert_eq!(
                t.lease_margin.as_millis(),
                u128::from(profile.lease_margin_ms)
            );
            assert_eq!(
                t.demote_budget.as_millis(),
                u128::from(profile.demote_budget_ms)
            );
            assert!(t.lease() > t.heartbeat, "{}: {:?}", profile.name, t.lease());
        }
        assert_eq!(EQUAL_FAST.dead_after_ms, 3 * EQUAL_FAST.heartbeat_ms);
        assert_eq!(COMPARISON.dead_after_ms, 3 * COMPARISON.heartbeat_ms);
    }

    #[test]
    fn in_the_witness_topology_the_hosts_multicast_and_reach_the_witness_by_unicast() {
        for host in [1, 2] {
            let (text, config) = parsed(host, 3, Some(WITNESS));
            assert!(!config.witness(), "host {host} can lead");
            assert_eq!(config.quorum(), 2, "the witness votes");
            let own = SocketAddr::new(Ipv4Addr::new(10, 9, 8, host as u8).into(), 7475);
            match &config.network.transport {
                Transport::Multicast {
                    group,
                    interface,
                    unicast,
                    ..
                } => {
                    assert_eq!(group.to_string(), "239.255.42.1:7475");
                    assert_eq!(interface, "eth0");
                    assert_eq!(*unicast, Some(own), "host {host} hears the witness here");
                }
                other => panic!("host {host} should multicast: {other:?}\n{text}"),
            }
            let flags: Vec<(bool, bool)> = config
                .members
                .iter()
                .map(|m| (m.witness, m.unicast))
                .collect();
            assert_eq!(flags, [(false, false), (false, false), (true, true)]);
        }
    }

    #[test]
    fn the_witness_sees_the_same_members_by_unicast_and_leads_never() {
        let (text, config) = parsed(WITNESS, 3, Some(WITNESS));
        assert!(config.witness(), "{text}");
        assert!(config.core().witness);
        assert_eq!(
            config.network.transport,
            Transport::Unicast {
                port: 7475,
                bind: Some(Ipv4Addr::new(10, 9, 8, 3).into()),
            }
        );
        let witness_table = text
            .split("[[member]]")
            .nth(WITNESS)
            .expect("a third member");
        assert!(
            witness_table.contains("witness = true\ntransport = \"unicast\"\n"),
            "{witness_table}"
        );
    }

    #[test]
    fn on_one_lan_every_member_multicasts_and_can_lead() {
        let (text, config) = parsed(2, 3, None);
        assert!(
            !text.contains("witness") && !text.contains("transport"),
            "{text}"
        );
        assert!(config.members.iter().all(|m| !m.witness && !m.unicast));
        assert!(matches!(
            config.network.transport,
            Transport::Multicast { unicast: None, .. }
        ));
    }

    #[test]
    fn topologies_count_hosts_and_witnesses() {
        assert_eq!(
            (Topology::Lan(5).hosts(), Topology::Lan(5).witnesses()),
            (5, 0)
        );
        assert_eq!(
            (Topology::Witness.hosts(), Topology::Witness.witnesses()),
            (2, 1)
        );
    }

    #[test]
    fn metric_reads_a_sample_labelled_only_with_the_cluster() {
        let text = "# HELP regent_packets_sent_total Datagrams sent.\n\
                    regent_packets_sent_total{cluster=\"bench\"} 1234\n\
                    regent_packets_dropped_total{cluster=\"bench\",reason=\"replay\"} 5\n";
        assert_eq!(metric(text, "regent_packets_sent_total"), Some(1234));
        assert_eq!(metric(text, "regent_packets_received_total"), None);
    }
}
