//! `regent reload`, which the units' `ExecReload=` runs: the daemon reads
//! its file again and answers with the verdict, so that `systemctl reload`
//! fails when the daemon refuses the file. A good edit is applied and the
//! answer says what changed; a file that does not parse, does not validate
//! or changes what only a restart applies is refused with its line, exit 1,
//! and the daemon runs on with the configuration it had. `--pid` reaches
//! the daemon even when the file names another socket by now.
//!
//! One daemon alone on loopback: no root, no namespaces.

#![allow(clippy::disallowed_methods)]

#[path = "solo/mod.rs"]
mod solo;

use std::process::Command;
use std::time::Duration;

use solo::{bin, wait_until, Solo};

/// `regent reload` with `args`; (exit code, stdout, stderr).
fn reload(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .arg("reload")
        .args(args)
        .output()
        .expect("regent reload");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `regent reload` with `args` and its output in a file that
/// `JOURNAL_STREAM` names, as under a unit's `ExecReload=`; (exit code,
/// what it wrote).
fn reload_in_journal(solo: &Solo, args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    use std::os::unix::fs::MetadataExt;
    let path = solo.dir.join("journal");
    let journal = std::fs::File::create(&path).expect("journal");
    let meta = journal.metadata().expect("stat");
    let status = Command::new(bin())
        .arg("reload")
        .args(args)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(journal.try_clone().expect("journal"))
        .stderr(journal)
        .status()
        .expect("regent reload");
    (
        status.code(),
        std::fs::read_to_string(&path).expect("journal"),
    )
}

#[test]
fn reload_answers_with_the_daemons_verdict() {
    let mut solo = Solo::new("reload-verdict");
    solo.start();
    assert!(
        wait_until(Duration::from_secs(10), || solo.leading()),
        "no leader\n{}",
        solo.log()
    );
    let socket = solo.socket();
    let by_socket = ["--socket".as_ref(), socket.as_os_str()];
    let config = solo.config();
    let by_config = ["-c".as_ref(), config.as_os_str()];
    let file = |text: &str| std::fs::write(&config, text).expect("write");

    // A good edit: applied, and the answer names the change.
    solo.write_config("timeout_ms = 5000");
    let good = std::fs::read_to_string(solo.config()).expect("config");
    let (code, out, err) = reload(&by_socket);
    println!("regent reload, a good edit: exit {code:?}\n{out}");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("reloaded ") && out.contains("hooks.timeout_ms: 10000 -> 5000"),
        "{out}"
    );
    // Found through the file too; the daemon now runs with 5000.
    let (code, out, err) = reload(&by_config);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing changed"), "{out}");

    // Changing the cluster needs a restart: refused, at its line.
    file(&good.replace("cluster = \"solo\"", "cluster = \"other\""));
    let (code, out, err) = reload(&by_socket);
    println!("regent reload, cluster changed: exit {code:?}\n{err}");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("reload refused, the running configuration stays")
            && err.contains("regent.toml:1: cluster changed from \"solo\" to \"other\"")
            && err.contains("only a restart applies this"),
        "{err}"
    );

    // The default control socket follows the cluster's name, so after such
    // an edit the file names another socket: by its pid (`$MAINPID` in the
    // units), the daemon is still reached, and refuses.
    file(&good.replace(&format!("socket = \"{}\"", socket.display()), ""));
    let (code, out, err) = reload(&by_config);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("cannot reach regent at /run/regent/solo.sock"),
        "{err}"
    );
    let pid = solo.pid().expect("pid").to_string();
    let (code, out, err) = reload(&["--pid".as_ref(), pid.as_ref()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("reload refused")
            && err.contains(&format!(
                "control.socket (not set, so its default) changed from \"{}\" to \
                 \"/run/regent/solo.sock\"",
                socket.display()
            )),
        "{err}"
    );
    // Run by a unit, its output goes to the journal, where the daemon has
    // logged the verdict already: only the exit status tells it.
    let (code, said) = reload_in_journal(&solo, &["--pid".as_ref(), pid.as_ref()]);
    assert_eq!((code, said.as_str()), (Some(1), ""), "{said}");

    // A syntax error: refused by the daemon, with the line.
    file(&good.replace("node = 1", "node = "));
    let (code, _, err) = reload(&by_socket);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("reload refused") && err.contains("regent.toml:2:"),
        "{err}"
    );
    // Found through the file, a file that is not TOML is named by the CLI,
    // which sends nothing.
    let (code, _, err) = reload(&by_config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("regent.toml:2:") && err.contains("nothing was sent to the daemon"),
        "{err}"
    );

    // A value out of range, through the file: the daemon refuses it.
    file(&good.replace("dead_after_ms = 300", "dead_after_ms = 150"));
    let (code, _, err) = reload(&by_config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("reload refused") && err.contains("regent.toml:14:"),
        "{err}"
    );

    // The daemon ran on, leading, with the configuration of the good edit.
    assert!(
        solo.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none()),
        "the daemon exited\n{}",
        solo.log()
    );
    assert!(solo.leading(), "{}", solo.log());
    file(&good);
    let (code, out, err) = reload(&by_socket);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing changed"), "{out}");
    let (code, said) = reload_in_journal(&solo, &by_socket);
    assert_eq!((code, said.as_str()), (Some(0), ""), "{said}");
    let (ok, json) = solo.ctl(&["status", "--json"]);
    assert!(ok && json.contains("\"epoch\":1"), "{json}");
    assert!(solo.log().contains("reload refused"), "{}", solo.log());
}
