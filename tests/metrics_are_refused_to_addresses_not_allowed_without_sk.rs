//! `/metrics` is served without a secret only to `server.metrics_allow`; any other address gets
//! 403, unless it may push and presents its secret (as for `/api/stats`).
mod common;
use common::*;
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};

/// `GET /metrics` from the source address `from` (127.0.0.x), with `headers`; the status.
fn metrics_status_from(from: [u8; 4], port: u16, headers: &[(&str, &str)]) -> u16 {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    bind(raw, &SockaddrIn::from(SocketAddrV4::new(from.into(), 0))).expect("bind");
    let to = SockaddrIn::from(SocketAddrV4::new([127, 0, 0, 1].into(), port));
    connect(raw, &to).expect("connect");
    let mut s = TcpStream::from(fd);
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let headers = [&[("Connection", "close")], headers].concat();
    s.write_all(http_request_head("GET", "/metrics", &headers, 0).as_bytes())
        .expect("write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("an answer");
    let (status, body, _) = parse_response(&answer).expect("an HTTP response");
    if status == 200 {
        assert!(
            body.contains("# TYPE wspush_logins_total counter"),
            "{body}"
        );
    }
    status
}

#[test]
fn metrics_are_refused_to_addresses_not_allowed_without_sk() {
    let server = ServerBuilder::new("metrics-allow")
        .set("metrics_allow", r#"["127.0.0.1/32"]"#)
        .push_peers(&[("127.0.0.1", SECRET), ("127.0.0.3", SECRET)])
        .start();
    let port = server.http_port;
    let auth = bearer();
    let with_sk = [("Authorization", auth.as_str())];
    let wrong_sk = [("Authorization", "Bearer wrong")];

    assert_eq!(metrics_status_from([127, 0, 0, 1], port, &[]), 200);
    assert_eq!(metrics_status_from([127, 0, 0, 2], port, &[]), 403);
    // 127.0.0.2 may not push: its secret proves nothing.
    assert_eq!(metrics_status_from([127, 0, 0, 2], port, &with_sk), 403);
    assert_eq!(metrics_status_from([127, 0, 0, 3], port, &[]), 403);
    assert_eq!(metrics_status_from([127, 0, 0, 3], port, &wrong_sk), 403);
    assert_eq!(metrics_status_from([127, 0, 0, 3], port, &with_sk), 200);
}
