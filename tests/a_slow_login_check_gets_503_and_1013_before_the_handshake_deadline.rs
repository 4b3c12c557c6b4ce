//! A login whose token check does not come back (every task worker hangs, stopped with
//! SIGSTOP) gets the documented answer, the 503 login frame and close 1013, before the
//! handshake deadline: through the check's own timeout (`task_timeout`, less than
//! `handshake_timeout`), or, when the client was slow with its upgrade, through the session's
//! deadline half a second before the handshake's. The workers serve again once continued.
mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const HANDSHAKE_TIMEOUT: u64 = 4;
const TASK_TIMEOUT: u64 = 3;

fn server() -> Server {
    ServerBuilder::new("slow-login")
        .set("handshake_timeout", &HANDSHAKE_TIMEOUT.to_string())
        .set("task_timeout", &TASK_TIMEOUT.to_string())
        .start()
}

/// Stops every task worker; they continue when the guards drop.
fn hang_workers(server: &Server) -> Vec<ContinueOnDrop> {
    server
        .worker_pids()
        .into_iter()
        .map(|pid| {
            send_signal(pid, Signal::SIGSTOP);
            ContinueOnDrop(pid)
        })
        .collect()
}

fn upgrade_request(server: &Server, uid: u64) -> String {
    let token = wspush::protocol::encode_access_token(&format!("tok{uid}"), uid, "app");
    format!(
        "GET /?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        server.ws_port
    )
}

/// The server's frames after its HTTP head: (opcode, payload), unmasked as servers send them.
fn frames_after_head(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let text = String::from_utf8_lossy(bytes);
    let head_end = text.find("\r\n\r\n").expect("an HTTP head") + 4;
    let mut rest = &bytes[head_end..];
    let mut frames = Vec::new();
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0f;
        let (len, at) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            126 => break,
            n => (usize::from(n), 2),
        };
        if rest.len() < at + len {
            break;
        }
        frames.push((opcode, rest[at..at + len].to_vec()));
        rest = &rest[at + len..];
    }
    frames
}

/// Reads until the server's close frame is in; returns all it sent and when that was.
fn read_until_close_frame(s: &mut TcpStream, started: Instant) -> (Vec<u8>, Duration) {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s
            .read(&mut chunk)
            .expect("the server's answer within the wait");
        assert!(n > 0, "closed without a close frame: {got:?}");
        got.extend_from_slice(&chunk[..n]);
        let head_done = got.windows(4).any(|w| w == b"\r\n\r\n");
        if head_done && frames_after_head(&got).iter().any(|(op, _)| *op == 8) {
            return (got, started.elapsed());
        }
    }
}

fn assert_refused_503_then_1013(frames: &[(u8, Vec<u8>)]) {
    assert_eq!(frames.len(), 2, "{frames:?}");
    let login: Value = serde_json::from_slice(&frames[0].1).expect("a JSON frame");
    assert_eq!(
        login,
        json!({"type": "login", "code": 503, "message": "service unavailable", "data": []})
    );
    assert_eq!(frames[1].0, 8, "a close frame");
    assert_eq!(u16::from_be_bytes([frames[1].1[0], frames[1].1[1]]), 1013);
}

fn assert_serves_again(server: &Server, uid: u64) {
    let mut c = server.login(uid, "app");
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}));
}

#[test]
fn a_hung_token_check_is_answered_503_by_its_task_timeout_within_the_handshake_timeout() {
    let server = server();
    server.register(7, "app", "tok7", far_future());
    let hung = hang_workers(&server);
    let started = Instant::now();
    let mut c = server.connect(
        &wspush::protocol::encode_access_token("tok7", 7, "app"),
        None,
    );
    let frames = c.expect_close(1013);
    let took = started.elapsed();
    assert_eq!(
        frames,
        [json!({"type": "login", "code": 503, "message": "service unavailable", "data": []})]
    );
    assert!(
        took < Duration::from_secs(HANDSHAKE_TIMEOUT),
        "answered after {took:?}"
    );
    assert!(took >= Duration::from_secs(TASK_TIMEOUT), "{took:?}");
    drop(hung);
    assert_serves_again(&server, 7);
}

#[test]
fn after_a_slow_upgrade_the_session_answers_503_itself_before_the_handshake_deadline() {
    let server = server();
    server.register(8, "app", "tok8", far_future());
    let hung = hang_workers(&server);
    let request = upgrade_request(&server, 8);
    let (first, second) = request.split_at(request.len() / 2);
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
    s.write_all(first.as_bytes()).expect("half the request");
    // A slow client: its check starts 1.5 s in, so its task's timeout would come after the
    // handshake deadline.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(second.as_bytes()).expect("the rest");
    let (got, took) = read_until_close_frame(&mut s, started);
    assert!(
        got.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_refused_503_then_1013(&frames_after_head(&got));
    assert!(
        took < Duration::from_secs(HANDSHAKE_TIMEOUT),
        "answered after {took:?}"
    );
    assert!(
        server.log().contains("not checked in time"),
        "{}",
        server.log()
    );
    drop(hung);
    assert_serves_again(&server, 8);
}
