//! `/readyz` answers 200 only while every worker slot answers: a worker that hangs (stopped
//! with SIGSTOP) turns it 503 within a few seconds, naming the slot, and it is 200 again once
//! the worker runs on. `/healthz` (liveness) stays 200 throughout.
mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant};

fn readyz(server: &Server) -> (u16, Value) {
    let (status, body) = server.http("GET", "/readyz", &[], b"");
    (status, body_json(&body))
}

#[test]
fn readyz_turns_503_while_a_worker_hangs() {
    let server = Server::start("readyz-hang");
    wait_for("the server to be ready", || {
        (readyz(&server).0 == 200).then_some(())
    });
    let victim = worker_pid(&server.stats(), 1);
    let _resume = ContinueOnDrop(victim);

    send_signal(victim, Signal::SIGSTOP);
    let stopped = Instant::now();
    let body = wait_for("/readyz to turn 503", || {
        let (status, body) = readyz(&server);
        (status == 503).then_some(body)
    });
    // A ping every second, overdue after two: a few seconds, with room for a loaded machine.
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(body["status"], "not ready", "{body}");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("task worker 1 has not answered"), "{body}");
    assert!(!reasons.contains("task worker 0"), "{body}");
    let (status, _) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "liveness is not readiness");

    send_signal(victim, Signal::SIGCONT);
    let (_, body) = wait_for("/readyz to be 200 again", || {
        let answer = readyz(&server);
        (answer.0 == 200).then_some(answer)
    });
    assert_eq!(body["status"], "ready", "{body}");
}
