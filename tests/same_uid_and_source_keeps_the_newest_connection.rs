//! A second login of the same uid and source replaces the first: the older connection is told
//! (441) and closed with 4002, or only closed when both name the same device. Other sources of
//! the uid are left alone, and the displaced connection going away never unregisters the newer.
mod common;
use common::*;
use serde_json::{json, Value};
use wspush::protocol::encode_access_token;

fn logged_in_elsewhere() -> Value {
    json!({"type": "login", "code": 441, "message": "logged in elsewhere", "data": []})
}

/// Sorted sources of `uid` as the UDP `online` query reports them, with `onLine`.
fn online(server: &Server, uid: u64) -> (Value, Vec<String>) {
    let reply = server.push("online", json!({"uid": uid.to_string()}));
    assert_eq!(reply["code"], 0, "{reply}");
    (reply["onLine"].clone(), sorted_sources(&reply))
}

/// Connects with an already registered token and device id, and reads the login frame.
fn connect_logged_in(
    server: &Server,
    token: &str,
    uid: u64,
    source: &str,
    device: Option<&str>,
) -> Client {
    let mut c = server.connect(&encode_access_token(token, uid, source), device);
    c.expect_login();
    c
}

/// `sender` chats to `to_uid`; `recipient` gets it and the ack says it was delivered live.
fn chat_arrives(sender: &mut Client, to_uid: u64, recipient: &mut Client, text: &str) {
    sender.chat(to_uid, text);
    let got = recipient.recv();
    assert_eq!(got["type"], "chat", "{got}");
    assert_eq!(got["content"]["value"], text, "{got}");
    let ack = sender.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["state"], 1, "delivered live: {ack}");
}

#[test]
fn older_connection_is_told_and_closed_with_4002() {
    let server = Server::start("kick-notice");
    let mut old = server.login(7, "app");
    let mut new = server.login(7, "app");
    assert_ne!(old.fd, new.fd);
    let frames = old.expect_close(4002);
    assert_eq!(
        frames,
        vec![logged_in_elsewhere()],
        "one notice, then the close"
    );
    let mut sender = server.login(8, "app");
    chat_arrives(&mut sender, 7, &mut new, "to the newest");
}

#[test]
fn different_devices_get_the_notice_too() {
    let server = Server::start("kick-other-device");
    server.register(7, "app", "tok", far_future());
    let mut old = connect_logged_in(&server, "tok", 7, "app", Some("phone-a"));
    let _new = connect_logged_in(&server, "tok", 7, "app", Some("phone-b"));
    assert_eq!(old.expect_close(4002), vec![logged_in_elsewhere()]);
}

#[test]
fn same_device_reconnect_closes_the_older_without_a_notice() {
    let server = Server::start("kick-same-device");
    server.register(7, "app", "tok", far_future());
    let mut old = connect_logged_in(&server, "tok", 7, "app", Some("dev1"));
    let mut new = connect_logged_in(&server, "tok", 7, "app", Some("dev1"));
    let frames = old.expect_close(4002);
    assert!(
        frames.is_empty(),
        "no 441 notice for a reconnect of the same device: {frames:?}"
    );
    let mut sender = server.login(8, "app");
    chat_arrives(&mut sender, 7, &mut new, "same device");
}

#[test]
fn different_sources_coexist_and_both_receive() {
    let server = Server::start("kick-sources");
    let mut app = server.login(5, "app");
    let mut pc = server.login(5, "pc");
    assert_eq!(
        online(&server, 5),
        (json!(1), vec!["app".to_string(), "pc".to_string()])
    );
    let mut sender = server.login(6, "app");
    sender.chat(5, "both");
    assert_eq!(app.recv()["content"]["value"], "both");
    assert_eq!(pc.recv()["content"]["value"], "both");
    assert_eq!(sender.recv()["type"], "ack");
    // Neither was displaced: each still answers.
    for c in [&mut app, &mut pc] {
        c.send_text("ping");
        assert_eq!(c.recv(), json!({"type": "pong"}));
    }
}

#[test]
fn the_older_closing_after_the_fact_keeps_the_newer_registered() {
    let server = Server::start("kick-late-close");
    let mut old = server.login(9, "app");
    let mut pc = server.login(9, "pc");
    let mut new = server.login(9, "app");
    // The older one completes the closing handshake only now, after the newer is registered.
    old.expect_close(4002);
    drop(old);
    let mut sender = server.login(10, "app");
    wait_for("the displaced connection to be gone", || {
        (server.stats()["connections"] == 3).then_some(())
    });
    assert_eq!(
        online(&server, 9),
        (json!(1), vec!["app".to_string(), "pc".to_string()])
    );
    sender.chat(9, "after the late close");
    assert_eq!(new.recv()["content"]["value"], "after the late close");
    assert_eq!(pc.recv()["content"]["value"], "after the late close");
    let ack = sender.recv();
    assert_eq!(ack["state"], 1, "{ack}");
}

#[test]
fn the_older_never_answering_its_close_keeps_the_newer_registered() {
    let server = Server::start("kick-silent-old");
    let old = server.login(9, "app");
    let mut new = server.login(9, "app");
    let mut sender = server.login(10, "app");
    // The older client never reads nor answers the close: the server gives up on it by itself.
    wait_for("the server to drop the displaced connection", || {
        (server.stats()["connections"] == 2).then_some(())
    });
    assert_eq!(online(&server, 9), (json!(1), vec!["app".to_string()]));
    chat_arrives(&mut sender, 9, &mut new, "still here");
    drop(old);
}

#[test]
fn the_newest_leaving_takes_the_uid_offline() {
    // The counterpart of the tests above: the `online` query does report a departure.
    let server = Server::start("kick-offline");
    let old = server.login(9, "app");
    let new = server.login(9, "app");
    drop(old);
    new.close();
    wait_for("uid 9 to go offline", || {
        (online(&server, 9) == (json!(0), Vec::new())).then_some(())
    });
}
