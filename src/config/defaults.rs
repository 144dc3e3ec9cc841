//! Default values of the optional keys, shared by the checker, the
//! `Default` impls and the docs in `conf/regent.toml`, and the limits the
//! file is checked against.
//!
//! Architecture Invariant: constants only. Nothing here checks, computes or
//! reads anything; a default changed here must be changed in
//! `conf/regent.toml` too, as
//! `reference_config_parses_and_documents_the_defaults` checks.

pub const PRIORITY: u32 = 100;
/// The first member list; each change of `[[member]]` raises it by one.
pub const GENERATION: u32 = 1;
pub const PORT: u16 = 7475;
pub const HEARTBEAT_MS: u64 = 100;
pub const DEAD_AFTER_MS: u64 = 300;
pub const LEASE_MARGIN_MS: u64 = 20;
/// Enough for `ip addr del` and a log line from a small script.
pub const DEMOTE_BUDGET_MS: u64 = 25;
pub const MAX_DRIFT_PPM: u32 = 10_000;
pub const PREEMPT_DELAY_MS: u64 = 5_000;
pub const HOLDOFF_MS: u64 = 10_000;
pub const HOOK_TIMEOUT_MS: u64 = 10_000;
pub const KILL_GRACE_MS: u64 = 2_000;
pub const REFRESH_INTERVAL_MS: u64 = 10_000;
pub const OUTPUT_MAX_BYTES: usize = 65_536;
pub const CHECK_INTERVAL_MS: u64 = 1_000;
pub const CHECK_TIMEOUT_MS: u64 = 2_000;
pub const CHECK_FALL: u32 = 3;
pub const CHECK_RISE: u32 = 2;
pub const STATE_DIR: &str = "/var/lib/regent";
/// The control sockets' directory: `control.socket` is `CLUSTER.sock` in it.
pub const RUNTIME_DIR: &str = "/run/regent";

/// Limits the file is checked against.
pub mod limits {
    pub const CLUSTER_NAME_MAX: usize = 64;
    pub const MEMBERS_MAX: usize = 64;
    pub const MEMBER_ID_MAX: u32 = 65_535;
    pub const HEARTBEAT_MIN_MS: u64 = 5;
    pub const DRIFT_PPM_LIMIT: u32 = 100_000;
    pub const KEY_MIN_BYTES: usize = 16;
    /// Linux interface names are at most IFNAMSIZ - 1 bytes.
    pub const INTERFACE_NAME_MAX: usize = 15;
}
