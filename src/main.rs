//! The `regent` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use regentd::config::{Config, DiskChecks};
use regentd::core::NodeId;

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
    /// Validate a configuration file: exit 0 if it is valid, 1 with every error if not.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/regent/regent.toml")]
        config: PathBuf,
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
    /// Run three local nodes on loopback and watch a failover (no root needed).
    Demo,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config } => {
            let (code, text) = regentd::config::check_command(&config);
            if code == 0 {
                println!("{text}");
            } else {
                eprintln!("{text}");
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Status { target, json } => {
            ask(&target, if json { "status json" } else { "status" })
        }
        Command::StepDown { target, to } => match to {
            Some(n) => ask(&target, &format!("step-down {}", NodeId(n))),
            None => ask(&target, "step-down"),
        },
        Command::Metrics { target } => ask(&target, "metrics"),
        Command::Demo => match regentd::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("regent demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
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
    match regentd::driver::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("regent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends one request to the daemon's control socket and prints the answer.
fn ask(target: &Target, request: &str) -> ExitCode {
    let socket = match &target.socket {
        Some(s) => s.clone(),
        None => {
            let text = match std::fs::read_to_string(&target.config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!(
                        "regent: cannot read {}: {e} (give --socket PATH or -c FILE)",
                        target.config.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            match Config::parse(&text, &target.config, DiskChecks::Skip) {
                Ok(c) => c.control.socket,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match regentd::control::request(&socket, request, Duration::from_secs(10)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regent: {e}");
            ExitCode::FAILURE
        }
    }
}
