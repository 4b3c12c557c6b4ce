//! A UDP push is carried out only from an address of `udpsocket_group` with its `sk`; every
//! refusal (401, 400, 413) delivers nothing (PROTOCOL.md section 4).
mod common;
use common::*;
use serde_json::{json, Value};

fn refused(reply: &Value, code: u16, what: &str) {
    assert_eq!(reply["code"], code, "{what}: {reply}");
    assert!(
        reply["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: a message says why: {reply}"
    );
    assert!(
        reply.get("delivered").is_none_or(|d| d == 0),
        "{what}: {reply}"
    );
}

fn push_to(uid: &str, text: &str) -> Value {
    json!({"to_uid": uid, "type": "chat", "uid": "9", "content": {"type": "text", "value": text}})
}

#[test]
fn a_wrong_sk_is_refused_and_delivers_nothing() {
    let server = Server::start("udp-auth-sk");
    let mut c = server.login(1, "app");
    let datagram =
        json!({"sk": "not-the-secret", "means": "to_uid", "data": push_to("1", "forged")});
    refused(
        &server.udp(datagram.to_string().as_bytes()),
        401,
        "wrong sk",
    );
    let datagram =
        json!({"sk": format!("{SECRET}x"), "means": "broadcast", "data": {"content": "forged"}});
    refused(
        &server.udp(datagram.to_string().as_bytes()),
        401,
        "sk with a suffix",
    );
    let datagram = json!({"sk": 123, "means": "broadcast", "data": {"content": "forged"}});
    refused(
        &server.udp(datagram.to_string().as_bytes()),
        401,
        "sk not a string",
    );
    c.expect_nothing_queued();
    // The same push with the right sk goes through.
    let reply = server.push("to_uid", push_to("1", "genuine"));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(c.recv()["content"]["value"], "genuine");
}

#[test]
fn a_missing_sk_is_refused() {
    let server = Server::start("udp-auth-nosk");
    let mut c = server.login(1, "app");
    let datagram = json!({"means": "to_uid", "data": push_to("1", "forged")});
    refused(&server.udp(datagram.to_string().as_bytes()), 401, "no sk");
    let datagram = json!({"means": "kick", "data": {"uid": "1"}});
    refused(
        &server.udp(datagram.to_string().as_bytes()),
        401,
        "kick without sk",
    );
    c.expect_nothing_queued();
}

/// Starts a server whose only push peer is 127.0.0.2. The harness's readiness check asks
/// `/api/stats` from 127.0.0.1, which this server refuses, so readiness is `/healthz` here.
fn start_for_peer_127_0_0_2() -> Server {
    let mut server = ServerBuilder::new("udp-auth-ip")
        .push_peers(&[("127.0.0.2", SECRET)])
        .prepare()
        .launch();
    let port = server.http_port;
    wait_for("the server to answer /healthz", || {
        server.assert_not_exited();
        http_request_opt(port, "GET", "/healthz", &[], b"").filter(|(s, _)| *s == 200)
    });
    server
}

/// Logs in through the demo helper of the WebSocket port (on while the server is on loopback),
/// which needs no push peer.
fn demo_login(server: &Server, uid: u64) -> Client {
    let (status, body) = http_request_opt(
        server.ws_port,
        "GET",
        &format!("/demo/login?uid={uid}&source=app"),
        &[],
        b"",
    )
    .expect("demo login answer");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    let token = body["access_token"].as_str().expect("access_token");
    let mut c = server.connect(token, None);
    let login = c.recv();
    assert_eq!(login["code"], 200, "{login}");
    c
}

#[test]
fn only_addresses_of_the_push_group_may_push() {
    let server = start_for_peer_127_0_0_2();
    let mut c = demo_login(&server, 5);
    let datagram = json!({"sk": SECRET, "means": "to_uid", "data": push_to("5", "from 127.0.0.1")})
        .to_string();
    refused(
        &udp_request("127.0.0.1", server.udp_port, datagram.as_bytes()),
        401,
        "address not in udpsocket_group",
    );
    c.expect_nothing_queued();

    let datagram = json!({"sk": SECRET, "means": "to_uid", "data": push_to("5", "from 127.0.0.2")})
        .to_string();
    let reply = udp_request("127.0.0.2", server.udp_port, datagram.as_bytes());
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["delivered"], 1, "{reply}");
    assert_eq!(c.recv()["content"]["value"], "from 127.0.0.2");
    c.expect_nothing_queued();

    // The HTTP API applies the same rule: the right sk from 127.0.0.1 is refused.
    let (status, body) = server.http(
        "GET",
        &format!("/chat/send?to_uid=5&content=x&sk={SECRET}"),
        &[],
        b"",
    );
    assert_eq!(status, 401, "{body}");
    let body = json!({"sk": SECRET, "means": "to_uid", "data": push_to("5", "over http")});
    let (status, reply) = server.http("POST", "/api/push", &[], body.to_string().as_bytes());
    assert_eq!(status, 401, "{reply}");
    let login =
        json!({"sk": SECRET, "uid": "5", "source": "pc", "token": "t5", "expires": far_future()});
    let (status, reply) = server.http("POST", "/api/login", &[], login.to_string().as_bytes());
    assert_eq!(status, 401, "{reply}");
    c.expect_nothing_queued();
}

#[test]
fn malformed_requests_are_refused_with_400() {
    let server = Server::start("udp-auth-400");
    let mut c = server.login(1, "app");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed JSON",
            br#"{"sk":"test-secret","means":"to_uid","data":{"to_uid":"1""#.to_vec(),
        ),
        ("not JSON at all", b"hello there".to_vec()),
        ("not UTF-8", vec![0xff, 0xfe, b'{', 0x80]),
        (
            "a JSON list",
            json!([SECRET, "to_uid"]).to_string().into_bytes(),
        ),
        ("a JSON string", json!("to_uid").to_string().into_bytes()),
        ("a JSON number", b"5".to_vec()),
        (
            "unknown means",
            json!({"sk": SECRET, "means": "to_everyone", "data": push_to("1", "x")})
                .to_string()
                .into_bytes(),
        ),
        (
            "means missing",
            json!({"sk": SECRET, "data": push_to("1", "x")})
                .to_string()
                .into_bytes(),
        ),
        (
            "to_uid not a uid",
            json!({"sk": SECRET, "means": "to_uid", "data": push_to("abc", "x")})
                .to_string()
                .into_bytes(),
        ),
        (
            "to_uid negative",
            json!({"sk": SECRET, "means": "to_uid", "data": push_to("-1", "x")})
                .to_string()
                .into_bytes(),
        ),
        (
            "to_uid missing",
            json!({"sk": SECRET, "means": "to_uid", "data": {"content": "x"}})
                .to_string()
                .into_bytes(),
        ),
        (
            "data not an object",
            json!({"sk": SECRET, "means": "to_uid", "data": "to_uid=1"})
                .to_string()
                .into_bytes(),
        ),
        (
            "to_uids not a list",
            json!({"sk": SECRET, "means": "to_uids", "data": {"to_uids": "1"}})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (what, datagram) in cases {
        refused(&server.udp(&datagram), 400, what);
    }
    c.expect_nothing_queued();
}

#[test]
fn a_datagram_over_max_message_size_is_refused_with_413() {
    let server = ServerBuilder::new("udp-auth-413")
        .set("max_message_size", "1024")
        .start();
    let mut c = server.login(1, "app");
    let bare = json!({"sk": SECRET, "means": "to_uid", "data": push_to("1", "")});
    let bare_len = bare.to_string().len();
    let datagram = |size: usize| {
        let mut d = bare.clone();
        let pad = size - bare_len;
        d["data"]["content"]["value"] = json!("p".repeat(pad));
        let text = d.to_string();
        assert_eq!(text.len(), size);
        text
    };
    refused(&server.udp(datagram(2000).as_bytes()), 413, "2000 bytes");
    refused(&server.udp(datagram(1025).as_bytes()), 413, "1025 bytes");
    c.expect_nothing_queued();
    // Under the limit the same push is carried out.
    let reply = server.udp(datagram(1000).as_bytes());
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["delivered"], 1, "{reply}");
    assert_eq!(
        c.recv()["content"]["value"].as_str().map(str::len),
        Some(1000 - bare_len)
    );
}
