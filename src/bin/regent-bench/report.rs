//! The results: figures side by side per agent, the targets they are held
//! to, the human table and the JSON file.
//!
//! Targets are goals, not asserts: a target not met is printed as such and
//! changes no exit code.

use std::fmt::Write as _;

use crate::agent::{Agent, Profile, COMPARISON};
use crate::probe::INTERVAL;

/// Which way a figure improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Lower,
    Neither,
}

/// One figure of one scenario, for regent and (maybe) keepalived.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: &'static str,
    pub profile: Profile,
    /// Hosts that can hold the VIP.
    pub hosts: usize,
    /// Members beside them that only vote (regent's; keepalived has none
    /// and runs on the hosts alone).
    pub witnesses: usize,
    pub figure: String,
    pub unit: &'static str,
    pub better: Better,
    /// Slower than keepalived by design: regent waits for a quorum or for
    /// the old leader's lease, keepalived does not.
    pub quorum_cost: bool,
    /// regent, keepalived.
    pub values: [Option<f64>; 2],
}

/// The raw samples behind a distribution, kept for the JSON file.
#[derive(Clone, Debug)]
pub struct Series {
    pub scenario: &'static str,
    pub profile: Profile,
    pub hosts: usize,
    pub witnesses: usize,
    pub agent: Agent,
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    pub failures: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub series: Vec<Series>,
    pub notes: Vec<String>,
}

/// One key of a figure: scenario, profile, hosts and witnesses, figure name.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    pub scenario: &'static str,
    pub profile: Profile,
    pub hosts: usize,
    pub witnesses: usize,
    pub agent: Agent,
    pub figure: &'a str,
    pub unit: &'static str,
}

fn slot(agent: Agent) -> usize {
    match agent {
        Agent::Regent => 0,
        Agent::Keepalived => 1,
    }
}

impl Results {
    fn row(&mut self, k: &Key<'_>, better: Better, quorum_cost: bool) -> &mut Row {
        let i = self.rows.iter().position(|r| {
            r.scenario == k.scenario
                && r.profile == k.profile
                && r.hosts == k.hosts
                && r.witnesses == k.witnesses
                && r.figure == k.figure
        });
        let i = match i {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    scenario: k.scenario,
                    profile: k.profile,
                    hosts: k.hosts,
                    witnesses: k.witnesses,
                    figure: k.figure.to_owned(),
                    unit: k.unit,
                    better,
                    quorum_cost,
                    values: [None, None],
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    /// One figure of one agent.
    pub fn value(&mut self, k: &Key<'_>, better: Better, v: f64) {
        self.row(k, better, false).values[slot(k.agent)] = Some(v);
    }

    /// Like [`Results::value`], for a figure where the quorum costs time.
    pub fn quorum_value(&mut self, k: &Key<'_>, v: f64) {
        self.row(k, Better::Lower, true).values[slot(k.agent)] = Some(v);
    }

    /// A distribution: rows for p50, p90, p99 and max, plus the samples.
    pub fn dist(&mut self, k: &Key<'_>, samples: &[f64], failures: Vec<String>, quorum_cost: bool) {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)] {
            let figure = format!("{} {name}", k.figure);
            let key = Key {
                figure: &figure,
                ..*k
            };
            if let Some(v) = percentile(&sorted, p) {
                self.row(&key, Better::Lower, quorum_cost).values[slot(k.agent)] = Some(v);
            }
        }
        let figure = format!("{} trials", k.figure);
        self.value(
            &Key {
                figure: &figure,
                unit: "n",
                ..*k
            },
            Better::Neither,
            samples.len() as f64,
        );
        if !failures.is_empty() {
            let figure = format!("{} failed trials", k.figure);
            self.value(
                &Key {
                    figure: &figure,
                    unit: "n",
                    ..*k
                },
                Better::Lower,
                failures.len() as f64,
            );
        }
        self.series.push(Series {
            scenario: k.scenario,
            profile: k.profile,
            hosts: k.hosts,
            witnesses: k.witnesses,
            agent: k.agent,
            name: k.figure.to_owned(),
            unit: k.unit,
            samples: samples.to_vec(),
            failures,
        });
    }

    /// The value of a figure for one agent, with `(hosts, witnesses)`.
    pub fn get(
        &self,
        scenario: &str,
        profile: Profile,
        members: (usize, usize),
        figure: &str,
        agent: Agent,
    ) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| {
                r.scenario == scenario
                    && r.profile == profile
                    && (r.hosts, r.witnesses) == members
                    && r.figure == figure
            })
            .and_then(|r| r.values[slot(agent)])
    }
}

/// Hosts and witnesses in words: `3 hosts`, `2 hosts + 1 witness`.
pub fn members(hosts: usize, witnesses: usize) -> String {
    match witnesses {
        0 => format!("{hosts} hosts"),
        1 => format!("{hosts} hosts + 1 witness"),
        w => format!("{hosts} hosts + {w} witnesses"),
    }
}

/// Hosts and witnesses for the table's column: `3`, `2+1`.
fn members_cell(hosts: usize, witnesses: usize) -> String {
    match witnesses {
        0 => hosts.to_string(),
        w => format!("{hosts}+{w}"),
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A goal and whether the run met it.
#[derive(Clone, Debug)]
pub struct Target {
    pub goal: String,
    pub figure: String,
    pub met: bool,
}

/// Two figures this close count as equal: the probe's resolution for
/// times, a hair for anything else.
fn tolerance(unit: &str) -> f64 {
    if unit == "ms" {
        INTERVAL.as_secs_f64() * 1000.0
    } else {
        1e-9
    }
}

/// Holds regent's figures to the targets.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let mut limit = |goal: String, v: Option<f64>, max: f64, unit: &str| {
        if let Some(v) = v {
            out.push(Target {
                goal,
                figure: format!("{} {unit} (limit {} {unit})", fmt(v), fmt(max)),
                met: v <= max,
            });
        }
    };
    let mut crash_rows: Vec<(Profile, (usize, usize))> = Vec::new();
    for row in &r.rows {
        let members = (row.hosts, row.witnesses);
        if (row.scenario == "crash" || row.scenario == "scale")
            && row.figure == "downtime p50"
            && !crash_rows.contains(&(row.profile, members))
        {
            crash_rows.push((row.profile, members));
        }
    }
    for (profile, (hosts, witnesses)) in crash_rows {
        let get = |fig: &str| {
            r.get("scale", profile, (hosts, witnesses), fig, Agent::Regent)
                .or_else(|| r.get("crash", profile, (hosts, witnesses), fig, Agent::Regent))
        };
        let dead = profile.dead_after_ms as f64;
        let who = members(hosts, witnesses);
        limit(
            format!(
                "crash downtime p50 <= dead_after + 15 ms ({}, {who})",
                profile.name
            ),
            get("downtime p50"),
            dead + 15.0,
            "ms",
        );
        limit(
            format!(
                "crash downtime p99 <= dead_after + 40 ms ({}, {who})",
                profile.name
            ),
            get("downtime p99"),
            dead + 40.0,
            "ms",
        );
    }
    for row in r.rows.iter().filter(|row| row.values[0].is_some()) {
        let v = row.values[0];
        // The profile, and the topology when it is not one LAN of hosts.
        let p = match row.witnesses {
            0 => row.profile.name.to_owned(),
            _ => format!(
                "{}, {}",
                row.profile.name,
                members(row.hosts, row.witnesses)
            ),
        };
        match (row.scenario, row.figure.as_str()) {
            ("graceful", "downtime p50") => limit(
                format!("graceful (SIGTERM) downtime p50 <= 15 ms ({p})"),
                v,
                15.0,
                "ms",
            ),
            ("step-down", "downtime p50") => limit(
                format!("step-down downtime p50 <= 15 ms ({p})"),
                v,
                15.0,
                "ms",
            ),
            (
                "rolling-restart" | "rolling-restart-exact-quorum",
                "leadership changes per follower restart, max",
            ) => limit(
                format!(
                    "{}: 0 leadership changes per follower restart ({p})",
                    row.scenario
                ),
                v,
                0.0,
                "",
            ),
            ("rolling-restart" | "rolling-restart-exact-quorum", "follower restart outage max") => {
                limit(
                    format!("{}: 0 ms outage per follower restart ({p})", row.scenario),
                    v,
                    0.0,
                    "ms",
                )
            }
            ("rolling-restart", "leader restart outage p50") => limit(
                format!("rolling-restart: leader restart outage p50 <= 15 ms ({p})"),
                v,
                15.0,
                "ms",
            ),
            ("partition", "more than one holder, total") => limit(
                format!("partition: 0 ms with more than one VIP holder ({p})"),
                v,
                0.0,
                "ms",
            ),
            ("loss", "leadership changes") => {
                limit(format!("20% loss: 0 leadership changes ({p})"), v, 0.0, "")
            }
            ("idle", "RSS per daemon max") if row.profile == COMPARISON => limit(
                format!("idle RSS <= 4 MiB per daemon ({p}, {} hosts)", row.hosts),
                v,
                4.0,
                "MiB",
            ),
            ("idle", "CPU per daemon max") if row.profile == COMPARISON => limit(
                format!("idle CPU <= 0.2% per daemon ({p}, {} hosts)", row.hosts),
                v,
                0.2,
                "%",
            ),
            _ => {}
        }
    }
    // Safety across every scenario, not only the partition.
    let doubled: Vec<String> = r
        .rows
        .iter()
        .filter(|row| row.figure.starts_with("more than one holder") && row.scenario != "partition")
        .filter_map(|row| {
            row.values[0].filter(|&v| v > 0.0).map(|v| {
                format!(
                    "{} {} {}h: {} ms",
                    row.scenario,
                    row.profile.name,
                    members_cell(row.hosts, row.witnesses),
                    fmt(v)
                )
            })
        })
        .collect();
    if r.rows
        .iter()
        .any(|row| row.figure.starts_with("more than one holder"))
    {
        out.push(Target {
            goal: "no scenario ever shows more than one VIP holder (crashed host aside)".into(),
            figure: if doubled.is_empty() {
                "0 ms everywhere".into()
            } else {
                doubled.join("; ")
            },
            met: doubled.is_empty(),
        });
    }
    // Against keepalived: every comparable figure, quorum costs aside.
    let mut worse = Vec::new();
    let mut compared = 0;
    for row in &r.rows {
        let ([Some(a), Some(b)], Better::Lower) = (row.values, row.better) else {
            continue;
        };
        compared += 1;
        if a > b + tolerance(row.unit) && !row.quorum_cost {
            worse.push(format!(
                "{} {} {}h {}: {} vs {} {}",
                row.scenario,
                row.profile.name,
                members_cell(row.hosts, row.witnesses),
                row.figure,
                fmt(a),
                fmt(b),
                row.unit
            ));
        }
    }
    if compared > 0 {
        out.push(Target {
            goal: "every figure at or better than keepalived (quorum costs aside)".into(),
            figure: if worse.is_empty() {
                format!("{compared} figures compared, none worse")
            } else {
                format!("{} of {compared} worse: {}", worse.len(), worse.join("; "))
            },
            met: worse.is_empty(),
        });
    }
    out
}

/// A number with as many decimals as its size deserves.
pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if (v.fract() == 0.0 && a < 1e15) || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The human table, then the targets.
pub fn table(r: &Results, targets: &[Target], compare: bool) -> String {
    let mut s = String::new();
    // Columns as wide as their longest entry, so every row lines up.
    let sw = r
        .rows
        .iter()
        .map(|row| row.scenario.len())
        .fold(10, usize::max);
    let fw = r
        .rows
        .iter()
        .map(|row| row.figure.len())
        .fold(34, usize::max);
    let head = if compare {
        format!(
            "{:<sw$} {:<10} {:>5}  {:<fw$} {:<5} {:>10} {:>10} {:>7}\n",
            "scenario", "profile", "hosts", "figure", "unit", "regent", "keepalived", "ratio"
        )
    } else {
        format!(
            "{:<sw$} {:<10} {:>5}  {:<fw$} {:<5} {:>10}\n",
            "scenario", "profile", "hosts", "figure", "unit", "regent"
        )
    };
    s.push_str(&head);
    s.push_str(&"-".repeat(head.len() - 1));
    s.push('\n');
    let show = |v: Option<f64>| v.map_or("-".to_string(), fmt);
    let mut last = ("", "", 0, 0);
    for row in &r.rows {
        let key = (row.scenario, row.profile.name, row.hosts, row.witnesses);
        if key != last && !last.0.is_empty() {
            s.push('\n');
        }
        last = key;
        let _ = write!(
            s,
            "{:<sw$} {:<10} {:>5}  {:<fw$} {:<5} {:>10}",
            row.scenario,
            row.profile.name,
            members_cell(row.hosts, row.witnesses),
            row.figure,
            row.unit,
            show(row.values[0])
        );
        if compare {
            let ratio = match row.values {
                [Some(a), Some(b)] if b != 0.0 => format!("{:.2}", a / b),
                [Some(0.0), Some(_)] => "=".into(),
                _ => "-".into(),
            };
            let _ = write!(s, " {:>10} {:>7}", show(row.values[1]), ratio);
        }
        s.push('\n');
    }
    s.push_str("\ntargets (goals, not asserts):\n");
    for t in targets {
        let _ = writeln!(
            s,
            "  [{}] {}: {}",
            if t.met { "met    " } else { "NOT MET" },
            t.goal,
            t.figure
        );
    }
    if !r.notes.is_empty() {
        s.push_str("\nnotes:\n");
        for n in &r.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    s
}

/// A JSON string literal.
fn js(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn jn(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

/// The whole run as JSON: the machine, the command, every figure, every
/// sample, the targets.
pub fn json(r: &Results, targets: &[Target], machine: &[(&str, String)], command: &str) -> String {
    let mut s = String::from("{\n  \"machine\": {");
    for (i, (k, v)) in machine.iter().enumerate() {
        let _ = write!(s, "{}{}: {}", if i > 0 { ", " } else { "" }, js(k), js(v));
    }
    let _ = write!(
        s,
        "}},\n  \"command\": {},\n  \"figures\": [\n",
        js(command)
    );
    for (i, row) in r.rows.iter().enumerate() {
        let _ = writeln!(
            s,
            "    {{\"scenario\": {}, \"profile\": {}, \"heartbeat_ms\": {}, \"dead_after_ms\": {}, \
             \"hosts\": {}, \"witnesses\": {}, \"figure\": {}, \"unit\": {}, \"regent\": {}, \
             \"keepalived\": {}}}{}",
            js(row.scenario),
            js(row.profile.name),
            row.profile.heartbeat_ms,
            row.profile.dead_after_ms,
            row.hosts,
            row.witnesses,
            js(&row.figure),
            js(row.unit),
            jn(row.values[0]),
            jn(row.values[1]),
            if i + 1 < r.rows.len() { "," } else { "" }
        );
    }
    s.push_str("  ],\n  \"samples\": [\n");
    for (i, se) in r.series.iter().enumerate() {
        let samples: Vec<String> = se.samples.iter().map(|&v| jn(Some(v))).collect();
        let failures: Vec<String> = se.failures.iter().map(|f| js(f)).collect();
        let _ = writeln!(
            s,
            "    {{\"scenario\": {}, \"profile\": {}, \"hosts\": {}, \"witnesses\": {}, \
             \"agent\": {}, \"name\": {}, \"unit\": {}, \"samples\": [{}], \"failures\": [{}]}}{}",
            js(se.scenario),
            js(se.profile.name),
            se.hosts,
            se.witnesses,
            js(se.agent.name()),
            js(&se.name),
            js(se.unit),
            samples.join(", "),
            failures.join(", "),
            if i + 1 < r.series.len() { "," } else { "" }
        );
    }
    s.push_str("  ],\n  \"targets\": [\n");
    for (i, t) in targets.iter().enumerate() {
        let _ = writeln!(
            s,
            "    {{\"goal\": {}, \"figure\": {}, \"met\": {}}}{}",
            js(&t.goal),
            js(&t.figure),
            t.met,
            if i + 1 < targets.len() { "," } else { "" }
        );
    }
    s.push_str("  ],\n  \"notes\": [");
    let notes: Vec<String> = r.notes.iter().map(|n| js(n)).collect();
    s.push_str(&notes.join(", "));
    s.push_str("]\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 90.0), Some(18.0));
        assert_eq!(percentile(&v, 99.0), Some(20.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn key(agent: Agent) -> Key<'static> {
        Key {
            scenario: "crash",
            profile: COMPARISON,
            hosts: 3,
            witnesses: 0,
            agent,
            figure: "downtime",
            unit: "ms",
        }
    }

    #[test]
    fn crash_targets_are_relative_to_dead_after() {
        let mut r = Results::default();
        r.dist(
            &key(Agent::Regent),
            &[250.0, 300.0, 330.0],
            Vec::new(),
            false,
        );
        let t = targets(&r);
        let p50 = t
            .iter()
            .find(|t| t.goal.contains("p50"))
            .expect("a p50 target");
        let p99 = t
            .iter()
            .find(|t| t.goal.contains("p99"))
            .expect("a p99 target");
        assert!(p50.met, "{p50:?}");
        assert!(p99.met, "{p99:?}");
    }

    #[test]
    fn a_figure_worse_than_keepalived_beyond_the_probe_resolution_is_reported() {
        let mut r = Results::default();
        r.dist(&key(Agent::Regent), &[300.0], Vec::new(), false);
        r.dist(&key(Agent::Keepalived), &[299.0], Vec::new(), false);
        let vs = |r: &Results| {
            targets(r)
                .into_iter()
                .find(|t| t.goal.contains("keepalived"))
                .expect("a comparison")
        };
        assert!(vs(&r).met, "within 2 ms is equal");
        r.dist(&key(Agent::Keepalived), &[290.0], Vec::new(), false);
        assert!(!vs(&r).met);
    }

    /// `key` in the witness topology: two hosts and a witness.
    fn beside_a_witness(
        agent: Agent,
        scenario: &'static str,
        figure: &'static str,
    ) -> Key<'static> {
        Key {
            scenario,
            hosts: 2,
            witnesses: 1,
            figure,
            ..key(agent)
        }
    }

    #[test]
    fn figures_beside_a_witness_keep_rows_of_their_own_shown_as_two_plus_one() {
        let mut r = Results::default();
        // Two hosts alone, and the same two beside a witness.
        let alone = Key {
            hosts: 2,
            ..key(Agent::Regent)
        };
        r.dist(&alone, &[250.0], Vec::new(), false);
        let witness = beside_a_witness(Agent::Regent, "crash", "downtime");
        r.dist(&witness, &[270.0], Vec::new(), false);
        r.dist(
            &beside_a_witness(Agent::Keepalived, "crash", "downtime"),
            &[280.0],
            Vec::new(),
            false,
        );
        let p50 = |members| r.get("crash", COMPARISON, members, "downtime p50", Agent::Regent);
        assert_eq!(p50((2, 0)), Some(250.0));
        assert_eq!(p50((2, 1)), Some(270.0));
        assert_eq!(
            r.get(
                "crash",
                COMPARISON,
                (2, 1),
                "downtime p50",
                Agent::Keepalived
            ),
            Some(280.0),
            "keepalived on the two hosts shares the 2+1 row"
        );
        let table = table(&r, &targets(&r), true);
        let row = table
            .lines()
            .find(|l| l.contains(" 2+1 ") && l.contains("downtime p50"))
            .unwrap_or_else(|| panic!("no 2+1 row in\n{table}"));
        assert!(row.contains("270") && row.contains("280"), "{row}");
        let goals: Vec<String> = targets(&r).into_iter().map(|t| t.goal).collect();
        assert!(
            goals
                .iter()
                .any(|g| g.contains("p99") && g.contains("2 hosts + 1 witness")),
            "{goals:?}"
        );
        let json = json(&r, &[], &[], "regent-bench --witness");
        assert!(
            json.contains("\"hosts\": 2, \"witnesses\": 1, \"figure\": \"downtime p50\""),
            "{json}"
        );
    }

    #[test]
    fn a_second_holder_in_the_split_beside_a_witness_misses_its_target() {
        let figure = "more than one holder, total";
        let mut r = Results::default();
        let regent = beside_a_witness(Agent::Regent, "partition", figure);
        let target = |r: &Results| {
            targets(r)
                .into_iter()
                .find(|t| t.goal.starts_with("partition") && t.goal.contains("1 witness"))
                .expect("a partition target beside the witness")
        };
        r.value(&regent, Better::Lower, 0.0);
        r.value(
            &beside_a_witness(Agent::Keepalived, "partition", figure),
            Better::Lower,
            1742.7,
        );
        assert!(target(&r).met);
        let table = table(&r, &targets(&r), true);
        assert!(
            table
                .lines()
                .any(|l| l.contains(" 2+1 ") && l.contains(figure) && l.contains("1743")),
            "keepalived's two masters are shown:\n{table}"
        );
        r.value(&regent, Better::Lower, 0.5);
        assert!(!target(&r).met, "any time with two holders misses it");
    }
}
