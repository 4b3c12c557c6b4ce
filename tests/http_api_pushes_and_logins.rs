//! The HTTP API (PROTOCOL.md sections 1 and 5): `/chat/send`, `/api/push`, `/api/login`,
//! `/api/online`, `/api/stats` and `/healthz`, their authentication and their statuses.
mod common;
use common::*;
use serde_json::{json, Value};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Asserts a successful delivery body and returns its id.
fn delivered(status: u16, body: &str, n: u64) -> String {
    assert_eq!(status, 200, "{body}");
    let v = body_json(body);
    assert_eq!(v["code"], 0, "{body}");
    assert_eq!(v["msg"], "ok", "{body}");
    assert_eq!(v["delivered"], n, "{body}");
    assert_eq!(v["onLine"], u8::from(n > 0), "{body}");
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id is a string: {body}"));
    assert!(id.parse::<u64>().is_ok(), "id is decimal: {body}");
    id.to_string()
}

/// The frame `/chat/send` delivers, with the server's id and time.
fn chat_frame(got: &Value, to_uid: &str, text: &str, id: &str) -> Value {
    let time = got["time"]
        .as_u64()
        .unwrap_or_else(|| panic!("time is a number: {got}"));
    assert!(time > 1_600_000_000, "{got}");
    json!({"type": "chat", "to_uid": to_uid, "uid": "0", "content": {"type": "text", "value": text}, "id": id, "time": time})
}

fn refused(status: u16, body: &str, code: u16) {
    assert_eq!(status, code, "{body}");
    let v = body_json(body);
    assert_eq!(v["code"], code, "{body}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[test]
fn chat_send_by_get_delivers_a_chat_frame() {
    let server = Server::start("http-chat-get");
    let mut c = server.login(5, "app");
    let (status, body) = server.http(
        "GET",
        &format!("/chat/send?to_uid=5&content=hello&sk={SECRET}"),
        &[],
        b"",
    );
    let id = delivered(status, &body, 1);
    let got = c.recv();
    assert_eq!(got, chat_frame(&got, "5", "hello", &id));
    c.expect_nothing_queued();
}

#[test]
fn chat_send_decodes_percent_encoding_and_accepts_a_form_body() {
    let server = Server::start("http-chat-form");
    let mut c = server.login(6, "pc");

    let (status, body) = server.http(
        "GET",
        &format!("/chat/send?to_uid=6&content=h%C3%A9llo%20w&sk={SECRET}"),
        &[],
        b"",
    );
    let id = delivered(status, &body, 1);
    let got = c.recv();
    assert_eq!(got, chat_frame(&got, "6", "héllo w", &id));

    let form = format!("to_uid=6&content=h%C3%A9llo%20w%26more&sk={SECRET}");
    let (status, body) = server.http("POST", "/chat/send", &[FORM], form.as_bytes());
    let id = delivered(status, &body, 1);
    let got = c.recv();
    assert_eq!(got, chat_frame(&got, "6", "héllo w&more", &id));

    // sk as a bearer token, the rest in the form.
    let auth = bearer();
    let (status, body) = server.http(
        "POST",
        "/chat/send",
        &[FORM, ("Authorization", &auth)],
        b"to_uid=6&content=third",
    );
    let id = delivered(status, &body, 1);
    let got = c.recv();
    assert_eq!(got, chat_frame(&got, "6", "third", &id));
    c.expect_nothing_queued();
}

#[test]
fn chat_send_to_an_offline_user_is_kept() {
    let server = Server::start("http-chat-offline");
    let (status, body) = server.http(
        "GET",
        &format!("/chat/send?to_uid=8&content=later&sk={SECRET}"),
        &[],
        b"",
    );
    let id = delivered(status, &body, 0);
    let mut c = server.login(8, "app");
    let got = c.recv();
    assert_eq!(got["id"], id, "{got}");
    assert_eq!(got["state"], 0, "{got}");
    assert_eq!(
        got["content"],
        json!({"type": "text", "value": "later"}),
        "{got}"
    );
}

#[test]
fn chat_send_needs_the_sk_and_a_uid() {
    let server = Server::start("http-chat-auth");
    let mut c = server.login(5, "app");
    let (status, body) = server.http("GET", "/chat/send?to_uid=5&content=forged", &[], b"");
    refused(status, &body, 401);
    let (status, body) = server.http(
        "GET",
        "/chat/send?to_uid=5&content=forged&sk=wrong",
        &[],
        b"",
    );
    refused(status, &body, 401);
    let (status, body) = server.http(
        "POST",
        "/chat/send",
        &[FORM],
        b"to_uid=5&content=forged&sk=wrong",
    );
    refused(status, &body, 401);
    let (status, body) = server.http(
        "GET",
        &format!("/chat/send?to_uid=abc&content=x&sk={SECRET}"),
        &[],
        b"",
    );
    refused(status, &body, 400);
    let (status, body) = server.http(
        "GET",
        &format!("/chat/send?content=x&sk={SECRET}"),
        &[],
        b"",
    );
    refused(status, &body, 400);
    c.expect_nothing_queued();
}

#[test]
fn api_push_has_the_udp_semantics_and_reply() {
    let server = Server::start("http-push");
    let mut app = server.login(1, "app");
    let mut pc = server.login(1, "pc");
    let data = json!({"to_uid": "1", "type": "chat", "uid": "123456", "content": {"type": "text", "value": "over http"}});
    let body = json!({"sk": SECRET, "means": "to_uid", "data": data});
    let (status, reply) = server.http(
        "POST",
        "/api/push",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    let id = delivered(status, &reply, 2);
    for c in [&mut app, &mut pc] {
        let got = c.recv();
        let mut want = data.clone();
        want["id"] = json!(id);
        want["time"] = got["time"].clone();
        assert!(
            got["time"].as_u64().is_some_and(|t| t > 1_600_000_000),
            "{got}"
        );
        assert_eq!(got, want);
    }

    // The sk may come as a bearer token or a parameter instead of a body field.
    let body = json!({"means": "broadcast", "data": {"content": "b1"}}).to_string();
    let auth = bearer();
    let (status, reply) = server.http(
        "POST",
        "/api/push",
        &[("Authorization", &auth)],
        body.as_bytes(),
    );
    delivered(status, &reply, 2);
    let (status, reply) = server.http(
        "POST",
        &format!("/api/push?sk={SECRET}"),
        &[],
        body.as_bytes(),
    );
    delivered(status, &reply, 2);
    for c in [&mut app, &mut pc] {
        assert_eq!(c.recv()["content"], "b1");
        assert_eq!(c.recv()["content"], "b1");
    }

    // online answers with sources.
    let body = json!({"sk": SECRET, "means": "online", "data": {"uid": 1}}).to_string();
    let (status, reply) = server.http("POST", "/api/push", &[], body.as_bytes());
    assert_eq!(status, 200, "{reply}");
    let v = body_json(&reply);
    assert_eq!(v["code"], 0, "{reply}");
    assert_eq!(v["onLine"], 1, "{reply}");
    let mut sources: Vec<&str> = v["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, ["app", "pc"], "{reply}");

    // A datagram-style trailing newline is accepted here too.
    let body = format!(
        "{}\n",
        json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": 1, "content": "nl"}})
    );
    let (status, reply) = server.http("POST", "/api/push", &[], body.as_bytes());
    delivered(status, &reply, 2);
    for c in [&mut app, &mut pc] {
        assert_eq!(c.recv()["content"], "nl");
        c.expect_nothing_queued();
    }
}

#[test]
fn api_push_refusals_have_their_status() {
    let server = ServerBuilder::new("http-push-errors")
        .set("max_message_size", "1024")
        .start();
    let mut c = server.login(1, "app");
    let push = |body: &[u8]| {
        server.http(
            "POST",
            "/api/push",
            &[("Content-Type", "application/json")],
            body,
        )
    };
    let good = json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": "1", "content": "x"}});

    let (status, body) = push(br#"{"sk":"test-secret","means":"to_uid","data":{"to_uid":"1""#);
    refused(status, &body, 400);
    let (status, body) = push(b"[1,2,3]");
    refused(status, &body, 400);
    let (status, body) = push(b"");
    refused(status, &body, 400);
    let (status, body) = push(
        json!({"sk": SECRET, "means": "shout", "data": {"to_uid": "1"}})
            .to_string()
            .as_bytes(),
    );
    refused(status, &body, 400);
    let (status, body) = push(
        json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": "one"}})
            .to_string()
            .as_bytes(),
    );
    refused(status, &body, 400);
    let mut wrong = good.clone();
    wrong["sk"] = json!("wrong");
    let (status, body) = push(wrong.to_string().as_bytes());
    refused(status, &body, 401);
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("sk");
    let (status, body) = push(missing.to_string().as_bytes());
    refused(status, &body, 401);
    let (status, body) = server.http(
        "POST",
        "/api/push",
        &[("Authorization", "Bearer wrong")],
        missing.to_string().as_bytes(),
    );
    refused(status, &body, 401);

    let mut big = good.clone();
    big["data"]["content"] = json!("p".repeat(2000));
    let (status, body) = push(big.to_string().as_bytes());
    refused(status, &body, 413);
    c.expect_nothing_queued();

    let (status, body) = push(good.to_string().as_bytes());
    delivered(status, &body, 1);
    assert_eq!(c.recv()["content"], "x");
}

#[test]
fn api_login_stores_a_token_that_then_logs_in() {
    let server = Server::start("http-login");
    let login = |body: Value| {
        server.http(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let (status, body) = login(
        json!({"sk": SECRET, "uid": "123456", "source": "app", "token": "fe24NDU2341N", "expires": far_future()}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body_json(&body), json!({"code": 0, "msg": "ok"}));
    let mut c = server.connect(
        &wspush::protocol::encode_access_token("fe24NDU2341N", 123_456, "app"),
        None,
    );
    let frame = c.recv();
    assert_eq!(frame["type"], "login", "{frame}");
    assert_eq!(frame["code"], 200, "{frame}");
    assert_eq!(frame["data"]["uid"], "123456", "{frame}");
    assert_eq!(frame["data"]["source"], "app", "{frame}");

    // A numeric uid and a bearer sk work too.
    let auth = bearer();
    let (status, body) = server.http(
        "POST",
        "/api/login",
        &[("Authorization", &auth)],
        json!({"uid": 77, "source": "weixin", "token": "w77", "expires": far_future()})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let mut w = server.connect(
        &wspush::protocol::encode_access_token("w77", 77, "weixin"),
        None,
    );
    assert_eq!(w.recv()["code"], 200);
}

#[test]
fn api_login_refusals_store_nothing() {
    let server = Server::start("http-login-errors");
    let login = |body: Value| server.http("POST", "/api/login", &[], body.to_string().as_bytes());
    let (status, body) =
        login(json!({"sk": SECRET, "uid": "9", "source": "app", "expires": far_future()}));
    refused(status, &body, 400);
    let (status, body) = login(
        json!({"sk": SECRET, "uid": "9", "source": "APP", "token": "t-upper", "expires": far_future()}),
    );
    refused(status, &body, 400);
    let (status, body) = login(
        json!({"sk": SECRET, "uid": "nine", "source": "app", "token": "t-nine", "expires": far_future()}),
    );
    refused(status, &body, 400);
    let (status, body) = login(
        json!({"sk": "wrong", "uid": "9", "source": "app", "token": "t-wrong", "expires": far_future()}),
    );
    refused(status, &body, 401);
    let (status, body) =
        login(json!({"uid": "9", "source": "app", "token": "t-none", "expires": far_future()}));
    refused(status, &body, 401);

    // The refused records were not written: their tokens do not log in.
    for (token, source) in [("t-wrong", "app"), ("t-none", "app"), ("t-upper", "app")] {
        let mut c = server.connect(
            &wspush::protocol::encode_access_token(token, 9, source),
            None,
        );
        let frame = c.recv();
        assert_eq!(frame["type"], "login", "{frame}");
        assert_eq!(frame["code"], 401, "token {token}: {frame}");
        c.expect_close(4001);
    }
}

#[test]
fn api_online_reports_presence_and_sources() {
    let server = Server::start("http-online");
    let _app = server.login(3, "app");
    let (status, body) = server.http("GET", &format!("/api/online?uid=3&sk={SECRET}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body_json(&body),
        json!({"code": 0, "msg": "ok", "onLine": 1, "sources": ["app"]})
    );

    let _pc = server.login(3, "pc");
    let auth = bearer();
    let (status, body) = server.http("GET", "/api/online?uid=3", &[("Authorization", &auth)], b"");
    assert_eq!(status, 200, "{body}");
    let v = body_json(&body);
    let mut sources: Vec<&str> = v["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    sources.sort_unstable();
    assert_eq!(
        (v["onLine"].clone(), sources),
        (json!(1), vec!["app", "pc"]),
        "{body}"
    );

    let (status, body) = server.http("GET", &format!("/api/online?uid=4&sk={SECRET}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body_json(&body),
        json!({"code": 0, "msg": "ok", "onLine": 0, "sources": []})
    );

    let (status, body) = server.http("GET", "/api/online?uid=3", &[], b"");
    refused(status, &body, 401);
}

#[test]
fn healthz_needs_no_auth_and_stats_does() {
    let server = Server::start("http-stats");
    let (status, body) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    body_json(&body);

    let mut a = server.login(1, "app");
    let _a2 = server.login(1, "pc");
    let mut b = server.login(2, "app");
    let before = server.stats();
    for key in ["connections", "online_users", "messages_in", "messages_out"] {
        assert!(before[key].is_u64(), "{key} is a count: {before}");
    }
    assert_eq!(before["connections"], 3, "{before}");
    assert_eq!(before["online_users"], 2, "{before}");
    let workers = before["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("workers: {before}"));
    assert_eq!(workers.len(), 2, "task_worker_num = 2: {before}");
    for w in workers {
        assert!(w["pid"].as_u64().is_some_and(|p| p > 0), "{w}");
        assert!(w["done"].is_u64(), "{w}");
    }

    a.chat(2, "counted");
    assert_eq!(b.recv()["content"]["value"], "counted");
    assert_eq!(a.recv()["type"], "ack");
    let after = server.stats();
    assert!(
        after["messages_in"].as_u64() > before["messages_in"].as_u64(),
        "{before} -> {after}"
    );
    assert!(
        after["messages_out"].as_u64() > before["messages_out"].as_u64(),
        "{before} -> {after}"
    );

    let (status, body) = server.http("GET", "/api/stats", &[], b"");
    refused(status, &body, 401);
    let (status, body) = server.http("GET", "/api/stats?sk=wrong", &[], b"");
    refused(status, &body, 401);
    let (status, body) = server.http("GET", &format!("/api/stats?sk={SECRET}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body_json(&body)["workers"].is_array(), "{body}");
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = Server::start("http-404");
    let auth = bearer();
    let h = [("Authorization", auth.as_str())];
    let (status, body) = server.http("GET", "/nope", &h, b"");
    refused(status, &body, 404);
    let (status, body) = server.http("GET", "/api/pushes", &h, b"");
    refused(status, &body, 404);
    for (method, path) in [
        ("DELETE", "/api/push"),
        ("GET", "/api/push"),
        ("PUT", "/api/login"),
        ("POST", "/api/online"),
        ("DELETE", "/chat/send"),
    ] {
        let (status, body) = server.http(method, path, &h, b"");
        assert_eq!(status, 405, "{method} {path}: {body}");
        refused(status, &body, 405);
    }
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    // RFC 9110 section 11.1: the authentication scheme is case-insensitive.
    let server = Server::start("http-bearer-case");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {SECRET}");
        let (status, body) =
            server.http("GET", "/api/online?uid=1", &[("Authorization", &auth)], b"");
        assert_eq!(status, 200, "Authorization: {scheme} ...: {body}");
    }
}
