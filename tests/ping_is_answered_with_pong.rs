//! `ping` and `{"type":"ping"}` text frames are answered with `{"type":"pong"}`; a WebSocket
//! ping frame with a pong frame carrying the same payload.
mod common;
use common::*;
use serde_json::json;
use tungstenite::{Bytes, Message};

#[test]
fn text_ping_gets_a_pong_frame() {
    let server = Server::start("ping-text");
    let mut c = server.login(1, "app");
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}));
}

#[test]
fn json_ping_gets_a_pong_frame() {
    let server = Server::start("ping-json");
    let mut c = server.login(1, "app");
    c.send(&json!({"type": "ping"}));
    assert_eq!(c.recv(), json!({"type": "pong"}));
}

#[test]
fn every_ping_gets_its_own_pong() {
    let server = Server::start("ping-many");
    let mut c = server.login(1, "app");
    for i in 0..10 {
        if i % 2 == 0 {
            c.send_text("ping");
        } else {
            c.send(&json!({"type": "ping"}));
        }
    }
    for _ in 0..10 {
        assert_eq!(c.recv(), json!({"type": "pong"}));
    }
    // A ping frame's pong comes after every frame queued before it: nothing extra was sent.
    c.ws.send(Message::Ping(Bytes::from_static(b"end")))
        .expect("send ping");
    let (pong, texts) = c.read_pong();
    assert_eq!(&pong[..], b"end");
    assert!(texts.is_empty(), "one pong per ping, no more: {texts:?}");
}

#[test]
fn websocket_ping_gets_a_pong_with_the_same_payload() {
    let server = Server::start("ping-frame");
    let mut c = server.login(1, "app");
    for payload in [
        &b"hello"[..],
        &b""[..],
        &[0u8, 1, 2, 255][..],
        &[b'x'; 125][..],
    ] {
        c.ws.send(Message::Ping(Bytes::copy_from_slice(payload)))
            .expect("send ping");
        let (pong, texts) = c.read_pong();
        assert_eq!(&pong[..], payload, "pong echoes the ping's payload");
        assert!(
            texts.is_empty(),
            "a ping frame is not answered with text: {texts:?}"
        );
    }
    // The connection is still fine for text afterwards.
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}));
}
