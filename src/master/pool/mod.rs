//! Task worker slots: queue tasks, hand them to workers, collect answers, enforce deadlines,
//! replace dead workers without losing their tasks, and reload one worker at a time (`reload`:
//! a slot's old worker serves until its successor has said hello with our build id and is
//! ready; a successor that fails abandons the reload). The pool
//! knows tasks only as encoded bodies with a key and an origin (whoever waits for the answer):
//! not what they mean, nor who its caller is. Workers are reached through a `Spawner` and its
//! `Link`s, so that the tests run all of this without processes.
//!
//! Tasks carry a key (a uid): one key always goes to one slot, and a slot runs its tasks in
//! order, so a message kept for a uid is always seen by that uid's next login.

mod lifecycle;
mod reload;
mod spawn;

pub use lifecycle::Loss;
pub use reload::ReloadEvent;
pub use spawn::ProcessSpawner;

use crate::ipc::{self, Reply, TaskFailure, TaskId, ToMaster, ToWorker};
use crate::master::child::Link;
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
    /// From submit to the worker's answer; None when no worker answered (a timeout, say).
    pub took: Option<Duration>,
}

struct InFlight<O> {
    body: Bytes,
    key: u64,
    origin: O,
    slot: usize,
    /// The worker it was sent to; None while queued.
    on_worker: Option<Generation>,
    submitted: Instant,
    deadline: Instant,
    attempts: u8,
}

/// How far a worker has come since it was spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its first frame must be a hello with our build id.
    Greeting,
    /// Greeted; opening its stores.
    Starting,
    Ready,
}

struct Worker<L> {
    generation: Generation,
    link: L,
    phase: Phase,
}

impl<L> Worker<L> {
    fn ready(&self) -> bool {
        self.phase == Phase::Ready
    }
}

struct Slot<L> {
    current: Option<Worker<L>>,
    /// The worker being replaced by a reload; it finishes its tasks, then is let go.
    retiring: Option<Worker<L>>,
    /// A reload's new worker, until it is ready (it then becomes `current`) or fails (the
    /// reload is abandoned), by `deadline`.
    successor: Option<(Worker<L>, Instant)>,
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
            successor: None,
            queue: VecDeque::new(),
            spawn_failures: 0,
            respawn_at: None,
            done: 0,
            restarts: 0,
        }
    }
}

impl<L> Slot<L> {
    /// Every live worker of the slot.
    fn each(&self) -> impl Iterator<Item = &Worker<L>> {
        [
            self.current.as_ref(),
            self.retiring.as_ref(),
            self.successor.as_ref().map(|(w, _)| w),
        ]
        .into_iter()
        .flatten()
    }

    fn each_mut(&mut self) -> impl Iterator<Item = &mut Worker<L>> {
        [
            self.current.as_mut(),
            self.retiring.as_mut(),
            self.successor.as_mut().map(|(w, _)| w),
        ]
        .into_iter()
        .flatten()
    }

    fn is_successor(&self, generation: Generation) -> bool {
        self.successor
            .as_ref()
            .is_some_and(|(w, _)| w.generation == generation)
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
    reload: reload::Reloads,
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
            reload: reload::Reloads::default(),
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
            .all(|s| s.current.as_ref().is_some_and(Worker::ready))
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Whether `slot` has a worker that reported ready (not one being started).
    pub fn slot_ready(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .is_some_and(|s| s.current.as_ref().is_some_and(|w| w.ready()))
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
        let now = Instant::now();
        self.inflight.insert(
            id,
            InFlight {
                body,
                key,
                origin,
                slot,
                on_worker: None,
                submitted: now,
                deadline: now + self.task_timeout,
                attempts: 0,
            },
        );
        self.slots[slot].queue.push_back(id);
        id
    }

    #[cfg(test)]
    pub fn take_completions(&mut self) -> Vec<Completion<O>> {
        std::mem::take(&mut self.completions)
    }

    /// The answers collected since the last call, into `into` (both keep their room).
    pub fn drain_completions(&mut self, into: &mut Vec<Completion<O>>) {
        into.append(&mut self.completions);
    }

    fn complete(&mut self, id: TaskId, reply: Reply) {
        self.complete_at(id, reply, None);
    }

    /// As `complete`, for a worker's answer read at `answered`.
    fn complete_at(&mut self, id: TaskId, reply: Reply, answered: Option<Instant>) {
        if let Some(f) = self.inflight.remove(&id) {
            self.inflight_bytes -= f.body.len();
            self.completions.push(Completion {
                origin: f.origin,
                key: f.key,
                body: f.body,
                reply,
                took: answered.map(|t| t.saturating_duration_since(f.submitted)),
            });
        }
    }

    /// Moves queued tasks onto the workers' channels and writes what the channels take.
    pub fn flush(&mut self) {
        for slot in 0..self.slots.len() {
            self.dispatch(slot);
            let mut lost = Vec::new();
            for w in self.slots[slot].each_mut() {
                if let Err(e) = w.link.flush() {
                    lost.push((w.generation, Loss::Channel(e.to_string())));
                }
            }
            for (generation, why) in lost {
                self.lose_worker(slot, generation, why);
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
        let Some(w) = s.current.as_mut().filter(|w| w.ready()) else {
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
            let Some(w) = s.each_mut().find(|w| w.generation == generation) else {
                return;
            };
            w.link.read(&mut frames).and_then(|()| w.link.flush())
        };
        // One clock read for the answers of one read.
        let answered = (!frames.is_empty()).then(Instant::now);
        for frame in frames {
            // A frame may have cost the worker its place (a hello of another build).
            if self.slot_of(generation).is_none() {
                return;
            }
            self.on_frame(slot, generation, &frame, answered);
        }
        if let Err(e) = outcome {
            self.lose_worker(slot, generation, Loss::Channel(e.to_string()));
        }
    }

    fn on_frame(
        &mut self,
        slot: usize,
        generation: Generation,
        frame: &[u8],
        answered: Option<Instant>,
    ) {
        let s = &mut self.slots[slot];
        let successor = s.is_successor(generation);
        let Some(w) = s.each_mut().find(|w| w.generation == generation) else {
            return;
        };
        if w.phase == Phase::Greeting {
            match ipc::hello::check(frame) {
                Ok(()) => w.phase = Phase::Starting,
                Err(e) => self.lose_worker(slot, generation, Loss::OtherBuild(e)),
            }
            return;
        }
        match ipc::decode::<ToMaster>(frame) {
            Ok(ToMaster::Ready { pid }) => {
                w.phase = Phase::Ready;
                if successor {
                    self.promote(slot);
                } else if s
                    .current
                    .as_ref()
                    .is_some_and(|w| w.generation == generation)
                {
                    s.spawn_failures = 0;
                    self.ever_ready = true;
                    info!("task worker {slot} ready (pid {pid})");
                }
            }
            // A successor that cannot serve only ends the reload; the old worker serves on.
            Ok(ToMaster::Fatal { message }) if successor => {
                self.lose_worker(slot, generation, Loss::CannotServe(message));
            }
            Ok(ToMaster::Fatal { message }) => {
                error!("task worker {slot} cannot serve: {message}");
                self.fatal = Some(message);
            }
            Ok(ToMaster::Done { id, reply }) => {
                // A late answer to a task that timed out (or was retried) is dropped here.
                if self.inflight.contains_key(&id) {
                    self.slots[slot].done += 1;
                    self.complete_at(id, reply, answered);
                }
            }
            Ok(ToMaster::Cluster(_) | ToMaster::Unsubscribed) => {
                warn!("task worker {slot} sent a cluster message; ignored")
            }
            Err(e) => warn!("task worker {slot} sent an unreadable frame: {e}"),
        }
    }

    fn slot_of(&self, generation: Generation) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.each().any(|w| w.generation == generation))
    }

    pub fn stats(&self) -> Vec<SlotStats> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| SlotStats {
                slot: i,
                pid: s.current.as_ref().map(|w| w.link.pid()),
                ready: s.current.as_ref().is_some_and(Worker::ready),
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
            .flat_map(Slot::each)
            .map(|w| w.link.pid())
            .collect()
    }

    /// Asks every worker to reopen its log file.
    pub fn reopen_logs(&mut self) {
        for w in self.slots.iter_mut().flat_map(Slot::each_mut) {
            let _ = ipc::encode(&ToWorker::ReopenLog, w.link.out());
        }
    }
}

#[cfg(test)]
mod tests;
