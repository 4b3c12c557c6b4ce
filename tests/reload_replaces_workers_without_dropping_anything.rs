//! SIGUSR1 replaces the task workers one at a time. Under traffic nothing is dropped: the
//! connected clients stay connected, every login is accepted, every chat is acked and every
//! message kept for an offline user is handed over at its next login.
mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const THREADS: u64 = 3;
/// Offline recipients of traffic thread t are 800_000 + t * 100 + n.
const FIRST_OFFLINE_UID: u64 = 800_000;
const MAX_EXCHANGES: u64 = 50_000;
/// The longest a dead worker's respawn is put off (`MAX_RESPAWN_BACKOFF` in the pool).
const LONGEST_RESPAWN_BACKOFF: Duration = Duration::from_secs(5);
const ALICE: u64 = 1;
const BOB: u64 = 2;

/// `from` chats to `to`: the sender gets an ack saying it was delivered, the recipient the text.
fn chat_between(from: &mut Client, from_uid: u64, to: &mut Client, to_uid: u64, text: &str) {
    from.chat(to_uid, text);
    let got = to.recv();
    assert_eq!(got["type"], "chat", "{got}");
    assert_eq!(got["uid"], from_uid.to_string(), "{got}");
    assert_eq!(got["content"]["value"], text, "{got}");
    let ack = from.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], got["id"], "{ack}");
    assert_eq!(ack["state"], 1, "delivered: {ack}");
}

/// Alice and Bob, connected throughout, chat back and forth until `stop`; returns them.
fn pair_chat(
    mut alice: Client,
    mut bob: Client,
    stop: &AtomicBool,
    exchanges: &AtomicU64,
) -> (Client, Client) {
    for i in 0..MAX_EXCHANGES {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        chat_between(&mut alice, ALICE, &mut bob, BOB, &format!("a{i}"));
        chat_between(&mut bob, BOB, &mut alice, ALICE, &format!("b{i}"));
        exchanges.fetch_add(1, Ordering::SeqCst);
    }
    (alice, bob)
}

fn assert_still_connected(c: &mut Client) {
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}));
}

/// Sends SIGUSR1 and waits until every slot has a ready worker that is none of `old`, and
/// every old worker has exited. Returns the new pids.
fn reload_and_wait(server: &Server) -> Vec<u32> {
    let old: HashSet<u32> = server.worker_pids().into_iter().collect();
    let restarts_before: Vec<u64> = workers(&server.stats())
        .iter()
        .map(|w| w["restarts"].as_u64().expect("restarts"))
        .collect();
    server.signal(Signal::SIGUSR1);
    let new = wait_for("every worker to be replaced by a ready one", || {
        let stats = server.try_stats()?;
        let slots = workers(&stats);
        let pids: Vec<u32> = slots
            .iter()
            .map(|w| w["pid"].as_u64().map(|p| p as u32))
            .collect::<Option<_>>()?;
        let listed: Vec<u64> = stats["worker_pids"]
            .as_array()?
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        let done = slots.iter().all(|w| w["ready"] == true)
            && pids.iter().all(|p| !old.contains(p))
            && listed.iter().all(|p| !old.contains(&(*p as u32)));
        done.then_some(pids)
    });
    assert_eq!(new.len(), old.len(), "as many workers as before");
    let restarts_after: Vec<u64> = workers(&server.stats())
        .iter()
        .map(|w| w["restarts"].as_u64().expect("restarts"))
        .collect();
    for (before, after) in restarts_before.iter().zip(&restarts_after) {
        assert!(
            after > before,
            "every slot was restarted: {restarts_before:?} -> {restarts_after:?}"
        );
    }
    for pid in old {
        wait_for_exit_of(pid, "a replaced worker to exit");
    }
    new
}

#[test]
fn sigusr1_replaces_every_worker_and_the_new_ones_serve() {
    let server = Server::start("reload-idle");
    let mut alice = server.login(ALICE, "app");
    let first = reload_and_wait(&server);
    let second = reload_and_wait(&server);
    assert!(
        first.iter().all(|p| !second.contains(p)),
        "{first:?} then {second:?}"
    );
    assert!(server.log().contains("reloading"), "{}", server.log());
    assert_still_connected(&mut alice);
    let mut bob = server.login(BOB, "app");
    chat_between(&mut alice, ALICE, &mut bob, BOB, "after two reloads");
    alice.chat(3, "for later");
    assert_eq!(alice.recv()["state"], 0);
    let mut carol = server.login(3, "app");
    assert_eq!(carol.recv()["content"]["value"], "for later");
}

#[test]
fn a_reload_under_traffic_drops_no_connection_login_ack_or_message() {
    // Alice and Bob chat as fast as they can: lift the per-connection rate limit.
    let server = ServerBuilder::new("reload-load")
        .set("rate_limit", "1000000")
        .set("rate_limit_burst", "1000000")
        .start();
    let alice = server.login(ALICE, "app");
    let bob = server.login(BOB, "app");
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let exchanges = AtomicU64::new(0);
    let (sent, (mut alice, mut bob)) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let pair = {
            let (stop, exchanges) = (&stop, &exchanges);
            scope.spawn(move || pair_chat(alice, bob, stop, exchanges))
        };
        let threads =
            spawn_offline_chats(scope, &server, FIRST_OFFLINE_UID, THREADS, &stop, &rounds);
        wait_for("traffic to flow", || {
            (rounds.load(Ordering::SeqCst) >= THREADS && exchanges.load(Ordering::SeqCst) > 0)
                .then_some(())
        });
        reload_and_wait(&server);
        let (after, exchanged) = (
            rounds.load(Ordering::SeqCst),
            exchanges.load(Ordering::SeqCst),
        );
        wait_for("traffic to go on after the reload", || {
            let logins_went_on = rounds.load(Ordering::SeqCst) >= after + THREADS
                || threads.iter().all(|t| t.is_finished());
            let chats_went_on = exchanges.load(Ordering::SeqCst) > exchanged || pair.is_finished();
            (logins_went_on && chats_went_on).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        let sent: Vec<Sent> = threads.into_iter().map(join_or_resume).collect();
        (sent, join_or_resume(pair))
    });
    assert_still_connected(&mut alice);
    assert_still_connected(&mut bob);
    let stats = server.stats();
    assert_eq!(stats["logins_refused"], 0, "{stats}");
    assert_eq!(
        stats["online_users"], 2,
        "only alice and bob are still online: {stats}"
    );
    assert_offline_chats_delivered(&server, &sent, rounds.load(Ordering::SeqCst), |_| {});
}

/// `/proc/<pid>/stat`: "state ppid", for messages.
fn proc_state(pid: u32) -> String {
    proc_stat(pid).map_or_else(|| "gone".into(), |(state, ppid)| format!("{state} {ppid}"))
}

#[test]
fn a_reload_during_a_respawn_back_off_keeps_one_worker_per_slot() {
    let server = Server::start("reload-backoff");
    let data = server.dir.join("data");
    let moved = server.dir.join("data.moved");
    // While the data directory is a file no worker can open its store: a worker killed now is
    // respawned, fails at start-up, and is respawned again after a growing back-off.
    std::fs::rename(&data, &moved).expect("move the data directory");
    std::fs::write(&data, "not a directory").expect("write");
    let stats = server.stats();
    let killed = slot_pid(&stats, 0).expect("slot 0 has a worker");
    let slot1 = slot_pid(&stats, 1).expect("slot 1 has a worker");
    send_signal(killed, Signal::SIGKILL);
    wait_for("slot 0 to fail its start-up several times", || {
        (server.try_stats()?["workers"][0]["restarts"].as_u64()? >= 6).then_some(())
    });
    std::fs::remove_file(&data).expect("remove");
    std::fs::rename(&moved, &data).expect("restore the data directory");

    // A respawn is now put off by seconds; the reload starts a worker for the empty slot.
    server.signal(Signal::SIGUSR1);
    let reloaded = wait_for("the reload to finish", || {
        let stats = server.try_stats()?;
        let ready = workers(&stats).iter().all(|w| w["ready"] == true);
        let pid = slot_pid(&stats, 0)?;
        (ready && slot_pid(&stats, 1)? != slot1).then_some(pid)
    });
    // Nothing happens to that worker from now on, so it must stay the worker of slot 0 once the
    // respawn that was put off comes due.
    let until = Instant::now() + LONGEST_RESPAWN_BACKOFF + Duration::from_secs(1);
    while Instant::now() < until {
        let stats = server.stats();
        let now = slot_pid(&stats, 0);
        assert_eq!(
            now,
            Some(reloaded),
            "slot 0's worker {reloaded} was replaced by {now:?} though nothing happened to it; \
             {reloaded} is now [{}] (state, parent; master {}); log:\n{}",
            proc_state(reloaded),
            server.pid(),
            server
                .log()
                .lines()
                .filter(|l| l.contains("[master"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pid_alive(reloaded));
    let mut c = server.login(2, "app"); // uid 2 goes to slot 0
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}));
}
