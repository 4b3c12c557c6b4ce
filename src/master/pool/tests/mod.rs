//! The pool driven through a scripted `Link`: no process is started. Each spawned worker's
//! state is shared with the test, which injects frames, reads what the pool sent, and
//! scripts deaths, exits and write errors.

use super::*;
use crate::master::child::LinkError;
use std::cell::RefCell;
use std::rc::Rc;

/// What the pool sends every new worker first (opaque to it): a frame of 6 bytes.
const CONFIG_FRAME: &[u8] = b"\x06\x00\x00\x00config";
const TIMEOUT: Duration = Duration::from_secs(30);

/// One spawned worker as the test sees it.
#[derive(Default)]
struct WorkerState {
    slot: usize,
    generation: u64,
    /// Bytes the pool flushed, in order.
    sent: Vec<u8>,
    /// Frame bodies waiting to be read.
    incoming: Vec<Bytes>,
    /// `read` returns Closed (after the frames).
    closed: bool,
    flush_fails: bool,
    exited: bool,
    /// Exits as soon as its channel is closed (else only when killed).
    exit_on_close: bool,
    channel_closed: bool,
    killed: bool,
    /// The test has sent its hello.
    greeted: bool,
}

struct FakeLink {
    out: Vec<u8>,
    state: Rc<RefCell<WorkerState>>,
}

impl Link for FakeLink {
    fn pid(&self) -> u32 {
        1000 + self.state.borrow().generation as u32
    }
    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
    fn flush(&mut self) -> Result<(), LinkError> {
        let mut s = self.state.borrow_mut();
        if s.flush_fails {
            return Err(LinkError::Write(io::Error::other("scripted write error")));
        }
        s.sent.append(&mut self.out);
        Ok(())
    }
    fn read(&mut self, frames: &mut Vec<Bytes>) -> Result<(), LinkError> {
        let mut s = self.state.borrow_mut();
        frames.append(&mut s.incoming);
        if s.closed {
            return Err(LinkError::Closed);
        }
        Ok(())
    }
    fn exited(&mut self) -> Option<String> {
        self.state.borrow().exited.then(|| "exit status: 1".into())
    }
    fn close_channel(&mut self) {
        let mut s = self.state.borrow_mut();
        s.channel_closed = true;
        s.exited |= s.exit_on_close;
    }
    fn kill(&mut self) {
        let mut s = self.state.borrow_mut();
        s.killed = true;
        s.exited = true;
    }
}

#[derive(Default)]
struct Spawned {
    workers: Vec<Rc<RefCell<WorkerState>>>,
    /// How many of the next spawns fail.
    fail_next: u32,
}

/// The spawner's state, shared with the test: worker N is the Nth successful spawn.
#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Spawned>>);

struct FakeSpawner(Fake);

impl Spawner for FakeSpawner {
    type Link = FakeLink;

    fn spawn(&mut self, slot: usize, generation: Generation) -> io::Result<FakeLink> {
        let mut spawned = self.0 .0.borrow_mut();
        if spawned.fail_next > 0 {
            spawned.fail_next -= 1;
            return Err(io::Error::other("scripted spawn failure"));
        }
        let state = Rc::new(RefCell::new(WorkerState {
            slot,
            generation: generation.0,
            ..WorkerState::default()
        }));
        spawned.workers.push(Rc::clone(&state));
        Ok(FakeLink {
            out: Vec::new(),
            state,
        })
    }
}

type TestPool = Pool<u32, FakeSpawner>;

impl Fake {
    fn count(&self) -> usize {
        self.0.borrow().workers.len()
    }
    fn worker(&self, n: usize) -> Rc<RefCell<WorkerState>> {
        Rc::clone(self.0.borrow().workers.get(n).expect("no such worker"))
    }
    fn generation(&self, n: usize) -> Generation {
        Generation(self.worker(n).borrow().generation)
    }
    fn fail_next_spawns(&self, n: u32) {
        self.0.borrow_mut().fail_next = n;
    }

    /// Injects a frame into worker `n` and lets the pool read it.
    fn send(&self, pool: &mut TestPool, n: usize, msg: &ToMaster<'_>) {
        let mut framed = Vec::new();
        ipc::encode(msg, &mut framed).expect("encode a frame");
        self.send_framed(pool, n, framed);
    }
    fn send_framed(&self, pool: &mut TestPool, n: usize, framed: Vec<u8>) {
        // What `FrameReader::next_frame` hands out: the body without its length.
        let body = Bytes::from(framed).slice(4..);
        self.worker(n).borrow_mut().incoming.push(body);
        pool.on_event(self.generation(n));
    }
    /// Worker `n` says hello with the build id `id`.
    fn hello_as(&self, pool: &mut TestPool, n: usize, id: &str) {
        let mut framed = Vec::new();
        ipc::hello::encode_id(id, &mut framed);
        self.send_framed(pool, n, framed);
    }
    fn hello(&self, pool: &mut TestPool, n: usize) {
        self.hello_as(pool, n, &ipc::hello::build_id());
    }
    /// Worker `n` says hello (once) and reports ready.
    fn ready(&self, pool: &mut TestPool, n: usize) {
        if !self.worker(n).borrow().greeted {
            self.hello(pool, n);
            self.worker(n).borrow_mut().greeted = true;
        }
        let pid = 1000 + self.generation(n).0 as u32;
        self.send(pool, n, &ToMaster::Ready { pid });
    }
    fn answer(&self, pool: &mut TestPool, n: usize, id: TaskId, reply: Reply) {
        self.send(pool, n, &ToMaster::Done { id, reply });
    }
    /// Worker `n` closes its end: the pool's next read returns Closed.
    fn close(&self, pool: &mut TestPool, n: usize) {
        self.worker(n).borrow_mut().closed = true;
        pool.on_event(self.generation(n));
    }

    /// Worker `n` was sent the config frame, then exactly these tasks, in this order.
    fn assert_sent(&self, n: usize, expected: &[(TaskId, &str)]) {
        let sent = self.worker(n).borrow().sent.clone();
        let mut reader = ipc::FrameReader::default();
        let open = reader.fill(&mut &sent[..]).expect("read what was sent");
        assert!(!open);
        let config = reader.next_frame().expect("a frame");
        assert_eq!(
            config.as_deref(),
            Some(&CONFIG_FRAME[4..]),
            "config frame first"
        );
        let mut tasks = Vec::new();
        while let Some(frame) = reader.next_frame().expect("a frame") {
            match ipc::decode::<ToWorker>(&frame).expect("a ToWorker frame") {
                ToWorker::Task { id, body } => tasks.push((id, body.to_vec())),
                other => panic!("not a task: {other:?}"),
            }
        }
        let expected: Vec<_> = expected
            .iter()
            .map(|(id, body)| (*id, body.as_bytes().to_vec()))
            .collect();
        assert_eq!(tasks, expected, "tasks sent to worker {n}");
    }
}

/// A started pool of `workers` slots; none of its workers is ready yet.
fn started(workers: usize) -> (TestPool, Fake) {
    let fake = Fake::default();
    let mut pool = Pool::new(
        workers,
        CONFIG_FRAME.to_vec(),
        TIMEOUT,
        FakeSpawner(fake.clone()),
    );
    pool.start().expect("start");
    (pool, fake)
}

/// A started pool whose workers are all ready.
fn ready_pool(workers: usize) -> (TestPool, Fake) {
    let (mut pool, fake) = started(workers);
    for n in 0..workers {
        fake.ready(&mut pool, n);
    }
    (pool, fake)
}

fn b(body: &'static str) -> Bytes {
    Bytes::from_static(body.as_bytes())
}

/// (origin, reply) of every completion taken, by origin.
fn replies(pool: &mut TestPool) -> Vec<(u32, Reply)> {
    let mut all: Vec<_> = pool
        .take_completions()
        .into_iter()
        .map(|c| (c.origin, c.reply))
        .collect();
    all.sort_by_key(|(origin, _)| *origin);
    all
}

#[test]
fn tasks_wait_for_a_ready_worker_then_go_out_in_submission_order_on_the_slot_of_their_key() {
    let (mut pool, fake) = started(2);
    assert_eq!(fake.count(), 2);
    assert_eq!(fake.worker(0).borrow().slot, 0);
    assert_eq!(fake.worker(1).borrow().slot, 1);
    let a = pool.submit(4, b("a"), 1);
    let bb = pool.submit(3, b("b"), 2);
    let c = pool.submit(0, b("c"), 3);
    let d = pool.submit(4, b("d"), 4);
    pool.flush();
    fake.assert_sent(0, &[]);
    fake.assert_sent(1, &[]);
    assert!(!pool.all_ready());
    fake.ready(&mut pool, 0);
    pool.flush();
    fake.assert_sent(0, &[(a, "a"), (c, "c"), (d, "d")]);
    fake.assert_sent(1, &[]);
    let stats = pool.stats();
    assert_eq!((stats[0].in_flight, stats[0].queued), (3, 0));
    assert_eq!((stats[1].in_flight, stats[1].queued), (0, 1));
    fake.ready(&mut pool, 1);
    pool.flush();
    assert!(pool.all_ready());
    fake.assert_sent(1, &[(bb, "b")]);
}

#[test]
fn a_done_answer_becomes_a_completion_with_origin_key_body_and_reply() {
    let (mut pool, fake) = ready_pool(1);
    assert!(pool.is_idle());
    let first = pool.submit(7, b("task-1"), 11);
    let second = pool.submit(8, b("task-22"), 12);
    assert_eq!(pool.backlog_bytes(), 13);
    assert!(!pool.is_idle());
    pool.flush();
    fake.answer(&mut pool, 0, first, Reply::Ok);
    let done = pool.take_completions();
    assert_eq!(done.len(), 1);
    let (origin, key, body) = (done[0].origin, done[0].key, &done[0].body);
    assert_eq!((origin, key, &body[..]), (11, 7, &b"task-1"[..]));
    assert_eq!(done[0].reply, Reply::Ok);
    assert_eq!(pool.backlog_bytes(), 7);
    assert!(!pool.is_idle());
    fake.answer(&mut pool, 0, second, Reply::Routed { nodes: 2 });
    assert_eq!(replies(&mut pool), [(12, Reply::Routed { nodes: 2 })]);
    assert_eq!(pool.backlog_bytes(), 0);
    assert!(pool.is_idle());
    assert!(pool.take_completions().is_empty());
    assert_eq!(pool.stats()[0].done, 2);
}

#[test]
fn a_late_answer_to_a_task_that_timed_out_is_dropped() {
    let (mut pool, fake) = ready_pool(1);
    let id = pool.submit(1, b("slow"), 5);
    let now = Instant::now();
    pool.flush();
    pool.tick(now + TIMEOUT);
    let timed_out = Reply::Failed(TaskFailure::TimedOut);
    assert_eq!(replies(&mut pool), [(5, timed_out)]);
    fake.answer(&mut pool, 0, id, Reply::Ok);
    assert!(pool.take_completions().is_empty());
    assert_eq!(pool.stats()[0].done, 0);
    assert_eq!(pool.backlog_bytes(), 0);
}

#[test]
fn a_worker_whose_channel_closes_is_replaced_and_its_tasks_go_first_to_its_successor() {
    let (mut pool, fake) = ready_pool(1);
    let a = pool.submit(0, b("a"), 1);
    let bb = pool.submit(0, b("b"), 2);
    pool.flush();
    let c = pool.submit(0, b("c"), 3);
    fake.close(&mut pool, 0);
    assert!(fake.worker(0).borrow().killed);
    assert_eq!(fake.count(), 1, "the successor waits for the tick");
    assert_eq!(pool.stats()[0].pid, None);
    // A worker that was ready is replaced without delay.
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 2);
    pool.flush();
    fake.assert_sent(1, &[]);
    fake.ready(&mut pool, 1);
    pool.flush();
    fake.assert_sent(1, &[(a, "a"), (bb, "b"), (c, "c")]);
    assert_eq!(pool.stats()[0].restarts, 1);
    assert!(pool.take_completions().is_empty());
}

#[test]
fn a_reaped_worker_is_replaced_and_only_its_unanswered_tasks_are_sent_again() {
    let (mut pool, fake) = ready_pool(1);
    let a = pool.submit(0, b("a"), 1);
    let bb = pool.submit(0, b("b"), 2);
    pool.flush();
    fake.answer(&mut pool, 0, a, Reply::Ok);
    assert_eq!(replies(&mut pool), [(1, Reply::Ok)]);
    fake.worker(0).borrow_mut().exited = true;
    pool.reap();
    assert_eq!(pool.stats()[0].pid, None);
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 2);
    fake.ready(&mut pool, 1);
    pool.flush();
    fake.assert_sent(1, &[(bb, "b")]);
    assert_eq!(pool.worker_pids(), [1000 + fake.generation(1).0 as u32]);
}

#[test]
fn a_task_whose_worker_dies_max_attempts_times_fails_with_worker_lost() {
    let (mut pool, fake) = started(1);
    let id = pool.submit(0, b("poison"), 9);
    let after = pool.submit(0, b("after"), 10);
    let attempts = usize::from(MAX_ATTEMPTS);
    for n in 0..attempts {
        fake.ready(&mut pool, n);
        pool.flush();
        fake.assert_sent(n, &[(id, "poison"), (after, "after")]);
        fake.close(&mut pool, n);
        pool.tick(Instant::now());
        if n + 1 < attempts {
            assert!(pool.take_completions().is_empty(), "attempt {}", n + 1);
        }
    }
    let lost = Reply::Failed(TaskFailure::WorkerLost);
    assert_eq!(replies(&mut pool), [(9, lost.clone()), (10, lost)]);
    assert!(pool.is_idle());
    fake.ready(&mut pool, attempts);
    pool.flush();
    fake.assert_sent(attempts, &[]);
}

#[test]
fn queued_and_in_flight_tasks_time_out_at_their_deadline() {
    let (mut pool, fake) = ready_pool(1);
    let sent = pool.submit(0, b("sent"), 1);
    pool.flush();
    pool.submit(0, b("queued"), 2);
    let now = Instant::now();
    assert_eq!((pool.stats()[0].in_flight, pool.stats()[0].queued), (1, 1));
    pool.tick(now + TIMEOUT - Duration::from_secs(1));
    assert!(pool.take_completions().is_empty());
    pool.tick(now + TIMEOUT);
    let timed_out = Reply::Failed(TaskFailure::TimedOut);
    assert_eq!(replies(&mut pool), [(1, timed_out.clone()), (2, timed_out)]);
    assert!(pool.is_idle());
    assert_eq!(pool.backlog_bytes(), 0);
    pool.flush();
    fake.assert_sent(0, &[(sent, "sent")]);
    assert_eq!((pool.stats()[0].in_flight, pool.stats()[0].queued), (0, 0));
}

#[test]
fn workers_that_die_before_ever_being_ready_three_times_are_fatal_with_growing_backoff() {
    assert_eq!(MAX_STARTUP_FAILURES, 3);
    let (mut pool, fake) = started(1);
    for (n, ms) in [100, 300, 700].into_iter().enumerate() {
        assert_eq!(pool.take_fatal(), None, "after {n} failures");
        let backoff = Duration::from_millis(ms);
        let before = Instant::now();
        fake.close(&mut pool, n);
        let after = Instant::now();
        pool.tick(before + backoff - Duration::from_millis(1));
        assert_eq!(fake.count(), n + 1, "not respawned before {backoff:?}");
        pool.tick(after + backoff);
        assert_eq!(fake.count(), n + 2, "respawned after {backoff:?}");
    }
    let fatal = pool.take_fatal().expect("fatal after three failures");
    assert!(fatal.contains("start-up"), "{fatal}");
    assert_eq!(pool.take_fatal(), None, "taken once");
}

#[test]
fn once_a_worker_was_ready_deaths_before_ready_are_not_fatal() {
    let (mut pool, fake) = ready_pool(1);
    fake.close(&mut pool, 0);
    for n in 1..=MAX_STARTUP_FAILURES as usize + 1 {
        pool.tick(Instant::now() + MAX_RESPAWN_BACKOFF);
        assert_eq!(fake.count(), n + 1);
        fake.close(&mut pool, n);
    }
    assert_eq!(pool.take_fatal(), None);
}

#[test]
fn a_failed_spawn_leaves_the_slot_empty_and_is_retried_after_the_longest_backoff() {
    let (mut pool, fake) = ready_pool(1);
    let id = pool.submit(0, b("a"), 1);
    fake.close(&mut pool, 0);
    fake.fail_next_spawns(1);
    let now = Instant::now();
    pool.tick(now);
    assert_eq!(fake.count(), 1);
    assert_eq!(pool.stats()[0].pid, None);
    assert!(pool.worker_pids().is_empty());
    pool.tick(now + MAX_RESPAWN_BACKOFF - Duration::from_millis(1));
    assert_eq!(fake.count(), 1, "not retried before the backoff");
    pool.tick(now + MAX_RESPAWN_BACKOFF);
    assert_eq!(fake.count(), 2);
    fake.ready(&mut pool, 1);
    pool.flush();
    fake.assert_sent(1, &[(id, "a")]);
}

#[test]
fn a_write_error_loses_the_worker_like_a_death() {
    let (mut pool, fake) = ready_pool(1);
    fake.worker(0).borrow_mut().flush_fails = true;
    let id = pool.submit(0, b("a"), 1);
    pool.flush();
    assert!(fake.worker(0).borrow().killed);
    fake.assert_sent(0, &[]);
    assert_eq!(pool.stats()[0].pid, None);
    assert!(pool.take_completions().is_empty());
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 2);
    fake.ready(&mut pool, 1);
    pool.flush();
    fake.assert_sent(1, &[(id, "a")]);
}

#[test]
fn shutdown_closes_every_channel_and_kills_what_does_not_exit() {
    let (mut pool, fake) = ready_pool(2);
    pool.submit(0, b("a"), 1);
    pool.flush();
    pool.begin_reload();
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 3, "slot 0 has a new worker starting too");
    fake.worker(0).borrow_mut().exit_on_close = true;
    fake.worker(2).borrow_mut().exit_on_close = true;
    pool.shutdown(Duration::ZERO);
    for n in 0..3 {
        let w = fake.worker(n);
        assert!(w.borrow().channel_closed, "worker {n}");
        assert_eq!(w.borrow().killed, n == 1, "only worker 1 is killed");
    }
    assert!(pool.worker_pids().is_empty());
}

mod reload;
