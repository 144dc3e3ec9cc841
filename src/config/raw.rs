//! The file as written: one serde mirror per TOML table. Every value keeps
//! its span (`toml::Spanned`), so that errors found later can point at its
//! line, and every table refuses unknown keys.
//!
//! Architecture Invariant: no judgement beyond what TOML and serde enforce
//! (syntax, types, unknown keys). Values are kept as written, missing ones as
//! `None`; ranges, defaults and relations between keys are `check.rs`'s.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) cluster: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<i64>>,
    pub(super) priority: Option<Spanned<u32>>,
    pub(super) member: Option<Vec<Spanned<RawMember>>>,
    #[serde(default)]
    pub(super) network: RawNetwork,
    #[serde(default)]
    pub(super) timing: RawTiming,
    #[serde(default)]
    pub(super) election: RawElection,
    #[serde(default)]
    pub(super) hooks: RawHooks,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) control: RawControl,
    #[serde(default)]
    pub(super) log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMember {
    pub(super) id: Option<Spanned<i64>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<u16>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) interface: Option<Spanned<String>>,
    pub(super) multicast: Option<Spanned<String>>,
    pub(super) multicast_loop: Option<Spanned<bool>>,
    pub(super) port: Option<Spanned<u16>>,
    pub(super) bind: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTiming {
    pub(super) heartbeat_ms: Option<Spanned<u64>>,
    pub(super) dead_after_ms: Option<Spanned<u64>>,
    pub(super) lease_margin_ms: Option<Spanned<u64>>,
    pub(super) max_drift_ppm: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawElection {
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay_ms: Option<u64>,
    pub(super) holdoff_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) promote: Option<Spanned<String>>,
    pub(super) demote: Option<Spanned<String>>,
    pub(super) notify: Option<Spanned<String>>,
    pub(super) timeout_ms: Option<Spanned<u64>>,
    pub(super) demote_budget_ms: Option<Spanned<u64>>,
    pub(super) kill_grace_ms: Option<u64>,
    pub(super) refresh_interval_ms: Option<u64>,
    pub(super) output_max_bytes: Option<Spanned<usize>>,
    pub(super) check: Option<Spanned<RawArgv>>,
    pub(super) check_interval_ms: Option<Spanned<u64>>,
    pub(super) check_timeout_ms: Option<Spanned<u64>>,
    pub(super) check_fall: Option<Spanned<u32>>,
    pub(super) check_rise: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) insecure: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) metrics_listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) target: Option<Spanned<String>>,
    pub(super) level: Option<Spanned<String>>,
}

/// The health check's argv: a single path, or an array of strings.
pub(super) struct RawArgv(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for RawArgv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawArgv, D::Error> {
        struct ArgvVisitor;

        impl<'de> Visitor<'de> for ArgvVisitor {
            type Value = RawArgv;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path, or an array of strings (program and arguments)")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawArgv, E> {
                Ok(RawArgv(vec![s.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawArgv, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(RawArgv(argv))
            }
        }

        deserializer.deserialize_any(ArgvVisitor)
    }
}
