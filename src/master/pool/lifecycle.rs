//! The workers' lives: a worker that dies is let go and its tasks handed to its successor (or
//! failed after `MAX_ATTEMPTS`), dead slots are respawned with a backoff, deadlines are
//! enforced, and shutdown waits for them all. (A reload's successors are `reload`'s.)

use super::{
    Phase, Pool, Spawner, Worker, MAX_ATTEMPTS, MAX_RESPAWN_BACKOFF, MAX_STARTUP_FAILURES,
    ZOMBIE_GRACE,
};
use crate::ipc::hello::HelloError;
use crate::ipc::{Reply, TaskFailure, TaskId};
use crate::master::child::Link;
use crate::master::token::Generation;
use log::{error, info, warn};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// Why a worker was let go (or never started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// It could not be started: the binary is missing or cannot be executed.
    Spawn(String),
    /// Its channel failed or was closed.
    Channel(String),
    Exited(String),
    /// Its first frame was not a hello of our build.
    OtherBuild(HelloError),
    /// It reported that it cannot serve (its store will not open, say).
    CannotServe(String),
    /// A reload's successor that was not ready by its deadline.
    NotReadyInTime(Duration),
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Spawn(e) => write!(f, "could not be started: {e}"),
            Loss::Channel(e) => write!(f, "lost its channel: {e}"),
            Loss::Exited(status) => write!(f, "exited ({status})"),
            Loss::OtherBuild(e) => write!(f, "was refused: {e}"),
            Loss::CannotServe(e) => write!(f, "cannot serve: {e}"),
            Loss::NotReadyInTime(d) => write!(f, "was not ready within {} s", d.as_secs()),
        }
    }
}

impl<O, S: Spawner> Pool<O, S> {
    /// The worker `generation` of `slot` is gone or unusable: let it go, give its tasks to its
    /// successor (or answer them with a failure after `MAX_ATTEMPTS`), and respawn. A reload's
    /// successor that is lost ends the reload instead.
    pub(super) fn lose_worker(&mut self, slot: usize, generation: Generation, why: Loss) {
        if self.slots[slot].is_successor(generation) {
            return self.successor_failed(slot, why);
        }
        let s = &mut self.slots[slot];
        let was_current = s
            .current
            .as_ref()
            .is_some_and(|w| w.generation == generation);
        let worker = if was_current {
            s.current.take()
        } else if s
            .retiring
            .as_ref()
            .is_some_and(|w| w.generation == generation)
        {
            s.retiring.take()
        } else {
            None
        };
        let Some(mut w) = worker else { return };
        w.link.kill();
        warn!("task worker {slot} (pid {}) lost: {why}", w.link.pid());
        let was_ready = w.ready();
        self.zombies.push((w.link, Instant::now()));

        // Its tasks go back to the front of the queue, in their order.
        let mut orphans: Vec<TaskId> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.on_worker == Some(generation))
            .map(|(id, _)| *id)
            .collect();
        orphans.sort_unstable();
        for id in orphans.into_iter().rev() {
            let Some(f) = self.inflight.get_mut(&id) else {
                continue;
            };
            f.attempts += 1;
            f.on_worker = None;
            if f.attempts >= MAX_ATTEMPTS {
                error!("task {} failed: its worker died {MAX_ATTEMPTS} times", id.0);
                self.complete(id, Reply::Failed(TaskFailure::WorkerLost));
            } else {
                self.slots[slot].queue.push_front(id);
            }
        }

        if was_current {
            let s = &mut self.slots[slot];
            s.restarts += 1;
            if !was_ready {
                s.spawn_failures += 1;
                if !self.ever_ready
                    && s.spawn_failures >= MAX_STARTUP_FAILURES
                    && self.fatal.is_none()
                {
                    self.fatal = Some(format!("task worker {slot} {why} during start-up"));
                }
            }
            s.respawn_at = Some(Instant::now() + respawn_backoff(s.spawn_failures));
        }
    }

    /// SIGCHLD: collect every child that exited; a live worker that exited is replaced.
    pub fn reap(&mut self) {
        self.zombies.retain_mut(|(l, _)| l.exited().is_none());
        for slot in 0..self.slots.len() {
            let mut dead = Vec::new();
            for w in self.slots[slot].each_mut() {
                if let Some(status) = w.link.exited() {
                    dead.push((w.generation, Loss::Exited(status)));
                }
            }
            for (generation, why) in dead {
                self.lose_worker(slot, generation, why);
            }
        }
    }

    /// Deadlines, respawns and reload progress. Called at the sweep's pace.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<TaskId> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = self.inflight.get(&id) {
                let slot = f.slot;
                warn!("task {} timed out on worker slot {slot}", id.0);
                self.slots[slot].queue.retain(|q| *q != id);
                self.complete(id, Reply::Failed(TaskFailure::TimedOut));
            }
        }
        // A worker let go exits on end of file; one stuck in a store call past the grace is
        // killed, so that an old binary never lingers after a reload.
        for (l, since) in &mut self.zombies {
            if now.duration_since(*since) >= ZOMBIE_GRACE {
                l.kill();
            }
        }
        self.zombies.retain_mut(|(l, _)| l.exited().is_none());
        for slot in 0..self.slots.len() {
            // A respawn only ever fills an empty slot; it never replaces a live worker.
            if self.slots[slot].respawn_at.is_some_and(|t| t <= now)
                && self.slots[slot].current.is_none()
            {
                self.slots[slot].respawn_at = None;
                match self.spawn(slot) {
                    Ok(w) => self.slots[slot].current = Some(w),
                    Err(e) => {
                        error!("cannot spawn task worker {slot}: {e}");
                        self.slots[slot].respawn_at = Some(now + MAX_RESPAWN_BACKOFF);
                    }
                }
            }
            self.retire_if_finished(slot);
        }
        self.expire_successor(now);
        self.advance_reload(now);
    }

    /// A retiring worker with nothing left in flight is let go: closing its channel makes it
    /// exit.
    fn retire_if_finished(&mut self, slot: usize) {
        let Some(generation) = self.slots[slot].retiring.as_ref().map(|w| w.generation) else {
            return;
        };
        let busy = self
            .inflight
            .values()
            .any(|f| f.on_worker == Some(generation));
        if busy {
            return;
        }
        if let Some(mut w) = self.slots[slot].retiring.take() {
            info!("task worker {slot} (pid {}) retired", w.link.pid());
            w.link.close_channel();
            self.zombies.push((w.link, Instant::now()));
        }
    }

    /// Closes every channel (workers exit on end of file) and waits for them, escalating to
    /// SIGKILL after `grace`. Blocks: for after the loop only.
    pub fn shutdown(&mut self, grace: Duration) {
        let now = Instant::now();
        for s in &mut self.slots {
            let successor = s.successor.take().map(|(w, _)| w);
            for mut w in [s.current.take(), s.retiring.take(), successor]
                .into_iter()
                .flatten()
            {
                w.link.close_channel();
                self.zombies.push((w.link, now));
            }
        }
        let deadline = now + grace;
        let mut pause = Duration::from_millis(5);
        while !self.zombies.is_empty() {
            self.zombies.retain_mut(|(l, _)| l.exited().is_none());
            if Instant::now() >= deadline {
                for (l, _) in &mut self.zombies {
                    warn!("task worker pid {} did not exit; killing it", l.pid());
                    l.kill();
                }
                // Killed: reaped on the next rounds.
                if self.zombies.iter_mut().all(|(l, _)| l.exited().is_some()) {
                    self.zombies.clear();
                }
            }
            if self.zombies.is_empty() {
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    pub(super) fn spawn(&mut self, slot: usize) -> io::Result<Worker<S::Link>> {
        self.next_generation += 1;
        let generation = Generation(self.next_generation);
        let mut link = self.spawner.spawn(slot, generation)?;
        link.out().extend_from_slice(&self.config_frame);
        Ok(Worker {
            generation,
            link,
            phase: Phase::Greeting,
        })
    }
}

/// 0 after a worker that was ready; after `n` failed starts in a row, 100 × (2ⁿ − 1) ms (100,
/// 300, 700, 1,500 ms ...), at most 5 s.
fn respawn_backoff(failures: u32) -> Duration {
    let ms = 100 * (1u64 << failures.min(6)) - 100;
    Duration::from_millis(ms).min(MAX_RESPAWN_BACKOFF)
}
