//! What `regent status` and `regent metrics` print: a snapshot of the node
//! rendered as a table, as JSON, or as Prometheus text.
//!
//! Architecture Invariant: these are pure functions of a [`Snapshot`]. They
//! read no clock and touch no socket; every duration comes in the snapshot,
//! measured by the driver at one instant.

use std::fmt::Write as _;
use std::time::Duration;

use crate::core::{Membership, NodeId, Rank, Role, Status};
use crate::hooks::{HookStats, KindStats};
use crate::wire::DropCounters;

/// Everything the renderers show, taken by the driver at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// This node's rank; `Status` carries only its id.
    pub rank: Rank,
    /// The members that are witnesses: they vote but never lead.
    pub witnesses: &'a [NodeId],
    /// The core's view.
    pub status: &'a Status,
    /// The configured `dead_after`.
    pub dead_after: Duration,
    /// The driver's packet and event counters.
    pub counters: &'a Counters,
    /// Datagrams dropped, per reason.
    pub drops: &'a DropCounters,
    /// Hook runs, per kind, as the hook scheduler counts them.
    pub hooks: &'a HookStats,
    /// Time since the daemon started.
    pub uptime: Duration,
    /// When the daemon started, in whole seconds since the Unix epoch, by
    /// the wall clock as read once at start.
    pub start_unix_s: u64,
}

/// Counters the driver keeps. All only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams read from the socket, before any check: those then dropped
    /// are counted here too (and in the drop counters), except oversized
    /// ones, which the socket refuses whole.
    pub packets_received: u64,
    /// Datagrams sent (one per destination in unicast mode).
    pub packets_sent: u64,
    /// Bytes of the received datagrams counted in `packets_received`.
    pub bytes_received: u64,
    /// Bytes of the datagrams counted in `packets_sent`.
    pub bytes_sent: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Times the leader this node follows (or is) changed.
    pub leader_changes: u64,
    /// Role transitions reported by the core.
    pub transitions: u64,
    /// Claims of this node that won a quorum of acks.
    pub elections_won: u64,
    /// Datagrams carrying this node's own id from another host.
    pub duplicate_id: u64,
    /// Control socket connections refused for their credentials.
    pub control_denied: u64,
    /// Lease renewals and releases written to the lease guard.
    pub guard_renewals: u64,
    /// Lines written to the lease guard that would have blocked and were lost.
    pub guard_lost: u64,
    /// Log lines dropped because the logging thread fell behind.
    pub log_lines_dropped: u64,
}

/// One row of the member table: a peer, or this node itself.
struct Row {
    id: u32,
    rank: Rank,
    is_self: bool,
    last_heard: Option<Duration>,
    alive: bool,
    /// It hears this node (both ways).
    hears_us: bool,
    can_lead: bool,
    role: Role,
    /// It votes but never leads.
    witness: bool,
    /// The member list it runs, once heard (this node's own for itself).
    membership: Option<Membership>,
}

/// Every member, this node included, sorted by id.
fn rows(s: &Snapshot) -> Vec<Row> {
    let st = s.status;
    let mut rows: Vec<Row> = st
        .peers
        .iter()
        .map(|p| Row {
            id: p.id.0,
            rank: p.rank,
            is_self: false,
            last_heard: p.last_heard,
            alive: p.alive,
            hears_us: p.hears_us,
            can_lead: p.can_lead,
            role: p.role,
            witness: s.witnesses.contains(&p.id),
            membership: p.membership,
        })
        .collect();
    rows.push(Row {
        id: st.id.0,
        rank: s.rank,
        is_self: true,
        last_heard: None,
        alive: true,
        hears_us: true,
        can_lead: st.eligible && st.alive >= st.quorum,
        role: st.role,
        witness: s.witnesses.contains(&st.id),
        membership: Some(st.membership),
    });
    rows.sort_by_key(|r| r.id);
    rows
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `1h 2m 3s`, `4m 5s`, `6.2s`: a human duration for the status table.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h {}m {}s", secs / 3600, secs % 3600 / 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// How many members this node is linked with, of how many, and when that
/// is no quorum, which members it misses: `1 of 3 alive, 2 needed: NO
/// QUORUM (not linked both ways with 2, 3 (witness))`.
fn quorum_line(s: &Snapshot) -> String {
    let st = s.status;
    let witnesses = s.witnesses.len();
    let voters = match witnesses {
        0 => format!("{}", st.peers.len() + 1),
        1 => format!("{} (1 a witness)", st.peers.len() + 1),
        n => format!("{} ({n} witnesses)", st.peers.len() + 1),
    };
    let mut line = format!("{} of {voters} alive, {} needed", st.alive, st.quorum);
    if st.alive < st.quorum {
        let missing: Vec<String> = rows(s)
            .iter()
            .filter(|r| !(r.is_self || r.alive && r.hears_us))
            .map(|r| {
                let how = match (r.alive, r.witness) {
                    (true, true) => " (witness, one-way)",
                    (true, false) => " (one-way)",
                    (false, true) => " (witness)",
                    (false, false) => "",
                };
                format!("{}{how}", r.id)
            })
            .collect();
        let _ = write!(
            line,
            ": NO QUORUM (not linked both ways with {})",
            missing.join(", ")
        );
    }
    line
}

/// This node's member list, whether the change into it is committed, and
/// whose majorities its claims need (docs/PROTOCOL.md §3.19):
/// `generation 2 (list 1a2b3c4d), committed`.
fn membership_line(st: &Status) -> String {
    let before = |ids: &[NodeId]| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let standing = match (&st.previous, st.committed, st.confirmed) {
        (Some(ids), false, _) => format!(
            "not committed: claims need a majority of it and of the list before ({})",
            before(ids)
        ),
        (Some(ids), true, _) => format!(
            "committed; claims still count the list before ({}) for one promise length",
            before(ids)
        ),
        (None, true, true) => "committed".to_string(),
        (None, _, _) if !st.confirmed => "not committed yet as far as this node knows: it \
             waits to hear so from a member on this list before it may lead"
            .to_string(),
        (None, _, _) => "committed".to_string(),
    };
    format!("{}, {standing}", st.membership)
}

/// A member's list where it differs from this node's, for the table:
/// `generation 3 (ahead)`. Nothing for the same list or a member never heard.
fn generation_note(ours: Membership, theirs: Option<Membership>) -> Option<String> {
    let theirs = theirs?;
    let g = theirs.generation;
    match g.cmp(&ours.generation) {
        std::cmp::Ordering::Greater => Some(format!("generation {g} (ahead)")),
        std::cmp::Ordering::Less => Some(format!("generation {g} (behind)")),
        std::cmp::Ordering::Equal if theirs.digest != ours.digest => Some(format!(
            "generation {g} (list {:08x}, not this node's)",
            theirs.digest
        )),
        std::cmp::Ordering::Equal => None,
    }
}

/// The readable status table of `regent status`.
pub fn render_status(s: &Snapshot) -> String {
    let st = s.status;
    let mut out = String::new();
    let role = match (st.role, st.transitioning) {
        (role, true) => format!("{role} (demote hook running)"),
        (role, false) => role.to_string(),
    };
    let epoch = st
        .epoch
        .map_or_else(|| "none".to_string(), |e| e.to_string());
    let leader = match st.leader {
        Some(l) if l == st.id => format!("{l} (this node)"),
        Some(l) => l.to_string(),
        None => "none".to_string(),
    };
    let lease = match st.lease_remaining {
        Some(d) => format!("{} ms remaining", d.as_millis()),
        None => "not leading".to_string(),
    };
    // The header is a list of `name value` pairs. `write!` into a `String`
    // cannot fail, so its results are ignored throughout.
    let fields = [
        ("cluster", s.cluster.to_string()),
        ("node", format!("{} rank {}", st.id, s.rank)),
        ("role", role),
        ("epoch", epoch),
        ("leader", leader),
        (
            "promised",
            if st.promised > st.durable {
                format!(
                    "epoch {} on disk, {} being written (highest known {})",
                    st.durable, st.promised, st.known
                )
            } else {
                format!("epoch {} (highest known {})", st.durable, st.known)
            },
        ),
        ("quorum", quorum_line(s)),
        ("membership", membership_line(st)),
        ("eligible", yes_no(st.eligible).to_string()),
        ("lease", lease),
        ("dead after", format!("{} ms", s.dead_after.as_millis())),
        ("uptime", human(s.uptime)),
    ];
    for (name, value) in fields {
        let _ = writeln!(out, "{name:<11}{value}");
    }
    out.push('\n');

    let header = ["", "ID", "RANK", "LAST HEARD", "ALIVE", "CAN LEAD", "ROLE"];
    let table: Vec<[String; 7]> = rows(s)
        .into_iter()
        .map(|r| {
            [
                if r.is_self { "*" } else { "" }.to_string(),
                r.id.to_string(),
                r.rank.to_string(),
                match (r.is_self, r.last_heard) {
                    (true, _) => "-".to_string(),
                    (false, Some(d)) => format!("{} ms ago", d.as_millis()),
                    (false, None) => "never".to_string(),
                },
                match (r.alive, r.hears_us) {
                    (true, true) => "yes",
                    (true, false) => "one-way",
                    (false, _) => "no",
                }
                .to_string(),
                yes_no(r.can_lead).to_string(),
                {
                    let mut role = r.role.to_string();
                    if r.witness {
                        role.push_str(" (witness)");
                    }
                    if let Some(note) = generation_note(st.membership, r.membership) {
                        let _ = write!(role, ", {note}");
                    }
                    role
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut line = |cells: [&str; 7]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            match i {
                0 => {
                    let _ = write!(l, "{cell:<w$}");
                }
                // The id column is numeric: right-aligned.
                1 => {
                    let _ = write!(l, " {cell:>w$}");
                }
                _ => {
                    let _ = write!(l, "  {cell:<w$}");
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &table {
        line(row.each_ref().map(String::as_str));
    }
    out.push_str("(* this node)\n");
    if !st.foreign.is_empty() {
        out.push('\n');
    }
    for (id, m) in &st.foreign {
        let _ = writeln!(out, "host {id} runs {m}: ignored, its member list differs");
    }
    out
}

/// A JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one JSON object, keeping track of the commas.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(':');
        self.out
    }

    fn str(&mut self, k: &str, v: &str) {
        json_str(self.key(k), v);
    }

    fn num(&mut self, k: &str, v: impl std::fmt::Display) {
        let _ = write!(self.key(k), "{v}");
    }

    fn opt_num(&mut self, k: &str, v: Option<impl std::fmt::Display>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.key(k).push_str("null"),
        }
    }

    fn bool(&mut self, k: &str, v: bool) {
        self.key(k).push_str(if v { "true" } else { "false" });
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// The schema version `regent status --json` reports in its `version`
/// field. Adding a field keeps it; removing or renaming one, or changing
/// its type, unit or meaning, increments it. docs/STATUS.md is the schema.
pub const STATUS_SCHEMA_VERSION: u32 = 1;

/// `regent status --json`: one JSON object on one line.
///
/// Durations are integer milliseconds in keys ending `_ms`; absent values are
/// `null`. docs/STATUS.md documents every key, and the unit tests check that
/// it does: add a key there when adding one here.
pub fn render_status_json(s: &Snapshot) -> String {
    let st = s.status;
    let mut out = String::new();
    let mut o = Obj::open(&mut out);
    o.num("version", STATUS_SCHEMA_VERSION);
    o.str("cluster", s.cluster);
    o.num("node", st.id);
    o.num("priority", s.rank.priority);
    o.str("role", &st.role.to_string());
    o.bool("transitioning", st.transitioning);
    o.opt_num("epoch", st.epoch);
    o.opt_num("leader", st.leader);
    o.num("promised_epoch", st.durable);
    o.num("known_epoch", st.known);
    o.num("members", st.peers.len() + 1);
    o.num("alive", st.alive);
    o.num("quorum", st.quorum);
    o.bool("has_quorum", st.alive >= st.quorum);
    o.bool("eligible", st.eligible);
    o.opt_num(
        "lease_remaining_ms",
        st.lease_remaining.map(|d| d.as_millis()),
    );
    o.num("dead_after_ms", s.dead_after.as_millis());
    o.num("uptime_ms", s.uptime.as_millis());
    let mut m = Obj::open(o.key("membership"));
    m.num("generation", st.membership.generation);
    m.str("digest", &digest(st.membership));
    m.bool("committed", st.committed);
    m.bool("confirmed", st.confirmed);
    match &st.previous {
        Some(ids) => {
            let list = m.key("previous");
            list.push('[');
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                list.push_str(&id.to_string());
            }
            list.push(']');
        }
        None => m.key("previous").push_str("null"),
    }
    m.close();

    let list = o.key("peers");
    list.push('[');
    for (i, r) in rows(s).iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        let mut p = Obj::open(list);
        p.num("id", r.id);
        p.num("priority", r.rank.priority);
        p.bool("self", r.is_self);
        p.opt_num("last_heard_ms", r.last_heard.map(|d| d.as_millis()));
        p.bool("alive", r.alive);
        p.bool("hears_us", r.hears_us);
        p.bool("can_lead", r.can_lead);
        p.bool("witness", r.witness);
        p.str("role", &r.role.to_string());
        p.opt_num("generation", r.membership.map(|m| m.generation));
        p.close();
    }
    list.push(']');

    let list = o.key("foreign");
    list.push('[');
    for (i, (id, m)) in st.foreign.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        let mut f = Obj::open(list);
        f.num("id", id);
        f.num("generation", m.generation);
        f.str("digest", &digest(*m));
        f.close();
    }
    list.push(']');

    let c = s.counters;
    let mut k = Obj::open(o.key("counters"));
    k.num("packets_received", c.packets_received);
    k.num("packets_sent", c.packets_sent);
    k.num("bytes_received", c.bytes_received);
    k.num("bytes_sent", c.bytes_sent);
    k.num("send_errors", c.send_errors);
    k.num("leader_changes", c.leader_changes);
    k.num("transitions", c.transitions);
    k.num("elections_won", c.elections_won);
    k.num("duplicate_id", c.duplicate_id);
    k.num("control_denied", c.control_denied);
    k.num("guard_renewals", c.guard_renewals);
    k.num("guard_lost", c.guard_lost);
    k.num("log_lines_dropped", c.log_lines_dropped);
    k.close();

    let mut d = Obj::open(o.key("dropped"));
    for (reason, n) in s.drops.iter() {
        d.num(reason.as_str(), n);
    }
    d.close();

    let mut h = Obj::open(o.key("hooks"));
    for (name, f) in s.hooks.iter() {
        let mut k = Obj::open(h.key(name));
        k.num("runs", f.runs);
        k.num("failures", f.failures);
        k.num("timeouts", f.timeouts);
        k.num("skipped", f.skipped);
        k.num("cancelled", f.cancelled);
        k.num("held", f.held);
        k.num("overruns", f.overruns);
        k.opt_num("last_duration_ms", f.last_duration.map(|d| d.as_millis()));
        k.close();
    }
    h.close();
    o.close();
    out.push('\n');
    out
}

/// A list's digest as status shows it: eight hex digits.
fn digest(m: Membership) -> String {
    format!("{:08x}", m.digest)
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes metric families in the Prometheus text format, each sample
/// labelled with the cluster.
struct Exposition<'a> {
    out: String,
    cluster: &'a str,
}

impl Exposition<'_> {
    /// Starts a family: its HELP and TYPE lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family, with labels beyond the cluster.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        self.out.push_str("{cluster=\"");
        label_value(&mut self.out, self.cluster);
        self.out.push('"');
        for (k, v) in labels {
            let _ = write!(self.out, ",{k}=\"");
            label_value(&mut self.out, v);
            self.out.push('"');
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    /// A family with one unlabelled (but for the cluster) sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn flag(b: bool) -> u8 {
    u8::from(b)
}

/// `regent metrics` and the HTTP endpoint: Prometheus text exposition 0.0.4.
///
/// Every sample carries `cluster="..."`. Absent values are reported as 0
/// (`regent_epoch` with no epoch, `regent_leader_id` with no leader: member
/// ids start at 1), except hook durations, which appear once a hook ran.
pub fn render_metrics(s: &Snapshot) -> String {
    let st = s.status;
    let c = s.counters;
    let mut e = Exposition {
        out: String::new(),
        cluster: s.cluster,
    };
    e.family(
        "regent_build_info",
        "gauge",
        "Always 1; the labels describe the regent build.",
    );
    e.sample(
        "regent_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.single("regent_node_id", "gauge", "This node's id.", st.id);
    e.family(
        "regent_role",
        "gauge",
        "1 for the role this node has now, 0 for the others.",
    );
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        e.sample(
            "regent_role",
            &[("role", &role.to_string())],
            flag(st.role == role),
        );
    }
    e.single(
        "regent_transitioning",
        "gauge",
        "1 while the start-up demote or a demote hook runs.",
        flag(st.transitioning),
    );
    e.single(
        "regent_epoch",
        "gauge",
        "The epoch this node leads or follows; 0 for none.",
        st.epoch.map_or(0, |x| x.0),
    );
    e.single(
        "regent_promised_epoch",
        "gauge",
        "The highest epoch this node has promised and persisted.",
        st.durable,
    );
    e.single(
        "regent_known_epoch",
        "gauge",
        "The highest epoch this node has heard of.",
        st.known,
    );
    e.single(
        "regent_leader_id",
        "gauge",
        "The id of the leader this node follows or is; 0 for none.",
        st.leader.map_or(0, |x| x.0),
    );
    e.single(
        "regent_leader_changes_total",
        "counter",
        "Times the leader seen by this node changed.",
        c.leader_changes,
    );
    e.single(
        "regent_transitions_total",
        "counter",
        "Role transitions of this node.",
        c.transitions,
    );
    e.single(
        "regent_elections_won_total",
        "counter",
        "Claims of this node that a quorum acked.",
        c.elections_won,
    );
    e.single(
        "regent_members",
        "gauge",
        "Members of the cluster, this node included.",
        st.peers.len() + 1,
    );
    e.single(
        "regent_quorum_size",
        "gauge",
        "Members that must be alive for a leader to exist.",
        st.quorum,
    );
    e.single(
        "regent_members_alive",
        "gauge",
        "Members alive in this node's view, itself included.",
        st.alive,
    );
    e.single(
        "regent_membership_generation",
        "gauge",
        "The generation of the member list this node runs.",
        st.membership.generation,
    );
    e.single(
        "regent_membership_committed",
        "gauge",
        "1 once the change into this node's member list is committed.",
        flag(st.committed),
    );
    e.single(
        "regent_eligible",
        "gauge",
        "1 if this node is healthy and not in hold-off.",
        flag(st.eligible),
    );
    e.single(
        "regent_lease_remaining_seconds",
        "gauge",
        "Time left on this node's leader lease; 0 when not leading.",
        st.lease_remaining.unwrap_or(Duration::ZERO).as_secs_f64(),
    );
    e.single(
        "regent_dead_after_seconds",
        "gauge",
        "A peer unheard for this long is dead.",
        s.dead_after.as_secs_f64(),
    );
    e.family(
        "regent_peer_alive",
        "gauge",
        "1 if the peer was heard within dead_after.",
    );
    for p in &st.peers {
        e.sample(
            "regent_peer_alive",
            &[("peer", &p.id.to_string())],
            flag(p.alive),
        );
    }
    e.family(
        "regent_peer_last_heard_seconds",
        "gauge",
        "Time since the peer was last heard; absent if never heard.",
    );
    for p in &st.peers {
        if let Some(d) = p.last_heard {
            e.sample(
                "regent_peer_last_heard_seconds",
                &[("peer", &p.id.to_string())],
                d.as_secs_f64(),
            );
        }
    }
    let traffic = [
        (
            "regent_packets_received_total",
            "Datagrams received, before authentication: dropped ones included.",
            c.packets_received,
        ),
        (
            "regent_packets_sent_total",
            "Datagrams sent.",
            c.packets_sent,
        ),
        (
            "regent_bytes_received_total",
            "Bytes of the datagrams in regent_packets_received_total.",
            c.bytes_received,
        ),
        (
            "regent_bytes_sent_total",
            "Bytes of sent datagrams.",
            c.bytes_sent,
        ),
        (
            "regent_send_errors_total",
            "Sends the kernel refused.",
            c.send_errors,
        ),
    ];
    for (name, help, v) in traffic {
        e.single(name, "counter", help, v);
    }
    e.family(
        "regent_packets_dropped_total",
        "counter",
        "Datagrams dropped, by reason.",
    );
    for (reason, n) in s.drops.iter() {
        e.sample(
            "regent_packets_dropped_total",
            &[("reason", reason.as_str())],
            n,
        );
    }
    // Each counter only for the kinds of run it can count (see `KindStats`):
    // only a promote waits for a lease (held); only what a later request
    // kills can be cancelled (a promote, a refresh, a notify); and the
    // health check is never queued, so never skipped. A series that can
    // only ever read 0 would pass for a measurement.
    type Field = fn(&KindStats) -> u64;
    const ALL: &[&str] = &["promote", "demote", "refresh", "notify", "check"];
    let hook_counters: [(&str, &str, Field, &[&str]); 6] = [
        (
            "regent_hook_runs_total",
            "Hook runs started.",
            |h| h.runs,
            ALL,
        ),
        (
            "regent_hook_failures_total",
            "Hook runs that failed (non-zero exit, signal, could not start).",
            |h| h.failures,
            ALL,
        ),
        (
            "regent_hook_timeouts_total",
            "Hook runs killed at their deadline.",
            |h| h.timeouts,
            ALL,
        ),
        (
            "regent_hook_skipped_total",
            "Hook runs that never started.",
            |h| h.skipped,
            &["promote", "demote", "refresh", "notify"],
        ),
        (
            "regent_hook_cancelled_total",
            "Hook runs killed because a later request superseded them.",
            |h| h.cancelled,
            &["promote", "refresh", "notify"],
        ),
        (
            "regent_hook_held_total",
            "Promote runs held back because no lease covered them when they could start.",
            |h| h.held,
            &["promote"],
        ),
    ];
    for (name, help, field, kinds) in hook_counters {
        e.family(name, "counter", help);
        for (hook, f) in s.hooks.iter() {
            if kinds.contains(&hook) {
                e.sample(name, &[("hook", hook)], field(f));
            }
        }
    }
    e.single(
        "regent_demote_overrun_total",
        "counter",
        "Demote runs (not the start-up one) longer than hooks.demote_budget_ms.",
        s.hooks.demote.overruns,
    );
    e.family(
        "regent_hook_last_duration_seconds",
        "gauge",
        "How long the last finished run of the hook took.",
    );
    for (hook, f) in s.hooks.iter() {
        if let Some(d) = f.last_duration {
            e.sample(
                "regent_hook_last_duration_seconds",
                &[("hook", hook)],
                d.as_secs_f64(),
            );
        }
    }
    e.family(
        "regent_hook_duration_seconds",
        "histogram",
        "How long finished runs of the hook took, those that failed, timed out or were killed included.",
    );
    for (hook, f) in s.hooks.iter() {
        for (bound, n) in f.durations.cumulative() {
            let le = bound.map_or_else(|| "+Inf".to_string(), |b| b.as_secs_f64().to_string());
            e.sample(
                "regent_hook_duration_seconds_bucket",
                &[("hook", hook), ("le", &le)],
                n,
            );
        }
        e.sample(
            "regent_hook_duration_seconds_sum",
            &[("hook", hook)],
            f.durations.sum().as_secs_f64(),
        );
        e.sample(
            "regent_hook_duration_seconds_count",
            &[("hook", hook)],
            f.durations.count(),
        );
    }
    e.single(
        "regent_duplicate_id_total",
        "counter",
        "Datagrams from another host carrying this node's own id.",
        c.duplicate_id,
    );
    e.single(
        "regent_control_denied_total",
        "counter",
        "Control socket connections refused for their credentials.",
        c.control_denied,
    );
    e.single(
        "regent_guard_renewals_total",
        "counter",
        "Lease renewals and releases written to the lease guard.",
        c.guard_renewals,
    );
    e.single(
        "regent_guard_lost_total",
        "counter",
        "Lines to the lease guard lost because the pipe would have blocked.",
        c.guard_lost,
    );
    e.single(
        "regent_log_lines_dropped_total",
        "counter",
        "Log lines dropped because the logging thread fell behind.",
        c.log_lines_dropped,
    );
    e.single(
        "regent_uptime_seconds",
        "gauge",
        "Time since the daemon started.",
        s.uptime.as_secs_f64(),
    );
    // The name Prometheus client libraries give it, so that dashboards and
    // alerts written for any process (restarts, `time() - ...`) apply.
    e.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        s.start_unix_s,
    );
    e.out
}

#[cfg(test)]
mod checkers;

#[cfg(test)]
mod tests {
    use super::checkers::{check_exposition, Sample};
    use super::*;
    use crate::control::json::Json;
    use crate::core::{Epoch, NodeId, PeerStatus};
    use crate::hooks::DurationHistogram;
    use crate::wire::Drop;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rank(priority: u32, node: u32) -> Rank {
        Rank {
            priority,
            node: NodeId(node),
        }
    }

    /// The list the fixture's node 3 runs: generation 1 of 1, 2, 3.
    fn ours() -> Membership {
        Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)])
    }

    /// Node 1's list: the next generation, with 4 added.
    fn next() -> Membership {
        Membership::of(2, &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)]).after(ours())
    }

    /// A list that is neither: host 4 runs 1, 2, 4 as generation 1.
    fn other() -> Membership {
        Membership::of(1, &[NodeId(1), NodeId(2), NodeId(4)])
    }

    /// Node 3 leads epoch 7 of three; node 1 is alive and runs the next
    /// member list, node 2 was never heard; host 4 runs another list.
    fn status() -> Status {
        Status {
            id: NodeId(3),
            role: Role::Leader,
            transitioning: false,
            epoch: Some(Epoch(7)),
            leader: Some(NodeId(3)),
            promised: Epoch(7),
            durable: Epoch(7),
            known: Epoch(7),
            alive: 2,
            quorum: 2,
            eligible: true,
            lease_remaining: Some(ms(240)),
            membership: ours(),
            confirmed: true,
            committed: true,
            previous: None,
            foreign: vec![(NodeId(4), other())],
            peers: vec![
                PeerStatus {
                    id: NodeId(1),
                    rank: rank(50, 1),
                    last_heard: Some(ms(12)),
                    alive: true,
                    hears_us: true,
                    can_lead: true,
                    role: Role::Follower,
                    membership: Some(next()),
                },
                PeerStatus {
                    id: NodeId(2),
                    rank: rank(50, 2),
                    last_heard: None,
                    alive: false,
                    hears_us: false,
                    can_lead: false,
                    role: Role::Follower,
                    membership: None,
                },
            ],
        }
    }

    fn counters() -> Counters {
        Counters {
            packets_received: 1200,
            packets_sent: 1300,
            bytes_received: 120_000,
            bytes_sent: 130_000,
            leader_changes: 2,
            transitions: 3,
            elections_won: 1,
            ..Counters::default()
        }
    }

    fn drops() -> DropCounters {
        let mut d = DropCounters::new();
        d.count(Drop::BadMac);
        d.count(Drop::BadMac);
        d.count(Drop::Replay);
        d
    }

    /// Durations of finished runs, in milliseconds, in a histogram.
    fn timed(runs_ms: &[u64]) -> DurationHistogram {
        let mut h = DurationHistogram::default();
        for &took in runs_ms {
            h.record(ms(took));
        }
        h
    }

    fn hooks() -> HookStats {
        HookStats {
            promote: KindStats {
                runs: 1,
                last_duration: Some(ms(150)),
                durations: timed(&[150]),
                ..KindStats::default()
            },
            demote: KindStats {
                runs: 2,
                failures: 1,
                last_duration: Some(ms(1500)),
                durations: timed(&[20, 1500]),
                ..KindStats::default()
            },
            ..HookStats::default()
        }
    }

    fn with<T>(cluster: &str, f: impl FnOnce(&Snapshot) -> T) -> T {
        let (st, c, d, h) = (status(), counters(), drops(), hooks());
        let s = Snapshot {
            cluster,
            rank: rank(100, 3),
            witnesses: &[],
            status: &st,
            dead_after: ms(300),
            counters: &c,
            drops: &d,
            hooks: &h,
            uptime: Duration::from_secs(3723),
            start_unix_s: 1_700_000_000,
        };
        f(&s)
    }

    #[test]
    fn status_table() {
        let (d, o) = (ours().digest, other().digest);
        let expected = format!(
            "\
cluster    db-vip
node       3 rank (100, 3)
role       leader
epoch      7
leader     3 (this node)
promised   epoch 7 (highest known 7)
quorum     2 of 3 alive, 2 needed
membership generation 1 (list {d:08x}), committed
eligible   yes
lease      240 ms remaining
dead after 300 ms
uptime     1h 2m 3s

  ID  RANK      LAST HEARD  ALIVE  CAN LEAD  ROLE
   1  (50, 1)   12 ms ago   yes    yes       follower, generation 2 (ahead)
   2  (50, 2)   never       no     no        follower
*  3  (100, 3)  -           yes    yes       leader
(* this node)

host 4 runs generation 1 (list {o:08x}): ignored, its member list differs
"
        );
        let got = with("db-vip", render_status);
        assert_eq!(got, expected, "\n{got}");
    }

    /// The status text of node 3 of cluster `x`, node 2 a witness.
    fn table(st: &Status, c: &Counters, d: &DropCounters) -> String {
        render_status(&Snapshot {
            cluster: "x",
            rank: rank(100, 3),
            witnesses: &[NodeId(2)],
            status: st,
            dead_after: ms(300),
            counters: c,
            drops: d,
            hooks: &HookStats::default(),
            uptime: ms(2500),
            start_unix_s: 1_700_000_000,
        })
    }

    #[test]
    fn status_table_without_leader_or_quorum() {
        let (mut st, c, d) = (status(), counters(), drops());
        st.role = Role::Follower;
        st.transitioning = true;
        st.epoch = None;
        st.leader = None;
        st.alive = 1;
        st.lease_remaining = None;
        let got = table(&st, &c, &d);
        for want in [
            "role       follower (demote hook running)\n",
            "epoch      none\n",
            "leader     none\n",
            "quorum     1 of 3 (1 a witness) alive, 2 needed: NO QUORUM \
             (not linked both ways with 2 (witness))\n",
            "never       no     no        follower (witness)\n",
            "lease      not leading\n",
            "uptime     2.5s\n",
            "*  3  (100, 3)  -           yes    no        follower\n",
        ] {
            assert!(got.contains(want), "missing {want:?} in\n{got}");
        }
    }

    /// The membership line in each standing, and members on other lists
    /// marked in the table: behind, ahead, or on another list of the same
    /// generation.
    #[test]
    fn status_table_shows_where_each_member_list_stands() {
        let (mut st, c, d) = (status(), counters(), drops());
        st.membership = next();
        st.confirmed = false;
        st.committed = false;
        st.foreign.clear();
        st.peers[0].membership = Some(ours());
        st.peers[1].membership = Some(Membership::of(2, &[NodeId(2), NodeId(3), NodeId(5)]));
        let render = |st: &Status| table(st, &c, &d);
        let got = render(&st);
        let list = |m: Membership| format!("{:08x}", m.digest);
        for want in [
            format!(
                "membership generation 2 (list {}), not committed yet as far as this node \
                 knows: it waits to hear so from a member on this list before it may lead\n",
                list(next())
            ),
            "12 ms ago   yes    yes       follower, generation 1 (behind)\n".to_string(),
            format!(
                "follower (witness), generation 2 (list {}, not this node's)\n",
                list(Membership::of(2, &[NodeId(2), NodeId(3), NodeId(5)]))
            ),
            "*  3  (100, 3)  -           yes    yes       leader\n".to_string(),
        ] {
            assert!(got.contains(&want), "missing {want:?} in\n{got}");
        }
        assert!(!got.contains("ignored"), "{got}");
        st.confirmed = true;
        st.previous = Some(vec![NodeId(1), NodeId(2), NodeId(3)]);
        let got = render(&st);
        let want = format!(
            "membership generation 2 (list {}), not committed: claims need a majority of it \
             and of the list before (1, 2, 3)\n",
            list(next())
        );
        assert!(got.contains(&want), "missing {want:?} in\n{got}");
        st.committed = true;
        let got = render(&st);
        let want = format!(
            "membership generation 2 (list {}), committed; claims still count the list before \
             (1, 2, 3) for one promise length\n",
            list(next())
        );
        assert!(got.contains(&want), "missing {want:?} in\n{got}");
    }

    #[test]
    fn status_json_parses_and_carries_the_fields() {
        let text = with("db-vip", render_status_json);
        assert!(text.ends_with("}\n") && !text[..text.len() - 1].contains('\n'));
        let v = Json::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            v.keys(),
            [
                "version",
                "cluster",
                "node",
                "priority",
                "role",
                "transitioning",
                "epoch",
                "leader",
                "promised_epoch",
                "known_epoch",
                "members",
                "alive",
                "quorum",
                "has_quorum",
                "eligible",
                "lease_remaining_ms",
                "dead_after_ms",
                "uptime_ms",
                "membership",
                "peers",
                "foreign",
                "counters",
                "dropped",
                "hooks"
            ]
        );
        assert_eq!(v.get("version"), &Json::Num(1.0));
        assert_eq!(v.get("cluster"), &Json::Str("db-vip".into()));
        assert_eq!(v.get("role"), &Json::Str("leader".into()));
        assert_eq!(v.get("epoch"), &Json::Num(7.0));
        assert_eq!(v.get("leader"), &Json::Num(3.0));
        assert_eq!(v.get("lease_remaining_ms"), &Json::Num(240.0));
        assert_eq!(v.get("uptime_ms"), &Json::Num(3_723_000.0));
        let Json::Arr(peers) = v.get("peers") else {
            panic!("peers is not an array")
        };
        let ids: Vec<&Json> = peers.iter().map(|p| p.get("id")).collect();
        assert_eq!(ids, [&Json::Num(1.0), &Json::Num(2.0), &Json::Num(3.0)]);
        assert_eq!(peers[0].get("last_heard_ms"), &Json::Num(12.0));
        assert_eq!(peers[1].get("last_heard_ms"), &Json::Null);
        assert_eq!(peers[2].get("self"), &Json::Bool(true));
        let generations: Vec<&Json> = peers.iter().map(|p| p.get("generation")).collect();
        assert_eq!(
            generations,
            [&Json::Num(2.0), &Json::Null, &Json::Num(1.0)],
            "node 1 runs the next list, node 2 was never heard"
        );
        let m = v.get("membership");
        assert_eq!(m.get("generation"), &Json::Num(1.0));
        assert_eq!(
            m.get("digest"),
            &Json::Str(format!("{:08x}", ours().digest))
        );
        assert_eq!(m.get("committed"), &Json::Bool(true));
        assert_eq!(m.get("confirmed"), &Json::Bool(true));
        assert_eq!(m.get("previous"), &Json::Null);
        let Json::Arr(foreign) = v.get("foreign") else {
            panic!("foreign is not an array")
        };
        assert_eq!(foreign.len(), 1);
        assert_eq!(foreign[0].get("id"), &Json::Num(4.0));
        assert_eq!(foreign[0].get("generation"), &Json::Num(1.0));
        assert_eq!(
            foreign[0].get("digest"),
            &Json::Str(format!("{:08x}", other().digest))
        );
        // The exact text a script may grep for.
        assert!(text.contains("\"generation\":2}"), "{text}");
        assert_eq!(v.get("dropped").keys().len(), Drop::ALL.len());
        assert_eq!(v.get("dropped").get("bad_mac"), &Json::Num(2.0));
        assert_eq!(v.get("counters").get("packets_sent"), &Json::Num(1300.0));
        let promote = v.get("hooks").get("promote");
        assert_eq!(promote.get("last_duration_ms"), &Json::Num(150.0));
        assert_eq!(
            v.get("hooks").get("check").get("last_duration_ms"),
            &Json::Null
        );
    }

    /// docs/STATUS.md: the schema of the JSON and the list of metrics.
    const STATUS_DOC: &str = include_str!("../../docs/STATUS.md");

    /// The rows of the doc's table whose header row starts `| first |`:
    /// each row's first cell without its backquotes, and its other cells.
    fn doc_table(first: &str) -> Vec<(String, Vec<String>)> {
        let mut lines = STATUS_DOC.lines();
        let header = format!("| {first} |");
        lines
            .find(|l| l.starts_with(&header))
            .unwrap_or_else(|| panic!("docs/STATUS.md has no table {header}"));
        lines
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<String> = l
                    .trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect();
                let name = cells[0].trim_matches('`').to_string();
                (name, cells[1..].to_vec())
            })
            .collect()
    }

    /// Every key of `v`, at any depth, as a path (`peers[].id`), with its value.
    fn fields<'v>(v: &'v Json, path: &str, out: &mut Vec<(String, &'v Json)>) {
        match v {
            Json::Obj(kv) => {
                for (k, child) in kv {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push((p.clone(), child));
                    fields(child, &p, out);
                }
            }
            Json::Arr(items) => {
                for item in items {
                    fields(item, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }

    /// Whether `v` is of the type the doc names.
    fn of_type(ty: &str, v: &Json) -> bool {
        let integer = |v: &Json| matches!(v, Json::Num(n) if n.fract() == 0.0 && *n >= 0.0);
        match ty {
            "integer" => integer(v),
            "integer or null" => integer(v) || *v == Json::Null,
            "string" => matches!(v, Json::Str(_)),
            "boolean" => matches!(v, Json::Bool(_)),
            "object" => matches!(v, Json::Obj(_)),
            "array of objects" => {
                matches!(v, Json::Arr(items) if items.iter().all(|i| matches!(i, Json::Obj(_))))
            }
            "array of integers or null" => {
                *v == Json::Null || matches!(v, Json::Arr(items) if items.iter().all(integer))
            }
            other => panic!("docs/STATUS.md names an unknown type {other:?}"),
        }
    }

    #[test]
    fn every_status_field_is_documented_with_its_type() {
        let doc = doc_table("field");
        let text = with("db-vip", render_status_json);
        let v = Json::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut all = Vec::new();
        fields(&v, "", &mut all);
        let mut documented = std::collections::BTreeSet::new();
        for (path, value) in &all {
            // The fields of each hook kind are documented once, as `hooks.<kind>.x`.
            let key = match path.split('.').collect::<Vec<_>>().as_slice() {
                ["hooks", _, field] => format!("hooks.<kind>.{field}"),
                _ => path.clone(),
            };
            let (_, cells) = doc
                .iter()
                .find(|(name, _)| *name == key)
                .unwrap_or_else(|| panic!("{path} is not documented in docs/STATUS.md"));
            assert!(
                of_type(&cells[0], value),
                "{path} is {value:?}, documented as {}",
                cells[0]
            );
            documented.insert(key);
        }
        for (name, _) in &doc {
            assert!(
                documented.contains(name),
                "docs/STATUS.md documents {name}, which the status has not"
            );
        }
        assert!(
            STATUS_DOC.contains(&format!(
                "The current version is **{STATUS_SCHEMA_VERSION}**."
            )),
            "docs/STATUS.md does not give the current version"
        );
    }

    #[test]
    fn every_metric_is_documented_with_its_type_and_labels() {
        let doc = doc_table("metric");
        let text = with("db-vip", render_metrics);
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .collect();
        for &(family, kind) in &families {
            let (_, cells) = doc
                .iter()
                .find(|(name, _)| name == family)
                .unwrap_or_else(|| panic!("{family} is not documented in docs/STATUS.md"));
            assert_eq!(cells[0], kind, "{family}'s type");
            let of_family = |name: &str| {
                name.strip_prefix(family)
                    .is_some_and(|rest| ["", "_bucket", "_sum", "_count"].contains(&rest))
            };
            let labels: std::collections::BTreeSet<&str> = samples
                .iter()
                .filter(|(name, _, _)| of_family(name))
                .flat_map(|(_, ls, _)| ls.iter().map(|(k, _)| k.as_str()))
                .filter(|k| *k != "cluster" && *k != "le")
                .collect();
            let listed: std::collections::BTreeSet<&str> = cells[1]
                .split(',')
                .map(|l| l.trim().trim_matches('`'))
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(labels, listed, "{family}'s labels");
        }
        for (name, _) in &doc {
            assert!(
                families.iter().any(|(f, _)| f == name),
                "docs/STATUS.md documents {name}, which the metrics have not"
            );
        }
    }

    #[test]
    fn json_escapes_strings() {
        let nasty = "a\"b\\c\nd\te\u{1}f\u{2028}é";
        let text = with(nasty, render_status_json);
        let v = Json::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(v.get("cluster"), &Json::Str(nasty.into()));
    }

    fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
        samples
            .iter()
            .find(|(n, ls, _)| {
                n == name
                    && label.map_or(true, |(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
    }

    #[test]
    fn metrics_are_valid_exposition() {
        let text = with("db-vip", render_metrics);
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let v = |name, label| value(&samples, name, label);
        assert_eq!(v("regent_role", Some(("role", "leader"))), 1.0);
        assert_eq!(v("regent_role", Some(("role", "follower"))), 0.0);
        assert_eq!(v("regent_epoch", None), 7.0);
        assert_eq!(v("regent_promised_epoch", None), 7.0);
        assert_eq!(v("regent_leader_id", None), 3.0);
        assert_eq!(v("regent_leader_changes_total", None), 2.0);
        assert_eq!(v("regent_quorum_size", None), 2.0);
        assert_eq!(v("regent_members_alive", None), 2.0);
        assert_eq!(v("regent_eligible", None), 1.0);
        assert_eq!(v("regent_membership_generation", None), 1.0);
        assert_eq!(v("regent_membership_committed", None), 1.0);
        assert_eq!(v("regent_lease_remaining_seconds", None), 0.24);
        assert_eq!(v("regent_packets_received_total", None), 1200.0);
        assert_eq!(v("regent_bytes_sent_total", None), 130_000.0);
        assert_eq!(
            v("regent_packets_dropped_total", Some(("reason", "bad_mac"))),
            2.0
        );
        for d in Drop::ALL {
            v("regent_packets_dropped_total", Some(("reason", d.as_str())));
        }
        assert_eq!(v("regent_hook_runs_total", Some(("hook", "demote"))), 2.0);
        assert_eq!(
            v("regent_hook_failures_total", Some(("hook", "demote"))),
            1.0
        );
        assert_eq!(
            v("regent_hook_timeouts_total", Some(("hook", "check"))),
            0.0
        );
        assert_eq!(
            v(
                "regent_hook_last_duration_seconds",
                Some(("hook", "demote"))
            ),
            1.5
        );
        assert_eq!(v("regent_peer_alive", Some(("peer", "2"))), 0.0);
        assert_eq!(
            v("regent_peer_last_heard_seconds", Some(("peer", "1"))),
            0.012
        );
        assert_eq!(v("regent_duplicate_id_total", None), 0.0);
        assert_eq!(v("regent_uptime_seconds", None), 3723.0);
        assert_eq!(v("process_start_time_seconds", None), 1_700_000_000.0);
        assert_eq!(
            v(
                "regent_build_info",
                Some(("version", env!("CARGO_PKG_VERSION")))
            ),
            1.0
        );
        // Hooks that never ran have no duration sample; peers never heard no age.
        assert!(
            !text.contains("regent_hook_last_duration_seconds{cluster=\"db-vip\",hook=\"check\"}")
        );
        assert!(!text.contains("regent_peer_last_heard_seconds{cluster=\"db-vip\",peer=\"2\"}"));
    }

    #[test]
    fn hook_counters_appear_only_for_kinds_they_can_count() {
        let text = with("db-vip", render_metrics);
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let hooks_of = |name: &str| -> Vec<&str> {
            samples
                .iter()
                .filter(|(n, _, _)| n == name)
                .flat_map(|(_, ls, _)| ls.iter().filter(|(k, _)| k == "hook"))
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let all = ["promote", "demote", "refresh", "notify", "check"];
        for name in [
            "regent_hook_runs_total",
            "regent_hook_failures_total",
            "regent_hook_timeouts_total",
        ] {
            assert_eq!(hooks_of(name), all, "{name}");
        }
        assert_eq!(
            hooks_of("regent_hook_skipped_total"),
            ["promote", "demote", "refresh", "notify"]
        );
        assert_eq!(
            hooks_of("regent_hook_cancelled_total"),
            ["promote", "refresh", "notify"]
        );
        assert_eq!(hooks_of("regent_hook_held_total"), ["promote"]);
    }

    /// The samples of one histogram series: (le, count) of each bucket in
    /// order, the sum and the count.
    fn histogram(samples: &[Sample], family: &str, hook: &str) -> (Vec<(String, f64)>, f64, f64) {
        let of = |suffix: &str| -> Vec<&Sample> {
            let name = format!("{family}{suffix}");
            samples
                .iter()
                .filter(|(n, ls, _)| *n == name && ls.iter().any(|(k, v)| k == "hook" && v == hook))
                .collect()
        };
        let buckets = of("_bucket")
            .into_iter()
            .map(|(_, ls, v)| {
                let le = ls.iter().find(|(k, _)| k == "le").map(|(_, v)| v.clone());
                (
                    le.unwrap_or_else(|| panic!("bucket without le: {ls:?}")),
                    *v,
                )
            })
            .collect();
        let one = |suffix: &str| {
            let all: Vec<f64> = of(suffix).iter().map(|s| s.2).collect();
            assert_eq!(all.len(), 1, "{family}{suffix} {hook}: {all:?}");
            all[0]
        };
        (buckets, one("_sum"), one("_count"))
    }

    #[test]
    fn hook_durations_are_a_cumulative_histogram_per_hook() {
        let text = with("db-vip", render_metrics);
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(text.contains("# TYPE regent_hook_duration_seconds histogram\n"));
        let les = [
            "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
            "+Inf",
        ];
        let family = "regent_hook_duration_seconds";
        // Demote: one run of 20 ms, one of 1.5 s.
        let (buckets, sum, count) = histogram(&samples, family, "demote");
        let want = [0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2];
        let got: Vec<(&str, f64)> = buckets.iter().map(|(le, n)| (le.as_str(), *n)).collect();
        let want: Vec<(&str, f64)> = les.into_iter().zip(want.map(f64::from)).collect();
        assert_eq!(got, want);
        assert!((sum - 1.52).abs() < 1e-9, "sum {sum}");
        assert_eq!(count, 2.0);
        // Promote: one run of 150 ms, on no bound.
        let (buckets, sum, count) = histogram(&samples, family, "promote");
        assert_eq!(buckets[3], ("0.1".to_string(), 0.0));
        assert_eq!(buckets[4], ("0.25".to_string(), 1.0));
        assert_eq!((sum, count), (0.15, 1.0));
        // Hooks that never finished a run have every bucket, at zero.
        for hook in ["refresh", "notify", "check"] {
            let (buckets, sum, count) = histogram(&samples, family, hook);
            assert_eq!(buckets.len(), les.len(), "{hook}");
            assert!(buckets.iter().all(|(_, n)| *n == 0.0), "{hook}");
            assert_eq!((sum, count), (0.0, 0.0), "{hook}");
        }
    }

    #[test]
    fn metrics_escape_label_values() {
        let nasty = "a\"b\\c\nd";
        let text = with(nasty, render_metrics);
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(samples
            .iter()
            .all(|(_, ls, _)| ls.iter().any(|(k, v)| k == "cluster" && v == nasty)));
    }

    #[test]
    fn the_checker_rejects_bad_expositions() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{cluster=\"x\"} 1\n";
        assert!(check_exposition(good).is_ok());
        let bad = [
            "a_total{cluster=\"x\"} 1\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total{cluster=\"x\"} one\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total{cluster=\"x\"} 1\na_total{cluster=\"x\"} 2\n",
            "# HELP 1a A.\n# TYPE 1a gauge\n1a{cluster=\"x\"} 1\n",
            "# HELP a A.\n# TYPE a gauge\na{cluster=\"x} 1\n",
            "# HELP a A.\n# TYPE a gauge\na{cluster=\"x\"}1\n",
            "# HELP a A.\n# TYPE a counter\na{cluster=\"x\"} 1\n",
            "# HELP a A.\n# TYPE a gauge\na{cluster=\"x\"} 1",
        ];
        for b in bad {
            assert!(check_exposition(b).is_err(), "accepted {b:?}");
        }
    }

    #[test]
    fn the_checker_rejects_bad_histograms() {
        let head = "# HELP h_seconds H.\n# TYPE h_seconds histogram\n";
        let bucket =
            |le: &str, n: u32| format!("h_seconds_bucket{{cluster=\"x\",le=\"{le}\"}} {n}\n");
        let sum = "h_seconds_sum{cluster=\"x\"} 0.5\n";
        let count = |n: u32| format!("h_seconds_count{{cluster=\"x\"}} {n}\n");
        let good = format!(
            "{head}{}{}{sum}{}",
            bucket("0.1", 1),
            bucket("+Inf", 2),
            count(2)
        );
        assert!(check_exposition(&good).is_ok(), "{good}");
        let bad = [
            // Not cumulative.
            format!(
                "{head}{}{}{sum}{}",
                bucket("0.1", 3),
                bucket("+Inf", 2),
                count(2)
            ),
            // No +Inf bucket.
            format!("{head}{}{sum}{}", bucket("0.1", 2), count(2)),
            // _count is not the +Inf bucket.
            format!(
                "{head}{}{}{sum}{}",
                bucket("0.1", 1),
                bucket("+Inf", 2),
                count(3)
            ),
            // No _sum.
            format!(
                "{head}{}{}{}",
                bucket("0.1", 1),
                bucket("+Inf", 2),
                count(2)
            ),
            // No _count.
            format!("{head}{}{}{sum}", bucket("0.1", 1), bucket("+Inf", 2)),
            // le out of order.
            format!(
                "{head}{}{}{}{sum}{}",
                bucket("0.2", 1),
                bucket("0.1", 1),
                bucket("+Inf", 2),
                count(2)
            ),
            // A bucket without le, and an le that is not a number.
            format!(
                "{head}h_seconds_bucket{{cluster=\"x\"}} 1\n{sum}{}",
                count(1)
            ),
            format!(
                "{head}{}{}{sum}{}",
                bucket("fast", 1),
                bucket("+Inf", 2),
                count(2)
            ),
            // A sample of the family itself, without a suffix.
            format!("{head}h_seconds{{cluster=\"x\"}} 1\n"),
        ];
        for b in bad {
            assert!(check_exposition(&b).is_err(), "accepted {b:?}");
        }
    }
}
