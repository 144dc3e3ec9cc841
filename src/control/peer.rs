//! Who is on the other end of a control connection, and whether they may use
//! it: root, the daemon's own user, or a member of `control.group`.
//!
//! The file mode of the socket already keeps others out; this check holds
//! even if the mode is loosened by hand or the socket is passed around.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::{geteuid, Group};

/// A peer's credentials, as the kernel recorded them when it connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerCred {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Who may use the control socket besides root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Access {
    /// The daemon's effective uid.
    pub(crate) own_euid: u32,
    /// The gid of `control.group`, if configured.
    pub(crate) group: Option<u32>,
}

/// Whether a peer may talk to the daemon. `supplementary` is asked only when
/// the answer depends on it.
pub(crate) fn permitted(
    cred: &PeerCred,
    access: &Access,
    supplementary: impl FnOnce() -> Vec<u32>,
) -> bool {
    if cred.uid == 0 || cred.uid == access.own_euid {
        return true;
    }
    match access.group {
        None => false,
        Some(g) => cred.gid == g || supplementary().contains(&g),
    }
}

/// The `SO_PEERCRED` credentials of a connected Unix stream socket.
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let cred = getsockopt(&fd, sockopt::PeerCredentials)?;
    Ok(PeerCred {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// The peer's supplementary groups at connect time (`SO_PEERGROUPS`, Linux
/// 4.13 and later). Best effort: empty when the kernel cannot tell.
pub(crate) fn peer_groups(fd: BorrowedFd<'_>) -> Vec<u32> {
    // nix has no `SO_PEERGROUPS` option, so this stays a raw getsockopt(2).
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..4 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of `len` bytes, `len` is a
        // valid in/out length, and `fd` is borrowed open for the call; the
        // kernel writes at most `len` bytes and only whole gid_t values.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return groups;
        }
        // ERANGE: the kernel set `len` to the size it needs.
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n <= groups.len() {
            break;
        }
        groups.resize(n, 0);
    }
    Vec::new()
}

/// The gid of the group `name`, or `None` if the group database has no such group.
pub(crate) fn group_id(name: &str) -> io::Result<Option<u32>> {
    if name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "group name contains a NUL byte",
        ));
    }
    // getgrnam_r, its buffer grown on ERANGE up to 1 MiB.
    match Group::from_name(name) {
        Ok(group) => Ok(group.map(|g| g.gid.as_raw())),
        // getgrnam(3) lists these as ways of saying "no such group".
        Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The daemon's effective uid.
pub(crate) fn own_euid() -> u32 {
    geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(uid: u32, gid: u32) -> PeerCred {
        PeerCred { pid: 42, uid, gid }
    }

    #[test]
    fn who_may_connect() {
        let root_only = Access {
            own_euid: 0,
            group: None,
        };
        let as_user = Access {
            own_euid: 990,
            group: None,
        };
        let with_group = Access {
            own_euid: 0,
            group: Some(500),
        };
        let cases: [(&str, PeerCred, Access, Vec<u32>, bool); 9] = [
            ("root", cred(0, 0), root_only, vec![], true),
            ("a user", cred(1000, 1000), root_only, vec![], false),
            (
                "a user in a group, none configured",
                cred(1000, 500),
                root_only,
                vec![500],
                false,
            ),
            (
                "the daemon's own user",
                cred(990, 990),
                as_user,
                vec![],
                true,
            ),
            (
                "root when the daemon is not root",
                cred(0, 0),
                as_user,
                vec![],
                true,
            ),
            (
                "primary group matches",
                cred(1000, 500),
                with_group,
                vec![],
                true,
            ),
            (
                "supplementary group matches",
                cred(1000, 1000),
                with_group,
                vec![7, 500],
                true,
            ),
            (
                "no group matches",
                cred(1000, 1000),
                with_group,
                vec![7, 501],
                false,
            ),
            (
                "root with a group configured",
                cred(0, 0),
                with_group,
                vec![],
                true,
            ),
        ];
        for (what, c, access, groups, expect) in cases {
            assert_eq!(permitted(&c, &access, || groups.clone()), expect, "{what}");
        }
        // The supplementary groups are not looked up when uid decides.
        assert!(permitted(&cred(0, 0), &with_group, || panic!(
            "looked up groups"
        )));
    }

    #[test]
    fn credentials_of_a_socket_pair() {
        use std::os::fd::AsFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let c = peer_cred(a.as_fd()).expect("SO_PEERCRED");
        assert_eq!(c.uid, own_euid());
        assert_eq!(c.pid, std::process::id() as i32);
        // Our own supplementary groups, as the kernel reports them.
        let _ = peer_groups(a.as_fd());
    }

    #[test]
    fn group_lookup() {
        assert_eq!(group_id("root").expect("lookup"), Some(0));
        assert_eq!(group_id("no-such-group-regent").expect("lookup"), None);
    }
}
