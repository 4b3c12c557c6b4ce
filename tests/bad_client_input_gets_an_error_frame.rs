//! Bad input from a logged-in client gets `{"type":"error","code":400,"message":..}` and the
//! connection stays open; nothing is delivered. A message over twice `max_message_size` breaks
//! the frame limit and closes the connection with 1009.
mod common;
use common::*;
use serde_json::{json, Value};
use tungstenite::{Bytes, Message};

const MAX: usize = 1000;

fn start(tag: &str) -> Server {
    ServerBuilder::new(tag)
        .set("max_message_size", &MAX.to_string())
        .start()
}

/// The next frame must be a 400 error; returns its message. Then proves the connection is
/// still open (and processed everything before) with a ping round trip.
fn expect_error_then_open(c: &mut Client) -> String {
    let got = c.recv();
    assert_eq!(got["type"], "error", "{got}");
    assert_eq!(got["code"], 400, "{got}");
    let message = got["message"]
        .as_str()
        .unwrap_or_else(|| panic!("message is a string: {got}"))
        .to_string();
    assert!(
        !message.is_empty(),
        "the message says what was wrong: {got}"
    );
    c.send_text("ping");
    assert_eq!(
        c.recv(),
        json!({"type": "pong"}),
        "the connection stays open after {got}"
    );
    message
}

/// Sends `text`, expects the error, and checks that `bystander` (uid 2) got nothing from it.
fn refused(c: &mut Client, bystander: &mut Client, text: &str) -> String {
    c.send_text(text);
    let message = expect_error_then_open(c);
    bystander.send_text("ping");
    assert_eq!(
        bystander.recv(),
        json!({"type": "pong"}),
        "nothing was delivered for {text}"
    );
    message
}

fn chat_to_2(value: &str) -> Value {
    json!({"to_uid": "2", "type": "chat", "content": {"type": "text", "value": value}})
}

#[test]
fn not_json() {
    let server = start("bad-not-json");
    let (mut c, mut b) = (server.login(1, "app"), server.login(2, "app"));
    refused(&mut c, &mut b, "hello there");
    refused(&mut c, &mut b, "{\"to_uid\":\"2\",");
}

#[test]
fn json_without_to_uid() {
    let server = start("bad-no-to-uid");
    let (mut c, mut b) = (server.login(1, "app"), server.login(2, "app"));
    let m = refused(
        &mut c,
        &mut b,
        &json!({"type": "chat", "content": {"type": "text", "value": "x"}}).to_string(),
    );
    assert!(m.contains("to_uid"), "{m}");
}

#[test]
fn to_uid_that_is_not_a_uid() {
    let server = start("bad-to-uid");
    let (mut c, mut b) = (server.login(1, "app"), server.login(2, "app"));
    for to_uid in [
        json!("bob"),
        json!("-2"),
        json!(""),
        json!(2.5),
        json!(null),
        json!(["2"]),
    ] {
        let frame =
            json!({"to_uid": to_uid, "type": "chat", "content": {"type": "text", "value": "x"}});
        let m = refused(&mut c, &mut b, &frame.to_string());
        assert!(m.contains("to_uid"), "{m}");
    }
}

#[test]
fn unknown_type() {
    let server = start("bad-type");
    let (mut c, mut b) = (server.login(1, "app"), server.login(2, "app"));
    let frame = json!({"to_uid": "2", "type": "bogus", "content": {"type": "text", "value": "x"}});
    let m = refused(&mut c, &mut b, &frame.to_string());
    assert!(m.contains("bogus"), "{m}");
}

#[test]
fn missing_content() {
    let server = start("bad-content");
    let (mut c, mut b) = (server.login(1, "app"), server.login(2, "app"));
    let m = refused(
        &mut c,
        &mut b,
        &json!({"to_uid": "2", "type": "chat"}).to_string(),
    );
    assert!(m.contains("content"), "{m}");
}

#[test]
fn message_over_max_message_size_but_under_twice_it() {
    let server = start("bad-too-long");
    let (mut c, mut b) = (server.login(1, "app"), server.login(2, "app"));
    let text = chat_to_2(&"x".repeat(1500)).to_string();
    assert!(
        text.len() > MAX && text.len() < 2 * MAX,
        "precondition: {}",
        text.len()
    );
    refused(&mut c, &mut b, &text);
    // Just under the maximum still goes through.
    let fits = chat_to_2(&"y".repeat(MAX - 100)).to_string();
    assert!(fits.len() <= MAX, "precondition: {}", fits.len());
    c.send_text(&fits);
    assert_eq!(
        b.recv()["content"]["value"].as_str().map(str::len),
        Some(MAX - 100)
    );
    assert_eq!(c.recv()["type"], "ack");
}

#[test]
fn binary_frame() {
    let server = start("bad-binary");
    let (mut c, mut b) = (server.login(1, "app"), server.login(2, "app"));
    let frame = chat_to_2("as binary").to_string();
    c.ws.send(Message::Binary(Bytes::from(frame.into_bytes())))
        .expect("send binary");
    expect_error_then_open(&mut c);
    b.send_text("ping");
    assert_eq!(
        b.recv(),
        json!({"type": "pong"}),
        "nothing was delivered for the binary frame"
    );
}

#[test]
fn message_over_twice_max_message_size_closes_with_1009() {
    let server = start("bad-way-too-long");
    let mut c = server.login(1, "app");
    let mut b = server.login(2, "app");
    let text = chat_to_2(&"z".repeat(2 * MAX + 100)).to_string();
    c.send_text(&text);
    let frames = c.expect_close(1009);
    assert!(
        frames.is_empty(),
        "closed without an error frame first: {frames:?}"
    );
    b.send_text("ping");
    assert_eq!(b.recv(), json!({"type": "pong"}), "nothing was delivered");
}
