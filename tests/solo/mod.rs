//! One `regent run` daemon alone on loopback (a one-member cluster, which
//! elects itself): no root and no namespaces. For tests of what a host does
//! to its own daemon: its state file, its hooks.
//!
//! Include it with `#[path = "solo/mod.rs"] mod solo;`.

#![allow(dead_code, clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The key every solo daemon uses.
pub const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A daemon's files in a directory of their own, and the daemon once started.
pub struct Solo {
    pub dir: PathBuf,
    pub child: Option<Child>,
    port: u16,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_regent")
}

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

impl Solo {
    /// Files for a daemon named `name`, initialised with `regent init`; the
    /// hook logs `$1 $2` to `hooks.log`.
    pub fn new(name: &str) -> Solo {
        let dir = std::env::temp_dir().join(format!("regent-solo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let solo = Solo {
            dir,
            child: None,
            port: free_port(),
        };
        let key = solo.dir.join("key");
        std::fs::write(&key, format!("{KEY}\n")).expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        solo.write_hook(&format!(
            "echo \"$1 $2\" >> {}",
            solo.dir.join("hooks.log").display()
        ));
        solo.write_config("");
        solo.init();
        solo
    }

    /// Runs `regent init`, as an operator does once the configuration is
    /// written; panics if it fails.
    pub fn init(&self) {
        let out = Command::new(bin())
            .args(["init", "-c"])
            .arg(self.config())
            .output()
            .expect("run regent init");
        assert!(
            out.status.success(),
            "regent init: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Replaces the hook's body (a `/bin/sh` script).
    pub fn write_hook(&self, body: &str) {
        let hook = self.hook();
        std::fs::write(&hook, format!("#!/bin/sh\n{body}\n")).expect("hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    pub fn hook(&self) -> PathBuf {
        self.dir.join("hook")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("regent.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `<state dir>/solo.state`.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("solo.state")
    }

    /// Writes the configuration, with `hooks_extra` added to `[hooks]`.
    pub fn write_config(&self, hooks_extra: &str) {
        let text = format!(
            "cluster = \"solo\"\nnode = 1\n\n[[member]]\nid = 1\naddress = \"127.0.0.1\"\n\n\
             [network]\nport = {port}\nbind = \"127.0.0.1\"\n\n[timing]\nheartbeat_ms = 100\n\
             dead_after_ms = 300\n\n[hooks]\npromote = \"{h}\"\ndemote = \"{h}\"\n{hooks_extra}\n\n\
             [auth]\nkey_file = \"{k}\"\n\n[state]\ndir = \"{st}\"\n\n[control]\nsocket = \"{so}\"\n\n\
             [log]\nlevel = \"debug\"\n",
            port = self.port,
            h = self.hook().display(),
            k = self.dir.join("key").display(),
            st = self.state_dir().display(),
            so = self.socket().display(),
        );
        std::fs::write(self.config(), text).expect("config");
    }

    /// Starts `regent run`, its output going to `daemon.log`.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("log");
        let child = Command::new(bin())
            .args(["run", "-c"])
            .arg(self.config())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start regent");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// VmRSS of the daemon in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits up to `limit` for the daemon to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn hooks_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("hooks.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
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

    /// One sample of the metrics with `label` among its labels, if given.
    pub fn metric(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        let (ok, text) = self.ctl(&["metrics"]);
        if !ok {
            return None;
        }
        let label = label.map(|(k, v)| format!("{k}=\"{v}\""));
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .find(|l| label.as_ref().map_or(true, |w| l.contains(w.as_str())))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Whether the daemon says it leads.
    pub fn leading(&self) -> bool {
        let (ok, json) = self.ctl(&["status", "--json"]);
        ok && json.contains("\"role\":\"leader\"")
    }
}

impl Drop for Solo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
