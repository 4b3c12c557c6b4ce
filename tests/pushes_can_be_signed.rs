//! Signed pushes: an HMAC-SHA256 with the sender's secret over a timestamp and the request, so
//! the secret never travels; good within the allowed clock skew, and only once.
mod common;
use common::*;
use serde_json::{json, Value};
use wspush::ids::unix_now;
use wspush::protocol::signature::sign;

fn push_body(to_uid: u64, text: &str) -> String {
    json!({"means": "to_uid", "data": {"to_uid": to_uid.to_string(), "type": "chat", "content": {"type": "text", "value": text}}})
        .to_string()
}

fn signed_datagram(secret: &str, ts: u64, body: &str) -> Vec<u8> {
    format!(
        "sig:v1:{ts}:{}\n{body}",
        sign(secret, ts, body.as_bytes()).expect("signed")
    )
    .into_bytes()
}

/// Asserts nothing was delivered to `c`: a pong straight after proves no frame was queued.
fn nothing_for(c: &mut Client) {
    c.send_text("ping");
    assert_eq!(
        c.recv(),
        json!({"type": "pong"}),
        "nothing delivered before the pong"
    );
}

#[test]
fn a_signed_datagram_is_delivered_without_any_sk() {
    let server = Server::start("signed-udp");
    let mut c = server.login(7, "app");
    let body = push_body(7, "signed");
    assert!(!body.contains(SECRET));
    let reply = server.udp(&signed_datagram(SECRET, unix_now(), &body));
    assert_eq!(
        (reply["code"].clone(), reply["delivered"].clone()),
        (json!(0), json!(1)),
        "{reply}"
    );
    assert_eq!(c.recv()["content"]["value"], "signed");
}

#[test]
fn bad_stale_replayed_and_malformed_signatures_are_refused() {
    let server = Server::start("signed-udp-bad");
    let mut c = server.login(7, "app");
    let now = unix_now();
    let body = push_body(7, "x");
    let refused = |datagram: &[u8], why: &str| {
        let reply = server.udp(datagram);
        assert_eq!(reply["code"], 401, "{why}: {reply}");
        reply
    };
    refused(&signed_datagram("not-the-secret", now, &body), "wrong key");
    let mut tampered = signed_datagram(SECRET, now, &body);
    let last = tampered.len() - 3;
    tampered[last] = b'Y';
    refused(&tampered, "body changed after signing");
    let stale = refused(&signed_datagram(SECRET, now - 3600, &body), "an hour old");
    assert!(
        stale["msg"].as_str().is_some_and(|m| m.contains("skew")),
        "{stale}"
    );
    refused(b"sig:v1:123:not-hex\n{}", "malformed");
    nothing_for(&mut c);

    let good = signed_datagram(SECRET, now, &push_body(7, "once"));
    assert_eq!(server.udp(&good)["code"], 0);
    assert_eq!(c.recv()["content"]["value"], "once");
    let replay = refused(&good, "the same datagram again");
    assert!(
        replay["msg"]
            .as_str()
            .is_some_and(|m| m.contains("already used")),
        "{replay}"
    );
    nothing_for(&mut c);
}

#[test]
fn when_required_only_signed_pushes_pass() {
    let server = ServerBuilder::new("signed-required")
        .extra("[push]\nrequire_signature = true")
        .start();
    // The login record, written through a signed POST /api/login (no sk anywhere).
    let record =
        json!({"uid": "7", "source": "app", "token": "t7", "expires": far_future()}).to_string();
    let ts = unix_now();
    let sig = sign(SECRET, ts, format!("POST /api/login\n{record}").as_bytes()).expect("signed");
    let ts = ts.to_string();
    let h = [
        ("X-Wspush-Timestamp", ts.as_str()),
        ("X-Wspush-Signature", sig.as_str()),
    ];
    let (status, reply) = server.http("POST", "/api/login", &h, record.as_bytes());
    assert_eq!(status, 200, "{reply}");
    let mut c = server.connect(&wspush::protocol::encode_access_token("t7", 7, "app"), None);
    assert_eq!(c.expect_login()["data"]["uid"], "7");
    let plain = server.push(
        "to_uid",
        json!({"to_uid": "7", "type": "chat", "content": "plain"}),
    );
    assert_eq!(plain["code"], 401, "{plain}");
    assert_eq!(plain["msg"], "signature required");
    let (status, _) = server.http("GET", &format!("/api/online?uid=7&sk={SECRET}"), &[], b"");
    assert_eq!(status, 401, "a plain sk over HTTP is refused too");
    nothing_for(&mut c);
    let reply = server.udp(&signed_datagram(
        SECRET,
        unix_now(),
        &push_body(7, "signed"),
    ));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(c.recv()["content"]["value"], "signed");
}

#[test]
fn a_signature_does_not_open_the_door_to_other_addresses() {
    let server = ServerBuilder::new("signed-ip")
        .push_peers(&[("127.0.0.2", SECRET)])
        .prepare()
        .launch();
    // Not waiting on /api/stats: 127.0.0.1 may not ask. /healthz tells when it serves.
    wait_for("the server to serve", || {
        http_request_opt(server.http_port, "GET", "/healthz", &[], b"").map(|_| ())
    });
    let datagram = signed_datagram(SECRET, unix_now(), &push_body(7, "x"));
    let reply = udp_request("127.0.0.1", server.udp_port, &datagram);
    assert_eq!(reply["code"], 401, "{reply}");
    let reply = udp_request("127.0.0.2", server.udp_port, &datagram);
    assert_eq!(reply["code"], 0, "{reply}");
}

#[test]
fn signed_http_requests_pass_and_cannot_be_replayed_or_altered() {
    let server = Server::start("signed-http");
    let mut c = server.login(7, "app");
    let headers = |ts: u64, method: &str, target: &str, body: &str| {
        let content = format!("{method} {target}\n{body}");
        (
            ts.to_string(),
            sign(SECRET, ts, content.as_bytes()).expect("signed"),
        )
    };
    let body = push_body(7, "via http");
    let (ts, sig) = headers(unix_now(), "POST", "/api/push", &body);
    let h = [
        ("X-Wspush-Timestamp", ts.as_str()),
        ("X-Wspush-Signature", sig.as_str()),
    ];
    let (status, reply) = server.http("POST", "/api/push", &h, body.as_bytes());
    assert_eq!(status, 200, "{reply}");
    assert_eq!(c.recv()["content"]["value"], "via http");
    let (status, _) = server.http("POST", "/api/push", &h, body.as_bytes());
    assert_eq!(status, 401, "replayed");
    let other = push_body(7, "altered");
    let (status, _) = server.http("POST", "/api/push", &h, other.as_bytes());
    assert_eq!(status, 401, "a body the signature does not cover");
    nothing_for(&mut c);

    // A GET is signed over its target, query included.
    let target = "/api/online?uid=7";
    let (ts, sig) = headers(unix_now(), "GET", target, "");
    let h = [
        ("X-Wspush-Timestamp", ts.as_str()),
        ("X-Wspush-Signature", sig.as_str()),
    ];
    let (status, reply) = server.http("GET", target, &h, b"");
    assert_eq!(status, 200, "{reply}");
    let v: Value = serde_json::from_str(&reply).expect("JSON");
    assert_eq!(v["onLine"], 1);
    let (status, _) = server.http("GET", "/api/online?uid=8", &h, b"");
    assert_eq!(status, 401, "another query under the same signature");
}
