//! A chat frame reaches every connection of `to_uid`, stamped by the server, and the sender
//! gets an ack; a message to an offline user is kept and handed over at its next login.
mod common;
use common::*;
use serde_json::json;

#[test]
fn chat_reaches_the_recipient_with_id_time_and_state() {
    let server = Server::start("chat");
    let mut alice = server.login(1001, "app");
    let mut bob = server.login(1002, "pc");
    alice.chat(1002, "hello");
    let got = bob.recv();
    assert_eq!(got["type"], "chat");
    assert_eq!(got["uid"], "1001", "the sender comes from the login");
    assert_eq!(got["to_uid"], "1002");
    assert_eq!(got["state"], 1);
    assert_eq!(got["content"], json!({"type": "text", "value": "hello"}));
    assert!(got["time"].as_u64().is_some_and(|t| t > 1_600_000_000));
    let id: u64 = got["id"]
        .as_str()
        .expect("id is a string")
        .parse()
        .expect("decimal");
    let ack = alice.recv();
    assert_eq!(
        ack,
        json!({"type": "ack", "id": id.to_string(), "to_uid": "1002", "state": 1})
    );
}

#[test]
fn sender_uid_in_the_frame_is_ignored() {
    let server = Server::start("chat-spoof");
    let mut alice = server.login(1, "app");
    let mut bob = server.login(2, "app");
    alice.send(&json!({"to_uid": "2", "uid": "999", "type": "chat", "content": {"type": "text", "value": "x"}}));
    assert_eq!(bob.recv()["uid"], "1");
}

#[test]
fn ids_increase() {
    let server = Server::start("chat-ids");
    let mut alice = server.login(1, "app");
    let mut bob = server.login(2, "app");
    let mut last = 0u64;
    for i in 0..20 {
        alice.chat(2, &format!("m{i}"));
        let got = bob.recv();
        assert_eq!(got["content"]["value"], format!("m{i}"), "in order");
        let id: u64 = got["id"].as_str().expect("id").parse().expect("decimal");
        assert!(id > last);
        last = id;
    }
}

#[test]
fn every_connection_of_the_recipient_receives_it() {
    let server = Server::start("chat-multi");
    let mut alice = server.login(1, "app");
    let mut bob_app = server.login(2, "app");
    let mut bob_pc = server.login(2, "pc");
    alice.chat(2, "both");
    assert_eq!(bob_app.recv()["content"]["value"], "both");
    assert_eq!(bob_pc.recv()["content"]["value"], "both");
}

#[test]
fn offline_messages_are_kept_and_delivered_in_order_at_login() {
    let server = Server::start("chat-offline");
    let mut alice = server.login(1, "app");
    for i in 0..5 {
        alice.chat(77, &format!("while away {i}"));
        let ack = alice.recv();
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["state"], 0, "stored for later");
    }
    let mut bob = server.login(77, "app");
    for i in 0..5 {
        let got = bob.recv();
        assert_eq!(got["content"]["value"], format!("while away {i}"));
        assert_eq!(got["state"], 0);
        assert_eq!(got["uid"], "1");
    }
    // Delivered once: a second login finds nothing more. Stored messages would come straight
    // after the login frame, so the pong being next proves there are none.
    bob.close();
    let mut again = server.login(77, "app");
    again.send_text("ping");
    assert_eq!(again.recv(), json!({"type": "pong"}));
}

#[test]
fn a_large_message_arrives_intact() {
    // Far larger than the per-connection read chunk: read in many pieces, delivered whole.
    let server = Server::start("chat-large");
    let mut alice = server.login(1, "app");
    let mut bob = server.login(2, "app");
    let text: String = (0..60_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    alice.chat(2, &text);
    let got = bob.recv();
    assert_eq!(
        got["content"]["value"].as_str().map(str::len),
        Some(text.len())
    );
    assert_eq!(got["content"]["value"], text.as_str());
    assert_eq!(alice.recv()["type"], "ack");
}

#[test]
fn a_chat_sent_together_with_the_close_is_still_delivered() {
    // The soak test found it: a chat and the Close frame in one read; the chat was dropped.
    let server = Server::start("chat-then-close");
    let mut alice = server.login(1, "app");
    let mut bob = server.login(2, "app");
    let chat =
        json!({"to_uid": "2", "type": "chat", "content": {"type": "text", "value": "last words"}});
    alice
        .ws
        .write(tungstenite::Message::text(chat.to_string()))
        .expect("queue the chat");
    alice.ws.close(None).expect("queue the close");
    alice.ws.flush().expect("one write for both");
    assert_eq!(bob.recv()["content"]["value"], "last words");
}
