//! The configuration file: TOML in, a typed and validated `Config` out, or
//! every problem found, each with the line it is on.
//!
//! Parsing happens in two layers. The reader (`raw.rs`) takes the TOML
//! document key by key into raw structs that mirror the file and keep the
//! span of every value, and reports every unknown key, wrong type and
//! number out of range; `Checker` (`check.rs`) turns the raw structs into
//! the typed `Config`, collecting every semantic error too, and asks
//! `disk.rs` about hooks, the key file and the control group. Only a syntax
//! error stops reading: what follows it is not TOML. The defaults and limits
//! are in `defaults.rs`; what a reload may change, in `reload.rs`. This file
//! holds the schema the rest of the daemon reads, and the entry points.
//!
//! Relative paths in the file are taken relative to the file's directory.
//!
//! Architecture Invariant: this module only reads files (the config, the key
//! file, the metadata of hooks), the group database and the index of the
//! multicast interface. It opens no socket, creates nothing and never runs a
//! hook. With `DiskChecks::Skip` it touches nothing at all.

mod check;
mod defaults;
mod disk;
mod raw;
mod reload;
#[cfg(test)]
mod tests;

pub use reload::Reload;

use std::fmt;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::{CoreConfig, NodeId, Timing};
use crate::wire::KeyId;
use check::Checker;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The cluster's name; packets of other clusters are ignored.
    pub cluster: String,
    /// This host's id, one of `members`.
    pub node: NodeId,
    /// This host's priority; Bully rank is (priority, node id).
    pub priority: u32,
    /// The member list's generation: raised by one with each change of
    /// `members` (docs/PROTOCOL.md §3.19).
    pub generation: u32,
    /// The whole membership, this node included, in file order.
    pub members: Vec<Member>,
    /// How heartbeats travel.
    pub network: Network,
    /// Protocol timing.
    pub timing: Timing,
    /// Election policy.
    pub election: Election,
    /// Hook scripts and the health check.
    pub hooks: Hooks,
    /// Packet authentication.
    pub auth: Auth,
    /// Where the promised epoch is persisted.
    pub state: State,
    /// The control socket and metrics endpoint.
    pub control: Control,
    /// Logging.
    pub log: LogConfig,
}

/// One `[[member]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's id, 1..=65535.
    pub id: NodeId,
    /// Its address: required in unicast mode, informative with multicast.
    pub address: Option<IpAddr>,
    /// Its unicast port when it differs from `network.port`; only set in unicast mode.
    pub port: Option<u16>,
    /// It votes and persists promises but never leads and runs no hooks.
    pub witness: bool,
    /// It is reached by unicast to its address: every member of a unicast
    /// cluster, and those with `transport = "unicast"` beside a multicast
    /// group (a witness in another subnet, say).
    pub unicast: bool,
}

/// How heartbeats reach the other members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One datagram to a multicast group reaches every member.
    Multicast {
        /// The group address and port.
        group: SocketAddr,
        /// The interface to join the group on.
        interface: String,
        /// Deliver our own datagrams back to us (several nodes on one host).
        loopback: bool,
        /// This host's own address and the group's port, where it hears the
        /// members reached by unicast (those with `transport = "unicast"`);
        /// `None` when every member is on the group.
        unicast: Option<SocketAddr>,
    },
    /// One datagram per member, to each member's address.
    Unicast {
        /// The port to listen on, and each member's port unless it gives its own.
        port: u16,
        /// The local address to bind; all addresses when `None`.
        bind: Option<IpAddr>,
    },
}

/// The `[network]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// Multicast or unicast.
    pub transport: Transport,
}

/// The `[election]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    /// A higher-ranked node that comes back takes over from a lower-ranked leader.
    pub preempt: bool,
    /// ... once it has been alive and eligible this long.
    pub preempt_delay: Duration,
    /// Time a node stays ineligible after a failed promote or a step-down.
    pub holdoff: Duration,
}

impl Default for Election {
    fn default() -> Election {
        Election {
            preempt: true,
            preempt_delay: Duration::from_millis(defaults::PREEMPT_DELAY_MS),
            holdoff: Duration::from_millis(defaults::HOLDOFF_MS),
        }
    }
}

/// The `[hooks]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    /// Run when this node becomes leader.
    pub promote: Option<PathBuf>,
    /// Run when this node stops leading, and once at start.
    pub demote: Option<PathBuf>,
    /// Run on every role change, for information only.
    pub notify: Option<PathBuf>,
    /// A hook still running after this long is terminated.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL of a hook's process group.
    pub kill_grace: Duration,
    /// Interval of `refresh` calls while leading; `None` disables them.
    pub refresh_interval: Option<Duration>,
    /// Hook output beyond this many bytes per run is dropped from the log.
    pub output_max_bytes: usize,
    /// The health check's argv; `None` means always healthy.
    pub check: Option<Vec<String>>,
    /// Time between health checks.
    pub check_interval: Duration,
    /// A check still running after this long counts as failed.
    pub check_timeout: Duration,
    /// Consecutive failures before the node becomes ineligible.
    pub check_fall: u32,
    /// Consecutive passes before it becomes eligible again.
    pub check_rise: u32,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            promote: None,
            demote: None,
            notify: None,
            timeout: Duration::from_millis(defaults::HOOK_TIMEOUT_MS),
            kill_grace: Duration::from_millis(defaults::KILL_GRACE_MS),
            refresh_interval: Some(Duration::from_millis(defaults::REFRESH_INTERVAL_MS)),
            output_max_bytes: defaults::OUTPUT_MAX_BYTES,
            check: None,
            check_interval: Duration::from_millis(defaults::CHECK_INTERVAL_MS),
            check_timeout: Duration::from_millis(defaults::CHECK_TIMEOUT_MS),
            check_fall: defaults::CHECK_FALL,
            check_rise: defaults::CHECK_RISE,
        }
    }
}

/// The `[auth]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The HMAC key datagrams are sent with, read from `key_file`. `None`
    /// when `insecure`, and also when the file was parsed with
    /// `DiskChecks::Skip`: a daemon must only run from a config made by
    /// `Config::load`.
    pub key: Option<Vec<u8>>,
    /// Where the key came from.
    pub key_file: Option<PathBuf>,
    /// The id datagrams name their key by: 0, the default, sends them as
    /// protocol version 1, exactly as a release without key ids does.
    pub key_id: KeyId,
    /// Keys accepted on receipt but never sent with (`[[auth.accept]]`), in
    /// file order: ids unique and none equal to `key_id`.
    pub accept: Vec<AcceptedKey>,
    /// Packets are neither signed nor verified.
    pub insecure: bool,
}

impl Auth {
    /// How datagrams are authenticated, in a few words and without a key's
    /// bytes: "hmac-sha256", and the key ids once there are several.
    fn summary(&self) -> String {
        if self.insecure {
            return "INSECURE (no authentication)".to_owned();
        }
        if self.key_id == KeyId(0) && self.accept.is_empty() {
            return "hmac-sha256".to_owned();
        }
        let mut text = format!("hmac-sha256 with key id {}", self.key_id);
        let accepted: Vec<String> = self.accept.iter().map(|a| a.id.to_string()).collect();
        if !accepted.is_empty() {
            text.push_str(&format!(", also accepting key id {}", accepted.join(", ")));
        }
        text
    }
}

impl fmt::Debug for Auth {
    // The key stays out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("key", &self.key.as_deref().map(Hidden))
            .field("key_file", &self.key_file)
            .field("key_id", &self.key_id)
            .field("accept", &self.accept)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// One `[[auth.accept]]`: a key datagrams may be authenticated with, which
/// this host does not send with. During a rotation it is the new key (until
/// every host accepts it) or the old one (until no host sends with it).
#[derive(Clone, PartialEq, Eq)]
pub struct AcceptedKey {
    /// The id datagrams authenticated with it carry.
    pub id: KeyId,
    /// Where the key came from.
    pub key_file: PathBuf,
    /// The key, read from `key_file`; `None` as for [`Auth::key`].
    pub key: Option<Vec<u8>>,
}

impl fmt::Debug for AcceptedKey {
    // The key stays out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcceptedKey")
            .field("id", &self.id)
            .field("key_file", &self.key_file)
            .field("key", &self.key.as_deref().map(Hidden))
            .finish()
    }
}

/// A key in Debug output: its length, never its bytes.
struct Hidden<'a>(&'a [u8]);

impl fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// The `[state]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The directory holding the persisted epoch.
    pub dir: PathBuf,
}

/// The `[control]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    /// The control socket's path.
    pub socket: PathBuf,
    /// A group whose members may use the socket besides root.
    pub group: Option<String>,
    /// Where to serve Prometheus metrics over HTTP; always a loopback address.
    pub metrics_listen: Option<SocketAddr>,
}

/// Where log records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error with level prefixes, for journald.
    Stderr,
    /// The local syslog daemon.
    Syslog,
}

/// The `[log]` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Where records go.
    pub target: LogTarget,
    /// The most verbose level logged.
    pub level: log::LevelFilter,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            target: LogTarget::Stderr,
            level: log::LevelFilter::Info,
        }
    }
}

/// Whether parsing may look at the filesystem and the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskChecks {
    /// Check that hooks exist and are executable, that the control group
    /// exists and that network.interface exists on this host (in this
    /// network namespace), and read the key file.
    Check,
    /// Touch nothing; `auth.key` stays `None`.
    Skip,
}

/// One problem with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as it was named to us.
    pub file: PathBuf,
    /// The 1-based line of the offending key, where there is one.
    pub line: Option<usize>,
    /// What is wrong, for an operator.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration file; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line, "FILE:LINE: reason", without a final newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates the file at `path`, checks the hooks on disk and
    /// loads the key file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let (text, base) = read(path)?;
        Checker::new(&text, path, &base, DiskChecks::Check).run()
    }

    /// Validates `text` as if it were the file `file` (used in messages, and
    /// its directory for relative paths). With `DiskChecks::Skip` nothing is
    /// read from disk, which suits tests and a config about another host.
    pub fn parse(text: &str, file: &Path, disk: DiskChecks) -> Result<Config, ConfigErrors> {
        let base = file.parent().unwrap_or(Path::new(""));
        Checker::new(text, file, base, disk).run()
    }

    /// The part of the configuration the election core needs.
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            id: self.node,
            members: self.members.iter().map(|m| m.id).collect(),
            generation: self.generation,
            priority: self.priority,
            timing: self.timing.clone(),
            preempt: self.election.preempt,
            preempt_delay: self.election.preempt_delay,
            holdoff: self.election.holdoff,
            witness: self.witness(),
        }
    }

    /// This node is a witness.
    pub fn witness(&self) -> bool {
        self.members.iter().any(|m| m.id == self.node && m.witness)
    }

    /// Advice on a configuration that is valid but probably not what the
    /// operator wants; `regent check` prints it and the daemon logs it.
    pub fn advice(&self) -> Vec<String> {
        let mut advice = Vec::new();
        let voters = self.members.len();
        let can_lead = self.members.iter().filter(|m| !m.witness).count();
        if voters == 2 {
            advice.push(
                "two members cannot fail over: a quorum needs both, so losing either stops \
                 the cluster; add a witness (a third [[member]] with witness = true, on \
                 another host) and see README \"Two hosts\""
                    .to_owned(),
            );
        }
        if can_lead == 1 && voters > 1 {
            advice.push(
                "only one member can lead (the others are witnesses): there is nothing to \
                 fail over to"
                    .to_owned(),
            );
        }
        advice
    }

    /// The number of members that make a majority: floor(N/2) + 1.
    pub fn quorum(&self) -> usize {
        crate::core::quorum(self.members.len())
    }

    /// The members' ids, in file order.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The member list and its quorum, for `regent check`:
    /// `generation 2: members 1, 2, 3, 4 (quorum 3 of 4)`.
    pub fn membership_summary(&self) -> String {
        let ids: Vec<String> = self.members.iter().map(|m| m.id.to_string()).collect();
        format!(
            "generation {}: members {} (quorum {} of {})",
            self.generation,
            ids.join(", "),
            self.quorum(),
            self.members.len()
        )
    }

    /// One line describing the configuration, for `regent check`.
    pub fn summary(&self) -> String {
        let transport = match &self.network.transport {
            Transport::Multicast {
                group,
                interface,
                loopback,
                unicast,
            } => {
                let lo = if *loopback { " (loopback on)" } else { "" };
                let beside = match unicast {
                    Some(local) => {
                        let ids: Vec<String> = self
                            .members
                            .iter()
                            .filter(|m| m.unicast)
                            .map(|m| m.id.to_string())
                            .collect();
                        format!(", unicast from {local} to member {}", ids.join(", "))
                    }
                    None => String::new(),
                };
                format!("multicast {group} on {interface}{lo}{beside}")
            }
            Transport::Unicast {
                port,
                bind: Some(bind),
            } => format!("unicast {bind} port {port}"),
            Transport::Unicast { port, bind: None } => format!("unicast port {port}"),
        };
        let lease = lease(&self.timing).map_or_else(
            || "none".to_owned(),
            |l| format!("{:.1} ms", l.as_secs_f64() * 1e3),
        );
        let auth = self.auth.summary();
        format!(
            "cluster {}, node {}{} of {} members{} (quorum {}), priority {}, {}, \
             heartbeat {} ms, dead_after {} ms, lease {}, auth {}",
            self.cluster,
            self.node,
            if self.witness() { " (a witness)" } else { "" },
            self.members.len(),
            match self.members.iter().filter(|m| m.witness).count() {
                0 => String::new(),
                1 => ", 1 a witness".to_owned(),
                n => format!(", {n} witnesses"),
            },
            self.quorum(),
            self.priority,
            transport,
            self.timing.heartbeat.as_millis(),
            self.timing.dead_after.as_millis(),
            lease,
            auth,
        )
    }
}

/// The text of the file at `path`, and the directory its relative paths
/// are relative to.
fn read(path: &Path) -> Result<(String, PathBuf), ConfigErrors> {
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            message,
        }])
    };
    let text = fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    // Relative paths inside the file are relative to its directory, so
    // that directory must not depend on the current one later on.
    let absolute =
        std::path::absolute(path).map_err(|e| fail(format!("cannot resolve path: {e}")))?;
    let base = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok((text, base))
}

/// Where the daemon that runs with the file `file` (of text `text`) listens:
/// `control.socket`, or the default for its `cluster`. For the CLI to reach
/// that daemon, so read leniently: a file with errors elsewhere (being
/// edited, or about to be refused by a reload) still leads to its daemon,
/// which then names the errors itself. Fails, with the file's errors, only
/// when the text is not TOML or names neither key.
pub fn control_socket(text: &str, file: &Path) -> Result<PathBuf, ConfigErrors> {
    let errors = match Config::parse(text, file, DiskChecks::Skip) {
        Ok(config) => return Ok(config.control.socket),
        Err(errors) => errors,
    };
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Err(errors);
    };
    let socket = table
        .get("control")
        .and_then(|c| c.get("socket"))
        .and_then(toml::Value::as_str);
    let cluster = table.get("cluster").and_then(toml::Value::as_str);
    match (socket, cluster) {
        // As the checker resolves it: relative to the file's directory.
        (Some(socket), _) => Ok(file.parent().unwrap_or(Path::new("")).join(socket)),
        (None, Some(cluster)) => Ok(PathBuf::from(default_socket(cluster))),
        (None, None) => Err(errors),
    }
}

/// The control socket of a cluster whose file does not set one.
fn default_socket(cluster: &str) -> String {
    format!("{}/{cluster}.sock", defaults::RUNTIME_DIR)
}

/// `regent check`: validates the file at `path` the way `regent run` would.
/// Returns the configuration and the text to print, without a final
/// newline: `ok: ` and the summary, the member list with its quorum, then a
/// `warning: ` line for each piece of advice; or every error, one per line.
/// (The CLI adds what the running daemon would make of the member list.)
pub fn check_command(path: &Path) -> Result<(Config, String), String> {
    let config = Config::load(path).map_err(|errors| errors.to_string())?;
    let mut text = format!("ok: {}\n{}", config.summary(), config.membership_summary());
    for advice in config.advice() {
        text.push_str("\nwarning: ");
        text.push_str(&advice);
    }
    Ok((config, text))
}

/// The lease a leader holds after a quorum acks a heartbeat (the core's
/// `Timing::lease`); `None` if nothing is left of it.
fn lease(timing: &Timing) -> Option<Duration> {
    Some(timing.lease()).filter(|l| !l.is_zero())
}
