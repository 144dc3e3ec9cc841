//! The daemon as systemd sees it: READY after bind, WATCHDOG at the
//! configured rate, STATUS on becoming leader, RELOADING/READY around a
//! reload, STOPPING and exit 0 on SIGTERM; a bad reload keeps the old
//! configuration; `regent check` and the control socket commands.
//!
//! A one-member cluster on loopback: no root, no namespaces.

#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Solo {
    dir: PathBuf,
    child: Option<Child>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_regent")
}

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

impl Solo {
    fn new(name: &str) -> Solo {
        let dir = std::env::temp_dir().join(format!("regent-svc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let hook = dir.join("hook");
        // A hook that takes its time, so that READY before its end shows.
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nsleep 0.3\necho \"$1 $2\" >> {}/hooks.log\n",
                dir.display()
            ),
        )
        .expect("hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let solo = Solo { dir, child: None };
        std::fs::write(solo.config(), solo.config_text(100, free_port())).expect("config");
        // As an operator does once the configuration is written.
        let out = Command::new(bin())
            .args(["init", "-c"])
            .arg(solo.config())
            .output()
            .expect("run regent init");
        assert!(out.status.success(), "regent init: {out:?}");
        solo
    }

    fn config(&self) -> PathBuf {
        self.dir.join("regent.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn config_text(&self, heartbeat_ms: u64, port: u16) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "cluster = \"solo\"\nnode = 1\n\n[[member]]\nid = 1\naddress = \"127.0.0.1\"\n\n\
             [network]\nport = {port}\nbind = \"127.0.0.1\"\n\n[timing]\nheartbeat_ms = {heartbeat_ms}\n\
             dead_after_ms = 300\n\n[hooks]\npromote = \"{h}\"\ndemote = \"{h}\"\n\n\
             [auth]\nkey_file = \"{k}\"\n\n[state]\ndir = \"{st}\"\n\n[control]\nsocket = \"{so}\"\n",
            h = self.dir.join("hook").display(),
            k = self.dir.join("key").display(),
            st = self.dir.join("state").display(),
            so = self.socket().display(),
        );
        s
    }

    fn start(&mut self, notify: &Path, watchdog_usec: u64) {
        let log = std::fs::File::create(self.dir.join("daemon.log")).expect("log");
        let child = Command::new(bin())
            .args(["run", "-c"])
            .arg(self.config())
            .env("NOTIFY_SOCKET", notify)
            .env("WATCHDOG_USEC", watchdog_usec.to_string())
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start regent");
        self.child = Some(child);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--socket")
            .arg(self.socket())
            .output()
            .expect("regent");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for Solo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Collects notify datagrams until `until` says stop or the time runs out.
fn collect(
    sock: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(&[(Instant, String)]) -> bool,
) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).to_string(),
            ));
            if until(&got) {
                break;
            }
        }
    }
    got
}

#[test]
fn notify_watchdog_status_reload_and_stop() {
    let mut solo = Solo::new("notify");
    let notify_path = solo.dir.join("notify.sock");
    let manager = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    solo.start(&notify_path, 200_000);

    // READY comes first, once the sockets are bound, the state is loaded
    // and the start-up demote hook has ended: the host holds nothing then.
    let got = collect(&manager, Duration::from_secs(5), |g| {
        g.iter().any(|(_, m)| m == "READY=1")
    });
    let first_ready = got.iter().position(|(_, m)| m == "READY=1");
    assert!(first_ready.is_some(), "no READY=1: {got:?}\n{}", solo.log());
    assert!(
        solo.socket().exists(),
        "READY before the control socket was bound"
    );
    let hooks = std::fs::read_to_string(solo.dir.join("hooks.log")).unwrap_or_default();
    assert!(
        hooks.lines().next() == Some("demote 0"),
        "READY before the start-up demote ended: hooks.log {hooks:?}\n{}",
        solo.log()
    );

    // STATUS says leader once this one-member cluster elects itself.
    let got = collect(&manager, Duration::from_secs(5), |g| {
        g.iter().any(|(_, m)| m.starts_with("STATUS=leader"))
    });
    assert!(
        got.iter()
            .any(|(_, m)| m.starts_with("STATUS=leader epoch 1")),
        "{got:?}\n{}",
        solo.log()
    );

    // WATCHDOG every half of WATCHDOG_USEC (100 ms): about 10 in a second.
    let began = Instant::now();
    let got = collect(&manager, Duration::from_millis(1500), |_| false);
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    let secs = began.elapsed().as_secs_f64();
    let rate = pings.len() as f64 / secs;
    println!(
        "watchdog: {} pings in {secs:.2} s ({rate:.1}/s, expected 10/s)",
        pings.len()
    );
    assert!(
        (6.0..=14.0).contains(&rate),
        "watchdog rate {rate:.1}/s: {got:?}"
    );

    // A broken config on reload is refused and the old one keeps running.
    std::fs::write(solo.config(), "cluster = \"solo\"\nnode = 9\nbogus = 1\n").expect("write");
    solo.signal(libc::SIGHUP);
    let got = collect(&manager, Duration::from_secs(3), |g| {
        let reloading = g.iter().position(|(_, m)| m == "RELOADING=1");
        reloading.is_some_and(|r| g[r..].iter().any(|(_, m)| m == "READY=1"))
    });
    assert!(got.iter().any(|(_, m)| m == "RELOADING=1"), "{got:?}");
    // Log lines reach the file through the daemon's logging thread: wait
    // for them rather than read at once.
    let refused = wait_until(Duration::from_secs(3), || {
        solo.log().contains("reload refused")
    });
    assert!(refused, "{}", solo.log());
    let (ok, status) = solo.ctl(&["status", "--json"]);
    assert!(
        ok && status.contains("\"role\":\"leader\""),
        "still leading after a bad reload: {status}"
    );
    // `regent is-leader` answers with its exit status: 0 here, where the
    // one member leads; 2 where no daemon answers.
    let out = Command::new(bin())
        .args(["is-leader", "--socket"])
        .arg(solo.socket())
        .output()
        .expect("regent");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "leader epoch 1\n");
    let out = Command::new(bin())
        .args(["is-leader", "--quiet", "--socket"])
        .arg(solo.dir.join("nobody.sock"))
        .output()
        .expect("regent");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());

    // SIGTERM: STOPPING, the demote hook, exit 0.
    solo.signal(libc::SIGTERM);
    let got = collect(&manager, Duration::from_secs(5), |g| {
        g.iter().any(|(_, m)| m == "STOPPING=1")
    });
    assert!(got.iter().any(|(_, m)| m == "STOPPING=1"), "{got:?}");
    let mut child = solo.child.take().expect("child");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "regent did not exit on SIGTERM\n{}",
            solo.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", solo.log());
    let hooks = std::fs::read_to_string(solo.dir.join("hooks.log")).unwrap_or_default();
    assert_eq!(
        hooks.lines().collect::<Vec<_>>(),
        ["demote 0", "promote 1", "demote 1"],
        "{hooks}"
    );
    assert!(!solo.socket().exists(), "control socket left behind");
}

#[test]
fn reload_with_new_timing_keeps_the_leader() {
    let mut solo = Solo::new("reload");
    let notify_path = solo.dir.join("notify.sock");
    let manager = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let text = std::fs::read_to_string(solo.config()).expect("config");
    solo.start(&notify_path, 0);
    let got = collect(&manager, Duration::from_secs(5), |g| {
        g.iter().any(|(_, m)| m.starts_with("STATUS=leader"))
    });
    assert!(
        got.iter().any(|(_, m)| m.starts_with("STATUS=leader")),
        "{}",
        solo.log()
    );
    std::fs::write(
        solo.config(),
        text.replace("heartbeat_ms = 100", "heartbeat_ms = 50"),
    )
    .expect("write");
    solo.signal(libc::SIGHUP);
    let got = collect(&manager, Duration::from_secs(3), |g| {
        g.iter().filter(|(_, m)| m == "READY=1").count() >= 1
    });
    assert!(got.iter().any(|(_, m)| m == "READY=1"), "{got:?}");
    // Time for the promote hook to finish and a leadership change, if the
    // reload caused one, to show.
    std::thread::sleep(Duration::from_millis(500));
    let reloaded = wait_until(Duration::from_secs(3), || {
        solo.log().contains("configuration reloaded")
    });
    assert!(reloaded, "{}", solo.log());
    let hooks = std::fs::read_to_string(solo.dir.join("hooks.log")).unwrap_or_default();
    assert_eq!(
        hooks.lines().collect::<Vec<_>>(),
        ["demote 0", "promote 1"],
        "leadership changed: {hooks}"
    );
    let (ok, status) = solo.ctl(&["status", "--json"]);
    assert!(ok && status.contains("\"epoch\":1"), "{status}");
}

#[test]
fn check_command_reports_errors_with_lines() {
    let solo = Solo::new("check");
    let ok = Command::new(bin())
        .args(["check", "-c"])
        .arg(solo.config())
        .output()
        .expect("regent");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: "));
    let bad = solo.dir.join("bad.toml");
    std::fs::write(&bad, "cluster = \"x\"\nnode = 4\n\n[[member]]\nid = 1\n\n[timing]\nheartbeat_ms = 100\ndead_after_ms = 150\n").expect("write");
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .expect("regent");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("bad.toml:2:") && text.contains("node 4"),
        "{text}"
    );
    assert!(text.contains("dead_after"), "{text}");
}

#[test]
fn check_command_reports_every_bad_key_at_once() {
    let dir = std::env::temp_dir().join(format!("regent-svc-check-all-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("regent.toml");
    std::fs::write(
        &bad,
        "cluster = \"t\"\nnode = \"a\"\npriority = 99999999999\nauth.insecure = true\n\n\
         [[member]]\nid = 1\naddress = \"127.0.0.1\"\n\n[timing]\nheartbeat = 100\n\
         dead_after_ms = 1.5\n\n[election]\npreempt = \"yes\"\n",
    )
    .expect("write");
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .expect("regent");
    assert_eq!(out.status.code(), Some(1));
    let p = bad.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{p}:2: node: expected a whole number from 1 to 65535, found the string \"a\"\n\
             {p}:3: priority: 99999999999 is out of range: expected a whole number from 0 to \
             4294967295\n\
             {p}:11: timing.heartbeat: unknown key; [timing] has heartbeat_ms, dead_after_ms, \
             lease_margin_ms, max_drift_ppm\n\
             {p}:12: timing.dead_after_ms: expected a whole number of milliseconds from 0 to \
             18446744073709551615, found the decimal number 1.5\n\
             {p}:15: election.preempt: expected true or false, found the string \"yes\"\n"
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_command_refuses_an_interface_this_host_lacks() {
    let dir = std::env::temp_dir().join(format!("regent-svc-check-if-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = |interface: &str| {
        let path = dir.join(format!("{interface}.toml"));
        let text = format!(
            "cluster = \"t\"\nnode = 1\nauth.insecure = true\n\n[[member]]\nid = 1\n\n\
             [network]\nmulticast = \"239.255.42.1:7475\"\ninterface = \"{interface}\"\n"
        );
        std::fs::write(&path, text).expect("write");
        Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("regent")
    };
    let out = config("lo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = config("nope0");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}:10: network.interface \"nope0\" does not exist on this host\n",
            dir.join("nope0.toml").display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `regent run` to its exit with standard error in a file that
/// `JOURNAL_STREAM` names, as systemd does; returns the exit code and what
/// it wrote.
fn run_to_exit(solo: &Solo) -> (Option<i32>, String) {
    use std::os::unix::fs::MetadataExt;
    let path = solo.dir.join("journal");
    let journal = std::fs::File::create(&path).expect("journal");
    let meta = journal.metadata().expect("stat");
    let mut child = Command::new(bin())
        .args(["run", "-c"])
        .arg(solo.config())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(journal.try_clone().expect("journal"))
        .stderr(journal)
        .spawn()
        .expect("start regent");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "regent run did not exit\n{}",
                std::fs::read_to_string(&path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        std::fs::read_to_string(&path).expect("journal"),
    )
}

/// A configuration error is EX_CONFIG (78), which the units do not restart
/// on, and the journal gets it once, every line at error priority (<3>).
#[test]
fn a_bad_config_exits_78_and_is_logged_once() {
    let solo = Solo::new("exconfig");
    let good = std::fs::read_to_string(solo.config()).expect("config");
    std::fs::write(
        solo.config(),
        good.replace("node = 1", "node = 1\nbogus = 1"),
    )
    .expect("write");
    let (code, said) = run_to_exit(&solo);
    assert_eq!(code, Some(78), "{said}");
    assert_eq!(said.matches("bogus").count(), 1, "logged once: {said}");
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("<3>")),
        "every line at error priority: {said}"
    );
    assert!(
        said.contains("regent.toml:3: bogus: unknown key; the top level has cluster, node,"),
        "{said}"
    );

    // A file that is not there is a configuration error too.
    std::fs::remove_file(solo.config()).expect("remove");
    let (code, said) = run_to_exit(&solo);
    assert_eq!(code, Some(78), "{said}");

    // An error of the host, not the file, keeps exit status 1, so that
    // systemd restarts the daemon: the control socket's path is taken.
    std::fs::write(solo.config(), &good).expect("write");
    std::fs::write(solo.socket(), "not a socket").expect("write");
    let (code, said) = run_to_exit(&solo);
    assert_eq!(code, Some(1), "{said}");
    assert_eq!(
        said.matches("not a socket").count(),
        1,
        "logged once: {said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("<3>") && l.contains("not a socket")),
        "{said}"
    );
}

#[test]
fn control_commands_fail_clearly_without_a_daemon() {
    let solo = Solo::new("nodaemon");
    let (ok, text) = solo.ctl(&["status"]);
    assert!(!ok);
    assert!(text.contains("is `regent run` running"), "{text}");
}

/// The value of the sample of `name` whose labels include every one of
/// `labels`, in a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            let (head, _) = l.rsplit_once(' ').unwrap_or_default();
            labels
                .iter()
                .all(|(k, v)| head.contains(&format!(",{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What a running daemon's `regent metrics` says of its build, its start
/// and its hooks' durations, and the schema version of its status JSON.
#[test]
fn metrics_and_status_version_of_a_running_daemon() {
    let mut solo = Solo::new("metrics");
    let notify_path = solo.dir.join("notify.sock");
    let _manager = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    let before = wall().floor();
    solo.start(&notify_path, 0);
    // The start-up demote and the promote (each sleeps 0.3 s) have ended.
    let promoted = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(solo.dir.join("hooks.log"))
            .is_ok_and(|h| h.lines().any(|l| l == "promote 1"))
    });
    assert!(promoted, "{}", solo.log());
    let text = wait_until_some(Duration::from_secs(3), || {
        let (ok, text) = solo.ctl(&["metrics"]);
        let finished = sample(
            &text,
            "regent_hook_duration_seconds_count",
            &[("hook", "promote")],
        );
        (ok && finished == Some(1.0)).then_some(text)
    })
    .unwrap_or_else(|| panic!("no finished promote in the metrics\n{}", solo.log()));
    let after = wall();
    println!("{text}");

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&text, "regent_build_info", &[("version", version)]),
        Some(1.0),
        "{text}"
    );
    let started = sample(&text, "process_start_time_seconds", &[]).expect("start time");
    assert!(
        (before..=after).contains(&started),
        "started at {started}, not between {before} and {after}"
    );
    // Both hooks slept 0.3 s: above the 0.25 s bound, and each counted once
    // in every bucket from the one that holds it, and in +Inf.
    for hook in ["demote", "promote"] {
        let bucket = |le| {
            sample(
                &text,
                "regent_hook_duration_seconds_bucket",
                &[("hook", hook), ("le", le)],
            )
        };
        assert_eq!(bucket("0.25"), Some(0.0), "{hook}\n{text}");
        assert_eq!(bucket("+Inf"), Some(1.0), "{hook}\n{text}");
        assert_eq!(bucket("60"), Some(1.0), "{hook}\n{text}");
        let sum = sample(&text, "regent_hook_duration_seconds_sum", &[("hook", hook)]);
        assert!(
            sum.is_some_and(|s| (0.3..60.0).contains(&s)),
            "{hook} sum {sum:?}"
        );
    }

    let (ok, status) = solo.ctl(&["status", "--json"]);
    let version = regentd::control::STATUS_SCHEMA_VERSION;
    assert!(
        ok && status.starts_with(&format!("{{\"version\":{version},")),
        "{status}"
    );
}

/// Polls `f` every 20 ms until it gives a value or `limit` passes.
fn wait_until_some<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
