//! The wall clock jumping forward or back changes nothing, because regent
//! times everything with the monotonic clock and reads the wall clock once,
//! at start, as a floor for its incarnation and for the start time metrics
//! show (`process_start_time_seconds`), which nothing decides by.
//!
//! Two tests: one reads the source (no production code outside that one
//! place names a wall clock, and clippy forbids reading either clock
//! elsewhere), and one jumps the wall clock of running daemons by years,
//! without touching the host's clock: an `LD_PRELOAD` shim, compiled here
//! with the C compiler every Rust build already needs, adds an offset read
//! from a file to `CLOCK_REALTIME` (and only it) for the daemons. That one
//! needs root for the namespace LAN (skips otherwise, fails under `CI=true`).

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;

#[path = "cluster/mod.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster::{Cluster, Opts};
use netns::{require_root, Lan};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production part of a source file: everything before its unit tests.
fn production(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

#[test]
fn only_the_incarnation_floor_and_the_start_time_read_the_wall_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clippy = std::fs::read_to_string(root.join("clippy.toml")).expect("clippy.toml");
    for method in ["std::time::Instant::now", "std::time::SystemTime::now"] {
        assert!(
            clippy.contains(&format!("path = \"{method}\"")),
            "clippy.toml must forbid {method}"
        );
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    // Every way to the wall clock in Rust, libc or a crate.
    let wall = [
        "SystemTime",
        "UNIX_EPOCH",
        "CLOCK_REALTIME",
        "CLOCK_TAI",
        "gettimeofday",
        "libc::time(",
        "chrono",
        "time::OffsetDateTime",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in production(&text).lines().enumerate() {
            if wall.iter().any(|w| line.contains(w)) && !line.trim_start().starts_with("//") {
                found.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(root).unwrap_or(file).display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    // The one reader: `unix_seconds` in the driver.
    let driver = std::fs::read_to_string(root.join("src/driver.rs")).expect("driver");
    let driver = production(&driver);
    let body_start = driver
        .find("fn unix_seconds() -> u64 {")
        .expect("unix_seconds");
    let body = &driver[body_start..body_start + driver[body_start..].find("\n}\n").expect("end")];
    for f in &found {
        let line = f.split_once(": ").map_or("", |(_, l)| l);
        assert!(
            f.starts_with("src/driver.rs:") && body.contains(line),
            "the wall clock is read outside driver.rs's unix_seconds: {f}\nall: {found:#?}"
        );
    }
    assert!(!found.is_empty(), "unix_seconds no longer reads the clock?");
    // And it is used for nothing but the incarnation floor, in the state
    // file `regent init` creates and once at each start, where the same
    // reading is kept as the start time.
    let uses: Vec<&str> = driver
        .lines()
        .filter(|l| l.contains("unix_seconds()") && !l.contains("fn unix_seconds"))
        .collect();
    assert_eq!(
        uses,
        [
            "    let incarnation = next_incarnation(0, unix_seconds());",
            "        let start_unix_s = unix_seconds();",
        ],
        "unix_seconds is used for more than the incarnation floor and the start time"
    );
    // The start time goes to the incarnation floor and to the renderers'
    // snapshot, nowhere else; the renderers only print it.
    let kept: Vec<&str> = driver
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("start_unix_s") && !l.starts_with("//"))
        .collect();
    assert_eq!(
        kept,
        [
            "start_unix_s: u64,",
            "let start_unix_s = unix_seconds();",
            "let incarnation = Incarnation(next_incarnation(stored.incarnation, start_unix_s));",
            "start_unix_s,",
            "start_unix_s: self.start_unix_s,",
        ],
        "the start time is used for more than the incarnation floor and metrics"
    );
    let render = std::fs::read_to_string(root.join("src/control/render.rs")).expect("render");
    let printed: Vec<&str> = production(&render)
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("start_unix_s"))
        .collect();
    assert_eq!(printed, ["pub start_unix_s: u64,", "s.start_unix_s,"]);
}

/// An `LD_PRELOAD` library that adds the number of seconds in the file
/// named by `REGENT_TEST_REALTIME_OFFSET` to every `CLOCK_REALTIME` read.
const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/time.h>

static long long offset(void) {
    const char *path = getenv("REGENT_TEST_REALTIME_OFFSET");
    long long s = 0;
    FILE *f = path ? fopen(path, "r") : NULL;
    if (f) {
        if (fscanf(f, "%lld", &s) != 1) s = 0;
        fclose(f);
    }
    return s;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset();
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    (void)tz;
    return rc;
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}
"#;

fn build_shim(dir: &Path) -> PathBuf {
    let src = dir.join("realtime_shim.c");
    let lib = dir.join("realtime_shim.so");
    std::fs::write(&src, SHIM).expect("write shim");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// The incarnation a daemon logged at its last start.
fn last_incarnation(c: &Cluster, host: usize) -> u64 {
    std::fs::read_to_string(c.daemon_log(host))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("incarnation ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("host {host} logged no incarnation\n{}", c.dump()))
}

#[test]
fn wall_clock_jumps_of_years_change_nothing() {
    if !require_root() {
        return;
    }
    const YEAR: i64 = 365 * 24 * 3600;
    let mut c = Cluster::new(Lan::new(3), Opts::default());
    let lib = build_shim(&c.dir);
    let offset = c.dir.join("realtime_offset");
    let set_offset = |s: i64| std::fs::write(&offset, s.to_string()).expect("offset");
    set_offset(0);
    c.set_env(&[
        ("LD_PRELOAD", lib.display().to_string()),
        ("REGENT_TEST_REALTIME_OFFSET", offset.display().to_string()),
    ]);
    c.start_all();
    let first = c
        .wait_promote(0, &[], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no leader\n{}", c.dump()));
    std::thread::sleep(Duration::from_millis(700));
    let leader = c.holder().expect("a leader");
    let before = c.hook_events().len();
    // Forward a year, back ten, forward again: a bad NTP step, a dead RTC
    // battery, an operator's `date -s`.
    for jump in [YEAR, -10 * YEAR, 3600, 0] {
        set_offset(jump);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            c.hook_events().len(),
            before,
            "a hook ran after the wall clock moved by {jump} s\n{}",
            c.dump()
        );
        assert_eq!(c.holder(), Some(leader), "{}", c.dump());
    }
    // The shim really moves the daemons' wall clock: a follower restarted
    // ten years ahead takes its incarnation from it...
    let follower = (1..=3).find(|&h| h != first.node).expect("a follower");
    let real_start = last_incarnation(&c, follower);
    set_offset(10 * YEAR);
    c.signal(follower, libc::SIGTERM);
    assert_eq!(c.wait_exit(follower, Duration::from_secs(10)), Some(0));
    c.start(follower);
    std::thread::sleep(Duration::from_millis(1000));
    let ahead = last_incarnation(&c, follower);
    assert!(
        ahead >= real_start + 10 * YEAR as u64 - 60,
        "the shim did not move the wall clock: incarnation {real_start} then {ahead}"
    );
    // ...and restarted again with the clock ten years back, it still starts
    // above that (the state file's floor), so its peers take it for new.
    set_offset(-10 * YEAR);
    c.signal(follower, libc::SIGTERM);
    assert_eq!(c.wait_exit(follower, Duration::from_secs(10)), Some(0));
    c.start(follower);
    let rejoined = cluster::wait_until(Duration::from_secs(5), || {
        (1..=3).filter(|&h| h != follower).all(|h| {
            c.metric(
                h,
                "regent_peer_alive",
                Some(("peer", &follower.to_string())),
            ) == Some(1.0)
        })
    });
    let back = last_incarnation(&c, follower);
    println!(
        "incarnations of node {follower}: {real_start} (real clock), {ahead} (+10 years), {back} (-10 years)"
    );
    assert!(back > ahead, "the incarnation went back with the clock");
    assert!(
        rejoined,
        "the peers do not hear the restarted node\n{}",
        c.dump()
    );
    assert_eq!(
        c.hook_events()
            .iter()
            .filter(|e| e.kind == "promote")
            .count(),
        1,
        "leadership changed\n{}",
        c.dump()
    );
    c.check_history(&[]);
}
