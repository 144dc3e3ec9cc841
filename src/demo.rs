//! `regent demo`: three real daemons on loopback, a crash, a comeback and a
//! graceful handover, narrated with measured times. No root, no config.
//!
//! It writes generated configs, a key and printing hooks into a temporary
//! directory, runs `regent init` for each node as an operator would, runs
//! `regent run` three times (unicast on 127.0.0.1), reads their logs, and
//! removes everything when it ends, also on error.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const HEARTBEAT_MS: u64 = 100;
const DEAD_AFTER_MS: u64 = 300;
const PREEMPT_DELAY_MS: u64 = 1500;

/// One daemon of the demo's cluster; node ids count from 1 in this order.
#[derive(Clone, Copy, Debug)]
struct Member {
    priority: u32,
}

/// The cluster the demo runs.
#[derive(Clone, Copy, Debug)]
struct Cluster {
    members: &'static [Member],
    preempt: bool,
}

/// Three hosts that can each lead, the highest priority first.
const THREE_HOSTS: Cluster = Cluster {
    members: &[
        Member { priority: 300 },
        Member { priority: 200 },
        Member { priority: 100 },
    ],
    preempt: true,
};

impl Cluster {
    fn nodes(&self) -> usize {
        self.members.len()
    }

    fn priorities(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.priority).collect()
    }
}

/// Runs the demo; `Err` says what went wrong.
pub fn run() -> Result<(), String> {
    let mut demo = Demo::new(THREE_HOSTS)?;
    let result = demo.story();
    demo.stop_all();
    result
}

/// A line a daemon logged, stamped when it arrived.
struct LogLine {
    node: usize,
    at: Instant,
    text: String,
}

struct Demo {
    cluster: Cluster,
    dir: PathBuf,
    exe: PathBuf,
    begin: Instant,
    children: Vec<Option<Child>>,
    lines_tx: mpsc::Sender<LogLine>,
    lines: Receiver<LogLine>,
    color: bool,
    rows: Vec<(String, String)>,
}

/// A leadership change seen in the logs.
#[derive(Clone, Copy, Debug)]
struct Leader {
    node: usize,
    epoch: u64,
    at: Instant,
}

impl Demo {
    #[allow(clippy::disallowed_methods)] // the demo times what it shows
    fn now() -> Instant {
        Instant::now()
    }

    fn new(cluster: Cluster) -> Result<Demo, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the regent binary: {e}"))?;
        let dir = std::env::temp_dir().join(format!("regent-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (lines_tx, lines) = mpsc::channel();
        let demo = Demo {
            cluster,
            dir,
            exe,
            begin: Self::now(),
            children: (0..cluster.nodes()).map(|_| None).collect(),
            lines_tx,
            lines,
            color: use_color(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
            rows: Vec::new(),
        };
        if let Err(e) = demo.write_files() {
            let _ = std::fs::remove_dir_all(&demo.dir);
            return Err(e);
        }
        Ok(demo)
    }

    fn write_files(&self) -> Result<(), String> {
        let io = |what: &str, e: std::io::Error| format!("cannot write {what}: {e}");
        let key = self.dir.join("key");
        let mut secret = String::new();
        for b in random_bytes(32) {
            let _ = write!(secret, "{b:02x}");
        }
        std::fs::write(&key, format!("{secret}\n")).map_err(|e| io("the key", e))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("the key", e))?;
        let hook = self.dir.join("hook");
        std::fs::write(
            &hook,
            "#!/bin/sh\n# Prints what a real hook would do.\n\
             case \"$1\" in\n\
             promote) echo \"take over the service (fencing epoch $2)\" ;;\n\
             demote)  echo \"release the service (epoch $2, $REGENT_REASON)\" ;;\n\
             refresh) ;;\n\
             esac\n",
        )
        .map_err(|e| io("the hook", e))?;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("the hook", e))?;
        let ports = free_ports(self.cluster.nodes())?;
        for (i, member) in self.cluster.members.iter().enumerate() {
            let mut members = String::new();
            for (j, port) in ports.iter().enumerate() {
                let _ = write!(
                    members,
                    "\n[[member]]\nid = {}\naddress = \"127.0.0.1\"\nport = {port}\n",
                    j + 1
                );
            }
            let node = i + 1;
            let config = format!(
                "# Generated by `regent demo`.\ncluster = \"demo\"\nnode = {node}\npriority = {prio}\n{members}\n\
                 [network]\nport = {port}\nbind = \"127.0.0.1\"\n\n\
                 [timing]\nheartbeat_ms = {HEARTBEAT_MS}\ndead_after_ms = {DEAD_AFTER_MS}\n\n\
                 [election]\npreempt = {preempt}\npreempt_delay_ms = {PREEMPT_DELAY_MS}\nholdoff_ms = 2000\n\n\
                 [hooks]\npromote = \"{hook}\"\ndemote = \"{hook}\"\ntimeout_ms = 5000\nrefresh_interval_ms = 0\n\n\
                 [auth]\nkey_file = \"{key}\"\n\n\
                 [state]\ndir = \"{state}\"\n\n\
                 [control]\nsocket = \"{sock}\"\n",
                prio = member.priority,
                preempt = self.cluster.preempt,
                port = ports[i],
                hook = hook.display(),
                key = key.display(),
                state = self.dir.join(format!("state{node}")).display(),
                sock = self.dir.join(format!("n{node}.sock")).display(),
            );
            std::fs::write(self.config(node), config).map_err(|e| io("a config", e))?;
            self.init(node)?;
        }
        Ok(())
    }

    /// `regent init` for a node, as an operator runs it once its
    /// configuration is written: `regent run` refuses to start without it.
    fn init(&self, node: usize) -> Result<(), String> {
        let out = Command::new(&self.exe)
            .arg("init")
            .arg("-c")
            .arg(self.config(node))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run regent init for node {node}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "regent init for node {node} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn config(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}.toml"))
    }

    fn start(&mut self, node: usize) -> Result<(), String> {
        let mut child = Command::new(&self.exe)
            .arg("run")
            .arg("-c")
            .arg(self.config(node))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start node {node}: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let tx = self.lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx
                    .send(LogLine {
                        node,
                        at: Demo::now(),
                        text: line,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        self.children[node - 1] = Some(child);
        Ok(())
    }

    fn signal(&mut self, node: usize, signal: Signal) -> Instant {
        if let Some(child) = &self.children[node - 1] {
            let pid = i32::try_from(child.id()).unwrap_or(0);
            let _ = kill(Pid::from_raw(pid), signal);
        }
        Self::now()
    }

    fn reap(&mut self, node: usize) {
        if let Some(mut child) = self.children[node - 1].take() {
            let _ = child.wait();
        }
    }

    fn stop_all(&mut self) {
        for node in 1..=self.cluster.nodes() {
            if self.children[node - 1].is_some() {
                self.signal(node, Signal::SIGTERM);
            }
        }
        let deadline = Self::now() + Duration::from_secs(5);
        for node in 1..=self.cluster.nodes() {
            if let Some(child) = self.children[node - 1].as_mut() {
                while Self::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            self.children[node - 1] = None;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn stamp(&self, at: Instant) -> String {
        format!("{:6.3}s", at.duration_since(self.begin).as_secs_f64())
    }

    fn say(&self, at: Instant, text: &str) {
        println!("{}  {text}", self.stamp(at));
        let _ = std::io::stdout().flush();
    }

    fn say_leader(&self, l: Leader, text: &str) {
        let who = format!("node {} is LEADER, epoch {}", l.node, l.epoch);
        let who = if self.color {
            format!("\x1b[1;32m{who}\x1b[0m")
        } else {
            who
        };
        self.say(l.at, &format!("{who}  {text}"));
    }

    /// Echoes what matters in one log line; returns a new leader if it says so.
    fn handle_line(&self, line: &LogLine) -> Option<Leader> {
        match Seen::parse(&line.text)? {
            Seen::Leads { epoch } => {
                return Some(Leader {
                    node: line.node,
                    epoch,
                    at: line.at,
                })
            }
            Seen::Follows { epoch, reason, .. } => {
                if matches!(
                    reason.as_str(),
                    "step-down" | "preempted" | "shutdown" | "lease-expired"
                ) {
                    self.say(
                        line.at,
                        &format!(
                            "node {} leaves leadership of epoch {epoch} ({reason})",
                            line.node
                        ),
                    );
                }
            }
            Seen::Hook(out) => self.say(line.at, &format!("node {} hook: {out}", line.node)),
            Seen::Error => self.say(line.at, &format!("node {} {}", line.node, line.text)),
        }
        None
    }

    /// Echoes log lines for `d`.
    fn pump(&mut self, d: Duration) {
        let until = Self::now() + d;
        while let Ok(line) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Self::now()))
        {
            if let Some(l) = self.handle_line(&line) {
                self.say_leader(l, "");
            }
        }
    }

    /// Reads logs until a node other than `not` becomes leader.
    fn wait_leader(&mut self, not: Option<usize>, limit: Duration) -> Result<Leader, String> {
        let deadline = Self::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Self::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no new leader within {}; logs are in {}",
                        crate::logging::Took(limit),
                        self.dir.display()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => return Err("all nodes exited".into()),
            };
            match self.handle_line(&line) {
                Some(l) if Some(l.node) != not => return Ok(l),
                Some(l) => self.say_leader(l, ""),
                None => {}
            }
        }
    }

    fn story(&mut self) -> Result<(), String> {
        println!(
            "regent demo: three nodes on 127.0.0.1, priorities {:?}, heartbeat {HEARTBEAT_MS} ms, \
             dead_after {DEAD_AFTER_MS} ms",
            self.cluster.priorities()
        );
        println!("working directory: {}\n", self.dir.display());
        self.begin = Self::now();
        for node in 1..=self.cluster.nodes() {
            self.start(node)?;
        }
        self.say(Self::now(), "started nodes 1, 2 and 3");
        let first = self.wait_leader(None, Duration::from_secs(5))?;
        self.say_leader(first, "(highest priority wins)");
        self.rows.push((
            "first election".into(),
            format!("{:.0} ms after start", ms(first.at - self.begin)),
        ));

        // Let the followers settle, then pull the plug on the leader.
        self.pump(Duration::from_millis(700));
        let killed = self.signal(first.node, Signal::SIGKILL);
        self.reap(first.node);
        self.say(
            killed,
            &format!("kill -9 node {} (crash, no goodbye)", first.node),
        );
        let second = self.wait_leader(Some(first.node), Duration::from_secs(5))?;
        let crash = second.at - killed;
        self.say_leader(
            second,
            &format!(
                "failover in {:.0} ms (dead_after is {DEAD_AFTER_MS} ms)",
                ms(crash)
            ),
        );
        self.rows.push((
            "crash failover (SIGKILL)".into(),
            format!("{:.0} ms", ms(crash)),
        ));

        self.pump(Duration::from_millis(500));
        let restarted = Self::now();
        self.start(first.node)?;
        self.say(restarted, &format!("node {} restarts; it outranks the leader, so after {PREEMPT_DELAY_MS} ms of stability it takes over", first.node));
        let third = self.wait_leader(Some(second.node), Duration::from_secs(8))?;
        self.say_leader(
            third,
            &format!(
                "preempted node {} {:.0} ms after the restart",
                second.node,
                ms(third.at - restarted)
            ),
        );
        self.rows.push((
            "preemption handover".into(),
            format!(
                "{:.0} ms after restart (delay {PREEMPT_DELAY_MS} ms)",
                ms(third.at - restarted)
            ),
        ));

        self.pump(Duration::from_millis(700));
        let stopped = self.signal(third.node, Signal::SIGTERM);
        self.say(
            stopped,
            &format!(
                "systemctl stop on node {} (SIGTERM: demote, resign, exit)",
                third.node
            ),
        );
        let fourth = self.wait_leader(Some(third.node), Duration::from_secs(5))?;
        let graceful = fourth.at - stopped;
        self.say_leader(
            fourth,
            &format!("graceful handover in {:.0} ms", ms(graceful)),
        );
        self.rows.push((
            "graceful handover (SIGTERM)".into(),
            format!("{:.0} ms", ms(graceful)),
        ));
        self.reap(third.node);

        println!("\nsummary");
        for (what, figure) in &self.rows {
            println!("  {what:<30} {figure}");
        }
        let epochs = [first.epoch, second.epoch, third.epoch, fourth.epoch];
        println!(
            "  {:<30} {epochs:?} (every leadership has its own, increasing)",
            "fencing epochs"
        );
        println!("\nall nodes stopped; {} removed", self.dir.display());
        Ok(())
    }
}

/// What the demo makes of one line of a daemon's log.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The node leads this epoch.
    Leads { epoch: u64 },
    /// The node follows: the leader it knows of, if any, and why it changed.
    Follows {
        epoch: u64,
        leader: Option<usize>,
        reason: String,
    },
    /// A hook printed this about the service it moves.
    Hook(String),
    /// The daemon logged an error.
    Error,
}

impl Seen {
    /// `None` for the many lines the demo does not tell.
    fn parse(text: &str) -> Option<Seen> {
        if let Some(rest) = text.split("transition: ").nth(1) {
            // "ROLE epoch E leader L reason R (...)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            // The value after a key; the role, first, may be the word "leader".
            let after = |key: &str| {
                let i = words.iter().skip(1).position(|w| *w == key)?;
                words.get(i + 2).copied()
            };
            let epoch = after("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
            return match words.first() {
                Some(&"leader") => Some(Seen::Leads { epoch }),
                Some(&"follower") => Some(Seen::Follows {
                    epoch,
                    leader: after("leader").and_then(|l| l.parse().ok()),
                    reason: after("reason").unwrap_or("").to_owned(),
                }),
                _ => None,
            };
        }
        if text.contains("the service") {
            return text
                .split("]: ")
                .nth(1)
                .map(|out| Seen::Hook(out.to_owned()));
        }
        text.starts_with("ERROR").then_some(Seen::Error)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Reserves `n` distinct free UDP ports on 127.0.0.1.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let sockets: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find free ports: {e}"))?;
    sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find free ports: {e}"))
}

fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
fn use_color(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.map_or(true, |v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{use_color, Seen};
    use std::ffi::OsStr;

    #[test]
    fn reads_transitions_hooks_and_errors_from_daemon_logs() {
        let follows = |epoch, leader, reason: &str| Seen::Follows {
            epoch,
            leader,
            reason: reason.to_owned(),
        };
        for (line, seen) in [
            (
                "INFO  transition: leader epoch 2 leader 2 reason elected (previous state held 18.3 ms)",
                Some(Seen::Leads { epoch: 2 }),
            ),
            (
                "INFO  transition: follower epoch 2 leader 2 reason following (previous state held 325.5 ms)",
                Some(follows(2, Some(2), "following")),
            ),
            (
                "INFO  transition: follower epoch 1 leader none reason leader-lost \
                 (leader 1 last heard 300.7 ms ago) (previous state held 1.408 s)",
                Some(follows(1, None, "leader-lost")),
            ),
            (
                "INFO  transition: candidate epoch 2 leader none reason claim (previous state held 0.0 ms)",
                None,
            ),
            (
                "INFO  hook promote[5929]: take over the service (fencing epoch 2)",
                Some(Seen::Hook("take over the service (fencing epoch 2)".into())),
            ),
            ("ERROR regent guard[5861]: fenced epoch 1: exiting", Some(Seen::Error)),
            ("INFO  member 1 is up", None),
        ] {
            assert_eq!(Seen::parse(line), seen, "{line}");
        }
    }

    #[test]
    fn no_color_turns_colour_off_on_a_terminal() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some(OsStr::new(""))));
        assert!(!use_color(true, Some(OsStr::new("1"))));
        assert!(!use_color(false, None));
    }
}
