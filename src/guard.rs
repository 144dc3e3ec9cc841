//! The lease guard process and the daemon's end of its pipe.
//!
//! A daemon that is stopped (SIGSTOP, a hung page fault), starved or
//! crashed cannot run its own demote when its lease ends. The guard is a
//! second, tiny process, `regent guard`, started by the daemon over
//! `/proc/self/exe` with a pipe on its standard input. The daemon writes a
//! line on every lease renewal and on every release; the guard applies the
//! pure rule `core::Guard` and, when it says `Fence`, freezes the daemon,
//! kills the hooks' process groups, runs the demote hook itself, kills the
//! daemon and exits. If the pipe closes while a lease is watched (the daemon
//! crashed), it still fences at the lease end; with none watched it exits.
//!
//! Protocol, one ASCII line each, daemon to guard:
//! `renew EPOCH END_NS` (the lease of EPOCH ends at END_NS, CLOCK_MONOTONIC
//! nanoseconds), `demoting EPOCH` (the demote hook's process has started)
//! and `release` (the demote hook ended). If the daemon dies while its
//! demote runs, the service manager may kill that hook too: the guard then
//! runs the demote at once.
//!
//! Architecture Invariant: the daemon never blocks on the pipe (a write
//! that would block is dropped and counted: the guard then fences at the
//! older, earlier deadline, the safe side). The guard decides nothing of
//! its own: the rule is `core::Guard`. It is the one place besides the
//! driver that reads a clock, because it is a separate process.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{getppid, pipe2, setsid, Pid};

use crate::core::{guard_slack, Epoch, Guard, GuardAction, NodeId, Time};
use crate::hooks::HOOK_PATH;

/// One line of the pipe protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// The daemon leads `epoch`; its lease ends at `end` (monotonic ns).
    Renew {
        /// The epoch led.
        epoch: Epoch,
        /// The lease end, CLOCK_MONOTONIC nanoseconds.
        end: Time,
    },
    /// The daemon's demote hook of this epoch has started.
    Demoting {
        /// The epoch demoted.
        epoch: Epoch,
    },
    /// The demote hook ended: the daemon holds nothing.
    Release,
}

/// Why a line of the pipe protocol was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The first word is neither `renew` nor `release`.
    UnknownVerb(String),
    /// A `renew` without an epoch and an end, or a `demoting` without an
    /// epoch, in decimal.
    BadRenew(String),
    /// Words after a complete line.
    Trailing(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownVerb(l) => write!(f, "unknown guard line {l:?}"),
            ParseError::BadRenew(l) => {
                write!(f, "renew needs EPOCH END_NS, demoting needs EPOCH: {l:?}")
            }
            ParseError::Trailing(l) => write!(f, "trailing words in guard line {l:?}"),
        }
    }
}

impl Line {
    /// The line as written to the pipe, newline included.
    pub fn format(&self) -> String {
        match self {
            Line::Renew { epoch, end } => format!("renew {} {}\n", epoch.0, end.0),
            Line::Demoting { epoch } => format!("demoting {}\n", epoch.0),
            Line::Release => "release\n".to_string(),
        }
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Result<Line, ParseError> {
        let mut words = line.split_ascii_whitespace();
        let parsed = match words.next() {
            Some("renew") => {
                let mut num = || words.next().and_then(|w| w.parse::<u64>().ok());
                match (num(), num()) {
                    (Some(e), Some(end)) => Line::Renew {
                        epoch: Epoch(e),
                        end: Time(end),
                    },
                    _ => return Err(ParseError::BadRenew(line.to_string())),
                }
            }
            Some("demoting") => match words.next().and_then(|w| w.parse::<u64>().ok()) {
                Some(e) => Line::Demoting { epoch: Epoch(e) },
                None => return Err(ParseError::BadRenew(line.to_string())),
            },
            Some("release") => Line::Release,
            _ => return Err(ParseError::UnknownVerb(line.to_string())),
        };
        match words.next() {
            Some(_) => Err(ParseError::Trailing(line.to_string())),
            None => Ok(parsed),
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `Instant` on Linux, and
/// of the guard's deadlines.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC always exists on Linux: the zero is never used.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or(TimeSpec::new(0, 0));
    (ts.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec() as u64)
}

/// What the guard needs to fence: taken from the configuration at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The demote hook, if one is configured.
    pub demote: Option<PathBuf>,
    /// The hook deadline.
    pub timeout: Duration,
    /// From SIGTERM to SIGKILL of a hook past its deadline.
    pub kill_grace: Duration,
    /// Past the lease end before the guard acts (`guard_slack`).
    pub slack: Duration,
    /// This node, for `REGENT_NODE`.
    pub node: NodeId,
    /// The cluster, for `REGENT_CLUSTER`.
    pub cluster: String,
}

impl Settings {
    /// The settings from the daemon's configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Settings {
        Settings {
            demote: cfg.hooks.demote.clone(),
            timeout: cfg.hooks.timeout,
            kill_grace: cfg.hooks.kill_grace,
            slack: guard_slack(cfg.timing.lease_margin),
            node: cfg.node,
            cluster: cfg.cluster.clone(),
        }
    }

    /// The arguments of `regent guard` that carry these settings.
    fn args(&self, daemon: u32) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "guard".into(),
            "--daemon".into(),
            daemon.to_string().into(),
            "--slack-us".into(),
            self.slack.as_micros().to_string().into(),
            "--timeout-ms".into(),
            self.timeout.as_millis().to_string().into(),
            "--kill-grace-ms".into(),
            self.kill_grace.as_millis().to_string().into(),
            "--node".into(),
            self.node.0.to_string().into(),
            "--cluster".into(),
            self.cluster.clone().into(),
        ];
        if let Some(d) = &self.demote {
            a.push("--demote".into());
            a.push(d.clone().into());
        }
        a
    }
}

/// The daemon's end of the pipe.
#[derive(Debug)]
pub struct GuardClient {
    pipe: File,
    child: Child,
    /// CLOCK_MONOTONIC at the driver's `Time::ZERO`, or a hair before it.
    origin_ns: u64,
    /// The lease last reported; `None` after a release.
    sent: Option<(Epoch, Time)>,
    /// Renewals written.
    pub renewals: u64,
    /// Lines that could not be written without blocking.
    pub lost: u64,
}

impl GuardClient {
    /// Starts `regent guard` from this very binary. `origin_ns` is
    /// `monotonic_ns()` read just before the driver's start `Instant`, so a
    /// lease end is never reported later than it is.
    pub fn spawn(settings: &Settings, origin_ns: u64) -> io::Result<GuardClient> {
        // O_CLOEXEC keeps the write end out of hooks, so that the pipe
        // closes when the daemon dies.
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        set_nonblocking(&write)?;
        let child = Command::new("/proc/self/exe")
            .args(settings.args(std::process::id()))
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .spawn()?;
        Ok(GuardClient {
            pipe: File::from(write),
            child,
            origin_ns,
            sent: None,
            renewals: 0,
            lost: 0,
        })
    }

    /// The guard's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reports the lease the core holds now, if it changed. A lease that
    /// went away is not a release: only the demote's start is (`release`).
    pub fn update(&mut self, lease: Option<(Epoch, Time)>) {
        let Some((epoch, end)) = lease else {
            return;
        };
        if self.sent == Some((epoch, end)) {
            return;
        }
        let line = Line::Renew {
            epoch,
            end: Time(self.origin_ns.saturating_add(end.0)),
        };
        if self.write(&line) {
            self.sent = Some((epoch, end));
            self.renewals += 1;
        }
    }

    /// The demote hook of `epoch` has started: the guard stops watching
    /// the lease, and watches the demote instead.
    pub fn demoting(&mut self, epoch: Epoch) {
        if self.write(&Line::Demoting { epoch }) {
            self.sent = None;
        }
    }

    /// The demote hook ended: the guard stands down.
    pub fn release(&mut self) {
        if self.write(&Line::Release) {
            self.sent = None;
        }
    }

    fn write(&mut self, line: &Line) -> bool {
        let text = line.format();
        match self.pipe.write(text.as_bytes()) {
            Ok(n) if n == text.len() => true,
            // A pipe write of fewer than PIPE_BUF bytes is all or nothing.
            Ok(_) => true,
            Err(e) => {
                self.lost += 1;
                if self.lost.is_power_of_two() {
                    log::error!(
                        "cannot tell the lease guard {line:?} ({e}); {} lines lost",
                        self.lost
                    );
                }
                false
            }
        }
    }
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

// ----- the guard process -----

/// Writes one line to standard error (the journal, under systemd). The
/// guard may block here: it has nothing else to do.
/// Writes one line to standard error (the daemon's, so the journal under
/// systemd), with its priority.
fn say(level: log::Level, text: &str) {
    let line = format!("regent guard[{}]: {text}", std::process::id());
    let _ = writeln!(
        io::stderr(),
        "{}",
        crate::logging::format_line(crate::logging::stderr_style(), level, "regent", &line)
    );
}

/// `regent guard`: runs until the daemon lets go for good or is fenced.
/// Returns the exit code.
pub fn run(daemon: u32, settings: &Settings) -> u8 {
    // Its own session and group: a signal to the daemon's group (a
    // terminal's ^C, a kill of the group) does not reach it.
    let _ = setsid();
    // SAFETY: setting SIG_IGN installs no handler, so no code can run in
    // signal context; the process is single-threaded here. (nix's
    // `signal` is unsafe as well, for the handlers it can install.)
    unsafe {
        // SIGTERM from a stop or a cgroup kill must not end it before it
        // has fenced; it exits by itself once nothing is watched.
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    lock_memory("lease guard");
    say(
        log::Level::Info,
        &format!("lease guard started for daemon pid {daemon}"),
    );
    let mut guard = Guard::new();
    // Fd 0 is the pipe from the daemon. Read it unbuffered, not through
    // `Stdin`: a buffer would hide bytes from poll.
    let input = io::stdin();
    let mut pending = Vec::new();
    let mut open = true;
    loop {
        let now = Time(monotonic_ns());
        if let GuardAction::Fence(epoch) = guard.poll(now, settings.slack) {
            let alive = open && parent_is(daemon);
            fence(daemon, alive, epoch, settings);
            return 0;
        }
        let wait = guard
            .deadline(settings.slack)
            .map(|d| Duration::from_nanos(d.0.saturating_sub(now.0)));
        if !open {
            match wait {
                None => {
                    say(
                        log::Level::Info,
                        "the daemon is gone and led nothing: exiting",
                    );
                    return 0;
                }
                Some(w) => {
                    std::thread::sleep(w);
                    continue;
                }
            }
        }
        if !readable(input.as_fd(), wait) {
            continue;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(input.as_fd(), &mut buf) {
            Ok(0) | Err(_) => {
                open = false;
                if let Some(epoch) = guard.daemon_gone() {
                    say(
                        log::Level::Warn,
                        &format!(
                            "the daemon is gone while its demote of epoch {epoch} ran: \
                         running the demote again"
                        ),
                    );
                    fence(daemon, false, epoch, settings);
                    return 0;
                }
                if let Some((e, _)) = guard.lease() {
                    say(
                        log::Level::Warn,
                        &format!(
                            "the daemon is gone while leading epoch {e}: fencing at the lease end"
                        ),
                    );
                }
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&line[..i]);
                    match Line::parse(&text) {
                        Ok(Line::Renew { epoch, end }) => guard.renew(epoch, end),
                        Ok(Line::Demoting { epoch }) => guard.demoting(epoch),
                        Ok(Line::Release) => guard.release(),
                        Err(e) => say(log::Level::Error, &e.to_string()),
                    }
                }
            }
        }
    }
}

/// Waits until `fd` is readable (or hung up), at most `wait` (for ever if
/// `None`). True if it is.
fn readable(fd: BorrowedFd<'_>, wait: Option<Duration>) -> bool {
    let timeout = wait.map_or(PollTimeout::NONE, |w| {
        // Rounded up, so the guard never wakes just short of a deadline.
        let ms = w.as_nanos().div_ceil(1_000_000);
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
    });
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut p, timeout).is_ok_and(|r| r > 0)
}

/// Whether `pid` is still this process's parent (the daemon alive).
fn parent_is(pid: u32) -> bool {
    u32::try_from(getppid().as_raw()) == Ok(pid)
}

/// Takes the daemon's leadership away: freeze it, kill its hooks, run the
/// demote, kill it. The daemon is killed after the demote, not before:
/// under systemd its death sends SIGTERM to the unit's cgroup, which would
/// hit the demote hook mid-way. Frozen, it can do nothing meanwhile.
fn fence(daemon: u32, alive: bool, epoch: Epoch, settings: &Settings) {
    // SAFETY: SIG_IGN installs no handler, as in `run`; ignoring SIGTERM
    // again is harmless and keeps the demote going under a stop.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let pid = Pid::from_raw(daemon as libc::pid_t);
    if alive {
        say(
            log::Level::Error,
            &format!(
                "the lease of epoch {epoch} ended and the daemon (pid {daemon}) did not let go: \
             stopping it, killing its hooks and running the demote hook"
            ),
        );
        // The daemon is our parent, so the pid is not reused.
        let _ = kill(pid, Signal::SIGSTOP);
        for group in hook_groups(daemon) {
            say(
                log::Level::Warn,
                &format!("killing hook process group {group}"),
            );
            let _ = kill(Pid::from_raw(-group), Signal::SIGKILL);
        }
    } else {
        say(
            log::Level::Warn,
            &format!(
                "the lease of epoch {epoch} ended after the daemon died: running the demote hook"
            ),
        );
    }
    match &settings.demote {
        Some(hook) => run_demote(hook, epoch, settings),
        None => say(log::Level::Warn, "no demote hook is configured"),
    }
    if alive && parent_is(daemon) {
        say(
            log::Level::Warn,
            &format!("killing the daemon (pid {daemon})"),
        );
        // Our parent, checked just above.
        let _ = kill(pid, Signal::SIGKILL);
    }
    say(log::Level::Error, &format!("fenced epoch {epoch}: exiting"));
}

/// The process groups of the daemon's children other than the guard: its
/// hooks, each in a group of its own. Stable while the daemon is stopped.
fn hook_groups(daemon: u32) -> Vec<libc::pid_t> {
    let me = std::process::id();
    let mut groups = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((ppid, pgrp)) = parent_and_group(&stat) {
            if ppid == daemon && pgrp > 1 && pgrp != daemon && !groups.contains(&(pgrp as i32)) {
                groups.push(pgrp as libc::pid_t);
            }
        }
    }
    groups
}

/// The parent and process group from a `/proc/PID/stat` line. The command
/// name in parentheses may hold spaces and parentheses: fields are counted
/// from the last `)`.
fn parent_and_group(stat: &str) -> Option<(u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let _state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

/// Runs `HOOK demote EPOCH` as the daemon would after a lease expiry, with
/// the deadline and kill grace of the configuration.
fn run_demote(hook: &PathBuf, epoch: Epoch, settings: &Settings) {
    let stderr = io::stderr().as_fd().try_clone_to_owned().map(Stdio::from);
    let mut command = Command::new(hook);
    command
        .arg("demote")
        .arg(epoch.0.to_string())
        .env_clear()
        .envs(demote_env(epoch, settings))
        .stdin(Stdio::null())
        .process_group(0);
    if let Ok(out) = stderr {
        command.stdout(out);
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            say(
                log::Level::Info,
                &format!("cannot run the demote hook {}: {e}", hook.display()),
            );
            return;
        }
    };
    let group = Pid::from_raw(-(child.id() as libc::pid_t));
    let start = monotonic_ns();
    let elapsed = || Duration::from_nanos(monotonic_ns().saturating_sub(start));
    let mut signalled = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => {
                say(
                    log::Level::Error,
                    &format!("cannot wait for the demote hook: {e}"),
                );
                break None;
            }
        }
        if !signalled && elapsed() >= settings.timeout {
            say(
                log::Level::Error,
                "the demote hook timed out: SIGTERM to its process group",
            );
            // The hook's own process group.
            let _ = kill(group, Signal::SIGTERM);
            signalled = true;
        } else if signalled && elapsed() >= settings.timeout + settings.kill_grace {
            say(
                log::Level::Error,
                "the demote hook outlived its kill grace: SIGKILL",
            );
            let _ = kill(group, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Nothing the hook started outlives it.
    let _ = kill(group, Signal::SIGKILL);
    let took = elapsed().as_secs_f64() * 1000.0;
    match status {
        Some(s) => say(
            log::Level::Info,
            &format!("demote hook for epoch {epoch} ended ({s}) after {took:.1} ms"),
        ),
        None => say(
            log::Level::Error,
            &format!("demote hook for epoch {epoch} lost after {took:.1} ms"),
        ),
    }
}

/// The documented hook environment of a demote after a lease expiry.
fn demote_env(epoch: Epoch, settings: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("PATH", HOOK_PATH.to_string()),
        ("REGENT_ROLE", "follower".to_string()),
        ("REGENT_EPOCH", epoch.to_string()),
        ("REGENT_NODE", settings.node.to_string()),
        ("REGENT_CLUSTER", settings.cluster.clone()),
        ("REGENT_LEADER", String::new()),
        (
            "REGENT_REASON",
            crate::core::Reason::LeaseExpired.as_str().to_string(),
        ),
    ]
}

/// Locks the process's memory, so that a page fault under memory pressure
/// cannot stall it past a lease (as corosync does). Not being allowed (an
/// unprivileged `regent demo`) is a warning, not an error.
pub fn lock_memory(who: &str) {
    // Neither libc nor nix names MCL_ONFAULT (Linux 4.4).
    const MCL_ONFAULT: MlockAllFlags = MlockAllFlags::from_bits_retain(4);
    let flags = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE | MCL_ONFAULT;
    if let Err(e) = mlockall(flags) {
        let e = io::Error::from(e);
        let text = format!("{who}: cannot lock memory ({e}); a page fault may delay it");
        if who == "lease guard" {
            say(log::Level::Warn, &text);
        } else {
            log::warn!("{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_garbage_is_refused() {
        for line in [
            Line::Renew {
                epoch: Epoch(7),
                end: Time(123_456_789_000),
            },
            Line::Release,
            Line::Demoting { epoch: Epoch(9) },
            Line::Renew {
                epoch: Epoch(u64::MAX),
                end: Time(u64::MAX),
            },
        ] {
            let text = line.format();
            assert!(text.ends_with('\n'));
            assert_eq!(Line::parse(text.trim_end()), Ok(line), "{text:?}");
        }
        assert_eq!(Line::format(&Line::Release), "release\n");
        assert_eq!(
            Line::format(&Line::Renew {
                epoch: Epoch(3),
                end: Time(5)
            }),
            "renew 3 5\n"
        );
        let bad = [
            ("", "unknown"),
            ("lease 1 2", "unknown"),
            ("renew", "renew"),
            ("renew 1", "renew"),
            ("renew x 2", "renew"),
            ("renew 1 -2", "renew"),
            ("renew 1 2 3", "trailing"),
            ("release now", "trailing"),
        ];
        for (text, why) in bad {
            let e = Line::parse(text).expect_err(text);
            let kind = match e {
                ParseError::UnknownVerb(_) => "unknown",
                ParseError::BadRenew(_) => "renew",
                ParseError::Trailing(_) => "trailing",
            };
            assert_eq!(kind, why, "{text:?}");
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        let stat = "4242 (a (b) c) S 17 4242 17 0 -1 4194560";
        assert_eq!(parent_and_group(stat), Some((17, 4242)));
        assert_eq!(parent_and_group("1 (init) S 0 1 1"), Some((0, 1)));
        assert_eq!(parent_and_group("garbage"), None);
    }

    #[test]
    fn the_demote_environment_is_the_documented_one() {
        let s = Settings {
            demote: None,
            timeout: Duration::from_secs(1),
            kill_grace: Duration::from_secs(1),
            slack: Duration::ZERO,
            node: NodeId(3),
            cluster: "db".to_string(),
        };
        let env = demote_env(Epoch(9), &s);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REGENT_ROLE"), Some("follower"));
        assert_eq!(get("REGENT_EPOCH"), Some("9"));
        assert_eq!(get("REGENT_NODE"), Some("3"));
        assert_eq!(get("REGENT_CLUSTER"), Some("db"));
        assert_eq!(get("REGENT_LEADER"), Some(""));
        assert_eq!(get("REGENT_REASON"), Some("lease-expired"));
        assert_eq!(env.len(), 7);
    }
}
