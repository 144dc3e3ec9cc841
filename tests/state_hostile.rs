//! The state file betrayed by its host: damaged, truncated, copied from
//! another cluster or node (the daemon must refuse to start and say how to
//! get out), and a writer killed with SIGKILL at random moments of its atomic
//! write (the promise on disk must never go down, and the file must always
//! load).
//!
//! No root needed. SIGKILL leaves the page cache intact: this checks the
//! write protocol against process death, not against power loss (which the
//! fsyncs are for).

#![allow(clippy::disallowed_methods)]

#[path = "solo/mod.rs"]
mod solo;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regentd::core::{Epoch, NodeId};
use regentd::state::{StateFile, Stored};
use sha2::{Digest, Sha256};
use solo::{wait_until, Solo};

/// A state file exactly as regent writes it.
fn state_text(cluster: &str, node: u32, promised: u64, incarnation: u64) -> String {
    let body = format!(
        "regent-state 2\ncluster {cluster}\nnode {node}\npromised {promised}\nincarnation {incarnation}\n\
         leader none\n"
    );
    let sum: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{body}sha256 {sum}\n")
}

fn plant(solo: &Solo, bytes: &[u8]) {
    std::fs::create_dir_all(solo.state_dir()).expect("state dir");
    std::fs::write(solo.state_file(), bytes).expect("state file");
}

#[test]
fn damaged_or_foreign_state_files_stop_startup_with_the_way_out() {
    let valid = state_text("solo", 1, 7, 1_700_000_000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "is corrupt (empty file)"),
        (
            "truncated",
            valid.as_bytes()[..valid.len() / 2].to_vec(),
            "is corrupt (truncated or damaged",
        ),
        (
            "last byte missing",
            valid.as_bytes()[..valid.len() - 1].to_vec(),
            "is corrupt (truncated or damaged",
        ),
        (
            "a digit changed",
            valid.replace("promised 7", "promised 9").into_bytes(),
            "is corrupt (checksum mismatch)",
        ),
        (
            "binary garbage",
            (0..200u32).map(|i| (i * 37 % 256) as u8).collect(),
            "is corrupt (not UTF-8 text)",
        ),
        (
            "another cluster",
            state_text("other", 1, 7, 1_700_000_000).into_bytes(),
            "belongs to cluster \"other\", not \"solo\"",
        ),
        (
            "another node",
            state_text("solo", 2, 7, 1_700_000_000).into_bytes(),
            "belongs to node 2, not node 1",
        ),
    ];
    for (name, bytes, says) in cases {
        let mut solo = Solo::new(&format!("state-{}", name.replace(' ', "-")));
        plant(&solo, &bytes);
        solo.start();
        let status = solo.wait_exit(Duration::from_secs(10));
        let log = solo.log();
        println!("{name}: {}", log.lines().last().unwrap_or(""));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(78),
            "{name}: the daemon must refuse to start, with EX_CONFIG so systemd does not restart it\n{log}"
        );
        let path = solo.state_file().display().to_string();
        assert!(
            log.contains(&path) && log.contains(says),
            "{name}: the message must name {path} and say {says:?}\n{log}"
        );
        assert!(
            log.contains("README 'State file'") && log.contains("remove it"),
            "{name}: the message must give the way out\n{log}"
        );
        assert_eq!(
            std::fs::read(solo.state_file()).expect("still there"),
            bytes,
            "{name}: the refused file must be left as it was"
        );
        assert!(
            solo.hooks_log().is_empty(),
            "{name}: no hook may run before the state is loaded: {:?}",
            solo.hooks_log()
        );
    }
}

#[test]
fn a_missing_state_file_stops_startup_and_names_regent_init() {
    // The state of an initialised node is lost (deleted, or `[state] dir`
    // moved): the daemon must not start as a fresh node.
    let mut solo = Solo::new("state-missing");
    let path = solo.state_file();
    std::fs::remove_file(&path).expect("remove the state file");
    let began = Instant::now();
    solo.start();
    let status = solo.wait_exit(Duration::from_secs(10));
    let log = solo.log();
    println!(
        "exit {:?} after {:?}: {}",
        status.and_then(|s| s.code()),
        began.elapsed(),
        log.trim()
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(78),
        "the daemon must refuse to start, with EX_CONFIG\n{log}"
    );
    let path = path.display().to_string();
    let says = format!("there is no state file {path}");
    assert_eq!(
        log.matches(&says).count(),
        1,
        "the message must name {path}, once\n{log}"
    );
    for part in ["`regent init`", "fencing token", "README 'State file'"] {
        assert!(log.contains(part), "the message must say {part:?}\n{log}");
    }
    assert!(!solo.state_file().exists(), "nothing may be created");
    assert!(
        solo.hooks_log().is_empty(),
        "no hook may run before the state is loaded: {:?}",
        solo.hooks_log()
    );
    // `regent init` is the way out; then the daemon starts.
    solo.init();
    solo.start();
    let led = wait_until(Duration::from_secs(10), || solo.leading());
    assert!(led, "{}", solo.log());
    assert_eq!(solo.hooks_log(), ["demote 0", "promote 1"]);
}

#[test]
fn a_valid_state_file_is_honoured_across_a_restart() {
    // The control case of the refusals: the same file, intact, starts the
    // daemon, and its next leadership is above the promise on disk.
    let mut solo = Solo::new("state-valid");
    plant(&solo, state_text("solo", 1, 7, 1_700_000_000).as_bytes());
    solo.start();
    let led = wait_until(Duration::from_secs(10), || solo.leading());
    assert!(led, "{}", solo.log());
    assert_eq!(solo.hooks_log(), ["demote 7", "promote 8"]);
    let (_, status) = solo.ctl(&["status", "--json"]);
    assert!(status.contains("\"epoch\":8"), "{status}");
}

/// When set, `state_writer_child` is the child of the kill test: it stores
/// ever higher promises in this directory and says so after each one.
const WRITER_ENV: &str = "REGENT_TEST_STATE_WRITER_DIR";

/// Not a test on its own: the process that `kill_9_during_state_writes_*`
/// starts and kills. Without `WRITER_ENV` it does nothing.
#[test]
fn state_writer_child() {
    let Ok(dir) = std::env::var(WRITER_ENV) else {
        return;
    };
    let (mut state, stored) =
        StateFile::open(Path::new(&dir), "solo", NodeId(1)).expect("the state loads");
    let incarnation = stored.incarnation + 1;
    let mut promised = stored.promised.0;
    loop {
        promised += 1;
        state
            .store(Stored {
                promised: Epoch(promised),
                incarnation,
                leader: None,
                membership: None,
            })
            .expect("store");
        // Printed only once `store` returned: this promise is on disk.
        println!("stored {promised}");
    }
}

/// xorshift64*, seeded, printed, replayable with `STATE_KILL_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn kill_9_during_state_writes_never_lowers_the_promise() {
    const ROUNDS: usize = 40;
    let seed = std::env::var("STATE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("seed {seed} (replay with STATE_KILL_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("regent-state-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    StateFile::init(&dir, "solo", NodeId(1), 1).expect("init");
    let me = std::env::current_exe().expect("the test binary");
    let mut on_disk = 0u64;
    let mut temp_left = 0;
    let mut writes = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&me)
            .args(["--exact", "state_writer_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(WRITER_ENV, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // Wait for the first durable store, then kill at a random moment.
        let started = Instant::now();
        let mut last = None;
        for line in lines.by_ref() {
            if let Some(n) = line.expect("read").strip_prefix("stored ") {
                last = Some(n.parse::<u64>().expect("a number"));
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no store");
        }
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        // Whatever it printed before dying was stored.
        for line in lines {
            if let Some(n) = line.expect("read").strip_prefix("stored ") {
                last = Some(n.parse().expect("a number"));
            }
        }
        let last = last.expect("at least one store");
        if dir.join("solo.state.tmp").exists() {
            temp_left += 1;
        }
        let (_, stored) = StateFile::open(&dir, "solo", NodeId(1)).unwrap_or_else(|e| {
            panic!("round {round} (seed {seed}): the state does not load after SIGKILL: {e}")
        });
        let p = stored.promised.0;
        assert!(
            p >= last && p <= last + 1,
            "round {round} (seed {seed}): {p} on disk, but {last} was reported stored"
        );
        assert!(
            p >= on_disk,
            "round {round} (seed {seed}): the promise went down from {on_disk} to {p}"
        );
        writes += p - on_disk;
        on_disk = p;
    }
    println!(
        "{ROUNDS} kills over {writes} writes; {temp_left} left a temp file behind (a write cut short)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host whose state file shows it ran a later member list (generation 5)
/// than its configuration's (1) refuses to start, says why, and runs no
/// hook: a host never goes back to an older list (docs/PROTOCOL.md §3.19).
#[test]
fn a_state_file_from_a_later_member_list_stops_startup() {
    let body = "regent-state 3\ncluster solo\nnode 1\npromised 7\nincarnation 1700000000\n\
                leader none\nmembership 5 0000abcd 00000000 1 committed\n";
    let sum: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut solo = Solo::new("state-later-list");
    plant(&solo, format!("{body}sha256 {sum}\n").as_bytes());
    solo.start();
    let status = solo.wait_exit(Duration::from_secs(10));
    let log = solo.log();
    assert_eq!(status.and_then(|s| s.code()), Some(78), "{log}");
    assert!(
        log.contains("this host ran member list generation 5 (list 0000abcd)")
            && log.contains("is not a later one"),
        "{log}"
    );
    assert!(solo.hooks_log().is_empty(), "{:?}", solo.hooks_log());
}
