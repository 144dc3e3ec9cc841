//! The checker: turns the raw file into the typed `Config`, collecting every
//! semantic error with its key, line and a reason an operator can act on,
//! and going on past each one with a stand-in value so that later checks
//! still run. A key the reader refused is neither missing nor its default
//! here: checks that would need its value are skipped.
//!
//! Architecture Invariant: no I/O of its own. Whatever must be looked up on
//! the system (hooks, the key file, the control group, the interface) goes through
//! `disk.rs`, and only with `DiskChecks::Check`; with `DiskChecks::Skip` the
//! result depends on the text and the file's name alone.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::defaults::{self, limits};
use super::disk::{executable_file, group_exists, interface_exists, read_key};
use super::raw::{
    self, Key, RawAccept, RawAuth, RawConfig, RawControl, RawError, RawHooks, RawLog, RawMember,
    RawNetwork, RawTiming,
};
use super::{
    lease, AcceptedKey, Auth, Config, ConfigError, ConfigErrors, Control, DiskChecks, Election,
    Hooks, LogConfig, LogTarget, Member, Network, State, Transport,
};
use crate::core::{NodeId, Timing};
use crate::wire::KeyId;

/// Turns the raw file into a `Config`, collecting every error on the way.
pub(super) struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    /// Relative paths are resolved against this directory.
    base: &'a Path,
    disk: DiskChecks,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(
        text: &'a str,
        file: &'a Path,
        base: &'a Path,
        disk: DiskChecks,
    ) -> Checker<'a> {
        Checker {
            text,
            file,
            base,
            disk,
            errors: Vec::new(),
        }
    }

    pub(super) fn run(mut self) -> Result<Config, ConfigErrors> {
        let raw = match raw::read(self.text) {
            Ok((raw, errors)) => {
                for e in errors {
                    self.raw_error(e);
                }
                raw
            }
            Err(syntax) => {
                self.error(syntax.span, syntax.message);
                return Err(ConfigErrors(self.errors));
            }
        };
        let config = self.check(raw);
        if self.errors.is_empty() {
            Ok(config)
        } else {
            // In file order, like a compiler; errors about missing keys last.
            self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(self.errors))
        }
    }

    /// Records a problem the reader found with a key.
    fn raw_error(&mut self, e: RawError) {
        self.error(Some(e.span), e.problem.to_string());
    }

    /// Records an error at the line where `span` starts, if there is a span.
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        });
    }

    /// Records an error at the line of a spanned value.
    fn error_at<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.error(Some(at.span()), message);
    }

    /// Builds the config. Where a value is wrong it records the error and
    /// goes on with a stand-in, so that later checks still run.
    fn check(&mut self, raw: RawConfig) -> Config {
        let cluster = self.cluster(raw.cluster);
        let mut members = self.members(raw.member);
        let node = self.node(raw.node, &members);
        let priority = raw.priority.value().copied().unwrap_or(defaults::PRIORITY);
        let generation = raw
            .generation
            .value()
            .copied()
            .unwrap_or(defaults::GENERATION);
        let network = self.network(raw.network, &mut members, node);
        let timing = self.timing(raw.timing, &raw.hooks.demote_budget_ms);
        let election = Election {
            preempt: raw.election.preempt.value().copied().unwrap_or(true),
            preempt_delay: ms(&raw.election.preempt_delay_ms, defaults::PREEMPT_DELAY_MS),
            holdoff: ms(&raw.election.holdoff_ms, defaults::HOLDOFF_MS),
        };
        let hooks = self.hooks(raw.hooks);
        let auth = self.auth(raw.auth);
        let state = State {
            dir: self.path_or("state.dir", raw.state.dir.set(), defaults::STATE_DIR),
        };
        let control = self.control(raw.control, &cluster);
        let log = self.log(raw.log);
        Config {
            cluster,
            node,
            priority,
            generation,
            members: members.into_iter().map(|c| c.member).collect(),
            network,
            timing,
            election,
            hooks,
            auth,
            state,
            control,
            log,
        }
    }

    fn cluster(&mut self, raw: Key<String>) -> String {
        let raw = match raw {
            Key::Set(raw) => raw,
            // Reported already; the name stands in for a valid one.
            Key::Refused(_) => return String::new(),
            Key::Absent => {
                self.error(
                    None,
                    "cluster is required: a name shared by every member, e.g. cluster = \"db-vip\"",
                );
                return String::new();
            }
        };
        let name = raw.get_ref();
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if name.is_empty() || name.len() > limits::CLUSTER_NAME_MAX || !valid_chars {
            self.error_at(
                &raw,
                format!(
                    "cluster name {name:?} must be 1 to {} characters \
                     of A-Z, a-z, 0-9, '_', '.', '-'",
                    limits::CLUSTER_NAME_MAX
                ),
            );
        }
        raw.into_inner()
    }

    /// Checks the `[[member]]` tables, skipping any without a usable id.
    fn members(&mut self, raw: Key<Vec<Spanned<RawMember>>>) -> Vec<CheckedMember> {
        let raw = match raw {
            Key::Set(raw) if !raw.get_ref().is_empty() => raw.into_inner(),
            Key::Refused(_) => return Vec::new(),
            Key::Set(_) | Key::Absent => {
                self.error(
                    None,
                    "no [[member]] tables: list every host of the cluster, this one included",
                );
                return Vec::new();
            }
        };
        if raw.len() > limits::MEMBERS_MAX {
            let span = raw[limits::MEMBERS_MAX].span();
            self.error(
                Some(span),
                format!(
                    "{} members are too many; at most {} are supported",
                    raw.len(),
                    limits::MEMBERS_MAX
                ),
            );
        }
        let mut members: Vec<CheckedMember> = Vec::new();
        for spanned in raw {
            let table = spanned.span();
            let m = spanned.into_inner();
            let id = match m.id {
                Key::Set(id) => id,
                Key::Refused(_) => continue,
                Key::Absent => {
                    self.error(Some(table), "[[member]] without an id");
                    continue;
                }
            };
            // The reader keeps ids in 1..=MEMBER_ID_MAX.
            let node = NodeId(*id.get_ref());
            if let Some(first) = members.iter().find(|c| c.member.id == node) {
                let first = line_of(self.text, first.id_span.start);
                self.error_at(
                    &id,
                    format!("member id {node} appears twice (first at line {first})"),
                );
                continue;
            }
            let address_given = m.address.span().is_some();
            let address = m
                .address
                .set()
                .and_then(|a| match a.get_ref().parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        let message = format!(
                            "member {node}: address {:?} is not an IP address \
                             (host names are not resolved)",
                            a.get_ref()
                        );
                        self.error_at(&a, message);
                        None
                    }
                });
            let port_refused = m.port.is_refused();
            let port = m.port.set().filter(|p| {
                if *p.get_ref() == 0 {
                    self.error_at(p, format!("member {node}: port 0 is not a usable port"));
                }
                *p.get_ref() != 0
            });
            let transport = m.transport.set().and_then(|t| match t.get_ref().as_str() {
                "multicast" => Some((false, t.span())),
                "unicast" => Some((true, t.span())),
                other => {
                    let message = format!(
                        "member {node}: transport {other:?} must be \"multicast\" or \"unicast\""
                    );
                    self.error_at(&t, message);
                    None
                }
            });
            members.push(CheckedMember {
                member: Member {
                    id: node,
                    address,
                    port: port.as_ref().map(|p| *p.get_ref()),
                    witness: m.witness.value().copied().unwrap_or(false),
                    unicast: transport.as_ref().is_some_and(|(u, _)| *u),
                },
                transport_span: transport.map(|(_, span)| span),
                address_given,
                port_refused,
                id_span: id.span(),
                port_span: port.map(|p| p.span()),
            });
        }
        if !members.is_empty() && members.iter().all(|c| c.member.witness) {
            self.error(
                Some(members[0].id_span.clone()),
                "every member is a witness: at least one must be able to lead",
            );
        }
        members
    }

    fn node(&mut self, raw: Key<u32>, members: &[CheckedMember]) -> NodeId {
        let raw = match raw {
            Key::Set(raw) => raw,
            Key::Refused(_) => return NodeId(0),
            Key::Absent => {
                self.error(
                    None,
                    "node is required: this host's id, one of the [[member]] ids, e.g. node = 1",
                );
                return NodeId(0);
            }
        };
        if members.is_empty() {
            // Already reported; "not in an empty list" would add nothing.
            return NodeId(0);
        }
        let wanted = *raw.get_ref();
        match members.iter().find(|c| c.member.id.0 == wanted) {
            Some(c) => c.member.id,
            None => {
                let ids: Vec<String> = members.iter().map(|c| c.member.id.to_string()).collect();
                let message = format!(
                    "node {wanted} is not in the [[member]] list (ids: {})",
                    ids.join(", ")
                );
                self.error_at(&raw, message);
                NodeId(0)
            }
        }
    }

    fn network(
        &mut self,
        mut raw: RawNetwork,
        members: &mut [CheckedMember],
        node: NodeId,
    ) -> Network {
        // A group written with the wrong type still means multicast.
        let transport = match std::mem::take(&mut raw.multicast) {
            Key::Set(group) => self.multicast(group.span(), Some(group), raw, members, node),
            Key::Refused(span) => self.multicast(span, None, raw, members, node),
            Key::Absent => self.unicast(raw, members, node),
        };
        Network { transport }
    }

    /// The multicast transport; `group_raw` is `None` when the group was
    /// written with the wrong type (reported already).
    fn multicast(
        &mut self,
        group_span: Range<usize>,
        group_raw: Option<Spanned<String>>,
        raw: RawNetwork,
        members: &mut [CheckedMember],
        node: NodeId,
    ) -> Transport {
        // A key of the other transport with an unusable value has its error already.
        if let Some(port) = raw.port.as_set() {
            self.error_at(
                port,
                "network.port is for unicast only; \
                 with multicast the port is part of network.multicast",
            );
        }
        if let Some(bind) = raw.bind.as_set() {
            self.error_at(
                bind,
                "network.bind is for unicast only; multicast joins the group on network.interface",
            );
        }
        for c in members.iter_mut() {
            if let Some(span) = c.port_span.take() {
                let message = format!(
                    "member {}: port is for unicast only; \
                     with multicast every member uses the port of network.multicast",
                    c.member.id
                );
                self.error(Some(span), message);
                c.member.port = None;
            }
        }
        let group = match group_raw {
            Some(group) => self.multicast_group(&group),
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        // Members reached by unicast beside the group: every member needs
        // an address then, since those send to each one's.
        let by_unicast: Vec<NodeId> = members
            .iter()
            .filter(|c| c.member.unicast)
            .map(|c| c.member.id)
            .collect();
        let own = members.iter().find(|c| c.member.id == node);
        let own_unicast = own.is_some_and(|c| c.member.unicast);
        let own_address = own.and_then(|c| c.member.address);
        if !by_unicast.is_empty() {
            let ids: Vec<String> = by_unicast.iter().map(NodeId::to_string).collect();
            for c in members
                .iter()
                .filter(|c| c.member.address.is_none() && !c.address_given)
            {
                let message = format!(
                    "member {} has no address; member {} is reached by unicast \
                     (transport = \"unicast\") and sends to every member's address",
                    c.member.id,
                    ids.join(", ")
                );
                self.error(Some(c.id_span.clone()), message);
            }
        }
        if own_unicast {
            // This host is off the group's network: it sends to and hears
            // every other member by unicast, on the group's port.
            return Transport::Unicast {
                port: group.port(),
                bind: own_address,
            };
        }
        let interface = match raw.interface {
            Key::Absent => {
                self.error(
                    Some(group_span),
                    "network.multicast needs network.interface, \
                     the interface to join the group on (e.g. \"eth0\")",
                );
                String::new()
            }
            Key::Refused(_) => String::new(),
            Key::Set(name) => self.interface(name),
        };
        let loopback = raw.multicast_loop.value().copied().unwrap_or(false);
        Transport::Multicast {
            group,
            interface,
            loopback,
            unicast: match (by_unicast.is_empty(), own_address) {
                (false, Some(address)) => Some(SocketAddr::new(address, group.port())),
                _ => None,
            },
        }
    }

    /// The multicast group, or the unspecified address if it is unusable.
    fn multicast_group(&mut self, raw: &Spanned<String>) -> SocketAddr {
        match raw.get_ref().parse::<SocketAddr>() {
            Err(_) => {
                let message = format!(
                    "network.multicast {:?} is not an address:port \
                     like \"239.255.42.1:7475\" or \"[ff02::4242]:7475\"",
                    raw.get_ref()
                );
                self.error_at(raw, message);
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
            Ok(group) if !group.ip().is_multicast() => {
                let message = format!(
                    "network.multicast {} is not a multicast address \
                     (IPv4 224.0.0.0/4 or IPv6 ff00::/8); to send to each member's address \
                     instead, remove network.multicast",
                    group.ip()
                );
                self.error_at(raw, message);
                group
            }
            Ok(group) if group.port() == 0 => {
                self.error_at(
                    raw,
                    "network.multicast needs a port other than 0, e.g. \"239.255.42.1:7475\"",
                );
                group
            }
            Ok(group) => group,
        }
    }

    /// The interface to join the group on, which must exist on this host.
    fn interface(&mut self, raw: Spanned<String>) -> String {
        let n = raw.get_ref();
        let valid = !n.is_empty()
            && n.len() <= limits::INTERFACE_NAME_MAX
            && n.chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if !valid {
            let message = format!(
                "network.interface {n:?} is not an interface name \
                 (1 to {} characters, no '/', ':' or spaces)",
                limits::INTERFACE_NAME_MAX
            );
            self.error_at(&raw, message);
        } else if self.disk == DiskChecks::Check {
            match interface_exists(n) {
                Ok(true) => {}
                Ok(false) => {
                    let message = format!("network.interface {n:?} does not exist on this host");
                    self.error_at(&raw, message);
                }
                Err(e) => {
                    let message = format!("network.interface {n:?} cannot be looked up: {e}");
                    self.error_at(&raw, message);
                }
            }
        }
        raw.into_inner()
    }

    fn unicast(
        &mut self,
        raw: RawNetwork,
        members: &mut [CheckedMember],
        node: NodeId,
    ) -> Transport {
        for c in members.iter_mut() {
            c.member.unicast = true;
            if let Some(span) = c.transport_span.take() {
                if self.text[span.clone()].contains("multicast") {
                    let message = format!(
                        "member {}: transport \"multicast\" needs network.multicast, the group",
                        c.member.id
                    );
                    self.error(Some(span), message);
                }
            }
        }
        // A key of the other transport with an unusable value has its error already.
        if let Some(interface) = raw.interface.as_set() {
            self.error_at(
                interface,
                "network.interface is only used with network.multicast; \
                 unicast listens on network.bind (or all addresses)",
            );
        }
        if let Some(lo) = raw.multicast_loop.as_set() {
            self.error_at(
                lo,
                "network.multicast_loop is only used with network.multicast",
            );
        }
        // With a port refused by the reader, the endpoints are not known.
        let ports_known = !raw.port.is_refused();
        let port = match raw.port.set() {
            Some(p) if *p.get_ref() == 0 => {
                self.error_at(&p, "network.port 0 is not a usable port");
                defaults::PORT
            }
            Some(p) => p.into_inner(),
            None => defaults::PORT,
        };
        let bind = raw
            .bind
            .set()
            .and_then(|b| match b.get_ref().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    let message = format!("network.bind {:?} is not an IP address", b.get_ref());
                    self.error_at(&b, message);
                    None
                }
            });
        let mut endpoints: Vec<(SocketAddr, NodeId)> = Vec::new();
        for c in members {
            let id = c.member.id;
            let Some(address) = c.member.address else {
                if c.address_given {
                    continue;
                }
                let message = format!(
                    "member {id} has no address; \
                     without network.multicast (unicast) every member needs one"
                );
                self.error(Some(c.id_span.clone()), message);
                continue;
            };
            if address.is_multicast() || address.is_unspecified() {
                let message = format!("member {id}: address {address} is not a host's address");
                self.error(Some(c.id_span.clone()), message);
                continue;
            }
            if !ports_known || c.port_refused {
                continue;
            }
            let endpoint = SocketAddr::new(address, c.member.port.unwrap_or(port));
            if let Some((_, other)) = endpoints.iter().find(|(e, _)| *e == endpoint) {
                let message = format!(
                    "member {id} has the same address and port as member {other} ({endpoint})"
                );
                self.error(Some(c.id_span.clone()), message);
            }
            endpoints.push((endpoint, id));
            if let (true, Some(own), Some(span)) = (id == node, c.member.port, &c.port_span) {
                if own != port {
                    let message = format!(
                        "member {id} is this node and has port {own}, \
                         but this node listens on network.port {port}; make them equal or \
                         remove the member's port"
                    );
                    self.error(Some(span.clone()), message);
                }
            }
        }
        Transport::Unicast { port, bind }
    }

    fn timing(&mut self, raw: RawTiming, raw_budget: &Key<u64>) -> Timing {
        let value = |v: &Key<u64>, default: u64| v.value().copied().unwrap_or(default);
        let heartbeat = value(&raw.heartbeat_ms, defaults::HEARTBEAT_MS);
        let dead_after = value(&raw.dead_after_ms, defaults::DEAD_AFTER_MS);
        let margin = value(&raw.lease_margin_ms, defaults::LEASE_MARGIN_MS);
        let budget = value(raw_budget, defaults::DEMOTE_BUDGET_MS);
        let drift = raw
            .max_drift_ppm
            .value()
            .copied()
            .unwrap_or(defaults::MAX_DRIFT_PPM);
        // A value the reader refused stands in as its default, and relations
        // with a stand-in would be errors the operator did not make.
        let durations = [
            &raw.heartbeat_ms,
            &raw.dead_after_ms,
            &raw.lease_margin_ms,
            raw_budget,
        ];
        let mut consistent =
            !durations.iter().any(|k| k.is_refused()) && !raw.max_drift_ppm.is_refused();

        if heartbeat < limits::HEARTBEAT_MIN_MS {
            let message = format!(
                "timing.heartbeat_ms = {heartbeat} is below the minimum of {}",
                limits::HEARTBEAT_MIN_MS
            );
            self.error(raw.heartbeat_ms.span(), message);
            consistent = false;
        } else if consistent && dead_after < heartbeat.saturating_mul(2) {
            let message = match raw.dead_after_ms {
                Key::Set(_) => format!(
                    "timing.dead_after_ms = {dead_after} must be at least \
                     2 x timing.heartbeat_ms ({}), so that one lost heartbeat does not declare \
                     a peer dead",
                    heartbeat.saturating_mul(2)
                ),
                Key::Absent | Key::Refused(_) => format!(
                    "timing.dead_after_ms (default {dead_after}) must be at least \
                     2 x timing.heartbeat_ms ({}); set dead_after_ms or lower heartbeat_ms",
                    heartbeat.saturating_mul(2)
                ),
            };
            self.error(
                raw.dead_after_ms.span().or(raw.heartbeat_ms.span()),
                message,
            );
            consistent = false;
        }
        if drift >= limits::DRIFT_PPM_LIMIT {
            let message = format!(
                "timing.max_drift_ppm = {drift} must be below {} (10%)",
                limits::DRIFT_PPM_LIMIT
            );
            self.error(raw.max_drift_ppm.span(), message);
            consistent = false;
        }

        let timing = Timing {
            heartbeat: Duration::from_millis(heartbeat),
            dead_after: Duration::from_millis(dead_after),
            lease_margin: Duration::from_millis(margin),
            max_drift_ppm: drift,
            demote_budget: Duration::from_millis(budget),
        };
        // Renewable means dead_after * (1e6 - drift) / (1e6 + drift)
        // - margin - demote budget > heartbeat, compared exactly in integers.
        // A drift of 100000 ppm or more is refused above, so the lease is
        // not checked; saturating keeps one above a million from overflowing.
        let (up, down) = (
            1_000_000 + u128::from(drift),
            1_000_000u128.saturating_sub(u128::from(drift)),
        );
        let needed = (u128::from(heartbeat) + u128::from(margin) + u128::from(budget)) * up;
        if consistent && u128::from(dead_after) * down <= needed {
            let lease_ms = lease(&timing).map_or(0, |l| l.as_millis());
            let minimum = needed / down + 1;
            let message = format!(
                "the leader's lease would be {lease_ms}ms (timing.dead_after_ms {dead_after} \
                 shortened for {drift} ppm clock drift, minus timing.lease_margin_ms {margin} \
                 and hooks.demote_budget_ms {budget}), not longer than timing.heartbeat_ms \
                 {heartbeat}, so no heartbeat could renew it; raise timing.dead_after_ms to at \
                 least {minimum} or lower timing.lease_margin_ms or hooks.demote_budget_ms"
            );
            self.error(
                raw.dead_after_ms
                    .span()
                    .or(raw.lease_margin_ms.span())
                    .or(raw_budget.span())
                    .or(raw.heartbeat_ms.span()),
                message,
            );
        }
        timing
    }

    fn hooks(&mut self, raw: RawHooks) -> Hooks {
        let promote = raw
            .promote
            .set()
            .map(|p| self.executable("hooks.promote", p));
        let demote = raw.demote.set().map(|p| self.executable("hooks.demote", p));
        let notify = raw.notify.set().map(|p| self.executable("hooks.notify", p));
        let timeout = self.positive_ms(
            "hooks.timeout_ms",
            raw.timeout_ms,
            defaults::HOOK_TIMEOUT_MS,
        );
        let kill_grace = ms(&raw.kill_grace_ms, defaults::KILL_GRACE_MS);
        let refresh_interval = Some(ms(&raw.refresh_interval_ms, defaults::REFRESH_INTERVAL_MS))
            .filter(|d| !d.is_zero());
        let output_max_bytes = match raw.output_max_bytes.set() {
            Some(n) if *n.get_ref() == 0 => {
                self.error_at(
                    &n,
                    "hooks.output_max_bytes must be at least 1; 0 would hide every hook's output",
                );
                defaults::OUTPUT_MAX_BYTES
            }
            Some(n) => n.into_inner(),
            None => defaults::OUTPUT_MAX_BYTES,
        };
        let check = raw.check.set().map(|argv| self.check_argv(argv));
        let check_interval = self.positive_ms(
            "hooks.check_interval_ms",
            raw.check_interval_ms,
            defaults::CHECK_INTERVAL_MS,
        );
        let check_timeout = self.positive_ms(
            "hooks.check_timeout_ms",
            raw.check_timeout_ms,
            defaults::CHECK_TIMEOUT_MS,
        );
        let check_fall =
            self.positive_count("hooks.check_fall", raw.check_fall, defaults::CHECK_FALL);
        let check_rise =
            self.positive_count("hooks.check_rise", raw.check_rise, defaults::CHECK_RISE);
        Hooks {
            promote,
            demote,
            notify,
            timeout,
            kill_grace,
            refresh_interval,
            output_max_bytes,
            check,
            check_interval,
            check_timeout,
            check_fall,
            check_rise,
        }
    }

    /// The health check's argv, with argv[0] resolved like any other path.
    fn check_argv(&mut self, raw: Spanned<Vec<String>>) -> Vec<String> {
        let span = raw.span();
        let mut argv = raw.into_inner();
        let Some(program) = argv.first() else {
            self.error(
                Some(span),
                "hooks.check is an empty array; give at least the program to run",
            );
            return argv;
        };
        let path = self.path("hooks.check", Spanned::new(span.clone(), program.clone()));
        if self.disk == DiskChecks::Check && !program.is_empty() {
            if let Err(reason) = executable_file(&path) {
                let mut message = format!("hooks.check {} {reason}", path.display());
                if argv.len() == 1 && program.contains(char::is_whitespace) {
                    message.push_str(
                        "; to pass arguments use an array, \
                         e.g. check = [\"/usr/bin/pg_isready\", \"-q\"]",
                    );
                }
                self.error(Some(span), message);
            }
        }
        argv[0] = path.to_string_lossy().into_owned();
        argv
    }

    /// A hook path, resolved, and checked on disk unless checks are off.
    fn executable(&mut self, key: &str, raw: Spanned<String>) -> PathBuf {
        let span = raw.span();
        let empty = raw.get_ref().is_empty();
        let path = self.path(key, raw);
        if self.disk == DiskChecks::Check && !empty {
            if let Err(reason) = executable_file(&path) {
                self.error(Some(span), format!("{key} {} {reason}", path.display()));
            }
        }
        path
    }

    fn auth(&mut self, raw: RawAuth) -> Auth {
        let insecure = raw.insecure.value().copied().unwrap_or(false);
        // With auth.insecure refused it is not known whether a key is needed.
        let insecure_known = !raw.insecure.is_refused();
        let (key, key_file) = self.sending_key(raw.key_file, insecure, insecure_known);
        // A refused key_id is not 0: nothing is compared with it.
        let key_id_known = !raw.key_id.is_refused();
        let key_id_span = raw.key_id.span();
        let key_id = match raw.key_id.set() {
            Some(id) if insecure => {
                self.error_at(
                    &id,
                    "auth.key_id names the key of auth.key_file, and auth.insecure = true has \
                     none; remove auth.key_id or auth.insecure",
                );
                KeyId(0)
            }
            Some(id) => KeyId(id.into_inner()),
            None => KeyId(0),
        };
        let accept = match raw.accept.set() {
            Some(tables) => {
                let sending = key_id_known
                    .then(|| (key_id, key_id_span.map(|s| line_of(self.text, s.start))));
                self.accepted_keys(tables.into_inner(), sending, insecure)
            }
            None => Vec::new(),
        };
        Auth {
            key,
            key_file,
            key_id,
            accept,
            insecure,
        }
    }

    /// `auth.key_file`, and the key read from it when disk checks are on.
    fn sending_key(
        &mut self,
        raw: Key<String>,
        insecure: bool,
        insecure_known: bool,
    ) -> (Option<Vec<u8>>, Option<PathBuf>) {
        match raw {
            Key::Absent | Key::Refused(_) if insecure || !insecure_known => (None, None),
            Key::Refused(_) => (None, None),
            Key::Absent => {
                self.error(
                    None,
                    "auth.key_file is required: a file holding the cluster's shared secret \
                     (at least 16 bytes, mode 0600); only on a test network, set auth.insecure \
                     = true instead",
                );
                (None, None)
            }
            Key::Set(file) if insecure => {
                self.error_at(
                    &file,
                    "auth.key_file and auth.insecure = true are both set; remove one of them",
                );
                (None, Some(self.path("auth.key_file", file)))
            }
            Key::Set(file) => {
                let (path, key) = self.key_file("auth.key_file", file, |m| m);
                (key, Some(path))
            }
        }
    }

    /// The `[[auth.accept]]` tables. `sending` is `auth.key_id` and the
    /// line it is written on, if it is (`None` if its value was refused):
    /// no accepted key may share its id.
    fn accepted_keys(
        &mut self,
        tables: Vec<Spanned<RawAccept>>,
        sending: Option<(KeyId, Option<usize>)>,
        insecure: bool,
    ) -> Vec<AcceptedKey> {
        if insecure {
            if let Some(first) = tables.first() {
                self.error_at(
                    first,
                    "[[auth.accept]] lists keys, and auth.insecure = true uses none; remove \
                     the [[auth.accept]] tables or auth.insecure",
                );
            }
            return Vec::new();
        }
        let mut accepted: Vec<(AcceptedKey, Range<usize>)> = Vec::new();
        for spanned in tables {
            let table = spanned.span();
            let raw = spanned.into_inner();
            let id = match raw.id {
                Key::Set(id) => id,
                Key::Refused(_) => continue,
                Key::Absent => {
                    self.error(
                        Some(table),
                        "[[auth.accept]] without an id: give the id the members that send \
                         with this key set as auth.key_id (0 to 255)",
                    );
                    continue;
                }
            };
            let key_id = KeyId(*id.get_ref());
            if let Some((_, first)) = accepted.iter().find(|(a, _)| a.id == key_id) {
                let first = line_of(self.text, first.start);
                self.error_at(
                    &id,
                    format!("auth.accept id {key_id} appears twice (first at line {first})"),
                );
                continue;
            }
            if let Some((_, line)) = sending.filter(|(sending, _)| *sending == key_id) {
                let whose = match line {
                    Some(line) => format!("auth.key_id, line {line}"),
                    None => "auth.key_id is not set, so 0".to_owned(),
                };
                self.error_at(
                    &id,
                    format!(
                        "auth.accept id {key_id} is the id of the key this host sends with \
                         ({whose}); an id names one key: give the accepted key another id"
                    ),
                );
                continue;
            }
            let file = match raw.key_file {
                Key::Set(file) => file,
                Key::Refused(_) => continue,
                Key::Absent => {
                    self.error(
                        Some(table),
                        format!(
                            "auth.accept id {key_id}: key_file is required, the file holding \
                             the key of that id"
                        ),
                    );
                    continue;
                }
            };
            let named = |message: String| format!("auth.accept id {key_id}: {message}");
            let (key_file, key) = self.key_file("auth.accept.key_file", file, named);
            let key = AcceptedKey {
                id: key_id,
                key_file,
                key,
            };
            accepted.push((key, id.span()));
        }
        accepted.into_iter().map(|(a, _)| a).collect()
    }

    /// The key file `file` names (the value of `key`), resolved, and with
    /// disk checks on, the key read from it; an error reading it is put on
    /// its line, in the words `name` gives it.
    fn key_file(
        &mut self,
        key: &str,
        file: Spanned<String>,
        name: impl Fn(String) -> String,
    ) -> (PathBuf, Option<Vec<u8>>) {
        let span = file.span();
        let empty = file.get_ref().is_empty();
        let path = self.path(key, file);
        let key = match self.disk {
            DiskChecks::Check if !empty => match read_key(&path) {
                Ok(key) => Some(key),
                Err(message) => {
                    self.error(Some(span), name(message));
                    None
                }
            },
            _ => None,
        };
        (path, key)
    }

    fn control(&mut self, raw: RawControl, cluster: &str) -> Control {
        let socket_span = raw.socket.span();
        let socket = self.path_or(
            "control.socket",
            raw.socket.set(),
            &super::default_socket(cluster),
        );
        // sun_path holds 108 bytes, the terminating NUL included.
        let socket_len = socket.as_os_str().len();
        if socket_len > 107 {
            let message = format!(
                "control.socket {} is {socket_len} bytes long; \
                 a Unix socket path may be at most 107",
                socket.display()
            );
            self.error(socket_span, message);
        }
        let group = raw.group.set().map(|g| {
            let name = g.get_ref();
            if name.is_empty()
                || name.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control())
            {
                self.error_at(&g, format!("control.group {name:?} is not a group name"));
            } else if self.disk == DiskChecks::Check {
                match group_exists(name) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.error_at(&g, format!("control.group {name:?} does not exist"))
                    }
                    Err(e) => self.error_at(
                        &g,
                        format!("control.group {name:?} cannot be looked up: {e}"),
                    ),
                }
            }
            g.into_inner()
        });
        let metrics_listen = raw
            .metrics_listen
            .set()
            .and_then(|m| self.metrics_listen(m));
        Control {
            socket,
            group,
            metrics_listen,
        }
    }

    /// The metrics address, if it is a usable loopback address.
    fn metrics_listen(&mut self, raw: Spanned<String>) -> Option<SocketAddr> {
        let Ok(addr) = raw.get_ref().parse::<SocketAddr>() else {
            let message = format!(
                "control.metrics_listen {:?} is not an address:port like \"127.0.0.1:9475\"",
                raw.get_ref()
            );
            self.error_at(&raw, message);
            return None;
        };
        if !addr.ip().is_loopback() {
            let message = format!(
                "control.metrics_listen {addr} is not a loopback address; metrics are served \
                 without authentication, so listen on 127.0.0.1 or [::1] and proxy them if needed"
            );
            self.error_at(&raw, message);
            return None;
        }
        if addr.port() == 0 {
            let message =
                "control.metrics_listen needs a port other than 0, e.g. \"127.0.0.1:9475\"";
            self.error_at(&raw, message);
            return None;
        }
        Some(addr)
    }

    fn log(&mut self, raw: RawLog) -> LogConfig {
        let mut log = LogConfig::default();
        if let Some(target) = raw.target.set() {
            match target.get_ref().as_str() {
                "stderr" => log.target = LogTarget::Stderr,
                "syslog" => log.target = LogTarget::Syslog,
                other => self.error_at(
                    &target,
                    format!("log.target {other:?} must be \"stderr\" or \"syslog\""),
                ),
            }
        }
        if let Some(level) = raw.level.set() {
            log.level = match level.get_ref().as_str() {
                "error" => log::LevelFilter::Error,
                "warn" => log::LevelFilter::Warn,
                "info" => log::LevelFilter::Info,
                "debug" => log::LevelFilter::Debug,
                "trace" => log::LevelFilter::Trace,
                other => {
                    let message = format!(
                        "log.level {other:?} must be one of error, warn, info, debug, trace"
                    );
                    self.error_at(&level, message);
                    log.level
                }
            };
        }
        log
    }

    /// A path from the file, relative to the file's directory.
    fn path(&mut self, key: &str, raw: Spanned<String>) -> PathBuf {
        let text = raw.get_ref();
        if text.is_empty() {
            self.error_at(&raw, format!("{key} must not be empty"));
        } else if text.contains('\0') {
            self.error_at(&raw, format!("{key} must not contain a NUL character"));
        }
        self.base.join(text)
    }

    fn path_or(&mut self, key: &str, raw: Option<Spanned<String>>, default: &str) -> PathBuf {
        match raw {
            Some(raw) => self.path(key, raw),
            None => PathBuf::from(default),
        }
    }

    fn positive_ms(&mut self, key: &str, raw: Key<u64>, default: u64) -> Duration {
        match raw.set() {
            Some(v) if *v.get_ref() == 0 => {
                self.error_at(&v, format!("{key} must be at least 1"));
                Duration::from_millis(default)
            }
            Some(v) => Duration::from_millis(v.into_inner()),
            None => Duration::from_millis(default),
        }
    }

    fn positive_count(&mut self, key: &str, raw: Key<u32>, default: u32) -> u32 {
        match raw.set() {
            Some(v) if *v.get_ref() == 0 => {
                self.error_at(&v, format!("{key} must be at least 1"));
                default
            }
            Some(v) => v.into_inner(),
            None => default,
        }
    }
}

/// A member as checked so far, with the spans later checks point at.
struct CheckedMember {
    member: Member,
    /// Where `transport` was written, if it was.
    transport_span: Option<Range<usize>>,
    /// An address was written, even if it did not parse (and was reported).
    address_given: bool,
    /// A port was written with the wrong type or out of range (reported).
    port_refused: bool,
    id_span: Range<usize>,
    /// Set while the member's port is still to be checked against the transport.
    port_span: Option<Range<usize>>,
}

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A `*_ms` key as a duration.
fn ms(raw: &Key<u64>, default: u64) -> Duration {
    Duration::from_millis(raw.value().copied().unwrap_or(default))
}
