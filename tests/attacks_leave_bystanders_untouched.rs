//! Every attack of the threat model (README "Security") is met with its bounded answer while two
//! logged-in bystanders keep chatting: each of their messages arrives once and in order, they
//! make progress during the attack, and the server's resident memory stays bounded.
mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tungstenite::Message;

const BYSTANDER_A: u64 = 901;
const BYSTANDER_B: u64 = 902;
/// Exchanges the bystanders complete at least, attack or not.
const MIN_EXCHANGES: u64 = 20;
/// Bounds the bystanders' loop whatever happens.
const MAX_EXCHANGES: u64 = 100_000;
/// How much the server's resident memory may grow during an attack.
const MEMORY_BOUND: u64 = 64 * 1024 * 1024;

/// Resident memory of the master and its workers, in bytes.
fn server_rss(server: &Server) -> u64 {
    let mut pids = vec![server.pid()];
    pids.extend(server.worker_pids());
    pids.iter().map(|p| rss_of(*p)).sum()
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// How the bystanders chat: `pace` between exchanges, so that each of them stays under the
/// server's client rate limit (`rate_limit`, 100 frames a second by default): each sends one
/// frame per exchange. This paces the clients; it never waits for the server.
struct Bystanders {
    pace: Duration,
}

/// Under the default rate limit: 50 frames a second at most per bystander.
const DEFAULT_PACE: Duration = Duration::from_millis(20);

/// Reads `c`'s next frame, which must be a chat frame; returns its sequence number ("m<i>").
fn next_chat_seq(c: &mut Client, who: u64) -> u64 {
    let f = c.recv();
    assert_eq!(f["type"], "chat", "{who} got a chat frame: {f}");
    assert_eq!(f["to_uid"], who.to_string(), "chat for {who}: {f}");
    let text = f["content"]["value"].as_str().expect("text value");
    text.strip_prefix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a bystander message: {f}"))
}

fn expect_ack(c: &mut Client, to: u64) {
    let ack = c.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["to_uid"], to.to_string(), "{ack}");
    assert_eq!(ack["state"], 1, "delivered to an online bystander: {ack}");
}

thread_local! {
    /// The running bystanders' exchange counter, for the attack on this (the main) thread.
    static EXCHANGES: std::cell::RefCell<Option<std::sync::Arc<AtomicU64>>> =
        const { std::cell::RefCell::new(None) };
}

/// For attacks that are over in a moment: holds the attack (its connections open, its damage
/// done) until the bystanders have finished one more exchange.
fn while_bystanders_chat() {
    let done = EXCHANGES
        .with(|e| e.borrow().clone())
        .expect("inside under_attack");
    let now = done.load(Ordering::SeqCst);
    wait_for("a bystander exchange during the attack", || {
        (done.load(Ordering::SeqCst) > now).then_some(())
    });
}

/// What the bystanders' thread saw: the sequence numbers each of them received, in order.
struct Received {
    at_a: Vec<u64>,
    at_b: Vec<u64>,
}

fn chat_until_stopped(
    mut a: Client,
    mut b: Client,
    how: &Bystanders,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Received {
    let mut got = Received {
        at_a: Vec::new(),
        at_b: Vec::new(),
    };
    for i in 0..MAX_EXCHANGES {
        if stop.load(Ordering::SeqCst) && i >= MIN_EXCHANGES {
            break;
        }
        a.chat(BYSTANDER_B, &format!("m{i}"));
        got.at_b.push(next_chat_seq(&mut b, BYSTANDER_B));
        expect_ack(&mut a, BYSTANDER_B);
        b.chat(BYSTANDER_A, &format!("m{i}"));
        got.at_a.push(next_chat_seq(&mut a, BYSTANDER_A));
        expect_ack(&mut b, BYSTANDER_A);
        done.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(how.pace);
    }
    // Nothing more was queued for either: no duplicate is still on its way.
    a.expect_nothing_queued();
    b.expect_nothing_queued();
    got
}

/// Runs `attack` while two bystanders chat, then checks they were not touched.
fn under_attack(server: &Server, attack: impl FnOnce(&Server)) {
    under_attack_with(server, Bystanders { pace: DEFAULT_PACE }, attack)
}

fn under_attack_with(server: &Server, how: Bystanders, attack: impl FnOnce(&Server)) {
    let a = server.login(BYSTANDER_A, "app");
    let b = server.login(BYSTANDER_B, "app");
    let baseline = server_rss(server);
    assert!(baseline > 0, "the server's memory can be read");
    let stop = AtomicBool::new(false);
    let done = std::sync::Arc::new(AtomicU64::new(0));
    EXCHANGES.with(|e| *e.borrow_mut() = Some(done.clone()));
    let (got, before, after) = std::thread::scope(|scope| {
        let _stop_on_drop = StopOnDrop(&stop);
        let (stop, done, how) = (&stop, &*done, &how);
        let chat = scope.spawn(move || chat_until_stopped(a, b, how, stop, done));
        // The bystanders are under way before the attack starts.
        wait_for("the bystanders' first exchange", || {
            (done.load(Ordering::SeqCst) >= 1 || chat.is_finished()).then_some(())
        });
        let before = done.load(Ordering::SeqCst);
        attack(server);
        let after = done.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        (join_or_resume(chat), before, after)
    });
    EXCHANGES.with(|e| *e.borrow_mut() = None);
    let n = done.load(Ordering::SeqCst);
    assert!(n >= MIN_EXCHANGES, "{n} exchanges");
    let expected: Vec<u64> = (0..n).collect();
    assert_eq!(
        got.at_b, expected,
        "every message to {BYSTANDER_B} once, in order"
    );
    assert_eq!(
        got.at_a, expected,
        "every message to {BYSTANDER_A} once, in order"
    );
    assert!(
        after > before,
        "the bystanders made progress during the attack ({before} exchanges before, {after} after)"
    );
    let rss = server_rss(server);
    assert!(
        rss < baseline + MEMORY_BOUND,
        "resident memory bounded: {baseline} bytes before, {rss} after"
    );
}

// --- Raw sockets ---

/// Reads what is available on a non-blocking socket; true once the server closed it.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// A client frame: FIN + `opcode`, masked or not, payload under 126 bytes.
fn client_frame(opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode];
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        f.push(0x80 | payload.len() as u8);
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        f.push(payload.len() as u8);
        f.extend_from_slice(payload);
    }
    f
}

/// A raw WebSocket connection: bytes read so far, parsed frame by frame.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Raw {
    /// Registers a token for `uid`, upgrades by hand and reads the login frame.
    fn logged_in(server: &Server, uid: u64) -> Raw {
        let token = format!("raw{uid}");
        server.register(uid, "app", &token, far_future());
        let s = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            deadline: Instant::now() + WAIT,
        };
        let access_token = wspush::protocol::encode_access_token(&token, uid, "app");
        raw.s
            .write_all(
                format!(
                    "GET /?access_token={access_token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("write");
        let end = loop {
            if let Some(at) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(raw.fill(), "closed during the upgrade");
        };
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        raw.buf.drain(..end);
        let (opcode, payload) = raw.read_frame().expect("login frame");
        assert_eq!(opcode, 0x1);
        let login: Value = serde_json::from_slice(&payload).expect("login is JSON");
        assert_eq!(login["code"], 200, "{login}");
        raw
    }

    /// More bytes into the buffer; false at the end of the stream (or a reset).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            assert!(
                Instant::now() < self.deadline,
                "nothing from the server within {WAIT:?}"
            );
            match self.s.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
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

    /// The next server frame (opcode, payload), or None if the stream ends first.
    fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.need(2) {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (len, at) = match b1 & 0x7f {
            126 => {
                if !self.need(4) {
                    return None;
                }
                (
                    usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    4,
                )
            }
            127 => panic!("no frame of 64 KiB or more expected here"),
            n => (usize::from(n), 2),
        };
        if !self.need(at + len) {
            return None;
        }
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((b0 & 0x0f, payload))
    }

    /// Reads frames until a close frame and returns its code.
    fn close_code(&mut self) -> u16 {
        // Bounded by the deadline in `fill`.
        loop {
            let (opcode, payload) = self.read_frame().expect("a close frame before the end");
            if opcode == 0x8 {
                assert!(payload.len() >= 2, "a close frame with a code: {payload:?}");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

// --- The attacks ---

#[test]
fn slowloris_handshakes_are_closed_at_their_deadline() {
    let server = ServerBuilder::new("atk-slowloris")
        .set("handshake_timeout", "2")
        .set("task_timeout", "1")
        .start();
    under_attack(&server, |server| {
        let mut conns: Vec<TcpStream> = (0..200)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
                s.write_all(b"GET /?access_token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
                    .expect("half a request");
                s.set_nonblocking(true).expect("non-blocking");
                s
            })
            .collect();
        wait_for("every half-open handshake to be closed", || {
            conns.retain_mut(|s| !closed_by_server(s));
            conns.is_empty().then_some(())
        });
    });
}

#[test]
fn rfc6455_violations_close_with_1002() {
    let server = ServerBuilder::new("atk-rfc").start();
    under_attack(&server, |server| {
        let mut raws: Vec<Raw> = (0..20).map(|i| Raw::logged_in(server, 1000 + i)).collect();
        for raw in &mut raws {
            raw.s
                .write_all(&client_frame(0x1, false, b"ping"))
                .expect("unmasked frame");
        }
        while_bystanders_chat();
        for raw in &mut raws {
            assert_eq!(raw.close_code(), 1002, "unmasked frame");
        }
    });
}

#[test]
fn oversized_frames_close_with_1009() {
    let server = ServerBuilder::new("atk-oversized")
        .set("max_message_size", "1024")
        .start();
    under_attack(&server, |server| {
        let big = "x".repeat(5000);
        let mut clients: Vec<Client> = (0..20).map(|i| server.login(1000 + i, "app")).collect();
        for c in &mut clients {
            c.send_text(&big);
        }
        while_bystanders_chat();
        for c in &mut clients {
            c.expect_close(1009);
        }
    });
}

#[test]
fn rate_floods_close_with_1008() {
    let server = ServerBuilder::new("atk-rate")
        .set("rate_limit", "5")
        .set("rate_limit_burst", "5")
        .start();
    // The bystanders are rate limited too: they chat at 4 frames a second each.
    let how = Bystanders {
        pace: Duration::from_millis(250),
    };
    under_attack_with(&server, how, |server| {
        let mut flooders: Vec<Client> = (0..5).map(|i| server.login(1000 + i, "app")).collect();
        for c in &mut flooders {
            for _ in 0..500 {
                // The server may close the connection before all 500 are written.
                if c.ws.write(Message::text("ping")).is_err() {
                    break;
                }
            }
            let _ = c.ws.flush();
        }
        while_bystanders_chat();
        for c in &mut flooders {
            let frames = c.expect_close(1008);
            assert!(
                frames
                    .iter()
                    .all(|f| *f == json!({"type": "pong"})
                        || (f["type"] == "error" && f["code"] == 429)),
                "only pongs and 429 errors before the close: {frames:?}"
            );
            assert!(frames.len() < 500, "not every ping was served");
        }
    });
}

#[test]
fn a_connection_flood_from_one_address_gets_429() {
    let server = ServerBuilder::new("atk-connflood")
        .set("connection_rate_per_ip", "20")
        .set("connection_burst_per_ip", "20")
        .start();
    let mut statuses = Vec::new();
    under_attack(&server, |server| {
        let mut held = Vec::new();
        for _ in 0..300 {
            let mut s = TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            // The server may answer 429 and close before reading the request.
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
            let mut head = [0u8; 64];
            let n = s.read(&mut head).expect("an answer");
            let text = String::from_utf8_lossy(&head[..n]).to_string();
            let status: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("status line: {text:?}"));
            statuses.push(status);
            held.push(s);
        }
        while_bystanders_chat();
    });
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "refused past the rate");
    assert!(statuses.contains(&200), "the burst is served");
}

#[test]
fn a_push_flood_with_a_wrong_secret_is_refused() {
    let server = ServerBuilder::new("atk-badsk").start();
    let mut refused = 0;
    under_attack(&server, |server| {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let datagram = json!({"sk": "wrong", "means": "to_uid",
            "data": {"to_uid": BYSTANDER_A.to_string(), "type": "chat", "content": {"value": "m0"}}})
        .to_string();
        let mut buf = [0u8; 65_536];
        let mut drain = |refused: &mut usize, sock: &UdpSocket| {
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                let reply: Value = serde_json::from_slice(&buf[..n]).expect("JSON reply");
                assert_eq!(reply["code"], 401, "{reply}");
                assert!(
                    reply.get("delivered").is_none_or(|d| d == 0),
                    "nothing delivered: {reply}"
                );
                *refused += 1;
            }
        };
        for batch in 0..50 {
            for _ in 0..100 {
                sock.send_to(datagram.as_bytes(), ("127.0.0.1", server.udp_port))
                    .expect("send");
            }
            if batch % 10 == 9 {
                drain(&mut refused, &sock);
            }
        }
        drain(&mut refused, &sock);
    });
    assert!(refused >= 1, "the flood was answered with 401");
    // The right secret still works after the flood.
    let ok = server.push(
        "to_uid",
        json!({"to_uid": "903", "type": "chat", "content": {"value": "after"}}),
    );
    assert_eq!(ok["code"], 0, "{ok}");
}

#[test]
fn a_slow_consumer_is_cut_off() {
    let server = ServerBuilder::new("atk-slow")
        .set("send_buffer_size", "262144")
        .set("slow_consumer_timeout", "1")
        .start();
    let mut pushes = 0;
    under_attack(&server, |server| {
        let _slow = server.login(903, "app");
        let filler = "s".repeat(30 * 1024);
        let cut = (0..4000).find(|i| {
            let reply = server.push(
                "to_uid",
                json!({"to_uid": "903", "type": "chat", "content": {"seq": i, "value": filler}}),
            );
            assert_eq!(reply["code"], 0, "{reply}");
            pushes += 1;
            reply["delivered"] == 0
        });
        assert!(
            cut.is_some(),
            "4000 pushes of 30 KB delivered to a client that never reads"
        );
        // The kernel may take more of the queue later (loopback buffers grow): pushing on keeps
        // the queue full, as a client that never reads would see it.
        wait_for("stats to count the slow consumer", || {
            let reply = server.push(
                "to_uid",
                json!({"to_uid": "903", "type": "chat", "content": {"value": filler}}),
            );
            assert_eq!(reply["code"], 0, "{reply}");
            (server.stats()["slow_consumers"].as_u64()? >= 1).then_some(())
        });
    });
    assert!(
        pushes * 30 * 1024 >= 262_144,
        "the send buffer was used first ({pushes} pushes)"
    );
    let online = server.push("online", json!({"uid": "903"}));
    assert_eq!(online["onLine"], 0, "the slow consumer is gone: {online}");
}

#[test]
fn trickled_http_requests_get_408_or_are_closed() {
    let server = ServerBuilder::new("atk-trickle")
        .set("http_request_timeout", "1")
        .start();
    let mut answers = Vec::new();
    under_attack(&server, |server| {
        let mut conns: Vec<(TcpStream, Vec<u8>)> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
                s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                    .expect("partial header");
                s.set_nonblocking(true).expect("non-blocking");
                (s, Vec::new())
            })
            .collect();
        let deadline = Instant::now() + WAIT;
        while !conns.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} trickled requests still open after {WAIT:?}",
                conns.len()
            );
            let mut i = 0;
            while i < conns.len() {
                let (s, got) = &mut conns[i];
                let mut ended = s.write_all(b"a").is_err();
                let mut buf = [0u8; 512];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            ended = true;
                            break;
                        }
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            ended = true;
                            break;
                        }
                    }
                }
                if ended || got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let (_, got) = conns.swap_remove(i);
                    answers.push(String::from_utf8_lossy(&got).into_owned());
                } else {
                    i += 1;
                }
            }
            // The attacker's own pace: one byte per connection every 100 ms.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(answers.len(), 50);
    for a in &answers {
        assert!(
            a.is_empty() || a.starts_with("HTTP/1.1 408"),
            "408 or closed: {a:?}"
        );
    }
    assert!(
        answers.iter().any(|a| a.starts_with("HTTP/1.1 408")),
        "the deadline is answered with 408: {answers:?}"
    );
    let (status, _) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
}
