//! Tells the operator how a reload goes: the status file the `wspush reload` command waits on
//! (see `crate::reload`), and systemd (RELOADING=1, then READY=1 with the outcome).

use super::pool::ReloadEvent;
use crate::reload::{status_path, write_status, State, Status};
use log::warn;
use std::path::{Path, PathBuf};

pub struct ReloadReport {
    /// None when there is no pid file to sit beside.
    path: Option<PathBuf>,
    last: Option<Status>,
}

impl ReloadReport {
    pub fn new(pid_file: Option<&Path>) -> ReloadReport {
        let path = pid_file.map(status_path);
        if let Some(p) = &path {
            // An earlier master's outcome must not answer a command asking this one.
            let _ = std::fs::remove_file(p);
        }
        ReloadReport { path, last: None }
    }

    pub fn report(&mut self, event: &ReloadEvent) {
        let status = match event {
            ReloadEvent::Started { id, workers } => {
                crate::systemd::reloading(&format!("reloading {workers} task workers"));
                status(*id, State::Running, 0, *workers)
            }
            ReloadEvent::Progress {
                id,
                replaced,
                workers,
            } => status(*id, State::Running, *replaced, *workers),
            ReloadEvent::Finished { id, outcome } => {
                let (replaced, workers) = self
                    .last
                    .as_ref()
                    .filter(|s| s.reload == *id)
                    .map_or((0, 0), |s| (s.replaced, s.workers));
                match outcome {
                    Ok(n) => {
                        crate::systemd::ready(&format!("ready; reloaded {n} task workers"));
                        status(*id, State::Done, *n, workers)
                    }
                    Err(why) => {
                        crate::systemd::ready(&format!("ready; reload failed: {why}"));
                        Status {
                            error: Some(why.to_string()),
                            ..status(*id, State::Failed, replaced, workers)
                        }
                    }
                }
            }
        };
        if let Some(path) = &self.path {
            if let Err(e) = write_status(path, &status) {
                warn!("cannot write the reload status {}: {e}", path.display());
            }
        }
        self.last = Some(status);
    }
}

fn status(reload: u64, state: State, replaced: usize, workers: usize) -> Status {
    Status {
        master: std::process::id(),
        reload,
        state,
        replaced,
        workers,
        build: crate::ipc::hello::build_id(),
        error: None,
    }
}
