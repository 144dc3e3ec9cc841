//! `regent-bench`: failover measured from a client's point of view, on an
//! emulated LAN of network namespaces, for regent and (with `--compare
//! keepalived`) for keepalived in the same topology.
//!
//! Runs as root. Every namespace, process and file it makes is removed at
//! the end, on an error, on a panic, and on Ctrl-C (SIGINT, SIGTERM and
//! SIGHUP set a flag that every wait checks; the agents run in their own
//! process groups so the signal reaches only the bench). A bench killed
//! outright leaves namespaces that the next run sweeps away.

// The bench measures real time: it reads the clock like the tests do.
#![allow(clippy::disallowed_methods)]

#[path = "../../../tests/netns/mod.rs"]
mod netns;

mod agent;
mod holders;
mod probe;
mod report;
mod scenarios;

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent::{Agent, Profile, Setup, Topology, COMPARISON, EQUAL_FAST, FAST};
use report::{Better, Key, Results};
use scenarios::{Env, Trial};

const USAGE: &str = "\
usage: regent-bench [OPTIONS]        (as root)

Builds an emulated LAN (hosts, a switch, a client) in network namespaces,
runs real `regent run` daemons with a VIP hook, and measures from the
client: a UDP probe to the VIP every 2 ms, answered by whichever host holds it.

  --scenario LIST     crash,graceful,step-down,partition,loss,idle,scale,
                      rolling-restart or all (default all); step-down and
                      rolling-restart are regent only (with --compare
                      keepalived they run for regent alone)
  --profile P         comparison (heartbeat 100 ms, dead_after 300 ms: three
                      heartbeats, as keepalived's three adverts), fast
                      (20 ms / 100 ms), equal-fast (20 ms / 60 ms: three
                      heartbeats again), both (comparison and fast) or all;
                      default both, and all with --compare keepalived
  --trials N          trials per distribution (default 20, --quick 5)
  --scale-trials N    crash trials per host count above 3 in the scale
                      scenario (default 10, --quick 3)
  --compare keepalived  run the same scenarios against keepalived (VRRPv3)
  --witness           the 2+1 topology: two hosts multicasting on the client's
                      LAN and a witness on a second subnet behind a router,
                      reached by unicast (keepalived, which has no witness,
                      runs on the two hosts alone). Scenarios crash,
                      graceful, step-down and partition (default all four);
                      its partition cuts the link between the two hosts
  --quick             the quick set: fewer trials, shorter spans (~5 min)
  --scale LIST        host counts of the scale scenario (default 3,9,17,33)
  --loss-secs N       span of the loss scenario (default 60, --quick 20)
  --idle-secs N       span of the idle measurement (default 30, --quick 10)
  --traffic-secs N    span of the packet-rate measurement (default 10, --quick 5)
  --json PATH         the JSON report (default target/bench.json)
  --regent PATH       the regent binary (default: next to this one)
  --hook PATH         the VIP hook to use, e.g. conf/hooks/vip (default: the
                      bench's own: ip addr replace + arping -U -c 2 / ip addr del)
  --log-level L       regent's log level (default info)
  --keep              keep the agents' configs and logs
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Crash,
    Graceful,
    StepDown,
    Partition,
    Loss,
    Idle,
    Scale,
    RollingRestart,
}

const ALL: [Scenario; 8] = [
    Scenario::Crash,
    Scenario::Graceful,
    Scenario::StepDown,
    Scenario::Partition,
    Scenario::Loss,
    Scenario::Idle,
    Scenario::Scale,
    Scenario::RollingRestart,
];

/// The scenarios of the witness topology (`--witness`).
const WITNESS_SCENARIOS: [Scenario; 4] = [
    Scenario::Crash,
    Scenario::Graceful,
    Scenario::StepDown,
    Scenario::Partition,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Crash => "crash",
            Scenario::Graceful => "graceful",
            Scenario::StepDown => "step-down",
            Scenario::Partition => "partition",
            Scenario::Loss => "loss",
            Scenario::Idle => "idle",
            Scenario::Scale => "scale",
            Scenario::RollingRestart => "rolling-restart",
        }
    }
}

#[derive(Debug)]
struct Options {
    scenarios: Vec<Scenario>,
    profiles: Vec<Profile>,
    trials: usize,
    scale_trials: usize,
    compare: bool,
    /// The 2+1 topology instead of one LAN of hosts.
    witness: bool,
    scale: Vec<usize>,
    loss: Duration,
    idle: Duration,
    traffic: Duration,
    json: PathBuf,
    setup: Setup,
}

fn positive(flag: &str, v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or(format!("{flag}: not a positive number: {v}"))
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    // `None`: every scenario of the topology.
    let mut scenarios: Option<Vec<Scenario>> = None;
    let mut profiles = None;
    let mut trials = None;
    let mut scale_trials = None;
    let mut compare = false;
    let mut witness = false;
    let mut quick = false;
    let mut scale = vec![3, 9, 17, 33];
    let (mut loss, mut idle, mut traffic) = (None, None, None);
    let mut json = PathBuf::from("target/bench.json");
    let mut regent = None;
    let mut hook = None;
    let mut log_level = "info".to_string();
    let mut keep = false;
    let mut it = args.iter();
    let secs = |v: &str| -> Result<Duration, String> {
        v.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("not a number of seconds: {v}"))
    };
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--scenario" => {
                let mut chosen = Some(Vec::new());
                for name in value()?.split(',') {
                    match (ALL.iter().find(|s| s.name() == name), chosen.as_mut()) {
                        (Some(&s), Some(list)) => list.push(s),
                        (Some(_), None) => {}
                        (None, _) if name == "all" => chosen = None,
                        (None, _) => return Err(format!("unknown scenario {name}")),
                    }
                }
                scenarios = chosen;
            }
            "--profile" => {
                profiles = Some(match value()?.as_str() {
                    "comparison" => vec![COMPARISON],
                    "fast" => vec![FAST],
                    "equal-fast" => vec![EQUAL_FAST],
                    "both" => vec![COMPARISON, FAST],
                    "all" => vec![COMPARISON, FAST, EQUAL_FAST],
                    p => {
                        return Err(format!(
                            "unknown profile {p} (comparison, fast, equal-fast, both, all)"
                        ))
                    }
                })
            }
            "--trials" => trials = Some(positive("--trials", &value()?)?),
            "--scale-trials" => scale_trials = Some(positive("--scale-trials", &value()?)?),
            "--compare" => match value()?.as_str() {
                "keepalived" => compare = true,
                other => return Err(format!("can only compare with keepalived, not {other}")),
            },
            "--witness" => witness = true,
            "--quick" => quick = true,
            "--scale" => {
                scale = value()?
                    .split(',')
                    .map(|n| {
                        n.parse::<usize>()
                            .ok()
                            .filter(|n| (3..=netns::MAX_HOSTS).contains(n))
                            .ok_or(format!("--scale: not a host count from 3 to 99: {n}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--loss-secs" => loss = Some(secs(&value()?)?),
            "--idle-secs" => idle = Some(secs(&value()?)?),
            "--traffic-secs" => traffic = Some(secs(&value()?)?),
            "--json" => json = PathBuf::from(value()?),
            "--regent" => regent = Some(PathBuf::from(value()?)),
            "--hook" => {
                let path = std::fs::canonicalize(value()?).map_err(|e| format!("--hook: {e}"))?;
                hook = Some(path);
            }
            "--log-level" => log_level = value()?,
            "--keep" => keep = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let scenarios = match (scenarios, witness) {
        (None, false) => ALL.to_vec(),
        (None, true) => WITNESS_SCENARIOS.to_vec(),
        (Some(list), true) => {
            if let Some(s) = list.iter().find(|s| !WITNESS_SCENARIOS.contains(s)) {
                return Err(format!(
                    "--witness measures crash, graceful, step-down and partition, not {}",
                    s.name()
                ));
            }
            list
        }
        (Some(list), false) => list,
    };
    let regent = match regent {
        Some(r) => r,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this binary: {e}"))?
            .with_file_name("regent"),
    };
    if !regent.exists() {
        return Err(format!(
            "no regent binary at {} (cargo build --release, or --regent PATH)",
            regent.display()
        ));
    }
    let pick = |given: Option<Duration>, full: u64, short: u64| {
        given.unwrap_or(Duration::from_secs(if quick { short } else { full }))
    };
    Ok(Options {
        scenarios,
        // Beside keepalived, detection equal to its three adverts at 20 ms
        // too, by default.
        profiles: profiles.unwrap_or_else(|| {
            if compare {
                vec![COMPARISON, FAST, EQUAL_FAST]
            } else {
                vec![COMPARISON, FAST]
            }
        }),
        trials: trials.unwrap_or(if quick { 5 } else { 20 }),
        scale_trials: scale_trials.unwrap_or(if quick { 3 } else { 10 }),
        compare,
        witness,
        scale,
        loss: pick(loss, 60, 20),
        idle: pick(idle, 30, 10),
        traffic: pick(traffic, 10, 5),
        json,
        setup: Setup {
            regent,
            hook,
            log_level,
            keep,
        },
    })
}

// ----- interruption -----

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT, SIGTERM and SIGHUP set [`STOP`]; a second one kills as usual.
fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to
        // an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// `Err` once the bench was asked to stop.
pub fn interrupted() -> Result<(), String> {
    if STOP.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early with `Err` if the bench is asked to stop.
pub fn pause(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    loop {
        interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Milliseconds since the bench started: the time stamp of log lines and
/// of the faults it reports, so both can be lined up.
pub fn stamp() -> f64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

/// A small xorshift generator for the phase of faults; seeded from the
/// standard library's per-process random hasher keys.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Rng(seed | 1)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 {
            0
        } else {
            self.0 % n
        }
    }
}

// ----- the run -----

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("regent-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("regent-bench: needs root (network namespaces)");
        return ExitCode::from(2);
    }
    for tool in ["ip", "nft", "arping"] {
        if !have(tool) {
            eprintln!("regent-bench: {tool} is missing (apt-get install iproute2 nftables iputils-arping)");
            return ExitCode::from(2);
        }
    }
    if opts.compare && !have("keepalived") {
        eprintln!("regent-bench: keepalived is missing; installing the Debian package");
        let ok = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends keepalived"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !have("keepalived") {
            eprintln!("regent-bench: cannot install keepalived");
            return ExitCode::from(2);
        }
    }
    install_signal_handlers();
    stamp();
    let command = std::iter::once("regent-bench".to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut machine = machine(&opts);
    let started = Instant::now();
    let mut results = Results::default();
    let outcome = run_plan(&opts, &mut results);
    machine.push(("load_after", loadavg()));
    machine.push((
        "duration_s",
        format!("{:.0}", started.elapsed().as_secs_f64()),
    ));
    let targets = report::targets(&results);
    println!("\n{}", report::table(&results, &targets, opts.compare));
    let json = report::json(&results, &targets, &machine, &command);
    if let Some(dir) = opts.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&opts.json, json) {
        Ok(()) => println!("JSON report: {}", opts.json.display()),
        Err(e) => eprintln!("regent-bench: cannot write {}: {e}", opts.json.display()),
    }
    let leftovers =
        netns::namespaces_with_prefix(&format!("{}{}x", netns::FAMILY, std::process::id()));
    if !leftovers.is_empty() {
        eprintln!("regent-bench: namespaces left behind: {leftovers:?}");
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regent-bench: {e}");
            ExitCode::from(if STOP.load(Ordering::Relaxed) { 130 } else { 1 })
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The machine's 1-minute load average and the share of the last minute
/// in which some task waited for a CPU (/proc/pressure/cpu, avg60).
fn contention() -> (Option<f64>, Option<f64>) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    let pressure = std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()?
                .split_whitespace()
                .find_map(|f| f.strip_prefix("avg60="))?
                .parse()
                .ok()
        });
    (load, pressure)
}

/// Records how busy the machine was at the end of a series: other work
/// on a 2-core machine delays the daemons' timers as much as anything.
fn record_contention(results: &mut Results, k: &Key<'_>) {
    let (load, pressure) = contention();
    if let Some(l) = load {
        let key = Key {
            figure: "machine load (1 min) at the end",
            unit: "",
            ..*k
        };
        results.value(&key, Better::Neither, l);
    }
    if let Some(p) = pressure {
        let key = Key {
            figure: "machine CPU pressure (avg60) at the end",
            unit: "%",
            ..*k
        };
        results.value(&key, Better::Neither, p);
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine(opts: &Options) -> Vec<(&'static str, String)> {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    let regent = opts.setup.regent.to_string_lossy().to_string();
    let mut m = vec![
        (
            "nproc",
            std::thread::available_parallelism()
                .map_or(0, |n| n.get())
                .to_string(),
        ),
        ("memory", mem),
        (
            "kernel",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        ("load_before", loadavg()),
        ("regent", out(&regent, &["--version"])),
        (
            "hook",
            opts.setup
                .hook
                .as_ref()
                .map_or("bench's own".into(), |h| h.display().to_string()),
        ),
    ];
    if opts.compare {
        m.push(("keepalived", out("keepalived", &["--version"])));
    }
    m
}

fn run_plan(o: &Options, results: &mut Results) -> Result<(), String> {
    let agents: &[Agent] = if o.compare {
        &[Agent::Regent, Agent::Keepalived]
    } else {
        &[Agent::Regent]
    };
    if o.witness {
        results.notes.push(format!(
            "2+1: regent on two hosts multicasting on the client's LAN and a witness \
             (host {}) on a second subnet behind a router, reached by unicast{}",
            agent::WITNESS,
            if o.compare {
                "; keepalived, which has no witness, on the two hosts alone"
            } else {
                ""
            }
        ));
    }
    let mut spent = [Duration::ZERO; 2];
    let result = run_series(o, results, agents, &mut spent);
    for (&agent, d) in agents.iter().zip(spent) {
        let line = format!(
            "{}: its series took {:.1} min of the run",
            agent.name(),
            d.as_secs_f64() / 60.0
        );
        eprintln!("{line}");
        results.notes.push(line);
    }
    result
}

fn run_series(
    o: &Options,
    results: &mut Results,
    agents: &[Agent],
    spent: &mut [Duration; 2],
) -> Result<(), String> {
    for &scenario in &o.scenarios {
        for &profile in &o.profiles {
            for (slot, &agent) in agents.iter().enumerate() {
                interrupted()?;
                let began = Instant::now();
                eprintln!(
                    "== {} / {} / {}",
                    scenario.name(),
                    profile.name,
                    agent.name()
                );
                let topology = if o.witness {
                    Topology::Witness
                } else {
                    Topology::Lan(3)
                };
                let outcome = match scenario {
                    Scenario::Crash => crash_series(o, results, agent, profile, topology, "crash"),
                    Scenario::Graceful => graceful(o, results, agent, profile, topology),
                    Scenario::StepDown => step_down(o, results, agent, profile, topology),
                    Scenario::Partition if o.witness => split(o, results, agent, profile),
                    Scenario::Partition => partition(o, results, agent, profile),
                    Scenario::Loss => loss(o, results, agent, profile),
                    Scenario::Idle => idle(o, results, agent, profile),
                    Scenario::Scale => scale(o, results, agent, profile),
                    Scenario::RollingRestart => rolling_restart(o, results, agent, profile),
                };
                spent[slot] += began.elapsed();
                if let Err(e) = outcome {
                    interrupted()?;
                    eprintln!("   failed: {e}");
                    let first = e.lines().next().unwrap_or("");
                    results.notes.push(format!(
                        "{} / {} / {}: {first}",
                        scenario.name(),
                        profile.name,
                        agent.name()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Runs `trials` trials, recovering after a failed one; gives up on the
/// series after too many failures.
fn trials(
    env: &mut Env,
    n: usize,
    label: &str,
    mut trial: impl FnMut(&mut Env) -> Result<Trial, String>,
) -> Result<Series, String> {
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    let mut overlap = 0.0;
    for i in 1..=n {
        match trial(env) {
            Ok(t) => {
                eprintln!(
                    "   {label} {i}/{n}: {:.1} ms{}",
                    t.downtime_ms,
                    if t.overlap_ms > 0.0 {
                        format!(", {:.1} ms with more than one VIP holder", t.overlap_ms)
                    } else {
                        String::new()
                    }
                );
                samples.push(t.downtime_ms);
                overlap += t.overlap_ms;
            }
            Err(e) => {
                interrupted()?;
                eprintln!("   {label} {i}/{n} failed: {e}");
                failures.push(e.lines().next().unwrap_or("").to_string());
                if failures.len() > n / 2 {
                    return Err(format!("{label}: too many failed trials; last: {e}"));
                }
                env.recover()?;
            }
        }
    }
    Ok(Series {
        samples,
        failures,
        overlap,
    })
}

/// What a series of trials gave.
struct Series {
    samples: Vec<f64>,
    failures: Vec<String>,
    /// Total time with more than one VIP holder over all trials.
    overlap: f64,
}

impl Series {
    fn record(self, results: &mut Results, k: &Key<'_>) {
        results.dist(k, &self.samples, self.failures, false);
        let figure = "more than one holder, total";
        results.value(
            &Key {
                figure,
                unit: "ms",
                ..*k
            },
            Better::Lower,
            self.overlap,
        );
    }
}

fn key<'a>(
    scenario: &'static str,
    profile: Profile,
    topology: Topology,
    agent: Agent,
    figure: &'a str,
    unit: &'static str,
) -> Key<'a> {
    Key {
        scenario,
        profile,
        hosts: topology.hosts(),
        witnesses: topology.witnesses(),
        agent,
        figure,
        unit,
    }
}

fn crash_series(
    o: &Options,
    results: &mut Results,
    agent: Agent,
    profile: Profile,
    topology: Topology,
    scenario: &'static str,
) -> Result<(), String> {
    let mut env = Env::new(agent, profile, topology, &o.setup)?;
    let k = |figure, unit| key(scenario, profile, topology, agent, figure, unit);
    // Traffic per host is measured on one LAN of hosts: beside a witness
    // it would average hosts and the witness, which keepalived lacks.
    if let Topology::Lan(_) = topology {
        traffic(o, results, &mut env, scenario, profile, topology)?;
    }
    // The 3-host series is the crash scenario's; larger ones are the scale
    // scenario's, with fewer trials (each costs more).
    let n = if scenario == "scale" {
        o.scale_trials
    } else {
        o.trials
    };
    trials(&mut env, n, "crash", Env::crash_trial)?.record(results, &k("downtime", "ms"));
    record_contention(results, &k("", ""));
    Ok(())
}

/// Each host's packet and byte rates, and leadership changes without a fault.
fn traffic(
    o: &Options,
    results: &mut Results,
    env: &mut Env,
    scenario: &'static str,
    profile: Profile,
    topology: Topology,
) -> Result<(), String> {
    let agent = env.group.agent;
    let k = |figure, unit| key(scenario, profile, topology, agent, figure, unit);
    let t = env.traffic_run(o.traffic)?;
    results.value(
        &k("pkts/s sent per host (wire)", "1/s"),
        Better::Lower,
        t.wire.tx_pps,
    );
    results.value(
        &k("bytes/s sent per host (wire)", "B/s"),
        Better::Lower,
        t.wire.tx_bps,
    );
    results.value(
        &k("pkts/s received per host (wire)", "1/s"),
        Better::Lower,
        t.wire.rx_pps,
    );
    if agent == Agent::Regent {
        results.value(
            &k("pkts/s sent per host (metrics)", "1/s"),
            Better::Neither,
            t.own.tx_pps,
        );
        results.value(
            &k("bytes/s sent per host (metrics)", "B/s"),
            Better::Neither,
            t.own.tx_bps,
        );
        results.value(
            &k("pkts/s received per host (metrics)", "1/s"),
            Better::Neither,
            t.own.rx_pps,
        );
        results.value(
            &k("bytes/s received per host (metrics)", "B/s"),
            Better::Neither,
            t.own.rx_bps,
        );
    }
    results.value(
        &k("leadership changes without a fault", "n"),
        Better::Lower,
        t.changes as f64,
    );
    Ok(())
}

fn graceful(
    o: &Options,
    results: &mut Results,
    agent: Agent,
    profile: Profile,
    topology: Topology,
) -> Result<(), String> {
    let mut env = Env::new(agent, profile, topology, &o.setup)?;
    trials(&mut env, o.trials, "SIGTERM", Env::graceful_trial)?.record(
        results,
        &key("graceful", profile, topology, agent, "downtime", "ms"),
    );
    record_contention(results, &key("graceful", profile, topology, agent, "", ""));
    Ok(())
}

fn step_down(
    o: &Options,
    results: &mut Results,
    agent: Agent,
    profile: Profile,
    topology: Topology,
) -> Result<(), String> {
    if agent == Agent::Keepalived {
        if !results.notes.iter().any(|n| n.contains("no step-down")) {
            results
                .notes
                .push("keepalived has no step-down command: step-down is regent only".into());
        }
        return Ok(());
    }
    let mut env = Env::new(agent, profile, topology, &o.setup)?;
    trials(&mut env, o.trials, "step-down", Env::step_down_trial)?.record(
        results,
        &key("step-down", profile, topology, agent, "downtime", "ms"),
    );
    record_contention(results, &key("step-down", profile, topology, agent, "", ""));
    Ok(())
}

fn partition(
    o: &Options,
    results: &mut Results,
    agent: Agent,
    profile: Profile,
) -> Result<(), String> {
    const HOSTS: usize = 5;
    let hold = Duration::from_secs(2);
    let after = Duration::from_secs(2);
    let n = (o.trials / 4).max(2);
    let mut env = Env::new(agent, profile, Topology::Lan(HOSTS), &o.setup)?;
    let mut overlaps = Vec::new();
    let mut majority = Vec::new();
    let mut outages = Vec::new();
    let mut released = Vec::new();
    let mut failures = Vec::new();
    for i in 1..=n {
        match env.partition_trial(hold, after) {
            Ok(s) => {
                eprintln!(
                    "   partition {i}/{n}: more than one holder {:.1} ms, majority serves after {} ms, minority let go after {} ms",
                    s.overlap_ms,
                    s.majority_ms.map_or("-".into(), report::fmt),
                    s.released_ms.map_or("never".into(), report::fmt)
                );
                overlaps.push(s.overlap_ms);
                majority.extend(s.majority_ms);
                outages.extend(s.outage_ms);
                released.extend(s.released_ms);
                if s.majority_ms.is_none() {
                    failures.push("the majority did not serve within the partition".into());
                }
            }
            Err(e) => {
                interrupted()?;
                eprintln!("   partition {i}/{n} failed: {e}");
                failures.push(e.lines().next().unwrap_or("").to_string());
                env.recover()?;
            }
        }
    }
    let k = |figure, unit| {
        key(
            "partition",
            profile,
            Topology::Lan(HOSTS),
            agent,
            figure,
            unit,
        )
    };
    results.value(
        &k("more than one holder, total", "ms"),
        Better::Lower,
        overlaps.iter().sum(),
    );
    results.value(
        &k("more than one holder, worst trial", "ms"),
        Better::Lower,
        overlaps.iter().copied().fold(0.0, f64::max),
    );
    results.dist(&k("majority serves after", "ms"), &majority, failures, true);
    results.dist(&k("client outage", "ms"), &outages, Vec::new(), true);
    results.value(
        &k("trials where the minority let go", "n"),
        Better::Neither,
        released.len() as f64,
    );
    if let Some(max) = released.iter().copied().reduce(f64::max) {
        results.value(&k("minority let go after, max", "ms"), Better::Neither, max);
    }
    record_contention(results, &k("", ""));
    Ok(())
}

/// The partition of the witness topology: the link between the two hosts
/// cut for 2 s while the witness and the client still reach both, then
/// healed and watched for 2 s and until the client is answered again.
/// regent should keep one VIP holder; two-host VRRP has two masters for
/// the whole split.
fn split(o: &Options, results: &mut Results, agent: Agent, profile: Profile) -> Result<(), String> {
    let hold = Duration::from_secs(2);
    let after = Duration::from_secs(2);
    let n = (o.trials / 4).max(2);
    let mut env = Env::new(agent, profile, Topology::Witness, &o.setup)?;
    let mut overlaps = Vec::new();
    let mut outages = Vec::new();
    let mut lost = 0;
    let mut moves = 0;
    let mut failures = Vec::new();
    for i in 1..=n {
        match env.split_trial(hold, after) {
            Ok(s) => {
                eprintln!(
                    "   split {i}/{n}: more than one holder {:.1} ms, client outage {:.1} ms ({} probes lost), {} VIP moves",
                    s.overlap_ms, s.outage_ms, s.lost, s.moves
                );
                overlaps.push(s.overlap_ms);
                outages.push(s.outage_ms);
                lost += s.lost;
                moves += s.moves;
            }
            Err(e) => {
                interrupted()?;
                eprintln!("   split {i}/{n} failed: {e}");
                failures.push(e.lines().next().unwrap_or("").to_string());
                if failures.len() > n / 2 {
                    return Err(format!("split: too many failed trials; last: {e}"));
                }
                env.recover()?;
            }
        }
    }
    let k = |figure, unit| key("partition", profile, Topology::Witness, agent, figure, unit);
    results.value(
        &k("more than one holder, total", "ms"),
        Better::Lower,
        overlaps.iter().sum(),
    );
    results.value(
        &k("more than one holder, worst trial", "ms"),
        Better::Lower,
        overlaps.iter().copied().fold(0.0, f64::max),
    );
    results.dist(&k("client outage", "ms"), &outages, failures, false);
    results.value(&k("probes lost", "n"), Better::Lower, lost as f64);
    results.value(&k("VIP moves", "n"), Better::Neither, moves as f64);
    record_contention(results, &k("", ""));
    Ok(())
}

fn loss(o: &Options, results: &mut Results, agent: Agent, profile: Profile) -> Result<(), String> {
    let mut env = Env::new(agent, profile, Topology::Lan(3), &o.setup)?;
    let s = env.loss_run(20, o.loss)?;
    eprintln!(
        "   20% loss for {:?}: {} leadership changes, {:.1} ms with more than one holder",
        o.loss, s.changes, s.overlap_ms
    );
    let k = |figure, unit| key("loss", profile, Topology::Lan(3), agent, figure, unit);
    results.value(
        &k("leadership changes", "n"),
        Better::Lower,
        s.changes as f64,
    );
    results.value(
        &k("more than one holder", "ms"),
        Better::Lower,
        s.overlap_ms,
    );
    results.value(&k("span", "s"), Better::Neither, o.loss.as_secs_f64());
    record_contention(results, &k("", ""));
    Ok(())
}

fn idle(o: &Options, results: &mut Results, agent: Agent, profile: Profile) -> Result<(), String> {
    for hosts in [3, 9] {
        let mut env = Env::new(agent, profile, Topology::Lan(hosts), &o.setup)?;
        let usage = env.idle_run(o.idle)?;
        let mib: Vec<f64> = usage.iter().map(|u| u.rss_kib as f64 / 1024.0).collect();
        let cpu: Vec<f64> = usage.iter().map(|u| u.cpu_percent).collect();
        let ticks: Vec<f64> = usage.iter().map(|u| u.cpu_percent_ticks).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "   {hosts} hosts: RSS mean {:.2} MiB max {:.2} MiB, CPU mean {:.3}% max {:.3}%",
            mean(&mib),
            max(&mib),
            mean(&cpu),
            max(&cpu)
        );
        let k = |figure, unit| key("idle", profile, Topology::Lan(hosts), agent, figure, unit);
        results.value(&k("RSS per daemon mean", "MiB"), Better::Lower, mean(&mib));
        results.value(&k("RSS per daemon max", "MiB"), Better::Lower, max(&mib));
        results.value(&k("CPU per daemon mean", "%"), Better::Lower, mean(&cpu));
        results.value(&k("CPU per daemon max", "%"), Better::Lower, max(&cpu));
        results.value(
            &k("CPU per daemon max (stat ticks)", "%"),
            Better::Neither,
            max(&ticks),
        );
        record_contention(results, &k("", ""));
    }
    Ok(())
}

fn scale(o: &Options, results: &mut Results, agent: Agent, profile: Profile) -> Result<(), String> {
    for &hosts in &o.scale {
        // The crash scenario is the scale scenario at 3 hosts: reuse it.
        let done: Vec<report::Row> = results
            .rows
            .iter()
            .filter(|r| {
                r.scenario == "crash"
                    && r.profile == profile
                    && r.hosts == hosts
                    && r.witnesses == 0
            })
            .cloned()
            .collect();
        let reuse = done.iter().any(|r| {
            r.values[match agent {
                Agent::Regent => 0,
                Agent::Keepalived => 1,
            }]
            .is_some()
        });
        if reuse {
            eprintln!("   {hosts} hosts: taken from the crash scenario");
            for r in done {
                let slot = match agent {
                    Agent::Regent => 0,
                    Agent::Keepalived => 1,
                };
                if let Some(v) = r.values[slot] {
                    let k = key(
                        "scale",
                        profile,
                        Topology::Lan(hosts),
                        agent,
                        &r.figure,
                        r.unit,
                    );
                    if r.quorum_cost {
                        results.quorum_value(&k, v);
                    } else {
                        results.value(&k, r.better, v);
                    }
                }
            }
            continue;
        }
        if let Err(e) = crash_series(o, results, agent, profile, Topology::Lan(hosts), "scale") {
            interrupted()?;
            eprintln!("   {hosts} hosts failed: {e}");
            results.notes.push(format!(
                "scale / {} / {} / {hosts} hosts: {}",
                profile.name,
                agent.name(),
                e.lines().next().unwrap_or("")
            ));
        }
    }
    Ok(())
}

/// A rolling restart of all three hosts, and of the two left at exact
/// quorum (host 1 down for the whole run): each follower's agent, then the
/// leader's. Regent only: what it measures is regent's resumed promise.
fn rolling_restart(
    o: &Options,
    results: &mut Results,
    agent: Agent,
    profile: Profile,
) -> Result<(), String> {
    if agent == Agent::Keepalived {
        if !results.notes.iter().any(|n| n.contains("rolling-restart")) {
            results
                .notes
                .push("rolling-restart is regent only: keepalived was not measured".into());
        }
        return Ok(());
    }
    for (scenario, parked) in [
        ("rolling-restart", &[][..]),
        ("rolling-restart-exact-quorum", &[1][..]),
    ] {
        eprintln!("   {scenario}");
        let mut env = Env::with_parked(agent, profile, Topology::Lan(3), &o.setup, parked)?;
        let mut followers: Vec<scenarios::Restart> = Vec::new();
        let mut leaders: Vec<scenarios::Restart> = Vec::new();
        let mut failures = Vec::new();
        for i in 1..=o.trials {
            match env.rolling_trial() {
                Ok(s) => {
                    let steps: Vec<String> = s
                        .followers
                        .iter()
                        .chain(std::iter::once(&s.leader))
                        .map(|r| {
                            format!(
                                "host {} {}: {} changes, {} of {} probes lost, outage {} ms",
                                r.host,
                                if r.follows_ms.is_some() {
                                    "(follower)"
                                } else {
                                    "(leader)"
                                },
                                r.changes,
                                r.seen.lost,
                                r.seen.sent,
                                report::fmt(scenarios::ms(r.seen.outage))
                            )
                        })
                        .collect();
                    eprintln!("   rolling restart {i}/{}: {}", o.trials, steps.join("; "));
                    followers.extend(s.followers);
                    leaders.push(s.leader);
                }
                Err(e) => {
                    interrupted()?;
                    eprintln!("   rolling restart {i}/{} failed: {e}", o.trials);
                    failures.push(e.lines().next().unwrap_or("").to_string());
                    if failures.len() > o.trials / 2 {
                        return Err(format!("{scenario}: too many failed trials; last: {e}"));
                    }
                    env.recover()?;
                }
            }
        }
        let k = |figure, unit| key(scenario, profile, Topology::Lan(3), agent, figure, unit);
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let changes: Vec<f64> = followers.iter().map(|r| r.changes as f64).collect();
        results.value(
            &k("follower restarts", "n"),
            Better::Neither,
            followers.len() as f64,
        );
        results.value(
            &k("leadership changes per follower restart, max", "n"),
            Better::Lower,
            max(&changes),
        );
        results.value(
            &k("leadership changes in follower restarts, total", "n"),
            Better::Lower,
            changes.iter().sum(),
        );
        let outages: Vec<f64> = followers
            .iter()
            .map(|r| scenarios::ms(r.seen.outage))
            .collect();
        results.dist(
            &k("follower restart outage", "ms"),
            &outages,
            failures.clone(),
            false,
        );
        results.value(
            &k("probes lost in follower restarts", "n"),
            Better::Lower,
            followers.iter().map(|r| r.seen.lost as f64).sum(),
        );
        let follows: Vec<f64> = followers.iter().filter_map(|r| r.follows_ms).collect();
        results.dist(
            &k("restarted follower follows again after", "ms"),
            &follows,
            Vec::new(),
            false,
        );
        let changes: Vec<f64> = leaders.iter().map(|r| r.changes as f64).collect();
        results.value(
            &k("leadership changes per leader restart, max", "n"),
            Better::Lower,
            max(&changes),
        );
        let outages: Vec<f64> = leaders
            .iter()
            .map(|r| scenarios::ms(r.seen.outage))
            .collect();
        // At exact quorum the leader's stop leaves nobody who can lead:
        // that outage is the quorum's price, not a slow handover.
        results.dist(
            &k("leader restart outage", "ms"),
            &outages,
            failures,
            !parked.is_empty(),
        );
        results.value(
            &k("more than one holder, total", "ms"),
            Better::Lower,
            followers.iter().chain(&leaders).map(|r| r.overlap_ms).sum(),
        );
        record_contention(results, &k("", ""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_args` with a regent binary that exists (this test's own).
    fn parse(args: &[&str]) -> Result<Options, String> {
        let me = std::env::current_exe().expect("the test binary");
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--regent".to_string(), me.display().to_string()]);
        parse_args(&all)
    }

    #[test]
    fn the_witness_topology_runs_its_own_scenarios() {
        let lan = parse(&[]).expect("defaults");
        assert!(!lan.witness);
        assert_eq!(lan.scenarios, ALL);
        for args in [&["--witness"][..], &["--witness", "--scenario", "all"]] {
            let o = parse(args).expect("witness");
            assert!(o.witness);
            assert_eq!(o.scenarios, WITNESS_SCENARIOS, "{args:?}");
        }
        let o = parse(&["--scenario", "partition,crash", "--witness"]).expect("a choice");
        assert_eq!(o.scenarios, [Scenario::Partition, Scenario::Crash]);
        let refused = parse(&["--witness", "--scenario", "crash,loss"]).map(|o| o.scenarios);
        assert_eq!(
            refused,
            Err("--witness measures crash, graceful, step-down and partition, not loss".into())
        );
    }
}
