//! A login whose check does not come back in time is refused with the store-unavailable
//! answer (503, then close 1013) before the handshake deadline, not dropped at it.

use super::*;
use crate::master::ws::mock::{self, server_frames, written_json};
use crate::master::ws::tests::close_code;
use serde_json::json;

fn after(t0: Instant, d: Duration) -> Instant {
    t0 + d
}

/// A session upgraded at t0 (the configuration's defaults), its login being checked.
fn logging_in() -> (Session<mock::MockStream>, SessionConfig, Instant) {
    let cfg = crate::master::session_config(&crate::config::Config::default());
    let t0 = Instant::now();
    let io = mock::MockStream::default();
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let mut s = Session::new(io.clone(), ConnId(1), peer, t0, &cfg);
    io.send(&mock::upgrade_request(7, "app", None));
    let (mut scratch, mut events) = (vec![0; 4096], Vec::new());
    let mut stats = crate::master::ws::WsStats::default();
    let mut admission = crate::master::admission(&crate::config::Config::default());
    s.on_readable(
        &mut scratch,
        &cfg,
        t0,
        &mut stats,
        &mut events,
        &mut admission,
    );
    (s, cfg, t0)
}

#[test]
fn the_sweep_times_a_login_out_a_margin_before_the_handshake_deadline() {
    let (mut s, cfg, t0) = logging_in();
    assert!(s.is_logging_in());
    let refuse_at = cfg.handshake - LOGIN_ANSWER_MARGIN;
    assert_eq!(
        s.sweep(after(t0, Duration::from_millis(250)), &cfg),
        Sweep::ReleaseUpgrade
    );
    let just_before = refuse_at - Duration::from_millis(1);
    assert_eq!(s.sweep(after(t0, just_before), &cfg), Sweep::Nothing);
    assert_eq!(s.sweep(after(t0, refuse_at), &cfg), Sweep::LoginTimedOut);
}

#[test]
fn a_first_sweep_past_the_margin_refuses_at_once_without_releasing_the_101_alone() {
    let (mut s, cfg, t0) = logging_in();
    let late = after(t0, cfg.handshake - LOGIN_ANSWER_MARGIN / 2);
    assert_eq!(s.sweep(late, &cfg), Sweep::LoginTimedOut);
}

#[test]
fn the_table_answers_a_timed_out_login_with_503_and_1013_then_lets_its_answer_find_it_gone() {
    let t0 = Instant::now();
    let mut ws = mock::sessions();
    let handshake = crate::master::session_config(&crate::config::Config::default()).handshake;
    let (conn, stream, _) = mock::connect(&mut ws, 7, "app", t0);
    ws.sweep(after(t0, handshake - LOGIN_ANSWER_MARGIN));
    ws.flush();
    assert!(!ws.is_logging_in(conn), "no longer waiting for its check");
    let written = stream.take_written();
    assert!(written.starts_with(b"HTTP/1.1 101"), "upgraded first");
    let frames = server_frames(&written);
    assert_eq!(frames.len(), 2, "{frames:?}");
    let refused: serde_json::Value = serde_json::from_slice(&frames[0].1).expect("JSON");
    assert_eq!(
        refused,
        json!({"type": "login", "code": 503, "message": "service unavailable", "data": []})
    );
    assert_eq!(close_code(&frames[1]), Some(1013));
    assert_eq!(ws.stats().logins_refused, 1);
    // The check's answer, when it comes, cannot open it.
    let source = Source::new("app").expect("source");
    let late = after(t0, handshake);
    assert!(!ws.open(conn, Uid(7), source, true, late));
    assert!(written_json(&stream).is_empty());
}
