use super::mock::{self, server_frames, written_json, MockStream};
use super::*;
use crate::protocol::frames as out;
use std::time::{Duration, Instant};

/// The kinds of `events`, in order.
pub(super) fn kinds(events: &[WsEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            WsEvent::Login { .. } => "Login",
            WsEvent::Page { .. } => "Page",
            WsEvent::Chat { .. } => "Chat",
            WsEvent::GroupChat { .. } => "GroupChat",
            WsEvent::Offline { .. } => "Offline",
            WsEvent::Undelivered { .. } => "Undelivered",
            WsEvent::Drained { .. } => "Drained",
            WsEvent::Closed { .. } => "Closed",
        })
        .collect()
}

/// The code of a close frame as `server_frames` gives it; None for any other frame.
pub(super) fn close_code((opcode, payload): &(u8, Vec<u8>)) -> Option<u16> {
    (*opcode == 8 && payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A server text frame of `payload` as `server_frames` decodes it.
pub(super) fn text_frame(payload: &str) -> (u8, Vec<u8>) {
    (1, payload.as_bytes().to_vec())
}

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

fn app() -> Source {
    Source::new("app").expect("source")
}

fn frame(payload: &str) -> Outgoing {
    Outgoing::Frame(out::text(payload.as_bytes()))
}

/// A connection that sent `bytes` as its first read (before the session read anything).
fn connect_with(ws: &mut Sessions<MockStream>, bytes: &[u8], now: Instant) -> (ConnId, MockStream) {
    let stream = MockStream::default();
    stream.send(bytes);
    let conn = ws.next_id();
    ws.insert(
        conn,
        stream.clone(),
        "127.0.0.1:40001".parse().expect("addr"),
        now,
    );
    ws.on_readable(conn, now);
    (conn, stream)
}

fn is_only_head(written: &[u8], status: &str) -> bool {
    written.starts_with(format!("HTTP/1.1 {status}").as_bytes())
        && written.ends_with(b"\r\n\r\n")
        && server_frames(written).is_empty()
}

#[test]
fn a_chat_from_a_logged_in_client_is_reported_with_its_content() {
    let now = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, now);
    stream.send(&mock::text(
        r#"{"to_uid":"9","type":"text","content":{"v":"hi"}}"#,
    ));
    ws.on_readable(conn, now);
    let events = ws.take_events();
    let [WsEvent::Chat {
        from,
        to,
        kind,
        text,
        content,
        ..
    }] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!((*from, *to, *kind), (Uid(7), Uid(9), "text"));
    assert_eq!(&text[content.clone()], br#"{"v":"hi"}"#);
    ws.flush();
    assert!(written_json(&stream).is_empty(), "nothing answered yet");
}

#[test]
fn the_101_is_held_until_the_login_frame_then_both_leave_in_one_flush() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream, login) = mock::connect(&mut ws, 7, "app", t0);
    assert!(matches!(login, WsEvent::Login { conn: c, .. } if c == conn));
    ws.flush();
    assert!(
        stream.take_written().is_empty(),
        "the 101 waits for the login frame"
    );
    assert!(ws.is_logging_in(conn));

    assert!(ws.open(conn, Uid(7), app(), true, t0));
    let login_ok = out::login_ok(Uid(7), "app", conn);
    assert!(ws.send(conn, Outgoing::Frame(login_ok.clone()), t0));
    ws.flush();
    let written = stream.take_written();
    assert!(written.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    let head = String::from_utf8_lossy(&written);
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert_eq!(
        server_frames(&written),
        vec![(1, out::payload(&login_ok).to_vec())]
    );
    assert_eq!(ws.login(conn), Some((Uid(7), app())));
    assert!(ws.take_events().is_empty());
}

#[test]
fn the_sweep_releases_the_held_101_when_the_login_is_slow() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream, _) = mock::connect(&mut ws, 7, "app", t0);
    ws.flush();
    assert!(stream.take_written().is_empty());

    ws.sweep(secs(t0, 1.0));
    ws.flush();
    assert!(is_only_head(&stream.take_written(), "101"), "the 101 alone");
    assert!(ws.is_logging_in(conn), "still waiting for its login");

    assert!(ws.open(conn, Uid(7), app(), true, secs(t0, 2.0)));
    let login_ok = out::login_ok(Uid(7), "app", conn);
    ws.send(conn, Outgoing::Frame(login_ok.clone()), secs(t0, 2.0));
    ws.flush();
    let written = stream.take_written();
    assert!(!written.starts_with(b"HTTP"), "the 101 went once");
    assert_eq!(
        server_frames(&written),
        vec![(1, out::payload(&login_ok).to_vec())]
    );
    assert!(ws.take_events().is_empty());
}

#[test]
fn frames_sent_behind_the_upgrade_request_are_read_once_the_session_is_opened() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let mut bytes = mock::upgrade_request(7, "app", None);
    bytes.extend(mock::text(
        r#"{"to_uid":9,"type":"chat","content":"early"}"#,
    ));
    let (conn, _stream) = connect_with(&mut ws, &bytes, t0);
    assert_eq!(kinds(&ws.take_events()), ["Login"]);
    ws.on_readable(conn, t0);
    assert!(
        ws.take_events().is_empty(),
        "nothing is read while the login is checked"
    );

    assert!(ws.open(conn, Uid(7), app(), true, t0));
    ws.read_pending(t0);
    let events = ws.take_events();
    let [WsEvent::Chat {
        from,
        to,
        text,
        content,
        ..
    }] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!((*from, *to), (Uid(7), Uid(9)));
    assert_eq!(&text[content.clone()], br#""early""#);
}

#[test]
fn a_partial_write_sends_the_rest_on_the_next_flush_in_order() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    stream.set_room(Some(5));
    let sent = ["one", "two", "three"].map(|p| out::text(p.as_bytes()));
    for f in &sent {
        assert!(ws.send(conn, Outgoing::Frame(f.clone()), t0));
    }
    ws.flush();
    let all: Vec<u8> = sent.concat();
    assert_eq!(stream.take_written(), all[..5], "what fits");

    stream.set_room(Some(0));
    ws.on_writable(conn);
    ws.flush();
    assert!(stream.take_written().is_empty(), "the socket would block");

    stream.set_room(None);
    ws.on_writable(conn);
    ws.flush();
    assert_eq!(stream.take_written(), all[5..], "the rest, in order");
    assert_eq!(ws.len(), 1);
    assert!(ws.take_events().is_empty());
}

#[test]
fn a_broken_socket_drops_the_session_with_offline_then_closed() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    stream.0.borrow_mut().broken = true;
    assert!(ws.send(conn, frame("lost"), t0));
    ws.flush();
    let events = ws.take_events();
    assert_eq!(kinds(&events), ["Offline", "Closed"]);
    assert!(matches!(events[0], WsEvent::Offline { conn: c, uid: Uid(7), .. } if c == conn));
    assert_eq!(ws.len(), 0);
}

#[test]
fn the_client_s_close_frame_is_echoed_and_the_session_dropped() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    stream.send(&mock::client_frame(0x88, &1000u16.to_be_bytes()));
    ws.on_readable(conn, t0);
    ws.flush();
    let frames = server_frames(&stream.take_written());
    assert_eq!(
        frames.iter().map(close_code).collect::<Vec<_>>(),
        [Some(1000)]
    );
    assert_eq!(
        kinds(&ws.take_events()),
        ["Offline", "Closed"],
        "Offline once"
    );
    assert_eq!(ws.len(), 0);
}

#[test]
fn the_end_of_stream_drops_the_session_with_offline_then_closed() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    stream.close();
    ws.on_readable(conn, t0);
    assert_eq!(kinds(&ws.take_events()), ["Offline"]);
    ws.flush();
    assert_eq!(kinds(&ws.take_events()), ["Closed"]);
    assert!(stream.take_written().is_empty());
    assert_eq!(ws.len(), 0);
}

#[test]
fn a_server_close_follows_the_queued_frames_and_expires_after_the_grace() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    ws.send(conn, frame("a"), t0);
    ws.send(conn, frame("b"), t0);
    ws.close(conn, 4002, "logged in elsewhere", t0);
    assert_eq!(kinds(&ws.take_events()), ["Offline"]);
    assert!(
        !ws.send(conn, frame("c"), t0),
        "a closing session takes nothing"
    );
    ws.flush();
    let frames = server_frames(&stream.take_written());
    assert_eq!(frames[..2], [text_frame("a"), text_frame("b")]);
    assert_eq!(close_code(&frames[2]), Some(4002));
    assert_eq!(frames.len(), 3);
    assert_eq!(ws.len(), 1, "it waits for the peer's close");

    ws.sweep(secs(t0, 1.9));
    assert!(ws.take_events().is_empty());
    ws.sweep(secs(t0, 2.0));
    assert_eq!(kinds(&ws.take_events()), ["Closed"]);
    assert_eq!(ws.len(), 0);
}

#[test]
fn an_idle_connection_is_closed_with_1001() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    ws.sweep(secs(t0, 59.9));
    ws.flush();
    assert!(ws.take_events().is_empty() && stream.take_written().is_empty());

    ws.sweep(secs(t0, 60.0));
    assert_eq!(kinds(&ws.take_events()), ["Offline"]);
    ws.flush();
    let frames = server_frames(&stream.take_written());
    assert_eq!(
        frames.iter().map(close_code).collect::<Vec<_>>(),
        [Some(1001)]
    );
    assert!(ws.login(conn).is_none());
}

#[test]
fn a_page_response_is_written_then_the_connection_dropped() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = connect_with(&mut ws, b"GET /demo HTTP/1.1\r\nHost: x\r\n\r\n", t0);
    assert_eq!(kinds(&ws.take_events()), ["Page"]);
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    ws.respond(conn, response, t0);
    ws.flush();
    assert_eq!(stream.take_written(), response);
    assert_eq!(kinds(&ws.take_events()), ["Closed"]);
    assert_eq!(ws.len(), 0);
}

#[test]
fn a_page_request_read_with_the_end_of_stream_is_still_reported() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let stream = MockStream::default();
    stream.send(b"GET /demo HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.close();
    let conn = ws.next_id();
    ws.insert(conn, stream, "127.0.0.1:40001".parse().expect("addr"), t0);
    ws.on_readable(conn, t0);
    assert_eq!(kinds(&ws.take_events()), ["Page"]);
}

#[test]
fn close_all_sends_1001_to_upgraded_connections_and_drops_the_others() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (open, open_io) = mock::open(&mut ws, 1, t0);
    let (_, logging_in_io, _) = mock::connect(&mut ws, 2, "app", t0);
    let (shaking, shaking_io) = connect_with(&mut ws, b"GET / HTTP/1.1\r\nHo", t0);
    ws.take_events();

    ws.close_all(t0);
    let events = ws.take_events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, WsEvent::Offline { conn, uid: Uid(1), .. } if *conn == open)));
    assert!(events
        .iter()
        .any(|e| matches!(e, WsEvent::Closed { conn } if *conn == shaking)));
    ws.flush();
    let codes = |w: &[u8]| server_frames(w).iter().map(close_code).collect::<Vec<_>>();
    assert_eq!(codes(&open_io.take_written()), [Some(1001)]);
    let written = logging_in_io.take_written();
    assert!(
        written.starts_with(b"HTTP/1.1 101"),
        "the held 101 goes first"
    );
    assert_eq!(codes(&written), [Some(1001)]);
    assert!(shaking_io.take_written().is_empty());
    assert_eq!(ws.len(), 2, "the upgraded ones wait for their peers' close");
    assert!(ws.take_events().is_empty());
}

#[test]
fn a_slow_consumer_is_cut_off_with_1008_and_its_unstarted_frames_reported() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    stream.set_room(Some(1000));
    let big = "x".repeat(100 * 1024);
    let sent: Vec<Bytes> = (0..10)
        .map(|i| out::text(format!("{i}{big}").as_bytes()))
        .collect();
    for f in &sent {
        assert!(ws.send(conn, Outgoing::Frame(f.clone()), t0));
    }
    ws.flush();
    let one_more = Outgoing::Frame(sent[0].clone());
    assert!(
        !ws.send(conn, one_more, secs(t0, 1.0)),
        "over the send buffer"
    );

    ws.sweep(secs(t0, 5.9));
    assert!(
        ws.take_events().is_empty(),
        "5 s from the refusal, not from the first send"
    );
    ws.sweep(secs(t0, 6.0));
    let events = ws.take_events();
    assert_eq!(kinds(&events), ["Offline", "Undelivered"]);
    let WsEvent::Undelivered {
        conn: c,
        uid,
        entries,
    } = &events[1]
    else {
        unreachable!()
    };
    assert_eq!((*c, *uid), (conn, Uid(7)));
    let undelivered: Vec<&[u8]> = entries.iter().map(Outgoing::bytes).collect();
    let expected: Vec<&[u8]> = sent[1..].iter().map(|f| &f[..]).collect();
    assert_eq!(
        undelivered, expected,
        "all but the half-written first frame"
    );
    assert_eq!(ws.stats().slow_consumers, 1);

    stream.set_room(None);
    ws.on_writable(conn);
    ws.flush();
    let frames = server_frames(&stream.take_written());
    assert_eq!(frames.len(), 2, "the first frame whole, then the close");
    assert_eq!(frames[0].1, out::payload(&sent[0]));
    assert_eq!(close_code(&frames[1]), Some(1008));
}

#[test]
fn a_broadcast_reaches_only_open_sessions_and_is_written_at_once() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (_, a) = mock::open(&mut ws, 1, t0);
    let (_, b) = mock::open(&mut ws, 2, t0);
    let (_, logging_in_io, _) = mock::connect(&mut ws, 3, "app", t0);
    let (_, page_io) = connect_with(&mut ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
    ws.take_events();

    let notice = out::text(br#"{"type":"notice"}"#);
    assert_eq!(ws.broadcast(&notice, t0), 2);
    assert_eq!(a.take_written(), notice, "written without a flush");
    assert_eq!(b.take_written(), notice);
    ws.flush();
    assert!(logging_in_io.take_written().is_empty());
    assert!(page_io.take_written().is_empty());
    assert!(a.take_written().is_empty(), "not written twice");
    assert!(ws.take_events().is_empty());
}

#[test]
fn a_chat_read_with_the_client_s_close_frame_is_still_reported() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    let mut bytes = mock::text(r#"{"to_uid":"9","content":"bye"}"#);
    bytes.extend(mock::client_frame(0x88, &1000u16.to_be_bytes()));
    stream.send(&bytes);
    ws.on_readable(conn, t0);
    // The session hands the chat over alone and waits for it to be applied (its ack first).
    let mut events = ws.take_events();
    assert_eq!(kinds(&events), ["Chat"]);
    assert!(ws.has_pending_reads());
    ws.read_pending(t0);
    ws.flush();
    events.extend(ws.take_events());
    assert_eq!(kinds(&events), ["Chat", "Offline", "Closed"]);
    let WsEvent::Chat {
        to, text, content, ..
    } = &events[0]
    else {
        unreachable!()
    };
    assert_eq!((*to, &text[content.clone()]), (Uid(9), &br#""bye""#[..]));
    let frames = server_frames(&stream.take_written());
    assert_eq!(
        frames.iter().map(close_code).collect::<Vec<_>>(),
        [Some(1000)]
    );
}

#[test]
fn a_connection_that_catches_up_after_its_queue_was_full_is_reported_drained() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let (conn, stream) = mock::open(&mut ws, 7, t0);
    stream.set_room(Some(0));
    let big = Outgoing::Frame(crate::protocol::frames::text(&vec![b'x'; 400 * 1024]));
    assert!(ws.send(conn, big.clone(), t0) && ws.send(conn, big.clone(), t0));
    assert!(!ws.send(conn, big, t0), "over the send buffer");
    ws.flush();
    assert!(ws.take_events().is_empty(), "still full");
    stream.set_room(None);
    ws.on_writable(conn);
    ws.flush();
    assert_eq!(kinds(&ws.take_events()), ["Drained"]);
    ws.on_writable(conn);
    ws.flush();
    assert!(ws.take_events().is_empty(), "once");
}
