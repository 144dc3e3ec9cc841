//! The systemd notification protocol (sd_notify): READY, RELOADING,
//! STOPPING, STATUS and WATCHDOG datagrams to `$NOTIFY_SOCKET`, and the
//! watchdog interval from `$WATCHDOG_USEC`.
//!
//! The socket is non-blocking: a stuck service manager cannot stall the
//! loop. A failed send is logged once per outage and never panics or stops
//! the daemon; systemd will notice a missing READY or WATCHDOG on its own.
//!
//! Architecture Invariant: this module leaves the environment alone (the
//! hook runner clears `NOTIFY_SOCKET` from hooks' environments itself) and
//! reads no clock: the driver decides when to send.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// The address as given, for messages.
    name: String,
    /// A failure was logged and no send has succeeded since.
    failing: bool,
}

/// Parses a `NOTIFY_SOCKET` value: a path, or `@name` for the abstract
/// namespace.
fn parse_address(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an @abstract name (vsock is not supported)",
        ))
    }
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or `None` when it is unset (not
    /// started by systemd with `Type=notify`) or unusable (logged).
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var("NOTIFY_SOCKET").ok()?;
        if value.is_empty() {
            return None;
        }
        match Notifier::new(&value) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET={value:?} is unusable: {e}; systemd will not hear from regent"
                );
                None
            }
        }
    }

    /// A notifier sending to `address` (a path, or `@name`).
    pub fn new(address: &str) -> io::Result<Notifier> {
        let addr = parse_address(address)?;
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            sock,
            addr,
            name: address.to_string(),
            failing: false,
        })
    }

    /// Sends one notification (`KEY=value` lines); true if it went out.
    pub fn notify(&mut self, state: &str) -> bool {
        match self.sock.send_to_addr(state.as_bytes(), &self.addr) {
            Ok(_) => {
                if self.failing {
                    log::info!("notifications to systemd at {} go through again", self.name);
                    self.failing = false;
                }
                true
            }
            Err(e) => {
                if !self.failing {
                    let what = state.lines().next().unwrap_or("");
                    log::warn!(
                        "cannot notify systemd at {} ({what}): {e}; further failures are not logged",
                        self.name
                    );
                    self.failing = true;
                }
                false
            }
        }
    }

    /// Start-up is complete: sockets bound, state loaded.
    pub fn ready(&mut self) -> bool {
        self.notify("READY=1")
    }

    /// A configuration reload has begun; send `ready` when it is done.
    pub fn reloading(&mut self) -> bool {
        self.notify("RELOADING=1")
    }

    /// Shutdown has begun.
    pub fn stopping(&mut self) -> bool {
        self.notify("STOPPING=1")
    }

    /// A one-line status for `systemctl status`; line breaks become spaces.
    pub fn status(&mut self, status: &str) -> bool {
        let one_line = status.replace(['\r', '\n'], " ");
        self.notify(&format!("STATUS={one_line}"))
    }

    /// The event loop is alive.
    pub fn watchdog(&mut self) -> bool {
        self.notify("WATCHDOG=1")
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when systemd
/// set it for this process (`$WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from the variables' values.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn exercise(manager: &UnixDatagram, n: &mut Notifier) {
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(n.ready());
        assert_eq!(recv(manager), "READY=1");
        assert!(n.status("leader, epoch 7\nsecond line"));
        assert_eq!(recv(manager), "STATUS=leader, epoch 7 second line");
        assert!(n.watchdog());
        assert_eq!(recv(manager), "WATCHDOG=1");
        assert!(n.reloading());
        assert_eq!(recv(manager), "RELOADING=1");
        assert!(n.stopping());
        assert_eq!(recv(manager), "STOPPING=1");
    }

    #[test]
    fn path_socket() {
        let dir = std::env::temp_dir().join(format!("regent-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).expect("bind");
        let mut n = Notifier::new(path.to_str().expect("utf-8 path")).expect("notifier");
        exercise(&manager, &mut n);

        // The manager goes away: sends fail, quietly, and come back.
        drop(manager);
        std::fs::remove_file(&path).expect("rm");
        assert!(!n.ready());
        assert!(!n.watchdog());
        let manager = UnixDatagram::bind(&path).expect("bind again");
        exercise(&manager, &mut n);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_socket() {
        let name = format!("regent-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let manager = UnixDatagram::bind_addr(&addr).expect("bind");
        let mut n = Notifier::new(&format!("@{name}")).expect("notifier");
        exercise(&manager, &mut n);
    }

    #[test]
    fn addresses() {
        assert!(parse_address("/run/systemd/notify").is_ok());
        assert!(parse_address("@abstract").is_ok());
        assert!(parse_address("vsock:2:1234").is_err());
        assert!(parse_address("relative/path").is_err());
    }

    #[test]
    fn watchdog_intervals() {
        let half = |us| Some(Duration::from_micros(us) / 2);
        assert_eq!(
            watchdog_interval_from(Some("5000000"), None, 7),
            half(5_000_000)
        );
        assert_eq!(
            watchdog_interval_from(Some("5000000"), Some("7"), 7),
            half(5_000_000)
        );
        assert_eq!(watchdog_interval_from(Some("5000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(Some("5000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval_from(None, Some("7"), 7), None);
    }
}
