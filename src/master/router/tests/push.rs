//! Pushes, the store's back-pressure and its answers.

use super::*;

#[test]
fn a_push_to_a_uid_reaches_its_connections_with_its_data_id_and_time() {
    let mut t = T::new(true, LIMIT);
    let (app, web) = (t.online(9, "app"), t.online(9, "web"));
    let data = r#"{"to_uid":"9","type":"notice","content":[1]}"#;
    let body = format!(r#"{{"sk":"k","means":"to_uid","data":{data}}}"#);
    let (status, reply) = now_reply(t.push(&body, 0));
    let id = id_of(&reply);
    let want = json!({"code":0,"msg":"ok","id":id,"delivered":2,"onLine":1});
    assert_eq!((status, reply), (200, want));
    let frame = t.got(&app);
    let time = time_of(&frame[0]);
    let want = json!({"to_uid":"9","type":"notice","content":[1],"id":id,"time":time});
    assert_eq!(frame, [want]);
    assert_eq!(t.got(&web), frame);
    assert_eq!(t.kept(), [format!("{id} 0>9 notice Delivered [1]")]);
}

#[test]
fn a_push_to_uids_gives_each_uid_its_own_message() {
    let mut t = T::new(false, LIMIT);
    let s9 = t.online(9, "app");
    let data = r#"{"to_uids":["10","9"],"uid":"3","content":1}"#;
    let body = format!(r#"{{"sk":"k","means":"to_uids","data":{data}}}"#);
    let (status, reply) = now_reply(t.push(&body, 0));
    let first = id_of(&reply);
    let counts = (status, &reply["delivered"], &reply["onLine"]);
    assert_eq!(counts, (200, &json!(1), &json!(1)));
    let number = |id: &str| id.parse::<u64>().expect("a decimal id");
    let second = id_of(&t.got(&s9)[0]);
    assert!(
        number(&second) > number(&first),
        "the reply names the first"
    );
    let row = format!("{first} 3>10 push Undelivered 1");
    assert_eq!(t.kept(), [row], "9 got its own");
}

#[test]
fn a_uid_or_connection_listed_twice_gets_one_frame_one_count_and_one_row() {
    let mut t = T::new(false, LIMIT);
    let s9 = t.online(9, "app");
    let body = r#"{"sk":"k","means":"to_uids","data":{"to_uids":["9",10,9,"10"],"content":1}}"#;
    let (status, reply) = now_reply(t.push(body, 0));
    assert_eq!((status, &reply["delivered"]), (200, &json!(1)));
    assert_eq!(t.got(&s9).len(), 1, "9 once");
    let kept = t.kept();
    assert_eq!(kept.len(), 1, "one row for 10: {kept:?}");
    assert!(kept[0].ends_with(" 0>10 push Undelivered 1"), "{kept:?}");
    let fd = s9.conn.0;
    let body = format!(r#"{{"sk":"k","means":"to_fd_all","data":{{"fd_all":[{fd},{fd}]}}}}"#);
    assert_eq!(now_reply(t.push(&body, 0)).1["delivered"], 1);
    assert_eq!(t.got(&s9).len(), 1, "its connection once");
}

#[test]
fn a_broadcast_and_a_to_fd_push_reach_only_logged_in_connections() {
    let mut t = T::new(true, LIMIT);
    let (a, b) = (t.online(9, "app"), t.online(10, "app"));
    let waiting = t.arrive(11, "app", None);
    let body = r#"{"sk":"k","means":"broadcast","data":{"x":1}}"#;
    let (_, reply) = now_reply(t.push(body, 0));
    assert_eq!(reply["delivered"], 2);
    let frame = t.got(&a);
    let want = json!({"x":1,"id":id_of(&reply),"time":time_of(&frame[0])});
    assert_eq!(frame, [want]);
    assert_eq!(t.got(&b), frame);
    assert!(t.got(&waiting).is_empty());
    for (fd, delivered) in [(a.conn.0, 1), (waiting.conn.0, 0)] {
        let body = format!(r#"{{"sk":"k","means":"to_fd","data":{{"to_fd":{fd}}}}}"#);
        assert_eq!(now_reply(t.push(&body, 0)).1["delivered"], delivered);
    }
    assert_eq!(t.got(&a).len(), 1);
    assert!(t.got(&b).is_empty() && t.got(&waiting).is_empty());
    assert!(t.kept().is_empty(), "broadcasts are not kept");
}

#[test]
fn online_lists_the_sources_and_kick_closes_every_connection_with_4003() {
    let mut t = T::new(false, LIMIT);
    let (web, app) = (t.online(9, "web"), t.online(9, "app"));
    let online = |uid: u64| {
        let data = format!(r#"{{"uid":"{uid}"}}"#);
        format!(r#"{{"sk":"k","means":"online","data":{data}}}"#)
    };
    let sources = json!({"code":0,"msg":"ok","onLine":1,"sources":["app","web"]});
    assert_eq!(now_reply(t.push(&online(9), 0)), (200, sources));
    let none = json!({"code":0,"msg":"ok","onLine":0,"sources":[]});
    assert_eq!(now_reply(t.push(&online(10), 0)), (200, none));
    let kick = r#"{"sk":"k","means":"kick","data":{"uid":"9"}}"#;
    let kicked = json!({"code":0,"msg":"ok","delivered":2,"onLine":1});
    assert_eq!(now_reply(t.push(kick, 0)), (200, kicked));
    assert_eq!(t.got(&app), [close(4003)]);
    assert_eq!(t.got(&web), [close(4003)]);
}

#[test]
fn a_full_store_backlog_refuses_what_it_cannot_keep_and_lets_live_traffic_through() {
    let (id, time) = (IdGenerator::new(1).next_id(), crate::ids::unix_now());
    let (frame, _) = frames::message(id, "text", Uid(7), Uid(9), time, 1, "1");
    let full = 4 * frame.len();
    let mut t = T::new(true, full);
    let (s7, s9) = (t.online(7, "app"), t.online(9, "app"));
    for _ in 0..4 {
        t.chat(&s7, 9, "1", 0);
    }
    assert_eq!((t.got(&s7).len(), t.got(&s9).len()), (4, 4));
    assert!(!t.r.store().has_room(0));
    // Full: a message that reaches its recipient goes through, without its backup copy.
    t.chat(&s7, 9, "1", 0);
    assert_eq!(t.got(&s9).len(), 1);
    assert_eq!(t.got(&s7)[0]["state"], 1, "acked as delivered");
    assert_eq!(t.r.stats().backups_skipped, 1);
    let to_9 = r#"{"sk":"k","means":"to_uid","data":{"to_uid":"9"}}"#;
    assert_eq!(now_reply(t.push(to_9, 0)).0, 200);
    assert_eq!(t.got(&s9).len(), 1);
    assert_eq!(t.r.stats().backups_skipped, 2);
    // One that reaches nobody cannot be kept: refused, nothing delivered or kept.
    let busy = [json!({"type":"error","code":503,"message":"busy: try again later"})];
    let msg = "busy: the store is behind, try again later";
    let busy_push = (503, json!({"code":503,"msg":msg}));
    t.chat(&s7, 10, "1", 0);
    assert_eq!(t.got(&s7), busy);
    let to_10 = r#"{"sk":"k","means":"to_uid","data":{"to_uid":"10"}}"#;
    assert_eq!(now_reply(t.push(to_10, 0)), busy_push);
    // A push to several is refused as a whole, before anything is delivered.
    let to_both = r#"{"sk":"k","means":"to_uids","data":{"to_uids":["9","10"]}}"#;
    assert_eq!(now_reply(t.push(to_both, 0)), busy_push);
    assert!(t.got(&s9).is_empty());
    assert_eq!(t.r.stats().refused_busy, 3);
    assert_eq!(t.kept().len(), 4, "only the first four were kept");
    // Handed to the pool: the bytes in flight count there.
    assert!(t.r.store().has_room(0));
    t.chat(&s7, 10, "1", full);
    assert_eq!(t.got(&s7), busy);
    assert_eq!(t.r.stats().refused_busy, 4);
    t.chat(&s7, 10, "1", 0);
    assert_eq!(t.got(&s7)[0]["state"], 0, "room again: kept for 10");
}

#[test]
fn failed_store_writes_wait_for_a_probe_that_releases_them() {
    let mut t = T::new(false, LIMIT);
    let s7 = t.online(7, "app");
    let failed = || Reply::Failed(StoreUnavailable);
    let (key, first) = store_task(&mut t, &s7);
    t.r.store_answered(key, first.clone(), false, failed(), t.now);
    let (_, second) = store_task(&mut t, &s7);
    t.r.store_answered(key, second.clone(), false, failed(), t.now);
    assert_eq!(t.r.store().waiting_for_retry(), 2);
    t.r.probe_store(t.now);
    assert!(t.actions().is_empty(), "not due yet");
    let later = t.now + Duration::from_secs(1);
    t.r.probe_store(later);
    let probe = (9, first.clone(), "StoreProbe".to_owned());
    assert_eq!(bodies(&t.actions()), [probe]);
    assert_eq!(t.r.store().waiting_for_retry(), 1);
    t.r.store_answered(key, first, true, Reply::Ok, later);
    assert_eq!(bodies(&t.actions()), [(9, second, "Store".to_owned())]);
    assert_eq!(t.r.store().waiting_for_retry(), 0);
}

#[test]
fn a_write_the_store_refuses_is_counted_and_not_retried() {
    let mut t = T::new(false, LIMIT);
    let s7 = t.online(7, "app");
    let (key, body) = store_task(&mut t, &s7);
    let refused = Reply::Failed(StoreRefused);
    t.r.store_answered(key, body.clone(), false, refused, t.now);
    let partly = Reply::PartlyStored { refused: 2 };
    t.r.store_answered(key, body, false, partly, t.now);
    assert_eq!(t.r.stats().store_refused, 3);
    assert_eq!(t.r.store().waiting_for_retry(), 0);
    t.r.probe_store(t.now + Duration::from_secs(5));
    assert!(t.actions().is_empty());
}
