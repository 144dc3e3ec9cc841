//! The file as written: the TOML document, read key by key into one mirror
//! per table. Every value keeps its span, so that errors found later can
//! point at its line. A value of the wrong type or out of its key's range,
//! and a key no table has, is an error here, and reading goes on: one bad
//! key hides no other.
//!
//! Architecture Invariant: each value is judged alone, against its key's
//! type and the range that type holds (an id is 1 to 65535, a port 0 to
//! 65535). Defaults, relations between keys, and limits that need a reason
//! (a port of 0, a heartbeat below the minimum) are `check.rs`'s. A key
//! written with an unusable value is `Key::Refused`, not `Key::Absent`, so
//! that `check.rs` neither calls it missing nor judges it again. Messages
//! speak TOML and the operator's words, never Rust's type names.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::defaults::limits;

/// One key of a table, as read.
#[derive(Clone, Debug, Default)]
pub(super) enum Key<T> {
    /// Not in the file.
    #[default]
    Absent,
    /// In the file with a value of the wrong type or out of range, already
    /// reported; the span is the value's.
    Refused(Range<usize>),
    /// In the file with this value.
    Set(Spanned<T>),
}

impl<T> Key<T> {
    /// The value with its span, if one was written and is usable.
    pub(super) fn set(self) -> Option<Spanned<T>> {
        match self {
            Key::Set(v) => Some(v),
            Key::Absent | Key::Refused(_) => None,
        }
    }

    /// The value with its span, if one was written and is usable.
    pub(super) fn as_set(&self) -> Option<&Spanned<T>> {
        match self {
            Key::Set(v) => Some(v),
            Key::Absent | Key::Refused(_) => None,
        }
    }

    /// The value, if one was written and is usable.
    pub(super) fn value(&self) -> Option<&T> {
        self.as_set().map(Spanned::get_ref)
    }

    /// Where the value is written, usable or not.
    pub(super) fn span(&self) -> Option<Range<usize>> {
        match self {
            Key::Absent => None,
            Key::Refused(span) => Some(span.clone()),
            Key::Set(v) => Some(v.span()),
        }
    }

    /// The key is written, with a value that was refused.
    pub(super) fn is_refused(&self) -> bool {
        matches!(self, Key::Refused(_))
    }
}

#[derive(Default)]
pub(super) struct RawConfig {
    pub(super) cluster: Key<String>,
    pub(super) node: Key<u32>,
    pub(super) priority: Key<u32>,
    pub(super) generation: Key<u32>,
    pub(super) member: Key<Vec<Spanned<RawMember>>>,
    pub(super) network: RawNetwork,
    pub(super) timing: RawTiming,
    pub(super) election: RawElection,
    pub(super) hooks: RawHooks,
    pub(super) auth: RawAuth,
    pub(super) state: RawState,
    pub(super) control: RawControl,
    pub(super) log: RawLog,
}

#[derive(Default)]
pub(super) struct RawMember {
    pub(super) id: Key<u32>,
    pub(super) address: Key<String>,
    pub(super) port: Key<u16>,
    pub(super) witness: Key<bool>,
    pub(super) transport: Key<String>,
}

#[derive(Default)]
pub(super) struct RawNetwork {
    pub(super) interface: Key<String>,
    pub(super) multicast: Key<String>,
    pub(super) multicast_loop: Key<bool>,
    pub(super) port: Key<u16>,
    pub(super) bind: Key<String>,
}

#[derive(Default)]
pub(super) struct RawTiming {
    pub(super) heartbeat_ms: Key<u64>,
    pub(super) dead_after_ms: Key<u64>,
    pub(super) lease_margin_ms: Key<u64>,
    pub(super) max_drift_ppm: Key<u32>,
}

#[derive(Default)]
pub(super) struct RawElection {
    pub(super) preempt: Key<bool>,
    pub(super) preempt_delay_ms: Key<u64>,
    pub(super) holdoff_ms: Key<u64>,
}

#[derive(Default)]
pub(super) struct RawHooks {
    pub(super) promote: Key<String>,
    pub(super) demote: Key<String>,
    pub(super) notify: Key<String>,
    pub(super) timeout_ms: Key<u64>,
    pub(super) demote_budget_ms: Key<u64>,
    pub(super) kill_grace_ms: Key<u64>,
    pub(super) refresh_interval_ms: Key<u64>,
    pub(super) output_max_bytes: Key<usize>,
    /// The health check's argv: a single path, or an array of strings.
    pub(super) check: Key<Vec<String>>,
    pub(super) check_interval_ms: Key<u64>,
    pub(super) check_timeout_ms: Key<u64>,
    pub(super) check_fall: Key<u32>,
    pub(super) check_rise: Key<u32>,
}

#[derive(Default)]
pub(super) struct RawAuth {
    pub(super) key_file: Key<String>,
    pub(super) key_id: Key<u8>,
    pub(super) accept: Key<Vec<Spanned<RawAccept>>>,
    pub(super) insecure: Key<bool>,
}

/// One `[[auth.accept]]`: a key accepted on receipt, never sent with.
#[derive(Default)]
pub(super) struct RawAccept {
    pub(super) id: Key<u8>,
    pub(super) key_file: Key<String>,
}

#[derive(Default)]
pub(super) struct RawState {
    pub(super) dir: Key<String>,
}

#[derive(Default)]
pub(super) struct RawControl {
    pub(super) socket: Key<String>,
    pub(super) group: Key<String>,
    pub(super) metrics_listen: Key<String>,
}

#[derive(Default)]
pub(super) struct RawLog {
    pub(super) target: Key<String>,
    pub(super) level: Key<String>,
}

/// The text is not TOML: the parser's first error, after which nothing
/// was read.
#[derive(Debug)]
pub(super) struct SyntaxError {
    /// Where the parser stopped, when it says.
    pub(super) span: Option<Range<usize>>,
    /// The parser's own words.
    pub(super) message: String,
}

/// A problem with one key of the file, and where.
#[derive(Debug)]
pub(super) struct RawError {
    /// The key, or its value.
    pub(super) span: Range<usize>,
    pub(super) problem: Problem,
}

/// What is wrong with a key; each displays as `key: reason`.
#[derive(Debug)]
pub(super) enum Problem {
    /// A key the table it is in does not have.
    UnknownKey {
        key: String,
        /// The table, as the operator writes it, or "the top level".
        table: &'static str,
        /// The keys that table has, as written in the file.
        known: Vec<&'static str>,
    },
    /// `[member]`, one table, where one `[[member]]` per host was meant
    /// (or `[auth.accept]` where `[[auth.accept]]`).
    SingleTable { key: String, of: Tables },
    /// A value of another type than its key's.
    WrongType {
        key: String,
        expected: Expected,
        /// The value, described.
        found: String,
    },
    /// A whole number outside its key's range.
    OutOfRange {
        key: String,
        /// The number as written.
        value: String,
        expected: Expected,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownKey { key, table, known } => {
                write!(f, "{key}: unknown key; {table} has {}", known.join(", "))
            }
            Problem::SingleTable { key, of } => write!(
                f,
                "{key}: [{key}] is a single table; write {}, once per {}",
                of.header, of.each
            ),
            Problem::WrongType {
                key,
                expected,
                found,
            } => write!(f, "{key}: expected {expected}, found {found}"),
            Problem::OutOfRange {
                key,
                value,
                expected,
            } => write!(f, "{key}: {value} is out of range: expected {expected}"),
        }
    }
}

/// What a key takes, in words.
#[derive(Debug)]
pub(super) enum Expected {
    /// A TOML integer from `min` to `max`, counting `unit` if it has one.
    Whole {
        min: i128,
        max: i128,
        unit: Option<&'static str>,
    },
    /// `true` or `false`.
    Bool,
    /// A TOML string.
    Text,
    /// A string, or an array of strings.
    Argv,
    /// A table, named as its header is written.
    Table(&'static str),
    /// An array of tables, one per thing it lists.
    Tables(Tables),
}

/// An array of tables, as the operator writes it: `[[member]]`, once per host.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tables {
    /// The header, `[[member]]`.
    header: &'static str,
    /// What each table stands for: "host".
    each: &'static str,
}

/// The `[[member]]` tables: one per host.
const MEMBERS: Tables = Tables {
    header: "[[member]]",
    each: "host",
};

/// The `[[auth.accept]]` tables: one per key accepted besides the sending one.
const ACCEPTED_KEYS: Tables = Tables {
    header: "[[auth.accept]]",
    each: "accepted key",
};

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Whole {
                min,
                max,
                unit: None,
            } => write!(f, "a whole number from {min} to {max}"),
            Expected::Whole {
                min,
                max,
                unit: Some(unit),
            } => write!(f, "a whole number of {unit} from {min} to {max}"),
            Expected::Bool => f.write_str("true or false"),
            Expected::Text => f.write_str("a string in quotes"),
            Expected::Argv => f.write_str(
                "a path in quotes, or an array of strings (the program and its arguments)",
            ),
            Expected::Table(header) => write!(f, "a table ({header})"),
            Expected::Tables(of) => write!(f, "one {} table per {}", of.header, of.each),
        }
    }
}

/// Reads `text` into the raw mirror, with every problem found in it. Fails
/// only when the text is not TOML.
pub(super) fn read(text: &str) -> Result<(RawConfig, Vec<RawError>), SyntaxError> {
    let document = DeTable::parse(text).map_err(|e| SyntaxError {
        span: e.span(),
        message: e.message().to_owned(),
    })?;
    let mut errors = Vec::new();
    let mut top = Table {
        entries: document.into_inner(),
        prefix: String::new(),
        header: "the top level",
        known: Vec::new(),
        errors: &mut errors,
    };
    let raw = top.config();
    top.finish();
    Ok((raw, errors))
}

/// One table of the document. Each key is taken out as it is read; what is
/// left at the end is unknown.
struct Table<'e, 'i> {
    entries: DeTable<'i>,
    /// Put before a key's name in messages: "timing.", or "" at the top.
    prefix: String,
    /// The table as the operator writes it, for the unknown-key message.
    header: &'static str,
    /// The keys read so far, as written in the file.
    known: Vec<&'static str>,
    errors: &'e mut Vec<RawError>,
}

impl<'i> Table<'_, 'i> {
    fn config(&mut self) -> RawConfig {
        RawConfig {
            cluster: self.text("cluster"),
            node: self.whole("node", 1, limits::MEMBER_ID_MAX.into(), None),
            priority: self.whole("priority", 0, u32::MAX.into(), None),
            generation: self.whole("generation", 1, u32::MAX.into(), None),
            member: self.tables("member", MEMBERS, |t| t.member()),
            network: self.table("network", "[network]", |t| t.network()),
            timing: self.table("timing", "[timing]", |t| t.timing()),
            election: self.table("election", "[election]", |t| t.election()),
            hooks: self.table("hooks", "[hooks]", |t| t.hooks()),
            auth: self.table("auth", "[auth]", |t| t.auth()),
            state: self.table("state", "[state]", |t| RawState { dir: t.text("dir") }),
            control: self.table("control", "[control]", |t| t.control()),
            log: self.table("log", "[log]", |t| RawLog {
                target: t.text("target"),
                level: t.text("level"),
            }),
        }
    }

    fn member(&mut self) -> RawMember {
        RawMember {
            id: self.whole("id", 1, limits::MEMBER_ID_MAX.into(), None),
            address: self.text("address"),
            port: self.whole("port", 0, u16::MAX.into(), None),
            witness: self.boolean("witness"),
            transport: self.text("transport"),
        }
    }

    fn network(&mut self) -> RawNetwork {
        RawNetwork {
            interface: self.text("interface"),
            multicast: self.text("multicast"),
            multicast_loop: self.boolean("multicast_loop"),
            port: self.whole("port", 0, u16::MAX.into(), None),
            bind: self.text("bind"),
        }
    }

    fn timing(&mut self) -> RawTiming {
        RawTiming {
            heartbeat_ms: self.millis("heartbeat_ms"),
            dead_after_ms: self.millis("dead_after_ms"),
            lease_margin_ms: self.millis("lease_margin_ms"),
            max_drift_ppm: self.whole("max_drift_ppm", 0, u32::MAX.into(), Some("ppm")),
        }
    }

    fn election(&mut self) -> RawElection {
        RawElection {
            preempt: self.boolean("preempt"),
            preempt_delay_ms: self.millis("preempt_delay_ms"),
            holdoff_ms: self.millis("holdoff_ms"),
        }
    }

    fn hooks(&mut self) -> RawHooks {
        // usize is 64 bits on every target the daemon builds for.
        let bytes_max = i128::try_from(usize::MAX).unwrap_or(i128::from(u64::MAX));
        RawHooks {
            promote: self.text("promote"),
            demote: self.text("demote"),
            notify: self.text("notify"),
            timeout_ms: self.millis("timeout_ms"),
            demote_budget_ms: self.millis("demote_budget_ms"),
            kill_grace_ms: self.millis("kill_grace_ms"),
            refresh_interval_ms: self.millis("refresh_interval_ms"),
            output_max_bytes: self.whole("output_max_bytes", 0, bytes_max, Some("bytes")),
            check: self.argv("check"),
            check_interval_ms: self.millis("check_interval_ms"),
            check_timeout_ms: self.millis("check_timeout_ms"),
            check_fall: self.whole("check_fall", 0, u32::MAX.into(), None),
            check_rise: self.whole("check_rise", 0, u32::MAX.into(), None),
        }
    }

    fn auth(&mut self) -> RawAuth {
        RawAuth {
            key_file: self.text("key_file"),
            key_id: self.whole("key_id", 0, u8::MAX.into(), None),
            accept: self.tables("accept", ACCEPTED_KEYS, |t| RawAccept {
                id: t.whole("id", 0, u8::MAX.into(), None),
                key_file: t.text("key_file"),
            }),
            insecure: self.boolean("insecure"),
        }
    }

    fn control(&mut self) -> RawControl {
        RawControl {
            socket: self.text("socket"),
            group: self.text("group"),
            metrics_listen: self.text("metrics_listen"),
        }
    }

    /// Takes key `name` out of the table, noting that the table has it.
    fn take(&mut self, name: &'static str, shown: &'static str) -> Option<Spanned<DeValue<'i>>> {
        self.known.push(shown);
        self.entries.remove(name)
    }

    /// The key's full name, as messages give it.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Reports a value of the wrong type; returns its span.
    fn wrong_type(
        &mut self,
        name: &str,
        value: &Spanned<DeValue<'_>>,
        expected: Expected,
    ) -> Range<usize> {
        self.errors.push(RawError {
            span: value.span(),
            problem: Problem::WrongType {
                key: self.key(name),
                expected,
                found: describe(value.get_ref()),
            },
        });
        value.span()
    }

    /// A whole number from `min` to `max`, all of which `T` holds.
    fn whole<T: TryFrom<i128>>(
        &mut self,
        name: &'static str,
        min: i128,
        max: i128,
        unit: Option<&'static str>,
    ) -> Key<T> {
        let Some(value) = self.take(name, name) else {
            return Key::Absent;
        };
        let expected = Expected::Whole { min, max, unit };
        let DeValue::Integer(n) = value.get_ref() else {
            return Key::Refused(self.wrong_type(name, &value, expected));
        };
        let span = value.span();
        // A number too long even for i128 is out of range too.
        let number = i128::from_str_radix(n.as_str(), n.radix())
            .ok()
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok());
        match number {
            Some(n) => Key::Set(Spanned::new(span, n)),
            None => {
                self.errors.push(RawError {
                    span: span.clone(),
                    problem: Problem::OutOfRange {
                        key: self.key(name),
                        value: n.to_string(),
                        expected,
                    },
                });
                Key::Refused(span)
            }
        }
    }

    /// A `*_ms` key: a duration in whole milliseconds.
    fn millis(&mut self, name: &'static str) -> Key<u64> {
        self.whole(name, 0, u64::MAX.into(), Some("milliseconds"))
    }

    fn boolean(&mut self, name: &'static str) -> Key<bool> {
        let Some(value) = self.take(name, name) else {
            return Key::Absent;
        };
        match value.get_ref() {
            DeValue::Boolean(b) => Key::Set(Spanned::new(value.span(), *b)),
            _ => Key::Refused(self.wrong_type(name, &value, Expected::Bool)),
        }
    }

    fn text(&mut self, name: &'static str) -> Key<String> {
        let Some(value) = self.take(name, name) else {
            return Key::Absent;
        };
        match value.get_ref() {
            DeValue::String(s) => Key::Set(Spanned::new(value.span(), s.to_string())),
            _ => Key::Refused(self.wrong_type(name, &value, Expected::Text)),
        }
    }

    /// A program and its arguments: a single path, or an array of strings.
    fn argv(&mut self, name: &'static str) -> Key<Vec<String>> {
        let Some(value) = self.take(name, name) else {
            return Key::Absent;
        };
        let span = value.span();
        match value.get_ref() {
            DeValue::String(s) => Key::Set(Spanned::new(span, vec![s.to_string()])),
            DeValue::Array(items) => {
                let mut argv = Vec::new();
                let mut refused = false;
                for item in items {
                    match item.get_ref() {
                        DeValue::String(s) => argv.push(s.to_string()),
                        _ => {
                            self.wrong_type(name, item, Expected::Text);
                            refused = true;
                        }
                    }
                }
                if refused {
                    Key::Refused(span)
                } else {
                    Key::Set(Spanned::new(span, argv))
                }
            }
            _ => Key::Refused(self.wrong_type(name, &value, Expected::Argv)),
        }
    }

    /// The array of tables `name` (`[[member]]`, say), each read by `read`
    /// and kept with its span.
    fn tables<R>(
        &mut self,
        name: &'static str,
        of: Tables,
        read: impl Fn(&mut Table<'_, 'i>) -> R,
    ) -> Key<Vec<Spanned<R>>> {
        let Some(value) = self.take(name, of.header) else {
            return Key::Absent;
        };
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                let mut tables = Vec::new();
                let mut refused = false;
                for item in items {
                    let item_span = item.span();
                    match item.into_inner() {
                        DeValue::Table(entries) => {
                            let table = self.sub(entries, name, of.header, &read);
                            tables.push(Spanned::new(item_span, table));
                        }
                        other => {
                            let item = Spanned::new(item_span, other);
                            self.wrong_type(name, &item, Expected::Tables(of));
                            refused = true;
                        }
                    }
                }
                if refused {
                    Key::Refused(span)
                } else {
                    Key::Set(Spanned::new(span, tables))
                }
            }
            DeValue::Table(_) => {
                self.errors.push(RawError {
                    span: span.clone(),
                    problem: Problem::SingleTable {
                        key: self.key(name),
                        of,
                    },
                });
                Key::Refused(span)
            }
            other => {
                let value = Spanned::new(span, other);
                Key::Refused(self.wrong_type(name, &value, Expected::Tables(of)))
            }
        }
    }

    /// The table `name`, read by `read`; all defaults when it is absent or
    /// is not a table (reported).
    fn table<R: Default>(
        &mut self,
        name: &'static str,
        header: &'static str,
        read: impl FnOnce(&mut Table<'_, 'i>) -> R,
    ) -> R {
        let Some(value) = self.take(name, header) else {
            return R::default();
        };
        let span = value.span();
        match value.into_inner() {
            // Keys in it are named "network.port", and so on.
            DeValue::Table(entries) => self.sub(entries, name, header, read),
            other => {
                self.wrong_type(name, &Spanned::new(span, other), Expected::Table(header));
                R::default()
            }
        }
    }

    /// Reads the nested table `name` with `read`, then reports its unknown keys.
    fn sub<R>(
        &mut self,
        entries: DeTable<'i>,
        name: &str,
        header: &'static str,
        read: impl FnOnce(&mut Table<'_, 'i>) -> R,
    ) -> R {
        let mut table = Table {
            entries,
            prefix: format!("{}{name}.", self.prefix),
            header,
            known: Vec::new(),
            errors: &mut *self.errors,
        };
        let raw = read(&mut table);
        table.finish();
        raw
    }

    /// Reports every key left: the ones the table does not have.
    fn finish(self) {
        for (key, _) in self.entries {
            self.errors.push(RawError {
                span: key.span(),
                problem: Problem::UnknownKey {
                    key: format!("{}{}", self.prefix, key.get_ref()),
                    table: self.header,
                    known: self.known.clone(),
                },
            });
        }
    }
}

/// A value as the operator would name it, for "found ...".
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(n) => format!("the whole number {n}"),
        DeValue::Float(x) => format!("the decimal number {x}"),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => match (d.date, d.time) {
            (Some(_), Some(_)) => format!("the date and time {d}"),
            (Some(_), None) => format!("the date {d}"),
            (None, _) => format!("the time {d}"),
        },
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}
