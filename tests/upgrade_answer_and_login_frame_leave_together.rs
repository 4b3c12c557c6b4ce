//! The 101 answer waits for the login check, so that it and the login frame leave in one TCP
//! packet (one send less per login); when the check is slow, the 101 goes alone so the
//! client's handshake does not wait on it.
mod common;
use common::*;
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Connects and sends the upgrade request for `uid` (token `tok<uid>`), without waiting.
fn send_upgrade(server: &Server, uid: u64) -> TcpStream {
    let token = wspush::protocol::encode_access_token(&format!("tok{uid}"), uid, "app");
    let request = format!(
        "GET /?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        server.ws_port
    );
    let mut stream = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
    stream
        .write_all(request.as_bytes())
        .expect("upgrade request");
    stream
}

/// What one `read` returns.
fn first_read(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).expect("an answer");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_first_read_holds_the_101_and_the_login_frame() {
    let server = Server::start("upgrade-together");
    server.register(5, "app", "tok5", 4_000_000_000);
    let mut stream = send_upgrade(&server, 5);
    let got = first_read(&mut stream);
    assert!(got.starts_with("HTTP/1.1 101 "), "{got}");
    assert!(
        got.contains(r#""type":"login""#) && got.contains(r#""code":200"#),
        "the login frame came in the same packet as the 101:\n{got}"
    );
}

#[test]
fn a_refused_login_comes_with_its_101_too() {
    let server = Server::start("upgrade-refused");
    // No token was registered for uid 6.
    let mut stream = send_upgrade(&server, 6);
    let got = first_read(&mut stream);
    assert!(got.starts_with("HTTP/1.1 101 "), "{got}");
    assert!(got.contains(r#""code":401"#), "{got}");
}

#[test]
fn a_slow_login_check_does_not_hold_the_handshake() {
    let server = Server::start("upgrade-slow");
    server.register(7, "app", "tok7", 4_000_000_000);
    let workers = server.worker_pids();
    // Stopped workers take the login task and never answer it.
    for pid in &workers {
        send_signal(*pid, Signal::SIGSTOP);
    }
    let mut stream = send_upgrade(&server, 7);
    let got = first_read(&mut stream);
    for pid in &workers {
        send_signal(*pid, Signal::SIGCONT);
    }
    assert!(got.starts_with("HTTP/1.1 101 "), "{got}");
    assert!(
        !got.contains("login"),
        "the login frame cannot be there yet: {got}"
    );
    // The login frame follows once the worker answers.
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut rest = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&rest).contains(r#""code":200"#) {
        let n = stream.read(&mut buf).expect("the login frame");
        assert!(n > 0, "closed before the login frame");
        rest.extend_from_slice(&buf[..n]);
    }
}
