//! A Debian root booted with a real systemd as its PID 1, for tests that
//! need what an operator's host has: `debootstrap` builds the root, and
//! `systemd-nspawn -b` boots it; commands run inside through `nsenter`.
//!
//! Include it from an integration test with
//! `#[path = "nspawn/mod.rs"] mod nspawn;`.
//!
//! The root is built once and kept (under `target/`): [`Root::ensure`]
//! reuses a complete one built with the same package list, and builds a new
//! one in a temporary directory that is renamed only once debootstrap has
//! finished, so an interrupted build is never taken for a complete one.
//! Every boot is volatile (`--volatile=overlay`): what a test writes goes to
//! a tmpfs over the root and is gone when the container stops, so the kept
//! root stays as debootstrap left it and every run starts from the same one.
//!
//! Architecture Invariant: a container has a private network with only
//! loopback, so nothing it does reaches the host's or anyone else's
//! network; nothing is written to the host outside the root's directory
//! and the console log; and a [`Container`] is stopped when it drops, a
//! panicking test included. Its nspawn also gets SIGTERM when the thread
//! that booted it dies, so a test killed mid-way does not leave it running.
//! The mirror debootstrap fetches from is the host's own Debian mirror, read
//! from its APT sources at run time.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Marks a complete root; holds what it was built from, so that a root
/// built from another package list is rebuilt rather than reused.
const MARKER: &str = ".regent-test-root";

/// The PATH of every command run inside a container.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A complete Debian root directory.
#[derive(Debug)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// The root at `dir`, with systemd and `packages` installed: reused if
    /// a complete root with the same list is there, else built (a couple
    /// of minutes, most of it downloading). Panics, with debootstrap's log,
    /// if the build fails.
    pub fn ensure(dir: &Path, packages: &[String]) -> Root {
        let (suite, mirror) = host_mirror();
        let mut include = vec!["systemd".to_owned()];
        for p in packages {
            if !include.contains(p) {
                include.push(p.clone());
            }
        }
        let recipe = format!(
            "suite {suite}\nvariant minbase\ninclude {}\n",
            include.join(",")
        );
        if fs::read_to_string(dir.join(MARKER)).ok().as_deref() == Some(recipe.as_str()) {
            eprintln!("nspawn: reusing the root {}", dir.display());
            return Root {
                dir: dir.to_owned(),
            };
        }
        sweep_partial_builds(dir);
        let temp = partial_dir(dir, std::process::id());
        remove_tree(&temp);
        let log_path = PathBuf::from(format!("{}.log", temp.display()));
        let log = File::create(&log_path).expect("debootstrap log");
        eprintln!(
            "nspawn: building {} with debootstrap ({suite} from {mirror}, with {}); log in {}",
            dir.display(),
            include.join(","),
            log_path.display()
        );
        let started = Instant::now();
        let status = Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", include.join(",")))
            .arg(&suite)
            .arg(&temp)
            .arg(&mirror)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .status()
            .expect("run debootstrap");
        if !status.success() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            remove_tree(&temp);
            panic!(
                "debootstrap {suite} {mirror} failed ({status}); the end of {}:\n{}",
                log_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        fs::write(temp.join(MARKER), &recipe).expect("write the root's marker");
        remove_tree(dir);
        fs::rename(&temp, dir).expect("move the new root into place");
        let _ = fs::remove_file(&log_path);
        eprintln!(
            "nspawn: root built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Root {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Where the build of `dir` by process `pid` happens; its log is beside
/// it, with `.log` added.
fn partial_dir(dir: &Path, pid: u32) -> PathBuf {
    let name = dir
        .file_name()
        .expect("the root has a name")
        .to_string_lossy();
    dir.with_file_name(format!("{name}.partial.{pid}"))
}

/// Removes the partial roots that processes no longer running left behind
/// (a run killed during debootstrap); a live process's build is left alone.
fn sweep_partial_builds(dir: &Path) {
    let name = dir
        .file_name()
        .expect("the root has a name")
        .to_string_lossy();
    let prefix = format!("{name}.partial.");
    let Some(parent) = dir.parent() else { return };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Ok(pid) = pid.trim_end_matches(".log").parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("nspawn: removing {file}, left over by dead process {pid}");
            remove_tree(&entry.path());
        }
    }
}

/// Removes a directory tree, first detaching anything mounted inside it
/// (an interrupted debootstrap leaves its /proc mounted), and never
/// crossing into another file system.
fn remove_tree(path: &Path) {
    if !path.exists() {
        return;
    }
    if path.is_file() {
        let _ = fs::remove_file(path);
        return;
    }
    let prefix = format!("{}/", path.display());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut inside: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    // Deepest first.
    inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in inside {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
    let status = Command::new("rm")
        .args(["-rf", "--one-file-system"])
        .arg(path)
        .status()
        .expect("run rm");
    assert!(status.success(), "cannot remove {}", path.display());
}

/// The host's Debian suite (its codename) and the mirror its APT sources
/// name for it, for debootstrap to fetch the same release from.
fn host_mirror() -> (String, String) {
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let suite = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .expect("/etc/os-release names no VERSION_CODENAME: this test needs a Debian host");
    let mut sources: Vec<PathBuf> = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        sources.extend(more);
    }
    for path in sources {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let found = if path.extension().is_some_and(|e| e == "sources") {
            deb822_mirror(&text, &suite)
        } else {
            one_line_mirror(&text, &suite)
        };
        if let Some(mirror) = found {
            return (suite, mirror);
        }
    }
    panic!("no APT source offers `deb ... {suite} main`: debootstrap needs a Debian mirror");
}

/// The first `deb` URI in one-line format (`deb [opts] URI SUITE COMPONENTS`)
/// that carries `suite` with `main`.
fn one_line_mirror(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            return None;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        match rest.as_slice() {
            [uri, s, components @ ..] if *s == suite && components.contains(&"main") => {
                Some((*uri).to_owned())
            }
            _ => None,
        }
    })
}

/// The first URI of a deb822 stanza (`Types: deb`, `URIs:`, `Suites:`,
/// `Components:`) that carries `suite` with `main`.
fn deb822_mirror(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| -> Vec<String> {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.to_owned())
                })
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let ok = field("Types").iter().any(|t| t == "deb")
            && field("Suites").iter().any(|s| s == suite)
            && field("Components").iter().any(|c| c == "main");
        if !ok {
            return None;
        }
        field("URIs").into_iter().next()
    })
}

/// A booted container: `systemd-nspawn -b` running the root's systemd.
/// Stopped, and waited for, when it drops.
#[derive(Debug)]
pub struct Container {
    name: String,
    nspawn: Child,
    /// The container's PID 1 (systemd), as the host sees it.
    leader: u32,
    console: PathBuf,
}

impl Container {
    /// Boots `root` as machine `name`, with its console written to
    /// `console`, and waits until systemd has finished starting up. Panics,
    /// with the end of the console, if it does not within a minute.
    pub fn boot(root: &Root, name: &str, console: &Path) -> Container {
        let log = File::create(console).expect("console log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("--boot")
            .arg("--directory")
            .arg(root.dir())
            .arg(format!("--machine={name}"))
            // Writes go to a tmpfs over the root, and vanish with it.
            .arg("--volatile=overlay")
            // Only loopback inside.
            .arg("--private-network")
            // Neither machined nor the host's journal are involved.
            .arg("--register=no")
            .arg("--link-journal=no")
            .arg("--console=read-only")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("console fd"))
            .stderr(log);
        if !Path::new("/run/systemd/system").exists() {
            // No systemd on the host to create a scope for the container
            // with: it stays in this process's cgroup.
            cmd.arg("--keep-unit");
        }
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches
        // no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let nspawn = cmd.spawn().expect("run systemd-nspawn");
        let mut container = Container {
            name: name.to_owned(),
            leader: 0,
            nspawn,
            console: console.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = container.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited ({status}) while booting:\n{}",
                    container.console_tail()
                );
            }
            if container.leader == 0 {
                container.leader = init_child(container.nspawn.id()).unwrap_or(0);
            }
            if container.leader != 0 {
                let out = container.run(&["systemctl", "is-system-running"]);
                let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if state == "running" || state == "degraded" {
                    return container;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting within a minute:\n{}",
                container.console_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last lines of the container's console.
    pub fn console_tail(&self) -> String {
        let text = fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(40).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A command inside the container, in all its namespaces, with a clean
    /// environment, ready to run.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(self.leader.to_string())
            .arg("--all")
            .arg("--")
            .args(argv)
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` inside the container and returns its output.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().expect("run nsenter")
    }

    /// Runs `argv` inside, panicking with its output unless it succeeds;
    /// returns its standard output.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "in the container, {argv:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `contents` to `path` inside the container, with `mode`.
    pub fn write(&self, path: &str, contents: &[u8], mode: u32) {
        let mut child = self
            .command(&[
                "sh",
                "-c",
                "umask 077 && cat > \"$1\" && chmod \"$2\" \"$1\"",
                "sh",
                path,
                &format!("{mode:o}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nsenter");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(contents)
            .expect("write to the container");
        let out = child.wait_with_output().expect("wait for nsenter");
        assert!(
            out.status.success(),
            "cannot write {path} in the container: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The contents of `path` inside the container; empty if it is missing.
    pub fn read(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.run(&["cat", path]).stdout).into_owned()
    }

    /// Stops the container: an orderly power-off first (nspawn turns
    /// SIGTERM into one), then SIGKILL to its PID 1, which ends every
    /// process inside, then to nspawn itself.
    fn stop(&mut self) {
        let nspawn = self.nspawn.id();
        let steps: [(u32, libc::c_int, u64); 3] = [
            (nspawn, libc::SIGTERM, 20),
            (self.leader, libc::SIGKILL, 10),
            (nspawn, libc::SIGKILL, 10),
        ];
        for (pid, signal, wait_s) in steps {
            if pid == 0 {
                continue;
            }
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                return;
            }
            if signal == libc::SIGKILL {
                eprintln!(
                    "nspawn: {} did not stop, sending SIGKILL to {pid}",
                    self.name
                );
            }
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // this container's nspawn or its PID 1, and nspawn has not been
            // reaped (try_wait above), so neither pid can have been reused.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
            let deadline = Instant::now() + Duration::from_secs(wait_s);
            while Instant::now() < deadline {
                if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.nspawn.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One journal entry, as `journalctl -o json` gives it.
#[derive(Clone, Debug)]
pub struct JournalEntry {
    /// The syslog priority: 3 error, 4 warning, 5 notice, 6 info, 7 debug.
    pub priority: u8,
    pub message: String,
    /// `SYSLOG_IDENTIFIER`: `regent` for the daemon's (and its guard's)
    /// standard error, `systemd` for the service manager's own lines.
    pub identifier: String,
    /// `_SYSTEMD_INVOCATION_ID`: one run of the unit; empty for lines
    /// systemd itself logs about the unit.
    pub invocation: String,
    /// `_PID`: the process that logged the line.
    pub pid: String,
}

impl Container {
    /// Every journal entry about `unit`, oldest first.
    pub fn journal(&self, unit: &str) -> Vec<JournalEntry> {
        // The journal is written asynchronously: let it take in what was
        // logged up to now.
        let _ = self.run(&["journalctl", "--sync"]);
        let out = self.ok(&["journalctl", "--no-pager", "-o", "json", "-u", unit]);
        out.lines()
            .filter_map(|line| {
                let fields = flat_json(line)?;
                let text = |k: &str| fields.get(k).cloned().unwrap_or_default();
                Some(JournalEntry {
                    priority: text("PRIORITY").parse().unwrap_or(255),
                    message: text("MESSAGE"),
                    identifier: text("SYSLOG_IDENTIFIER"),
                    invocation: text("_SYSTEMD_INVOCATION_ID"),
                    pid: text("_PID"),
                })
            })
            .collect()
    }
}

/// The fields of a flat JSON object (a journal entry): strings, numbers and
/// null as text, an array of numbers (a field that is not valid UTF-8) as
/// the bytes it holds; `None` if `line` is not such an object.
fn flat_json(line: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let mut fields = std::collections::BTreeMap::new();
    let mut chars = line.trim().chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    fn string(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<String> {
        let mut s = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(s),
                '\\' => match chars.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let unit = u32::from_str_radix(&hex, 16).ok()?;
                        s.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
                    }
                    c => s.push(c),
                },
                c => s.push(c),
            }
        }
    }
    if chars.next()? != '{' {
        return None;
    }
    loop {
        skip_ws(&mut chars);
        match chars.next()? {
            '}' => return Some(fields),
            ',' => continue,
            '"' => {}
            _ => return None,
        }
        let key = string(&mut chars)?;
        skip_ws(&mut chars);
        if chars.next()? != ':' {
            return None;
        }
        skip_ws(&mut chars);
        let value = match chars.peek()? {
            '"' => {
                chars.next();
                string(&mut chars)?
            }
            '[' => {
                let raw: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let bytes: Vec<u8> = raw[1..]
                    .split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => {
                let mut raw = String::new();
                while chars.peek().is_some_and(|&c| c != ',' && c != '}') {
                    raw.push(chars.next()?);
                }
                raw.trim().to_owned()
            }
        };
        fields.insert(key, value);
    }
}

/// The container's PID 1: the child of nspawn that runs systemd in a PID
/// namespace of its own.
fn init_child(nspawn: u32) -> Option<u32> {
    let own = fs::read_link("/proc/self/ns/pid").ok()?;
    let children = fs::read_dir("/proc").ok()?.flatten().filter_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command's closing parenthesis: state, ppid.
        let after = &stat[stat.rfind(')')? + 1..];
        let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == nspawn).then_some(pid)
    });
    for pid in children {
        let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if ns != own && comm.trim() == "systemd" {
            return Some(pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_both_source_formats() {
        let one_line = "# comment\ndeb-src http://a/debian bookworm main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://b/debian bookworm main contrib\n";
        assert_eq!(
            one_line_mirror(one_line, "bookworm").as_deref(),
            Some("http://b/debian")
        );
        assert_eq!(one_line_mirror(one_line, "trixie"), None);
        let deb822 = "Types: deb\nURIs: http://c/debian-security\nSuites: bookworm-security\n\
                      Components: main\n\nTypes: deb\n# note\nURIs: http://d/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            deb822_mirror(deb822, "bookworm").as_deref(),
            Some("http://d/debian")
        );
    }

    #[test]
    fn journal_json_fields() {
        let line =
            r#"{"PRIORITY":"3","MESSAGE":"a \"b\"\n\u00e9","_PID":"7","RAW":[104,105],"N":null}"#;
        let f = flat_json(line).expect("parses");
        assert_eq!(f["PRIORITY"], "3");
        assert_eq!(f["MESSAGE"], "a \"b\"\n\u{e9}");
        assert_eq!(f["RAW"], "hi");
        assert_eq!(f["N"], "null");
        assert!(flat_json("not json").is_none());
    }
}
