//! The process shell of the hooks: spawn one run in its own process group,
//! read its output into the log line by line, enforce its deadline (SIGTERM
//! to the group, SIGKILL after a grace period), kill it on request, reap it.
//!
//! It decides nothing: which run starts, which is killed and what its end
//! means for the core are `schedule.rs`'s. It reads no clock: every entry
//! point takes `now`.
//!
//! Architecture Invariant: nothing here blocks the event loop. Processes are
//! started with fork/exec (bounded), reaped with `WNOHANG` only, and their
//! output is read from non-blocking pipes registered with the driver's
//! `mio::Registry`.
//!
//! Architecture Invariant: nothing a hook starts outlives it. Each run is the
//! leader of a new process group; when its main process exits, or when its
//! deadline passes, the whole group is killed. The group is signalled only
//! while its leader is an unreaped zombie or alive, so the group id cannot
//! have been reused. (A hook that deliberately leaves its group with
//! `setsid` escapes this; only a cgroup could hold it.)

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::schedule::JobId;

/// The longest line logged as one; longer lines are split.
pub const LINE_MAX_BYTES: usize = 4096;

/// Bytes read from one pipe per readiness event or step, so a chatty hook
/// cannot hold the event loop.
const READ_BUDGET_BYTES: usize = 256 * 1024;

/// Bytes read per `read` call.
pub(super) const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Reads of each pipe after the main process exited, so a process that
/// escaped the group and keeps writing cannot hold the loop.
const FINISH_READS: usize = 4;

/// What to run and how.
pub(super) struct Spec {
    /// The job this run is for.
    pub job: JobId,
    /// The hook's name, for the log.
    pub label: &'static str,
    /// What the run is for, for the log line that closes it.
    pub subject: String,
    /// Log at debug level only (the health check).
    pub quiet: bool,
    /// Start with SIGTERM ignored (a demote): `systemctl stop` signals the
    /// unit's whole control group, a process started while it does so
    /// included, and a demote cut short leaves the resource held. Its
    /// deadline still ends it, by SIGKILL after the grace period.
    pub ignore_sigterm: bool,
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(&'static str, String)>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub output_max: usize,
    /// The mio tokens of its stdout and stderr.
    pub tokens: [Token; 2],
}

/// One running process and its output.
#[derive(Debug)]
pub(super) struct Run {
    /// The job this run is for.
    pub(super) job: JobId,
    label: &'static str,
    subject: String,
    quiet: bool,
    child: Child,
    pub(super) pid: libc::pid_t,
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

/// How a process ended, as far as we could learn.
#[derive(Debug)]
pub(super) enum Ending {
    Status(ExitStatus),
    /// Reaped by someone else, or `waitid` failed: status unknown.
    Lost(io::Error),
}

impl Run {
    /// Starts a run, or says why it could not start.
    pub(super) fn spawn(spec: Spec, registry: &Registry, now: Instant) -> io::Result<Run> {
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if spec.ignore_sigterm {
            // SAFETY: between fork and exec only `signal`, which is
            // async-signal-safe, runs; an ignored signal stays ignored
            // across exec, in the hook and the processes it starts.
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGTERM, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let label = spec.label;
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                log::error!(
                    "hook {label}: cannot run {}: {e}",
                    spec.program.to_string_lossy()
                );
                return Err(e);
            }
        };
        // Never fails on Linux: pids fit in pid_t.
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
        let argv: Vec<_> = spec.args.iter().map(|a| a.to_string_lossy()).collect();
        log::log!(
            if spec.quiet {
                log::Level::Debug
            } else {
                log::Level::Info
            },
            "hook {label}[{pid}]: started {} {}",
            spec.program.to_string_lossy(),
            argv.join(" ")
        );
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let mut run = Run {
            job: spec.job,
            label,
            subject: spec.subject,
            quiet: spec.quiet,
            child,
            pid,
            started: now,
            deadline: later(now, spec.timeout),
            kill_grace: spec.kill_grace,
            term_sent: None,
            killed: false,
            cancelled: false,
            pipes: [None, None],
            output: OutputCap {
                max: spec.output_max,
                kept: 0,
                dropped: 0,
            },
        };
        for (stream, fd) in [stdout, stderr].into_iter().enumerate() {
            let Some(fd) = fd else { continue };
            let token = spec.tokens[stream];
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
        Ok(run)
    }

    /// The hook's name, for the log.
    pub(super) fn label(&self) -> &'static str {
        self.label
    }

    /// Some output is left unread (the read budget stopped a read).
    pub(super) fn unread(&self) -> bool {
        self.pipes.iter().flatten().any(|p| p.more)
    }

    /// Reads on where the budget stopped the last read.
    pub(super) fn read_more(&mut self, registry: &Registry, scratch: &mut [u8], hw: &mut usize) {
        for stream in 0..2 {
            if self.pipes[stream].as_ref().is_some_and(|p| p.more) {
                self.read(stream, registry, scratch, hw);
            }
        }
    }

    /// Closes a reaped run: logs the rest of its output and how it ended.
    /// Returns its exit as the scheduler sees it and the output bytes
    /// discarded.
    pub(super) fn finish(
        mut self,
        ending: Ending,
        registry: &Registry,
        scratch: &mut [u8],
        hw: &mut usize,
        now: Instant,
    ) -> (super::schedule::Exit, u64) {
        use super::schedule::Exit;
        for stream in 0..2 {
            // The main process is gone and its group killed: what is in the
            // pipe now is all there will be, unless a process escaped the
            // group; its later output is not waited for, and a bounded number
            // of reads keeps it from holding the loop.
            for _ in 0..FINISH_READS {
                let open = self.read(stream, registry, scratch, hw);
                if !open || !self.pipes[stream].as_ref().is_some_and(|p| p.more) {
                    break;
                }
            }
            self.close(stream, registry);
        }
        let (label, pid) = (self.label, self.pid);
        let elapsed = now.saturating_duration_since(self.started);
        if self.output.dropped > 0 {
            log::warn!(
                "hook {label}[{pid}]: {} bytes of output discarded",
                self.output.dropped
            );
        }
        let exit = match &ending {
            _ if self.term_sent.is_some() => Exit::TimedOut,
            Ending::Status(status) if status.success() => Exit::Ok,
            Ending::Status(_) | Ending::Lost(_) => Exit::Failed,
        };
        let how = match &ending {
            Ending::Status(status) => describe(*status),
            Ending::Lost(e) => format!("status lost ({e})"),
        };
        let subject = &self.subject;
        let elapsed = crate::logging::Took(elapsed);
        match exit {
            Exit::TimedOut => {
                log::warn!("hook {label}[{pid}]: {subject}: timed out, {how} after {elapsed}")
            }
            _ if self.cancelled => {
                log::info!("hook {label}[{pid}]: {subject}: cancelled, {how} after {elapsed}")
            }
            Exit::Ok if self.quiet => {
                log::debug!("hook {label}[{pid}]: {subject}: {how} after {elapsed}")
            }
            Exit::Ok => log::info!("hook {label}[{pid}]: {subject}: {how} after {elapsed}"),
            _ => log::warn!("hook {label}[{pid}]: {subject}: failed, {how} after {elapsed}"),
        }
        (exit, self.output.dropped)
    }

    /// The next instant at which the deadline logic must act.
    pub(super) fn timer(&self) -> Option<Instant> {
        match self.term_sent {
            _ if self.killed => None,
            None => Some(self.deadline),
            Some(sent) => Some(later(sent, self.kill_grace)),
        }
    }

    /// SIGTERM to the group at the deadline, SIGKILL after the grace period.
    pub(super) fn enforce_deadline(&mut self, now: Instant) {
        if self.killed {
            return;
        }
        match self.term_sent {
            None if now >= self.deadline => {
                log::warn!(
                    "hook {}[{}]: deadline passed, SIGTERM to its process group",
                    self.label,
                    self.pid
                );
                signal_group(self.pid, Signal::SIGTERM);
                self.term_sent = Some(now);
            }
            Some(sent) if now >= later(sent, self.kill_grace) => {
                log::warn!(
                    "hook {}[{}]: still running, SIGKILL to its process group",
                    self.label,
                    self.pid
                );
                signal_group(self.pid, Signal::SIGKILL);
                self.killed = true;
            }
            _ => {}
        }
    }

    /// Kills the whole group at once because the run is no longer wanted.
    pub(super) fn cancel(&mut self) {
        signal_group(self.pid, Signal::SIGKILL);
        self.killed = true;
        self.cancelled = true;
    }

    /// Reaps the main process if it exited, after killing the rest of its
    /// group while the zombie still pins the group id.
    pub(super) fn poll_exit(&mut self) -> Option<Ending> {
        match has_exited(self.pid) {
            Ok(false) => None,
            Ok(true) => {
                signal_group(self.pid, Signal::SIGKILL);
                match self.child.try_wait() {
                    Ok(Some(status)) => Some(Ending::Status(status)),
                    // waitid just saw it exit; nothing else reaps by our pid.
                    Ok(None) => None,
                    Err(e) => Some(Ending::Lost(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                log::error!("hook {}[{}]: cannot wait for it: {e}", self.label, self.pid);
                Some(Ending::Lost(e))
            }
        }
    }

    /// Reads one of the run's pipes up to the budget, logging whole lines.
    /// Returns whether the pipe is still open.
    pub(super) fn read(
        &mut self,
        stream: usize,
        registry: &Registry,
        scratch: &mut [u8],
        high_water: &mut usize,
    ) -> bool {
        let label = self.label;
        let pid = self.pid;
        let quiet = self.quiet;
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
            pipe.flush(self.label, self.pid, self.quiet);
            if let Err(e) = registry.deregister(&mut SourceFd(&pipe.file.as_raw_fd())) {
                log::debug!(
                    "hook {}[{}]: deregistering {:?}: {e}",
                    self.label,
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

/// Makes a pipe's read end non-blocking and registers it.
fn open_pipe(fd: OwnedFd, token: Token, registry: &Registry) -> io::Result<File> {
    let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    let raw = fd.as_raw_fd();
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
/// Raw waitid(2), not nix's: nix decodes the status and refuses one it
/// cannot name (a child killed by a real-time signal), where only
/// "exited or not" is wanted.
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
fn signal_group(pid: libc::pid_t, signal: Signal) {
    if kill(Pid::from_raw(-pid), signal).is_err() {
        let _ = kill(Pid::from_raw(pid), signal);
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
