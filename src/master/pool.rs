//! Task worker slots: spawn (fork + exec of our own binary, the channel on its stdin/stdout),
//! queue tasks, collect answers, enforce deadlines, replace dead workers without losing their
//! tasks, and reload one worker at a time.
//!
//! Tasks carry a key (a uid): one key always goes to one slot, and a slot runs its tasks in
//! order, so a message stored for a uid is always seen by that uid's next login.

use crate::config::Config;
use crate::ipc::{self, FrameReader, Reply, Task, TaskId, ToMaster, ToWorker};
use crate::master::registry::ConnId;
use crate::protocol::Uid;
use log::{error, info, warn};
use mio::net::UnixStream;
use mio::{Interest, Registry as MioRegistry, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WORKER_TOKEN_BASE: usize = 1 << 40;
/// A task whose worker died this many times is answered with an error, not retried again.
const MAX_ATTEMPTS: u8 = 3;
const MAX_RESPAWN_BACKOFF: Duration = Duration::from_secs(5);
/// Start-up fails when a worker dies this many times before any worker was ever ready.
const MAX_STARTUP_FAILURES: u32 = 3;

/// Who is waiting for a task's answer.
#[derive(Debug, Clone)]
pub enum Origin {
    Login {
        conn: ConnId,
        uid: Uid,
        source: String,
    },
    FetchPending {
        uid: Uid,
    },
    DemoLogin {
        conn: ConnId,
        body: String,
    },
    HttpLogin {
        http: u64,
    },
    /// A write (store, requeue) nobody waits for; a failure goes to the retry queue.
    Background,
    /// The oldest write of the retry queue, sent to see whether the store is back.
    StoreProbe,
    /// A cluster task; `waiter` (with the `part` it answers) is what waits for it, if anything.
    Cluster {
        waiter: Option<u64>,
        part: usize,
    },
    Heartbeat,
    /// The start-up purge of this node's old presence entries.
    Purge,
    /// A presence batch; the connections in `welcome` get their login frame when it is answered.
    Presence {
        welcome: Vec<ConnId>,
    },
}

pub struct Completion {
    pub origin: Origin,
    /// The task answered and its key, handed back so that a failed write can be retried.
    pub task: Task,
    pub key: u64,
    pub reply: Reply,
}

struct InFlight {
    task: Task,
    key: u64,
    origin: Origin,
    slot: usize,
    /// The worker generation it was sent to; None while queued.
    on_worker: Option<u64>,
    deadline: Instant,
    attempts: u8,
}

struct Worker {
    generation: u64,
    child: Child,
    chan: UnixStream,
    out: Vec<u8>,
    out_pos: usize,
    reader: FrameReader,
    ready: bool,
}

#[derive(Default)]
struct Slot {
    current: Option<Worker>,
    /// The worker being replaced by a reload; it finishes its tasks, then is let go.
    retiring: Option<Worker>,
    queue: VecDeque<TaskId>,
    spawn_failures: u32,
    respawn_at: Option<Instant>,
    done: u64,
    restarts: u64,
}

#[derive(serde::Serialize)]
pub struct SlotStats {
    pub slot: usize,
    pub pid: Option<u32>,
    pub ready: bool,
    pub queued: usize,
    pub in_flight: usize,
    pub done: u64,
    pub restarts: u64,
}

pub struct Pool {
    slots: Vec<Slot>,
    inflight: HashMap<TaskId, InFlight>,
    next_task: TaskId,
    next_generation: u64,
    exe: PathBuf,
    config_frame: Vec<u8>,
    task_timeout: Duration,
    zombies: Vec<Child>,
    reload_queue: VecDeque<usize>,
    completions: Vec<Completion>,
    /// A worker that could not start at all (its store would not open, say).
    pub fatal: Option<String>,
    ever_ready: bool,
}

impl Pool {
    pub fn new(config: &Config, exe: PathBuf) -> Result<Pool, ipc::IpcError> {
        let mut config_frame = Vec::new();
        ipc::encode(
            &ToWorker::Config(Box::new(config.clone())),
            &mut config_frame,
        )?;
        Ok(Pool {
            slots: (0..config.task_workers())
                .map(|_| Slot::default())
                .collect(),
            inflight: HashMap::new(),
            next_task: 1,
            next_generation: 0,
            exe,
            config_frame,
            task_timeout: Duration::from_secs(config.server.task_timeout),
            zombies: Vec::new(),
            reload_queue: VecDeque::new(),
            completions: Vec::new(),
            fatal: None,
            ever_ready: false,
        })
    }

    pub fn start(&mut self, reg: &MioRegistry) -> io::Result<()> {
        for slot in 0..self.slots.len() {
            let worker = self.spawn(slot, reg)?;
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

    pub fn submit(&mut self, key: u64, task: Task, origin: Origin) -> TaskId {
        let id = self.next_task;
        self.next_task += 1;
        let slot = (key % self.slots.len() as u64) as usize;
        let deadline = Instant::now() + self.task_timeout;
        self.inflight.insert(
            id,
            InFlight {
                task,
                key,
                origin,
                slot,
                on_worker: None,
                deadline,
                attempts: 0,
            },
        );
        self.slots[slot].queue.push_back(id);
        id
    }

    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// Moves queued tasks onto the workers' channels and writes what the pipes take.
    pub fn flush(&mut self, reg: &MioRegistry) {
        for slot in 0..self.slots.len() {
            let s = &mut self.slots[slot];
            // During a reload a slot's new worker waits until the old one has finished, so
            // that the tasks of one key never overtake each other.
            if s.retiring.is_none() {
                if let Some(w) = s.current.as_mut().filter(|w| w.ready) {
                    while let Some(id) = s.queue.pop_front() {
                        let Some(f) = self.inflight.get_mut(&id) else {
                            continue;
                        };
                        let msg = ToWorker::Task {
                            id,
                            task: f.task.clone(),
                        };
                        if let Err(e) = ipc::encode(&msg, &mut w.out) {
                            error!("task {id} cannot be encoded: {e}");
                            let f = self.inflight.remove(&id);
                            if let Some(f) = f {
                                self.completions.push(Completion {
                                    origin: f.origin,
                                    task: f.task,
                                    key: f.key,
                                    reply: failed(500, "task too large"),
                                });
                            }
                            continue;
                        }
                        f.on_worker = Some(w.generation);
                    }
                }
            }
            for which in [true, false] {
                let s = &mut self.slots[slot];
                let w = if which {
                    s.current.as_mut()
                } else {
                    s.retiring.as_mut()
                };
                if let Some(w) = w {
                    if let Err(e) = write_out(w) {
                        let generation = w.generation;
                        self.lose_worker(
                            slot,
                            generation,
                            reg,
                            &format!("channel write failed: {e}"),
                        );
                    }
                }
            }
        }
    }

    pub fn owns(token: Token) -> bool {
        token.0 >= WORKER_TOKEN_BASE
    }

    pub fn on_event(&mut self, token: Token, reg: &MioRegistry) {
        let generation = (token.0 - WORKER_TOKEN_BASE) as u64;
        let Some(slot) = self.slot_of(generation) else {
            return;
        };
        let mut frames = Vec::new();
        let outcome = {
            let s = &mut self.slots[slot];
            let w = [s.current.as_mut(), s.retiring.as_mut()]
                .into_iter()
                .flatten()
                .find(|w| w.generation == generation);
            let Some(w) = w else { return };
            read_frames(w, &mut frames)
                .and_then(|open| write_out(w).map(|_| open).map_err(|e| e.to_string()))
        };
        for frame in frames {
            self.on_frame(slot, generation, frame);
        }
        match outcome {
            Ok(true) => {}
            Ok(false) => self.lose_worker(slot, generation, reg, "channel closed"),
            Err(e) => self.lose_worker(slot, generation, reg, &e),
        }
    }

    fn on_frame(&mut self, slot: usize, generation: u64, frame: ToMaster) {
        match frame {
            ToMaster::Ready { pid } => {
                let s = &mut self.slots[slot];
                if let Some(w) = s.current.as_mut().filter(|w| w.generation == generation) {
                    w.ready = true;
                    s.spawn_failures = 0;
                    self.ever_ready = true;
                    info!("task worker {slot} ready (pid {pid})");
                }
            }
            ToMaster::Fatal { message } => {
                error!("task worker {slot} cannot serve: {message}");
                self.fatal = Some(message);
            }
            ToMaster::Cluster(_) | ToMaster::Unsubscribed => {
                warn!("task worker {slot} sent a cluster message; ignored")
            }
            ToMaster::Done { id, reply } => {
                // A late answer to a task that timed out (or was retried) is dropped here.
                if let Some(f) = self.inflight.remove(&id) {
                    self.slots[slot].done += 1;
                    self.completions.push(Completion {
                        origin: f.origin,
                        task: f.task,
                        key: f.key,
                        reply,
                    });
                }
            }
        }
    }

    fn slot_of(&self, generation: u64) -> Option<usize> {
        self.slots.iter().position(|s| {
            [s.current.as_ref(), s.retiring.as_ref()]
                .into_iter()
                .flatten()
                .any(|w| w.generation == generation)
        })
    }

    /// The worker `generation` of `slot` is gone or unusable: let it go, give its tasks to its
    /// successor (or answer them with an error after `MAX_ATTEMPTS`), and respawn.
    fn lose_worker(&mut self, slot: usize, generation: u64, reg: &MioRegistry, why: &str) {
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
        let _ = reg.deregister(&mut w.chan);
        let _ = w.child.kill();
        warn!("task worker {slot} (pid {}) lost: {why}", w.child.id());
        let was_ready = w.ready;
        self.zombies.push(w.child);

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
                if let Some(f) = self.inflight.remove(&id) {
                    error!("task {id} failed: its worker died {MAX_ATTEMPTS} times");
                    self.completions.push(Completion {
                        origin: f.origin,
                        task: f.task,
                        key: f.key,
                        reply: failed(500, "task failed"),
                    });
                }
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
            let backoff = Duration::from_millis(100 * (1u64 << s.spawn_failures.min(6)) - 100);
            s.respawn_at = Some(Instant::now() + backoff.min(MAX_RESPAWN_BACKOFF));
        }
    }

    /// SIGCHLD: collect every child that exited; a live worker that exited is replaced.
    pub fn reap(&mut self, reg: &MioRegistry) {
        self.zombies
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        for slot in 0..self.slots.len() {
            let mut dead = Vec::new();
            let s = &mut self.slots[slot];
            for w in [s.current.as_mut(), s.retiring.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Ok(Some(status)) = w.child.try_wait() {
                    dead.push((w.generation, format!("exited ({status})")));
                }
            }
            for (generation, why) in dead {
                self.lose_worker(slot, generation, reg, &why);
            }
        }
    }

    /// Deadlines, respawns and reload progress. Called every loop turn.
    pub fn tick(&mut self, reg: &MioRegistry, now: Instant) {
        let expired: Vec<TaskId> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = self.inflight.remove(&id) {
                warn!("task {id} timed out on worker slot {}", f.slot);
                self.slots[f.slot].queue.retain(|q| *q != id);
                self.completions.push(Completion {
                    origin: f.origin,
                    task: f.task,
                    key: f.key,
                    reply: failed(503, "task timed out"),
                });
            }
        }
        for slot in 0..self.slots.len() {
            // A respawn only ever fills an empty slot; it never replaces a live worker.
            if self.slots[slot].respawn_at.is_some_and(|t| t <= now)
                && self.slots[slot].current.is_none()
            {
                self.slots[slot].respawn_at = None;
                match self.spawn(slot, reg) {
                    Ok(w) => self.slots[slot].current = Some(w),
                    Err(e) => {
                        error!("cannot spawn task worker {slot}: {e}");
                        self.slots[slot].respawn_at = Some(now + MAX_RESPAWN_BACKOFF);
                    }
                }
            }
            // A retiring worker with nothing left in flight is let go: closing its channel
            // makes it exit.
            let busy = self.inflight.values().any(|f| {
                f.slot == slot
                    && self.slots[slot]
                        .retiring
                        .as_ref()
                        .is_some_and(|w| f.on_worker == Some(w.generation))
            });
            if !busy {
                if let Some(mut w) = self.slots[slot].retiring.take() {
                    let _ = reg.deregister(&mut w.chan);
                    info!("task worker {slot} (pid {}) retired", w.child.id());
                    self.zombies.push(w.child);
                }
            }
        }
        self.advance_reload(reg);
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

    fn advance_reload(&mut self, reg: &MioRegistry) {
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
        match self.spawn(slot, reg) {
            Ok(w) => {
                let s = &mut self.slots[slot];
                s.retiring = s.current.replace(w);
                s.restarts += 1;
            }
            Err(e) => error!("reload: cannot spawn task worker {slot}: {e}"),
        }
    }

    /// Closes every channel (workers exit on end of file) and waits for them, escalating to
    /// SIGKILL after `grace`.
    pub fn shutdown(&mut self, reg: &MioRegistry, grace: Duration) {
        for s in &mut self.slots {
            for mut w in [s.current.take(), s.retiring.take()].into_iter().flatten() {
                let _ = reg.deregister(&mut w.chan);
                drop(w.chan);
                self.zombies.push(w.child);
            }
        }
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_millis(5);
        while !self.zombies.is_empty() {
            self.zombies
                .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            if Instant::now() >= deadline {
                for c in &mut self.zombies {
                    warn!("task worker pid {} did not exit; killing it", c.id());
                    let _ = c.kill();
                    let _ = c.wait();
                }
                self.zombies.clear();
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
                pid: s.current.as_ref().map(|w| w.child.id()),
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
            .map(|w| w.child.id())
            .collect()
    }

    fn spawn(&mut self, slot: usize, reg: &MioRegistry) -> io::Result<Worker> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let token = Token(WORKER_TOKEN_BASE + generation as usize);
        let (child, chan) = spawn_child(
            &self.exe,
            &["task-worker", "--slot", &slot.to_string()],
            reg,
            token,
        )?;
        Ok(Worker {
            generation,
            child,
            chan,
            out: self.config_frame.clone(),
            out_pos: 0,
            reader: FrameReader::default(),
            ready: false,
        })
    }

    /// Asks every worker to reopen its log file.
    pub fn broadcast_reopen_logs(&mut self) {
        for s in &mut self.slots {
            for w in [s.current.as_mut(), s.retiring.as_mut()]
                .into_iter()
                .flatten()
            {
                let _ = ipc::encode(&ToWorker::ReopenLog, &mut w.out);
            }
        }
    }
}

/// Fork + exec of our own binary with `args`; its stdin and stdout are one end of a socket
/// pair, the other end (non-blocking, registered under `token`) is returned. Every other
/// descriptor of ours is close-on-exec: the child holds no client socket.
pub fn spawn_child(
    exe: &std::path::Path,
    args: &[&str],
    reg: &MioRegistry,
    token: Token,
) -> io::Result<(Child, UnixStream)> {
    let (master_end, child_end) = std::os::unix::net::UnixStream::pair()?;
    let child_in: OwnedFd = child_end.try_clone()?.into();
    let child_out: OwnedFd = child_end.into();
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::from(child_in))
        .stdout(Stdio::from(child_out))
        .stderr(Stdio::inherit())
        .spawn()?;
    master_end.set_nonblocking(true)?;
    let mut chan = UnixStream::from_std(master_end);
    reg.register(&mut chan, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok((child, chan))
}

fn failed(code: u16, message: &str) -> Reply {
    Reply::Failed {
        code,
        message: message.into(),
    }
}

/// Ok(false) when the worker closed its end.
fn read_frames(w: &mut Worker, frames: &mut Vec<ToMaster>) -> Result<bool, String> {
    let open = w.reader.fill(&mut w.chan).map_err(|e| e.to_string())?;
    while let Some(frame) = w.reader.next_frame().map_err(|e| e.to_string())? {
        frames.push(frame);
    }
    Ok(open)
}

fn write_out(w: &mut Worker) -> io::Result<()> {
    while w.out_pos < w.out.len() {
        match w.chan.write(&w.out[w.out_pos..]) {
            Ok(n) => w.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.out.clear();
    w.out_pos = 0;
    if w.out.capacity() > 1024 * 1024 {
        w.out = Vec::new();
    }
    Ok(())
}
