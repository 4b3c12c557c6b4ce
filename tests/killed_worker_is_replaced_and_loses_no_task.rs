//! A task worker killed outright is reaped and replaced, and the tasks it held run on its
//! successor: under load no login is refused, no chat goes unacked and no stored message is
//! lost. Task workers do not outlive a master that is killed.
mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const THREADS: u64 = 4;
/// Offline recipients of traffic thread t are 900_000 + t * 100 + n.
const FIRST_OFFLINE_UID: u64 = 900_000;
const KILLS: usize = 3;

/// True once `parent` has reaped its child `pid` (the pid is gone or belongs to someone else).
fn reaped_by(pid: u32, parent: u32) -> bool {
    proc_stat(pid).is_none_or(|(_, ppid)| ppid != parent)
}

fn worker(stats: &Value, slot: usize) -> &Value {
    &stats["workers"][slot]
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Kills the worker of `slot` and waits until the master has reaped it and a new one is ready.
fn kill_worker_and_wait_for_replacement(server: &Server, slot: usize) -> u32 {
    let before = server.stats();
    let old_pid = worker_pid(&before, slot);
    let old_restarts = num(&worker(&before, slot)["restarts"]);
    send_signal(old_pid, Signal::SIGKILL);
    let new_pid = wait_for("a ready replacement worker", || {
        let stats = server.try_stats()?;
        let w = worker(&stats, slot);
        let pid = w["pid"].as_u64()? as u32;
        (w["ready"] == true && pid != old_pid && w["restarts"].as_u64()? > old_restarts)
            .then_some(pid)
    });
    wait_for("the master to reap the killed worker", || {
        reaped_by(old_pid, server.pid()).then_some(())
    });
    assert!(pid_alive(new_pid), "the replacement {new_pid} runs");
    old_pid
}

#[test]
fn a_killed_worker_is_replaced_and_a_login_afterwards_works() {
    let server = Server::start("kill-idle");
    let old = server.worker_pids();
    let killed = kill_worker_and_wait_for_replacement(&server, 0);
    let now = server.worker_pids();
    assert_eq!(now.len(), old.len(), "as many workers as before: {now:?}");
    assert!(
        !now.contains(&killed),
        "{killed} is no longer listed: {now:?}"
    );
    // Uids of both slots log in.
    let mut a = server.login(2, "app");
    let mut b = server.login(3, "app");
    a.chat(3, "after the kill");
    assert_eq!(b.recv()["content"]["value"], "after the kill");
    assert_eq!(a.recv()["type"], "ack");
}

#[test]
fn tasks_held_by_a_killed_worker_are_retried_on_its_replacement() {
    let server = Server::start("kill-held");
    let n = server.worker_pids().len() as u64;
    assert!(n >= 1);
    // Uids that map to slot 0, where the worker will hold the tasks.
    let (newcomer, away) = (n * 50, n * 60);
    let mut alice = server.login(n * 70 + 1, "app");
    let token = "held-token";
    server.register(newcomer, "app", token, far_future());
    let victim = worker_pid(&server.stats(), 0);
    let _resume = ContinueOnDrop(victim);
    // A stopped worker takes tasks on its channel but never answers them.
    send_signal(victim, Signal::SIGSTOP);
    alice.chat(away, "kept across the kill");
    let ack = alice.recv();
    assert_eq!(ack["state"], 0, "{ack}");
    let mut c = server.connect(
        &wspush::protocol::encode_access_token(token, newcomer, "app"),
        None,
    );
    wait_for("both tasks to be in flight on the stopped worker", || {
        (server.try_stats().map(|s| num(&worker(&s, 0)["in_flight"])) >= Some(2)).then_some(())
    });
    send_signal(victim, Signal::SIGKILL);
    let login = c.recv();
    assert_eq!(login["type"], "login", "{login}");
    assert_eq!(
        login["code"], 200,
        "the login held by the dead worker is retried: {login}"
    );
    let stats = server.stats();
    assert_ne!(worker(&stats, 0)["pid"], json!(victim), "{stats}");
    assert!(num(&worker(&stats, 0)["restarts"]) >= 1, "{stats}");
    assert_eq!(stats["logins_refused"], 0, "{stats}");
    let mut bob = server.login(away, "app");
    let got = bob.recv();
    assert_eq!(
        got["content"]["value"], "kept across the kill",
        "the store task is retried: {got}"
    );
    bob.send_text("ping");
    assert_eq!(bob.recv(), json!({"type": "pong"}));
}

#[test]
fn under_load_repeated_worker_kills_lose_no_login_ack_or_message() {
    let server = Server::start("kill-load");
    let slots = server.worker_pids().len();
    assert!(slots >= 1);
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let mut killed = Vec::new();
    let sent: Vec<Sent> = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let threads =
            spawn_offline_chats(scope, &server, FIRST_OFFLINE_UID, THREADS, &stop, &rounds);
        wait_for("traffic to flow", || {
            (rounds.load(Ordering::SeqCst) >= THREADS).then_some(())
        });
        for k in 0..KILLS {
            // Alternate slots, so that no task can meet its retry limit.
            killed.push(kill_worker_and_wait_for_replacement(&server, k % slots));
        }
        let after_kills = rounds.load(Ordering::SeqCst);
        wait_for("traffic to go on after the kills", || {
            let now = rounds.load(Ordering::SeqCst);
            (now >= after_kills + THREADS || threads.iter().all(|t| t.is_finished())).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        threads.into_iter().map(join_or_resume).collect()
    });
    let stats = server.stats();
    assert_eq!(stats["logins_refused"], 0, "{stats}");
    let restarts: u64 = workers(&stats).iter().map(|w| num(&w["restarts"])).sum();
    assert!(restarts >= KILLS as u64, "{stats}");
    let pids = server.worker_pids();
    assert!(
        killed.iter().all(|k| !pids.contains(k)),
        "killed {killed:?}, now {pids:?}"
    );
    assert_offline_chats_delivered(&server, &sent, rounds.load(Ordering::SeqCst), |frame| {
        assert_eq!(frame["state"], 0, "{frame}");
    });
}

#[test]
fn killing_every_worker_at_once_while_each_holds_tasks_loses_none() {
    let server = Server::start("kill-all");
    let stats = server.stats();
    let slots = workers(&stats).len() as u64;
    let victims: Vec<u32> = (0..slots as usize).map(|s| worker_pid(&stats, s)).collect();
    let _resume: Vec<ContinueOnDrop> = victims.iter().map(|p| ContinueOnDrop(*p)).collect();
    // For every slot: a user who logs in and one who is away; uid % slots picks the slot.
    let newcomer = |slot: u64| 1_000 * slots + slot;
    let away = |slot: u64| 2_000 * slots + slot;
    for slot in 0..slots {
        server.register(newcomer(slot), "app", "all-token", far_future());
    }
    let mut alice = server.login(3_000 * slots, "app");
    for pid in &victims {
        send_signal(*pid, Signal::SIGSTOP);
    }
    let mut pending = Vec::new();
    for slot in 0..slots {
        alice.chat(away(slot), &format!("for slot {slot}"));
        assert_eq!(alice.recv()["state"], 0);
        let token = wspush::protocol::encode_access_token("all-token", newcomer(slot), "app");
        pending.push(server.connect(&token, None));
    }
    wait_for("every stopped worker to hold its tasks", || {
        let stats = server.try_stats()?;
        (0..slots as usize)
            .all(|s| worker(&stats, s)["in_flight"].as_u64() >= Some(2))
            .then_some(())
    });
    for pid in &victims {
        send_signal(*pid, Signal::SIGKILL);
    }
    for (slot, c) in pending.iter_mut().enumerate() {
        let login = c.recv();
        assert_eq!(login["code"], 200, "slot {slot}: {login}");
    }
    for slot in 0..slots {
        let mut c = server.login(away(slot), "app");
        assert_eq!(c.recv()["content"]["value"], format!("for slot {slot}"));
    }
    let pids = server.worker_pids();
    assert_eq!(pids.len(), victims.len(), "{pids:?}");
    assert!(
        victims.iter().all(|v| !pids.contains(v)),
        "{victims:?} -> {pids:?}"
    );
}

#[test]
fn workers_exit_when_the_master_is_killed() {
    let mut server = Server::start("kill-master");
    let pids = server.worker_pids();
    assert!(!pids.is_empty());
    assert!(pids.iter().all(|p| pid_alive(*p)), "{pids:?}");
    server.signal(Signal::SIGKILL);
    server.wait_exit();
    for pid in pids {
        wait_for_exit_of(pid, "an orphaned worker to exit");
    }
}
