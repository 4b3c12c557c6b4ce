//! Reload: each slot's worker is replaced by one of the binary now on disk, one slot at a time.
//! A slot's old worker serves on until its successor has said hello with our build id and
//! reported ready; only then does the successor take over (and it takes tasks once the old one
//! has finished its own, so that one key's tasks never overtake each other). A successor that
//! fails to start (cannot be spawned, exits, is another build, cannot serve, or is not ready in
//! time) is killed, the old worker serves on, and the reload is abandoned: no further slot is
//! touched. What happens is reported as `ReloadEvent`s, for the operator's reload command.

use super::{Loss, Pool, Spawner};
use crate::master::child::Link;
use crate::reload::SUCCESSOR_READY_TIMEOUT;
use log::{error, info};
use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

#[derive(Default)]
pub(super) struct Reloads {
    running: Option<Running>,
    /// A reload was asked for while one ran: another starts when it ends, so that every
    /// request is answered by a reload that started after it.
    again: bool,
    last_id: u64,
    events: Vec<ReloadEvent>,
}

struct Running {
    id: u64,
    /// Slots not reloaded yet, in order.
    queue: VecDeque<usize>,
    replaced: usize,
}

/// A reload's progress, for whoever reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadEvent {
    Started {
        id: u64,
        workers: usize,
    },
    /// A slot's successor took over.
    Progress {
        id: u64,
        replaced: usize,
        workers: usize,
    },
    /// Ok(how many workers were replaced).
    Finished {
        id: u64,
        outcome: Result<usize, ReloadFailure>,
    },
}

/// Why a reload was abandoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadFailure {
    /// A slot's successor failed; `pid` is None when it could not even be started.
    Successor {
        slot: usize,
        pid: Option<u32>,
        why: Loss,
    },
    /// The server began to stop.
    Stopping,
}

impl fmt::Display for ReloadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadFailure::Successor { slot, pid, why } => {
                write!(f, "the new task worker {slot}")?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(f, " {why}; every old worker keeps serving")
            }
            ReloadFailure::Stopping => f.write_str("the server is stopping"),
        }
    }
}

impl<O, S: Spawner> Pool<O, S> {
    /// SIGUSR1. Asked while a reload runs, another follows it.
    pub fn begin_reload(&mut self) {
        if self.reload.running.is_some() {
            info!("reload asked for during a reload: another follows this one");
            self.reload.again = true;
        } else {
            self.start_reload();
        }
    }

    fn start_reload(&mut self) {
        self.reload.last_id += 1;
        let (id, workers) = (self.reload.last_id, self.slots.len());
        info!("reloading {workers} task workers one at a time (reload {id})");
        self.reload.running = Some(Running {
            id,
            queue: (0..workers).collect(),
            replaced: 0,
        });
        self.reload
            .events
            .push(ReloadEvent::Started { id, workers });
    }

    pub fn reloading(&self) -> bool {
        self.reload.running.is_some()
    }

    /// What happened to reloads since the last call.
    pub fn take_reload_events(&mut self) -> Vec<ReloadEvent> {
        std::mem::take(&mut self.reload.events)
    }

    /// The server stops: a successor still starting is let go; retiring workers finish.
    pub fn cancel_reload(&mut self) {
        self.reload.again = false;
        if !self.reloading() {
            return;
        }
        for s in &mut self.slots {
            if let Some((mut w, _)) = s.successor.take() {
                w.link.kill();
                self.zombies.push((w.link, Instant::now()));
            }
        }
        self.finish_reload(Err(ReloadFailure::Stopping));
    }

    /// Starts the next slot's successor once the previous slot is done, and never while a
    /// slot is empty or its worker not ready (waiting for a respawn, which fills it).
    pub(super) fn advance_reload(&mut self, now: Instant) {
        if self.reload.running.is_none() {
            return;
        }
        let busy = self.slots.iter().any(|s| {
            s.retiring.is_some()
                || s.successor.is_some()
                || s.current.as_ref().is_none_or(|w| !w.ready())
        });
        if busy {
            return;
        }
        let next = self
            .reload
            .running
            .as_mut()
            .map(|r| (r.queue.pop_front(), r.replaced));
        let Some((next, replaced)) = next else {
            return;
        };
        let Some(slot) = next else {
            return self.finish_reload(Ok(replaced));
        };
        match self.spawn(slot) {
            Ok(w) => {
                info!(
                    "reload: new task worker {slot} started (pid {})",
                    w.link.pid()
                );
                self.slots[slot].successor = Some((w, now + SUCCESSOR_READY_TIMEOUT));
            }
            Err(e) => self.fail_reload(slot, None, Loss::Spawn(e.to_string())),
        }
    }

    /// A successor past its deadline fails the reload.
    pub(super) fn expire_successor(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .successor
                .as_ref()
                .is_some_and(|(_, deadline)| *deadline <= now)
            {
                self.successor_failed(slot, Loss::NotReadyInTime(SUCCESSOR_READY_TIMEOUT));
            }
        }
    }

    /// The slot's successor is ready: it becomes the slot's worker, the old one retires.
    pub(super) fn promote(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let Some((w, _)) = s.successor.take() else {
            return;
        };
        let old = s.current.as_ref().map(|o| o.link.pid());
        info!(
            "task worker {slot} ready (pid {}), replacing pid {}",
            w.link.pid(),
            old.map_or_else(|| "none".into(), |p| p.to_string())
        );
        s.retiring = s.current.replace(w);
        // Filled: a respawn that was due for it would replace a live worker.
        s.respawn_at = None;
        s.restarts += 1;
        let workers = self.slots.len();
        if let Some(r) = self.reload.running.as_mut() {
            r.replaced += 1;
            self.reload.events.push(ReloadEvent::Progress {
                id: r.id,
                replaced: r.replaced,
                workers,
            });
        }
    }

    /// The slot's successor failed: it goes, the old worker stays, the reload ends.
    pub(super) fn successor_failed(&mut self, slot: usize, why: Loss) {
        let Some((mut w, _)) = self.slots[slot].successor.take() else {
            return;
        };
        let pid = w.link.pid();
        w.link.kill();
        self.zombies.push((w.link, Instant::now()));
        self.fail_reload(slot, Some(pid), why);
    }

    fn fail_reload(&mut self, slot: usize, pid: Option<u32>, why: Loss) {
        let failure = ReloadFailure::Successor { slot, pid, why };
        error!("reload abandoned: {failure}");
        self.finish_reload(Err(failure));
    }

    fn finish_reload(&mut self, outcome: Result<usize, ReloadFailure>) {
        let Some(r) = self.reload.running.take() else {
            return;
        };
        if let Ok(n) = outcome {
            info!("reload {}: {n} task workers replaced", r.id);
        }
        self.reload
            .events
            .push(ReloadEvent::Finished { id: r.id, outcome });
        if std::mem::take(&mut self.reload.again) {
            self.start_reload();
        }
    }
}
