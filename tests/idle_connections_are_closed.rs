//! A logged-in connection that sends nothing for `heartbeat_idle_time` seconds is closed with
//! 1001; pings (text or WebSocket frames) keep it open. A connection that does not finish its
//! HTTP upgrade within `handshake_timeout` seconds is dropped.
mod common;
use common::*;
use serde_json::json;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::{Bytes, Message};

/// How often the active clients below send, and for how long: the client's own pacing.
const PACE: Duration = Duration::from_millis(300);
const ACTIVE_FOR: Duration = Duration::from_millis(2500);

/// Sends a text ping every `PACE` for `ACTIVE_FOR`, each answered with a pong; returns how many.
fn text_pings_for_a_while(c: &mut Client) -> usize {
    let start = Instant::now();
    let mut pongs = 0;
    while start.elapsed() < ACTIVE_FOR {
        c.send_text("ping");
        assert_eq!(
            c.recv(),
            json!({"type": "pong"}),
            "still open after {:?}",
            start.elapsed()
        );
        pongs += 1;
        std::thread::sleep(PACE);
    }
    pongs
}

fn idle_server(tag: &str) -> Server {
    ServerBuilder::new(tag)
        .set("heartbeat_idle_time", "1")
        .start()
}

#[test]
fn a_silent_client_is_closed_with_1001() {
    let server = idle_server("idle-silent");
    let mut c = server.login(1, "app");
    let (frames, ending) = c.until_closed();
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(ending, Ending::Close(1001, "idle timeout".into()));
    wait_for("uid 1 to go offline", || {
        (server.push("online", json!({"uid": "1"}))["onLine"] == 0).then_some(())
    });
}

#[test]
fn text_pings_keep_a_client_open() {
    let server = idle_server("idle-text-ping");
    let mut c = server.login(1, "app");
    let pongs = text_pings_for_a_while(&mut c);
    assert!(pongs >= 5, "{pongs}");
    // It is still registered: a chat reaches it.
    let mut sender = server.login(2, "app");
    sender.chat(1, "you are still here");
    assert_eq!(c.recv()["content"]["value"], "you are still here");
}

#[test]
fn websocket_ping_frames_keep_a_client_open() {
    let server = idle_server("idle-frame-ping");
    let mut c = server.login(1, "app");
    let start = Instant::now();
    while start.elapsed() < ACTIVE_FOR {
        c.ws.send(Message::Ping(Bytes::from_static(b"hb")))
            .expect("ping");
        let deadline = Instant::now() + WAIT;
        loop {
            match c.ws.read() {
                Ok(Message::Pong(p)) => {
                    assert_eq!(&p[..], b"hb");
                    break;
                }
                Ok(Message::Close(f)) => panic!("closed after {:?}: {f:?}", start.elapsed()),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    assert!(Instant::now() < deadline, "no pong within {WAIT:?}");
                }
                Err(e) => panic!("connection failed after {:?}: {e}", start.elapsed()),
            }
        }
        std::thread::sleep(PACE);
    }
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}));
}

#[test]
fn half_an_http_request_is_dropped_after_the_handshake_timeout() {
    let server = ServerBuilder::new("idle-handshake")
        .set("handshake_timeout", "2")
        .set("task_timeout", "1")
        .start();
    let mut s = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
    s.write_all(b"GET /?access_token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .expect("write");
    let got = read_until_server_closes(s, "a connection with half a request");
    assert!(
        !String::from_utf8_lossy(&got).contains(" 101 "),
        "never upgraded: {got:?}"
    );
    wait_for("the connection to leave the stats", || {
        (server.stats()["connections"] == 0).then_some(())
    });
}

#[test]
fn a_silent_tcp_connection_is_dropped_after_the_handshake_timeout() {
    let server = ServerBuilder::new("idle-handshake-silent")
        .set("handshake_timeout", "2")
        .set("task_timeout", "1")
        .start();
    let s = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
    let got = read_until_server_closes(s, "a silent connection");
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn the_handshake_timeout_does_not_apply_once_logged_in() {
    let server = ServerBuilder::new("idle-handshake-open")
        .set("handshake_timeout", "2")
        .set("task_timeout", "1")
        .start();
    let mut c = server.login(1, "app");
    text_pings_for_a_while(&mut c);
}
