//! Requests the HTTP API will not take get a clear status and a JSON reason, and never stop
//! the server from serving other connections.
mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::net::TcpStream;

/// Sends `raw` on a fresh connection and reads one whole response (without waiting for the
/// server to close, nor sending anything more).
fn exchange(server: &Server, raw: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    s.write_all(raw).expect("write");
    let (status, body) = read_http_response(&mut s);
    (status, body_json(&body))
}

fn clear_error(server: &Server, what: &str, raw: &[u8], status: u16) {
    let (got, body) = exchange(server, raw);
    assert_eq!(got, status, "{what}: {body}");
    assert_eq!(body["code"], status, "{what}: {body}");
    assert!(
        body["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: a reason: {body}"
    );
    // Other connections are still served.
    let (status, body) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "after {what}: {body}");
}

#[test]
fn a_header_block_over_8_kib_is_431() {
    let server = Server::start("http-431");
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    clear_error(&server, "one 9 KiB header", raw.as_bytes(), 431);
    // Few headers (under the count limit), but many bytes.
    let many: String = (0..20)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "b".repeat(450)))
        .collect();
    let raw = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert!(raw.len() > 8 * 1024);
    clear_error(&server, "20 headers, 9 KiB", raw.as_bytes(), 431);
    let many: String = (0..40).map(|i| format!("X-N-{i}: 1\r\n")).collect();
    let raw = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    clear_error(&server, "41 small headers", raw.as_bytes(), 431);
    // Never ending: the head alone, without its blank line.
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "c".repeat(10 * 1024)
    );
    clear_error(&server, "an unfinished 10 KiB head", raw.as_bytes(), 431);
    // Under the limit the same request is fine.
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(6 * 1024)
    );
    assert_eq!(exchange(&server, raw.as_bytes()).0, 200);
}

#[test]
fn a_content_length_over_max_message_size_is_413_before_the_body() {
    let server = ServerBuilder::new("http-413")
        .set("max_message_size", "1024")
        .start();
    let auth = bearer();
    // Only the head is sent: the answer must not wait for a body. A push body may be longer
    // than a message only for a membership change (up to 2 MiB).
    let raw = format!("POST /api/push HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 3000000\r\n\r\n");
    clear_error(&server, "Content-Length 3000000", raw.as_bytes(), 413);
    let raw = format!(
        "POST /api/push HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 1025\r\n\r\n{}",
        "x".repeat(1025)
    );
    clear_error(&server, "a push body of 1025", raw.as_bytes(), 413);
    let raw = format!("POST /api/login HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 1025\r\n\r\n");
    clear_error(&server, "Content-Length 1025 (login)", raw.as_bytes(), 413);
    let raw = format!(
        "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{}",
        "x".repeat(100)
    );
    clear_error(&server, "a login body of 5000", raw.as_bytes(), 413);
}

#[test]
fn a_chunked_body_is_411() {
    let server = Server::start("http-411");
    let raw = b"POST /api/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    clear_error(&server, "Transfer-Encoding: chunked", raw, 411);
}

#[test]
fn a_garbage_request_line_is_400() {
    let server = Server::start("http-400-line");
    clear_error(&server, "words", b"this is not http\r\n\r\n", 400);
    clear_error(
        &server,
        "control bytes",
        b"\x01\x02\x03 / HTTP/1.1\r\n\r\n",
        400,
    );
    clear_error(
        &server,
        "no version",
        b"GET /healthz SPDY/9\r\nHost: x\r\n\r\n",
        400,
    );
}

#[test]
fn a_bad_content_length_is_400() {
    let server = Server::start("http-400-length");
    for (what, value) in [
        ("letters", "abc"),
        ("negative", "-5"),
        ("two numbers", "5, 6"),
    ] {
        let raw = format!("POST /api/push HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n");
        clear_error(&server, what, raw.as_bytes(), 400);
    }
}

#[test]
fn a_signed_or_conflicting_content_length_is_400() {
    // RFC 9112 section 6.3: Content-Length is 1*DIGIT; an invalid one, or several that
    // disagree, make the framing invalid: 400 and close, never a guess at where the body ends.
    let server = Server::start("http-400-length-rfc");
    let raw = "POST /api/push HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}";
    clear_error(&server, "Content-Length: +2", raw.as_bytes(), 400);
    let raw =
        "POST /api/push HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 60\r\n\r\n{}";
    clear_error(&server, "Content-Length 2 and 60", raw.as_bytes(), 400);
}
