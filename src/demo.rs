//! `regent demo`: three real daemons on loopback, crashes and comebacks
//! narrated with measured times. No root, no config.
//!
//! Two stories share the machinery. The default one runs three hosts: a
//! crash, a comeback that preempts, a graceful handover. `--witness` runs
//! two hosts and a witness: the leader's crash, which the other host takes
//! over thanks to the witness's vote, then the witness's own crash, which
//! changes nothing.
//!
//! It writes generated configs, a key and printing hooks into a temporary
//! directory, runs `regent init` for each node as an operator would, runs
//! `regent run` three times (unicast on 127.0.0.1), reads their logs, and
//! removes everything when it ends, also on error. A witness that leads is
//! an error, whichever line of the story it happens in.

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
/// How long the witness story watches for a change after the witness's
/// crash, in `dead_after`s: one would show a lost quorum, the rest margin.
const WATCH_DEAD_AFTERS: u64 = 5;

/// Which story `regent demo` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Story {
    /// Three hosts: a crash, a comeback that preempts, a graceful handover.
    Hosts,
    /// Two hosts and a witness: the leader's crash, taken over with the
    /// witness's vote, then the witness's crash, which the leader rides out.
    Witness,
}

/// One daemon of the demo's cluster; node ids count from 1 in this order.
#[derive(Clone, Copy, Debug)]
struct Member {
    priority: u32,
    witness: bool,
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
        Member {
            priority: 300,
            witness: false,
        },
        Member {
            priority: 200,
            witness: false,
        },
        Member {
            priority: 100,
            witness: false,
        },
    ],
    preempt: true,
};

/// Two hosts and, as node 3, a witness. The witness has the highest
/// priority, so that a witness allowed to lead would win the first
/// election and the story would show it. Without preemption the crashed
/// host comes back as a follower, and the leadership the story watches
/// through the witness's crash stays put.
const TWO_HOSTS_AND_A_WITNESS: Cluster = Cluster {
    members: &[
        Member {
            priority: 300,
            witness: false,
        },
        Member {
            priority: 200,
            witness: false,
        },
        Member {
            priority: 400,
            witness: true,
        },
    ],
    preempt: false,
};

impl Cluster {
    fn nodes(&self) -> usize {
        self.members.len()
    }

    fn priorities(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.priority).collect()
    }

    fn witness(&self, node: usize) -> bool {
        self.members.get(node - 1).is_some_and(|m| m.witness)
    }

    fn quorum(&self) -> usize {
        crate::core::quorum(self.nodes())
    }
}

/// Runs the demo; `Err` says what went wrong.
pub fn run(story: Story) -> Result<(), String> {
    let cluster = match story {
        Story::Hosts => THREE_HOSTS,
        Story::Witness => TWO_HOSTS_AND_A_WITNESS,
    };
    let mut demo = Demo::new(cluster)?;
    let result = match story {
        Story::Hosts => demo.hosts_story(),
        Story::Witness => demo.witness_story(),
    };
    demo.stop_all();
    result
}

/// A line a daemon logged, stamped when it arrived.
/// How many of the daemons' last log lines an error shows.
const RECENT_LINES: usize = 30;

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
    /// Every leadership the logs showed, in the order read.
    leaderships: Vec<Leader>,
    /// The daemons' last log lines, for an error that ends the demo (their
    /// directory is removed on exit).
    recent: std::collections::VecDeque<String>,
}

/// A leadership change seen in the logs.
#[derive(Clone, Copy, Debug)]
struct Leader {
    node: usize,
    epoch: u64,
    at: Instant,
}

impl Leader {
    /// The leadership a log line announces, if it does.
    fn seen(line: &LogLine, seen: &Seen) -> Option<Leader> {
        match seen {
            Seen::Leads { epoch } => Some(Leader {
                node: line.node,
                epoch: *epoch,
                at: line.at,
            }),
            _ => None,
        }
    }
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
            leaderships: Vec::new(),
            recent: std::collections::VecDeque::new(),
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
        let mut members = String::new();
        for ((j, port), member) in ports.iter().enumerate().zip(self.cluster.members) {
            let witness = if member.witness {
                "witness = true\n"
            } else {
                ""
            };
            let _ = write!(
                members,
                "\n[[member]]\nid = {}\n{witness}address = \"127.0.0.1\"\nport = {port}\n",
                j + 1
            );
        }
        for (i, member) in self.cluster.members.iter().enumerate() {
            let node = i + 1;
            // A witness runs no hooks: it has none to write.
            let hooks = if member.witness {
                String::new()
            } else {
                format!(
                    "[hooks]\npromote = \"{hook}\"\ndemote = \"{hook}\"\ntimeout_ms = 5000\nrefresh_interval_ms = 0\n\n",
                    hook = hook.display()
                )
            };
            let config = format!(
                "# Generated by `regent demo`.\ncluster = \"demo\"\nnode = {node}\npriority = {prio}\n{members}\n\
                 [network]\nport = {port}\nbind = \"127.0.0.1\"\n\n\
                 [timing]\nheartbeat_ms = {HEARTBEAT_MS}\ndead_after_ms = {DEAD_AFTER_MS}\n\n\
                 [election]\npreempt = {preempt}\npreempt_delay_ms = {PREEMPT_DELAY_MS}\nholdoff_ms = 2000\n\n\
                 {hooks}\
                 [auth]\nkey_file = \"{key}\"\n\n\
                 [state]\ndir = \"{state}\"\n\n\
                 [control]\nsocket = \"{sock}\"\n",
                prio = member.priority,
                preempt = self.cluster.preempt,
                port = ports[i],
                key = key.display(),
                state = self.dir.join(format!("state{node}")).display(),
                sock = self.socket(node).display(),
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

    fn socket(&self, node: usize) -> PathBuf {
        self.dir.join(format!("n{node}.sock"))
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

    /// Keeps what the story needs to know of a line: the leaderships, and a
    /// witness that leads, which ends the demo with an error.
    fn note(&mut self, line: &LogLine, seen: &Seen) -> Result<(), String> {
        if let Some(l) = Leader::seen(line, seen) {
            if self.cluster.witness(l.node) {
                return Err(format!(
                    "node {} is a witness, yet it leads epoch {}: a witness must never lead",
                    l.node, l.epoch
                ));
            }
            self.leaderships.push(l);
        }
        Ok(())
    }

    /// Echoes what matters in one log line.
    fn echo(&self, line: &LogLine, seen: &Seen) {
        match seen {
            Seen::Leads { .. } => {
                if let Some(l) = Leader::seen(line, seen) {
                    self.say_leader(l, "");
                }
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
            Seen::MemberDown { .. } => {}
        }
    }

    /// Reads log lines for up to `limit`, noting and echoing each, until
    /// `pick` takes one (which it echoes itself if it wants to): `Ok(None)`
    /// if it took none in time.
    fn read_until<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&Demo, &LogLine, &Seen) -> Option<T>,
    ) -> Result<Option<T>, String> {
        let deadline = Self::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Self::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err("all nodes exited".into()),
            };
            if self.recent.len() == RECENT_LINES {
                self.recent.pop_front();
            }
            self.recent
                .push_back(format!("node {}: {}", line.node, line.text));
            let Some(seen) = Seen::parse(&line.text) else {
                continue;
            };
            self.note(&line, &seen)?;
            match pick(self, &line, &seen) {
                Some(picked) => return Ok(Some(picked)),
                None => self.echo(&line, &seen),
            }
        }
    }

    /// Echoes log lines for `d`.
    fn pump(&mut self, d: Duration) -> Result<(), String> {
        self.read_until(d, |_, _, _| None::<()>).map(|_| ())
    }

    /// Reads logs until a node other than `not` becomes leader.
    fn wait_leader(&mut self, not: Option<usize>, limit: Duration) -> Result<Leader, String> {
        self.read_until(limit, |_, line, seen| {
            Leader::seen(line, seen).filter(|l| Some(l.node) != not)
        })?
        .ok_or_else(|| {
            let recent: Vec<&str> = self.recent.iter().map(String::as_str).collect();
            format!(
                "no new leader within {}; the daemons' last lines:\n{}",
                crate::logging::Took(limit),
                recent.join("\n")
            )
        })
    }

    /// Reads logs until `node` follows `leader`; returns when it said so.
    fn wait_follows(
        &mut self,
        node: usize,
        leader: Leader,
        limit: Duration,
    ) -> Result<Instant, String> {
        let follows = |_: &Demo, line: &LogLine, seen: &Seen| match seen {
            Seen::Follows {
                epoch,
                leader: Some(l),
                ..
            } if line.node == node && *l == leader.node && *epoch == leader.epoch => Some(line.at),
            _ => None,
        };
        self.read_until(limit, follows)?.ok_or_else(|| {
            format!(
                "node {node} did not follow node {} within {}",
                leader.node,
                crate::logging::Took(limit)
            )
        })
    }

    /// What `node` answers `regent is-leader` (one line).
    fn role(&self, node: usize) -> Result<String, String> {
        let socket = self.socket(node);
        let request = crate::control::Request::Role.to_string();
        match crate::control::exchange(&socket, &request, Duration::from_secs(2)) {
            Ok(crate::control::Answer::Ok(text)) => Ok(text.trim().to_owned()),
            Ok(crate::control::Answer::Error(e)) | Err(e) => Err(format!("node {node}: {e}")),
        }
    }

    fn hosts_story(&mut self) -> Result<(), String> {
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
        self.pump(Duration::from_millis(700))?;
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

        self.pump(Duration::from_millis(500))?;
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

        self.pump(Duration::from_millis(700))?;
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

    fn witness_story(&mut self) -> Result<(), String> {
        let watch = Duration::from_millis(WATCH_DEAD_AFTERS * DEAD_AFTER_MS);
        println!(
            "regent demo --witness: hosts 1 and 2 and witness 3 on 127.0.0.1, priorities {:?}, \
             quorum {} of {}, heartbeat {HEARTBEAT_MS} ms, dead_after {DEAD_AFTER_MS} ms, \
             preemption off",
            self.cluster.priorities(),
            self.cluster.quorum(),
            self.cluster.nodes()
        );
        println!("working directory: {}\n", self.dir.display());
        self.begin = Self::now();
        for node in 1..=self.cluster.nodes() {
            self.start(node)?;
        }
        self.say(
            Self::now(),
            "started hosts 1 and 2 and witness 3 (its priority is the highest, but a witness only votes)",
        );
        let first = self.wait_leader(None, Duration::from_secs(5))?;
        self.say_leader(first, "(the host with the higher priority)");
        self.rows.push((
            "first election".into(),
            format!("{:.0} ms after start", ms(first.at - self.begin)),
        ));

        // Let the others settle, then pull the plug on the leader: the
        // other host can only reach a quorum with the witness's vote.
        self.pump(Duration::from_millis(700))?;
        let killed = self.signal(first.node, Signal::SIGKILL);
        self.reap(first.node);
        self.say(
            killed,
            &format!(
                "kill -9 node {} (crash, no goodbye): the other host and the witness are {} of {}, a quorum",
                first.node,
                self.cluster.quorum(),
                self.cluster.nodes()
            ),
        );
        let second = self.wait_leader(Some(first.node), Duration::from_secs(5))?;
        let takeover = second.at - killed;
        self.say_leader(
            second,
            &format!(
                "took over in {:.0} ms with the witness's vote (dead_after is {DEAD_AFTER_MS} ms)",
                ms(takeover)
            ),
        );
        self.rows.push((
            "crash takeover (SIGKILL)".into(),
            format!(
                "{:.0} ms, with the witness's vote (dead_after {DEAD_AFTER_MS} ms)",
                ms(takeover)
            ),
        ));

        self.pump(Duration::from_millis(500))?;
        let restarted = Self::now();
        self.start(first.node)?;
        self.say(
            restarted,
            &format!(
                "node {} restarts; without preemption it follows node {}",
                first.node, second.node
            ),
        );
        let followed = self.wait_follows(first.node, second, Duration::from_secs(5))?;
        self.say(
            followed,
            &format!(
                "node {} follows node {} in epoch {}, {:.0} ms after its restart",
                first.node,
                second.node,
                second.epoch,
                ms(followed - restarted)
            ),
        );
        self.rows.push((
            "restarted host follows".into(),
            format!("{:.0} ms after its restart", ms(followed - restarted)),
        ));

        // Let the two hosts see each other, then crash the witness: they
        // are still a quorum, so the leader's lease goes on being renewed.
        self.pump(Duration::from_millis(700))?;
        let witness = (1..=self.cluster.nodes())
            .find(|&n| self.cluster.witness(n))
            .ok_or("the cluster has no witness")?;
        let crashed = self.signal(witness, Signal::SIGKILL);
        self.reap(witness);
        self.say(
            crashed,
            &format!(
                "kill -9 node {witness}, the witness: the hosts are still {} of {}, a quorum",
                self.cluster.quorum(),
                self.cluster.nodes()
            ),
        );
        let change = self.read_until(watch, |demo, line, seen| match seen {
            Seen::MemberDown { member, text } if line.node == second.node => {
                demo.say(
                    line.at,
                    &format!("node {} sees member {member} down: {text}", line.node),
                );
                None
            }
            Seen::Leads { .. } => Some(format!("node {} took over", line.node)),
            Seen::Follows { epoch, reason, .. } if line.node == second.node => Some(format!(
                "node {} left leadership of epoch {epoch} ({reason})",
                line.node
            )),
            Seen::Follows { leader, .. } if *leader != Some(second.node) => Some(format!(
                "node {} no longer follows node {}",
                line.node, second.node
            )),
            _ => None,
        })?;
        if let Some(change) = change {
            return Err(format!(
                "the leadership changed after the witness's crash: {change}"
            ));
        }
        // The leader says it leads only while its lease holds.
        let leader_says = self.role(second.node)?;
        let follower_says = self.role(first.node)?;
        if leader_says != format!("leader epoch {}", second.epoch) {
            return Err(format!(
                "node {} no longer holds its lease after the witness's crash: it says {leader_says:?}",
                second.node
            ));
        }
        let kept = Leader {
            at: Self::now(),
            ..second
        };
        self.say_leader(
            kept,
            &format!(
                "kept for {:.0} ms after the witness's crash ({WATCH_DEAD_AFTERS} × dead_after): \
                 node {} says \"{leader_says}\", node {} \"{follower_says}\"",
                ms(kept.at - crashed),
                second.node,
                first.node
            ),
        );
        self.rows.push((
            "witness crash (SIGKILL)".into(),
            format!(
                "no leadership change in {:.0} ms; the lease held",
                ms(kept.at - crashed)
            ),
        ));

        let seen: Vec<(usize, u64)> = self.leaderships.iter().map(|l| (l.node, l.epoch)).collect();
        if seen != [(first.node, first.epoch), (second.node, second.epoch)] {
            return Err(format!(
                "the logs showed more leaderships than the story's two: (node, epoch) {seen:?}"
            ));
        }

        println!("\nsummary");
        for (what, figure) in &self.rows {
            println!("  {what:<30} {figure}");
        }
        let epochs: Vec<u64> = self.leaderships.iter().map(|l| l.epoch).collect();
        println!(
            "  {:<30} {epochs:?} (every leadership has its own, increasing)",
            "fencing epochs"
        );
        println!(
            "  {:<30} never two: node {} led only after node {} crashed; the witness never led",
            "leaders at once", second.node, first.node
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
    /// The node stopped hearing `member`; `text` says since when.
    MemberDown { member: usize, text: String },
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
        if text.starts_with("ERROR") {
            return Some(Seen::Error);
        }
        // "member M is down: last heard 300.7 ms ago"
        let (member, down) = text.split("member ").nth(1)?.split_once(" is down: ")?;
        Some(Seen::MemberDown {
            member: member.parse().ok()?,
            text: down.to_owned(),
        })
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
            (
                "WARN  member 3 is down: last heard 300.7 ms ago",
                Some(Seen::MemberDown {
                    member: 3,
                    text: "last heard 300.7 ms ago".into(),
                }),
            ),
            ("INFO  member 1 is up", None),
            ("INFO  member 1 left: it said it is stopping", None),
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
