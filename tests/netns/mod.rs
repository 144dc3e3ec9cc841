//! An emulated LAN of network namespaces for tests that need real sockets,
//! real processes and real packet loss: one bridge namespace holding a switch
//! (`br0`), and one namespace per host, each with an `eth0` cabled to it.
//!
//! Include it from an integration test with
//! `#[path = "netns/mod.rs"] mod netns;`.
//!
//! Architecture Invariant: everything this harness changes lives inside
//! namespaces it created. It never touches the host's own interfaces,
//! routes or sysctls, it gives no namespace a route off its own /24 (but
//! for the two /24s of a routed Lan, to each other through its router), and
//! every namespace and process it made is removed when the `Lan` drops,
//! panics included. Leftovers of a test process that was killed outright
//! are swept by the next `Lan::new` of any later run.
//!
//! Names: every namespace starts with `rgt<pid>x<n>`, the pid of the test
//! process and a per-process counter, so parallel tests and parallel runs
//! never collide and a sweep can tell whose namespace it is. Host `i` lives
//! in `<prefix>h<i>`, the client in `<prefix>c`, the switch in `<prefix>br`,
//! the router of a routed Lan in `<prefix>rt`,
//! where the switch port of host `i` is named `h<i>` (of the client, `c`).

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The fixed start of every namespace this harness creates.
pub const FAMILY: &str = "rgt";

/// The host number of the client namespace, which also ends its addresses
/// (`10.X.Y.200`). Every method taking a host accepts it on a `Lan` built
/// with [`Lan::with_client`].
pub const CLIENT: usize = 200;

/// The router of a [`Lan::routed`], for [`Lan::partition`]: the hosts
/// behind it go with it.
pub const ROUTER: usize = 201;

/// The most hosts one `Lan` holds; host numbers stay below [`CLIENT`].
pub const MAX_HOSTS: usize = 99;

/// The nftables table for partitions, in the bridge namespace.
const PARTITION_TABLE: &str = "bridge rgt_partition";
/// The nftables table for one-way blocks, in the bridge namespace.
const BLOCK_TABLE: &str = "bridge rgt_block";
/// The nftables table for packet loss, in a host namespace.
const LOSS_TABLE: &str = "netdev rgt_loss";

static NEXT_LAN: AtomicU32 = AtomicU32::new(0);

/// An emulated LAN: hosts `1..=hosts` (and maybe the client) on one switch.
/// Dropping it kills every process still running in its namespaces and
/// deletes them.
#[derive(Debug)]
pub struct Lan {
    prefix: String,
    hosts: usize,
    client: bool,
    /// The middle octets of every address: `10.X.Y.i`, `fd00:X:Y::i`.
    subnet: (u8, u8),
    /// Hosts on a second subnet behind a router (see [`Lan::routed`]).
    routed: Vec<usize>,
    /// Namespaces created so far, in creation order, for `Drop`.
    created: Vec<String>,
}

impl Lan {
    /// Builds a switch and `hosts` hosts, host `i` with `eth0` addressed
    /// `10.X.Y.i/24` and `fd00:X:Y::i/64` (DAD off, so usable at once),
    /// multicast on, `lo` up, and gratuitous ARP accepted and sent.
    pub fn new(hosts: usize) -> Lan {
        Lan::build(hosts, false, &[])
    }

    /// Like [`Lan::new`], plus a client namespace on the same switch at
    /// host number [`CLIENT`] (address `.200`), e.g. to watch a VIP move.
    pub fn with_client(hosts: usize) -> Lan {
        Lan::build(hosts, true, &[])
    }

    /// Like [`Lan::new`], but the hosts in `behind` sit on a second subnet,
    /// `10.X.Y'.i/24` with `Y' = Y ^ 128`, behind a router: a namespace
    /// whose `eth0` is on the switch at `10.X.Y.254` and whose `br1`, with
    /// the routed hosts' cables, is `10.X.Y'.254`. Each side has a route to
    /// the other's /24 through the router, and nothing else: multicast
    /// stays on its own subnet, as it does behind a real router.
    pub fn routed(hosts: usize, behind: &[usize]) -> Lan {
        Lan::build(hosts, false, behind)
    }

    /// Like [`Lan::routed`], plus a client on the switch as in
    /// [`Lan::with_client`]. The client gets no route to the second
    /// subnet: it talks to the hosts of its own.
    pub fn routed_with_client(hosts: usize, behind: &[usize]) -> Lan {
        Lan::build(hosts, true, behind)
    }

    fn build(hosts: usize, client: bool, routed: &[usize]) -> Lan {
        assert!(
            (1..=MAX_HOSTS).contains(&hosts),
            "a Lan holds 1 to {MAX_HOSTS} hosts, not {hosts}"
        );
        sweep_stale();
        let pid = std::process::id();
        let n = NEXT_LAN.fetch_add(1, Ordering::Relaxed);
        // Varies with the process and the Lan, so concurrent Lans rarely
        // share a subnet (and could not reach each other if they did: each
        // is its own set of namespaces). Truncation to a byte is intended.
        let subnet = (1 + (pid % 250) as u8, n as u8);
        let mut lan = Lan {
            prefix: format!("{FAMILY}{pid}x{n}"),
            hosts,
            client,
            subnet,
            routed: routed.to_vec(),
            created: Vec::new(),
        };
        // From here on a panic drops `lan`, which removes what exists so far.
        let bridge = lan.bridge_ns();
        lan.add_namespace(&bridge);
        run(&format!(
            "ip -n {bridge} link add br0 type bridge mcast_snooping 0"
        ));
        run(&format!("ip -n {bridge} link set br0 up"));
        if !routed.is_empty() {
            lan.add_router();
        }
        for host in 1..=hosts {
            lan.add_host(host);
        }
        if client {
            lan.add_host(CLIENT);
        }
        lan
    }

    /// The router of [`Lan::routed`]: forwards between the switch and `br1`.
    fn add_router(&mut self) {
        let (router, bridge) = (self.router_ns(), self.bridge_ns());
        self.add_namespace(&router);
        run(&format!(
            "ip netns exec {router} sysctl -q -w net.ipv4.ip_forward=1"
        ));
        run(&format!(
            "ip -n {router} link add eth0 type veth peer name rt netns {bridge}"
        ));
        run(&format!("ip -n {bridge} link set rt master br0"));
        run(&format!("ip -n {bridge} link set rt up"));
        let (x, y) = self.subnet;
        run(&format!(
            "ip -n {router} addr add 10.{x}.{y}.254/24 dev eth0"
        ));
        run(&format!("ip -n {router} link set eth0 up"));
        run(&format!("ip -n {router} link add br1 type bridge"));
        let far = y ^ 0x80;
        run(&format!(
            "ip -n {router} addr add 10.{x}.{far}.254/24 dev br1"
        ));
        run(&format!("ip -n {router} link set br1 up"));
    }

    /// The namespace of the router of [`Lan::routed`].
    pub fn router_ns(&self) -> String {
        format!("{}rt", self.prefix)
    }

    fn add_namespace(&mut self, name: &str) {
        run(&format!("ip netns add {name}"));
        self.created.push(name.to_owned());
        run(&format!("ip -n {name} link set lo up"));
    }

    fn add_host(&mut self, host: usize) {
        let ns = self.ns(host);
        let port = port_name(host);
        let bridge = self.bridge_ns();
        self.add_namespace(&ns);
        // Set before eth0 exists, so eth0 inherits the defaults.
        // DAD off: addresses, a moved VIP included, are usable at once.
        // arp_accept: neighbours learn a VIP's new owner from gratuitous ARP.
        // arp_notify / ndisc_notify: announce an address when it comes up.
        let sysctls = [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv4.conf.all.arp_accept=1",
            "net.ipv4.conf.default.arp_accept=1",
            "net.ipv4.conf.all.arp_notify=1",
            "net.ipv4.conf.default.arp_notify=1",
            "net.ipv6.conf.all.ndisc_notify=1",
            "net.ipv6.conf.default.ndisc_notify=1",
        ]
        .join(" ");
        run(&format!("ip netns exec {ns} sysctl -q -w {sysctls}"));
        // Both ends are created directly in their namespaces: nothing ever
        // appears in the host's own namespace. A routed host is cabled to
        // the router's `br1` instead of the switch.
        let (switch_ns, switch) = if self.routed.contains(&host) {
            (self.router_ns(), "br1")
        } else {
            (bridge, "br0")
        };
        run(&format!(
            "ip -n {ns} link add eth0 type veth peer name {port} netns {switch_ns}"
        ));
        run(&format!(
            "ip -n {switch_ns} link set {port} master {switch}"
        ));
        run(&format!("ip -n {switch_ns} link set {port} up"));
        let v4 = format!("{}/24", self.addr4(host));
        let v6 = format!("{}/64", self.addr6(host));
        run(&format!("ip -n {ns} addr add {v4} dev eth0"));
        run(&format!("ip -n {ns} addr add {v6} dev eth0 nodad"));
        run(&format!("ip -n {ns} link set eth0 multicast on up"));
        if !self.routed.is_empty() && host != CLIENT {
            let (x, y) = self.subnet;
            let (there, via) = if self.routed.contains(&host) {
                (y, y ^ 0x80)
            } else {
                (y ^ 0x80, y)
            };
            run(&format!(
                "ip -n {ns} route add 10.{x}.{there}.0/24 via 10.{x}.{via}.254"
            ));
        }
    }

    /// The start of every namespace name of this Lan, e.g. `rgt4242x0`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many hosts (not counting the client) this Lan has.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The namespace of host `host` (1-based), or of [`CLIENT`].
    pub fn ns(&self, host: usize) -> String {
        self.check_host(host);
        if host == CLIENT {
            format!("{}c", self.prefix)
        } else {
            format!("{}h{host}", self.prefix)
        }
    }

    /// The client's namespace; panics on a Lan built without one.
    pub fn client_ns(&self) -> String {
        self.ns(CLIENT)
    }

    /// The namespace holding the switch `br0`.
    pub fn bridge_ns(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// Host `host`'s IPv4 address on `eth0`: `10.X.Y.host`.
    pub fn addr4(&self, host: usize) -> Ipv4Addr {
        self.check_host(host);
        let (x, mut y) = self.subnet;
        if self.routed.contains(&host) {
            y ^= 0x80;
        }
        // check_host keeps host at most CLIENT (200), which fits a byte.
        Ipv4Addr::new(10, x, y, host as u8)
    }

    /// Host `host`'s IPv6 address on `eth0`: `fd00:X:Y::host`.
    pub fn addr6(&self, host: usize) -> Ipv6Addr {
        self.check_host(host);
        let (x, y) = self.subnet;
        Ipv6Addr::new(0xfd00, x.into(), y.into(), 0, 0, 0, 0, host as u16)
    }

    /// A free IPv4 address in the LAN's subnet for a floating VIP: `10.X.Y.250`.
    pub fn vip4(&self) -> Ipv4Addr {
        let (x, y) = self.subnet;
        Ipv4Addr::new(10, x, y, 250)
    }

    /// A free IPv6 address in the LAN's subnet for a floating VIP: `fd00:X:Y::fa`.
    pub fn vip6(&self) -> Ipv6Addr {
        let (x, y) = self.subnet;
        Ipv6Addr::new(0xfd00, x.into(), y.into(), 0, 0, 0, 0, 0xfa)
    }

    /// Pulls host `host`'s cable: its switch port goes down, so `eth0` loses
    /// carrier and nothing passes either way.
    pub fn cut(&self, host: usize) {
        let (switch, port) = (self.switch_ns(host), self.port(host));
        run(&format!("ip -n {switch} link set {port} down"));
    }

    /// Plugs host `host`'s cable back in.
    pub fn heal(&self, host: usize) {
        let (switch, port) = (self.switch_ns(host), self.port(host));
        run(&format!("ip -n {switch} link set {port} up"));
    }

    /// The namespace holding the other end of host `host`'s cable.
    fn switch_ns(&self, host: usize) -> String {
        if self.routed.contains(&host) {
            self.router_ns()
        } else {
            self.bridge_ns()
        }
    }

    /// Splits the LAN: the switch drops every frame between hosts of
    /// different groups (unicast, multicast, ARP and neighbour discovery
    /// alike, whatever the addresses, so a VIP is cut off too). Hosts in no
    /// group stay connected to everyone, e.g. a client watching both sides.
    /// Replaces any earlier partition atomically.
    pub fn partition(&self, groups: &[&[usize]]) {
        let mut seen = Vec::new();
        for &host in groups.iter().flat_map(|group| group.iter()) {
            if host != ROUTER || self.routed.is_empty() {
                self.check_host(host);
            }
            assert!(
                !seen.contains(&host),
                "host {host} is in two partition groups"
            );
            seen.push(host);
        }
        let mut rules = String::new();
        for (i, from) in groups.iter().enumerate() {
            for (j, to) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &a in from.iter() {
                    for &b in to.iter() {
                        rules.push_str(&format!(
                            "    iifname \"{}\" oifname \"{}\" drop\n",
                            port_name(a),
                            port_name(b)
                        ));
                    }
                }
            }
        }
        let script = format!(
            "{}table {PARTITION_TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n",
            replace_table(PARTITION_TABLE)
        );
        nft(&self.bridge_ns(), &script);
    }

    /// Removes the partition; a no-op when there is none.
    pub fn heal_partition(&self) {
        nft(&self.bridge_ns(), &replace_table(PARTITION_TABLE));
    }

    /// Blocks the links `(from, to)` one way each: the switch drops every
    /// frame from host `from`'s port to host `to`'s (unicast, multicast and
    /// ARP alike) while frames from `to` to `from` still pass. Replaces any
    /// earlier set of blocks atomically; independent of [`Lan::partition`].
    pub fn block(&self, links: &[(usize, usize)]) {
        let mut rules = String::new();
        for &(from, to) in links {
            rules.push_str(&format!(
                "    iifname \"{}\" oifname \"{}\" drop\n",
                self.port(from),
                self.port(to)
            ));
        }
        let script = format!(
            "{}table {BLOCK_TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n",
            replace_table(BLOCK_TABLE)
        );
        nft(&self.bridge_ns(), &script);
    }

    /// Lifts every one-way block; a no-op when there is none.
    pub fn unblock(&self) {
        nft(&self.bridge_ns(), &replace_table(BLOCK_TABLE));
    }

    /// Makes host `host`'s link lossy: each frame in and each frame out of
    /// its `eth0` is dropped with probability `percent`/100, independently.
    /// Uses the netdev ingress and egress hooks rather than inet input and
    /// output, so ARP and neighbour discovery suffer too, and a dropped
    /// outgoing frame is lost silently (an output-hook drop would instead
    /// fail the sender's `sendto` with EPERM, which no real link does).
    /// Replaces any earlier loss setting of the host.
    pub fn loss(&self, host: usize, percent: u32) {
        assert!(percent <= 100, "loss of {percent}% is not a percentage");
        // nft compares numgen only against 0..=99, so 100% is a plain drop.
        let rule = match percent {
            0 => return self.clear_loss(host),
            100 => "drop".to_owned(),
            p => format!("numgen random mod 100 < {p} drop"),
        };
        let chain = |name: &str| {
            format!(
                "  chain {name} {{\n    type filter hook {name} device \"eth0\" priority 0; policy accept;\n    {rule}\n  }}\n"
            )
        };
        let script = format!(
            "{}table {LOSS_TABLE} {{\n{}{}}}\n",
            replace_table(LOSS_TABLE),
            chain("ingress"),
            chain("egress")
        );
        nft(&self.ns(host), &script);
    }

    /// Makes host `host`'s link lossless again; a no-op when it is.
    pub fn clear_loss(&self, host: usize) {
        nft(&self.ns(host), &replace_table(LOSS_TABLE));
    }

    /// Runs `cmd` to completion inside host `host`'s namespace with
    /// `ip netns exec`, capturing its output. A command that fails is not a
    /// panic here: check `status`.
    pub fn exec(&self, host: usize, cmd: &[&str]) -> Output {
        let ns = self.ns(host);
        require_tool(cmd[0]);
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {cmd:?}: {e}"))
    }

    /// Starts `cmd` inside host `host`'s namespace, keeping everything set
    /// on it (arguments, environment, directory, stdio). It does what `ip
    /// netns exec` does: the child enters the network namespace and gets a
    /// private mount namespace with `/sys` remounted, so `/sys/class/net`
    /// shows the namespace's interfaces. The process is killed when the
    /// `Lan` drops, if it still runs.
    pub fn spawn(&self, host: usize, cmd: &mut Command) -> Child {
        let ns = self.ns(host);
        // SAFETY: the hook only makes raw system calls (unshare, mount,
        // umount2), which are async-signal-safe, on strings made before
        // fork; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(remount_sys);
        }
        self.in_ns(host, || cmd.spawn())
            .unwrap_or_else(|e| panic!("spawn {:?} in {ns}: {e}", cmd.get_program()))
    }

    /// Runs `f` on a thread that has entered host `host`'s network
    /// namespace, and returns its result. Sockets `f` opens stay in that
    /// namespace after the thread ends, so this is how a test opens a real
    /// [`regentd::net::Endpoint`] on a host. A panic in `f` propagates.
    pub fn in_ns<T: Send>(&self, host: usize, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.ns(host);
        let path = format!("/var/run/netns/{ns}");
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: `file` is an open namespace file; setns changes only
                // this thread's network namespace, and the thread ends after `f`.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!("setns into {ns}: {}", std::io::Error::last_os_error());
                }
                f()
            });
            match worker.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn port(&self, host: usize) -> String {
        self.check_host(host);
        port_name(host)
    }

    fn check_host(&self, host: usize) {
        let valid = (1..=self.hosts).contains(&host) || (self.client && host == CLIENT);
        assert!(
            valid,
            "host {host} is not on this Lan (hosts 1..={}{})",
            self.hosts,
            if self.client { " and CLIENT" } else { "" }
        );
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Hosts first: deleting a host namespace also deletes its cable.
        for ns in self.created.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// Whether the netns tests can run: true as root. Otherwise, with `CI=true`
/// this panics (CI must run them), else it says it skips and returns false.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the network namespace tests need root, and CI must run them");
    }
    eprintln!("skipping: needs root");
    false
}

/// The Debian package that brings each tool the tests run.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("arping", "iputils-arping"),
    ("nsenter", "util-linux"),
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
];

/// Panics, naming the tool and its package, unless `tool` is on the PATH.
/// Tools the table does not know are left to fail as they run.
pub fn require_tool(tool: &str) {
    let Some(&(_, package)) = TOOL_PACKAGES.iter().find(|(t, _)| *t == tool) else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
    assert!(
        found,
        "this test needs `{tool}`, which is not installed: `apt-get install {package}`, \
         or run the tests with ./test.sh, which installs it"
    );
}

/// Namespaces of this harness whose name contains `prefix`, as listed now.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    list_namespaces()
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// Removes the namespaces of earlier test processes that died without
/// cleaning up (killed, aborted): those whose pid in `rgt<pid>x<n>` is not
/// alive. A live process's namespaces are never touched.
pub fn sweep_stale() {
    for name in list_namespaces() {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netns harness: removing {name}, left over by dead process {pid}");
            remove_namespace(&name);
        }
    }
}

/// The pid encoded in a harness namespace name, `None` for other names.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(FAMILY)?;
    let (pid, lan) = rest.split_once('x')?;
    if lan.is_empty() || !lan.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn list_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap_or_else(|e| panic!("ip netns list: {e}"));
    // Lines look like `name` or `name (id: 3)`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Kills whatever still runs in `ns`, then deletes it. Never panics: it
/// runs in `Drop`, possibly while a test is already unwinding.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        let me = std::process::id();
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .filter(|&pid| pid != me)
        {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions; the pid is
                // a process inside a namespace this harness created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    match Command::new("ip").args(["netns", "del", ns]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "netns harness: ip netns del {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("netns harness: ip netns del {ns}: {e}"),
    }
}

/// The switch port of host `host`, in the bridge namespace.
fn port_name(host: usize) -> String {
    if host == CLIENT {
        "c".to_owned()
    } else if host == ROUTER {
        "rt".to_owned()
    } else {
        format!("h{host}")
    }
}

/// nft lines that delete `table` whether or not it exists (nft 1.0.6 has
/// no `destroy`): declaring an empty table is a no-op if it exists.
fn replace_table(table: &str) -> String {
    format!("table {table} {{\n}}\ndelete table {table}\n")
}

/// Applies an nft script inside `ns` as one transaction.
fn nft(ns: &str, script: &str) {
    require_tool("nft");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("nft in {ns}: {e}"));
    child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("write nft script to {ns}: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("nft in {ns}: {e}"));
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}\nscript:\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a setup command given as one line of space-separated arguments
/// (none of the harness's arguments contains a space); a failure is a panic
/// naming the command.
fn run(line: &str) {
    let cmd: Vec<&str> = line.split_whitespace().collect();
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The mount half of `ip netns exec`, run in the child between fork and
/// exec: a private mount namespace whose `/sys` belongs to the network
/// namespace the child is in.
fn remount_sys() -> std::io::Result<()> {
    fn check(rc: libc::c_int) -> std::io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    // Static C strings: nothing may be allocated after fork.
    let root = c"/";
    let sys = c"/sys";
    let sysfs = c"sysfs";
    let none = c"none";
    // SAFETY: raw system calls on NUL-terminated static strings.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Keep the remount private to this child.
        check(libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ))?;
        // /sys may be unmounted or busy; a fresh mount on top works either way.
        libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
        check(libc::mount(
            sysfs.as_ptr(),
            sys.as_ptr(),
            sysfs.as_ptr(),
            0,
            std::ptr::null(),
        ))?;
    }
    Ok(())
}
