//! `wspush start -d` returns only once the daemon serves, with exit 0 and its pid; `status`
//! reports it with its connections; a second start is refused; SIGTERM stops it and removes
//! the pid file. A start that cannot bind or cannot start its workers exits 1 and leaves
//! nothing behind.
mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;

const EXIT_FAILED: i32 = 1;
const EXIT_NOT_RUNNING: i32 = 3;

/// True if `pid` runs a wspush started with `config` (so that a reused pid is never killed).
fn runs_config(pid: u32, config: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let want = config.as_os_str().as_encoded_bytes();
    pid_alive(pid) && cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

/// Kills, when dropped, every daemon started with this config that is known by its pid: the
/// one in the pid file, the one `start` reported and any master the log names.
struct DaemonGuard {
    config: PathBuf,
    pid_file: PathBuf,
    log_file: PathBuf,
    reported: Vec<u32>,
}

impl DaemonGuard {
    fn new(server: &Server) -> Self {
        DaemonGuard {
            config: server.config.clone(),
            pid_file: server.pid_file(),
            log_file: server.dir.join("logs/wspush.log"),
            reported: Vec::new(),
        }
    }

    fn candidates(&self) -> Vec<u32> {
        let mut pids = self.reported.clone();
        pids.extend(read_file(&self.pid_file).trim().parse::<u32>().ok());
        for line in read_file(&self.log_file).lines() {
            if let Some(rest) = line.split("[master ").nth(1) {
                pids.extend(rest.split(']').next().and_then(|p| p.parse::<u32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        for pid in self.candidates() {
            if runs_config(pid, &self.config) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Runs `wspush <args> -c <config>` to its end (`start -d` returns once the daemon is ready).
fn run(args: &[&str], config: &Path) -> Output {
    wspush_command(args, config).output().expect("run wspush")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `start -d`: asserts exit 0 and the message; returns the daemon's pid.
fn start_daemon(server: &Server, guard: &mut DaemonGuard, args: &[&str]) -> u32 {
    let out = run(args, &server.config);
    let stdout = text(&out.stdout);
    let pid = stdout
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse::<u32>().ok());
    guard.reported.extend(pid);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("wspush started"), "{stdout}");
    let pid = pid.unwrap_or_else(|| panic!("no pid in {stdout:?}"));
    assert_eq!(
        read_file(&server.pid_file()).trim(),
        pid.to_string(),
        "the pid file names the daemon"
    );
    assert!(runs_config(pid, &server.config), "the daemon {pid} runs");
    pid
}

/// `status`: (exit code, stdout).
fn status(server: &Server) -> (i32, String) {
    let out = run(&["status"], &server.config);
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

#[test]
fn daemon_starts_reports_status_refuses_a_second_start_and_stops_on_sigterm() {
    let server = ServerBuilder::new("daemon").prepare();
    let mut guard = DaemonGuard::new(&server);
    let (code, out) = status(&server);
    assert_eq!(code, EXIT_NOT_RUNNING, "{out}");
    assert!(out.contains("not running"), "{out}");

    let pid = start_daemon(&server, &mut guard, &["start", "-d"]);
    // Ready means ready: every worker is up when `start` has returned.
    let stats = server.stats();
    let workers = workers(&stats);
    assert!(
        !workers.is_empty() && workers.iter().all(|w| w["ready"] == true),
        "{stats}"
    );
    assert_eq!(stats["pid"], pid, "{stats}");
    let worker_pids = server.worker_pids();

    let (code, out) = status(&server);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("wspush is running: pid {pid}, uptime ")),
        "{out}"
    );
    assert!(out.contains("connections 0, online users 0"), "{out}");

    let mut client = server.login(42, "app");
    wait_for("status to count the client", || {
        let (code, out) = status(&server);
        assert_eq!(code, 0, "{out}");
        out.contains("connections 1, online users 1").then_some(())
    });

    let second = run(&["start", "-d"], &server.config);
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(EXIT_FAILED), "{err}");
    assert!(err.contains("already running"), "{err}");
    assert!(
        err.contains(&pid.to_string()),
        "names the running pid: {err}"
    );
    let second = run(&["start", "--foreground"], &server.config);
    assert_eq!(
        second.status.code(),
        Some(EXIT_FAILED),
        "{}",
        text(&second.stderr)
    );
    assert!(text(&second.stderr).contains("already running"));
    // The first daemon is untouched.
    assert_eq!(read_file(&server.pid_file()).trim(), pid.to_string());
    client.send_text("ping");
    assert_eq!(client.recv()["type"], "pong");

    send_signal(pid, Signal::SIGTERM);
    client.expect_close(1001);
    wait_for("the pid file to be removed", || {
        (!server.pid_file().exists()).then_some(())
    });
    wait_for_exit_of(pid, "the daemon to exit");
    for w in worker_pids {
        wait_for_exit_of(w, "its workers to exit");
    }
    let (code, out) = status(&server);
    assert_eq!(code, EXIT_NOT_RUNNING, "{out}");
    assert!(out.contains("not running"), "{out}");
}

#[test]
fn daemonize_true_in_the_config_is_enough() {
    let server = ServerBuilder::new("daemon-config").prepare();
    let text_before = read_file(&server.config);
    std::fs::write(
        &server.config,
        text_before.replace("daemonize = false", "daemonize = true"),
    )
    .expect("write config");
    let mut guard = DaemonGuard::new(&server);
    let pid = start_daemon(&server, &mut guard, &["start"]);
    let (code, out) = status(&server);
    assert_eq!(code, 0, "{out}");
    send_signal(pid, Signal::SIGTERM);
    wait_for("the pid file to be removed", || {
        (!server.pid_file().exists()).then_some(())
    });
    wait_for_exit_of(pid, "the daemon to exit");
    assert_eq!(status(&server).0, EXIT_NOT_RUNNING);
}

#[test]
fn a_taken_websocket_port_fails_the_start_with_exit_1() {
    let server = ServerBuilder::new("daemon-port").prepare();
    let _guard = DaemonGuard::new(&server);
    let _taken = TcpListener::bind(local_addr(server.ws_port)).expect("take the port");
    for args in [&["start", "-d"][..], &["start", "--foreground"]] {
        let out = run(args, &server.config);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_FAILED),
            "`{}`: {err}",
            args.join(" ")
        );
        assert!(err.contains("cannot bind"), "{err}");
        assert!(
            err.contains(&server.ws_port.to_string()),
            "names the port: {err}"
        );
        assert!(
            !text(&out.stdout).contains("started"),
            "{}",
            text(&out.stdout)
        );
        assert!(!server.pid_file().exists(), "no pid file");
        assert_eq!(status(&server).0, EXIT_NOT_RUNNING);
    }
}

#[test]
fn workers_that_cannot_start_fail_the_start_with_exit_1() {
    let server = ServerBuilder::new("daemon-store").prepare();
    let guard = DaemonGuard::new(&server);
    // The data directory is a file: no task worker can open its store.
    let data = server.dir.join("data");
    std::fs::write(&data, "not a directory").expect("write");
    let out = run(&["start", "-d"], &server.config);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_FAILED),
        "stdout: {}\nstderr: {err}",
        text(&out.stdout)
    );
    assert!(err.contains("start failed"), "{err}");
    assert!(
        err.contains(&data.display().to_string()),
        "names what failed: {err}"
    );
    assert!(
        !text(&out.stdout).contains("started"),
        "{}",
        text(&out.stdout)
    );
    wait_for("the pid file to be removed", || {
        (!server.pid_file().exists()).then_some(())
    });
    let masters = guard.candidates();
    assert!(!masters.is_empty(), "the log names the master");
    for pid in masters {
        wait_for("the failed daemon to exit", || {
            (!runs_config(pid, &server.config)).then_some(())
        });
    }
    assert_eq!(status(&server).0, EXIT_NOT_RUNNING);
}

#[test]
fn a_pid_file_left_by_a_killed_daemon_does_not_block_the_next_start() {
    let server = ServerBuilder::new("daemon-stale").prepare();
    let mut guard = DaemonGuard::new(&server);
    let first = start_daemon(&server, &mut guard, &["start", "-d"]);
    let workers = server.worker_pids();
    send_signal(first, Signal::SIGKILL);
    wait_for_exit_of(first, "the killed daemon to be gone");
    for w in workers {
        wait_for_exit_of(w, "its workers to exit");
    }
    assert_eq!(
        read_file(&server.pid_file()).trim(),
        first.to_string(),
        "the stale pid file stays"
    );
    let (code, out) = status(&server);
    assert_eq!(code, EXIT_NOT_RUNNING, "a dead pid is not running: {out}");

    let second = start_daemon(&server, &mut guard, &["start", "-d"]);
    assert_ne!(second, first);
    let mut c = server.login(9, "app");
    c.send_text("ping");
    assert_eq!(c.recv()["type"], "pong");
    send_signal(second, Signal::SIGTERM);
    c.expect_close(1001);
    wait_for("the pid file to be removed", || {
        (!server.pid_file().exists()).then_some(())
    });
}
