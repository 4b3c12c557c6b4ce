//! Logins, kept messages and slow consumers.

use super::*;

#[test]
fn a_login_displaces_the_older_connection_of_its_uid_and_source() {
    let elsewhere = || vec![refused(441, "logged in elsewhere"), close(4002)];
    for (old_device, new_device, to_old) in [
        (Some("dev"), Some("other"), elsewhere()),
        (None, None, elsewhere()),
        (Some("dev"), Some("dev"), vec![close(4002)]),
    ] {
        let mut t = T::new(false, LIMIT);
        let old = t.arrive(9, "app", old_device);
        t.answer(&old, pending(vec![]));
        let web = t.online(9, "web");
        assert_eq!(t.got(&old), [login_frame(&old)]);
        let new = t.arrive(9, "app", new_device);
        t.answer(&new, pending(vec![]));
        assert_eq!(t.got(&old), to_old, "{old_device:?} then {new_device:?}");
        assert_eq!(t.got(&new), [login_frame(&new)]);
        assert!(t.got(&web).is_empty(), "another source stays");
        let entries = t.r.registry().connections_of(Uid(9));
        let conns: Vec<ConnId> = entries.iter().map(|e| e.conn).collect();
        assert!(conns.len() == 2 && conns.contains(&new.conn) && !conns.contains(&old.conn));
        assert_eq!(t.r.stats().logins, 3);
    }
}

#[test]
fn a_refused_or_unchecked_login_gets_its_code_and_close() {
    for (reply, code, message, close_code) in [
        (Reply::Refused(Expired), 401, "expired", 4001),
        (Reply::Refused(Unauthorized), 401, "unauthorized", 4001),
        (
            Reply::Failed(StoreUnavailable),
            503,
            "service unavailable",
            1013,
        ),
    ] {
        let mut t = T::new(false, LIMIT);
        let c = t.arrive(9, "app", None);
        t.answer(&c, reply);
        assert_eq!(t.got(&c), [refused(code, message), close(close_code)]);
        assert!(!t.r.registry().is_online(Uid(9)));
        assert!(t.actions().is_empty());
        let stats = t.r.stats();
        assert_eq!((stats.logins, stats.logins_refused), (0, 1));
    }
}

#[test]
fn a_login_answered_after_its_client_left_requeues_what_was_taken_for_it() {
    let mut t = T::new(false, LIMIT);
    let c = t.arrive(9, "app", None);
    t.ws.close(c.conn, 1001, "gone", t.now);
    t.answer(&c, pending(vec![kept(5, "1"), kept(6, "2")]));
    assert_eq!(t.got(&c), [close(1001)], "no login frame");
    assert!(!t.r.registry().is_online(Uid(9)));
    assert_eq!(requeued(&t.actions()), [[5, 6]]);
}

#[test]
fn kept_messages_follow_the_login_frame_in_order_and_a_full_batch_fetches_more() {
    let mut t = T::new(false, LIMIT);
    let c = t.arrive(9, "app", None);
    let (a, b, c_) = (CONTENT, "1", "[2]");
    t.answer(&c, pending(vec![kept(103, a), kept(101, b), kept(102, c_)]));
    let kept_ones = [kept_json(103, a), kept_json(101, b), kept_json(102, c_)];
    let mut want = vec![login_frame(&c)];
    want.extend(kept_ones);
    assert_eq!(t.got(&c), want);
    assert!(t.actions().is_empty(), "nothing requeued or fetched");
    // A whole batch: more may wait.
    let c = t.arrive(10, "app", None);
    let batch = (0..PENDING_PER_LOGIN as u64).map(|i| kept(1000 + i, "0"));
    t.answer(&c, pending(batch.collect()));
    assert_eq!(t.got(&c).len(), PENDING_PER_LOGIN + 1);
    assert_eq!(names(&t.actions()), ["FetchPending"]);
}

#[test]
fn kept_messages_that_reach_no_connection_are_requeued() {
    let mut t = T::new(false, LIMIT);
    let c = t.online(9, "app");
    t.ws.close(c.conn, 1001, "bye", t.now); // closing, its Offline not applied yet
    let frames = pending(vec![kept(5, "1"), kept(6, "2")]);
    t.r.fetch_answered(&mut t.ws, Uid(9), frames, t.now);
    assert_eq!(t.got(&c), [close(1001)]);
    assert_eq!(requeued(&t.actions()), [[5, 6]]);
}

#[test]
fn a_slow_consumer_s_unsent_messages_are_kept_undelivered_then_requeued() {
    let mut t = T::new(false, LIMIT);
    let entries = || {
        let ack = Outgoing::Frame(frames::ack(MessageId(40), Uid(3), 1));
        let (id, frame) = (MessageId(42), frames::text(b"{}"));
        let message = Outgoing::Message(message(41, 9, CONTENT));
        vec![message, ack, Outgoing::Kept { id, frame }]
    };
    t.r.undelivered(Uid(9), entries());
    let actions = t.actions();
    assert_eq!(names(&actions), ["Store", "Requeue"]);
    let row = format!("41 7>9 text Undelivered {CONTENT}");
    assert_eq!(stored(&actions), [row]);
    assert_eq!(requeued(&actions), [[41, 42]]);
    // Another connection of the uid is still online: that device has them.
    t.online(9, "web");
    t.r.undelivered(Uid(9), entries());
    assert!(t.actions().is_empty() && t.r.store().is_idle());
}

#[test]
fn kept_messages_that_do_not_fit_come_once_the_connection_has_caught_up() {
    let mut t = T::new(false, LIMIT);
    let c = t.arrive(9, "app", None);
    let room = t.ws.config().send_buffer;
    let big = |id| kept(id, &format!("\"{}\"", "x".repeat(room / 3)));
    t.answer(&c, pending(vec![big(1), big(2), big(3), big(4)]));
    assert_eq!(t.got(&c).len(), 3, "the login frame and the two that fit");
    assert_eq!(requeued(&t.actions()), [[3, 4]]);
    // Nothing asked yet: the queue is still full.
    t.r.drained(Uid(8));
    assert!(t.actions().is_empty());
    t.r.drained(Uid(9));
    assert_eq!(names(&t.actions()), ["FetchPending"]);
    t.r.drained(Uid(9));
    assert!(t.actions().is_empty(), "once per wait");
}

#[test]
fn a_message_for_a_uid_whose_kept_messages_are_on_their_way_waits_behind_them() {
    let mut t = T::new(false, LIMIT);
    let (s7, c9) = (t.online(7, "app"), t.online(9, "app"));
    // Its kept messages are being taken.
    t.r.fetch(Uid(9));
    assert_eq!(names(&t.actions()), ["FetchPending"]);
    let room = t.ws.config().send_buffer;
    let big = |id| kept(id, &format!("\"{}\"", "x".repeat(room * 3 / 5)));
    t.r.fetch_answered(&mut t.ws, Uid(9), pending(vec![big(1), big(2)]), t.now);
    assert_eq!(requeued(&t.actions()), [[2]], "the second did not fit");
    t.got(&c9);
    // Meanwhile a chat to 9 is kept behind them, not sent live.
    t.chat(&s7, 9, "3", 0);
    let got = t.got(&c9);
    assert!(
        got.is_empty(),
        "{:?}",
        got.iter().map(|g| g["id"].clone()).collect::<Vec<_>>()
    );
    assert_eq!(t.got(&s7)[0]["state"], 0);
    assert_eq!(t.kept().len(), 1);
    t.r.drained(Uid(9));
    assert_eq!(names(&t.actions()), ["FetchPending"]);
    // The take brings 2 and 3, in order; the backlog ends and live messages flow again.
    let three = kept(3, "3");
    t.r.fetch_answered(&mut t.ws, Uid(9), pending(vec![big(2), three]), t.now);
    assert_eq!(
        t.got(&c9)
            .iter()
            .map(|m| m["id"].clone())
            .collect::<Vec<_>>(),
        [json!("2"), json!("3")]
    );
    assert!(t.actions().is_empty(), "nothing missed, nothing more");
    t.chat(&s7, 9, "4", 0);
    assert_eq!(t.got(&c9).len(), 1, "live again");
}

/// An upgrade request whose access token carries `token` for (uid, source).
fn upgrade_with(token: &str, uid: u64, source: &str) -> Vec<u8> {
    let access = crate::protocol::encode_access_token(token, uid, source);
    format!(
        "GET /?access_token={access} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: \
         Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_demo_token_is_judged_by_the_router_and_only_the_take_goes_to_a_worker() {
    let mut t = T::new(false, LIMIT);
    let token =
        t.r.mint_demo_token(Uid(9), src("pc"), t.now)
            .expect("random bytes");
    assert!(t.actions().is_empty(), "minting writes nothing");
    let (conn, stream) = t.upgrade(&upgrade_with(&token, 9, "pc"));
    let c = Client {
        conn,
        uid: 9,
        source: "pc",
        stream,
    };
    // No token check: the take of what was kept for 9 answers the login.
    let actions = t.actions();
    let asked: Vec<String> = tasks(&actions)
        .into_iter()
        .map(|(key, task, origin)| format!("{key} {task:?} {origin:?}"))
        .collect();
    let origin = format!(
        "{:?}",
        Origin::Login {
            conn,
            uid: Uid(9),
            source: src("pc")
        }
    );
    assert_eq!(asked, [format!("9 FetchPending(Uid(9)) {origin}")]);
    t.answer(&c, pending(vec![kept(77, "1")]));
    assert_eq!(t.got(&c), [login_frame(&c), kept_json(77, "1")]);
    assert_eq!(t.r.stats().logins, 1);
}

#[test]
fn a_demo_token_for_another_uid_or_source_goes_to_the_token_store_like_any_other() {
    let mut t = T::new(false, LIMIT);
    let token =
        t.r.mint_demo_token(Uid(9), src("pc"), t.now)
            .expect("random bytes");
    for (uid, source) in [(10, "pc"), (9, "app")] {
        t.upgrade(&upgrade_with(&token, uid, source));
        let creds = Credentials {
            uid: Uid(uid),
            token: token.clone(),
            source: src(source),
        };
        let actions = t.actions();
        let checks: Vec<String> = tasks(&actions)
            .into_iter()
            .map(|(_, task, _)| format!("{task:?}"))
            .collect();
        assert_eq!(checks, [format!("{:?}", Task::Login(creds))]);
    }
}
