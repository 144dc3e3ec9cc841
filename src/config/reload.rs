//! A reload: the file read again for a daemon that runs, checked as `regent
//! check` checks it, then compared with the configuration in force. What a
//! running daemon cannot take (its identity, its sockets, a member's
//! settings, a member list changed other than one member per generation)
//! refuses the whole reload, each such key named at its line like any other
//! error; what it can take is listed, old value and new, for the verdict.
//! Whether the cluster may take a new member list now is the core's
//! decision, after this one.
//!
//! Architecture Invariant: this is the one list of what needs a restart. It
//! decides and describes; the driver applies a new configuration only
//! through [`Config::reload`]'s `Ok`.

use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{line_of, Checker};
use super::raw::{self, Key, RawConfig};
use super::{AcceptedKey, Config, ConfigError, ConfigErrors, DiskChecks, Member, Transport};

/// A configuration a running daemon may take, and what it changes.
#[derive(Debug)]
pub struct Reload {
    /// The new configuration.
    pub config: Config,
    /// One line per changed key, `key: old -> new`, in file order; empty
    /// when nothing changed.
    pub changes: Vec<String>,
}

impl Config {
    /// Reads the file at `path` again for the daemon that runs with `self`.
    ///
    /// Fails with every error `regent check` would report, or else with
    /// every key whose new value only a restart can apply, each at its line.
    pub fn reload(&self, path: &Path) -> Result<Reload, ConfigErrors> {
        let (text, base) = super::read(path)?;
        let new = Checker::new(&text, path, &base, DiskChecks::Check).run()?;
        // The checker parsed this text already; the spans are for the lines.
        let raw = raw::read(&text).map(|(raw, _)| raw).unwrap_or_default();
        let mut refused = Refusals {
            text: &text,
            file: path,
            errors: Vec::new(),
        };
        refused.check(self, &new, &raw);
        if !refused.errors.is_empty() {
            refused.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            return Err(ConfigErrors(refused.errors));
        }
        Ok(Reload {
            changes: changes(self, &new),
            config: new,
        })
    }
}

/// The keys of a new file that only a restart can apply.
struct Refusals<'a> {
    text: &'a str,
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Refusals<'_> {
    fn check(&mut self, old: &Config, new: &Config, raw: &RawConfig) {
        self.key(
            "cluster",
            &raw.cluster,
            &quoted(&old.cluster),
            &quoted(&new.cluster),
        );
        self.key("node", &raw.node, &old.node, &new.node);
        self.members(&old.members, &new.members, raw);
        self.generation(old, new, raw);
        self.network(&old.network.transport, &new.network.transport, raw);
        let (o, n) = (&old.state.dir, &new.state.dir);
        self.key("state.dir", &raw.state.dir, &path(o), &path(n));
        let (o, n) = (&old.control, &new.control);
        let c = &raw.control;
        let (os, ns) = (path(&o.socket), path(&n.socket));
        self.key("control.socket", &c.socket, &os, &ns);
        let (og, ng) = (
            opt(&o.group.as_deref().map(quoted)),
            opt(&n.group.as_deref().map(quoted)),
        );
        self.key("control.group", &c.group, &og, &ng);
        let (om, nm) = (opt(&o.metrics_listen), opt(&n.metrics_listen));
        self.key("control.metrics_listen", &c.metrics_listen, &om, &nm);
        let (ot, nt) = (
            format!("{:?}", old.log.target),
            format!("{:?}", new.log.target),
        );
        let (ot, nt) = (ot.to_lowercase(), nt.to_lowercase());
        self.key("log.target", &raw.log.target, &ot, &nt);
    }

    /// Refuses `key` if its value changed, at the line of `at`.
    fn key<T, V: Display + PartialEq + ?Sized>(
        &mut self,
        key: &str,
        at: &Key<T>,
        old: &V,
        new: &V,
    ) {
        if old != new {
            let span = at.span();
            let change = match span {
                Some(_) => format!("{key} changed from {old} to {new}"),
                None => format!("{key} (not set, so its default) changed from {old} to {new}"),
            };
            self.refuse(span, change);
        }
    }

    fn refuse(&mut self, span: Option<Range<usize>>, change: String) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| line_of(self.text, s.start)),
            message: format!("{change}: only a restart applies this, a reload cannot"),
        });
    }

    /// Members may come and go, one per generation (the core decides whether
    /// now is the time, §3.19); a member that stays keeps its settings.
    fn members(&mut self, old: &[Member], new: &[Member], raw: &RawConfig) {
        let tables = raw.member.value().map_or(&[][..], Vec::as_slice);
        for (i, n) in new.iter().enumerate() {
            if let Some(o) = old.iter().find(|o| o.id == n.id).filter(|&o| o != n) {
                let span = tables.get(i).map(Spanned::span);
                let change = format!(
                    "member {} changed from {} to {}",
                    n.id,
                    member(o),
                    member(n)
                );
                self.refuse(span, change);
            }
        }
    }

    /// A change of the member list raises `generation` by exactly one and
    /// adds or removes exactly one member; the generation moves with the
    /// list and only with it (§3.19).
    fn generation(&mut self, old: &Config, new: &Config, raw: &RawConfig) {
        let ids = |c: &Config| c.members.iter().map(|m| m.id).collect::<Vec<_>>();
        let diff = crate::core::members_changed(&ids(old), &ids(new));
        let (from, to) = (old.generation, new.generation);
        // The line of `generation`; when it is not written, that of the
        // first table added (or the first table), where the edit was made.
        let span = raw.generation.span().or_else(|| {
            let tables = raw.member.value().map_or(&[][..], Vec::as_slice);
            let added = new.members.iter().position(|m| diff.contains(&m.id));
            tables.get(added.unwrap_or(0)).map(Spanned::span)
        });
        let listed = |v: &[crate::core::NodeId]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let problem = if diff.is_empty() && from != to {
            Some(format!(
                "generation changed from {from} to {to} but the [[member]] list did not: \
                 raise it only with a change of the list"
            ))
        } else if diff.is_empty() {
            None
        } else if to != from.wrapping_add(1) {
            let unset = if raw.generation.span().is_none() {
                format!(
                    " (not set, so its default); add `generation = {}`",
                    from.wrapping_add(1)
                )
            } else {
                String::new()
            };
            Some(format!(
                "the [[member]] list changed (members {}), so generation must go from \
                 {from} to {}, not {to}{unset}",
                listed(&diff),
                from.wrapping_add(1)
            ))
        } else if diff.len() > 1 {
            Some(format!(
                "members {} change at once: add or remove one member per generation, \
                 reloading every host between two changes",
                listed(&diff)
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            self.errors.push(ConfigError {
                file: self.file.to_path_buf(),
                line: span.map(|s| line_of(self.text, s.start)),
                message: problem,
            });
        }
    }

    fn network(&mut self, old: &Transport, new: &Transport, raw: &RawConfig) {
        let r = &raw.network;
        match (old, new) {
            (
                Transport::Multicast {
                    group: og,
                    interface: oi,
                    loopback: ol,
                    ..
                },
                Transport::Multicast {
                    group: ng,
                    interface: ni,
                    loopback: nl,
                    ..
                },
            ) => {
                self.key("network.multicast", &r.multicast, og, ng);
                self.key("network.interface", &r.interface, &quoted(oi), &quoted(ni));
                self.key("network.multicast_loop", &r.multicast_loop, ol, nl);
            }
            (
                Transport::Unicast { port: op, bind: ob },
                Transport::Unicast { port: np, bind: nb },
            ) => {
                self.key("network.port", &r.port, op, np);
                self.key("network.bind", &r.bind, &opt(ob), &opt(nb));
            }
            (Transport::Multicast { .. }, Transport::Unicast { .. }) => {
                let span = r.port.span();
                self.refuse(span, "network changed from multicast to unicast".into());
            }
            (Transport::Unicast { .. }, Transport::Multicast { .. }) => {
                let span = r.multicast.span();
                self.refuse(span, "network changed from unicast to multicast".into());
            }
        }
    }
}

/// What a reload the daemon may take changes, `key: old -> new`.
fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut d = Changes(Vec::new());
    d.note("priority", &old.priority, &new.priority);
    d.note("generation", &old.generation, &new.generation);
    d.note("[[member]] ids", &member_ids(old), &member_ids(new));
    let (o, n) = (&old.timing, &new.timing);
    d.note("timing.heartbeat_ms", &ms(o.heartbeat), &ms(n.heartbeat));
    d.note("timing.dead_after_ms", &ms(o.dead_after), &ms(n.dead_after));
    d.note(
        "timing.lease_margin_ms",
        &ms(o.lease_margin),
        &ms(n.lease_margin),
    );
    d.note("timing.max_drift_ppm", &o.max_drift_ppm, &n.max_drift_ppm);
    let (o, n) = (&old.election, &new.election);
    d.note("election.preempt", &o.preempt, &n.preempt);
    d.note(
        "election.preempt_delay_ms",
        &ms(o.preempt_delay),
        &ms(n.preempt_delay),
    );
    d.note("election.holdoff_ms", &ms(o.holdoff), &ms(n.holdoff));
    let (o, n) = (&old.hooks, &new.hooks);
    d.note(
        "hooks.promote",
        &opt_path(&o.promote),
        &opt_path(&n.promote),
    );
    d.note("hooks.demote", &opt_path(&o.demote), &opt_path(&n.demote));
    d.note("hooks.notify", &opt_path(&o.notify), &opt_path(&n.notify));
    d.note("hooks.timeout_ms", &ms(o.timeout), &ms(n.timeout));
    let (ob, nb) = (&old.timing.demote_budget, &new.timing.demote_budget);
    d.note("hooks.demote_budget_ms", &ms(*ob), &ms(*nb));
    d.note("hooks.kill_grace_ms", &ms(o.kill_grace), &ms(n.kill_grace));
    let refresh = |r: Option<Duration>| opt(&r.map(ms));
    let (or, nr) = (refresh(o.refresh_interval), refresh(n.refresh_interval));
    d.note("hooks.refresh_interval_ms", &or, &nr);
    d.note(
        "hooks.output_max_bytes",
        &o.output_max_bytes,
        &n.output_max_bytes,
    );
    let check = |c: &Option<Vec<String>>| opt(&c.as_ref().map(|argv| format!("{argv:?}")));
    d.note("hooks.check", &check(&o.check), &check(&n.check));
    d.note(
        "hooks.check_interval_ms",
        &ms(o.check_interval),
        &ms(n.check_interval),
    );
    d.note(
        "hooks.check_timeout_ms",
        &ms(o.check_timeout),
        &ms(n.check_timeout),
    );
    d.note("hooks.check_fall", &o.check_fall, &n.check_fall);
    d.note("hooks.check_rise", &o.check_rise, &n.check_rise);
    let (o, n) = (&old.auth, &new.auth);
    d.note(
        "auth.key_file",
        &opt_path(&o.key_file),
        &opt_path(&n.key_file),
    );
    d.note("auth.insecure", &o.insecure, &n.insecure);
    if o.key != n.key && o.key_file == n.key_file {
        // Never the key itself.
        d.0.push("auth.key: the key file holds a new key".to_string());
    }
    d.note("auth.key_id", &o.key_id, &n.key_id);
    accepted_keys(&mut d, &o.accept, &n.accept);
    let level = |l: log::LevelFilter| l.to_string().to_lowercase();
    d.note("log.level", &level(old.log.level), &level(new.log.level));
    d.0
}

/// The `[[auth.accept]]` keys added, removed or changed, by id: never a
/// key's bytes, only its file and whether that file holds another key now.
fn accepted_keys(d: &mut Changes, old: &[AcceptedKey], new: &[AcceptedKey]) {
    let mut ids: Vec<_> = old.iter().chain(new).map(|a| a.id).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let o = old.iter().find(|a| a.id == id);
        let n = new.iter().find(|a| a.id == id);
        let file = |a: Option<&AcceptedKey>| opt(&a.map(|a| path(&a.key_file)));
        let key = format!("auth.accept id {id}");
        d.note(&key, &file(o), &file(n));
        if let (Some(o), Some(n)) = (o, n) {
            if o.key_file == n.key_file && o.key != n.key {
                d.0.push(format!("{key}: the key file holds a new key"));
            }
        }
    }
}

/// The changed keys, as lines.
struct Changes(Vec<String>);

impl Changes {
    fn note<V: Display + PartialEq + ?Sized>(&mut self, key: &str, old: &V, new: &V) {
        if old != new {
            self.0.push(format!("{key}: {old} -> {new}"));
        }
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn path(p: &Path) -> String {
    quoted(&p.display().to_string())
}

fn opt_path(p: &Option<PathBuf>) -> String {
    opt(&p.as_deref().map(path))
}

fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "none".to_string(), T::to_string)
}

/// The member ids and the quorum they make: `1, 2, 3 (quorum 2)`.
fn member_ids(c: &Config) -> String {
    let ids: Vec<String> = c.members.iter().map(|m| m.id.to_string()).collect();
    format!("{} (quorum {})", ids.join(", "), c.quorum())
}

fn member(m: &Member) -> String {
    let address = opt(&m.address);
    match m.port {
        Some(port) => format!("address {address} port {port}"),
        None => format!("address {address}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own with a valid file, and the config loaded from it.
    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("regent-reload-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("dir");
            Files { dir }
        }

        fn write(&self, text: &str) -> PathBuf {
            let path = self.dir.join("regent.toml");
            std::fs::write(&path, text).expect("write");
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const BASE: &str = "cluster = \"a\"\nnode = 1\npriority = 100\n\n\
        [[member]]\nid = 1\naddress = \"10.0.0.1\"\n\n\
        [[member]]\nid = 2\naddress = \"10.0.0.2\"\n\n\
        [[member]]\nid = 3\naddress = \"10.0.0.3\"\n\n\
        [network]\nport = 7475\n\n[auth]\ninsecure = true\n\n\
        [control]\nsocket = \"/run/regent/a.sock\"\n";

    fn running(files: &Files) -> Config {
        Config::load(&files.write(BASE)).expect("the base file is valid")
    }

    #[test]
    fn what_a_reload_may_change_is_listed() {
        let files = Files::new("listed");
        let old = running(&files);
        let path = files.write(
            &BASE
                .replace("priority = 100", "priority = 150")
                .replace("[auth]", "[timing]\nheartbeat_ms = 50\n\n[auth]"),
        );
        let r = old.reload(&path).expect("a reload the daemon may take");
        assert_eq!(
            r.changes,
            ["priority: 100 -> 150", "timing.heartbeat_ms: 100 -> 50"]
        );
        assert_eq!(r.config.priority, 150);
        let same = files.write(BASE);
        assert_eq!(
            old.reload(&same).expect("same file").changes,
            Vec::<String>::new()
        );
    }

    /// A key rotation as three reloads: the new key accepted, then sent
    /// with (the old one accepted), then the old one removed. Each verdict
    /// names what changed, never a key's bytes, and each new configuration
    /// holds the keys read from their files.
    #[test]
    fn key_changes_are_reloaded_and_named_without_their_bytes() {
        use crate::wire::KeyId;
        use std::os::unix::fs::PermissionsExt;
        let files = Files::new("keys");
        let key = |name: &str, bytes: &[u8]| {
            let path = files.dir.join(name);
            std::fs::write(&path, bytes).expect("key");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            path
        };
        let (old, new) = (key("key", &[b'o'; 32]), key("key.new", &[b'n'; 32]));
        let auth =
            |body: &str| BASE.replace("[auth]\ninsecure = true\n", &format!("[auth]\n{body}"));
        let (o, n) = (old.display(), new.display());
        let running = Config::load(&files.write(&auth(&format!("key_file = \"{o}\"\n"))))
            .expect("the keyed file is valid");
        let steps = [
            (
                format!("key_file = \"{o}\"\n[[auth.accept]]\nid = 1\nkey_file = \"{n}\"\n"),
                vec![format!("auth.accept id 1: none -> \"{n}\"")],
                (KeyId(0), vec![(KeyId(1), [b'n'; 32])]),
            ),
            (
                format!(
                    "key_file = \"{n}\"\nkey_id = 1\n[[auth.accept]]\nid = 0\nkey_file = \"{o}\"\n"
                ),
                vec![
                    format!("auth.key_file: \"{o}\" -> \"{n}\""),
                    "auth.key_id: 0 -> 1".to_owned(),
                    format!("auth.accept id 0: none -> \"{o}\""),
                    format!("auth.accept id 1: \"{n}\" -> none"),
                ],
                (KeyId(1), vec![(KeyId(0), [b'o'; 32])]),
            ),
            (
                format!("key_file = \"{n}\"\nkey_id = 1\n"),
                vec![format!("auth.accept id 0: \"{o}\" -> none")],
                (KeyId(1), vec![]),
            ),
        ];
        let mut running = running;
        for (body, changes, (key_id, accept)) in steps {
            let reload = running
                .reload(&files.write(&auth(&body)))
                .unwrap_or_else(|e| panic!("{e}\n--- from\n{body}"));
            assert_eq!(reload.changes, changes, "{body}");
            for line in &reload.changes {
                assert!(!line.contains("ooo") && !line.contains("nnn"), "{line}");
            }
            let a = &reload.config.auth;
            assert_eq!(a.key_id, key_id);
            let accepted: Vec<(KeyId, Option<&[u8]>)> =
                a.accept.iter().map(|k| (k.id, k.key.as_deref())).collect();
            let expected: Vec<(KeyId, Option<&[u8]>)> =
                accept.iter().map(|(id, k)| (*id, Some(&k[..]))).collect();
            assert_eq!(accepted, expected, "{body}");
            running = reload.config;
        }
        assert_eq!(running.auth.key.as_deref(), Some(&[b'n'; 32][..]));

        // A new key in the same file is named as such, never shown.
        let body = format!(
            "key_file = \"{n}\"\nkey_id = 1\n[[auth.accept]]\nid = 2\nkey_file = \"{o}\"\n"
        );
        let accepting = running
            .reload(&files.write(&auth(&body)))
            .expect("valid")
            .config;
        key("key", &[b'x'; 32]);
        let reload = accepting.reload(&files.write(&auth(&body))).expect("valid");
        assert_eq!(
            reload.changes,
            ["auth.accept id 2: the key file holds a new key"]
        );
    }

    #[test]
    fn what_only_a_restart_applies_is_refused_at_its_line() {
        let files = Files::new("refused");
        let old = running(&files);
        let path = files.write(
            &BASE
                .replace("cluster = \"a\"", "cluster = \"b\"")
                .replace("port = 7475", "port = 7476")
                .replace("priority = 100", "priority = 150"),
        );
        let errors = old.reload(&path).expect_err("refused").0;
        let said: Vec<(Option<usize>, &str)> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    Some(1),
                    "cluster changed from \"a\" to \"b\": only a restart applies this, a reload cannot"
                ),
                (
                    Some(18),
                    "network.port changed from 7475 to 7476: only a restart applies this, a reload cannot"
                ),
            ]
        );
    }

    /// BASE with `generation = n` on line 4, below `priority`: the tables
    /// move down a line.
    fn generation(text: &str, n: u32) -> String {
        text.replace(
            "priority = 100\n",
            &format!("priority = 100\ngeneration = {n}\n"),
        )
    }

    /// BASE's text with a fourth member, whose table starts on line 17.
    fn with_member_4(text: &str) -> String {
        text.replace(
            "[network]",
            "[[member]]\nid = 4\naddress = \"10.0.0.4\"\n\n[network]",
        )
    }

    /// What a refused reload says: each error's line and message.
    fn refusals(old: &Config, path: &Path) -> Vec<(Option<usize>, String)> {
        let errors = old.reload(path).expect_err("refused").0;
        errors.into_iter().map(|e| (e.line, e.message)).collect()
    }

    #[test]
    fn a_member_list_change_without_the_next_generation_is_refused() {
        let files = Files::new("members-generation");
        let old = running(&files);
        // Not written: named at the table added, with the line to add.
        let path = files.write(&with_member_4(BASE));
        assert_eq!(
            refusals(&old, &path),
            [(
                Some(17),
                "the [[member]] list changed (members 4), so generation must go from 1 to 2, \
                 not 1 (not set, so its default); add `generation = 2`"
                    .to_owned()
            )]
        );
        // Written, but not one more: named at its line. A removal too.
        let path = files.write(&generation(&with_member_4(BASE), 3));
        assert_eq!(
            refusals(&old, &path),
            [(
                Some(4),
                "the [[member]] list changed (members 4), so generation must go from 1 to 2, \
                 not 3"
                    .to_owned()
            )]
        );
        let without_3 = BASE.replace("[[member]]\nid = 3\naddress = \"10.0.0.3\"\n\n", "");
        let path = files.write(&generation(&without_3, 1));
        assert_eq!(
            refusals(&old, &path),
            [(
                Some(4),
                "the [[member]] list changed (members 3), so generation must go from 1 to 2, \
                 not 1"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn two_members_in_one_generation_are_refused() {
        let files = Files::new("members-two");
        let old = running(&files);
        // Member 3 replaced by 4 is two changes: a removal and an addition.
        let swapped = BASE.replace("id = 3\n", "id = 4\n");
        let path = files.write(&generation(&swapped, 2));
        assert_eq!(
            refusals(&old, &path),
            [(
                Some(4),
                "members 3, 4 change at once: add or remove one member per generation, \
                 reloading every host between two changes"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn a_generation_without_a_member_list_change_is_refused() {
        let files = Files::new("members-same");
        let old = running(&files);
        let path = files.write(&generation(BASE, 2));
        assert_eq!(
            refusals(&old, &path),
            [(
                Some(4),
                "generation changed from 1 to 2 but the [[member]] list did not: raise it \
                 only with a change of the list"
                    .to_owned()
            )]
        );
    }

    /// One member added or removed with the next generation passes the
    /// config layer (the core decides whether the cluster may take it now),
    /// and the verdict names the new list and quorum.
    #[test]
    fn one_member_with_the_next_generation_is_taken() {
        let files = Files::new("members-taken");
        let old = running(&files);
        let path = files.write(&generation(&with_member_4(BASE), 2));
        let r = old.reload(&path).expect("one member added, generation 2");
        assert_eq!(
            r.changes,
            [
                "generation: 1 -> 2",
                "[[member]] ids: 1, 2, 3 (quorum 2) -> 1, 2, 3, 4 (quorum 3)"
            ]
        );
        assert_eq!(r.config.generation, 2);
        let without_3 = BASE.replace("[[member]]\nid = 3\naddress = \"10.0.0.3\"\n\n", "");
        let path = files.write(&generation(&without_3, 2));
        let r = old.reload(&path).expect("one member removed, generation 2");
        assert_eq!(
            r.changes,
            [
                "generation: 1 -> 2",
                "[[member]] ids: 1, 2, 3 (quorum 2) -> 1, 2 (quorum 2)"
            ]
        );
    }

    #[test]
    fn a_member_that_stays_keeps_its_settings() {
        let files = Files::new("members-settings");
        let old = running(&files);
        let path = files.write(&BASE.replace("10.0.0.2", "10.0.0.22"));
        assert_eq!(
            refusals(&old, &path),
            [(
                Some(9),
                "member 2 changed from address 10.0.0.2 to address 10.0.0.22: only a restart \
                 applies this, a reload cannot"
                    .to_owned()
            )]
        );
    }

    /// `regent reload` reaches the daemon of a file with errors, so that
    /// the daemon's answer names them; only a file that is not TOML leaves
    /// the CLI without a socket.
    #[test]
    fn the_socket_of_a_file_with_errors_is_still_found() {
        let file = Path::new("/etc/regent/x.toml");
        let socket = |text: &str| super::super::control_socket(text, file);
        let bad = BASE.replace("priority = 100", "priority = \"high\"");
        assert_eq!(socket(BASE), Ok(PathBuf::from("/run/regent/a.sock")));
        assert_eq!(socket(&bad), Ok(PathBuf::from("/run/regent/a.sock")));
        let relative = bad.replace("/run/regent/a.sock", "run/a.sock");
        assert_eq!(
            socket(&relative),
            Ok(PathBuf::from("/etc/regent/run/a.sock"))
        );
        let default = "cluster = \"db\"\nnode = 77\n";
        assert_eq!(socket(default), Ok(PathBuf::from("/run/regent/db.sock")));
        let broken = socket("cluster = \"db\"\nnode = \n").expect_err("not TOML");
        assert_eq!(broken.0[0].line, Some(2), "{broken}");
        assert!(socket("node = 1\n").is_err(), "names neither key");
    }

    #[test]
    fn an_invalid_file_is_refused_as_check_would() {
        let files = Files::new("invalid");
        let old = running(&files);
        let path = files.write(&BASE.replace("priority = 100", "priority = \"high\""));
        let errors = old.reload(&path).expect_err("refused");
        assert_eq!(errors.0[0].line, Some(3), "{errors}");
        assert_eq!(
            errors,
            Config::load(&path).expect_err("check refuses it too")
        );
    }
}
