//! The command line: `start`, `status`, `pid`, `reload`, `check-config`, and `task-worker`
//! (spawned by the master). Exit codes: 0 ok, 1 failed (or already running), 2 configuration
//! error, 3 not running.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

const DEFAULT_CONFIG: &str = "config/websocket.toml";

#[derive(Parser)]
#[command(name = "wspush", version, about = "WebSocket message-push server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (as a daemon when the config says so, or with -d).
    Start {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Run as a daemon whatever the config says.
        #[arg(short, long, conflicts_with = "foreground")]
        daemonize: bool,
        /// Stay in the foreground whatever the config says (systemd, tests).
        #[arg(short, long)]
        foreground: bool,
    },
    /// Print whether the server runs, its pid, uptime and connections (exit 3 if not running).
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the pid of the running server (exit 3 if it is not running).
    Pid {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Replace the running server's task workers one at a time and wait for the outcome
    /// (exit 1 if a new worker failed to start: the old ones keep serving).
    Reload {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// A task worker; started by the master, talks on stdin/stdout.
    #[command(hide = true)]
    TaskWorker {
        #[arg(long)]
        slot: usize,
    },
    /// The cluster subscriber; started by the master in cluster mode.
    #[command(hide = true)]
    ClusterSubscriber,
}

/// Reports a worker process's end in one write, so that lines of several never interleave.
fn exit_code(role: &str, result: Result<(), wspush::worker::WorkerError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            let line = format!("wspush {role}: {e}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            1
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Start {
            config,
            daemonize,
            foreground,
        } => {
            let mode = if daemonize {
                Some(true)
            } else if foreground {
                Some(false)
            } else {
                None
            };
            wspush::daemon::start(&config, mode)
        }
        Command::Status { config } => wspush::status::status(&config),
        Command::Pid { config } => wspush::status::print_pid(&config),
        Command::Reload { config } => wspush::reload::reload(&config),
        Command::CheckConfig { config } => {
            match wspush::config::Config::load(&config).and_then(|c| c.load_tls().map(|_| c)) {
                Ok(_) => {
                    println!("{}: ok", config.display());
                    0
                }
                Err(e) => {
                    eprintln!("wspush: {e}");
                    wspush::daemon::EXIT_CONFIG
                }
            }
        }
        Command::TaskWorker { slot } => {
            exit_code(&format!("task worker {slot}"), wspush::worker::run())
        }
        Command::ClusterSubscriber => {
            exit_code("cluster subscriber", wspush::worker::subscriber::run())
        }
    };
    std::process::exit(code);
}
