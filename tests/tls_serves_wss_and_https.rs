//! With a certificate and key configured, the WebSocket port speaks `wss://` and the HTTP API
//! port `https://`: logins, chats and pushes work as over plain TCP; a plain HTTP request on a
//! TLS port gets a plain answer saying so; a client that does not trust the certificate, or
//! stalls in its handshake, costs nobody else anything.
mod common;
use common::tls::TestCert;
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;

#[test]
fn a_wss_client_logs_in_and_chats_and_https_pushes() {
    let cert = TestCert::new();
    let server = ServerBuilder::new("tls-chat").tls(&cert).start();
    // Registered over https (the harness speaks TLS to the API port).
    let mut a = server.login(1, "app");
    let mut b = server.login(2, "app");
    a.chat(2, "over TLS");
    let got = b.recv();
    assert_eq!(got["content"]["value"], "over TLS", "{got}");
    assert_eq!(a.recv()["type"], "ack");

    let body = json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": "2", "content": "pushed over https"}});
    let (status, reply) = server.http("POST", "/api/push", &[], body.to_string().as_bytes());
    assert_eq!(status, 200, "{reply}");
    assert_eq!(body_json(&reply)["code"], 0, "{reply}");
    assert_eq!(b.recv()["content"], "pushed over https");

    // UDP pushes are not TLS: they still work beside it.
    let reply = server.push("to_uid", json!({"to_uid": "1", "content": "by udp"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(a.recv()["content"], "by udp");
    let stats = server.stats();
    assert!(
        stats["tls"]["handshakes"].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );
    // And for Prometheus, over https too.
    let (status, metrics) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{metrics}");
    let handshakes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wspush_tls_handshakes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("wspush_tls_handshakes_total in {metrics}"));
    assert!(handshakes >= 2.0, "{handshakes}");
    assert!(
        metrics.contains("wspush_tls_handshake_failures_total{reason=\"plain_http\"} 0"),
        "{metrics}"
    );
}

#[test]
fn plain_http_on_a_tls_port_is_answered_in_plain_and_closed() {
    let cert = TestCert::new();
    let server = ServerBuilder::new("tls-plain").tls(&cert).start();
    for port in [server.ws_port, server.http_port] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let (status, body, _) = parse_response(&answer)
            .unwrap_or_else(|| panic!("a plain answer: {:?}", String::from_utf8_lossy(&answer)));
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("TLS"), "{body}");
    }
    let stats = server.stats();
    assert_eq!(stats["tls"]["failures"]["plain_http"], 2, "{stats}");
    // The server goes on serving TLS clients.
    server.login(5, "app");
}

#[test]
fn failed_and_stalled_handshakes_hurt_nobody() {
    let cert = TestCert::new();
    let server = ServerBuilder::new("tls-bad")
        .tls(&cert)
        .set("handshake_timeout", "2")
        .set("task_timeout", "1")
        .start();
    // A client that trusts another certificate refuses ours and says so with an alert.
    let stranger = TestCert::new();
    assert!(common::tls::connect(server.ws_port, &stranger.client).is_err());
    // One that sends half a ClientHello and stalls holds nothing but its own slot.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send");
    // Garbage that looks like TLS at first.
    let mut garbage = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .expect("send");

    let mut a = server.login(1, "app");
    let mut b = server.login(2, "app");
    a.chat(2, "still here");
    assert_eq!(b.recv()["content"]["value"], "still here");

    // The stalled one is cut at the handshake deadline.
    stalled.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 64];
    assert!(matches!(stalled.read(&mut buf), Ok(0) | Err(_)), "closed");
    let stats = wait_for("the failures to be counted", || {
        let s = server.stats();
        let f = &s["tls"]["failures"];
        (f["client_alert"].as_u64()? >= 1
            && f["protocol"].as_u64()? >= 1
            && f["abandoned"].as_u64()? >= 1)
            .then_some(s)
    });
    assert!(
        stats["tls"]["handshakes"].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );
}
