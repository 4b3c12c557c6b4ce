//! The HTTP API keeps connections alive: requests sent back to back on one connection, even
//! in one write, are all answered, in order, on that connection; `Connection: close` ends it.
mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn open(server: &Server) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    s
}

fn request(method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> String {
    http_request_head(method, path, extra, body.len()) + body
}

/// One parsed response: status, the value of its Connection header, body.
struct Response {
    status: u16,
    connection: String,
    body: Value,
}

fn connection_header(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    header_value(head, "connection").unwrap_or_default()
}

/// Reads from `s` until `n` whole responses have arrived (bounded by `WAIT`); also reports
/// whether the server closed the connection by then.
fn read_responses(s: &mut TcpStream, n: usize) -> (Vec<Response>, bool) {
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut closed = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some((status, body, used)) = parse_response(&buf) {
            let connection = connection_header(&buf[..used]);
            let body = body_json(&body);
            out.push(Response {
                status,
                connection,
                body,
            });
            buf.drain(..used);
        }
        if out.len() >= n || closed {
            assert!(
                buf.is_empty(),
                "bytes after the last expected response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            return (out, closed);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} responses within {WAIT:?}",
            out.len()
        );
        match s.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Waits until the server closes `s` (EOF), with nothing more sent.
fn expect_eof(s: &mut TcpStream) {
    let deadline = Instant::now() + WAIT;
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(k) => panic!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&chunk[..k])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "connection not closed within {WAIT:?}"
                );
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order_on_one_connection() {
    let server = Server::start("http-pipeline");
    let mut bob = server.login(8, "app");
    let auth = bearer();
    let auth_h = ("Authorization", auth.as_str());
    let json_h = ("Content-Type", "application/json");
    let form_h = ("Content-Type", "application/x-www-form-urlencoded");
    let login = json!({"sk": SECRET, "uid": "7", "source": "app", "token": "piped7", "expires": far_future()}).to_string();
    let push = |text: &str| {
        json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": "8", "type": "chat", "content": text}}).to_string()
    };

    let requests = [
        request("GET", "/healthz", &[], ""),
        // The login goes to a task worker: everything behind it has to wait its turn.
        request("POST", "/api/login", &[json_h], &login),
        request("GET", "/api/online?uid=8", &[auth_h], ""),
        request("POST", "/api/push", &[json_h], &push("p1")),
        request(
            "POST",
            "/chat/send",
            &[form_h, auth_h],
            "to_uid=8&content=c2",
        ),
        request("GET", "/api/online?uid=9", &[auth_h], ""),
        request(
            "POST",
            "/api/login",
            &[json_h],
            &json!({"sk": SECRET, "uid": "7", "source": "APP", "token": "x", "expires": 1})
                .to_string(),
        ),
        request("POST", "/api/push", &[json_h], &push("p3")),
        request("GET", "/healthz", &[], ""),
    ];
    let mut s = open(&server);
    s.write_all(requests.concat().as_bytes())
        .expect("one write");

    let (got, closed) = read_responses(&mut s, requests.len());
    assert!(!closed, "the connection stays open");
    assert_eq!(got.len(), requests.len());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.connection, "keep-alive", "response {i}: {}", r.body);
    }
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 400, 200, 200],
        "{:?}",
        got.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(got[0].body["status"], "ok", "{}", got[0].body);
    assert_eq!(got[1].body, json!({"code": 0, "msg": "ok"}));
    assert_eq!(
        got[2].body,
        json!({"code": 0, "msg": "ok", "onLine": 1, "sources": ["app"]})
    );
    let ids: Vec<String> = [3, 4, 7]
        .iter()
        .map(|&i| {
            let b = &got[i].body;
            assert_eq!(
                (b["code"].clone(), b["delivered"].clone()),
                (json!(0), json!(1)),
                "response {i}: {b}"
            );
            b["id"]
                .as_str()
                .unwrap_or_else(|| panic!("response {i}: {b}"))
                .to_string()
        })
        .collect();
    assert_eq!(
        got[5].body,
        json!({"code": 0, "msg": "ok", "onLine": 0, "sources": []})
    );
    assert_eq!(got[6].body["code"], 400, "{}", got[6].body);
    assert_eq!(got[8].body["status"], "ok", "{}", got[8].body);

    // The pushes were carried out in the order they were sent.
    let frames = recv_n(&mut bob, 3);
    let contents: Vec<Value> = frames.iter().map(|f| f["content"].clone()).collect();
    assert_eq!(
        contents,
        [
            json!("p1"),
            json!({"type": "text", "value": "c2"}),
            json!("p3")
        ]
    );
    let frame_ids: Vec<&str> = frames
        .iter()
        .map(|f| f["id"].as_str().expect("id"))
        .collect();
    assert_eq!(frame_ids, ids);

    // The pipelined login was stored.
    let mut seven = server.connect(
        &wspush::protocol::encode_access_token("piped7", 7, "app"),
        None,
    );
    assert_eq!(seven.recv()["code"], 200);

    // The same connection still takes requests; `Connection: close` ends it after the answer.
    s.write_all(
        request(
            "GET",
            "/api/online?uid=7",
            &[auth_h, ("Connection", "close")],
            "",
        )
        .as_bytes(),
    )
    .expect("write");
    let (got, _) = read_responses(&mut s, 1);
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].connection, "close");
    assert_eq!(got[0].body["onLine"], 1, "{}", got[0].body);
    expect_eof(&mut s);
}

#[test]
fn sequential_requests_share_a_keep_alive_connection() {
    let server = Server::start("http-keepalive");
    let _c = server.login(3, "app");
    let auth = bearer();
    let mut s = open(&server);
    for round in 0..3 {
        s.write_all(
            request("GET", "/api/online?uid=3", &[("Authorization", &auth)], "").as_bytes(),
        )
        .expect("write");
        let (got, closed) = read_responses(&mut s, 1);
        assert!(!closed, "round {round}: the connection stays open");
        assert_eq!(got[0].status, 200, "round {round}: {}", got[0].body);
        assert_eq!(got[0].connection, "keep-alive", "round {round}");
        assert_eq!(got[0].body["onLine"], 1, "round {round}: {}", got[0].body);
    }
    // An HTTP/1.0 client without keep-alive is answered and closed.
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("write");
    let (got, _) = read_responses(&mut s, 1);
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].connection, "close");
    expect_eof(&mut s);
}

#[test]
fn connection_close_closes_after_the_response() {
    let server = Server::start("http-close");
    let mut s = open(&server);
    s.write_all(request("GET", "/healthz", &[("Connection", "close")], "").as_bytes())
        .expect("write");
    let (got, _) = read_responses(&mut s, 1);
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].connection, "close");
    expect_eof(&mut s);

    // Requests pipelined behind a `Connection: close` one are not answered.
    let mut s = open(&server);
    let two = [
        request("GET", "/healthz", &[("Connection", "close")], ""),
        request("GET", "/nope", &[], ""),
    ]
    .concat();
    s.write_all(two.as_bytes()).expect("write");
    let (got, closed) = read_responses(&mut s, 2);
    assert!(closed, "closed after the first answer");
    assert_eq!(
        got.len(),
        1,
        "only the request before the close is answered"
    );
    assert_eq!(got[0].status, 200);
}

#[test]
fn a_pipeline_longer_than_the_read_ahead_is_answered_in_full() {
    // With max_message_size = 128 the server reads about 8 KiB ahead of what it answers; the
    // rest of this pipeline stays in the socket while logins wait for a task worker, and has
    // to be read once they are answered (the socket will not signal it again).
    let server = ServerBuilder::new("http-long-pipeline")
        .set("max_message_size", "128")
        .start();
    let auth = bearer();
    let login = |uid: u64| {
        let body = json!({"sk": SECRET, "uid": uid.to_string(), "source": "app", "token": format!("long{uid}"), "expires": far_future()}).to_string();
        assert!(body.len() <= 128, "{body}");
        request("POST", "/api/login", &[], &body)
    };
    let count = 600;
    let mut kinds = Vec::with_capacity(count);
    let mut batch = String::new();
    for i in 0..count {
        if i % 200 == 0 {
            batch.push_str(&login(i as u64 + 1));
            kinds.push("login");
        } else {
            batch.push_str(&request(
                "GET",
                &format!("/api/online?uid={}", 1000 + i),
                &[("Authorization", &auth)],
                "",
            ));
            kinds.push("online");
        }
    }
    assert!(
        batch.len() > 4 * (8 * 1024 + 128),
        "well over the read-ahead: {}",
        batch.len()
    );
    let mut s = open(&server);
    let mut writer = s.try_clone().expect("clone");
    // Written from another thread: the answers are read while the requests go out.
    let sending = std::thread::spawn(move || writer.write_all(batch.as_bytes()).is_ok());
    let (got, closed) = read_responses(&mut s, count);
    assert!(!closed, "the connection stays open");
    assert_eq!(got.len(), count);
    for (i, (r, kind)) in got.iter().zip(&kinds).enumerate() {
        assert_eq!(r.status, 200, "response {i}: {}", r.body);
        match *kind {
            "login" => assert_eq!(r.body, json!({"code": 0, "msg": "ok"}), "response {i}"),
            _ => assert_eq!(r.body["onLine"], 0, "response {i}: {}", r.body),
        }
    }
    assert!(sending.join().expect("writer"), "all requests were written");
}

#[test]
fn a_client_that_half_closes_after_its_pipeline_gets_every_answer() {
    let server = Server::start("http-half-close");
    let auth = bearer();
    let login = json!({"sk": SECRET, "uid": "21", "source": "pc", "token": "half21", "expires": far_future()}).to_string();
    let batch = [
        request("GET", "/healthz", &[], ""),
        request("POST", "/api/login", &[], &login),
        request("GET", "/api/online?uid=21", &[("Authorization", &auth)], ""),
        request("GET", "/healthz", &[], ""),
    ]
    .concat();
    let mut s = open(&server);
    s.write_all(batch.as_bytes()).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half close");
    let (got, _) = read_responses(&mut s, 4);
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200]);
    assert_eq!(got[1].body, json!({"code": 0, "msg": "ok"}));
    assert_eq!(got[2].body["onLine"], 0, "{}", got[2].body);
    expect_eof(&mut s);
    let mut c = server.connect(
        &wspush::protocol::encode_access_token("half21", 21, "pc"),
        None,
    );
    assert_eq!(c.recv()["code"], 200);
}

#[test]
fn an_invalid_request_in_a_pipeline_is_answered_in_its_turn_and_ends_the_connection() {
    let server = Server::start("http-pipeline-invalid");
    let mut s = open(&server);
    let batch = [
        request("GET", "/healthz", &[], ""),
        request("GET", "/nope", &[], ""),
        "POST /api/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            .to_string(),
        request("GET", "/healthz", &[], ""),
    ]
    .concat();
    s.write_all(batch.as_bytes()).expect("write");
    let (got, closed) = read_responses(&mut s, 4);
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 404, 411],
        "answered in order, nothing after the invalid one"
    );
    assert!(closed, "the connection ends after the invalid request");
    assert_eq!(got[2].connection, "close");
    // The server goes on serving others.
    let (status, body) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
}
