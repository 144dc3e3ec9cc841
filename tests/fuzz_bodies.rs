//! The fuzz targets' bodies (`fuzz/bodies.rs`) on stable Rust: proptest
//! feeds them arbitrary and mutated inputs, and every reproducer saved in
//! `fuzz/regressions/<target>/` is replayed. The bodies hold the properties:
//! decoding and config parsing never panic, a decoded datagram re-encodes to
//! its own bytes, an accepted config is consistent, and a node fed hostile
//! authentic messages never lowers or skips persisting a promise.
//!
//! proptest prints the minimal failing input and records its seed in
//! `proptest-regressions/`, where later runs replay it first.
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz_bodies` runs longer.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use proptest::prelude::*;
use regentd::core::{Body, Epoch, Incarnation, Message, NodeId, Seq};
use regentd::wire::{Codec, MAX_DATAGRAM};

/// The reference configuration, every key documented.
const REFERENCE: &str = include_str!("../conf/regent.toml");

/// A small valid configuration, as a test would write it.
const SMALL: &str = "cluster = \"t\"\nnode = 2\npriority = 50\n\n\
    [[member]]\nid = 1\naddress = \"10.0.0.1\"\n[[member]]\nid = 2\naddress = \"10.0.0.2\"\n\
    [[member]]\nid = 3\naddress = \"10.0.0.3\"\n\n[network]\nport = 7475\n\n\
    [timing]\nheartbeat_ms = 50\ndead_after_ms = 200\n\n[hooks]\npromote = \"/bin/true\"\n\n\
    [auth]\ninsecure = true\n";

/// Pieces a mutation may insert: TOML syntax, keys, odd values.
const PIECES: &[&str] = &[
    "=",
    "[",
    "]",
    "[[member]]",
    "\"",
    "'",
    "#",
    "\n",
    "{",
    "}",
    ",",
    ".",
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "1e400",
    "nan",
    "inf",
    "true",
    "\"\"",
    "\\u0000",
    "\u{feff}",
    "é",
    "\0",
    "node = 0",
    "id = 2",
    "dead_after_ms = 1",
    "heartbeat_ms = 0",
    "multicast = \"[ff02::1]:0\"",
    "address = \"::\"",
    "[timing]",
    "[hooks]",
    "priority = ",
    "cluster = \"",
    "key_file = \"/\"",
    "timeout_ms = 18446744073709551615",
    "\t",
    "\r\n",
];

/// One edit of a configuration text.
#[derive(Clone, Debug)]
enum Edit {
    /// Insert a piece at a byte position.
    Insert(proptest::sample::Index, &'static str),
    /// Remove a range of bytes.
    Remove(proptest::sample::Index, usize),
    /// Repeat a line.
    DuplicateLine(proptest::sample::Index),
    /// Remove a line.
    DropLine(proptest::sample::Index),
    /// Swap two lines.
    SwapLines(proptest::sample::Index, proptest::sample::Index),
    /// Replace the first number at or after a position by another.
    Number(proptest::sample::Index, u64),
}

fn edit() -> impl Strategy<Value = Edit> {
    let idx = any::<proptest::sample::Index>;
    prop_oneof![
        (idx(), proptest::sample::select(PIECES)).prop_map(|(i, p)| Edit::Insert(i, p)),
        (idx(), 1usize..40).prop_map(|(i, n)| Edit::Remove(i, n)),
        idx().prop_map(Edit::DuplicateLine),
        idx().prop_map(Edit::DropLine),
        (idx(), idx()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (
            idx(),
            prop_oneof![
                0u64..10,
                Just(u64::MAX),
                Just(u64::from(u32::MAX) + 1),
                any::<u64>()
            ]
        )
            .prop_map(|(i, n)| Edit::Number(i, n)),
    ]
}

/// The nearest char boundary at or before `i`.
fn boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, e: &Edit) -> String {
    let mut lines: Vec<&str> = text.split('\n').collect();
    match e {
        Edit::Insert(at, piece) => {
            let i = boundary(text, at.index(text.len() + 1));
            format!("{}{piece}{}", &text[..i], &text[i..])
        }
        Edit::Remove(at, n) => {
            let i = boundary(text, at.index(text.len() + 1));
            let j = boundary(text, i + n);
            format!("{}{}", &text[..i], &text[j..])
        }
        Edit::DuplicateLine(at) => {
            let i = at.index(lines.len());
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Edit::DropLine(at) => {
            lines.remove(at.index(lines.len()));
            lines.join("\n")
        }
        Edit::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            lines.join("\n")
        }
        Edit::Number(at, n) => {
            let from = boundary(text, at.index(text.len() + 1));
            match text[from..].find(|c: char| c.is_ascii_digit()) {
                Some(k) => {
                    let start = from + k;
                    let len = text[start..]
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(text.len() - start);
                    format!("{}{n}{}", &text[..start], &text[start + len..])
                }
                None => text.to_owned(),
            }
        }
    }
}

/// A valid datagram to start a mutation from.
fn valid_datagram(from: u32, seq: u64, epoch: u64) -> Vec<u8> {
    let codec = Codec::new(bodies::CLUSTER, Some(bodies::KEY));
    let msg = Message {
        from: NodeId(from),
        incarnation: Incarnation(1),
        seq: Seq(seq),
        priority: 100,
        known_epoch: Epoch(epoch),
        membership: Default::default(),
        body: Body::Claim {
            epoch: Epoch(epoch + 1),
        },
    };
    codec.encode(&msg).expect("a claim fits")
}

#[test]
fn both_valid_configs_are_accepted() {
    // The mutations start from valid files; make sure they are.
    for text in [REFERENCE, SMALL] {
        let parsed = regentd::config::Config::parse(
            text,
            std::path::Path::new("regent.toml"),
            regentd::config::DiskChecks::Skip,
        );
        assert!(parsed.is_ok(), "{parsed:?}");
        bodies::config_text(text);
    }
}

#[test]
fn saved_fuzz_reproducers_pass() {
    // Inputs the fuzzer once found (or that were written to pin a bug).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    type Body = fn(&[u8]);
    let targets: [(&str, Body); 3] = [
        ("decode", bodies::decode),
        ("config", bodies::config),
        ("node", bodies::node),
    ];
    let mut ran = 0;
    for (name, body) in targets {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read_dir entry").path();
            let data = std::fs::read(&path).expect("read reproducer");
            println!("{name}: {}", path.display());
            body(&data);
            ran += 1;
        }
    }
    println!("{ran} reproducers replayed");
}

/// Epoch exhaustion, found by the `node` target: once a node has promised
/// `u64::MAX` (an insider's `known_epoch`, or a state file), `Epoch::next()`
/// saturates to the same epoch. The core now refuses to claim when the epoch
/// cannot grow, so no epoch is ever led twice.
#[test]
fn epoch_exhaustion_never_leads_an_epoch_twice() {
    use regentd::core::{
        CoreConfig, Effect, HookDone, HookKind, HookOutcome, Input, Node, Persisted, Time, Timing,
    };
    use std::time::Duration;
    let cfg = CoreConfig {
        id: NodeId(1),
        members: vec![NodeId(1)],
        generation: 1,
        priority: 100,
        timing: Timing {
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_millis(300),
            lease_margin: Duration::from_millis(20),
            max_drift_ppm: 10_000,
            demote_budget: Duration::from_millis(25),
        },
        preempt: true,
        preempt_delay: Duration::from_millis(500),
        holdoff: Duration::from_millis(1000),
        witness: false,
    };
    // It led epoch u64::MAX before a restart.
    let promised = Epoch(u64::MAX);
    let mut node = Node::new(
        cfg,
        Persisted {
            promised,
            leader: None,
            membership: None,
        },
        Incarnation(2),
        1,
        Time::ZERO,
    );
    let mut promotes = Vec::new();
    let mut now = Time::ZERO;
    for _ in 0..100 {
        while let Some(effect) = node.poll_effect() {
            if let Effect::Persist(p) = effect {
                node.handle(
                    now,
                    Input::Persisted {
                        promised: p.promised,
                    },
                );
            } else if let Effect::RunHook(req) = effect {
                if req.kind == HookKind::Promote {
                    promotes.push(req.epoch);
                }
                node.handle(
                    now,
                    Input::HookDone(HookDone {
                        kind: req.kind,
                        epoch: req.epoch,
                        outcome: HookOutcome::Ok,
                    }),
                );
            }
        }
        now = node.next_timeout().unwrap_or(now).max(now);
        node.handle_timeout(now);
    }
    assert!(
        promotes.iter().all(|&e| e > promised),
        "promoted epoch {promotes:?} after promising {promised}: an epoch led twice"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn decode_body_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..=MAX_DATAGRAM + 8)) {
        bodies::decode(&data);
    }

    #[test]
    fn decode_body_on_mutated_datagrams(
        from in 0u32..5,
        seq in any::<u64>(),
        epoch in 0u64..1000,
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
    ) {
        // Payloads close to valid ones reach deep into the decoder once the
        // body seals them.
        let mut bytes = valid_datagram(from, seq, epoch);
        for (at, byte) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        bodies::decode(&bytes);
        // And the payload alone, which the body seals with the right key.
        if bytes.len() > 33 {
            bodies::decode(&bytes[1..bytes.len() - 32]);
        }
    }

    #[test]
    fn config_body_on_arbitrary_text(text in ".{0,400}") {
        bodies::config_text(&text);
    }

    #[test]
    fn config_body_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        bodies::config(&data);
    }

    #[test]
    fn config_body_on_mutated_valid_configs(
        reference in any::<bool>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let mut text = if reference { REFERENCE } else { SMALL }.to_owned();
        for e in &edits {
            text = apply(&text, e);
        }
        bodies::config_text(&text);
    }

    #[test]
    fn node_body_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        bodies::node(&data);
    }
}
