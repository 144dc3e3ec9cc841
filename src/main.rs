//! The `regent` command line.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use regentd::config::{Config, DiskChecks};
use regentd::control::{Answer, Request};
use regentd::core::NodeId;
use regentd::state::Init;

/// A failover agent: one leader per LAN group, quorum-fenced, with ordered hooks.
#[derive(Parser, Debug)]
#[command(name = "regent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (systemd runs this).
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/regent/regent.toml")]
        config: PathBuf,
    },
    /// Create this node's state file, once, before its first `regent run`.
    ///
    /// Checks the configuration as `run` does, then creates the state
    /// directory and `<dir>/<cluster>.state` with promised epoch 0. If a
    /// valid state file is already there it changes nothing and exits 0; a
    /// damaged or foreign one is refused, never replaced. `regent run`
    /// refuses to start without a state file: a host that lost its own may
    /// have promised epochs it no longer remembers, and must get it back
    /// rather than be initialised again, unless its earlier promises are
    /// void (see README "State file").
    Init {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/regent/regent.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 if it is valid, 1 with every error if not.
    ///
    /// A valid file is summed up, with its member list and quorum; if its
    /// daemon runs, the member list it runs is shown beside the file's,
    /// with a warning for each reason it would refuse a reload of the file.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/regent/regent.toml")]
        config: PathBuf,
    },
    /// Whether this node leads: exit 0 if it does (its lease is not over),
    /// 1 if it does not, 2 if the daemon cannot be asked. Prints one line
    /// (`leader epoch E`, or `follower ...`) unless --quiet.
    IsLeader {
        #[command(flatten)]
        target: Target,
        /// Print nothing; the exit status says it.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Ask the running daemon for its view of the cluster.
    Status {
        #[command(flatten)]
        target: Target,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover: the leader demotes, resigns, and hands over.
    StepDown {
        #[command(flatten)]
        target: Target,
        /// The node to hand over to (default: the next-ranked node).
        #[arg(long)]
        to: Option<u32>,
    },
    /// Print the daemon's metrics in the Prometheus text format.
    Metrics {
        #[command(flatten)]
        target: Target,
    },
    /// Make the daemon read its configuration file again: exit 0 and print
    /// what changed, or exit 1 and print why it was refused (every error,
    /// with its line); a refused reload leaves the running configuration as
    /// it was.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// The lease guard (started by `regent run`, reading its pipe on stdin).
    #[command(hide = true)]
    Guard {
        /// The daemon's process id.
        #[arg(long)]
        daemon: u32,
        /// Past the lease end before the guard acts, in microseconds.
        #[arg(long)]
        slack_us: u64,
        /// The demote hook's deadline.
        #[arg(long)]
        timeout_ms: u64,
        /// From SIGTERM to SIGKILL of a demote past its deadline.
        #[arg(long)]
        kill_grace_ms: u64,
        /// This node's id.
        #[arg(long)]
        node: u32,
        /// The cluster's name.
        #[arg(long)]
        cluster: String,
        /// The demote hook.
        #[arg(long)]
        demote: Option<PathBuf>,
    },
    /// Run three local nodes on loopback and watch a failover (no root needed).
    Demo {
        /// Run two hosts and a witness instead: the leader crashes and the
        /// other host takes over with the witness's vote, then the witness
        /// crashes and the leader keeps its lease.
        #[arg(long)]
        witness: bool,
    },
    /// Tell the neighbours on DEV that addresses it holds are here: gratuitous
    /// ARP for IPv4, unsolicited neighbour advertisements for IPv6 (needs root).
    Announce {
        /// The interface the addresses are on, and the announcements go out of.
        #[arg(long)]
        dev: String,
        /// Announcements per address.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        count: u32,
        /// Time between two rounds of announcements.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// The addresses, each optionally with its prefix length (10.0.0.100/24).
        #[arg(required = true, value_parser = parse_address)]
        addrs: Vec<IpAddr>,
    },
}

/// Which daemon to talk to.
#[derive(clap::Args, Debug)]
struct Target {
    /// The configuration file (to find the control socket).
    #[arg(short, long, default_value = "/etc/regent/regent.toml")]
    config: PathBuf,
    /// The control socket, overriding the configuration.
    #[arg(short, long)]
    socket: Option<PathBuf>,
    /// The daemon with this process id (`$MAINPID` in a unit), whatever its
    /// file names now: its control socket is looked up in /proc.
    #[arg(long, conflicts_with = "socket")]
    pid: Option<u32>,
}

/// The packaging step's command, `regent generate-docs DIR`: kept out of the
/// clap definitions so that neither --help, the man page nor the
/// completions offer it.
const GENERATE_DOCS: &str = "generate-docs";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == GENERATE_DOCS) {
        let Some(dir) = args.get(2).filter(|_| args.len() == 3) else {
            eprintln!("usage: regent {GENERATE_DOCS} DIR");
            return ExitCode::from(2);
        };
        let dir = Path::new(dir);
        return match generate_docs(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("regent {GENERATE_DOCS}: {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Init { config } => match regentd::driver::init(&config) {
            Ok((path, Init::Created(stored))) => out(&format!(
                "created {}: promised epoch {}, incarnation {}\n",
                path.display(),
                stored.promised,
                stored.incarnation
            )),
            Ok((path, Init::Existing(stored))) => out(&format!(
                "already initialised: {} holds promised epoch {}; nothing changed\n",
                path.display(),
                stored.promised
            )),
            Err(e) => {
                eprintln!("regent init: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => check(&config),
        Command::Status { target, json } => ask(&target, Request::Status { json }),
        Command::IsLeader { target, quiet } => is_leader(&target, quiet),
        Command::StepDown { target, to } => ask(&target, Request::StepDown { to: to.map(NodeId) }),
        Command::Metrics { target } => ask(&target, Request::Metrics),
        Command::Reload { target } => ask(&target, Request::Reload),
        Command::Announce {
            dev,
            count,
            interval_ms,
            addrs,
        } => {
            let interval = Duration::from_millis(interval_ms);
            match regentd::announce::announce(&dev, &addrs, count, interval) {
                Ok(link) => {
                    let text: String = addrs
                        .iter()
                        .map(|addr| {
                            format!(
                                "announced {addr} at {} on {dev}, {count} time(s)\n",
                                link.mac
                            )
                        })
                        .collect();
                    out(&text)
                }
                Err(e) => {
                    eprintln!("regent announce: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Guard {
            daemon,
            slack_us,
            timeout_ms,
            kill_grace_ms,
            node,
            cluster,
            demote,
        } => {
            let settings = regentd::guard::Settings {
                demote,
                timeout: Duration::from_millis(timeout_ms),
                kill_grace: Duration::from_millis(kill_grace_ms),
                slack: Duration::from_micros(slack_us),
                node: NodeId(node),
                cluster,
            };
            ExitCode::from(regentd::guard::run(daemon, &settings))
        }
        Command::Demo { witness } => match regentd::demo::run(if witness {
            regentd::demo::Story::Witness
        } else {
            regentd::demo::Story::Hosts
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("regent demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes a command's answer to standard output.
///
/// A reader that closed the pipe early (`regent metrics | head`, `regent
/// status | grep -q leader`) chose to stop reading: the command still did
/// its job, so that is exit 0 and no message, as ripgrep does, rather than
/// the panic (exit 101) of `println!` or the 141 of a death by SIGPIPE,
/// which `set -o pipefail` would turn into a failed script. Any other write
/// error is a failure and says so.
fn out(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regent: cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The man page and the bash, zsh and fish completions, from the clap
/// definitions above: one source of truth for the options, so the package's
/// documentation cannot fall behind the binary it ships with.
fn generate_docs(dir: &Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;

    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    // The SUBCOMMANDS list points at one page per command (regent-run(1));
    // there is one page, with a section per command below.
    let mut man = String::from_utf8_lossy(&page).into_owned();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        man = man.replace(
            &format!("regent\\-{}(1)", name.replace('-', "\\-")),
            &format!("\\fBregent {}\\fR", name.replace('-', "\\-")),
        );
    }
    let mut man = man.into_bytes();
    // Then a section per command with its synopsis and options, which the
    // page's own SUBCOMMANDS section leaves out.
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("regent {}", sub.get_name());
        let page = clap_mangen::Man::new(sub.clone().bin_name(&name));
        let mut section = Vec::new();
        page.render_synopsis_section(&mut section)?;
        page.render_description_section(&mut section)?;
        page.render_options_section(&mut section)?;
        man.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        // The parts become subsections of the command's section.
        for line in String::from_utf8_lossy(&section).lines() {
            let line = match line.strip_prefix(".SH ") {
                Some(title) => format!(".SS {title}"),
                None => line.to_string(),
            };
            man.extend_from_slice(line.as_bytes());
            man.push(b'\n');
        }
    }
    std::fs::write(dir.join("regent.1"), man)?;
    for (shell, file) in [
        (Shell::Bash, "regent.bash"),
        (Shell::Zsh, "_regent"),
        (Shell::Fish, "regent.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "regent", &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

/// An address as the vip hook writes it, with or without `/PREFIX`.
fn parse_address(text: &str) -> Result<IpAddr, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if let Some(prefix) = prefix {
        match prefix.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("{prefix:?} is not a prefix length (0 to {max})")),
        }
    }
    Ok(addr)
}

fn run(config: &Path) -> ExitCode {
    // Logging is set up from the file's [log] table before anything else runs;
    // a file that does not parse is reported on stderr by `driver::run`.
    let log = Config::parse(
        &std::fs::read_to_string(config).unwrap_or_default(),
        config,
        DiskChecks::Skip,
    )
    .map(|c| c.log)
    .unwrap_or_default();
    if let Err(e) = regentd::logging::init(log.target, log.level, "regent") {
        eprintln!("regent: cannot set up logging: {e}");
    }
    let code = match regentd::driver::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            regentd::logging::fatal(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    };
    // The logging thread writes what is still queued before the exit.
    log::logger().flush();
    code
}

/// `regent check`: the file's errors (exit 1), or its summary and member
/// list, and then what the daemon running it would make of that list: a
/// reload it would refuse is warned of, though the file is valid (exit 0).
fn check(config: &Path) -> ExitCode {
    match regentd::config::check_command(config) {
        Ok((config, mut text)) => {
            for line in regentd::control::beside_the_daemon(&config, Duration::from_secs(2)) {
                text.push('\n');
                text.push_str(&line);
            }
            out(&format!("{text}\n"))
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// Sends one request to the daemon's control socket and prints the answer.
///
/// Except a reload's verdict when a unit runs `regent reload` (standard
/// error is the journal): the daemon logged that verdict in the same
/// journal, at its priority, and a second copy at the journal's default
/// priority would only muddle it. The exit status still tells it.
fn ask(target: &Target, request: Request) -> ExitCode {
    let Some(socket) = socket_of(target) else {
        return ExitCode::FAILURE;
    };
    let logged = request == Request::Reload && regentd::logging::stderr_is_journal();
    let request = request.to_string();
    match regentd::control::exchange(&socket, &request, Duration::from_secs(10)) {
        Ok(Answer::Ok(_)) if logged => ExitCode::SUCCESS,
        Ok(Answer::Error(_)) if logged => ExitCode::FAILURE,
        Ok(Answer::Ok(text)) => out(&text),
        Ok(Answer::Error(e)) | Err(e) => {
            eprintln!("regent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `regent is-leader`: 0 leading, 1 not, 2 cannot tell (as grep does).
fn is_leader(target: &Target, quiet: bool) -> ExitCode {
    const CANNOT_TELL: u8 = 2;
    let Some(socket) = socket_of(target) else {
        return ExitCode::from(CANNOT_TELL);
    };
    match regentd::control::exchange(&socket, &Request::Role.to_string(), Duration::from_secs(10)) {
        Ok(Answer::Ok(text)) => {
            if !quiet {
                out(&text);
            }
            if text.starts_with("leader ") {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Answer::Error(e)) | Err(e) => {
            eprintln!("regent: {e}");
            ExitCode::from(CANNOT_TELL)
        }
    }
}

/// The control socket `target` names, or `None` after saying why not.
fn socket_of(target: &Target) -> Option<PathBuf> {
    Some(match (&target.socket, target.pid) {
        (Some(s), _) => s.clone(),
        (None, Some(pid)) => match regentd::control::socket_of_process(pid) {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("regent: {e}");
                return None;
            }
        },
        (None, None) => {
            let text = match std::fs::read_to_string(&target.config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!(
                        "regent: cannot read {}: {e} (give --socket PATH or -c FILE)",
                        target.config.display()
                    );
                    return None;
                }
            };
            match regentd::config::control_socket(&text, &target.config) {
                Ok(socket) => socket,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!(
                        "regent: cannot tell the control socket from {} (give --socket PATH); \
                         nothing was sent to the daemon",
                        target.config.display()
                    );
                    return None;
                }
            }
        }
    })
}
