//! One connection's state machine, driven directly over a scripted stream.

use super::*;
use crate::master::ws::admission::Admission;
use crate::master::ws::mock::{self, server_frames, MockStream};
use crate::master::ws::tests::{close_code, kinds, text_frame};
use crate::master::ws::WsStats;
use crate::protocol::frames as out;
use serde_json::{json, Value};

const PONG: &str = r#"{"type":"pong"}"#;

/// One session, its client's end of the stream, and what it reports.
struct Conn {
    s: Session<MockStream>,
    io: MockStream,
    cfg: SessionConfig,
    scratch: Vec<u8>,
    stats: WsStats,
    events: Vec<WsEvent>,
    admission: Admission,
    t0: Instant,
}

impl Conn {
    fn new() -> Self {
        let cfg = crate::master::session_config(&crate::config::Config::default());
        let io = MockStream::default();
        let t0 = Instant::now();
        let peer = "127.0.0.1:40000".parse().expect("addr");
        Conn {
            s: Session::new(io.clone(), ConnId(1), peer, t0, &cfg),
            io,
            cfg,
            scratch: vec![0u8; 64 * 1024],
            stats: WsStats::default(),
            events: Vec::new(),
            admission: crate::master::admission(&crate::config::Config::default()),
            t0,
        }
    }

    /// Upgraded, its login being checked.
    fn logging_in() -> Self {
        let mut c = Conn::new();
        let events = c.read(&mock::upgrade_request(7, "app", None));
        assert_eq!(kinds(&events), ["Login"]);
        c
    }

    /// Logged in as uid 7 (welcomed unless `held`), with what was written so far taken.
    fn opened_with(held: bool) -> Self {
        let mut c = Conn::logging_in();
        let source = Source::new("app").expect("source");
        assert!(c.s.open(Uid(7), source, !held, &c.cfg, c.t0));
        c.received();
        c
    }

    fn opened() -> Self {
        Conn::opened_with(false)
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// The client sends `bytes` in one piece and the session reads; returns what it reported.
    fn read(&mut self, bytes: &[u8]) -> Vec<WsEvent> {
        self.io.send(bytes);
        let (scratch, stats, events) = (&mut self.scratch, &mut self.stats, &mut self.events);
        self.s.on_readable(
            scratch,
            &self.cfg,
            self.t0,
            stats,
            events,
            &mut self.admission,
        );
        std::mem::take(&mut self.events)
    }

    fn send(&mut self, frame: &Bytes, secs: f64) -> bool {
        let now = self.at(secs);
        self.s.send(Outgoing::Frame(frame.clone()), &self.cfg, now)
    }

    fn sweep(&mut self, secs: f64) -> Sweep {
        let now = self.at(secs);
        self.s.sweep(now, &self.cfg)
    }

    /// Flushes; what the client received since the last look.
    fn received(&mut self) -> Vec<u8> {
        self.s.flush(&self.cfg).expect("flush");
        self.io.take_written()
    }

    fn frames(&mut self) -> Vec<(u8, Vec<u8>)> {
        server_frames(&self.received())
    }

    fn json(&mut self) -> Vec<Value> {
        let frames = self.frames();
        assert!(frames.iter().all(|(op, _)| *op == 1), "text frames only");
        frames
            .iter()
            .map(|(_, p)| serde_json::from_slice(p).expect("JSON"))
            .collect()
    }
}

fn error(code: u16, message: &str) -> Value {
    json!({"type": "error", "code": code, "message": message})
}

/// A request with `first_line` and these header lines.
fn request(first_line: &str, headers: &[&str]) -> Vec<u8> {
    format!(
        "{first_line}\r\nHost: x\r\n{}\r\n",
        headers
            .iter()
            .map(|h| format!("{h}\r\n"))
            .collect::<String>()
    )
    .into_bytes()
}

const WS_HEADERS: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

/// Frames of `size` bytes, each different.
fn big_frames(n: usize, size: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| out::text(format!("{i}{}", "x".repeat(size - 4)).as_bytes()))
        .collect()
}

#[test]
fn an_upgrade_asks_to_log_in_with_the_decoded_credentials_and_device() {
    let mut c = Conn::new();
    let events = c.read(&mock::upgrade_request(7, "app", Some("phone-1")));
    let [WsEvent::Login {
        conn,
        login,
        device,
    }] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(*conn, ConnId(1));
    assert_eq!(
        (login.uid, login.token.as_str(), login.source.as_str()),
        (Uid(7), "t7", "app")
    );
    assert_eq!(device.as_deref(), Some("phone-1"));
    assert_eq!(c.s.device(), Some("phone-1"));
    assert!(c.s.is_logging_in() && c.s.login().is_none());
    assert!(c.received().is_empty(), "the 101 waits for the login frame");
}

#[test]
fn the_first_sweep_of_a_login_releases_the_101_then_the_handshake_deadline_applies() {
    let mut c = Conn::logging_in();
    assert_eq!(c.sweep(0.5), Sweep::ReleaseUpgrade);
    assert!(c.received().starts_with(b"HTTP/1.1 101"));
    assert_eq!(c.sweep(4.4), Sweep::Nothing);
    // Refused (503, 1013) half a second before the 5 s from the connection.
    assert_eq!(c.sweep(4.5), Sweep::LoginTimedOut);
}

#[test]
fn a_bad_access_token_gets_a_401_login_frame_and_close_4001_without_a_login() {
    let mut c = Conn::new();
    let events = c.read(&request("GET /?access_token=%21%21 HTTP/1.1", &WS_HEADERS));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(c.stats.logins_refused, 1);
    let written = c.received();
    assert!(written.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    let frames = server_frames(&written);
    assert_eq!(frames.len(), 2, "{frames:?}");
    let login: Value = serde_json::from_slice(&frames[0].1).expect("JSON");
    assert_eq!(
        login,
        json!({"type": "login", "code": 401, "message": "unauthorized", "data": []})
    );
    assert_eq!(close_code(&frames[1]), Some(4001));
    assert!(!c.s.is_done(), "it waits for the peer's close");
}

#[test]
fn a_request_that_is_not_an_upgrade_is_reported_as_a_page() {
    let mut c = Conn::new();
    let events = c.read(&request("GET /demo?x=1 HTTP/1.1", &[]));
    let [WsEvent::Page { conn, request }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (*conn, request.path.as_str(), request.query.as_str()),
        (ConnId(1), "/demo", "x=1")
    );
    assert!(c.received().is_empty(), "the master answers");
    assert!(!c.s.is_done());
}

#[test]
fn a_bad_upgrade_gets_400_and_closes() {
    let version_12 = WS_HEADERS.map(|h| h.replace(": 13", ": 12"));
    let no_key: Vec<&str> = WS_HEADERS
        .iter()
        .copied()
        .filter(|h| !h.contains("Key"))
        .collect();
    let version_12: Vec<&str> = version_12.iter().map(String::as_str).collect();
    for bad in [
        request("GET /?access_token=x HTTP/1.1", &version_12),
        request("POST /?access_token=x HTTP/1.1", &WS_HEADERS),
        request("GET /?access_token=x HTTP/1.1", &no_key),
    ] {
        let mut c = Conn::new();
        assert!(c.read(&bad).is_empty());
        let written = c.received();
        assert!(
            written.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
            "{written:?}"
        );
        assert!(c.s.is_done(), "closed once written");
    }
}

#[test]
fn a_request_header_over_8_kib_gets_431() {
    let mut c = Conn::new();
    let pad = format!("X-Pad: {}", "a".repeat(9000));
    assert!(c.read(&request("GET / HTTP/1.1", &[&pad])).is_empty());
    let written = c.received();
    assert!(written.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert!(c.s.is_done());
}

#[test]
fn a_text_message_over_the_maximum_gets_error_400_and_stays_open() {
    let mut c = Conn::opened();
    let content = "a".repeat(c.cfg.max_message);
    let chat = format!(r#"{{"to_uid":"9","content":"{content}"}}"#);
    assert!(c.read(&mock::text(&chat)).is_empty());
    assert_eq!(
        c.json(),
        [error(400, "message too large (at most 65536 bytes)")]
    );
    assert!(c.s.is_open());
    assert!(c.read(&mock::text("ping")).is_empty());
    assert_eq!(c.json(), [json!({"type": "pong"})]);
}

#[test]
fn a_message_over_twice_the_maximum_closes_with_1009() {
    let mut c = Conn::opened();
    let chat = "a".repeat(2 * c.cfg.max_message + 1);
    assert_eq!(kinds(&c.read(&mock::text(&chat))), ["Offline"]);
    let frames = c.frames();
    assert_eq!(
        frames.iter().map(close_code).collect::<Vec<_>>(),
        [Some(1009)]
    );
}

#[test]
fn a_binary_frame_gets_error_400() {
    let mut c = Conn::opened();
    assert!(c.read(&mock::client_frame(0x82, &[1, 2, 3])).is_empty());
    assert_eq!(c.json(), [error(400, "binary frames are not supported")]);
    assert!(c.s.is_open());
}

#[test]
fn more_than_the_rate_burst_gets_429_then_close_1008() {
    let mut c = Conn::opened();
    let burst = c.cfg.frame_rate.burst as usize;
    // The burst passes, as many again are refused with a warning, the next one closes.
    let flood: Vec<u8> = (0..2 * burst + 1)
        .flat_map(|_| mock::text("ping"))
        .collect();
    assert_eq!(kinds(&c.read(&flood)), ["Offline"]);
    let frames = c.frames();
    assert_eq!(frames.len(), 2 * burst + 1);
    assert!(frames[..burst].iter().all(|f| *f == text_frame(PONG)));
    let warning = error(429, "rate limit exceeded");
    let json = |p: &[u8]| serde_json::from_slice::<Value>(p).expect("JSON");
    assert!(frames[burst..2 * burst]
        .iter()
        .all(|(op, p)| *op == 1 && json(p) == warning));
    assert_eq!(close_code(&frames[2 * burst]), Some(1008));
}

#[test]
fn a_json_or_bare_ping_gets_a_pong() {
    let mut c = Conn::opened();
    let mut both = mock::text(r#"{"type":"ping"}"#);
    both.extend(mock::text("ping"));
    assert!(c.read(&both).is_empty());
    assert_eq!(c.frames(), [text_frame(PONG), text_frame(PONG)]);
}

#[test]
fn a_websocket_ping_gets_a_pong_with_its_payload() {
    let mut c = Conn::opened();
    assert!(c
        .read(&mock::client_frame(0x89, b"are you there"))
        .is_empty());
    assert_eq!(c.frames(), [(0xA, b"are you there".to_vec())]);
}

#[test]
fn invalid_json_gets_error_400() {
    let mut c = Conn::opened();
    assert!(c.read(&mock::text("{not json")).is_empty());
    let answer = c.json();
    assert_eq!(answer.len(), 1);
    assert_eq!(
        (&answer[0]["type"], &answer[0]["code"]),
        (&json!("error"), &json!(400))
    );
    let message = answer[0]["message"].as_str().expect("a message");
    assert!(message.starts_with("invalid JSON"), "{message}");
    assert!(c.s.is_open());
}

#[test]
fn an_unmasked_frame_closes_with_1002_and_later_input_is_ignored() {
    let mut c = Conn::opened();
    assert_eq!(kinds(&c.read(b"\x81\x02hi")), ["Offline"]);
    let frames = c.frames();
    assert_eq!(
        frames.iter().map(close_code).collect::<Vec<_>>(),
        [Some(1002)]
    );
    let chat = mock::text(r#"{"to_uid":"9","content":1}"#);
    assert!(c.read(&chat).is_empty(), "not parsed");
    assert!(c.read(&mock::text("ping")).is_empty());
    assert!(c.received().is_empty(), "not answered");
    assert_eq!(c.sweep(1.9), Sweep::Nothing);
    assert_eq!(c.sweep(2.0), Sweep::Expired);
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let mut c = Conn::opened();
    assert_eq!(
        kinds(&c.read(&mock::client_frame(0x81, &[b'a', 0xff, 0xfe]))),
        ["Offline"]
    );
    let frames = c.frames();
    assert_eq!(
        frames.iter().map(close_code).collect::<Vec<_>>(),
        [Some(1007)]
    );
}

#[test]
fn the_peer_s_close_frame_ends_a_server_close_without_an_echo() {
    let mut c = Conn::opened();
    let mut events = Vec::new();
    c.s.close(4003, "kicked", c.t0, &mut events);
    assert_eq!(kinds(&events), ["Offline"]);
    assert_eq!(
        c.frames().iter().map(close_code).collect::<Vec<_>>(),
        [Some(4003)]
    );
    assert!(!c.s.is_done());
    let events = c.read(&mock::client_frame(0x88, &4003u16.to_be_bytes()));
    assert!(events.is_empty(), "Offline was reported once: {events:?}");
    assert!(c.received().is_empty(), "a close answers a close once");
    assert!(c.s.is_done());
}

#[test]
fn send_refuses_beyond_the_send_buffer_and_the_sweep_counts_from_the_refusal() {
    let mut c = Conn::opened();
    c.io.set_room(Some(0));
    let frames = big_frames(11, 100 * 1024);
    assert!(
        frames[..10].iter().all(|f| c.send(f, 0.0)),
        "10 x 100 KiB fit in 1 MiB"
    );
    assert!(!c.send(&frames[10], 1.0));
    assert_eq!(c.sweep(5.9), Sweep::Nothing);
    assert_eq!(c.sweep(6.0), Sweep::SlowConsumer);
}

#[test]
fn cut_off_takes_back_the_frames_never_started_but_not_a_half_written_one() {
    let mut c = Conn::opened();
    let frames = big_frames(3, 1000);
    c.io.set_room(Some(10));
    frames.iter().for_each(|f| assert!(c.send(f, 0.0)));
    let start = c.received();
    assert_eq!(start.len(), 10);
    let mut events = Vec::new();
    let (uid, dropped) = c.s.cut_off(c.t0, &mut events);
    assert_eq!(uid, Some(Uid(7)));
    assert_eq!(kinds(&events), ["Offline"]);
    let dropped: Vec<&[u8]> = dropped.iter().map(Outgoing::bytes).collect();
    assert_eq!(dropped, [&frames[1][..], &frames[2][..]]);
    c.io.set_room(None);
    let written = [start, c.received()].concat();
    let got = server_frames(&written);
    assert_eq!(got[0].1, out::payload(&frames[0]), "the first frame whole");
    assert_eq!(
        got[1..].iter().map(close_code).collect::<Vec<_>>(),
        [Some(1008)]
    );
}

#[test]
fn a_consumer_that_catches_up_under_half_the_buffer_is_not_cut_off() {
    let mut c = Conn::opened();
    c.io.set_room(Some(0));
    let frames = big_frames(11, 100 * 1024);
    frames[..10].iter().for_each(|f| assert!(c.send(f, 0.0)));
    assert!(!c.send(&frames[10], 0.0));
    // Six of the ten frames go: about 400 KiB stay queued, under half of 1 MiB.
    c.io.set_room(Some(6 * frames[0].len()));
    c.received();
    assert_eq!(c.sweep(5.0), Sweep::Nothing);
    assert_eq!(c.sweep(10.0), Sweep::Nothing, "the mark was cleared");
    assert!(c.s.is_open());
}

#[test]
fn before_welcome_what_is_sent_is_held_and_welcome_returns_it_in_order() {
    let mut c = Conn::logging_in();
    let source = Source::new("app").expect("source");
    assert!(c.s.open(Uid(7), source, false, &c.cfg, c.t0));
    let written = c.received();
    assert!(written.starts_with(b"HTTP/1.1 101") && server_frames(&written).is_empty());
    let (a, b) = (out::text(b"a"), out::text(b"b"));
    assert!(c.send(&a, 0.0) && c.send(&b, 0.0));
    assert!(c.received().is_empty(), "held for the login frame");
    assert!(c.s.welcome(out::text(b"login")), "it was waiting");
    assert_eq!(
        c.frames(),
        [text_frame("login"), text_frame("a"), text_frame("b")],
        "the login frame first, then what was held, in order"
    );
    assert!(!c.s.welcome(out::text(b"login")), "welcomed once");
    assert!(c.send(&out::text(b"c"), 0.0));
    assert_eq!(
        c.frames(),
        [text_frame("c")],
        "sent at once after the welcome"
    );
}

#[test]
fn held_bytes_are_bounded_by_the_send_buffer() {
    let mut c = Conn::opened_with(true);
    let frames = big_frames(11, 100 * 1024);
    assert!(frames[..10].iter().all(|f| c.send(f, 0.0)));
    assert!(!c.send(&frames[10], 0.0), "over the send buffer");
    assert!(c.s.welcome(out::text(b"login")));
    let written = c.frames();
    assert_eq!(
        written.len(),
        11,
        "the login frame and the ten held, none lost"
    );
}

#[test]
fn pongs_to_a_client_that_does_not_read_stay_bounded() {
    let mut c = Conn::opened();
    c.io.set_room(Some(0));
    let ping = mock::client_frame(0x89, &[b'p'; 125]);
    let flood: Vec<u8> = (0..10_000).flat_map(|_| ping.clone()).collect();
    assert!(c.read(&flood).is_empty());
    let queued = c.s.out.len();
    assert!(
        queued <= c.cfg.send_buffer,
        "{queued} bytes queued for a client that reads nothing"
    );
    assert_eq!(
        c.sweep(5.0),
        Sweep::SlowConsumer,
        "and it is cut off in time"
    );
}
