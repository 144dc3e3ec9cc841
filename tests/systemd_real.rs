//! regent as an operator's host runs it: the `.deb` built as `.ci/run`
//! builds it, installed with `dpkg -i` in a Debian root booted with a real
//! systemd (`systemd-nspawn -b`), running a three-member cluster as
//! `regent.service`, `regent@b.service` and `regent@c.service`. Checked:
//!
//! 1. `systemctl start` returns once the daemons sent READY, and each unit
//!    is active with a STATUS text;
//! 2. the watchdog restarts a daemon stopped with SIGSTOP;
//! 3. a harmless `systemctl reload` succeeds and one the daemon refuses
//!    (a changed `cluster`) fails;
//! 4. `systemctl stop` of the leader hands over to another member within
//!    seconds, which then holds the VIP;
//! 5. the journal has the daemon's lines at the right priorities.
//!
//! Slow (a couple of minutes the first time, for debootstrap), and root
//! only: it runs when `REGENT_TEST_SYSTEMD=1`, which `.ci/run` sets, and
//! otherwise says why it skips. With the variable set it fails, rather than
//! skips, when something it needs is missing. Every check runs, even after
//! one has failed, and the test prints each one's verdict before it fails.
//!
//! The members share the container's loopback: unicast to 127.0.0.1, one
//! port each, one state directory and control socket each. The hook is the
//! shipped `vip` hook behind a wrapper that notes each promote and demote in
//! a shared log; the VIP lives on `lo`, where announcing it fails, which the
//! hook treats as a warning.

#![allow(clippy::disallowed_methods)]

#[path = "netns/mod.rs"]
mod netns;
#[path = "nspawn/mod.rs"]
mod nspawn;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nspawn::{Container, JournalEntry, Root};

/// The variable that turns the test on.
const GATE: &str = "REGENT_TEST_SYSTEMD";

/// The hook log, in the state directory: the units' sandbox lets the
/// daemons (and their hooks) write there.
const HOOK_LOG: &str = "/var/lib/regent/hooks.log";

/// The floating address, on the container's own loopback.
const VIP: &str = "192.0.2.10";

/// The three members: node id, unit, configuration file.
const MEMBERS: [Member; 3] = [
    Member {
        node: 1,
        unit: "regent.service",
        name: "regent",
    },
    Member {
        node: 2,
        unit: "regent@b.service",
        name: "b",
    },
    Member {
        node: 3,
        unit: "regent@c.service",
        name: "c",
    },
];

#[derive(Clone, Copy, Debug)]
struct Member {
    node: u32,
    unit: &'static str,
    /// The file is /etc/regent/NAME.toml; also names its state directory
    /// and control socket.
    name: &'static str,
}

impl Member {
    fn config(&self) -> String {
        format!("/etc/regent/{}.toml", self.name)
    }

    fn by_node(node: u32) -> Option<Member> {
        MEMBERS.iter().copied().find(|m| m.node == node)
    }
}

/// What a check found: `Ok` with what it saw, or `Err` with why it failed.
type Verdict = Result<String, String>;

/// One of the checks, run in order on one container.
type Check = fn(&Container) -> Verdict;

#[test]
fn packaged_daemons_under_real_systemd() {
    if !gate() {
        return;
    }
    let total = Instant::now();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = target_dir(manifest);

    let started = Instant::now();
    let deb = build_deb(manifest);
    eprintln!(
        "systemd_real: package built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let root = Root::ensure(&target.join("systemd-root"), &depends(&deb));
    eprintln!(
        "systemd_real: root ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let name = format!("regent-test-{}", std::process::id());
    let console = target.join(format!("{name}.console"));
    let container = Container::boot(&root, &name, &console);
    eprintln!(
        "systemd_real: {} booted in {:.1} s",
        container.name(),
        started.elapsed().as_secs_f64()
    );
    install(&container, &deb);

    let checks: [(&str, Check); 5] = [
        ("1 start reaches READY and STATUS", check_start),
        ("2 the watchdog restarts a stopped daemon", check_watchdog),
        ("3 a good reload succeeds, a bad one fails", check_reload),
        ("4 stopping the leader hands over", check_handover),
        ("5 the journal's priorities", check_priorities),
    ];
    let mut failed = Vec::new();
    for (label, check) in checks {
        let started = Instant::now();
        let verdict = check(&container);
        let secs = started.elapsed().as_secs_f64();
        match verdict {
            Ok(saw) => eprintln!("systemd_real: PASS {label} ({secs:.1} s): {saw}"),
            Err(why) => {
                eprintln!("systemd_real: FAIL {label} ({secs:.1} s): {why}");
                failed.push(format!("{label}: {why}"));
            }
        }
    }
    if failed.is_empty() {
        drop(container);
        let _ = std::fs::remove_file(&console);
    } else {
        eprintln!("{}", diagnostics(&container));
        eprintln!("systemd_real: the console is in {}", console.display());
        drop(container);
    }
    eprintln!(
        "systemd_real: {} of {} checks passed in {:.0} s",
        checks.len() - failed.len(),
        checks.len(),
        total.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

/// Whether to run: only with the gate set, and then as root with the tools
/// at hand, failing (not skipping) otherwise.
fn gate() -> bool {
    if std::env::var(GATE).as_deref() != Ok("1") {
        eprintln!(
            "skipped: set {GATE}=1 to boot a Debian root with systemd and test the package \
             in it (root, debootstrap, systemd-nspawn; .ci/run sets it)"
        );
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "{GATE}=1 asks for the real-systemd test, which needs root"
    );
    for tool in ["debootstrap", "systemd-nspawn", "nsenter"] {
        netns::require_tool(tool);
    }
    true
}

/// Where cargo builds: `CARGO_TARGET_DIR` if set, else `target/`.
fn target_dir(manifest: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => manifest.join(dir),
        None => manifest.join("target"),
    }
}

/// Builds the package with `debian/build-deb`, as `.ci/run` does, and
/// returns its path.
fn build_deb(manifest: &Path) -> PathBuf {
    let out = Command::new(manifest.join("debian/build-deb"))
        .current_dir(manifest)
        .output()
        .expect("run debian/build-deb");
    assert!(
        out.status.success(),
        "debian/build-deb failed ({}); it needs cargo-deb (cargo install cargo-deb --locked):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    manifest.join("target/debian/regent.deb")
}

/// The packages the `.deb` depends on, the first of each set of
/// alternatives, for debootstrap to install: the root then has what `apt`
/// would have pulled in on an operator's host.
fn depends(deb: &Path) -> Vec<String> {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg("Depends")
        .output()
        .expect("run dpkg-deb");
    assert!(out.status.success(), "dpkg-deb --field failed");
    String::from_utf8_lossy(&out.stdout)
        .split(',')
        .filter_map(|dep| {
            let first = dep.split('|').next()?;
            let name = first.split(['(', ':']).next()?.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// Installs the package and writes the cluster's configuration: a key, the
/// hook wrapper, the vip hook's settings, and one file per member.
fn install(c: &Container, deb: &Path) {
    let bytes = std::fs::read(deb).expect("read the package");
    c.write("/root/regent.deb", &bytes, 0o644);
    c.ok(&["dpkg", "-i", "/root/regent.deb"]);
    c.write(
        "/etc/regent/key",
        b"systemd-test-key-0123456789abcdef\n",
        0o600,
    );
    c.write(
        "/etc/regent/hooks/test-log",
        format!(
            "#!/bin/sh\n\
             # Notes each promote and demote for the test, runs the shipped hook,\n\
             # and notes the end of a demote with the hook's exit status.\n\
             note() {{ echo \"$(date +%s%N) $REGENT_NODE $1 $2 $3\" >> {HOOK_LOG}; }}\n\
             case $1 in promote|demote) note \"$1\" \"$2\" \"$REGENT_REASON\" ;; esac\n\
             /etc/regent/hooks/vip \"$@\"\n\
             rc=$?\n\
             [ \"$1\" = demote ] && note demote-end \"$2\" \"exit=$rc\"\n\
             exit $rc\n"
        )
        .as_bytes(),
        0o755,
    );
    c.write(
        "/etc/regent/vip.env",
        format!("VIP=\"{VIP}/32\"\nDEV=lo\nARP_COUNT=1\n").as_bytes(),
        0o644,
    );
    for m in MEMBERS {
        c.ok(&[
            "mkdir",
            "-p",
            "-m",
            "700",
            &format!("/var/lib/regent/{}", m.name),
        ]);
        c.write(
            &m.config(),
            config_text(m, "systemd-test", "").as_bytes(),
            0o644,
        );
        c.ok(&["regent", "check", "-c", &m.config()]);
    }
    // A newer regent refuses to start without a state file that `regent
    // init` makes; an older one has no such command.
    let help = c.ok(&["regent", "--help"]);
    if help.lines().any(|l| l.trim_start().starts_with("init ")) {
        for m in MEMBERS {
            c.ok(&["regent", "init", "-c", &m.config()]);
        }
    }
}

/// One member's configuration; `hooks_extra` goes into `[hooks]`.
fn config_text(m: Member, cluster: &str, hooks_extra: &str) -> String {
    let mut s = format!("cluster = \"{cluster}\"\nnode = {}\n", m.node);
    for other in MEMBERS {
        let _ = write!(
            s,
            "\n[[member]]\nid = {}\naddress = \"127.0.0.1\"\nport = {}\n",
            other.node,
            port(other)
        );
    }
    let _ = write!(
        s,
        "\n[network]\nport = {port}\nbind = \"127.0.0.1\"\n\n\
         [hooks]\npromote = \"/etc/regent/hooks/test-log\"\n\
         demote = \"/etc/regent/hooks/test-log\"\n{hooks_extra}\n\
         [auth]\nkey_file = \"/etc/regent/key\"\n\n\
         [state]\ndir = \"/var/lib/regent/{name}\"\n\n\
         [control]\nsocket = \"/run/regent/{name}.sock\"\n",
        port = port(m),
        name = m.name,
    );
    s
}

fn port(m: Member) -> u16 {
    17400 + m.node as u16
}

/// `systemctl show -p PROPERTY --value UNIT`.
fn show(c: &Container, unit: &str, property: &str) -> String {
    c.ok(&["systemctl", "show", "-p", property, "--value", unit])
        .trim()
        .to_owned()
}

/// Runs `systemctl ARGS`; whether it exited 0, and what it printed.
fn systemctl(c: &Container, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["systemctl"];
    argv.extend_from_slice(args);
    let out = c.run(&argv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_owned())
}

/// Polls `cond` every 100 ms until it returns `Some`, or `limit` passes.
fn wait_for<T>(limit: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The wall clock in ns, the hook log's clock (the container shares the
/// host's).
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// One line of the hook log.
#[derive(Clone, Debug)]
struct HookEvent {
    at_ns: u128,
    node: u32,
    action: String,
    epoch: u64,
    reason: String,
}

fn hook_events(c: &Container) -> Vec<HookEvent> {
    c.read(HOOK_LOG)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some(HookEvent {
                at_ns: w.first()?.parse().ok()?,
                node: w.get(1)?.parse().ok()?,
                action: (*w.get(2)?).to_owned(),
                epoch: w.get(3)?.parse().ok()?,
                reason: w.get(4).copied().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// The leader by the hook log: the node whose last hook run was a promote,
/// if exactly one is.
fn hook_leader(c: &Container) -> Option<(u32, u64)> {
    let events = hook_events(c);
    let holding: Vec<(u32, u64)> = MEMBERS
        .iter()
        .filter_map(|m| {
            let last = events
                .iter()
                .rev()
                .find(|e| e.node == m.node && e.action != "demote-end")?;
            (last.action == "promote").then_some((m.node, last.epoch))
        })
        .collect();
    match holding.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The leader every member's STATUS text names, once they agree and the
/// hook log says the same node promoted.
fn agreed_leader(c: &Container) -> Option<u32> {
    let (node, _) = hook_leader(c)?;
    let suffix = format!(" leader {node}");
    MEMBERS
        .iter()
        .filter(|m| show(c, m.unit, "ActiveState") == "active")
        .all(|m| show(c, m.unit, "StatusText").ends_with(&suffix))
        .then_some(node)
}

fn check_start(c: &Container) -> Verdict {
    let units: Vec<&str> = MEMBERS.iter().map(|m| m.unit).collect();
    let mut argv = vec!["start"];
    argv.extend(&units);
    let (ok, text) = systemctl(c, &argv);
    if !ok {
        return Err(format!("systemctl start failed: {text}"));
    }
    let mut saw = Vec::new();
    for unit in &units {
        let state = (
            show(c, unit, "ActiveState"),
            show(c, unit, "SubState"),
            show(c, unit, "StatusText"),
        );
        if state.0 != "active" || state.1 != "running" || state.2.is_empty() {
            return Err(format!(
                "{unit} after start: ActiveState={} SubState={} StatusText={:?}",
                state.0, state.1, state.2
            ));
        }
        saw.push(format!("{unit}: {} {:?}", state.0, state.2));
    }
    let leader = wait_for(Duration::from_secs(10), || agreed_leader(c))
        .ok_or("no leader that every member names within 10 s")?;
    Ok(format!("{}; then leader {leader}", saw.join(", ")))
}

fn check_watchdog(c: &Container) -> Verdict {
    // A follower, so that the leader's resource is not in play: a stopped
    // leader's lease guard would be stopped too.
    let leader = hook_leader(c).map(|(n, _)| n);
    let m = MEMBERS[1..]
        .iter()
        .copied()
        .find(|m| Some(m.node) != leader)
        .ok_or("no follower among the instances")?;
    let unit = m.unit;
    let watchdog = timespan(&show(c, unit, "WatchdogUSec"))
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{unit} has no WatchdogSec"))?;
    let restarts: u64 = show(c, unit, "NRestarts").parse().unwrap_or(0);
    let pid = show(c, unit, "MainPID");
    let (ok, text) = systemctl(c, &["kill", "-s", "SIGSTOP", unit]);
    if !ok {
        return Err(format!("systemctl kill -s SIGSTOP failed: {text}"));
    }
    let stopped = Instant::now();
    let limit = watchdog + Duration::from_secs(10);
    let back = wait_for(limit, || {
        let now: u64 = show(c, unit, "NRestarts").parse().unwrap_or(0);
        (now > restarts
            && show(c, unit, "ActiveState") == "active"
            && show(c, unit, "SubState") == "running"
            && show(c, unit, "MainPID") != pid)
            .then_some(now)
    });
    let Some(now) = back else {
        return Err(format!(
            "{unit} not restarted within {limit:?}: NRestarts {}, {} {}",
            show(c, unit, "NRestarts"),
            show(c, unit, "ActiveState"),
            show(c, unit, "SubState")
        ));
    };
    let secs = stopped.elapsed().as_secs_f64();
    let by_watchdog = c
        .journal(unit)
        .iter()
        .any(|e| e.identifier == "systemd" && e.message.contains("Watchdog timeout"));
    if !by_watchdog {
        return Err(format!(
            "{unit} restarted, but systemd logged no watchdog timeout"
        ));
    }
    let rejoined = wait_for(Duration::from_secs(10), || agreed_leader(c));
    if rejoined.is_none() {
        return Err(format!(
            "{unit} restarted but did not rejoin the cluster in 10 s"
        ));
    }
    Ok(format!(
        "{unit}: SIGSTOP, watchdog timeout (WatchdogSec {:.0} s), restarted {secs:.1} s after the SIGSTOP, NRestarts {restarts} -> {now}, back in the cluster",
        watchdog.as_secs_f64()
    ))
}

fn check_reload(c: &Container) -> Verdict {
    let m = MEMBERS[2];
    let unit = m.unit;
    let original = config_text(m, "systemd-test", "");
    let mut problems = Vec::new();
    let mut saw = Vec::new();

    // Harmless: a hook timeout.
    c.write(
        &m.config(),
        config_text(m, "systemd-test", "timeout_ms = 9000\n").as_bytes(),
        0o644,
    );
    let (ok, text) = systemctl(c, &["reload", unit]);
    if ok {
        saw.push("good reload: exit 0".to_owned());
    } else {
        problems.push(format!("the good reload failed: {text}"));
    }

    // Refused by the daemon: another cluster name needs a restart.
    c.write(
        &m.config(),
        config_text(m, "another-cluster", "").as_bytes(),
        0o644,
    );
    let (ok, text) = systemctl(c, &["reload", unit]);
    if ok {
        problems.push(
            "the bad reload (cluster changed) exited 0, although the daemon refused it".to_owned(),
        );
    } else {
        saw.push(format!("bad reload: failed ({})", first_line(&text)));
    }
    let state = show(c, unit, "ActiveState");
    if state != "active" {
        problems.push(format!("{unit} is {state} after the refused reload"));
    }

    // Back to the file the daemon runs with.
    c.write(&m.config(), original.as_bytes(), 0o644);
    let (ok, text) = systemctl(c, &["reload", unit]);
    if !ok {
        problems.push(format!("reloading the original file failed: {text}"));
    }
    if problems.is_empty() {
        Ok(saw.join(", "))
    } else {
        Err(problems.join("; "))
    }
}

fn check_handover(c: &Container) -> Verdict {
    let (leader, epoch) = hook_leader(c).ok_or("no leader in the hook log")?;
    let old = Member::by_node(leader).ok_or("the leader is not a member")?;
    let status = c.run(&["regent", "status", "--json", "-c", &old.config()]);
    let json = String::from_utf8_lossy(&status.stdout);
    if !json.contains("\"role\":\"leader\"") {
        return Err(format!(
            "the hook log says node {leader} leads, its status says: {}",
            json.trim()
        ));
    }
    let before = now_ns();
    let (ok, text) = systemctl(c, &["stop", old.unit]);
    if !ok {
        return Err(format!("systemctl stop {} failed: {text}", old.unit));
    }
    let promoted = wait_for(Duration::from_secs(5), || {
        hook_events(c)
            .into_iter()
            .find(|e| e.action == "promote" && e.node != leader && e.epoch > epoch)
    })
    .ok_or_else(|| format!("no member promoted within 5 s of stopping {}", old.unit))?;
    let after_ms = (promoted.at_ns.saturating_sub(before)) / 1_000_000;
    // The old leader let go of the VIP before the new one took it: its
    // demote ran to the end, and succeeded, before the promote began.
    let events = hook_events(c);
    let demoted = events
        .iter()
        .find(|e| e.node == leader && e.action == "demote-end" && e.epoch == epoch);
    let Some(demoted) = demoted else {
        let said: Vec<String> = c
            .journal(old.unit)
            .into_iter()
            .filter(|e| {
                e.message.contains("hook demote") && e.message.contains(&format!("epoch {epoch}"))
            })
            .map(|e| e.message)
            .collect();
        return Err(format!(
            "the old leader's demote did not run to its end, so it may still hold the VIP; \
             node {} promoted epoch {} {after_ms} ms after the stop began; {} logged: {said:?}",
            promoted.node, promoted.epoch, old.unit
        ));
    };
    if demoted.reason != "exit=0" {
        return Err(format!(
            "the old leader's demote failed ({})",
            demoted.reason
        ));
    }
    if demoted.at_ns > promoted.at_ns {
        return Err(format!(
            "node {} promoted {} ms before the old leader's demote ended",
            promoted.node,
            (demoted.at_ns - promoted.at_ns) / 1_000_000
        ));
    }
    if after_ms > 3000 {
        return Err(format!(
            "node {} promoted {after_ms} ms after the stop began",
            promoted.node
        ));
    }
    let new = Member::by_node(promoted.node).ok_or("the new leader is not a member")?;
    let holds = wait_for(Duration::from_secs(2), || {
        let out = c.ok(&["ip", "-o", "addr", "show", "dev", "lo", "to", VIP]);
        (!out.trim().is_empty()).then_some(())
    });
    if holds.is_none() {
        return Err(format!(
            "node {} promoted, but {VIP} is not on lo",
            promoted.node
        ));
    }
    let third = MEMBERS
        .iter()
        .find(|m| m.node != leader && m.node != promoted.node)
        .ok_or("three members")?;
    let follows = wait_for(Duration::from_secs(3), || {
        show(c, third.unit, "StatusText")
            .ends_with(&format!(" leader {}", promoted.node))
            .then_some(())
    });
    if follows.is_none() {
        return Err(format!(
            "{} does not follow node {}: {:?}",
            third.unit,
            promoted.node,
            show(c, third.unit, "StatusText")
        ));
    }
    Ok(format!(
        "stopped {} (node {leader}, epoch {epoch}), its demote ended ({}); {} (node {}) promoted epoch {} ({}) {after_ms} ms after the stop began, holds {VIP}; {} follows",
        old.unit, demoted.reason, new.unit, promoted.node, promoted.epoch, promoted.reason, third.unit
    ))
}

fn check_priorities(c: &Container) -> Verdict {
    let mut problems = Vec::new();
    let mut saw = Vec::new();
    let regent_lines = |unit: &str| -> Vec<JournalEntry> {
        c.journal(unit)
            .into_iter()
            .filter(|e| e.identifier == "regent")
            .collect()
    };
    let all: Vec<(Member, Vec<JournalEntry>)> =
        MEMBERS.iter().map(|m| (*m, regent_lines(m.unit))).collect();

    // A change of leader is news, not a problem: notice or info.
    let changes: Vec<&JournalEntry> = all
        .iter()
        .flat_map(|(_, lines)| lines)
        .filter(|e| e.message.contains("transition: leader"))
        .collect();
    if changes.is_empty() {
        problems.push("no `transition: leader` line in the journal".to_owned());
    }
    for e in &changes {
        if !(5..=6).contains(&e.priority) {
            problems.push(format!(
                "leadership change at priority {}: {}",
                e.priority, e.message
            ));
        }
    }
    saw.push(format!(
        "{} leadership changes at {:?}",
        changes.len(),
        priorities(&changes)
    ));

    // The refused reload is an error, and nowhere reported as less.
    let (_, c_lines) = &all[2];
    let refused: Vec<&JournalEntry> = c_lines
        .iter()
        .filter(|e| e.message.contains("refused"))
        .collect();
    if !refused.iter().any(|e| e.priority == 3) {
        problems.push(format!(
            "the refused reload is not logged at priority 3: {:?}",
            refused
                .iter()
                .map(|e| (e.priority, &e.message))
                .collect::<Vec<_>>()
        ));
    }
    for e in refused.iter().filter(|e| e.priority > 4) {
        problems.push(format!(
            "the refused reload logged at priority {}: {}",
            e.priority, e.message
        ));
    }
    saw.push(format!("refused reload at {:?}", priorities(&refused)));

    // Warnings, from the daemon and from its lease guard alike, at 4. Only
    // where memory cannot be locked (a container without CAP_IPC_LOCK or
    // a memlock limit): elsewhere there is nothing to check.
    let lock: Vec<&JournalEntry> = all
        .iter()
        .flat_map(|(_, lines)| lines)
        .filter(|e| e.message.contains("cannot lock memory"))
        .collect();
    for e in lock.iter().filter(|e| e.priority != 4) {
        problems.push(format!(
            "a warning at priority {} (pid {}): {}",
            e.priority, e.pid, e.message
        ));
    }
    if !lock.is_empty() {
        saw.push(format!("memory-lock warnings at {:?}", priorities(&lock)));
    }

    // A fatal error (a node missing from its member list): at 3, once per
    // run of the unit.
    match fatal_error_lines(c) {
        Ok(text) => saw.push(text),
        Err(why) => problems.push(why),
    }

    if problems.is_empty() {
        Ok(saw.join("; "))
    } else {
        Err(problems.join("; "))
    }
}

/// Starts `regent@d` with a configuration whose node is not a member, and
/// checks that each of its runs logged the error once, at priority 3.
fn fatal_error_lines(c: &Container) -> Verdict {
    let d = Member {
        node: 9,
        unit: "regent@d.service",
        name: "d",
    };
    c.write(
        &d.config(),
        config_text(d, "systemd-test", "").as_bytes(),
        0o644,
    );
    let (ok, _) = systemctl(c, &["start", d.unit]);
    if ok {
        return Err("regent@d started with a node that is not a member".to_owned());
    }
    // Wait for it to settle: failed (after any restarts), or inactive.
    let settled = wait_for(Duration::from_secs(20), || {
        let state = show(c, d.unit, "ActiveState");
        (state == "failed" || state == "inactive").then_some(state)
    });
    let restarts = show(c, d.unit, "NRestarts");
    let status = show(c, d.unit, "ExecMainStatus");
    let _ = systemctl(c, &["stop", d.unit]);
    let _ = systemctl(c, &["reset-failed", d.unit]);
    let state = settled.ok_or("regent@d still restarting after 20 s")?;
    let lines: Vec<JournalEntry> = c
        .journal(d.unit)
        .into_iter()
        .filter(|e| e.identifier == "regent" && e.message.contains("node 9"))
        .collect();
    let mut runs: Vec<&str> = lines.iter().map(|e| e.invocation.as_str()).collect();
    runs.dedup();
    if runs.is_empty() {
        return Err("the fatal error is not in the journal".to_owned());
    }
    let mut problems = Vec::new();
    for run in &runs {
        let of_run: Vec<&JournalEntry> = lines.iter().filter(|e| e.invocation == *run).collect();
        if of_run.len() != 1 || of_run[0].priority != 3 {
            problems.push(format!(
                "one run logged the fatal error {} times, at priorities {:?}: {:?}",
                of_run.len(),
                priorities(&of_run),
                of_run.iter().map(|e| &e.message).collect::<Vec<_>>()
            ));
            break;
        }
    }
    let summary = format!(
        "regent@d (node 9, not a member): {state}, exit status {status}, {restarts} restarts, {} runs",
        runs.len()
    );
    if problems.is_empty() {
        Ok(format!("{summary}, each logged the error once at 3"))
    } else {
        Err(format!("{summary}; {}", problems.join("; ")))
    }
}

/// A time span as systemctl shows one: `5s`, `1min 30s`, `500ms`, `0`.
fn timespan(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for word in text.split_whitespace() {
        let split = word
            .find(|ch: char| !ch.is_ascii_digit() && ch != '.')
            .unwrap_or(word.len());
        let (number, unit) = word.split_at(split);
        let number: f64 = number.parse().ok()?;
        let seconds = match unit {
            "" | "s" => 1.0,
            "us" | "\u{b5}s" => 1e-6,
            "ms" => 1e-3,
            "min" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * seconds);
    }
    Some(total)
}

fn priorities(entries: &[&JournalEntry]) -> Vec<u8> {
    let mut p: Vec<u8> = entries.iter().map(|e| e.priority).collect();
    p.sort_unstable();
    p.dedup();
    p
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// What to look at when a check failed: the hook log and the units' journal.
fn diagnostics(c: &Container) -> String {
    let journal = c.run(&[
        "journalctl",
        "--no-pager",
        "-o",
        "short-monotonic",
        "-u",
        "regent*",
    ]);
    format!(
        "--- hook log\n{}--- journal of regent*\n{}",
        c.read(HOOK_LOG),
        String::from_utf8_lossy(&journal.stdout)
    )
}
