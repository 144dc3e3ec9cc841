//! The disk probes: whether a hook can be run, the shared key and whether
//! its file is private, whether a group exists, whether a network interface
//! exists. Each answers with a reason for an operator; `check.rs` puts it on
//! the line of the key it concerns.
//!
//! Architecture Invariant: the only code in `config/` that looks at the
//! system besides `Config::load` reading the file itself, and it only reads:
//! metadata, the key file, the group database, the index of an interface.
//! Nothing is created, changed or run. The checker calls it only with
//! `DiskChecks::Check`.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;

use super::defaults::limits;

/// Why `path` cannot be run as a hook, if it cannot: the reason completes a
/// sentence that starts with the path.
pub(super) fn executable_file(path: &Path) -> Result<(), String> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("does not exist".to_owned())
        }
        Err(e) => return Err(format!("cannot be examined: {e}")),
    };
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(format!(
            "is not executable (mode {mode:04o}); run chmod +x {}",
            path.display()
        ));
    }
    if mode & 0o002 != 0 {
        // A hook runs as the daemon's user, usually root.
        return Err(format!(
            "is writable by anyone (mode {mode:04o}), and hooks run as root; run chmod o-w {}",
            path.display()
        ));
    }
    Ok(())
}

/// Reads the shared key, refusing a file others can read or change.
pub(super) fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let p = path.display();
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("key file {p} does not exist"))
        }
        Err(e) => return Err(format!("key file {p} cannot be opened: {e}")),
    };
    // The mode is taken from the open file, so it is the file we read.
    let meta = file
        .metadata()
        .map_err(|e| format!("key file {p} cannot be examined: {e}"))?;
    if !meta.is_file() {
        return Err(format!("key file {p} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        let access = if mode & 0o044 != 0 {
            "readable"
        } else if mode & 0o022 != 0 {
            "writable"
        } else {
            "executable"
        };
        return Err(format!(
            "key file {p} is {access} by group or others (mode {mode:04o}); run chmod 600 {p}"
        ));
    }
    let mut key = Vec::new();
    file.read_to_end(&mut key)
        .map_err(|e| format!("key file {p} cannot be read: {e}"))?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.len() < limits::KEY_MIN_BYTES {
        return Err(format!(
            "key file {p} is too short ({} bytes, at least {} needed); make one with \
             (umask 077; head -c 32 /dev/urandom > {p})",
            key.len(),
            limits::KEY_MIN_BYTES
        ));
    }
    Ok(key)
}

/// Whether this host has a network interface `name`, in the network
/// namespace this process runs in: the one the daemon joins its multicast
/// group from. Asks the kernel (`if_nametoindex`), not `/sys`, which shows
/// the interfaces of the namespace it was mounted in.
pub(super) fn interface_exists(name: &str) -> std::io::Result<bool> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::ENODEV) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the group database knows `name`.
pub(super) fn group_exists(name: &str) -> std::io::Result<bool> {
    // A name with a NUL byte is an InvalidInput error, not an absent group.
    std::ffi::CString::new(name)?;
    // getgrnam_r, its buffer grown on ERANGE up to 1 MiB.
    match nix::unistd::Group::from_name(name) {
        Ok(group) => Ok(group.is_some()),
        // getgrnam(3) lists these as ways of saying "no such group".
        Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
