//! Two doors held against abuse: an HTTP API request trickled in byte by byte is answered 408
//! and closed at its deadline; a flood of new connections from one address is refused (429)
//! past its rate while other addresses are served as usual.
mod common;
use common::*;
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

/// A TCP connection to 127.0.0.1:`port` from the source address `from` (127.0.0.x).
fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(from.into(), 0)),
    )
    .expect("bind");
    let to = SockaddrIn::from(SocketAddrV4::new([127, 0, 0, 1].into(), port));
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &to).expect("connect");
    TcpStream::from(fd)
}

/// Sends `GET /` and returns the status of the answer.
fn page_status(mut s: TcpStream) -> u16 {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut head = [0u8; 64];
    let n = s.read(&mut head).expect("an answer");
    let text = String::from_utf8_lossy(&head[..n]).to_string();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {text}"))
}

#[test]
fn a_trickled_http_request_gets_408_at_its_deadline() {
    let server = ServerBuilder::new("slow-http")
        .set("http_request_timeout", "1")
        .start();
    let mut slow = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .expect("write");
    // One byte every 100 ms keeps the connection busy but never completes the request.
    let deadline = Instant::now() + WAIT;
    let mut answer = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no answer to a trickled request within {WAIT:?}"
        );
        if slow.write_all(b"a").is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "answered 408: {text}");
    // A bystander is served meanwhile and after.
    let (status, _) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
}

#[test]
fn a_connection_flood_from_one_address_does_not_starve_another() {
    let server = ServerBuilder::new("ip-flood")
        .set("connection_rate_per_ip", "2")
        .set("connection_burst_per_ip", "5")
        .start();
    let statuses: Vec<u16> = (0..30)
        .map(|_| page_status(connect_from([127, 0, 0, 1], server.ws_port)))
        .collect();
    assert!(
        statuses[..5].iter().all(|s| *s == 200),
        "the burst is served: {statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the flood is refused past its rate: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // Another address is served at once.
    for _ in 0..5 {
        assert_eq!(
            page_status(connect_from([127, 0, 0, 2], server.ws_port)),
            200
        );
    }
    assert!(server.stats()["refused_rate_ip"]
        .as_u64()
        .is_some_and(|n| n >= 1));
}
