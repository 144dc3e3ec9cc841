//! The control socket (`regent status`, `regent step-down`, `regent
//! metrics`, `regent reload`), the optional HTTP metrics endpoint, and how
//! both render a snapshot of the node.
//!
//! The protocol is one request line, one answer, then the daemon closes the
//! connection. Requests: `status`, `status json`, `step-down`, `step-down
//! NODE`, `metrics`, `reload`. An answer's first line is `ok` or `error:
//! REASON`; what follows `ok` is the body, and a reason may go on over more
//! lines (a refused reload lists every error). The client side is
//! [`request`]; `regent check` asks for `status json` through
//! [`beside_the_daemon`], which sets the daemon's member list beside the
//! file's.
//!
//! The driver owns the loop: it routes events of the tokens the servers own
//! to their `on_event`, answers each returned request with `reply` or
//! `reply_error`, and wakes at `next_timeout` to call `on_timeout`.
//!
//! Architecture Invariant: this module never blocks the event loop and never
//! reads a clock; every entry point of the servers takes `now`. It decides
//! nothing about the cluster: requests go to the driver, which asks the core.

mod conn;
mod http;
mod json;
mod locate;
mod peer;
mod render;
mod running;

pub use conn::ClientId;
pub use http::MetricsHttp;
pub use locate::socket_of_process;
pub use render::{
    render_metrics, render_status, render_status_json, Counters, Snapshot, STATUS_SCHEMA_VERSION,
};
pub use running::beside_the_daemon;

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::core::NodeId;
use conn::{Conns, Frame};
use peer::{Access, PeerCred};

/// The longest request line accepted, newline included.
pub const REQUEST_MAX_BYTES: usize = 1024;

/// Connections served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 16;

/// How long a client may take to send its request, and to read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A request on the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `status` or `status json`.
    Status {
        /// Answer with JSON instead of the table.
        json: bool,
    },
    /// `step-down` or `step-down NODE`: the leader hands over.
    StepDown {
        /// The preferred successor.
        to: Option<NodeId>,
    },
    /// `metrics`: the Prometheus text exposition.
    Metrics,
    /// `reload`: read the configuration file again and answer with the
    /// verdict, what changed or why the running configuration stays.
    Reload,
    /// `role`: one line, `leader epoch E` while this node leads (its lease
    /// not over), else `follower` with the leader it follows, if any.
    Role,
}

impl Request {
    /// Parses a request line (without its newline).
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["status"] => Ok(Request::Status { json: false }),
            ["status", "json"] => Ok(Request::Status { json: true }),
            ["role"] => Ok(Request::Role),
            ["step-down"] => Ok(Request::StepDown { to: None }),
            ["step-down", node] => match node.parse::<u32>() {
                Ok(id) if id > 0 => Ok(Request::StepDown {
                    to: Some(NodeId(id)),
                }),
                _ => Err(format!("step-down: {node:?} is not a node id")),
            },
            ["metrics"] => Ok(Request::Metrics),
            ["reload"] => Ok(Request::Reload),
            _ => Err(format!(
                "unknown request {:?}; expected status, status json, step-down [NODE], metrics \
                 or reload",
                line.chars().take(64).collect::<String>()
            )),
        }
    }
}

/// The request line, as [`Request::parse`] reads it.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status { json: false } => f.write_str("status"),
            Request::Status { json: true } => f.write_str("status json"),
            Request::StepDown { to: None } => f.write_str("step-down"),
            Request::StepDown { to: Some(n) } => write!(f, "step-down {n}"),
            Request::Metrics => f.write_str("metrics"),
            Request::Reload => f.write_str("reload"),
            Request::Role => f.write_str("role"),
        }
    }
}

/// The bytes of an `ok` answer.
fn ok_answer(body: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(body.len() + 3);
    a.extend_from_slice(b"ok\n");
    a.extend_from_slice(body.as_bytes());
    a
}

/// The bytes of an `error` answer: the reason's lines, the first after
/// `error: `.
fn error_answer(reason: &str) -> Vec<u8> {
    let reason = reason.replace('\r', "");
    format!("error: {}\n", reason.trim_end()).into_bytes()
}

/// Frames a control request: one line, at most [`REQUEST_MAX_BYTES`].
fn frame_request(input: &[u8], eof: bool) -> Frame<Request> {
    let line = match input.iter().position(|&b| b == b'\n') {
        Some(end) => &input[..end],
        None if input.len() >= REQUEST_MAX_BYTES => {
            return Frame::Reject(error_answer(&format!(
                "request longer than {REQUEST_MAX_BYTES} bytes"
            )))
        }
        None if eof && !input.is_empty() => input,
        None => return Frame::Incomplete,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Frame::Reject(error_answer("request is not UTF-8"));
    };
    match Request::parse(line) {
        Ok(r) => Frame::Request(r),
        Err(e) => Frame::Reject(error_answer(&e)),
    }
}

/// The server side of the control socket, for the driver's mio loop.
///
/// Tokens: the listener has `token_base`, connections the next
/// [`MAX_CLIENTS`]; together [`ControlServer::TOKENS`] tokens.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    token: Token,
    path: PathBuf,
    /// Device and inode of the socket file we bound, so that `close_all`
    /// removes only our own file.
    file: Option<(u64, u64)>,
    access: Access,
    conns: Conns<UnixStream>,
    denied: u64,
}

impl ControlServer {
    /// How many tokens from `token_base` on the server uses.
    pub const TOKENS: usize = 1 + MAX_CLIENTS;

    /// Binds the control socket at `path` and registers it with `token_base`.
    ///
    /// Creates the parent directory (mode 0755) if missing. An existing
    /// socket file that nobody answers on is removed; one that answers means
    /// another daemon runs, and binding fails with `AddrInUse`. The socket is
    /// mode 0600, or 0660 and owned by `group` when one is given.
    pub fn bind(
        path: &Path,
        group: Option<&str>,
        registry: &Registry,
        token_base: usize,
    ) -> io::Result<ControlServer> {
        let at = |e: io::Error, what: &str| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        let gid = match group {
            None => None,
            Some(name) => match peer::group_id(name) {
                Ok(Some(gid)) => Some(gid),
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("control.group {name:?} does not exist"),
                    ))
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("control.group {name:?} cannot be looked up: {e}"),
                    ))
                }
            },
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .and_then(|()| {
                        // The mode asked for is masked by the umask (0077
                        // under the shipped unit); members of control.group
                        // must be able to reach the socket.
                        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                    })
                    .map_err(|e| at(e, "cannot create the directory of"))?;
            }
        }
        remove_stale(path)?;
        let mut listener = UnixListener::bind(path).map_err(|e| at(e, "cannot bind"))?;
        let secure = || -> io::Result<(u64, u64)> {
            let mode = if gid.is_some() { 0o660 } else { 0o600 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            if let Some(gid) = gid {
                std::os::unix::fs::chown(path, None, Some(gid))?;
            }
            let meta = fs::symlink_metadata(path)?;
            Ok((meta.dev(), meta.ino()))
        };
        let file = match secure() {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(at(e, "cannot set the owner and mode of"));
            }
        };
        let token = Token(token_base);
        if let Err(e) = registry.register(&mut listener, token, Interest::READABLE) {
            let _ = fs::remove_file(path);
            return Err(e);
        }
        Ok(ControlServer {
            listener,
            token,
            path: path.to_path_buf(),
            file: Some(file),
            access: Access {
                own_euid: peer::own_euid(),
                group: gid,
            },
            conns: Conns::new(token_base + 1, MAX_CLIENTS, REQUEST_MAX_BYTES, IO_TIMEOUT),
            denied: 0,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `t` is one of this server's tokens.
    pub fn owns_token(&self, t: Token) -> bool {
        t == self.token || self.conns.owns_token(t)
    }

    /// Connections refused for their credentials since the server started.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Handles a readiness event on one of the server's tokens: accepts,
    /// reads, writes. Returns the requests that are now complete; answer
    /// each with [`ControlServer::reply`] or [`ControlServer::reply_error`].
    pub fn on_event(
        &mut self,
        t: Token,
        registry: &Registry,
        now: Instant,
    ) -> Vec<(ClientId, Request)> {
        if t == self.token {
            self.accept(registry, now);
            return Vec::new();
        }
        self.conns
            .on_event(t, registry, frame_request)
            .into_iter()
            .collect()
    }

    /// Answers `ok` with `body`, then closes. A client that left is ignored.
    pub fn reply(&mut self, client: ClientId, body: String, registry: &Registry, now: Instant) {
        self.conns.reply(client, ok_answer(&body), registry, now);
    }

    /// Answers `error: reason`, then closes. The client exits 1 with the reason.
    pub fn reply_error(
        &mut self,
        client: ClientId,
        reason: &str,
        registry: &Registry,
        now: Instant,
    ) {
        self.conns
            .reply(client, error_answer(reason), registry, now);
    }

    /// When a client's read or write deadline ends, if one is pending.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.conns.next_timeout()
    }

    /// Closes the clients whose deadline has passed.
    pub fn on_timeout(&mut self, now: Instant, registry: &Registry) {
        self.conns.on_timeout(now, registry);
    }

    /// Closes every connection and the listener, and removes the socket file
    /// if it is still the one this server bound.
    pub fn close_all(&mut self, registry: &Registry) {
        self.conns.close_all(registry);
        if let Err(e) = registry.deregister(&mut self.listener) {
            log::debug!("control: deregister the listener: {e}");
        }
        if let Some((dev, ino)) = self.file.take() {
            match fs::symlink_metadata(&self.path) {
                Ok(m) if m.dev() == dev && m.ino() == ino => {
                    if let Err(e) = fs::remove_file(&self.path) {
                        log::warn!("cannot remove {}: {e}", self.path.display());
                    }
                }
                _ => {}
            }
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the pending connection stays queued
                    // and is retried on the next event.
                    log::warn!("control: accept on {}: {e}", self.path.display());
                    return;
                }
            };
            let fd = stream.as_fd();
            let allowed = match peer::peer_cred(fd) {
                Ok(cred) => {
                    let ok = peer::permitted(&cred, &self.access, || peer::peer_groups(fd));
                    if !ok {
                        self.note_denied(&cred);
                    }
                    ok
                }
                Err(e) => {
                    log::warn!("control: cannot read the credentials of a client: {e}");
                    false
                }
            };
            let result = if allowed {
                self.conns.insert(stream, registry, now)
            } else {
                self.conns
                    .insert_answered(stream, error_answer("permission denied"), registry, now)
            };
            if let Err(mut stream) = result {
                // Best effort, non-blocking: the answer fits any socket buffer.
                let _ = stream.write(&error_answer(&format!(
                    "busy: {MAX_CLIENTS} clients are being served; try again"
                )));
                log::warn!("control: more than {MAX_CLIENTS} clients at once; one refused");
            }
        }
    }

    fn note_denied(&mut self, cred: &PeerCred) {
        self.denied += 1;
        // Logged at powers of two, so that a local user cannot flood the log.
        if self.denied.is_power_of_two() {
            log::warn!(
                "control: refused uid {} gid {} pid {} on {} ({} refusals so far); \
                 only root{} may use it",
                cred.uid,
                cred.gid,
                cred.pid,
                self.path.display(),
                self.denied,
                if self.access.group.is_some() {
                    " and members of control.group"
                } else {
                    ""
                },
            );
        }
    }
}

/// Removes a socket file that nobody answers on. Fails if a daemon answers,
/// or if the path is something other than a socket.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it or choose another control.socket",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process answers on {}: is regent already running for this cluster?",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing the stale control socket {}", path.display());
            fs::remove_file(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot tell whether {} is in use: {e}", path.display()),
        )),
    }
}

/// An `io::Error` without the ` (os error N)` suffix of its `Display`.
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// The daemon's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `ok`: the body.
    Ok(String),
    /// `error:`: the reason, without the final newline.
    Error(String),
}

/// Sends one request line to the daemon at `path` and returns the body of an
/// `ok` answer, or the reason of an `error` answer or of a failure to talk.
///
/// For the CLI: blocking, with `timeout` on each read and write (the daemon
/// answers in one burst; a step-down may first wait for a demote hook).
pub fn request(path: &Path, req: &str, timeout: Duration) -> Result<String, String> {
    match exchange(path, req, timeout)? {
        Answer::Ok(body) => Ok(body),
        Answer::Error(reason) => Err(reason),
    }
}

/// As [`request`], but tells the daemon's `error` answer (`Ok(Answer::Error)`)
/// from a failure to talk to it (`Err`).
pub fn exchange(path: &Path, req: &str, timeout: Duration) -> Result<Answer, String> {
    let where_ = path.display();
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "cannot reach regent at {where_}: permission denied; run as root or as a member \
             of control.group"
        ),
        _ => format!(
            "cannot reach regent at {where_}: is `regent run` running? ({})",
            plain(&e)
        ),
    })?;
    let talk = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "regent at {where_} did not answer within {:.1}s",
            timeout.as_secs_f64()
        ),
        _ => format!("talking to regent at {where_}: {}", plain(&e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(talk)?;
    stream.set_write_timeout(Some(timeout)).map_err(talk)?;
    stream
        .write_all(format!("{}\n", req.trim_end()).as_bytes())
        .map_err(talk)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(talk)?;
    let answer = String::from_utf8_lossy(&answer);
    if let Some(body) = answer.strip_prefix("ok\n") {
        Ok(Answer::Ok(body.to_string()))
    } else if let Some(reason) = answer.strip_prefix("error: ") {
        Ok(Answer::Error(reason.trim_end().to_string()))
    } else if answer.is_empty() {
        Err(format!(
            "regent at {where_} closed the connection without an answer"
        ))
    } else {
        Err(format!(
            "unexpected answer from regent at {where_}: {:?}",
            answer.chars().take(80).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as StdStream;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    /// A fresh directory path (not yet created) under the temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("regent-control-{}-{n}-{name}", std::process::id()))
    }

    /// The test's clock: tests may read it, the daemon's code may not.
    #[allow(clippy::disallowed_methods)]
    fn clock() -> Instant {
        Instant::now()
    }

    struct Harness {
        poll: mio::Poll,
        server: ControlServer,
        dir: PathBuf,
    }

    impl Harness {
        fn new(name: &str, group: Option<&str>) -> Harness {
            let dir = temp_dir(name);
            let poll = mio::Poll::new().expect("poll");
            let server = ControlServer::bind(&dir.join("run/x.sock"), group, poll.registry(), 10)
                .expect("bind");
            Harness { poll, server, dir }
        }

        fn path(&self) -> PathBuf {
            self.server.path().to_path_buf()
        }

        /// Runs the loop until `done`, answering requests with `answer`.
        fn serve(
            &mut self,
            done: impl Fn(&ControlServer) -> bool,
            mut answer: impl FnMut(Request) -> Result<String, String>,
        ) -> Vec<Request> {
            let mut seen = Vec::new();
            let mut events = mio::Events::with_capacity(64);
            let deadline = clock() + Duration::from_secs(10);
            while !done(&self.server) {
                assert!(clock() < deadline, "the loop did not finish");
                self.poll
                    .poll(&mut events, Some(Duration::from_millis(10)))
                    .expect("poll");
                for ev in &events {
                    assert!(self.server.owns_token(ev.token()));
                    let reg = self.poll.registry();
                    for (client, req) in self.server.on_event(ev.token(), reg, clock()) {
                        seen.push(req);
                        match answer(req) {
                            Ok(body) => self.server.reply(client, body, reg, clock()),
                            Err(reason) => self.server.reply_error(client, &reason, reg, clock()),
                        }
                    }
                }
            }
            seen
        }

        /// Runs `client` on a thread while the loop serves; returns both results.
        fn round_trip<T: Send + 'static>(
            &mut self,
            client: impl FnOnce(PathBuf) -> T + Send + 'static,
            answer: impl FnMut(Request) -> Result<String, String>,
        ) -> (T, Vec<Request>) {
            let path = self.path();
            let handle = thread::spawn(move || client(path));
            let seen = self.serve(|_| handle.is_finished(), answer);
            (handle.join().expect("client thread"), seen)
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.server.close_all(self.poll.registry());
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn ask(req: &'static str) -> impl FnOnce(PathBuf) -> Result<String, String> {
        move |path| request(&path, req, Duration::from_secs(5))
    }

    #[test]
    fn request_lines() {
        let cases = [
            ("status", Ok(Request::Status { json: false })),
            ("role", Ok(Request::Role)),
            ("status json", Ok(Request::Status { json: true })),
            ("  status   json ", Ok(Request::Status { json: true })),
            ("step-down", Ok(Request::StepDown { to: None })),
            (
                "step-down 3",
                Ok(Request::StepDown {
                    to: Some(NodeId(3)),
                }),
            ),
            ("metrics", Ok(Request::Metrics)),
            ("reload", Ok(Request::Reload)),
            ("reload now", Err("unknown request")),
            ("step-down 0", Err("not a node id")),
            ("step-down x", Err("not a node id")),
            ("status yaml", Err("unknown request")),
            ("", Err("unknown request")),
            ("STATUS", Err("unknown request")),
        ];
        for (line, want) in cases {
            match (Request::parse(line), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want, "{line:?}");
                    assert_eq!(Request::parse(&got.to_string()), Ok(got));
                }
                (Err(got), Err(want)) => assert!(got.contains(want), "{line:?}: {got}"),
                (got, want) => panic!("{line:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn status_round_trip() {
        let mut h = Harness::new("status", None);
        let path = h.path();
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("parent")), 0o755);
        let (got, seen) = h.round_trip(ask("status"), |_| Ok("node 3 leads\n".into()));
        assert_eq!(got, Ok("node 3 leads\n".to_string()));
        assert_eq!(seen, [Request::Status { json: false }]);

        let (got, seen) = h.round_trip(ask("step-down 2"), |_| Err("not the leader".into()));
        assert_eq!(got, Err("not the leader".to_string()));
        assert_eq!(
            seen,
            [Request::StepDown {
                to: Some(NodeId(2))
            }]
        );

        // A reason of several lines (a refused reload) arrives whole.
        let (got, seen) = h.round_trip(ask("reload"), |_| {
            Err("reload refused:\r\nx.toml:1: one\nx.toml:2: two\n".into())
        });
        assert_eq!(
            got,
            Err("reload refused:\nx.toml:1: one\nx.toml:2: two".to_string())
        );
        assert_eq!(seen, [Request::Reload]);
    }

    #[test]
    fn bad_requests_get_an_error_without_reaching_the_driver() {
        let mut h = Harness::new("bad", None);
        let never = |r| panic!("the driver saw {r:?}");
        let (got, _) = h.round_trip(ask("launch missiles"), never);
        assert!(
            got.as_ref().is_err_and(|e| e.contains("unknown request")),
            "{got:?}"
        );

        let long: &'static str = "x".repeat(REQUEST_MAX_BYTES + 10).leak();
        let (got, _) = h.round_trip(
            move |path| {
                // No newline and a write side kept open: the limit must end it.
                let mut s = StdStream::connect(path).expect("connect");
                s.write_all(long.as_bytes()).expect("write");
                let mut answer = String::new();
                s.read_to_string(&mut answer).expect("read");
                answer
            },
            never,
        );
        assert_eq!(got, "error: request longer than 1024 bytes\n");

        // A request ended by EOF instead of a newline is still read.
        let (got, seen) = h.round_trip(
            |path| {
                let mut s = StdStream::connect(path).expect("connect");
                s.write_all(b"metrics").expect("write");
                s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                let mut answer = String::new();
                s.read_to_string(&mut answer).expect("read");
                answer
            },
            |_| Ok("m 1\n".into()),
        );
        assert_eq!(
            (got.as_str(), seen.as_slice()),
            ("ok\nm 1\n", &[Request::Metrics][..])
        );
    }

    #[test]
    fn idle_clients_time_out() {
        let mut h = Harness::new("idle", None);
        let mut idle = StdStream::connect(h.path()).expect("connect");
        let accepted = clock();
        h.serve(|s| s.conns.len() == 1, |_| unreachable!());
        let deadline = h.server.next_timeout().expect("a read deadline");
        assert!(deadline >= accepted + IO_TIMEOUT);
        h.server
            .on_timeout(deadline - Duration::from_millis(1), h.poll.registry());
        assert_eq!(h.server.conns.len(), 1);
        h.server.on_timeout(deadline, h.poll.registry());
        assert_eq!(h.server.conns.len(), 0);
        assert_eq!(h.server.next_timeout(), None);
        let mut buf = Vec::new();
        idle.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(idle.read_to_end(&mut buf).expect("read"), 0);
    }

    #[test]
    fn too_many_clients_are_told_so() {
        let mut h = Harness::new("busy", None);
        let clients: Vec<StdStream> = (0..MAX_CLIENTS + 1)
            .map(|_| StdStream::connect(h.path()).expect("connect"))
            .collect();
        h.serve(|s| s.conns.len() == MAX_CLIENTS, |_| unreachable!());
        let mut last = clients.into_iter().last().expect("a client");
        let mut answer = String::new();
        last.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("error: busy"), "{answer:?}");
    }

    #[test]
    fn stale_sockets_are_replaced_and_live_ones_refused() {
        let dir = temp_dir("stale");
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("x.sock");
        let poll = mio::Poll::new().expect("poll");

        // A socket file nobody listens on: removed and bound again.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let mut s = ControlServer::bind(&path, None, poll.registry(), 0).expect("stale replaced");

        // While it runs, a second daemon is refused.
        let e = ControlServer::bind(&path, None, poll.registry(), 100).expect_err("in use");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("already running"), "{e}");

        s.close_all(poll.registry());
        assert!(!path.exists(), "close_all removes the socket");

        fs::write(&path, "not a socket").expect("write");
        let e = ControlServer::bind(&path, None, poll.registry(), 0).expect_err("a file");
        assert!(e.to_string().contains("is not a socket"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_group_opens_the_socket_to_its_members() {
        let h = Harness::new("group", Some("root"));
        let meta = fs::metadata(h.path()).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
        assert_eq!(meta.gid(), 0);
        let poll = mio::Poll::new().expect("poll");
        let e = ControlServer::bind(
            &h.dir.join("y.sock"),
            Some("no-such-group-regent"),
            poll.registry(),
            0,
        )
        .expect_err("no such group");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    /// A real peer of another uid, run with /usr/bin/python3 as `nobody`
    /// when we are root; skipped otherwise.
    #[test]
    fn other_users_are_refused() {
        use std::os::unix::process::CommandExt;
        let python = Path::new("/usr/bin/python3");
        if peer::own_euid() != 0 || !python.exists() {
            eprintln!("skipped: needs root and /usr/bin/python3");
            return;
        }
        let mut h = Harness::new("denied", None);
        // Let the file modes through, so that the credential check decides.
        fs::set_permissions(&h.dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(h.path(), fs::Permissions::from_mode(0o666)).expect("chmod");
        let script = "import socket,sys\n\
            s=socket.socket(socket.AF_UNIX)\n\
            s.connect(sys.argv[1])\n\
            s.sendall(b'status\\n')\n\
            s.shutdown(socket.SHUT_WR)\n\
            sys.stdout.write(s.makefile('rb').read().decode())\n";
        let (out, seen) = h.round_trip(
            move |path| {
                Command::new(python)
                    .args(["-c", script])
                    .arg(&path)
                    .uid(65534)
                    .gid(65534)
                    .output()
                    .expect("python3")
            },
            |r| panic!("the driver saw {r:?}"),
        );
        assert!(seen.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "error: permission denied\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(h.server.denied(), 1);
    }

    #[test]
    fn a_daemon_that_is_not_running_is_named() {
        let path = temp_dir("absent").join("x.sock");
        let e = request(&path, "status", Duration::from_secs(1)).expect_err("nobody there");
        assert_eq!(
            e,
            format!(
                "cannot reach regent at {}: is `regent run` running? (No such file or directory)",
                path.display()
            )
        );
    }
}
