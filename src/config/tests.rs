//! Whole-config tests: a file in, a `Config` or every error out. They go
//! through the public entry points only (`Config::parse`, `Config::load`,
//! `check_command`), so they keep holding wherever a rule moves inside
//! `config/`. Disk checks run against files in a temporary directory of
//! their own; nothing else on the machine is written.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::wire::KeyId;

/// Joins lines into a file, so that a case's line numbers are its indices + 1.
fn lines(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("regent.toml"), DiskChecks::Skip)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(config) => panic!("expected errors, got {config:?}\n--- from\n{text}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

/// Valid head of a file: 7 lines, two members, multicast, insecure.
const HEAD: [&str; 7] = [
    "cluster = \"t\"",
    "node = 1",
    "auth.insecure = true",
    "[[member]]",
    "id = 1",
    "[[member]]",
    "id = 2",
];
/// On loopback, which every host has: tests with disk checks look it up.
const MULTICAST: [&str; 3] = [
    "[network]",
    "multicast = \"239.1.1.1:7475\"",
    "interface = \"lo\"",
];

fn head_and(rest: &[&str]) -> String {
    let mut all: Vec<&str> = HEAD.to_vec();
    all.extend_from_slice(rest);
    lines(&all)
}

fn multicast_and(rest: &[&str]) -> String {
    let mut all: Vec<&str> = HEAD.to_vec();
    all.extend_from_slice(&MULTICAST);
    all.extend_from_slice(rest);
    lines(&all)
}

/// Valid head of a file with a key: 11 lines, two members, multicast,
/// ending inside [auth], so that the rest can add to it.
const KEYED: [&str; 11] = [
    "cluster = \"t\"",
    "node = 1",
    "[[member]]",
    "id = 1",
    "[[member]]",
    "id = 2",
    "[network]",
    "multicast = \"239.1.1.1:7475\"",
    "interface = \"lo\"",
    "[auth]",
    "key_file = \"/etc/regent/key\"",
];

fn keyed_and(rest: &[&str]) -> String {
    let mut all: Vec<&str> = KEYED.to_vec();
    all.extend_from_slice(rest);
    lines(&all)
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("regent-config-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write temp file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn broken_configs_give_precise_errors() {
    let too_many: String = {
        let mut t = String::from("cluster = \"t\"\nnode = 1\nauth.insecure = true\nnetwork.multicast = \"239.1.1.1:1\"\nnetwork.interface = \"lo\"\n");
        for id in 1..=65 {
            t.push_str(&format!("[[member]]\nid = {id}\n"));
        }
        t
    };
    let long_socket = format!("socket = \"/run/{}\"", "s".repeat(110));
    // (file, expected line, a substring of the message)
    #[rustfmt::skip]
    let cases: Vec<(String, Option<usize>, &str)> = vec![
        // Syntax: the parser's first error, after which nothing is read.
        (lines(&["cluster = \"t"]), Some(1), "string"),
        (head_and(&["[timing", "heartbeat_ms = 5"]), Some(8), "expected `]`"),
        // Unknown keys, types and ranges: each key named, with what it takes.
        (head_and(&["[timing]", "heartbeat = 100"]), Some(9),
            "timing.heartbeat: unknown key; [timing] has heartbeat_ms, dead_after_ms, lease_margin_ms, \
             max_drift_ppm"),
        (lines(&["colour = \"red\""]), Some(1),
            "colour: unknown key; the top level has cluster, node, priority, generation, [[member]], \
             [network], [timing], [election], [hooks], [auth], [state], [control], [log]"),
        (head_and(&["colour = \"red\""]), Some(8), "member.colour: unknown key; [[member]] has id, address, port"),
        (head_and(&["[[member]]", "id = 3", "adress = \"10.0.0.3\""]), Some(10), "member.adress: unknown key"),
        (head_and(&["[timing.fast]", "heartbeat_ms = 5"]), Some(8), "timing.fast: unknown key"),
        (head_and(&["[timing]", "heartbeat_ms = \"100\""]), Some(9),
            "timing.heartbeat_ms: expected a whole number of milliseconds from 0 to 18446744073709551615, \
             found the string \"100\""),
        (lines(&["priority = -1"]), Some(1),
            "priority: -1 is out of range: expected a whole number from 0 to 4294967295"),
        (head_and(&["[network]", "port = 70000"]), Some(9),
            "network.port: 70000 is out of range: expected a whole number from 0 to 65535"),
        (lines(&["cluster = \"t\"", "node = 1", "[member]", "id = 1"]), Some(3),
            "member: [member] is a single table; write [[member]], once per host"),
        (lines(&["member = 1"]), Some(1), "member: expected one [[member]] table per host, found the whole number 1"),
        (lines(&["timing = 1"]), Some(1), "timing: expected a table ([timing]), found the whole number 1"),
        // The cluster and the members.
        (lines(&["node = 1", "auth.insecure = true", "[[member]]", "id = 1"]), None, "cluster is required"),
        (lines(&["cluster = \"db vip\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1"]),
            Some(1), "cluster name \"db vip\" must be 1 to 64 characters"),
        (lines(&["cluster = \"\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1"]),
            Some(1), "cluster name \"\""),
        (lines(&[&format!("cluster = \"{}\"", "a".repeat(65)), "node = 1", "auth.insecure = true", "[[member]]", "id = 1"]), Some(1), "1 to 64 characters"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true"]), None, "no [[member]] tables"),
        (lines(&["auth.insecure = true", "cluster = \"t\"", "[[member]]", "id = 1"]), None, "node is required"),
        (lines(&["cluster = \"t\"", "node = 4", "auth.insecure = true", "[[member]]", "id = 1", "[[member]]", "id = 2",
            "[[member]]", "id = 3"]),
            Some(2), "node 4 is not in the [[member]] list (ids: 1, 2, 3)"),
        (head_and(&["[[member]]", "id = 2"]), Some(9), "member id 2 appears twice (first at line 7)"),
        (head_and(&["[[member]]", "id = 0"]), Some(9),
            "member.id: 0 is out of range: expected a whole number from 1 to 65535"),
        (head_and(&["[[member]]", "id = 65536"]), Some(9), "member.id: 65536 is out of range"),
        (head_and(&["[[member]]", "address = \"10.0.0.9\""]), Some(8), "[[member]] without an id"),
        (too_many, Some(134), "65 members are too many; at most 64"),
        (head_and(&["[[member]]", "id = 3", "address = \"db3.example\""]),
            Some(10), "member 3: address \"db3.example\" is not an IP address"),
        // Multicast.
        (head_and(&["[network]", "multicast = \"10.0.0.1:7475\"", "interface = \"eth0\""]),
            Some(9), "network.multicast 10.0.0.1 is not a multicast address"),
        (head_and(&["[network]", "multicast = \"[fe80::1]:7475\"", "interface = \"eth0\""]),
            Some(9), "fe80::1 is not a multicast address"),
        (head_and(&["[network]", "multicast = \"239.1.1.1\"", "interface = \"eth0\""]),
            Some(9), "is not an address:port"),
        (head_and(&["[network]", "multicast = \"239.1.1.1:0\"", "interface = \"eth0\""]),
            Some(9), "needs a port other than 0"),
        (head_and(&["[network]", "multicast = \"239.1.1.1:7475\""]),
            Some(9), "network.multicast needs network.interface"),
        (head_and(&["[network]", "multicast = \"239.1.1.1:7475\"", "interface = \"a-very-long-ifname\""]),
            Some(10), "is not an interface name"),
        (multicast_and(&["port = 7475"]), Some(11), "network.port is for unicast only"),
        (multicast_and(&["bind = \"10.0.0.1\""]), Some(11), "network.bind is for unicast only"),
        (multicast_and(&["[[member]]", "id = 3", "port = 7000"]), Some(13), "member 3: port is for unicast only"),
        // Unicast.
        (head_and(&[]), Some(5), "member 1 has no address; without network.multicast (unicast)"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"10.0.0.1\"", "[[member]]", "id = 2", "address = \"10.0.0.1\""]),
            Some(8), "member 2 has the same address and port as member 1 (10.0.0.1:7475)"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"239.1.1.1\""]), Some(5), "member 1: address 239.1.1.1 is not a host's address"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"10.0.0.1\"", "port = 7000"]),
            Some(7), "member 1 is this node and has port 7000, but this node listens on network.port 7475"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"10.0.0.1\"", "port = 0"]), Some(7), "member 1: port 0 is not a usable port"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"10.0.0.1\"", "[network]", "interface = \"eth0\""]),
            Some(8), "network.interface is only used with network.multicast"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"10.0.0.1\"", "[network]", "multicast_loop = true"]),
            Some(8), "network.multicast_loop is only used with network.multicast"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"10.0.0.1\"", "[network]", "bind = \"eth0\""]),
            Some(8), "network.bind \"eth0\" is not an IP address"),
        (lines(&["cluster = \"t\"", "node = 1", "auth.insecure = true", "[[member]]", "id = 1",
            "address = \"10.0.0.1\"", "[network]", "port = 0"]), Some(8), "network.port 0 is not a usable port"),
        // Timing.
        (multicast_and(&["[timing]", "heartbeat_ms = 4"]),
            Some(12), "timing.heartbeat_ms = 4 is below the minimum of 5"),
        (multicast_and(&["[timing]", "heartbeat_ms = 100", "dead_after_ms = 150"]),
            Some(13), "timing.dead_after_ms = 150 must be at least 2 x timing.heartbeat_ms (200)"),
        (multicast_and(&["[timing]", "heartbeat_ms = 200"]),
            Some(12), "timing.dead_after_ms (default 300) must be at least 2 x timing.heartbeat_ms (400)"),
        (multicast_and(&["[timing]", "max_drift_ppm = 100000"]),
            Some(12), "timing.max_drift_ppm = 100000 must be below 100000"),
        (multicast_and(&["[timing]", "max_drift_ppm = 2000000"]),
            Some(12), "timing.max_drift_ppm = 2000000 must be below 100000"),
        (multicast_and(&["[timing]", "heartbeat_ms = 100", "dead_after_ms = 200", "lease_margin_ms = 100"]),
            Some(13), "raise timing.dead_after_ms to at least 230 or lower timing.lease_margin_ms"),
        (multicast_and(&["[timing]", "lease_margin_ms = 300"]),
            Some(12), "the leader's lease would be 0ms"),
        // Hooks.
        (multicast_and(&["[hooks]", "timeout_ms = 0"]), Some(12), "hooks.timeout_ms must be at least 1"),
        (multicast_and(&["[hooks]", "demote_budget_ms = 200"]),
            Some(12), "minus timing.lease_margin_ms 20 and hooks.demote_budget_ms 200"),
        (multicast_and(&["[hooks]", "check_interval_ms = 0"]), Some(12), "hooks.check_interval_ms must be at least 1"),
        (multicast_and(&["[hooks]", "check_timeout_ms = 0"]), Some(12), "hooks.check_timeout_ms must be at least 1"),
        (multicast_and(&["[hooks]", "check_fall = 0"]), Some(12), "hooks.check_fall must be at least 1"),
        (multicast_and(&["[hooks]", "check_rise = 0"]), Some(12), "hooks.check_rise must be at least 1"),
        (multicast_and(&["[hooks]", "output_max_bytes = 0"]), Some(12), "hooks.output_max_bytes must be at least 1"),
        (multicast_and(&["[hooks]", "check = []"]), Some(12), "hooks.check is an empty array"),
        (multicast_and(&["[hooks]", "check = [\"/bin/true\", 3]"]), Some(12),
            "hooks.check: expected a string in quotes, found the whole number 3"),
        (multicast_and(&["[hooks]", "check = 1"]), Some(12),
            "hooks.check: expected a path in quotes, or an array of strings (the program and its \
             arguments), found the whole number 1"),
        (multicast_and(&["[hooks]", "promote = \"\""]), Some(12), "hooks.promote must not be empty"),
        // Auth.
        (lines(&["cluster = \"t\"", "node = 1", "[[member]]", "id = 1", "[network]",
            "multicast = \"239.1.1.1:7475\"", "interface = \"lo\""]), None, "auth.key_file is required"),
        (lines(&["cluster = \"t\"", "node = 1", "network.multicast = \"239.1.1.1:7475\"",
            "network.interface = \"lo\"", "[[member]]", "id = 1", "[auth]", "insecure = true",
            "key_file = \"/etc/regent/key\""]), Some(9), "auth.key_file and auth.insecure = true are both set"),
        // Several keys: ids, their files, and the key sent with.
        (keyed_and(&["key_id = 1", "[[auth.accept]]", "id = 1", "key_file = \"/etc/regent/key.old\""]),
            Some(14), "auth.accept id 1 is the id of the key this host sends with (auth.key_id, line 12); \
             an id names one key: give the accepted key another id"),
        (keyed_and(&["[[auth.accept]]", "id = 0", "key_file = \"/etc/regent/key.new\""]),
            Some(13), "auth.accept id 0 is the id of the key this host sends with (auth.key_id is not \
             set, so 0)"),
        (keyed_and(&["[[auth.accept]]", "id = 1", "key_file = \"a\"", "[[auth.accept]]", "id = 1",
            "key_file = \"b\""]), Some(16), "auth.accept id 1 appears twice (first at line 13)"),
        (keyed_and(&["[[auth.accept]]", "key_file = \"a\""]), Some(12), "[[auth.accept]] without an id"),
        (keyed_and(&["[[auth.accept]]", "id = 1"]), Some(12),
            "auth.accept id 1: key_file is required, the file holding the key of that id"),
        (keyed_and(&["[[auth.accept]]", "id = 1", "key_file = \"\""]), Some(14),
            "auth.accept.key_file must not be empty"),
        (keyed_and(&["[auth.accept]", "id = 1"]), Some(12),
            "auth.accept: [auth.accept] is a single table; write [[auth.accept]], once per accepted key"),
        (keyed_and(&["accept = 1"]), Some(12),
            "auth.accept: expected one [[auth.accept]] table per accepted key, found the whole number 1"),
        (keyed_and(&["[[auth.accept]]", "id = 1", "file = \"a\""]), Some(14),
            "auth.accept.file: unknown key; [[auth.accept]] has id, key_file"),
        (keyed_and(&["keyid = 1"]), Some(12),
            "auth.keyid: unknown key; [auth] has key_file, key_id, [[auth.accept]], insecure"),
        (keyed_and(&["key_id = -1"]), Some(12),
            "auth.key_id: -1 is out of range: expected a whole number from 0 to 255"),
        (lines(&["cluster = \"t\"", "node = 1", "[[member]]", "id = 1", "[auth]", "insecure = true",
            "key_id = 1"]), Some(7), "auth.key_id names the key of auth.key_file, and auth.insecure = \
             true has none; remove auth.key_id or auth.insecure"),
        (lines(&["cluster = \"t\"", "node = 1", "[[member]]", "id = 1", "[auth]", "insecure = true",
            "[[auth.accept]]", "id = 1", "key_file = \"/etc/regent/key.new\""]), Some(7),
            "[[auth.accept]] lists keys, and auth.insecure = true uses none; remove the [[auth.accept]] \
             tables or auth.insecure"),
        // Control and log.
        (multicast_and(&["[control]", "metrics_listen = \"0.0.0.0:9475\""]),
            Some(12), "control.metrics_listen 0.0.0.0:9475 is not a loopback address"),
        (multicast_and(&["[control]", "metrics_listen = \"localhost:9475\""]),
            Some(12), "is not an address:port"),
        (multicast_and(&["[control]", "group = \"a b\""]), Some(12), "control.group \"a b\" is not a group name"),
        (multicast_and(&["[control]", &long_socket]), Some(12), "a Unix socket path may be at most 107"),
        (multicast_and(&["[log]", "target = \"journal\""]),
            Some(12), "log.target \"journal\" must be \"stderr\" or \"syslog\""),
        (multicast_and(&["[log]", "level = \"verbose\""]),
            Some(12), "log.level \"verbose\" must be one of error, warn, info, debug, trace"),
    ];
    for (text, line, needle) in &cases {
        let errors = errors(text);
        assert!(
            errors
                .iter()
                .any(|e| e.line == *line && e.message.contains(needle)),
            "expected line {line:?} with {needle:?}, got:\n{}\n--- from\n{text}",
            ConfigErrors(errors.clone())
        );
    }
}

/// What a string key takes, in words.
const TEXT: &str = "a string in quotes";
const BOOL: &str = "true or false";
const MILLIS: &str = "a whole number of milliseconds from 0 to 18446744073709551615";
const U32: &str = "a whole number from 0 to 4294967295";
const ID: &str = "a whole number from 1 to 65535";
const PORT: &str = "a whole number from 0 to 65535";
const KEY_ID: &str = "a whole number from 0 to 255";
const GENERATION: &str = "a whole number from 1 to 4294967295";

/// Every key of the file: its table's header ("" at the top), its name,
/// and what it takes, in the words of the errors.
const SCHEMA: &[(&str, &str, &str)] = &[
    ("", "cluster", TEXT),
    ("", "node", ID),
    ("", "priority", U32),
    ("", "generation", GENERATION),
    ("[[member]]", "id", ID),
    ("[[member]]", "address", TEXT),
    ("[[member]]", "port", PORT),
    ("[[member]]", "witness", BOOL),
    ("[[member]]", "transport", TEXT),
    ("[network]", "interface", TEXT),
    ("[network]", "multicast", TEXT),
    ("[network]", "multicast_loop", BOOL),
    ("[network]", "port", PORT),
    ("[network]", "bind", TEXT),
    ("[timing]", "heartbeat_ms", MILLIS),
    ("[timing]", "dead_after_ms", MILLIS),
    ("[timing]", "lease_margin_ms", MILLIS),
    (
        "[timing]",
        "max_drift_ppm",
        "a whole number of ppm from 0 to 4294967295",
    ),
    ("[election]", "preempt", BOOL),
    ("[election]", "preempt_delay_ms", MILLIS),
    ("[election]", "holdoff_ms", MILLIS),
    ("[hooks]", "promote", TEXT),
    ("[hooks]", "demote", TEXT),
    ("[hooks]", "notify", TEXT),
    ("[hooks]", "timeout_ms", MILLIS),
    ("[hooks]", "demote_budget_ms", MILLIS),
    ("[hooks]", "kill_grace_ms", MILLIS),
    ("[hooks]", "refresh_interval_ms", MILLIS),
    (
        "[hooks]",
        "output_max_bytes",
        "a whole number of bytes from 0 to 18446744073709551615",
    ),
    (
        "[hooks]",
        "check",
        "a path in quotes, or an array of strings (the program and its arguments)",
    ),
    ("[hooks]", "check_interval_ms", MILLIS),
    ("[hooks]", "check_timeout_ms", MILLIS),
    ("[hooks]", "check_fall", U32),
    ("[hooks]", "check_rise", U32),
    ("[auth]", "key_file", TEXT),
    ("[auth]", "key_id", KEY_ID),
    ("[auth]", "insecure", BOOL),
    ("[[auth.accept]]", "id", KEY_ID),
    ("[[auth.accept]]", "key_file", TEXT),
    ("[state]", "dir", TEXT),
    ("[control]", "socket", TEXT),
    ("[control]", "group", TEXT),
    ("[control]", "metrics_listen", TEXT),
    ("[log]", "target", TEXT),
    ("[log]", "level", TEXT),
];

/// A file setting the keys of `SCHEMA` that `value` gives a value for,
/// each to that value, after the lines `first`; and the errors expected
/// from `error`, at their lines, in file order.
fn every_key(
    first: &[&str],
    value: impl Fn(&str) -> Option<&'static str>,
    error: impl Fn(&str, &str) -> String,
) -> (String, Vec<(Option<usize>, String)>) {
    let mut text: Vec<String> = first.iter().map(|l| l.to_string()).collect();
    let mut expected = Vec::new();
    let mut header = "";
    for &(table, key, words) in SCHEMA {
        let Some(value) = value(words) else {
            continue;
        };
        if table != header {
            text.push(table.to_owned());
            header = table;
        }
        text.push(format!("{key} = {value}"));
        let name = match table.trim_matches(['[', ']']) {
            "" => key.to_owned(),
            t => format!("{t}.{key}"),
        };
        expected.push((Some(text.len()), error(&name, words)));
    }
    let text: Vec<&str> = text.iter().map(String::as_str).collect();
    (lines(&text), expected)
}

fn lines_and_messages(text: &str) -> Vec<(Option<usize>, String)> {
    errors(text)
        .into_iter()
        .map(|e| (e.line, e.message))
        .collect()
}

#[test]
fn every_key_of_the_wrong_type_is_named_with_what_it_takes() {
    // A date is no key's type; every key gets one, and every one is
    // reported, in one run.
    let (text, expected) = every_key(
        &[],
        |_| Some("1979-05-27"),
        |key, words| format!("{key}: expected {words}, found the date 1979-05-27"),
    );
    let got = lines_and_messages(&text);
    assert_eq!(got, expected, "--- from\n{text}");
    assert_eq!(got.len(), SCHEMA.len());
    // Rust's names for types never reach the operator.
    for (_, message) in &got {
        for rust in [
            "u16",
            "u32",
            "u64",
            "i64",
            "usize",
            "sequence",
            "map",
            "invalid type",
        ] {
            assert!(!message.contains(rust), "{message}");
        }
    }
}

#[test]
fn every_number_out_of_range_is_named_with_its_range() {
    // [auth] has numbers too, so it is written as a table, after a
    // dotted auth.insecure would have defined it: the file has no key file
    // and says so, last.
    let missing_key = (
        None,
        "auth.key_file is required: a file holding the cluster's shared secret (at least 16 \
         bytes, mode 0600); only on a test network, set auth.insecure = true instead"
            .to_owned(),
    );
    let (text, mut expected) = every_key(
        &["cluster = \"t\""],
        |words| words.starts_with("a whole number").then_some("-1"),
        |key, words| format!("{key}: -1 is out of range: expected {words}"),
    );
    expected.push(missing_key.clone());
    assert_eq!(lines_and_messages(&text), expected, "--- from\n{text}");
    // Above the range, and beyond what any integer holds.
    let (text, mut expected) = every_key(
        &["cluster = \"t\""],
        |words| {
            words
                .starts_with("a whole number")
                .then_some("99999999999999999999999999999999999999999")
        },
        |key, words| {
            format!(
                "{key}: 99999999999999999999999999999999999999999 is out of range: \
                 expected {words}"
            )
        },
    );
    expected.push(missing_key);
    assert_eq!(lines_and_messages(&text), expected, "--- from\n{text}");
    // Just above the range of a key id.
    let text = lines(&[
        "cluster = \"t\"",
        "[auth]",
        "key_file = \"/etc/regent/key\"",
        "key_id = 256",
        "[[auth.accept]]",
        "id = 256",
    ]);
    let got = lines_and_messages(&text);
    assert!(
        got.contains(&(
            Some(4),
            format!("auth.key_id: 256 is out of range: expected {KEY_ID}")
        )) && got.contains(&(
            Some(6),
            format!("auth.accept.id: 256 is out of range: expected {KEY_ID}")
        )),
        "{got:?}"
    );
}

#[test]
fn bad_types_values_and_keys_are_all_reported_together() {
    let text = lines(&[
        "cluster = \"db vip\"",
        "node = \"a\"",
        "priority = 99999999999",
        "colour = \"red\"",
        "auth.insecure = true",
        "[[member]]",
        "id = 1",
        "address = \"10.0.0.1\"",
        "[[member]]",
        "id = 2",
        "address = 10",
        "[timing]",
        "heartbeat_ms = 1.5",
        "dead_after_ms = 300",
        "[election]",
        "preempt = \"yes\"",
        "[hooks]",
        "check_fall = 0",
        "[log]",
        "level = \"loud\"",
    ]);
    assert_eq!(
        lines_and_messages(&text),
        vec![
            (
                Some(1),
                "cluster name \"db vip\" must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'"
                    .to_owned()
            ),
            (
                Some(2),
                "node: expected a whole number from 1 to 65535, found the string \"a\"".to_owned()
            ),
            (
                Some(3),
                "priority: 99999999999 is out of range: expected a whole number from 0 to 4294967295"
                    .to_owned()
            ),
            (
                Some(4),
                "colour: unknown key; the top level has cluster, node, priority, generation, \
                 [[member]], [network], [timing], [election], [hooks], [auth], [state], [control], \
                 [log]"
                    .to_owned()
            ),
            (
                Some(11),
                "member.address: expected a string in quotes, found the whole number 10".to_owned()
            ),
            (
                Some(13),
                "timing.heartbeat_ms: expected a whole number of milliseconds from 0 to \
                 18446744073709551615, found the decimal number 1.5"
                    .to_owned()
            ),
            (
                Some(16),
                "election.preempt: expected true or false, found the string \"yes\"".to_owned()
            ),
            (Some(18), "hooks.check_fall must be at least 1".to_owned()),
            (
                Some(20),
                "log.level \"loud\" must be one of error, warn, info, debug, trace".to_owned()
            ),
        ],
        "--- from\n{text}"
    );
}

#[test]
fn a_refused_value_is_neither_missing_nor_its_default() {
    // Each file has one error, the type error; a key read as missing, or
    // as its default, would add another.
    let cases = [
        // The default dead_after_ms, 300, is below 2 x 200.
        (
            multicast_and(&["[timing]", "heartbeat_ms = 200", "dead_after_ms = \"600\""]),
            13,
        ),
        // Read as unicast, both members would lack an address.
        (
            head_and(&["[network]", "multicast = 239", "interface = \"lo\""]),
            9,
        ),
        (
            head_and(&[
                "[network]",
                "multicast = \"239.1.1.1:7475\"",
                "interface = 0",
            ]),
            10,
        ),
        (
            lines(&[
                "cluster = 1",
                "node = 1",
                "auth.insecure = true",
                "network.multicast = \"239.1.1.1:1\"",
                "network.interface = \"lo\"",
                "[[member]]",
                "id = 1",
            ]),
            1,
        ),
        (
            lines(&[
                "cluster = \"t\"",
                "node = 1.0",
                "auth.insecure = true",
                "network.multicast = \"239.1.1.1:1\"",
                "network.interface = \"lo\"",
                "[[member]]",
                "id = 1",
            ]),
            2,
        ),
        (
            lines(&[
                "cluster = \"t\"",
                "node = 1",
                "auth.insecure = true",
                "network.multicast = \"239.1.1.1:1\"",
                "network.interface = \"lo\"",
                "member = [1]",
            ]),
            6,
        ),
        // auth.key_file is only required when auth.insecure is not true.
        (
            lines(&[
                "cluster = \"t\"",
                "node = 1",
                "auth.insecure = \"yes\"",
                "network.multicast = \"239.1.1.1:1\"",
                "network.interface = \"lo\"",
                "[[member]]",
                "id = 1",
            ]),
            3,
        ),
        // An accepted key whose file is refused is not missing its file, and
        // one whose id is refused is neither without an id nor a duplicate.
        (
            keyed_and(&["[[auth.accept]]", "id = 1", "key_file = 1"]),
            14,
        ),
        (
            keyed_and(&[
                "[[auth.accept]]",
                "id = \"1\"",
                "key_file = \"a\"",
                "[[auth.accept]]",
                "id = 1",
                "key_file = \"b\"",
            ]),
            13,
        ),
        // Nor is an accepted key's id compared with a refused key_id.
        (
            keyed_and(&[
                "key_id = 1000",
                "[[auth.accept]]",
                "id = 0",
                "key_file = \"a\"",
            ]),
            12,
        ),
        // With its port unknown, member 2 is not a duplicate of member 1.
        (
            lines(&[
                "cluster = \"t\"",
                "node = 1",
                "auth.insecure = true",
                "[[member]]",
                "id = 1",
                "address = \"10.0.0.1\"",
                "[[member]]",
                "id = 2",
                "address = \"10.0.0.1\"",
                "port = \"7476\"",
            ]),
            10,
        ),
        // Nor is this node's own port at odds with network.port.
        (
            lines(&[
                "cluster = \"t\"",
                "node = 1",
                "auth.insecure = true",
                "[[member]]",
                "id = 1",
                "address = \"10.0.0.1\"",
                "port = 7000",
                "[network]",
                "port = \"7000\"",
            ]),
            9,
        ),
    ];
    for (text, line) in cases {
        let errors = errors(&text);
        assert_eq!(
            errors.len(),
            1,
            "{}\n--- from\n{text}",
            ConfigErrors(errors.clone())
        );
        assert_eq!(errors[0].line, Some(line), "{}", errors[0]);
        assert!(errors[0].message.contains(": expected "), "{}", errors[0]);
    }
}

#[test]
fn every_semantic_error_is_reported_in_file_order() {
    let text = lines(&[
        "cluster = \"bad name\"",
        "node = 9",
        "[[member]]",
        "id = 1",
        "[[member]]",
        "id = 1",
        "[network]",
        "multicast = \"10.1.1.1:7475\"",
        "[timing]",
        "dead_after_ms = 150",
        "[control]",
        "metrics_listen = \"10.0.0.1:9475\"",
    ]);
    let errors = errors(&text);
    let got: Vec<(Option<usize>, &str)> = errors
        .iter()
        .map(|e| (e.line, e.message.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(1), "cluster"),
            (Some(2), "node"),
            (Some(6), "member"),
            (Some(8), "network.multicast"),
            (Some(8), "network.multicast"),
            (Some(10), "timing.dead_after_ms"),
            (Some(12), "control.metrics_listen"),
            (None, "auth.key_file"),
        ],
        "{}",
        ConfigErrors(errors.clone())
    );
    let shown = ConfigErrors(errors).to_string();
    assert_eq!(shown.lines().count(), 8);
    assert!(
        shown.starts_with("regent.toml:1: cluster name \"bad name\""),
        "{shown}"
    );
    assert!(shown.ends_with("regent.toml: auth.key_file is required: a file holding the cluster's shared \
         secret (at least 16 bytes, mode 0600); only on a test network, set auth.insecure = true instead"), "{shown}");
}

#[test]
fn minimal_config_gets_the_defaults() {
    let config = parse(&multicast_and(&[])).expect("valid");
    let expected = Config {
        cluster: "t".to_owned(),
        node: NodeId(1),
        priority: 100,
        generation: 1,
        members: vec![
            Member {
                id: NodeId(1),
                address: None,
                port: None,
                witness: false,
                unicast: false,
            },
            Member {
                id: NodeId(2),
                address: None,
                port: None,
                witness: false,
                unicast: false,
            },
        ],
        network: Network {
            transport: Transport::Multicast {
                group: "239.1.1.1:7475".parse().expect("addr"),
                interface: "lo".to_owned(),
                loopback: false,
                unicast: None,
            },
        },
        timing: Timing {
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_millis(300),
            lease_margin: Duration::from_millis(20),
            demote_budget: Duration::from_millis(25),
            max_drift_ppm: 10_000,
        },
        election: Election {
            preempt: true,
            preempt_delay: Duration::from_millis(5000),
            holdoff: Duration::from_millis(10_000),
        },
        hooks: Hooks {
            promote: None,
            demote: None,
            notify: None,
            timeout: Duration::from_millis(10_000),
            kill_grace: Duration::from_millis(2000),
            refresh_interval: Some(Duration::from_millis(10_000)),
            output_max_bytes: 65_536,
            check: None,
            check_interval: Duration::from_millis(1000),
            check_timeout: Duration::from_millis(2000),
            check_fall: 3,
            check_rise: 2,
        },
        auth: Auth {
            key: None,
            key_file: None,
            key_id: KeyId(0),
            accept: Vec::new(),
            insecure: true,
        },
        state: State {
            dir: PathBuf::from("/var/lib/regent"),
        },
        control: Control {
            socket: PathBuf::from("/run/regent/t.sock"),
            group: None,
            metrics_listen: None,
        },
        log: LogConfig {
            target: LogTarget::Stderr,
            level: log::LevelFilter::Info,
        },
    };
    assert_eq!(config, expected);
    assert_eq!(config.election, Election::default());
    assert_eq!(config.hooks, Hooks::default());
    assert_eq!(config.log, LogConfig::default());
}

#[test]
fn full_unicast_config_round_trips() {
    let text = lines(&[
        "cluster = \"db-vip.2\"",
        "node = 2",
        "priority = 7",
        "[[member]]",
        "id = 1",
        "address = \"10.0.0.1\"",
        "[[member]]",
        "id = 2",
        "address = \"fd00::2\"",
        "port = 8000",
        "[[member]]",
        "id = 300",
        "address = \"10.0.0.3\"",
        "port = 9000",
        "[network]",
        "port = 8000",
        "bind = \"fd00::2\"",
        "[timing]",
        "heartbeat_ms = 50",
        "dead_after_ms = 250",
        "lease_margin_ms = 10",
        "max_drift_ppm = 20000",
        "[election]",
        "preempt = false",
        "preempt_delay_ms = 1",
        "holdoff_ms = 2",
        "[hooks]",
        "promote = \"/hooks/up\"",
        "demote = \"hooks/down\"",
        "notify = \"/hooks/note\"",
        "timeout_ms = 3",
        "kill_grace_ms = 0",
        "refresh_interval_ms = 0",
        "output_max_bytes = 100",
        "check = [\"/bin/check\", \"-q\", \"with space\"]",
        "check_interval_ms = 4",
        "check_timeout_ms = 5",
        "check_fall = 6",
        "check_rise = 7",
        "[auth]",
        "key_file = \"key\"",
        "insecure = false",
        "[state]",
        "dir = \"/state\"",
        "[control]",
        "socket = \"/run/x.sock\"",
        "group = \"wheel\"",
        "metrics_listen = \"[::1]:9475\"",
        "[log]",
        "target = \"syslog\"",
        "level = \"trace\"",
    ]);
    let config = Config::parse(
        &text,
        Path::new("/etc/regent/regent.toml"),
        DiskChecks::Skip,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
    assert_eq!(config.cluster, "db-vip.2");
    assert_eq!(config.node, NodeId(2));
    assert_eq!(config.priority, 7);
    assert_eq!(
        config.members,
        vec![
            Member {
                id: NodeId(1),
                address: ip("10.0.0.1"),
                port: None,
                witness: false,
                unicast: true,
            },
            Member {
                id: NodeId(2),
                address: ip("fd00::2"),
                port: Some(8000),
                witness: false,
                unicast: true,
            },
            Member {
                id: NodeId(300),
                address: ip("10.0.0.3"),
                port: Some(9000),
                witness: false,
                unicast: true,
            },
        ]
    );
    assert_eq!(
        config.network.transport,
        Transport::Unicast {
            port: 8000,
            bind: ip("fd00::2")
        }
    );
    assert_eq!(
        config.timing,
        Timing {
            heartbeat: Duration::from_millis(50),
            dead_after: Duration::from_millis(250),
            lease_margin: Duration::from_millis(10),
            demote_budget: Duration::from_millis(25),
            max_drift_ppm: 20_000,
        }
    );
    assert_eq!(
        config.election,
        Election {
            preempt: false,
            preempt_delay: Duration::from_millis(1),
            holdoff: Duration::from_millis(2)
        }
    );
    assert_eq!(
        config.hooks,
        Hooks {
            promote: Some(PathBuf::from("/hooks/up")),
            demote: Some(PathBuf::from("/etc/regent/hooks/down")),
            notify: Some(PathBuf::from("/hooks/note")),
            timeout: Duration::from_millis(3),
            kill_grace: Duration::ZERO,
            refresh_interval: None,
            output_max_bytes: 100,
            check: Some(vec![
                "/bin/check".to_owned(),
                "-q".to_owned(),
                "with space".to_owned()
            ]),
            check_interval: Duration::from_millis(4),
            check_timeout: Duration::from_millis(5),
            check_fall: 6,
            check_rise: 7,
        }
    );
    assert_eq!(
        config.auth,
        Auth {
            key: None,
            key_file: Some(PathBuf::from("/etc/regent/key")),
            key_id: KeyId(0),
            accept: Vec::new(),
            insecure: false
        }
    );
    assert_eq!(config.state.dir, PathBuf::from("/state"));
    assert_eq!(
        config.control,
        Control {
            socket: PathBuf::from("/run/x.sock"),
            group: Some("wheel".to_owned()),
            metrics_listen: Some("[::1]:9475".parse().expect("addr")),
        }
    );
    assert_eq!(
        config.log,
        LogConfig {
            target: LogTarget::Syslog,
            level: log::LevelFilter::Trace
        }
    );

    let core = config.core();
    assert_eq!(core.id, NodeId(2));
    assert_eq!(core.members, vec![NodeId(1), NodeId(2), NodeId(300)]);
    assert_eq!(core.priority, 7);
    assert_eq!(core.timing, config.timing);
    assert!(!core.preempt);
    assert_eq!(core.preempt_delay, Duration::from_millis(1));
    assert_eq!(core.holdoff, Duration::from_millis(2));
    assert_eq!(config.quorum(), 2);
    assert_eq!(
        config.summary(),
        "cluster db-vip.2, node 2 of 3 members (quorum 2), priority 7, unicast fd00::2 port 8000, \
         heartbeat 50 ms, dead_after 250 ms, lease 205.2 ms, auth hmac-sha256"
    );
}

/// `generation` counts member lists from 1: 0, a string, a fraction or a
/// number past u32 are refused at their line, and a file without it runs
/// the first list.
#[test]
fn generation_is_a_whole_number_from_one() {
    for (value, problem) in [
        ("0", format!("0 is out of range: expected {GENERATION}")),
        (
            "4294967296",
            format!("4294967296 is out of range: expected {GENERATION}"),
        ),
        ("-2", format!("-2 is out of range: expected {GENERATION}")),
        (
            "\"2\"",
            format!("expected {GENERATION}, found the string \"2\""),
        ),
        (
            "1.5",
            format!("expected {GENERATION}, found the decimal number 1.5"),
        ),
    ] {
        // At the top, line 1: below a [[member]] it would be the table's.
        let text = format!("generation = {value}\n{}", multicast_and(&[]));
        assert_eq!(
            lines_and_messages(&text),
            [(Some(1), format!("generation: {problem}"))],
            "--- from\n{text}"
        );
    }
    let config = parse(&multicast_and(&[])).expect("valid");
    assert_eq!(config.generation, defaults::GENERATION);
    let config = parse(&format!("generation = 7\n{}", multicast_and(&[]))).expect("valid");
    assert_eq!(config.generation, 7);
}

#[test]
fn quorum_is_a_majority() {
    for (n, quorum) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (64, 33)] {
        let mut text = String::from("cluster = \"t\"\nnode = 1\nauth.insecure = true\n");
        text.push_str("network.multicast = \"239.1.1.1:1\"\nnetwork.interface = \"lo\"\n");
        for id in 1..=n {
            text.push_str(&format!("[[member]]\nid = {id}\n"));
        }
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.quorum(), quorum, "{n} members");
    }
}

#[test]
fn lease_boundary_is_exact() {
    // 205 * 0.99 / 1.01 - 100 = 100.94 > 100; 204 gives 99.96.
    let at = |dead_after: u64| {
        let d = format!("dead_after_ms = {dead_after}");
        parse(&multicast_and(&[
            "[timing]",
            "heartbeat_ms = 100",
            &d,
            "lease_margin_ms = 100",
            "[hooks]",
            "demote_budget_ms = 0",
        ]))
    };
    assert!(at(205).is_ok());
    assert!(at(204).is_err());
    // With no drift the lease is exactly dead_after - margin, and must exceed the heartbeat.
    let exact = |dead_after: u64| {
        let d = format!("dead_after_ms = {dead_after}");
        parse(&multicast_and(&[
            "[timing]",
            "heartbeat_ms = 100",
            &d,
            "lease_margin_ms = 100",
            "max_drift_ppm = 0",
            "[hooks]",
            "demote_budget_ms = 25",
        ]))
    };
    assert!(exact(226).is_ok());
    assert!(exact(225).is_err());
}

#[test]
fn check_accepts_a_string_or_an_array() {
    let check = |value: &str| {
        let line = format!("check = {value}");
        let config = Config::parse(
            &multicast_and(&["[hooks]", &line]),
            Path::new("/etc/regent/regent.toml"),
            DiskChecks::Skip,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        config.hooks.check.expect("check set")
    };
    assert_eq!(
        check("\"/usr/bin/pg_isready\""),
        vec!["/usr/bin/pg_isready"]
    );
    assert_eq!(
        check("[\"/usr/bin/pg_isready\"]"),
        vec!["/usr/bin/pg_isready"]
    );
    assert_eq!(
        check("[\"/usr/bin/pg_isready\", \"-h\", \"db\"]"),
        vec!["/usr/bin/pg_isready", "-h", "db"]
    );
    // A string is one path, spaces and all; only argv[0] is a path.
    assert_eq!(check("\"/opt/my check\""), vec!["/opt/my check"]);
    assert_eq!(
        check("[\"bin/check\", \"rel/arg\"]"),
        vec!["/etc/regent/bin/check", "rel/arg"]
    );
}

#[test]
fn key_file_is_loaded_and_its_mode_checked() {
    let dir = TempDir::new("key");
    let key32 = [b'k'; 32];
    let config_with = |path: &Path| {
        let line = format!("key_file = \"{}\"", path.display());
        let text = lines(&[
            "cluster = \"t\"",
            "node = 1",
            "network.multicast = \"239.1.1.1:1\"",
            "network.interface = \"lo\"",
            "[[member]]",
            "id = 1",
            "[auth]",
            &line,
        ]);
        Config::parse(&text, Path::new("regent.toml"), DiskChecks::Check)
    };
    let only_error = |path: &Path| match config_with(path) {
        Ok(_) => panic!("{} accepted", path.display()),
        Err(ConfigErrors(errors)) => {
            assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
            assert_eq!(errors[0].line, Some(8));
            errors[0].message.clone()
        }
    };

    let mut with_newline = key32.to_vec();
    with_newline.push(b'\n');
    let good = dir.file("good", &with_newline, 0o600);
    let config = config_with(&good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.auth.key.as_deref(), Some(&key32[..]));
    assert_eq!(config.auth.key_file.as_deref(), Some(good.as_path()));
    assert!(!config.auth.insecure);
    assert!(
        !format!("{config:?}").contains("kkkk"),
        "the key must not appear in Debug output"
    );

    let crlf = dir.file("crlf", b"0123456789abcdef\r\n", 0o400);
    assert_eq!(
        config_with(&crlf)
            .unwrap_or_else(|e| panic!("{e}"))
            .auth
            .key
            .as_deref(),
        Some(&b"0123456789abcdef"[..])
    );

    let open = dir.file("open", &key32, 0o644);
    let p = open.display();
    assert_eq!(
        only_error(&open),
        format!("key file {p} is readable by group or others (mode 0644); run chmod 600 {p}")
    );
    let group_writable = dir.file("gw", &key32, 0o620);
    assert!(only_error(&group_writable).contains("is writable by group or others (mode 0620)"));

    let short = dir.file("short", b"0123456789abcde\n", 0o600);
    assert!(only_error(&short).contains("is too short (15 bytes, at least 16 needed)"));
    let empty = dir.file("empty", b"", 0o600);
    assert!(only_error(&empty).contains("is too short (0 bytes"));
    let missing = dir.0.join("missing");
    assert_eq!(
        only_error(&missing),
        format!("key file {} does not exist", missing.display())
    );
    assert!(only_error(&dir.0).contains("is not a regular file"));

    // Without disk checks the key file is not touched.
    let config = Config::parse(
        &lines(&[
            "cluster = \"t\"",
            "node = 1",
            "network.multicast = \"239.1.1.1:1\"",
            "network.interface = \"lo\"",
            "auth.key_file = \"/nonexistent/key\"",
            "[[member]]",
            "id = 1",
        ]),
        Path::new("regent.toml"),
        DiskChecks::Skip,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.auth.key, None);
}

#[test]
fn accepted_keys_are_read_and_checked_like_the_key_file() {
    let dir = TempDir::new("accept");
    let sending = dir.file("key.new", &[b'n'; 32], 0o600);
    let old = dir.file("key", b"0123456789abcdef0123456789abcdef\n", 0o600);
    let third = dir.file("key.other", &[b't'; 20], 0o400);
    // Line 10 holds the first accepted key's file, line 13 the second's.
    let config_with = |first: &Path, second: &Path| {
        let text = lines(&[
            "cluster = \"t\"",
            "node = 1",
            "network.multicast = \"239.1.1.1:1\"",
            "network.interface = \"lo\"",
            "[[member]]",
            "id = 1",
            "[auth]",
            &format!("key_file = \"{}\"", sending.display()),
            "key_id = 1",
            "[[auth.accept]]",
            "id = 0",
            &format!("key_file = \"{}\"", first.display()),
            "[[auth.accept]]",
            "id = 255",
            &format!("key_file = \"{}\"", second.display()),
        ]);
        Config::parse(&text, Path::new("regent.toml"), DiskChecks::Check)
    };

    let config = config_with(&old, &third).unwrap_or_else(|e| panic!("{e}"));
    let auth = &config.auth;
    assert_eq!(auth.key.as_deref(), Some(&[b'n'; 32][..]));
    assert_eq!(auth.key_id, KeyId(1));
    let accepted: Vec<(KeyId, &Path, Option<&[u8]>)> = auth
        .accept
        .iter()
        .map(|a| (a.id, a.key_file.as_path(), a.key.as_deref()))
        .collect();
    assert_eq!(
        accepted,
        [
            (
                KeyId(0),
                old.as_path(),
                Some(&b"0123456789abcdef0123456789abcdef"[..])
            ),
            (KeyId(255), third.as_path(), Some(&[b't'; 20][..])),
        ]
    );
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("nnnn") && !shown.contains("0123") && !shown.contains("tttt"),
        "no key may appear in Debug output: {shown}"
    );
    assert!(
        config
            .summary()
            .ends_with("auth hmac-sha256 with key id 1, also accepting key id 0, 255"),
        "{}",
        config.summary()
    );

    // Each accepted key file is refused for what key_file is refused for,
    // at its line, naming its id.
    let only_error = |first: &Path, second: &Path| match config_with(first, second) {
        Ok(_) => panic!("{} and {} accepted", first.display(), second.display()),
        Err(ConfigErrors(errors)) => {
            assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
            (errors[0].line, errors[0].message.clone())
        }
    };
    let open = dir.file("open", &[b'o'; 32], 0o644);
    let p = open.display();
    assert_eq!(
        only_error(&open, &third),
        (
            Some(12),
            format!(
                "auth.accept id 0: key file {p} is readable by group or others (mode 0644); \
                 run chmod 600 {p}"
            )
        )
    );
    let short = dir.file("short", b"0123456789\n", 0o600);
    let (line, message) = only_error(&old, &short);
    assert_eq!(line, Some(15));
    assert!(
        message.starts_with("auth.accept id 255: key file ")
            && message.contains("is too short (10 bytes, at least 16 needed)"),
        "{message}"
    );
    let missing = dir.0.join("missing");
    assert_eq!(
        only_error(&missing, &third),
        (
            Some(12),
            format!(
                "auth.accept id 0: key file {} does not exist",
                missing.display()
            )
        )
    );
}

#[test]
fn hooks_must_be_executable_regular_files() {
    let dir = TempDir::new("hooks");
    let script = b"#!/bin/sh\nexit 0\n";
    let good = dir.file("good", script, 0o755);
    dir.file("plain", script, 0o644);
    dir.file("open", script, 0o777);
    fs::create_dir(dir.0.join("subdir")).expect("mkdir");
    let try_hook = |key: &str, value: &str| {
        let line = format!("{key} = {value}");
        Config::parse(
            &multicast_and(&["[hooks]", &line]),
            &dir.0.join("regent.toml"),
            DiskChecks::Check,
        )
    };
    let only_error = |key: &str, value: &str| match try_hook(key, value) {
        Ok(_) => panic!("{key} = {value} accepted"),
        Err(ConfigErrors(errors)) => {
            assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
            assert_eq!(errors[0].line, Some(12));
            errors[0].message.clone()
        }
    };

    let config =
        try_hook("promote", &format!("\"{}\"", good.display())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.hooks.promote.as_deref(), Some(good.as_path()));
    // Relative to the config file's directory.
    let config = try_hook("demote", "\"good\"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.hooks.demote.as_deref(), Some(good.as_path()));
    let config = try_hook("check", "[\"good\", \"-x\"]").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.hooks.check,
        Some(vec![good.to_string_lossy().into_owned(), "-x".to_owned()])
    );

    let d = dir.0.display();
    assert_eq!(
        only_error("promote", "\"missing\""),
        format!("hooks.promote {d}/missing does not exist")
    );
    assert_eq!(
        only_error("notify", "\"subdir\""),
        format!("hooks.notify {d}/subdir is not a regular file")
    );
    assert_eq!(
        only_error("demote", "\"plain\""),
        format!("hooks.demote {d}/plain is not executable (mode 0644); run chmod +x {d}/plain")
    );
    assert!(only_error("promote", "\"open\"").contains("is writable by anyone (mode 0777)"));
    assert_eq!(
        only_error("check", "\"plain\""),
        format!("hooks.check {d}/plain is not executable (mode 0644); run chmod +x {d}/plain")
    );
    assert!(only_error("check", "\"/no/such/pg_isready -h db\"")
        .contains("to pass arguments use an array"));

    // Without disk checks, nothing is looked at.
    let text = multicast_and(&["[hooks]", "promote = \"/no/such/hook\""]);
    assert!(Config::parse(&text, Path::new("regent.toml"), DiskChecks::Skip).is_ok());
}

#[test]
fn control_group_must_exist_when_checked() {
    let with_group = |group: &str| {
        let line = format!("group = \"{group}\"");
        Config::parse(
            &multicast_and(&["[control]", &line]),
            Path::new("regent.toml"),
            DiskChecks::Check,
        )
    };
    assert!(with_group("root").is_ok());
    let errors = with_group("no-such-group-regent").expect_err("unknown group");
    assert_eq!(errors.0[0].line, Some(12));
    assert_eq!(
        errors.0[0].message,
        "control.group \"no-such-group-regent\" does not exist"
    );
}

#[test]
fn interface_must_exist_on_this_host_when_checked() {
    let with_interface = |name: &str, disk: DiskChecks| {
        let line = format!("interface = \"{name}\"");
        let text = head_and(&["[network]", "multicast = \"239.1.1.1:7475\"", &line]);
        Config::parse(&text, Path::new("regent.toml"), disk)
    };
    assert!(with_interface("lo", DiskChecks::Check).is_ok());
    let errors = with_interface("nope0", DiskChecks::Check).expect_err("no such interface");
    assert_eq!(
        errors.0,
        vec![ConfigError {
            file: PathBuf::from("regent.toml"),
            line: Some(10),
            message: "network.interface \"nope0\" does not exist on this host".to_owned(),
        }]
    );
    // A file about another host is not checked against this one.
    assert!(with_interface("nope0", DiskChecks::Skip).is_ok());
}

#[test]
fn load_and_check_command() {
    let dir = TempDir::new("load");
    let key = dir.file("key", b"0123456789abcdef0123456789abcdef\n", 0o600);
    let hook = dir.file("vip", b"#!/bin/sh\n", 0o700);
    let good = lines(&[
        "cluster = \"db-vip\"",
        "node = 3",
        "[[member]]",
        "id = 1",
        "[[member]]",
        "id = 2",
        "[[member]]",
        "id = 3",
        "[network]",
        "multicast = \"239.255.42.1:7475\"",
        "interface = \"lo\"",
        "[hooks]",
        "promote = \"vip\"",
        "demote = \"vip\"",
        "[auth]",
        "key_file = \"key\"",
    ]);
    let path = dir.file("regent.toml", good.as_bytes(), 0o644);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.hooks.promote.as_deref(), Some(hook.as_path()));
    assert_eq!(config.auth.key_file.as_deref(), Some(key.as_path()));
    assert_eq!(
        config.auth.key.as_deref(),
        Some(&b"0123456789abcdef0123456789abcdef"[..])
    );
    let (checked, text) = check_command(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked, config);
    assert_eq!(
        text,
        "ok: cluster db-vip, node 3 of 3 members (quorum 2), priority 100, multicast 239.255.42.1:7475 \
         on lo, heartbeat 100 ms, dead_after 300 ms, lease 249.1 ms, auth hmac-sha256\n\
         generation 1: members 1, 2, 3 (quorum 2 of 3)"
    );
    let path = dir.file(
        "next.toml",
        format!("generation = 2\n{good}[[member]]\nid = 4\n").as_bytes(),
        0o644,
    );
    let (_, text) = check_command(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.ends_with("\ngeneration 2: members 1, 2, 3, 4 (quorum 3 of 4)"),
        "{text}"
    );

    let bad = good
        .replace("node = 3", "node = 4")
        .replace("key_file = \"key\"", "key_file = \"nokey\"");
    let path = dir.file("bad.toml", bad.as_bytes(), 0o644);
    let text = check_command(&path).expect_err("invalid");
    let p = path.display();
    let d = dir.0.display();
    assert_eq!(
        text,
        format!(
            "{p}:2: node 4 is not in the [[member]] list (ids: 1, 2, 3)\n\
             {p}:16: key file {d}/nokey does not exist"
        )
    );

    let missing = dir.0.join("absent.toml");
    let text = check_command(&missing).expect_err("missing");
    assert!(
        text.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{text}"
    );
}

#[test]
fn installed_config_is_the_reference_less_its_defaults() {
    // The short /etc/regent/regent.toml of the package: it passes as it
    // stands (the operator replaces its example values with the
    // cluster's) and means exactly what the reference means.
    let short = include_str!("../../conf/regent.etc.toml");
    let config = Config::parse(
        short,
        Path::new("/etc/regent/regent.toml"),
        DiskChecks::Skip,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let reference = Config::parse(
        include_str!("../../conf/regent.toml"),
        Path::new("/etc/regent/regent.toml"),
        DiskChecks::Skip,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.summary(), reference.summary());
    assert_eq!(config.hooks, reference.hooks);
    assert_eq!(config.auth, reference.auth);
    assert_eq!(config.control.socket, reference.control.socket);
    assert!(short.contains("/usr/share/doc/regent/regent.toml.example"));
    // The group the package creates is the one it suggests.
    let uncommented = short
        .replace("# [control]", "[control]")
        .replace("# group", "group");
    let config = Config::parse(
        &uncommented,
        Path::new("/etc/regent/regent.toml"),
        DiskChecks::Skip,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.control.group.as_deref(), Some("regent"));
}

#[test]
fn reference_config_parses_and_documents_the_defaults() {
    let text = include_str!("../../conf/regent.toml");
    let config = Config::parse(text, Path::new("/etc/regent/regent.toml"), DiskChecks::Skip)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.cluster, "db-vip");
    assert_eq!(config.members.len(), 3);
    assert_eq!(
        config.auth.key_file.as_deref(),
        Some(Path::new("/etc/regent/key"))
    );
    assert!(!config.auth.insecure);

    // Every value the reference sets is the default it documents.
    let minimal = parse(&multicast_and(&[])).expect("valid");
    assert_eq!(config.priority, minimal.priority);
    assert_eq!(config.generation, minimal.generation);
    assert_eq!(config.timing, minimal.timing);
    assert_eq!(config.election, minimal.election);
    assert_eq!(
        Hooks {
            promote: None,
            demote: None,
            ..config.hooks.clone()
        },
        minimal.hooks
    );
    assert_eq!(config.state, minimal.state);
    assert_eq!(
        config.control.socket,
        PathBuf::from("/run/regent/db-vip.sock")
    );
    assert_eq!(config.log, minimal.log);
    assert_eq!(
        config.summary(),
        "cluster db-vip, node 1 of 3 members (quorum 2), priority 100, multicast 239.255.42.1:7475 on eth0, \
         heartbeat 100 ms, dead_after 300 ms, lease 249.1 ms, auth hmac-sha256"
    );

    // The commented-out keys are valid too, once uncommented where they apply.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if [
                    "port = ",
                    "notify = ",
                    "check = [",
                    "insecure",
                    "group = ",
                    "metrics_listen = ",
                    "key_id = ",
                    "[[auth.accept]]",
                    "id = 1",
                    "key_file = \"/etc/regent/key.next\"",
                ]
                .iter()
                .any(|k| rest.starts_with(k)) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let errors = Config::parse(&uncommented, Path::new("regent.toml"), DiskChecks::Skip)
        .expect_err("mixed modes");
    // Only the unicast-only ports are refused with multicast.
    assert!(
        errors
            .0
            .iter()
            .all(|e| e.message.contains("is for unicast only")),
        "{errors}"
    );
    let unicast: String = uncommented
        .lines()
        .filter(|l| !l.starts_with("multicast") && !l.starts_with("interface"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = Config::parse(&unicast, Path::new("regent.toml"), DiskChecks::Skip)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.network.transport,
        Transport::Unicast {
            port: 7475,
            bind: None
        }
    );
    assert_eq!(
        config.control.metrics_listen,
        Some("127.0.0.1:9475".parse().expect("addr"))
    );
    assert_eq!(config.hooks.check.as_ref().map(Vec::len), Some(4));
    assert_eq!(config.auth.key_id, KeyId(0));
    let accepted: Vec<(KeyId, &Path)> = config
        .auth
        .accept
        .iter()
        .map(|a| (a.id, a.key_file.as_path()))
        .collect();
    assert_eq!(
        accepted,
        [(KeyId(1), Path::new("/etc/regent/key.next"))],
        "the reference's [[auth.accept]] example"
    );
}

/// Two hosts on a multicast LAN and a witness reached by unicast, as node
/// `node` sees the one shared file.
fn two_and_a_witness(node: u32) -> String {
    let node = format!("node = {node}");
    lines(&[
        "cluster = \"t\"",
        &node,
        "auth.insecure = true",
        "[[member]]",
        "id = 1",
        "address = \"10.0.0.1\"",
        "[[member]]",
        "id = 2",
        "address = \"10.0.0.2\"",
        "[[member]]",
        "id = 3",
        "address = \"192.0.2.9\"",
        "witness = true",
        "transport = \"unicast\"",
        "[network]",
        "multicast = \"239.1.1.1:7475\"",
        "interface = \"lo\"",
    ])
}

#[test]
fn two_hosts_multicast_and_reach_their_witness_by_unicast() {
    let host = parse(&two_and_a_witness(1)).expect("valid");
    assert_eq!(
        host.network.transport,
        Transport::Multicast {
            group: "239.1.1.1:7475".parse().expect("addr"),
            interface: "lo".to_owned(),
            loopback: false,
            unicast: Some("10.0.0.1:7475".parse().expect("addr")),
        }
    );
    assert!(!host.witness() && !host.core().witness);
    assert_eq!(host.quorum(), 2, "the witness votes");
    assert_eq!(host.advice(), Vec::<String>::new());
    assert!(
        host.summary()
            .contains("node 1 of 3 members, 1 a witness (quorum 2)")
            && host
                .summary()
                .contains("unicast from 10.0.0.1:7475 to member 3"),
        "{}",
        host.summary()
    );

    let witness = parse(&two_and_a_witness(3)).expect("valid");
    assert_eq!(
        witness.network.transport,
        Transport::Unicast {
            port: 7475,
            bind: Some("192.0.2.9".parse().expect("ip")),
        },
        "the witness is off the group's network: unicast to everyone"
    );
    assert!(witness.witness() && witness.core().witness);
    assert!(
        witness.summary().contains("node 3 (a witness) of 3"),
        "{}",
        witness.summary()
    );
}

#[test]
fn witness_and_transport_mistakes_are_named() {
    let all_witnesses =
        head_and(&["witness = true"]).replace("id = 1\n", "id = 1\nwitness = true\n");
    let mut with_multicast = all_witnesses.clone();
    with_multicast.push_str(&lines(&MULTICAST));
    let messages =
        |text: &str| -> Vec<String> { errors(text).into_iter().map(|e| e.message).collect() };
    assert_eq!(
        messages(&with_multicast),
        ["every member is a witness: at least one must be able to lead"]
    );
    assert_eq!(
        messages(&multicast_and(&[
            "[[member]]",
            "id = 3",
            "transport = \"tcp\""
        ])),
        ["member 3: transport \"tcp\" must be \"multicast\" or \"unicast\""]
    );
    // A unicast member sends to every member's address: all need one.
    let unaddressed = two_and_a_witness(1).replace("address = \"10.0.0.2\"\n", "");
    assert_eq!(
        messages(&unaddressed),
        [
            "member 2 has no address; member 3 is reached by unicast (transport = \"unicast\") \
          and sends to every member's address"
        ]
    );
    let no_group = two_and_a_witness(1)
        .replace("transport = \"unicast\"", "transport = \"multicast\"")
        .replace("multicast = \"239.1.1.1:7475\"\ninterface = \"lo\"\n", "");
    assert_eq!(
        messages(&no_group),
        ["member 3: transport \"multicast\" needs network.multicast, the group"]
    );
}

#[test]
fn two_members_without_a_witness_are_warned_about() {
    let two = parse(&multicast_and(&[])).expect("valid");
    let advice = two.advice();
    assert_eq!(advice.len(), 1, "{advice:?}");
    assert!(
        advice[0].starts_with("two members cannot fail over")
            && advice[0].contains("add a witness")
    );
    let three = parse(&two_and_a_witness(2)).expect("valid");
    assert!(three.advice().is_empty());
}

#[test]
fn the_witness_example_holds_for_every_host() {
    let text = include_str!("../../conf/witness.toml");
    for node in 1..=3 {
        let mine = text.replace("node = 1", &format!("node = {node}"));
        let config = Config::parse(
            &mine,
            Path::new("/etc/regent/db-vip.toml"),
            DiskChecks::Skip,
        )
        .unwrap_or_else(|e| panic!("node {node}: {e}"));
        assert_eq!(config.quorum(), 2);
        assert!(config.advice().is_empty(), "{:?}", config.advice());
        assert_eq!(config.witness(), node == 3);
        match (&config.network.transport, node) {
            (Transport::Unicast { port: 7475, .. }, 3) => {}
            (
                Transport::Multicast {
                    unicast: Some(own), ..
                },
                1 | 2,
            ) => {
                assert_eq!(own.port(), 7475);
            }
            (other, _) => panic!("node {node}: {other:?}"),
        }
    }
}
