//! Task worker slots: queue tasks, hand them to workers, collect answers, enforce deadlines,
//! replace dead workers without losing their tasks, and reload one worker at a time. The pool
//! knows tasks only as encoded bodies with a key and an origin (whoever waits for the answer):
//! not what they mean, nor who its caller is. Workers are reached through a `Spawner` and its
//! `Link`s, so that the tests run all of this without processes.
//!
//! Tasks carry a key (a uid): one key always goes to one slot, and a slot runs its tasks in
//! order, so a message kept for a uid is always seen by that uid's next login.

mod spawn;

pub use spawn::ProcessSpawner;

use crate::ipc::{self, Reply, TaskFailure, TaskId, ToMaster, ToWorker};
use crate::master::child::{Link, LinkError};
use crate::master::token::Generation;
use bytes::Bytes;
use log::{error, info, warn};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

/// A task whose worker died this many times is answered with a failure, not retried again.
const MAX_ATTEMPTS: u8 = 3;
const MAX_RESPAWN_BACKOFF: Duration = Duration::from_secs(5);
/// Start-up fails when a worker dies this many times before any worker was ever ready.
const MAX_STARTUP_FAILURES: u32 = 3;
/// How long a worker that was let go may take to exit before it is killed.
const ZOMBIE_GRACE: Duration = Duration::from_secs(10);

/// Starts worker processes for the pool.
pub trait Spawner {
    type Link: Link;
    fn spawn(&mut self, slot: usize, generation: Generation) -> io::Result<Self::Link>;
}

/// A task answered (or given up on), handed back with what the caller needs to act on it.
pub struct Completion<O> {
    pub origin: O,
    pub key: u64,
    /// The task's encoded body, so that a failed write can be kept for a retry.
    pub body: Bytes,
    pub reply: Reply,
}

struct InFlight<O> {
    body: Bytes,
    key: u64,
    origin: O,
    slot: usize,
    /// The worker it was sent to; None while queued.
    on_worker: Option<Generation>,
    deadline: Instant,
    attempts: u8,
}

struct Worker<L> {
    generation: Generation,
    link: L,
    ready: bool,
}

struct Slot<L> {
    current: Option<Worker<L>>,
    /// The worker being replaced by a reload; it finishes its tasks, then is let go.
    retiring: Option<Worker<L>>,
    queue: VecDeque<TaskId>,
    spawn_failures: u32,
    respawn_at: Option<Instant>,
    done: u64,
    restarts: u64,
}

impl<L> Default for Slot<L> {
    fn default() -> Self {
        Slot {
            current: None,
            retiring: None,
            queue: VecDeque::new(),
            spawn_failures: 0,
            respawn_at: None,
            done: 0,
            restarts: 0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SlotStats {
    pub slot: usize,
    pub pid: Option<u32>,
    pub ready: bool,
    pub queued: usize,
    pub in_flight: usize,
    pub done: u64,
    pub restarts: u64,
}

pub struct Pool<O, S: Spawner> {
    slots: Vec<Slot<S::Link>>,
    inflight: HashMap<TaskId, InFlight<O>>,
    /// Bytes of every task body not yet answered.
    inflight_bytes: usize,
    next_task: u64,
    next_generation: u64,
    spawner: S,
    config_frame: Vec<u8>,
    task_timeout: Duration,
    /// Workers let go, waited for without blocking, and since when.
    zombies: Vec<(S::Link, Instant)>,
    reload_queue: VecDeque<usize>,
    completions: Vec<Completion<O>>,
    /// Why a worker cannot serve at all (its store would not open, say).
    fatal: Option<String>,
    ever_ready: bool,
}

impl<O, S: Spawner> Pool<O, S> {
    /// `config_frame` is the first frame every new worker reads.
    pub fn new(workers: usize, config_frame: Vec<u8>, task_timeout: Duration, spawner: S) -> Self {
        Pool {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
            inflight: HashMap::new(),
            inflight_bytes: 0,
            next_task: 1,
            next_generation: 0,
            spawner,
            config_frame,
            task_timeout,
            zombies: Vec::new(),
            reload_queue: VecDeque::new(),
            completions: Vec::new(),
            fatal: None,
            ever_ready: false,
        }
    }

    pub fn start(&mut self) -> io::Result<()> {
        for slot in 0..self.slots.len() {
            let worker = self.spawn(slot)?;
            self.slots[slot].current = Some(worker);
        }
        Ok(())
    }

    pub fn all_ready(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.current.as_ref().is_some_and(|w| w.ready))
    }

    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Bytes of task bodies submitted and not yet answered.
    pub fn backlog_bytes(&self) -> usize {
        self.inflight_bytes
    }

    /// Why workers cannot serve, once (start-up fails on it before the doors open).
    pub fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    pub fn submit(&mut self, key: u64, body: Bytes, origin: O) -> TaskId {
        let id = TaskId(self.next_task);
        self.next_task += 1;
        let slot = (key % self.slots.len() as u64) as usize;
        self.inflight_bytes += body.len();
        self.inflight.insert(
            id,
            InFlight {
                body,
                key,
                origin,
                slot,
                on_worker: None,
                deadline: Instant::now() + self.task_timeout,
                attempts: 0,
            },
        );
        self.slots[slot].queue.push_back(id);
        id
    }

    pub fn take_completions(&mut self) -> Vec<Completion<O>> {
        std::mem::take(&mut self.completions)
    }

    fn complete(&mut self, id: TaskId, reply: Reply) {
        if let Some(f) = self.inflight.remove(&id) {
            self.inflight_bytes -= f.body.len();
            self.completions.push(Completion {
                origin: f.origin,
                key: f.key,
                body: f.body,
                reply,
            });
        }
    }

    /// Moves queued tasks onto the workers' channels and writes what the channels take.
    pub fn flush(&mut self) {
        for slot in 0..self.slots.len() {
            self.dispatch(slot);
            let mut lost = Vec::new();
            let s = &mut self.slots[slot];
            for w in [s.current.as_mut(), s.retiring.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Err(e) = w.link.flush() {
                    lost.push((w.generation, e.to_string()));
                }
            }
            for (generation, why) in lost {
                self.lose_worker(slot, generation, &why);
            }
        }
    }

    /// Encodes the slot's queued tasks into its ready worker's channel. During a reload a
    /// slot's new worker waits until the old one has finished, so that the tasks of one key
    /// never overtake each other.
    fn dispatch(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if s.retiring.is_some() {
            return;
        }
        let Some(w) = s.current.as_mut().filter(|w| w.ready) else {
            return;
        };
        let mut unencodable = Vec::new();
        while let Some(id) = s.queue.pop_front() {
            let Some(f) = self.inflight.get_mut(&id) else {
                continue;
            };
            let msg = ToWorker::Task { id, body: &f.body };
            match ipc::encode(&msg, w.link.out()) {
                Ok(()) => f.on_worker = Some(w.generation),
                Err(e) => {
                    error!("task {} cannot be sent: {e}", id.0);
                    unencodable.push(id);
                }
            }
        }
        for id in unencodable {
            self.complete(id, Reply::Failed(TaskFailure::TooLarge));
        }
    }

    /// The worker of `generation` has something to read.
    pub fn on_event(&mut self, generation: Generation) {
        let Some(slot) = self.slot_of(generation) else {
            return;
        };
        let mut frames = Vec::new();
        let outcome = {
            let s = &mut self.slots[slot];
            let Some(w) = [s.current.as_mut(), s.retiring.as_mut()]
                .into_iter()
                .flatten()
                .find(|w| w.generation == generation)
            else {
                return;
            };
            w.link.read(&mut frames).and_then(|()| w.link.flush())
        };
        for frame in frames {
            self.on_frame(slot, generation, &frame);
        }
        match outcome {
            Ok(()) => {}
            Err(LinkError::Closed) => self.lose_worker(slot, generation, "channel closed"),
            Err(e) => self.lose_worker(slot, generation, &e.to_string()),
        }
    }

    fn on_frame(&mut self, slot: usize, generation: Generation, frame: &[u8]) {
        match ipc::decode::<ToMaster>(frame) {
            Ok(ToMaster::Ready { pid }) => {
                let s = &mut self.slots[slot];
                if let Some(w) = s.current.as_mut().filter(|w| w.generation == generation) {
                    w.ready = true;
                    s.spawn_failures = 0;
                    self.ever_ready = true;
                    info!("task worker {slot} ready (pid {pid})");
                }
            }
            Ok(ToMaster::Fatal { message }) => {
                error!("task worker {slot} cannot serve: {message}");
                self.fatal = Some(message);
            }
            Ok(ToMaster::Done { id, reply }) => {
                // A late answer to a task that timed out (or was retried) is dropped here.
                if self.inflight.contains_key(&id) {
                    self.slots[slot].done += 1;
                    self.complete(id, reply);
                }
            }
            Ok(ToMaster::Cluster(_) | ToMaster::Unsubscribed) => {
                warn!("task worker {slot} sent a cluster message; ignored")
            }
            Err(e) => warn!("task worker {slot} sent an unreadable frame: {e}"),
        }
    }

    fn slot_of(&self, generation: Generation) -> Option<usize> {
        self.slots.iter().position(|s| {
            [s.current.as_ref(), s.retiring.as_ref()]
                .into_iter()
                .flatten()
                .any(|w| w.generation == generation)
        })
    }

    /// The worker `generation` of `slot` is gone or unusable: let it go, give its tasks to its
    /// successor (or answer them with a failure after `MAX_ATTEMPTS`), and respawn.
    fn lose_worker(&mut self, slot: usize, generation: Generation, why: &str) {
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
        let was_ready = w.ready;
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
                    self.fatal = Some(format!("task worker {slot} exits during start-up ({why})"));
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
            let s = &mut self.slots[slot];
            for w in [s.current.as_mut(), s.retiring.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(status) = w.link.exited() {
                    dead.push((w.generation, format!("exited ({status})")));
                }
            }
            for (generation, why) in dead {
                self.lose_worker(slot, generation, &why);
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
        self.advance_reload();
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

    pub fn begin_reload(&mut self) {
        if self.reload_queue.is_empty() {
            info!("reloading {} task workers one at a time", self.slots.len());
            self.reload_queue = (0..self.slots.len()).collect();
        }
    }

    pub fn reloading(&self) -> bool {
        !self.reload_queue.is_empty() || self.slots.iter().any(|s| s.retiring.is_some())
    }

    fn advance_reload(&mut self) {
        // One slot at a time: the next starts once the previous has a ready successor, and
        // never while a slot is empty (waiting for its respawn): the respawn fills it.
        if self
            .slots
            .iter()
            .any(|s| s.retiring.is_some() || s.current.as_ref().is_none_or(|w| !w.ready))
        {
            return;
        }
        let Some(slot) = self.reload_queue.pop_front() else {
            return;
        };
        match self.spawn(slot) {
            Ok(w) => {
                let s = &mut self.slots[slot];
                s.retiring = s.current.replace(w);
                s.restarts += 1;
            }
            Err(e) => {
                // The slot keeps its worker and waits its turn again (the next sweep).
                error!("reload: cannot spawn task worker {slot}: {e}");
                self.reload_queue.push_front(slot);
            }
        }
    }

    /// Closes every channel (workers exit on end of file) and waits for them, escalating to
    /// SIGKILL after `grace`. Blocks: for after the loop only.
    pub fn shutdown(&mut self, grace: Duration) {
        let now = Instant::now();
        for s in &mut self.slots {
            for mut w in [s.current.take(), s.retiring.take()].into_iter().flatten() {
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

    pub fn stats(&self) -> Vec<SlotStats> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| SlotStats {
                slot: i,
                pid: s.current.as_ref().map(|w| w.link.pid()),
                ready: s.current.as_ref().is_some_and(|w| w.ready),
                queued: s.queue.len(),
                in_flight: self
                    .inflight
                    .values()
                    .filter(|f| f.slot == i && f.on_worker.is_some())
                    .count(),
                done: s.done,
                restarts: s.restarts,
            })
            .collect()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .flat_map(|s| [s.current.as_ref(), s.retiring.as_ref()])
            .flatten()
            .map(|w| w.link.pid())
            .collect()
    }

    fn spawn(&mut self, slot: usize) -> io::Result<Worker<S::Link>> {
        self.next_generation += 1;
        let generation = Generation(self.next_generation);
        let mut link = self.spawner.spawn(slot, generation)?;
        link.out().extend_from_slice(&self.config_frame);
        Ok(Worker {
            generation,
            link,
            ready: false,
        })
    }

    /// Asks every worker to reopen its log file.
    pub fn reopen_logs(&mut self) {
        for s in &mut self.slots {
            for w in [s.current.as_mut(), s.retiring.as_mut()]
                .into_iter()
                .flatten()
            {
                let _ = ipc::encode(&ToWorker::ReopenLog, w.link.out());
            }
        }
    }
}

/// 0 after a worker that was ready; after `n` failed starts in a row, 100 × (2ⁿ − 1) ms (100,
/// 300, 700, 1,500 ms ...), at most 5 s.
fn respawn_backoff(failures: u32) -> Duration {
    let ms = 100 * (1u64 << failures.min(6)) - 100;
    Duration::from_millis(ms).min(MAX_RESPAWN_BACKOFF)
}

#[cfg(test)]
mod tests;
