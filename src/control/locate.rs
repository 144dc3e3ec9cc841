//! Finding the control socket of a running daemon from its process id, for
//! `regent reload --pid $MAINPID` in the units' `ExecReload=`: the socket a
//! unit's daemon listens on, whatever the file on disk names by now. A
//! reload of a file whose `cluster` or `control.socket` changed must still
//! reach the daemon, so that it refuses the change and says why.
//!
//! Architecture Invariant: client side only, read-only: it reads
//! `/proc/PID/fd` and `/proc/PID/net/unix` and nothing else.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s flags: the socket listens.
const LISTENING: u32 = 1 << 16;

/// `SOCK_STREAM` in `/proc/net/unix`'s type column.
const STREAM: u32 = 1;

/// The path of the one listening Unix stream socket the process `pid`
/// holds: regent's control socket (its other Unix sockets, to the journal,
/// syslog or systemd, are unbound clients).
pub fn socket_of_process(pid: u32) -> Result<PathBuf, String> {
    let fds = format!("/proc/{pid}/fd");
    let held: HashSet<u64> = fs::read_dir(&fds)
        .map_err(|e| {
            format!(
                "cannot read {fds}: {} (is {pid} a running regent, and are you root?)",
                super::plain(&e)
            )
        })?
        .filter_map(Result::ok)
        .filter_map(|entry| fs::read_link(entry.path()).ok())
        .filter_map(|link| socket_inode(link.to_str()?))
        .collect();
    let table_path = format!("/proc/{pid}/net/unix");
    let table = fs::read_to_string(&table_path)
        .map_err(|e| format!("cannot read {table_path}: {}", super::plain(&e)))?;
    let mut found: Vec<PathBuf> = table
        .lines()
        .skip(1)
        .filter_map(listening_socket)
        .filter(|(inode, _)| held.contains(inode))
        .map(|(_, path)| path)
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "process {pid} listens on no Unix socket: is it `regent run`?"
        )),
        _ => Err(format!(
            "process {pid} listens on several Unix sockets ({}); give --socket PATH",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The inode of a `/proc/PID/fd` link to a socket, `socket:[INODE]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inode and path of a line of `/proc/net/unix`, if it is a listening
/// stream socket bound to a path: `Num RefCount Protocol Flags Type St
/// Inode Path`, the inode padded with spaces, the path last (it may hold
/// spaces itself).
fn listening_socket(line: &str) -> Option<(u64, PathBuf)> {
    let mut rest = line;
    let mut fields = Vec::with_capacity(7);
    for _ in 0..7 {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let flags = u32::from_str_radix(fields[3], 16).ok()?;
    let kind = u32::from_str_radix(fields[4], 16).ok()?;
    let inode = fields[6].parse().ok()?;
    let path = rest.strip_prefix(' ')?;
    // An abstract socket's name starts with '@'; regent binds a path.
    let bound = !path.is_empty() && !path.starts_with('@');
    (flags & LISTENING != 0 && kind == STREAM && bound).then(|| (inode, PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_unix_lines() {
        let cases = [
            (
                "0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/regent/a b.sock",
                Some((12345, "/run/regent/a b.sock")),
            ),
            // The inode padded to five columns.
            (
                "0000000000000000: 00000002 00000000 00010000 0001 01   123 /run/x.sock",
                Some((123, "/run/x.sock")),
            ),
            // Connected, not listening; unbound; a datagram socket; abstract.
            (
                "0000000000000000: 00000003 00000000 00000000 0001 03 55 /run/x.sock",
                None,
            ),
            (
                "0000000000000000: 00000003 00000000 00000000 0001 03 56",
                None,
            ),
            (
                "0000000000000000: 00000002 00000000 00010000 0002 01 57 /run/d.sock",
                None,
            ),
            (
                "0000000000000000: 00000002 00000000 00010000 0001 01 58 @/tmp/.X11",
                None,
            ),
            ("garbage", None),
        ];
        for (line, want) in cases {
            let got = listening_socket(line);
            let want = want.map(|(i, p)| (i, PathBuf::from(p)));
            assert_eq!(got, want, "{line}");
        }
        assert_eq!(socket_inode("socket:[991]"), Some(991));
        assert_eq!(socket_inode("pipe:[991]"), None);
    }

    #[test]
    fn the_socket_this_process_listens_on_is_found() {
        let dir = std::env::temp_dir().join(format!("regent-locate-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let me = std::process::id();
        // Other tests of this process may listen at the same time.
        let found = socket_of_process(me);
        assert!(
            found.as_ref() == Ok(&path) || found.as_ref().is_err_and(|e| e.contains("several")),
            "{found:?}"
        );
        drop(listener);
        let _ = fs::remove_dir_all(&dir);
        let none = socket_of_process(u32::MAX).expect_err("no such process");
        assert!(none.contains("cannot read /proc/"), "{none}");
    }
}
