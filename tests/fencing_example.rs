//! The shipped fencing example, `conf/hooks/examples/fence-file`: a stale
//! leader's write is refused, a current one's accepted. Needs only `sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/hooks/examples/fence-file")
}

/// A fresh directory for the example's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("regent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the example with a clean environment, as regent would.
fn fence(dir: &Path, args: &[&str]) -> Output {
    Command::new(script())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("FENCE_DIR", dir)
        .output()
        .expect("run fence-file")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[track_caller]
fn accepted(dir: &Path, args: &[&str]) {
    let out = fence(dir, args);
    assert!(out.status.success(), "{args:?} refused: {}", text(&out));
}

#[track_caller]
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = fence(dir, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
    text(&out)
}

#[test]
fn a_stale_leaders_write_is_refused() {
    let tmp = TempDir::new("fence");
    let dir = tmp.0.as_path();
    accepted(dir, &["promote", "5"]);
    accepted(dir, &["write", "5", "from the leader of epoch 5"]);
    accepted(dir, &["promote", "6"]);
    let why = refused(dir, &["write", "5", "late write of the old leader"]);
    assert!(why.contains("epoch 5") && why.contains("epoch 6"), "{why}");
    accepted(dir, &["write", "6", "from the leader of epoch 6"]);
    // A promote from the past is refused too, and changes nothing.
    refused(dir, &["promote", "4"]);
    let show = fence(dir, &["show"]);
    assert_eq!(String::from_utf8_lossy(&show.stdout), "6\n");
    let data = std::fs::read_to_string(dir.join("data")).expect("data");
    assert_eq!(
        data,
        "5 from the leader of epoch 5\n6 from the leader of epoch 6\n"
    );
}

#[test]
fn epochs_compare_as_numbers_of_any_size() {
    let tmp = TempDir::new("fence-big");
    let dir = tmp.0.as_path();
    accepted(dir, &["promote", "9"]);
    accepted(dir, &["write", "10", "ten is newer than nine"]);
    refused(dir, &["write", "9", "nine is older"]);
    accepted(dir, &["promote", "18446744073709551616"]);
    refused(dir, &["write", "18446744073709551615", "one less"]);
    // demote and a repeated promote of the current epoch are no-ops.
    accepted(dir, &["demote", "18446744073709551616"]);
    accepted(dir, &["promote", "18446744073709551616"]);
}

#[test]
fn bad_usage_is_exit_2() {
    let tmp = TempDir::new("fence-usage");
    let dir = tmp.0.as_path();
    for args in [
        &["promote"][..],
        &["write", "x", "data"],
        &["frobnicate", "1"],
    ] {
        let out = fence(dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}
