//! Behind a trusted proxy every client is judged by its own address, as the proxy names it in
//! `X-Forwarded-For`, `X-Real-IP` or a PROXY protocol header: thousands of clients through one
//! proxy are all admitted at a rate far above one address's, while one client over its own
//! rate is refused. From an address that is not a trusted proxy, such headers change nothing.
mod common;
use common::*;
use ppp::v2;
use serde_json::json;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

const CLIENTS: usize = 3000;

/// A server whose per-address rate is 5 new connections (burst 5) per second.
fn strict(tag: &str) -> ServerBuilder {
    ServerBuilder::new(tag)
        .set("connection_rate_per_ip", "5")
        .set("connection_burst_per_ip", "5")
}

/// The status of `GET /` on the WebSocket port, sent after `prefix` (a PROXY header) with
/// `headers`.
fn page_status(port: u16, prefix: &[u8], headers: &[(&str, &str)]) -> u16 {
    page_status_from("127.0.0.1", port, prefix, headers)
}

/// As `page_status`, from the loopback address `source`.
fn page_status_from(source: &str, port: u16, prefix: &[u8], headers: &[(&str, &str)]) -> u16 {
    let mut s = connect_from(source, port);
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut req = prefix.to_vec();
    req.extend_from_slice(http_request_head("GET", "/", headers, 0).as_bytes());
    s.write_all(&req).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out).map_or(0, |(status, _, _)| status)
}

fn proxy_v2(client: SocketAddr) -> Vec<u8> {
    let dst: SocketAddr = "127.0.0.1:9501".parse().expect("addr");
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, dst),
    )
    .build()
    .expect("PROXY v2 header")
}

/// `CLIENTS` distinct client addresses, from 4 threads: how many were admitted (200).
fn many_clients(status_of: impl Fn(usize) -> u16 + Sync) -> usize {
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (admitted, status_of) = (&admitted, &status_of);
            s.spawn(move || {
                for i in (t..CLIENTS).step_by(4) {
                    if status_of(i) == 200 {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

fn client_ip(i: usize) -> String {
    format!("10.{}.{}.{}", i / 62500, (i / 250) % 250, i % 250 + 1)
}

#[test]
fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let server = strict("xff-trusted")
        .set("trusted_proxies", "[\"127.0.0.1\"]")
        .start();
    let admitted = many_clients(|i| {
        let xff = format!("{}, 127.0.0.1", client_ip(i));
        page_status(server.ws_port, b"", &[("X-Forwarded-For", &xff)])
    });
    assert_eq!(admitted, CLIENTS, "every distinct client admitted");
    // One client over its own rate is refused, with its address in the log.
    let statuses: Vec<u16> = (0..8)
        .map(|_| page_status(server.ws_port, b"", &[("X-Real-IP", "203.0.113.9")]))
        .collect();
    assert_eq!(&statuses[..5], [200; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    wait_for("the refusal to be logged with the client's address", || {
        server.log().contains("203.0.113.9").then_some(())
    });
    // A login through the proxy works as usual.
    server.login(1, "app");
}

#[test]
fn a_proxy_protocol_header_from_a_trusted_proxy_names_the_client() {
    // The proxy is 127.0.0.2; the harness itself (127.0.0.1) connects directly.
    let server = strict("pp2-trusted")
        .push_peers(&[("127.0.0.1", SECRET), ("192.0.2.201", SECRET)])
        .set("trusted_proxies", "[\"127.0.0.2\"]")
        .set("proxy_protocol", "true")
        .start();
    let via_proxy = |prefix: &[u8]| page_status_from("127.0.0.2", server.ws_port, prefix, &[]);
    let admitted = many_clients(|i| {
        let client: SocketAddr = format!("{}:40000", client_ip(i)).parse().expect("addr");
        via_proxy(&proxy_v2(client))
    });
    assert_eq!(admitted, CLIENTS, "every distinct client admitted");
    let one: SocketAddr = "198.51.100.4:5555".parse().expect("addr");
    let statuses: Vec<u16> = (0..8).map(|_| via_proxy(&proxy_v2(one))).collect();
    assert_eq!(&statuses[..5], [200; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    // v1 works too; a connection without the header is refused, not guessed at.
    let v1 = b"PROXY TCP4 192.0.2.77 127.0.0.1 1234 9501\r\n";
    assert_eq!(via_proxy(v1), 200);
    assert_eq!(via_proxy(b""), 0, "closed without an answer");
    // The harness's own direct connections need no header.
    assert_eq!(page_status(server.ws_port, b"", &[]), 200);
    // The HTTP API port reads it as well: the push door judges the client, not the proxy.
    let push_via_proxy = |client: &str| {
        let body = json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": "1", "content": 1}});
        let body = body.to_string();
        let mut s = connect_from("127.0.0.2", server.http_port);
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut req = proxy_v2(client.parse().expect("addr"));
        let head = http_request_head("POST", "/api/push", &[("Connection", "close")], body.len());
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(body.as_bytes());
        s.write_all(&req).expect("send");
        read_http_response(&mut s)
    };
    let (status, reply) = push_via_proxy("192.0.2.201:1000");
    assert_eq!(status, 200, "192.0.2.201 may push: {reply}");
    let (status, reply) = push_via_proxy("192.0.2.200:1000");
    assert_eq!(status, 401, "192.0.2.200 may not: {reply}");
    assert!(reply.contains("address not allowed"), "{reply}");
}

#[test]
fn forwarding_headers_from_anyone_else_change_nothing() {
    // No trusted proxies: every connection here comes from 127.0.0.1 itself.
    let server = strict("xff-untrusted").start();
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            let xff = client_ip(i);
            page_status(
                server.ws_port,
                b"",
                &[("X-Forwarded-For", &xff), ("X-Real-IP", &xff)],
            )
        })
        .collect();
    assert_eq!(&statuses[..5], [200; 5], "{statuses:?}");
    assert!(
        statuses[5..].contains(&429),
        "judged as 127.0.0.1: {statuses:?}"
    );
    // A PROXY header from an untrusted peer is not a header: the request is malformed.
    let v1 = b"PROXY TCP4 192.0.2.77 127.0.0.1 1234 9501\r\n";
    let quiet = strict("pp-untrusted").start();
    assert_eq!(page_status(quiet.ws_port, v1, &[]), 400);
    // The push door judges the peer, not what it claims.
    let body = json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": "1", "content": 1}});
    let (status, reply) = quiet.http(
        "POST",
        "/api/push",
        &[("X-Forwarded-For", "192.0.2.200")],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
}
