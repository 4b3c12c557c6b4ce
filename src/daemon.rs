//! Starting the server: load the configuration, refuse a second instance, raise the open-file
//! limit, bind every socket, daemonize, and report to the shell only once all workers are up.

use crate::config::Config;
use crate::master::{Master, Sockets};
use daemonize::{Daemonize, Outcome};
use log::{error, info};
use mio::net::{TcpListener, UdpSocket};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Exit codes of the `start` command.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;

/// Descriptors kept back from the connection cap: listeners, worker channels, logs, stores.
const RESERVED_FDS: u64 = 64;
/// Receive buffer asked for the UDP push socket: a burst of pushes arriving while the loop is
/// busy must queue in the kernel, not be dropped (the kernel caps it at net.core.rmem_max).
const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
/// How long `start` waits for the daemon to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn start(config_file: &Path, daemonize: Option<bool>) -> i32 {
    let config = match Config::load(config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wspush: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Some(pid) = running_pid(&config.server.pid_file) {
        eprintln!(
            "wspush: already running (pid {pid}, pid file {})",
            config.server.pid_file.display()
        );
        return EXIT_FAILED;
    }
    let tls = match config.load_tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("wspush: {e}");
            return EXIT_CONFIG;
        }
    };
    let (limit, max_connections) = raise_open_file_limit(&config);
    let mut sockets = match bind(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wspush: {e}");
            return EXIT_FAILED;
        }
    };
    sockets.tls = tls;
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wspush: cannot find its own executable: {e}");
            return EXIT_FAILED;
        }
    };
    // Under systemd the log is the journal: no log directory is needed (or writable).
    let daemonize = daemonize.unwrap_or(config.server.daemonize);
    let journal = !daemonize && crate::logging::stderr_is_journal();
    let log_dir = (!journal).then_some(&config.server.log_file);
    for p in std::iter::once(&config.server.pid_file).chain(log_dir) {
        if let Some(dir) = p.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("wspush: cannot create {}: {e}", dir.display());
                return EXIT_FAILED;
            }
        }
    }

    let mut notifier = None;
    if daemonize {
        let (parent_end, child_end) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("wspush: {e}");
                return EXIT_FAILED;
            }
        };
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        match Daemonize::new()
            .working_directory(cwd)
            .umask(0o022)
            .execute()
        {
            Outcome::Parent(Ok(_)) => {
                drop(child_end);
                return wait_for_ready(parent_end, &config);
            }
            Outcome::Parent(Err(e)) => {
                eprintln!("wspush: cannot daemonize: {e}");
                return EXIT_FAILED;
            }
            Outcome::Child(Err(e)) => {
                let _ = writeln!(&child_end, "error: cannot daemonize: {e}");
                return EXIT_FAILED;
            }
            Outcome::Child(Ok(_)) => {
                drop(parent_end);
                notifier = Some(child_end);
            }
        }
    }

    if let Err(e) = crate::logging::redirect_to(&config.server.log_file) {
        let msg = format!(
            "cannot open log file {}: {e}",
            config.server.log_file.display()
        );
        report_failure(notifier.as_ref(), &msg);
        return EXIT_FAILED;
    }
    crate::logging::init("master", &config.server.log_level);
    info!(
        "starting wspush {} (config {})",
        env!("CARGO_PKG_VERSION"),
        config.source_file.display()
    );
    info!("open-file limit {limit}: up to {max_connections} connections");
    let pid_file = config.server.pid_file.clone();
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        report_failure(
            notifier.as_ref(),
            &format!("cannot write pid file {}: {e}", pid_file.display()),
        );
        return EXIT_FAILED;
    }
    let master = match Master::new(
        config,
        sockets,
        max_connections,
        exe,
        notifier,
        Some(pid_file.clone()),
    ) {
        Ok(m) => m,
        Err(e) => {
            error!("{e}");
            let _ = std::fs::remove_file(&pid_file);
            return EXIT_FAILED;
        }
    };
    match master.run() {
        Ok(()) => EXIT_OK,
        Err(e) => {
            error!("{e}");
            let _ = std::fs::remove_file(&pid_file);
            EXIT_FAILED
        }
    }
}

fn report_failure(notifier: Option<&UnixStream>, msg: &str) {
    match notifier {
        Some(mut n) => {
            let _ = writeln!(n, "error: {msg}");
        }
        None => eprintln!("wspush: {msg}"),
    }
}

/// In the parent of a daemon: relay its first report line and exit accordingly.
fn wait_for_ready(parent_end: UnixStream, config: &Config) -> i32 {
    let _ = parent_end.set_read_timeout(Some(READY_TIMEOUT));
    let mut line = String::new();
    let _ = BufReader::new(parent_end).read_line(&mut line);
    let line = line.trim();
    if let Some(pid) = line.strip_prefix("ready ") {
        let s = &config.server;
        println!(
            "wspush started (pid {pid}): ws {}:{}, udp {}, http {}; log {}",
            s.host,
            s.ws_port,
            s.udp_port,
            s.http_port,
            s.log_file.display()
        );
        EXIT_OK
    } else if let Some(why) = line.strip_prefix("error: ") {
        eprintln!("wspush: start failed: {why}");
        EXIT_FAILED
    } else {
        // Do not leave behind a daemon that never became ready.
        if let Some(pid) = running_pid(&config.server.pid_file) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = std::fs::remove_file(&config.server.pid_file);
        }
        eprintln!(
            "wspush: the daemon did not report ready; see {}",
            config.server.log_file.display()
        );
        EXIT_FAILED
    }
}

/// The pid in `pid_file` if that process is alive and is a wspush.
pub fn running_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("wspush"))
        .unwrap_or(true);
    (alive && ours).then_some(pid)
}

/// Raises the soft open-file limit to the hard one; returns it and the connection cap.
fn raise_open_file_limit(config: &Config) -> (u64, usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    let reserve = RESERVED_FDS + 4 * config.task_workers() as u64;
    let derived = limit.saturating_sub(reserve).max(1) as usize;
    let cap = match config.server.max_connection {
        0 => derived,
        n => n.min(derived),
    };
    (limit, cap)
}

fn bind(config: &Config) -> Result<Sockets, String> {
    let s = &config.server;
    let ip: IpAddr = s
        .host
        .parse()
        .map_err(|_| format!("server.host `{}` is not an address", s.host))?;
    let addr = |port| SocketAddr::new(ip, port);
    let ws = TcpListener::bind(addr(s.ws_port))
        .map_err(|e| format!("cannot bind WebSocket port {}: {e}", addr(s.ws_port)))?;
    let http = TcpListener::bind(addr(s.http_port))
        .map_err(|e| format!("cannot bind HTTP port {}: {e}", addr(s.http_port)))?;
    let udp = UdpSocket::bind(addr(s.udp_port))
        .map_err(|e| format!("cannot bind UDP port {}: {e}", addr(s.udp_port)))?;
    use nix::sys::socket::{listen, setsockopt, sockopt, Backlog};
    // mio listens with std's backlog of 128: a burst of logins overflowed it and the dropped
    // SYNs cost clients a second each (retransmission). Listening again raises it; the kernel
    // caps it at net.core.somaxconn.
    for listener in [&ws, &http] {
        listen(listener, Backlog::MAXCONN).map_err(|e| format!("cannot listen: {e}"))?;
    }
    // Best effort: a smaller buffer still works, it only drops sooner under a burst.
    let _ = setsockopt(&udp, sockopt::RcvBuf, &UDP_RECEIVE_BUFFER);
    let _ = setsockopt(&udp, sockopt::SndBuf, &UDP_RECEIVE_BUFFER);
    Ok(Sockets {
        ws,
        http,
        udp,
        tls: None,
    })
}
