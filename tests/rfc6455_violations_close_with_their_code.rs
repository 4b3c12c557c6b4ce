//! A frame that breaks RFC 6455 closes the connection with the RFC's code: 1002 for protocol
//! errors, 1007 for text that is not UTF-8. Frames are written by hand on a raw TCP socket,
//! since a real client library refuses to send them. The WebSocket port also answers plain
//! HTTP: the demo page, 404 elsewhere, 400 for an upgrade it cannot honour.
mod common;
use common::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A WebSocket client that speaks frames byte by byte.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl Raw {
    fn tcp(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        Raw { s, buf: Vec::new() }
    }

    /// Registers a token for `uid`, upgrades by hand and reads the login frame.
    fn logged_in(server: &Server, uid: u64) -> Raw {
        let token = format!("raw{uid}");
        server.register(uid, "app", &token, far_future());
        let mut raw = Raw::tcp(server.ws_port);
        let access_token = wspush::protocol::encode_access_token(&token, uid, "app");
        raw.write(
            format!(
                "GET /?access_token={access_token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        );
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "the accept key of RFC 6455's example: {head}"
        );
        let login = raw.read_frame().expect("login frame");
        assert_eq!(
            (login.fin, login.opcode, login.masked),
            (true, 0x1, false),
            "{login:?}"
        );
        let login: Value = serde_json::from_slice(&login.payload).expect("login is JSON");
        assert_eq!(login["code"], 200, "{login}");
        raw
    }

    fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    /// More bytes into the buffer; false at the end of the stream (or a reset).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("nothing from the server within {WAIT:?}")
            }
            Err(_) => false,
        }
    }

    /// The HTTP response head, up to the blank line.
    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8(head).expect("head is text");
            }
            assert!(self.fill(), "connection closed before the response head");
        }
    }

    fn need(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            if !self.fill() {
                return false;
            }
        }
        true
    }

    /// The next frame, or None if the stream ends first.
    fn read_frame(&mut self) -> Option<Frame> {
        if !self.need(2) {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                if !self.need(4) {
                    return None;
                }
                (u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4)
            }
            127 => {
                if !self.need(10) {
                    return None;
                }
                (
                    u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")),
                    10,
                )
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            if !self.need(at + 4) {
                return None;
            }
            at += 4;
            Some([
                self.buf[at - 4],
                self.buf[at - 3],
                self.buf[at - 2],
                self.buf[at - 1],
            ])
        } else {
            None
        };
        let total = at + usize::try_from(len).expect("length fits");
        if !self.need(total) {
            return None;
        }
        let frame: Vec<u8> = self.buf.drain(..total).collect();
        let mut payload = frame[at..].to_vec();
        if let Some(m) = mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= m[i % 4]);
        }
        Some(Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            masked,
            payload,
        })
    }

    /// Reads until the server's close frame; returns its code. Panics if the stream ends first.
    fn close_code(&mut self) -> u16 {
        loop {
            let frame = self
                .read_frame()
                .expect("a close frame before the end of the stream");
            if frame.opcode == 0x8 {
                assert!(!frame.masked, "server frames are not masked");
                assert!(frame.fin);
                assert!(
                    frame.payload.len() >= 2,
                    "the close frame carries a code: {frame:?}"
                );
                return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
            }
            assert_ne!(
                frame.opcode, 0x1,
                "no text frame before the close: {frame:?}"
            );
        }
    }
}

/// Encodes one client frame with every bit chosen by the caller.
fn frame(first_byte: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Logs in raw, proves the raw framing works with a ping round trip, sends `bytes`, and
/// returns the code of the close that follows.
fn close_code_after(tag: &str, bytes: &[u8]) -> u16 {
    let server = Server::start(tag);
    let mut raw = Raw::logged_in(&server, 1);
    raw.write(&frame(0x81, true, b"ping"));
    let pong = raw.read_frame().expect("pong");
    assert_eq!(
        (pong.opcode, &pong.payload[..]),
        (0x1, &br#"{"type":"pong"}"#[..]),
        "well-formed frames work"
    );
    raw.write(bytes);
    raw.close_code()
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    assert_eq!(
        close_code_after("rfc-unmasked", &frame(0x81, false, b"ping")),
        1002
    );
}

#[test]
fn reserved_bit_without_an_extension_closes_with_1002() {
    // FIN + RSV1 + text.
    assert_eq!(
        close_code_after("rfc-rsv1", &frame(0xC1, true, b"ping")),
        1002
    );
}

#[test]
fn unknown_opcode_closes_with_1002() {
    assert_eq!(
        close_code_after("rfc-opcode", &frame(0x83, true, b"ping")),
        1002
    );
}

#[test]
fn control_frame_over_125_bytes_closes_with_1002() {
    assert_eq!(
        close_code_after("rfc-big-ping", &frame(0x89, true, &[b'p'; 126])),
        1002
    );
}

#[test]
fn fragmented_control_frame_closes_with_1002() {
    // FIN = 0 on a ping.
    assert_eq!(
        close_code_after("rfc-frag-ping", &frame(0x09, true, b"ping")),
        1002
    );
}

#[test]
fn text_that_is_not_utf8_closes_with_1007() {
    assert_eq!(
        close_code_after("rfc-utf8", &frame(0x81, true, &[0xff, 0xfe])),
        1007
    );
}

#[test]
fn a_ping_frame_is_answered_on_the_raw_socket_too() {
    // The counterpart of the violations: a well-formed control frame is answered, not closed.
    let server = Server::start("rfc-ping");
    let mut raw = Raw::logged_in(&server, 1);
    raw.write(&frame(0x89, true, &[b'p'; 125]));
    let pong = raw.read_frame().expect("pong frame");
    assert_eq!((pong.fin, pong.opcode, pong.masked), (true, 0xA, false));
    assert_eq!(pong.payload, vec![b'p'; 125]);
}

/// One raw HTTP exchange on `port`: status line and headers, and body (to the end of stream).
fn raw_http(port: u16, request: &str) -> (String, String) {
    let mut raw = Raw::tcp(port);
    raw.write(request.as_bytes());
    let head = raw.read_head();
    while raw.fill() {}
    (head, String::from_utf8_lossy(&raw.buf).into_owned())
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"))
}

#[test]
fn plain_get_of_the_root_serves_the_demo_page() {
    let server = Server::start("rfc-page");
    let (head, body) = raw_http(server.ws_port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&head), 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(body.contains("wspush"), "the demo page names the server");
}

#[test]
fn plain_get_of_another_path_is_404() {
    let server = Server::start("rfc-404");
    let (head, _) = raw_http(server.ws_port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&head), 404, "{head}");
}

#[test]
fn upgrade_without_version_13_is_400() {
    let server = Server::start("rfc-version");
    server.register(1, "app", "t", far_future());
    let token = wspush::protocol::encode_access_token("t", 1, "app");
    for version in ["Sec-WebSocket-Version: 8\r\n", ""] {
        let (head, _) = raw_http(
            server.ws_port,
            &format!(
                "GET /?access_token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 {version}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ),
        );
        assert_eq!(status(&head), 400, "{version:?}: {head}");
    }
}
