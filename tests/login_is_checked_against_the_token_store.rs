//! A connection logs in with an access_token that names (token, uid, source); the server checks
//! it against the record written through `POST /api/login`. Success is one login frame with a
//! connection id never used before; every kind of failure is one 401 frame, then close 4001.
mod common;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use wspush::protocol::encode_access_token;

fn unauthorized() -> Value {
    json!({"type": "login", "code": 401, "message": "unauthorized", "data": []})
}

/// Connects to `url` and asserts the connection is refused: exactly `frame`, then close 4001.
fn assert_refused(url: &str, frame: Value) {
    let mut c = Client::connect(url);
    let frames = c.expect_close(4001);
    assert_eq!(frames, vec![frame], "one refusal frame before the close");
}

/// Connects with `access_token` and asserts the login succeeds as (uid, source); returns fd.
fn assert_logs_in(server: &Server, access_token: &str, uid: u64, source: &str) -> u64 {
    let mut c = server.connect(access_token, None);
    let login = c.recv();
    let fd = login["data"]["fd"]
        .as_u64()
        .unwrap_or_else(|| panic!("fd is a number: {login}"));
    assert_eq!(
        login,
        json!({"type": "login", "code": 200, "message": "ok",
               "data": {"uid": uid.to_string(), "source": source, "fd": fd}})
    );
    // Really online: a ping is answered instead of a close.
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}));
    fd
}

#[test]
fn success_frame_names_uid_source_and_a_fresh_fd() {
    let server = Server::start("login-ok");
    let mut fds = Vec::new();
    let mut clients = Vec::new();
    for uid in 1..=4u64 {
        let source = if uid % 2 == 0 { "pc" } else { "app" };
        let token = format!("secret-{uid}");
        server.register(uid, source, &token, far_future());
        let mut c = server.connect(&encode_access_token(&token, uid, source), None);
        let login = c.recv();
        let fd = login["data"]["fd"]
            .as_u64()
            .unwrap_or_else(|| panic!("fd is a number: {login}"));
        assert_eq!(
            login,
            json!({"type": "login", "code": 200, "message": "ok",
                   "data": {"uid": uid.to_string(), "source": source, "fd": fd}})
        );
        fds.push(fd);
        clients.push(c);
    }
    // Closed connections do not give their ids back: later ones are always new and larger.
    for c in clients {
        c.close();
    }
    for uid in 1..=3u64 {
        let c = server.login(uid, "app");
        fds.push(c.fd);
        c.close();
    }
    assert!(
        fds.windows(2).all(|w| w[0] < w[1]),
        "fds distinct and increasing: {fds:?}"
    );
}

#[test]
fn undecodable_token_is_refused() {
    let server = Server::start("login-garbage");
    assert_refused(&server.ws_url("!!!"), unauthorized());
}

#[test]
fn missing_access_token_is_refused() {
    let server = Server::start("login-missing");
    assert_refused(
        &format!("ws://127.0.0.1:{}/", server.ws_port),
        unauthorized(),
    );
}

#[test]
fn unknown_uid_is_refused() {
    let server = Server::start("login-unknown-uid");
    server.register(1, "app", "tok", far_future());
    assert_refused(
        &server.ws_url(&encode_access_token("tok", 2, "app")),
        unauthorized(),
    );
}

#[test]
fn wrong_token_is_refused() {
    let server = Server::start("login-wrong-token");
    server.register(1, "app", "right", far_future());
    assert_refused(
        &server.ws_url(&encode_access_token("wrong", 1, "app")),
        unauthorized(),
    );
    // The record itself is fine.
    assert_logs_in(&server, &encode_access_token("right", 1, "app"), 1, "app");
}

#[test]
fn source_without_a_record_is_refused() {
    let server = Server::start("login-other-source");
    server.register(1, "app", "tok", far_future());
    assert_refused(
        &server.ws_url(&encode_access_token("tok", 1, "pc")),
        unauthorized(),
    );
    assert_logs_in(&server, &encode_access_token("tok", 1, "app"), 1, "app");
}

#[test]
fn expired_token_is_refused_as_expired() {
    let server = Server::start("login-expired");
    let past = wspush::ids::unix_now() - 60;
    server.register(1, "app", "old", past);
    assert_refused(
        &server.ws_url(&encode_access_token("old", 1, "app")),
        json!({"type": "login", "code": 401, "message": "expired", "data": []}),
    );
    // Renewing the record lets the same token in.
    server.register(1, "app", "old", far_future());
    assert_logs_in(&server, &encode_access_token("old", 1, "app"), 1, "app");
}

#[test]
fn plain_unpadded_base64url_is_accepted() {
    let server = Server::start("login-base64url");
    // Chosen so that its encoding uses both URL-safe characters and would need padding.
    let token = "a?b>c~~";
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{token}.31.app"));
    assert!(
        raw.contains('-') || raw.contains('_'),
        "precondition: URL-safe characters in {raw}"
    );
    let padded = base64::engine::general_purpose::STANDARD.encode(format!("{token}.31.app"));
    assert!(
        padded.ends_with('='),
        "precondition: standard form is padded: {padded}"
    );
    server.register(31, "app", token, far_future());
    assert_logs_in(&server, &raw, 31, "app");
}

#[test]
fn original_uid_token_source_layout_is_selectable() {
    let server = ServerBuilder::new("login-layout")
        .set("access_token_layout", "\"uid.token.source\"")
        .start();
    server.register(42, "app", "tk", far_future());
    let original = base64::engine::general_purpose::STANDARD
        .encode("42.tk.app")
        .replace('+', "-")
        .replace('/', "_")
        .replace('=', ",");
    assert_logs_in(&server, &original, 42, "app");
    // The default layout is not read in this mode.
    assert_refused(
        &server.ws_url(&encode_access_token("tk", 42, "app")),
        unauthorized(),
    );
}

#[test]
fn uid_may_be_a_number_in_the_login_record() {
    let server = Server::start("login-numeric-uid");
    let body = json!({"sk": SECRET, "uid": 555, "source": "weixin", "token": "n1", "expires": far_future()});
    let (status, reply) = server.http("POST", "/api/login", &[], body.to_string().as_bytes());
    assert_eq!(status, 200, "{reply}");
    assert_logs_in(
        &server,
        &encode_access_token("n1", 555, "weixin"),
        555,
        "weixin",
    );
}
