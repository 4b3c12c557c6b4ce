//! SIGTERM stops the server gracefully: it stops accepting, closes every client with 1001
//! "server shutting down", lets the tasks in flight finish, removes its pid file, takes its
//! task workers down with it and exits 0.
mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;

const SHUTTING_DOWN: &str = "server shutting down";

/// Reads until the server closes; then answers its close frame, as a browser would at once.
fn closed_by_server(c: &mut Client) -> (Vec<Value>, Ending) {
    let seen = c.until_closed();
    let _ = c.ws.flush();
    seen
}

/// An HTTP API connection kept alive after one answered request.
fn idle_api_connection(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(local_addr(server.http_port)).expect("connect to the HTTP port");
    let req = http_request_head("GET", "/api/stats", &[("Authorization", &bearer())], 0);
    s.write_all(req.as_bytes()).expect("send");
    let (status, body) = read_http_response(&mut s);
    assert_eq!(status, 200, "{body}");
    s
}

#[test]
fn every_client_gets_1001_and_the_server_exits_0_without_its_pid_file_and_workers() {
    let mut server = Server::start("stop");
    let mut clients = vec![
        server.login(1, "app"),
        server.login(1, "pc"),
        server.login(2, "app"),
    ];
    // One more whose login may still be in flight when the signal comes.
    let token = "late-token";
    server.register(3, "app", token, far_future());
    let mut late = server.connect(
        &wspush::protocol::encode_access_token(token, 3, "app"),
        None,
    );
    // Connections that are not WebSocket clients (yet) are simply closed.
    let mut half_handshake = TcpStream::connect(local_addr(server.ws_port)).expect("connect");
    half_handshake
        .write_all(b"GET /?access_token=x HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    let api = idle_api_connection(&server);
    wait_for("the half handshake to be accepted", || {
        (server.try_stats()?["connections"].as_u64()? >= 5).then_some(())
    });
    let workers = server.worker_pids();
    assert!(!workers.is_empty());
    let pid_file = read_file(&server.pid_file());
    assert_eq!(
        pid_file.trim(),
        server.pid().to_string(),
        "the pid file holds the master's pid"
    );

    server.signal(Signal::SIGTERM);
    for c in &mut clients {
        let (frames, ending) = closed_by_server(c);
        assert_eq!(
            ending,
            Ending::Close(1001, SHUTTING_DOWN.into()),
            "frames before: {frames:?}"
        );
        assert!(frames.is_empty(), "nothing but the close: {frames:?}");
    }
    let (frames, ending) = closed_by_server(&mut late);
    assert_eq!(
        ending,
        Ending::Close(1001, SHUTTING_DOWN.into()),
        "frames before: {frames:?}"
    );
    assert!(frames.iter().all(|f| f["type"] == "login"), "{frames:?}");
    read_until_server_closes(half_handshake, "a connection in its handshake");
    read_until_server_closes(api, "an idle HTTP API connection");

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!server.pid_file().exists(), "the pid file is removed");
    for pid in workers {
        wait_for_exit_of(pid, "a task worker to exit with the master");
    }
    assert!(server.log().contains("stopped"), "{}", server.log());
}

#[test]
fn tasks_in_flight_finish_before_exit_and_nothing_new_is_accepted_meanwhile() {
    let mut server = ServerBuilder::new("stop-inflight")
        .set("shutdown_timeout", "60")
        .start();
    let n = server.worker_pids().len() as u64;
    let away = n * 40; // stored by the worker of slot 0
    let mut alice = server.login(n * 40 + 1, "app");
    let mut bob_first = server.login(away, "app"); // proves the slot serves, then leaves
    bob_first.send_text("ping");
    assert_eq!(bob_first.recv(), json!({"type": "pong"}));
    bob_first.close();
    let holder = worker_pid(&server.stats(), 0);
    let _resume = ContinueOnDrop(holder);
    // A stopped worker keeps the store tasks in flight until it is let go again.
    send_signal(holder, Signal::SIGSTOP);
    for i in 0..10 {
        alice.chat(away, &format!("acked before the stop {i}"));
        let ack = alice.recv();
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["state"], 0, "{ack}");
    }
    wait_for("the store task to be in flight", || {
        let stats = server.try_stats()?;
        (stats["workers"][0]["in_flight"].as_u64()? >= 1).then_some(())
    });

    server.signal(Signal::SIGTERM);
    assert_eq!(
        closed_by_server(&mut alice).1,
        Ending::Close(1001, SHUTTING_DOWN.into())
    );
    // Still waiting for its task: alive, but no longer accepting anything.
    let child = server.child.as_mut().expect("running");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the master waits for its task in flight"
    );
    assert!(
        TcpStream::connect(local_addr(server.ws_port)).is_err(),
        "WebSocket port closed while stopping"
    );
    assert!(
        TcpStream::connect(local_addr(server.http_port)).is_err(),
        "HTTP port closed while stopping"
    );

    send_signal(holder, Signal::SIGCONT);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!server.pid_file().exists());
    assert!(
        !server.log().contains("still in flight"),
        "the task finished in time:\n{}",
        server.log()
    );

    // The same data directory, a new server: every acked message was stored.
    let server = server.spawn();
    let mut bob = server.login(away, "app");
    for i in 0..10 {
        let got = bob.recv();
        assert_eq!(
            got["content"]["value"],
            format!("acked before the stop {i}"),
            "{got}"
        );
    }
    bob.send_text("ping");
    assert_eq!(bob.recv(), json!({"type": "pong"}));
}

#[test]
fn sigint_stops_the_server_the_same_way() {
    let mut server = Server::start("stop-int");
    let mut c = server.login(5, "app");
    server.signal(Signal::SIGINT);
    assert_eq!(
        closed_by_server(&mut c).1,
        Ending::Close(1001, SHUTTING_DOWN.into())
    );
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!server.pid_file().exists());
}
