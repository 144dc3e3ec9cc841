//! The `log` backend: records go to standard error, with sd-daemon level
//! prefixes when standard error is the journal, or to the local syslog.
//!
//! Lines carry no timestamp: journald, syslog and terminals' scrollback
//! tools add their own. A multi-line message becomes one line per line, each
//! with its level, so the journal keeps every line's priority.
//!
//! The syslog sink never blocks the event loop: the datagram socket is
//! non-blocking, and a line the socket refuses goes to standard error
//! instead. A lost syslog connection is retried at most once a second, by
//! the clock the driver hands to [`tick`]; until it is back, lines go to
//! standard error.
//!
//! No write happens on the caller's thread: a record becomes lines in a
//! bounded queue, and a logging thread writes them. A blocked journal or a
//! full syslog socket stalls that thread only; when the queue is full,
//! lines are dropped and counted ([`dropped_total`]), and a line saying how
//! many follows once the queue has drained.
//!
//! Architecture Invariant: this module reads no clock; time comes in through
//! [`tick`]. Logging never blocks, never panics and never fails the caller.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

use crate::config::LogTarget;

/// How a line written to standard error is prefixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `<N>` sd-daemon priority prefix, for the journal.
    Journal,
    /// `LEVEL ` prefix, for a terminal or a file.
    Plain,
}

/// The sd-daemon (syslog) priority of a level.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The text of one line of a record: the target is named only for records
/// from other crates, since regent's own modules speak for themselves.
fn text(target: &str, line: &str) -> String {
    if target.starts_with("regent") || target.is_empty() {
        line.to_string()
    } else {
        format!("{target}: {line}")
    }
}

/// One line for standard error, without the newline.
pub fn format_line(style: Style, level: Level, target: &str, line: &str) -> String {
    match style {
        Style::Journal => format!("<{}>{}", priority(level), text(target, line)),
        Style::Plain => format!("{:<5} {}", level, text(target, line)),
    }
}

/// The lines of a message; an empty message is one empty line.
fn lines(message: &str) -> impl Iterator<Item = &str> {
    let mut lines = message.lines().peekable();
    let empty = lines.peek().is_none();
    empty.then_some("").into_iter().chain(lines)
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`) names the stream `(dev, ino)`:
/// systemd sets it for the service's standard error, and a child whose
/// standard error was redirected elsewhere must not use journal prefixes.
fn journal_stream_is(var: Option<&str>, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.and_then(|v| v.split_once(':')) else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The style for standard error in this process.
pub fn stderr_style() -> Style {
    let var = std::env::var("JOURNAL_STREAM").ok();
    let meta = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    match meta {
        Ok(m) if journal_stream_is(var.as_deref(), m.dev(), m.ino()) => Style::Journal,
        _ => Style::Plain,
    }
}

/// Whether standard error is the journal: a command a unit runs
/// (`ExecReload=regent reload`) writes into the unit's journal, beside the
/// daemon's own lines.
pub fn stderr_is_journal() -> bool {
    stderr_style() == Style::Journal
}

/// How often a lost syslog connection is retried.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Before the driver's first `tick`, a lost connection is retried once per
/// this many lines instead.
const RETRY_LINES: u32 = 100;

type Connection = syslog::Logger<LoggerBackend, Formatter3164>;

/// The syslog sink, with standard error (or any writer) as its fallback.
struct SyslogSink<W: Write> {
    formatter: Formatter3164,
    /// The socket to use; `None` for the usual `/dev/log` and friends.
    path: Option<PathBuf>,
    conn: Option<Connection>,
    fallback: W,
    style: Style,
    /// The newest time the driver gave.
    clock: Option<Instant>,
    last_attempt: Option<Instant>,
    lines_since_attempt: u32,
    /// The connection was lost (not merely never made).
    lost: bool,
    /// Lines written to the fallback since it was lost.
    lines_lost: u64,
}

/// Whether a lost connection may be retried now.
fn may_retry(clock: Option<Instant>, last_attempt: Option<Instant>, lines_since: u32) -> bool {
    match (clock, last_attempt) {
        (Some(now), Some(last)) => now.saturating_duration_since(last) >= RETRY_INTERVAL,
        (Some(_), None) => true,
        (None, _) => lines_since >= RETRY_LINES,
    }
}

impl<W: Write> SyslogSink<W> {
    fn new(ident: &str, path: Option<PathBuf>, fallback: W, style: Style) -> SyslogSink<W> {
        SyslogSink {
            formatter: Formatter3164 {
                facility: Facility::LOG_DAEMON,
                hostname: None,
                process: ident.to_string(),
                pid: std::process::id(),
            },
            path,
            conn: None,
            fallback,
            style,
            clock: None,
            last_attempt: None,
            lines_since_attempt: 0,
            lost: false,
            lines_lost: 0,
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        self.last_attempt = self.clock;
        self.lines_since_attempt = 0;
        let conn = match &self.path {
            None => syslog::unix(self.formatter.clone()),
            Some(p) => syslog::unix_custom(self.formatter.clone(), p),
        }
        .map_err(|e| e.to_string())?;
        // A full syslog socket must not stall the event loop.
        let r = match &conn.backend {
            LoggerBackend::Unix(sock) => sock.set_nonblocking(true),
            LoggerBackend::UnixStream(w) => w
                .get_ref()
                .set_write_timeout(Some(Duration::from_millis(50))),
            _ => Ok(()),
        };
        r.map_err(|e| e.to_string())?;
        self.conn = Some(conn);
        Ok(())
    }

    fn write_fallback(&mut self, level: Level, target: &str, line: &str) {
        let l = format_line(self.style, level, target, line);
        let _ = writeln!(self.fallback, "{l}");
    }

    fn write(&mut self, level: Level, target: &str, line: &str) {
        if self.conn.is_none() {
            self.lines_since_attempt = self.lines_since_attempt.saturating_add(1);
            if may_retry(self.clock, self.last_attempt, self.lines_since_attempt)
                && self.connect().is_ok()
                && std::mem::take(&mut self.lost)
            {
                let lost = std::mem::take(&mut self.lines_lost);
                self.send(
                    Level::Warn,
                    "regent",
                    &format!("syslog is back; {lost} lines went to standard error meanwhile"),
                );
            }
        }
        if self.conn.is_none() || !self.send(level, target, line) {
            if self.lost {
                self.lines_lost += 1;
            }
            self.write_fallback(level, target, line);
        }
    }

    /// Sends one line to syslog; false if it did not go out.
    fn send(&mut self, level: Level, target: &str, line: &str) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        let message = text(target, line);
        let r = match level {
            Level::Error => conn.err(message),
            Level::Warn => conn.warning(message),
            Level::Info => conn.info(message),
            Level::Debug | Level::Trace => conn.debug(message),
        };
        match r {
            Ok(()) => true,
            Err(syslog::Error::Write(e) | syslog::Error::Io(e))
                if e.kind() == io::ErrorKind::WouldBlock =>
            {
                false
            }
            Err(e) => {
                self.conn = None;
                self.lost = true;
                self.last_attempt = self.clock;
                self.lines_since_attempt = 0;
                self.write_fallback(
                    Level::Warn,
                    "regent",
                    &format!("lost syslog ({e}); writing to standard error until it is back"),
                );
                false
            }
        }
    }
}

/// Where records go.
enum Sink {
    Stderr(Style),
    Syslog(Box<SyslogSink<io::Stderr>>),
}

/// Lines the queue holds before new ones are dropped.
const QUEUE_LINES: usize = 4096;

/// One line on its way to the sink.
#[derive(Debug)]
struct Entry {
    level: Level,
    target: String,
    line: String,
}

/// The counts shared by the callers and the logging thread.
#[derive(Debug, Default)]
struct Counts {
    /// Lines queued.
    queued: AtomicU64,
    /// Lines written (or handed to the sink).
    written: AtomicU64,
    /// Lines dropped since the process started.
    dropped: AtomicU64,
    /// Lines dropped and not yet reported in the log.
    unreported: AtomicU64,
}

impl Counts {
    /// Queues `entry` without blocking; false (and counted) if the queue is full.
    fn push(&self, queue: &SyncSender<Entry>, entry: Entry) -> bool {
        match queue.try_send(entry) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.unreported.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(e)) => {
                // The logging thread is gone: write here rather than lose it.
                let l = format_line(Style::Plain, e.level, &e.target, &e.line);
                let _ = writeln!(io::stderr(), "{l}");
                true
            }
        }
    }
}

/// The logging thread's loop: writes every queued line through `write`
/// and, each time the queue has drained, reports lines dropped meanwhile.
fn pump(queue: &Receiver<Entry>, counts: &Counts, mut write: impl FnMut(Level, &str, &str)) {
    let report = |write: &mut dyn FnMut(Level, &str, &str)| {
        let n = counts.unreported.swap(0, Ordering::Relaxed);
        if n > 0 {
            write(
                Level::Warn,
                "regent",
                &format!("{n} log lines were dropped: the log sink was too slow"),
            );
        }
    };
    loop {
        let entry = match queue.try_recv() {
            Ok(e) => e,
            Err(TryRecvError::Empty) => {
                report(&mut write);
                match queue.recv() {
                    Ok(e) => e,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => {
                report(&mut write);
                return;
            }
        };
        write(entry.level, &entry.target, &entry.line);
        counts.written.fetch_add(1, Ordering::Release);
    }
}

struct Logger {
    queue: SyncSender<Entry>,
    counts: &'static Counts,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        for line in lines(&message) {
            let entry = Entry {
                level: record.level(),
                target: record.target().to_string(),
                line: line.to_string(),
            };
            self.counts.push(&self.queue, entry);
        }
    }

    /// Waits (up to two seconds) for the lines queued so far to be written:
    /// for the end of the process, never for the event loop.
    fn flush(&self) {
        let target = self.counts.queued.load(Ordering::Relaxed);
        for _ in 0..2000 {
            if self.counts.written.load(Ordering::Acquire) >= target {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = io::stderr().flush();
    }
}

static COUNTS: Counts = Counts {
    queued: AtomicU64::new(0),
    written: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    unreported: AtomicU64::new(0),
};

/// Log lines dropped because the logging thread fell behind.
pub fn dropped_total() -> u64 {
    COUNTS.dropped.load(Ordering::Relaxed)
}

/// The driver's clock for the syslog sink, as nanoseconds after `CLOCK_BASE`
/// plus one (zero: no tick yet).
static CLOCK_NS: AtomicU64 = AtomicU64::new(0);
static CLOCK_BASE: OnceLock<Instant> = OnceLock::new();

fn clock() -> Option<Instant> {
    let ns = CLOCK_NS.load(Ordering::Relaxed);
    let base = CLOCK_BASE.get()?;
    (ns > 0).then(|| *base + Duration::from_nanos(ns - 1))
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Whether [`fatal`] writes to standard error besides the log: when the log
/// goes to syslog and standard error is a terminal or a file.
static FATAL_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Installs the logger for the process, at `level`.
///
/// With `LogTarget::Syslog`, an unreachable syslog does not fail: the lines
/// go to standard error until it answers, since a failover daemon must not
/// stay down for want of a log daemon. Fails only if a logger is installed.
pub fn init(target: LogTarget, level: LevelFilter, ident: &str) -> Result<(), String> {
    let style = stderr_style();
    let mut unreachable = None;
    let sink = match target {
        LogTarget::Stderr => Sink::Stderr(style),
        LogTarget::Syslog => {
            let mut s = SyslogSink::new(ident, None, io::stderr(), style);
            if let Err(e) = s.connect() {
                // Counted as lost, so that its return is logged.
                s.lost = true;
                unreachable = Some(e);
            }
            Sink::Syslog(Box::new(s))
        }
    };
    if LOGGER.get().is_some() {
        return Err("a logger is already installed".to_string());
    }
    let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
    let mut sink = sink;
    std::thread::Builder::new()
        .name("regent-log".to_string())
        .spawn(move || {
            pump(&lines, &COUNTS, |level, target, line| match &mut sink {
                Sink::Stderr(style) => {
                    let l = format_line(*style, level, target, line);
                    let _ = writeln!(io::stderr().lock(), "{l}");
                }
                Sink::Syslog(s) => {
                    s.clock = clock().or(s.clock);
                    s.write(level, target, line);
                }
            })
        })
        .map_err(|e| format!("cannot start the logging thread: {e}"))?;
    let mut fresh = false;
    let logger = LOGGER.get_or_init(|| {
        fresh = true;
        Logger {
            queue,
            counts: &COUNTS,
        }
    });
    if !fresh {
        return Err("a logger is already installed".to_string());
    }
    log::set_logger(logger).map_err(|e| format!("cannot install the logger: {e}"))?;
    log::set_max_level(level);
    FATAL_TO_STDERR.store(
        target == LogTarget::Syslog && style == Style::Plain,
        Ordering::Relaxed,
    );
    if let Some(e) = unreachable {
        log::warn!("cannot reach syslog ({e}); logging to standard error until it answers");
    }
    Ok(())
}

/// Reports the error that ends the process, once, at error priority, and
/// waits until it is written.
///
/// Once: under systemd, standard error is the journal, so a line logged
/// there and printed there again shows up twice (the second time at the
/// journal's default priority, info). It goes to the log; to standard error
/// as well only when the log goes to syslog and standard error is a
/// terminal or a file, where whoever started `regent run` by hand looks.
/// Without a logger (it could not be set up) it goes to standard error.
pub fn fatal(message: &str) {
    if LOGGER.get().is_none() || !log::log_enabled!(Level::Error) {
        let mut stderr = io::stderr().lock();
        for line in lines(message) {
            let _ = writeln!(stderr, "regent: {line}");
        }
        return;
    }
    log::error!("{message}");
    log::logger().flush();
    if FATAL_TO_STDERR.load(Ordering::Relaxed) {
        let mut stderr = io::stderr().lock();
        for line in lines(message) {
            let _ = writeln!(
                stderr,
                "{}",
                format_line(Style::Plain, Level::Error, "regent", line)
            );
        }
    }
}

/// Changes the most verbose level logged (on reload).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Gives the logger the driver's clock, so that a lost syslog connection is
/// retried at most once a second. Cheap; call it once per loop turn.
pub fn tick(now: Instant) {
    let base = *CLOCK_BASE.get_or_init(|| now);
    let ns = now.saturating_duration_since(base).as_nanos();
    CLOCK_NS.store(
        u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1,
        Ordering::Relaxed,
    );
}

/// A duration as an operator reads it in a log line: `0.8 ms`, `837.5 ms`,
/// `1.250 s`, `95.0 s`. Never Rust's Debug form (`837.472µs`, `0ns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Took(pub Duration);

impl std::fmt::Display for Took {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs_f64();
        if secs < 1.0 {
            write!(f, "{:.1} ms", secs * 1e3)
        } else if secs < 60.0 {
            write!(f, "{secs:.3} s")
        } else {
            write!(f, "{secs:.1} s")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_in_milliseconds_or_seconds() {
        let shown = |d| Took(d).to_string();
        assert_eq!(shown(Duration::ZERO), "0.0 ms");
        assert_eq!(shown(Duration::from_nanos(837_472)), "0.8 ms");
        assert_eq!(shown(Duration::from_micros(837_472)), "837.5 ms");
        assert_eq!(shown(Duration::from_millis(1250)), "1.250 s");
        assert_eq!(shown(Duration::from_secs(95)), "95.0 s");
    }

    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn line_formats() {
        let cases = [
            (Style::Journal, Level::Error, "regentd::driver", "x", "<3>x"),
            (Style::Journal, Level::Warn, "regentd::net", "x", "<4>x"),
            (Style::Journal, Level::Info, "regent", "x", "<6>x"),
            (Style::Journal, Level::Debug, "regentd", "x", "<7>x"),
            (Style::Journal, Level::Trace, "regentd", "x", "<7>x"),
            (Style::Plain, Level::Error, "regentd", "x", "ERROR x"),
            (Style::Plain, Level::Warn, "regentd", "x", "WARN  x"),
            (
                Style::Plain,
                Level::Info,
                "regentd",
                "node 3 leads",
                "INFO  node 3 leads",
            ),
            (Style::Plain, Level::Debug, "regentd", "x", "DEBUG x"),
            (Style::Plain, Level::Trace, "regentd", "x", "TRACE x"),
            (
                Style::Journal,
                Level::Info,
                "mio::poll",
                "x",
                "<6>mio::poll: x",
            ),
            (Style::Plain, Level::Warn, "other", "x", "WARN  other: x"),
        ];
        for (style, level, target, line, want) in cases {
            assert_eq!(format_line(style, level, target, line), want);
        }
    }

    #[test]
    fn multi_line_messages_become_lines() {
        assert_eq!(lines("a\nb\r\nc").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(lines("").collect::<Vec<_>>(), [""]);
        assert_eq!(lines("one").collect::<Vec<_>>(), ["one"]);
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(journal_stream_is(Some("8:12345"), 8, 12345));
        assert!(!journal_stream_is(Some("8:12345"), 8, 12346));
        assert!(!journal_stream_is(Some("8:12345"), 9, 12345));
        assert!(!journal_stream_is(Some("garbage"), 8, 12345));
        assert!(!journal_stream_is(None, 8, 12345));
    }

    #[test]
    fn a_full_queue_drops_counts_and_reports_once_drained() {
        let counts = Counts::default();
        let (tx, rx) = mpsc::sync_channel(2);
        let entry = |line: &str| Entry {
            level: Level::Info,
            target: "regentd".to_string(),
            line: line.to_string(),
        };
        assert!(counts.push(&tx, entry("one")));
        assert!(counts.push(&tx, entry("two")));
        assert!(!counts.push(&tx, entry("three")), "full: dropped");
        assert!(!counts.push(&tx, entry("four")));
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 2);
        drop(tx);
        let mut out = Vec::new();
        pump(&rx, &counts, |level, _, line| {
            out.push(format!("{level} {line}"))
        });
        assert_eq!(
            out,
            [
                "INFO one",
                "INFO two",
                "WARN 2 log lines were dropped: the log sink was too slow"
            ]
        );
        assert_eq!(counts.written.load(Ordering::Relaxed), 2);
        assert_eq!(counts.unreported.load(Ordering::Relaxed), 0);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 2, "the total stays");
    }

    #[test]
    fn retry_gate() {
        #[allow(clippy::disallowed_methods)] // the test's own clock
        let t = Instant::now();
        let s = Duration::from_millis;
        assert!(may_retry(Some(t), None, 0));
        assert!(!may_retry(Some(t + s(999)), Some(t), 500));
        assert!(may_retry(Some(t + s(1000)), Some(t), 0));
        assert!(!may_retry(None, None, RETRY_LINES - 1));
        assert!(may_retry(None, Some(t), RETRY_LINES));
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).expect("a syslog datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A syslog daemon that goes away and comes back.
    #[test]
    fn syslog_reconnects_and_falls_back_to_stderr() {
        let dir = std::env::temp_dir().join(format!("regent-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let daemon = UnixDatagram::bind(&path).expect("bind");
        daemon
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");

        let mut sink = SyslogSink::new("regent-test", Some(path.clone()), Vec::new(), Style::Plain);
        #[allow(clippy::disallowed_methods)] // the test's own clock
        let t0 = Instant::now();
        sink.clock = Some(t0);
        sink.write(Level::Info, "regentd", "hello");
        let got = recv(&daemon);
        let pid = std::process::id();
        // LOG_DAEMON (3) * 8 + info (6) = 30.
        assert!(got.starts_with("<30>"), "{got}");
        assert!(
            got.ends_with(&format!(" regent-test[{pid}]: hello")),
            "{got}"
        );
        sink.write(Level::Error, "regentd", "bad");
        assert!(recv(&daemon).starts_with("<27>"));

        // The daemon goes away: lines go to the fallback.
        drop(daemon);
        std::fs::remove_file(&path).expect("rm");
        sink.write(Level::Warn, "regentd", "lost one");
        sink.write(Level::Warn, "regentd", "lost two");
        let fallback = String::from_utf8_lossy(&sink.fallback).into_owned();
        assert!(fallback.contains("WARN  lost syslog ("), "{fallback}");
        assert!(fallback.contains("WARN  lost one\n"), "{fallback}");
        assert!(fallback.contains("WARN  lost two\n"), "{fallback}");

        // It comes back, but no retry before a second has passed.
        let daemon = UnixDatagram::bind(&path).expect("bind again");
        daemon.set_nonblocking(true).expect("nonblocking");
        sink.clock = Some(t0 + Duration::from_millis(500));
        sink.write(Level::Info, "regentd", "still on stderr");
        assert!(daemon.recv(&mut [0u8; 64]).is_err());
        assert!(String::from_utf8_lossy(&sink.fallback).contains("INFO  still on stderr\n"));

        sink.clock = Some(t0 + Duration::from_millis(1500));
        sink.write(Level::Info, "regentd", "back");
        daemon.set_nonblocking(false).expect("blocking");
        daemon
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let notice = recv(&daemon);
        assert!(
            notice.ends_with("syslog is back; 3 lines went to standard error meanwhile"),
            "{notice}"
        );
        assert!(recv(&daemon).ends_with(": back"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
