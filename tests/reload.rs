//! `regent reload`, which the units' `ExecReload=` runs: the daemon reads
//! its file again and answers with the verdict, so that `systemctl reload`
//! fails when the daemon refuses the file. A good edit is applied and the
//! answer says what changed; a file that does not parse, does not validate
//! or changes what only a restart applies is refused with its line, exit 1,
//! and the daemon runs on with the configuration it had. `--pid` reaches
//! the daemon even when the file names another socket by now. A change of
//! keys is applied at once, in what the daemon sends and accepts. A member
//! list the cluster cannot take is refused by the core with its reason,
//! which `regent check` warns of beforehand.
//!
//! One daemon alone on loopback: no root, no namespaces.

#![allow(clippy::disallowed_methods)]

#[path = "solo/mod.rs"]
mod solo;

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use regentd::core::{Body, Epoch, Incarnation, Message, NodeId, Seq};
use regentd::wire::{Codec, KeyId};
use solo::{bin, wait_until, Solo, KEY};

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

/// `regent check -c FILE`; (exit code, stdout, stderr).
fn check(config: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(config)
        .output()
        .expect("regent check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A member list the cluster cannot take now: a one-member cluster growing
/// to two would need both for a quorum, and the newcomer is not linked yet.
/// `regent check` shows the file's list beside the daemon's and warns; the
/// reload passes the config layer and is refused by the core, whose reason
/// reaches the caller; the daemon keeps its list and its leadership. A list
/// changed without its generation is refused at the config layer, at the
/// line of the table added. Without a daemon, `regent check` says so.
#[test]
fn a_member_list_the_cluster_cannot_take_is_warned_of_and_refused() {
    let mut solo = Solo::new("reload-members");
    let config = solo.config();
    let one = std::fs::read_to_string(&config).expect("config");

    let (code, out, err) = check(&config);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "\ngeneration 1: members 1 (quorum 1 of 1)\nrunning: no daemon runs for this file"
        ),
        "{out}"
    );

    solo.start();
    assert!(
        wait_until(Duration::from_secs(10), || solo.leading()),
        "no leader\n{}",
        solo.log()
    );
    let newcomer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = newcomer.local_addr().expect("addr").port();
    let with_2 = one.replace(
        "[network]",
        &format!("[[member]]\nid = 2\naddress = \"127.0.0.1\"\nport = {port}\n\n[network]"),
    );
    let two = format!("generation = 2\n{with_2}");
    std::fs::write(&config, &two).expect("write");
    let (code, out, err) = check(&config);
    println!("regent check, member 2 added:\n{out}{err}");
    assert_eq!(
        code,
        Some(0),
        "a valid file, whatever the daemon makes of it\n{out}{err}"
    );
    for line in [
        "generation 2: members 1, 2 (quorum 2 of 2)",
        "running: generation 1, members 1 (quorum 1 of 1), 1 linked",
        "after: quorum 2 of 2; 1 of the new list are linked now",
        "warning: the new list would leave no live quorum: 1 of its 2 members are linked \
         now, 2 are needed: the daemon would refuse this reload",
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in\n{out}");
    }

    let socket = solo.socket();
    let by_socket = ["--socket".as_ref(), socket.as_os_str()];
    let (code, out, err) = reload(&by_socket);
    println!("regent reload, member 2 added: exit {code:?}\n{err}");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!(
            "reload refused, the running configuration stays:\n{}: the new list would leave \
             no live quorum: 1 of its 2 members are linked with this node, 2 are needed",
            config.display()
        )),
        "{err}"
    );
    let (ok, json) = solo.ctl(&["status", "--json"]);
    assert!(
        ok && json.contains("\"membership\":{\"generation\":1,") && json.contains("\"quorum\":1,"),
        "{json}"
    );
    assert!(solo.leading(), "{}", solo.log());

    // Without the generation: the config layer names the table added.
    std::fs::write(&config, &with_2).expect("write");
    let (code, out, err) = reload(&by_socket);
    assert_eq!(code, Some(1), "{out}{err}");
    let line = with_2
        .lines()
        .position(|l| l == "id = 2")
        .expect("member 2's table");
    assert!(
        err.contains(&format!(
            "regent.toml:{line}: the [[member]] list changed (members 2), so generation must \
             go from 1 to 2, not 1"
        )),
        "{err}"
    );
    let (code, out, _) = check(&config);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("warning: the member list changes (members 2), so generation must go from 1 to 2, not 1"),
        "{out}"
    );

    std::fs::write(&config, &one).expect("write");
    let (code, out, err) = reload(&by_socket);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing changed"), "{out}");
    let (_, out, _) = check(&config);
    assert!(
        out.contains("running: generation 1, members 1 (quorum 1 of 1), 1 linked\nafter: no change of the member list\n"),
        "{out}"
    );
    assert!(solo.leading(), "{}", solo.log());
}

/// The key a rotation moves to, as key id 1.
const NEW_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

/// Waits for the next datagram the daemon sends to `peer` after every one
/// already queued: sent with the configuration in force now.
fn next_datagram(peer: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    peer.set_nonblocking(true).expect("nonblocking");
    while peer.recv(&mut buf).is_ok() {}
    peer.set_nonblocking(false).expect("blocking");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let n = peer.recv(&mut buf).expect("a heartbeat within 2 s");
    buf[..n].to_vec()
}

/// A key rotation as the daemon lives it, one reload per step: the new key
/// accepted, then sent with, then the old one removed. What it sends is
/// caught by the test posing as member 2; what it accepts is told by what
/// it does with datagrams of an unknown node 9 under each key: those that
/// pass the key checks are dropped as `unknown_node`, the others as
/// `unknown_key`.
#[test]
fn a_reload_changes_the_keys_sent_with_and_accepted() {
    let mut solo = Solo::new("reload-keys");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let peer_port = peer.local_addr().expect("addr").port();
    let config = solo.config();
    let single = std::fs::read_to_string(&config).expect("config");
    let daemon_port: u16 = single
        .lines()
        .find_map(|l| l.strip_prefix("port = "))
        .and_then(|p| p.parse().ok())
        .expect("the solo config's port");
    // Member 2 is the test's socket; the daemon heartbeats to it. Without
    // it there is no quorum, which a reload of keys does not need.
    let single = single.replace(
        "[network]",
        &format!("[[member]]\nid = 2\naddress = \"127.0.0.1\"\nport = {peer_port}\n\n[network]"),
    );
    let old_file = solo.dir.join("key");
    let new_file = solo.dir.join("key.new");
    std::fs::write(&new_file, NEW_KEY).expect("key");
    std::fs::set_permissions(&new_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (old, new) = (old_file.display(), new_file.display());
    let key_line = format!("key_file = \"{old}\"\n");
    assert_eq!(single.matches(&key_line).count(), 1, "{single}");
    let with_auth = |auth: &str| {
        std::fs::write(&config, single.replace(&key_line, auth)).expect("write");
    };
    with_auth(&format!("key_file = \"{old}\"\n"));
    solo.start();

    let socket = solo.socket();
    let by_socket = ["--socket".as_ref(), socket.as_os_str()];
    let old_codec = Codec::new("solo", Some(KEY.as_bytes()));
    let new_codec = Codec::with_keys("solo", (KeyId(1), NEW_KEY), &[]);
    let mut seq = 0;
    // Sends node 9's next message under `codec`.
    let mut inject = |codec: &Codec| {
        seq += 1;
        let m = Message {
            from: NodeId(9),
            incarnation: Incarnation(1),
            seq: Seq(seq),
            priority: 1,
            known_epoch: Epoch(0),
            membership: Default::default(),
            body: Body::Election,
        };
        let bytes = codec.encode(&m).expect("fits");
        peer.send_to(&bytes, ("127.0.0.1", daemon_port))
            .expect("send");
    };
    let dropped = |reason: &str| {
        solo.metric("regent_packets_dropped_total", Some(("reason", reason)))
            .unwrap_or(-1.0)
    };
    // Waits until the drops counted as `unknown_node` and `unknown_key` are
    // `want`; returns what they were at the end.
    let counts = |want: (f64, f64)| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = (dropped("unknown_node"), dropped("unknown_key"));
            if got == want || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), || dropped("unknown_key") == 0.0),
        "the daemon does not answer\n{}",
        solo.log()
    );

    // Before: one key, id 0, sent as version 1; key id 1 is unknown.
    let sent = next_datagram(&peer);
    assert_eq!(sent[0], 1, "version 1 with a single key");
    assert!(old_codec.decode(&sent).is_ok());
    inject(&new_codec);
    assert_eq!(counts((0.0, 1.0)), (0.0, 1.0), "{}", solo.log());

    // Step 1: the new key accepted, the old one still sent with.
    with_auth(&format!(
        "key_file = \"{old}\"\n\n[[auth.accept]]\nid = 1\nkey_file = \"{new}\"\n"
    ));
    let (code, out, err) = reload(&by_socket);
    println!("step 1, accept the new key: exit {code:?}\n{out}");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("auth.accept id 1: none -> \"{new}\"")),
        "{out}"
    );
    inject(&new_codec);
    inject(&old_codec);
    assert_eq!(counts((2.0, 1.0)), (2.0, 1.0), "{}", solo.log());
    let sent = next_datagram(&peer);
    assert_eq!(sent[0], 1, "still version 1 with key id 0");
    assert!(old_codec.decode(&sent).is_ok());

    // Step 2: sent with the new key, id 1; the old one accepted.
    with_auth(&format!(
        "key_file = \"{new}\"\nkey_id = 1\n\n[[auth.accept]]\nid = 0\nkey_file = \"{old}\"\n"
    ));
    let (code, out, err) = reload(&by_socket);
    println!("step 2, send with the new key: exit {code:?}\n{out}");
    assert_eq!(code, Some(0), "{out}{err}");
    for change in [
        format!("auth.key_file: \"{old}\" -> \"{new}\""),
        "auth.key_id: 0 -> 1".to_owned(),
        format!("auth.accept id 0: none -> \"{old}\""),
        format!("auth.accept id 1: \"{new}\" -> none"),
    ] {
        assert!(out.contains(&change), "{change:?} not in\n{out}");
    }
    let sent = next_datagram(&peer);
    assert_eq!(&sent[..2], &[2, 1], "version 2, key id 1");
    assert!(new_codec.decode(&sent).is_ok());
    assert!(old_codec.decode(&sent).is_err());
    inject(&old_codec);
    inject(&new_codec);
    assert_eq!(counts((4.0, 1.0)), (4.0, 1.0), "{}", solo.log());

    // Step 3: the old key removed; its datagrams are unknown now.
    with_auth(&format!("key_file = \"{new}\"\nkey_id = 1\n"));
    let (code, out, err) = reload(&by_socket);
    println!("step 3, remove the old key: exit {code:?}\n{out}");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("auth.accept id 0: \"{old}\" -> none")),
        "{out}"
    );
    inject(&old_codec);
    inject(&new_codec);
    assert_eq!(counts((5.0, 2.0)), (5.0, 2.0), "{}", solo.log());
    let sent = next_datagram(&peer);
    assert_eq!(&sent[..2], &[2, 1]);
    assert!(new_codec.decode(&sent).is_ok());

    // No verdict, and no log line, shows a key's bytes.
    let log = solo.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    for key in [KEY, std::str::from_utf8(NEW_KEY).expect("ascii")] {
        assert!(!log.contains(key), "a key in the log\n{log}");
    }
}
