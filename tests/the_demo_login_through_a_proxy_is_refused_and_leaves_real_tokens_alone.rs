//! The demo login (`/demo/login` on the WebSocket port) and `/demo/online` answer 403 to a
//! request that came through a proxy: one with a `Forwarded`, `X-Forwarded-For` or
//! `X-Real-IP` header, or one from an address in `server.trusted_proxies`, even on loopback.
//! Such a refusal never disturbs the real token of the uid it named.
mod common;
use common::*;
use serde_json::Value;
use wspush::protocol::encode_access_token;

/// A GET on the WebSocket port with these headers: status and body as JSON.
fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body) =
        http_request_opt(server.ws_port, "GET", path, headers, b"").expect("an answer");
    (status, body_json(&body))
}

fn assert_refused_as_proxied(status: u16, body: &Value) {
    assert_eq!((status, &body["code"]), (403, &Value::from(403)), "{body}");
    let msg = body["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("proxy"), "says which rule refused it: {body}");
}

#[test]
fn the_demo_login_through_a_proxy_is_refused_and_leaves_real_tokens_alone() {
    let server = Server::start("demo-proxy");
    server.register(7, "pc", "real-token-7", far_future());
    let real = encode_access_token("real-token-7", 7, "pc");
    for header in [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9;proto=http"),
        ("X-Real-IP", "203.0.113.9"),
    ] {
        let (status, body) = get(&server, "/demo/login?uid=7&source=pc", &[header]);
        assert_refused_as_proxied(status, &body);
        let (status, body) = get(&server, "/demo/online", &[header]);
        assert_refused_as_proxied(status, &body);
    }
    // The real token of 7/pc still logs in.
    let mut c = server.connect(&real, None);
    c.expect_login();
    // Without a proxy's header the same server answers the demo (it is on loopback).
    let (status, body) = get(&server, "/demo/online", &[]);
    assert_eq!(status, 200, "{body}");

    // A peer listed in trusted_proxies is a proxy, with or without a header.
    let proxied = ServerBuilder::new("demo-trusted-proxy")
        .set("trusted_proxies", "[\"127.0.0.1\"]")
        .start();
    proxied.register(7, "pc", "real-token-7", far_future());
    for path in ["/demo/login?uid=7&source=pc", "/demo/online"] {
        let (status, body) = get(&proxied, path, &[]);
        assert_refused_as_proxied(status, &body);
    }
    proxied.connect(&real, None).expect_login();
}
