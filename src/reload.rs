//! `wspush reload`: asks the running master to replace its task workers (SIGUSR1) and waits for
//! the outcome, which the master writes next to its pid file (`<pid file stem>.reload`, JSON,
//! replaced whole by a rename so that it is never read half-written).
//!
//! Race-free: the command notes the last reload id it can see before it signals, then waits
//! for a finished reload with a larger id from the same master. The master starts a reload
//! after every request it gets (one asked for during a reload follows it), so a larger id is
//! a reload that began after the command did, and one always comes.

use crate::config::Config;
use crate::daemon::{running_pid, EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
use crate::status::EXIT_NOT_RUNNING;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a reload waits for each new worker to report ready before it gives up.
pub const SUCCESSOR_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the command looks at the status file.
const POLL: Duration = Duration::from_millis(20);
/// Beyond the longest a step may take: the master's loop turn, the file's rename.
const SLACK: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Done,
    Failed,
}

/// The status file: the last reload of the master `master`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub master: u32,
    pub reload: u64,
    pub state: State,
    pub replaced: usize,
    pub workers: usize,
    /// The build id the workers must have (the master's).
    pub build: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn status_path(pid_file: &Path) -> PathBuf {
    pid_file.with_extension("reload")
}

/// Replaces the status file whole.
pub fn write_status(path: &Path, status: &Status) -> io::Result<()> {
    let tmp = path.with_extension("reload.tmp");
    std::fs::write(&tmp, serde_json::to_vec(status).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

pub fn read_status(path: &Path) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The command. Exit codes: 0 reloaded, 1 failed (or no answer), 2 configuration error, 3 not
/// running.
pub fn reload(config_file: &Path) -> i32 {
    let config = match Config::load(config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wspush: {e}");
            return EXIT_CONFIG;
        }
    };
    let Some(pid) = running_pid(&config.server.pid_file) else {
        eprintln!(
            "wspush is not running (pid file {})",
            config.server.pid_file.display()
        );
        return EXIT_NOT_RUNNING;
    };
    let path = status_path(&config.server.pid_file);
    let master = pid as u32;
    let seen = read_status(&path)
        .filter(|s| s.master == master)
        .map_or(0, |s| s.reload);
    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGUSR1) {
        eprintln!("wspush: cannot signal pid {pid}: {e}");
        return EXIT_FAILED;
    }
    // Each step (a new worker ready, the old one done) is bounded; a reload that stops moving
    // for longer is reported, not waited for forever.
    let stall = SUCCESSOR_READY_TIMEOUT + Duration::from_secs(config.server.task_timeout) + SLACK;
    let started = Instant::now();
    let mut progress = (started, None);
    loop {
        let now = Instant::now();
        if let Some(s) = read_status(&path).filter(|s| s.master == master && s.reload > seen) {
            match s.state {
                State::Done => {
                    println!(
                        "wspush (pid {pid}): reloaded {} of {} task workers in {:.1} s (build {})",
                        s.replaced,
                        s.workers,
                        started.elapsed().as_secs_f64(),
                        s.build
                    );
                    return EXIT_OK;
                }
                State::Failed => {
                    eprintln!(
                        "wspush (pid {pid}): reload failed after {} of {} task workers: {}",
                        s.replaced,
                        s.workers,
                        s.error.as_deref().unwrap_or("no reason given")
                    );
                    return EXIT_FAILED;
                }
                State::Running => {
                    let step = Some((s.reload, s.replaced));
                    if progress.1 != step {
                        progress = (now, step);
                    }
                }
            }
        }
        if kill(Pid::from_raw(pid), None).is_err() {
            eprintln!("wspush (pid {pid}) stopped during the reload");
            return EXIT_FAILED;
        }
        if now.duration_since(progress.0) > stall {
            eprintln!(
                "wspush (pid {pid}): the reload made no progress for {} s; see {}",
                stall.as_secs(),
                config.server.log_file.display()
            );
            return EXIT_FAILED;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_sits_beside_the_pid_file_and_reads_back_what_was_written() {
        let dir = std::env::temp_dir().join(format!("wspush-reload-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = status_path(&dir.join("wspush.pid"));
        assert_eq!(path, dir.join("wspush.reload"));
        assert_eq!(read_status(&path), None);
        let status = Status {
            master: 42,
            reload: 3,
            state: State::Failed,
            replaced: 1,
            workers: 4,
            build: "0.1.0/ipc1/0123456789abcdef".into(),
            error: Some("the new task worker 1 exited".into()),
        };
        write_status(&path, &status).expect("write");
        assert_eq!(read_status(&path), Some(status));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(r#""state":"failed""#), "{text}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
