//! The CLI when its reader has gone: `regent status | head -1`, `regent
//! metrics | grep -q ...`. Standard output is a pipe whose read end is closed
//! before the child writes; the command must exit 0 without a word, not
//! panic (exit 101) on the broken pipe.
//!
//! The daemon is a stand-in: a Unix socket that answers every request with
//! `ok` and a body, as `regent run`'s control socket does. No root.

#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_regent")
}

/// A pipe's write end whose read end is already closed: every write to it
/// fails with EPIPE.
fn widowed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: pipe(2) succeeded, so both are open descriptors we own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

/// Answers `answers` requests on a socket in `dir` with `ok` and `body`.
fn fake_daemon(dir: &Path, answers: usize, body: String) -> (PathBuf, JoinHandle<Vec<String>>) {
    let socket = dir.join("control.sock");
    let listener = UnixListener::bind(&socket).expect("bind the control socket");
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for _ in 0..answers {
            let (stream, _) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&stream)
                .read_line(&mut line)
                .expect("request");
            requests.push(line.trim_end().to_string());
            let _ = (&stream).write_all(format!("ok\n{body}").as_bytes());
        }
        requests
    });
    (socket, server)
}

fn run_into_closed_pipe(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(widowed_pipe()))
        .stderr(Stdio::piped())
        .output()
        .expect("run regent")
}

#[test]
fn status_and_metrics_exit_quietly_when_the_reader_has_gone() {
    let dir = std::env::temp_dir().join(format!("regent-cli-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // More than a pipe holds, though one byte would do: nobody reads.
    let body = "regent_up 1\n".repeat(20_000);
    let (socket, server) = fake_daemon(&dir, 3, body);
    let socket = socket.display().to_string();

    for args in [
        vec!["status", "--socket", &socket],
        vec!["status", "--json", "--socket", &socket],
        vec!["metrics", "--socket", &socket],
    ] {
        let out = run_into_closed_pipe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "regent {args:?} into a closed pipe: {:?}, stderr: {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "regent {args:?} said: {stderr}");
    }
    let requests = server.join().expect("fake daemon");
    assert_eq!(requests, ["status", "status json", "metrics"]);
    let _ = std::fs::remove_dir_all(&dir);
}
