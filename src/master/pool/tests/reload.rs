//! Reloads: one slot at a time, an old worker kept until its successor is ready, and a
//! successor that fails in any way ends the reload with every old worker still serving.

use super::*;
use crate::ipc::hello::HelloError;
use crate::master::pool::reload::ReloadFailure;
use crate::reload::SUCCESSOR_READY_TIMEOUT;

fn finished(id: u64, outcome: Result<usize, ReloadFailure>) -> ReloadEvent {
    ReloadEvent::Finished { id, outcome }
}

#[test]
fn during_a_reload_the_new_worker_takes_tasks_only_after_the_retiring_one_has_finished() {
    let (mut pool, fake) = ready_pool(1);
    let a = pool.submit(0, b("a"), 1);
    let bb = pool.submit(0, b("b"), 2);
    pool.flush();
    pool.begin_reload();
    assert!(pool.reloading());
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 2);
    let c = pool.submit(0, b("c"), 3);
    fake.ready(&mut pool, 1);
    pool.flush();
    fake.assert_sent(1, &[]);
    fake.answer(&mut pool, 0, a, Reply::Ok);
    pool.tick(Instant::now());
    pool.flush();
    fake.assert_sent(1, &[]);
    assert!(!fake.worker(0).borrow().channel_closed, "b is in flight");
    assert!(pool.reloading());
    fake.answer(&mut pool, 0, bb, Reply::Ok);
    assert_eq!(replies(&mut pool), [(1, Reply::Ok), (2, Reply::Ok)]);
    pool.tick(Instant::now());
    assert!(fake.worker(0).borrow().channel_closed);
    assert!(!fake.worker(0).borrow().killed);
    assert!(!pool.reloading());
    pool.flush();
    fake.assert_sent(1, &[(c, "c")]);
    fake.assert_sent(0, &[(a, "a"), (bb, "b")]);
    assert_eq!(pool.stats()[0].restarts, 1);
}

#[test]
fn the_old_worker_takes_new_tasks_until_its_successor_is_ready() {
    let (mut pool, fake) = ready_pool(1);
    pool.begin_reload();
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 2);
    let a = pool.submit(0, b("a"), 1);
    pool.flush();
    fake.assert_sent(0, &[(a, "a")]);
    fake.assert_sent(1, &[]);
    assert_eq!(
        pool.stats()[0].pid,
        Some(1000 + fake.generation(0).0 as u32)
    );
    assert_eq!(pool.worker_pids().len(), 2, "the successor is listed too");
    fake.answer(&mut pool, 0, a, Reply::Ok);
    fake.ready(&mut pool, 1);
    pool.tick(Instant::now());
    assert!(fake.worker(0).borrow().channel_closed);
    assert_eq!(
        pool.stats()[0].pid,
        Some(1000 + fake.generation(1).0 as u32)
    );
}

#[test]
fn a_retiring_worker_that_dies_hands_its_tasks_to_the_new_worker_first() {
    let (mut pool, fake) = ready_pool(1);
    let a = pool.submit(0, b("a"), 1);
    let bb = pool.submit(0, b("b"), 2);
    pool.flush();
    pool.begin_reload();
    pool.tick(Instant::now());
    fake.ready(&mut pool, 1);
    let c = pool.submit(0, b("c"), 3);
    fake.close(&mut pool, 0);
    assert!(fake.worker(0).borrow().killed);
    pool.flush();
    fake.assert_sent(1, &[(a, "a"), (bb, "b"), (c, "c")]);
    pool.tick(Instant::now());
    assert!(!pool.reloading());
    assert_eq!(fake.count(), 2, "the slot has its worker: no respawn");
}

#[test]
fn a_reload_goes_one_slot_at_a_time_and_keeps_each_old_worker_until_its_successor_is_ready() {
    let (mut pool, fake) = ready_pool(2);
    let a = pool.submit(0, b("a"), 1);
    let c = pool.submit(1, b("c"), 2);
    pool.flush();
    pool.begin_reload();
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 3);
    assert_eq!(fake.worker(2).borrow().slot, 0, "slot 0 first");
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 3, "slot 1 waits for slot 0");
    fake.answer(&mut pool, 0, a, Reply::Ok);
    pool.tick(Instant::now());
    assert!(
        !fake.worker(0).borrow().channel_closed,
        "idle, but its successor is not ready yet"
    );
    assert_eq!(fake.count(), 3);
    fake.ready(&mut pool, 2);
    pool.tick(Instant::now());
    assert!(fake.worker(0).borrow().channel_closed);
    assert_eq!(fake.count(), 4);
    assert_eq!(fake.worker(3).borrow().slot, 1);
    pool.flush();
    fake.assert_sent(3, &[]);
    fake.answer(&mut pool, 1, c, Reply::Ok);
    pool.tick(Instant::now());
    assert!(
        !fake.worker(1).borrow().channel_closed,
        "its successor is not ready"
    );
    fake.ready(&mut pool, 3);
    pool.tick(Instant::now());
    assert!(fake.worker(1).borrow().channel_closed);
    assert!(!pool.reloading());
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 4, "each slot is reloaded once");
    assert!(pool.all_ready());
    let progress = |replaced| ReloadEvent::Progress {
        id: 1,
        replaced,
        workers: 2,
    };
    assert_eq!(
        pool.take_reload_events(),
        [
            ReloadEvent::Started { id: 1, workers: 2 },
            progress(1),
            progress(2),
            finished(1, Ok(2)),
        ]
    );
}

/// How a successor (worker 2, of slot 0 in a pool of two) fails, and the loss it must cause.
type Failure = (&'static str, fn(&mut TestPool, &Fake), fn(&Loss) -> bool);

#[test]
fn a_successor_that_fails_to_start_leaves_every_old_worker_serving_and_ends_the_reload() {
    let failures: [Failure; 7] = [
        (
            "its channel closes",
            |pool, fake| fake.close(pool, 2),
            |l| matches!(l, Loss::Channel(_)),
        ),
        (
            "it exits",
            |pool, fake| {
                fake.worker(2).borrow_mut().exited = true;
                pool.reap();
            },
            |l| matches!(l, Loss::Exited(_)),
        ),
        (
            "another build",
            |pool, fake| fake.hello_as(pool, 2, "9.9.9/ipc9/0000000000000000"),
            |l| matches!(l, Loss::OtherBuild(HelloError::OtherBuild { theirs, .. }) if theirs.starts_with("9.9.9")),
        ),
        (
            "no hello (a build from before the handshake)",
            |pool, fake| fake.send(pool, 2, &ToMaster::Ready { pid: 1 }),
            |l| *l == Loss::OtherBuild(HelloError::Missing),
        ),
        (
            "it cannot serve",
            |pool, fake| {
                fake.hello(pool, 2);
                let message = "store will not open".to_string();
                fake.send(pool, 2, &ToMaster::Fatal { message });
            },
            |l| matches!(l, Loss::CannotServe(m) if m == "store will not open"),
        ),
        (
            "it is not ready in time",
            |pool, fake| {
                fake.hello(pool, 2);
                let late = Instant::now() + SUCCESSOR_READY_TIMEOUT;
                pool.tick(late - Duration::from_millis(100));
                assert!(pool.reloading(), "not late yet");
                pool.tick(late + Duration::from_millis(1));
            },
            |l| *l == Loss::NotReadyInTime(SUCCESSOR_READY_TIMEOUT),
        ),
        (
            "its exec fails",
            |pool, fake| {
                // Worker 2 (already spawned) is let go as a channel loss; the reload that
                // follows cannot spawn at all.
                fake.close(pool, 2);
                pool.take_reload_events();
                fake.fail_next_spawns(1);
                pool.begin_reload();
                pool.tick(Instant::now());
            },
            |l| matches!(l, Loss::Spawn(_)),
        ),
    ];
    for (what, fail, expected) in failures {
        let (mut pool, fake) = ready_pool(2);
        let old: Vec<u32> = pool.stats().iter().filter_map(|s| s.pid).collect();
        let a = pool.submit(0, b("a"), 1);
        pool.flush();
        pool.begin_reload();
        pool.tick(Instant::now());
        assert_eq!(fake.count(), 3, "{what}: slot 0's successor started");
        fail(&mut pool, &fake);
        assert!(!pool.reloading(), "{what}: the reload ended");
        let events = pool.take_reload_events();
        let Some(ReloadEvent::Finished {
            outcome: Err(ReloadFailure::Successor { slot: 0, pid, why }),
            ..
        }) = events.last()
        else {
            panic!("{what}: {events:?}");
        };
        assert!(expected(why), "{what}: {why:?}");
        assert_eq!(pid.is_none(), matches!(why, Loss::Spawn(_)), "{what}");
        if !matches!(why, Loss::Spawn(_)) {
            assert!(
                fake.worker(2).borrow().killed,
                "{what}: the successor is killed"
            );
        }
        // Nothing else moves: slot 1 is never touched, both old workers serve on.
        for _ in 0..3 {
            pool.tick(Instant::now());
        }
        assert_eq!(fake.count(), 3, "{what}: no other worker was started");
        let now: Vec<u32> = pool.stats().iter().filter_map(|s| s.pid).collect();
        assert_eq!(now, old, "{what}");
        assert!(
            pool.stats().iter().all(|s| s.ready && s.restarts == 0),
            "{what}"
        );
        for n in 0..2 {
            let w = fake.worker(n);
            assert!(
                !w.borrow().killed && !w.borrow().channel_closed,
                "{what}: worker {n}"
            );
        }
        let c = pool.submit(0, b("c"), 2);
        pool.flush();
        fake.assert_sent(0, &[(a, "a"), (c, "c")]);
        fake.answer(&mut pool, 0, c, Reply::Ok);
        assert_eq!(replies(&mut pool), [(2, Reply::Ok)], "{what}");
    }
}

#[test]
fn a_reload_asked_for_during_a_reload_follows_it() {
    let (mut pool, fake) = ready_pool(1);
    pool.begin_reload();
    pool.tick(Instant::now());
    pool.begin_reload();
    fake.ready(&mut pool, 1);
    pool.tick(Instant::now());
    assert!(pool.reloading(), "the second reload runs");
    pool.tick(Instant::now());
    assert_eq!(fake.count(), 3, "and replaces the worker once more");
    fake.ready(&mut pool, 2);
    pool.tick(Instant::now());
    assert!(!pool.reloading());
    let events = pool.take_reload_events();
    let ends: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ReloadEvent::Started { .. } | ReloadEvent::Finished { .. }
            )
        })
        .cloned()
        .collect();
    assert_eq!(
        ends,
        [
            ReloadEvent::Started { id: 1, workers: 1 },
            finished(1, Ok(1)),
            ReloadEvent::Started { id: 2, workers: 1 },
            finished(2, Ok(1)),
        ]
    );
}

#[test]
fn a_stop_ends_the_reload_and_lets_a_starting_successor_go() {
    let (mut pool, fake) = ready_pool(1);
    pool.begin_reload();
    pool.tick(Instant::now());
    pool.begin_reload();
    pool.cancel_reload();
    assert!(!pool.reloading(), "and the one asked for next is dropped");
    assert!(fake.worker(1).borrow().killed);
    assert!(!fake.worker(0).borrow().killed);
    assert_eq!(
        pool.take_reload_events().last(),
        Some(&finished(1, Err(ReloadFailure::Stopping)))
    );
}
