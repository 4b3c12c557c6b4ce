//! Cluster mode: routes through Redis, inbound messages, presence.

use super::*;

#[test]
fn in_a_cluster_a_chat_is_routed_and_acked_by_the_route_s_answer() {
    let mut t = T::cluster();
    let (s7, s9) = (t.online(7, "app"), t.online(9, "app"));
    let answers = [
        (Reply::Routed { nodes: 1 }, false),
        (Reply::Failed(TimedOut), true),
    ];
    for (reply, here) in answers {
        t.chat(&s7, 9, CONTENT, 0);
        assert!(
            t.got(&s9).is_empty() && t.got(&s7).is_empty(),
            "all waits for Redis"
        );
        let (waiter, wire) = route(&t.actions());
        let Ok(ClusterMessage::Deliver {
            uid: Uid(9),
            meta,
            frame,
        }) = ClusterMessage::from_json(&wire)
        else {
            panic!("not a delivery")
        };
        let v: Value = serde_json::from_slice(frame).expect("JSON");
        let id = id_of(&v);
        assert_eq!(v, chat_json(&id, 7, 9, time_of(&v), 1, CONTENT));
        let (at, len) = meta.content.expect("content");
        let content = &frame[at as usize..(at + len) as usize];
        assert_eq!(content, CONTENT.as_bytes());
        let meta = (meta.id.to_string(), meta.from, &*meta.kind);
        assert_eq!(meta, (id.clone(), Uid(7), "text"));
        t.r.route_answered(&mut t.ws, waiter, 0, reply.clone(), t.now);
        assert_eq!(t.got(&s7), [ack(&id, 9, 1)]);
        let local = if here { vec![v] } else { vec![] };
        assert_eq!(t.got(&s9), local, "{reply:?}: here only as a fallback");
        assert_eq!(t.kept(), [format!("{id} 7>9 text Delivered {CONTENT}")]);
    }
}

#[test]
fn in_a_cluster_inbound_messages_reach_local_connections_and_displace_them() {
    let mut t = T::cluster();
    let (s9, s10) = (t.online(9, "app"), t.online(10, "app"));
    t.inbound(&deliver(&message(55, 9, CONTENT), None).to_json());
    assert_eq!(t.got(&s9), [chat_json("55", 7, 9, 1000, 1, CONTENT)]);
    assert!(t.got(&s10).is_empty());
    let fd = s9.conn.0;
    let wire = format!(r#"{{"t":"displace","uid":"9","source":"app","fd":{fd}}}"#);
    t.inbound(wire.as_bytes());
    let displaced = [refused(441, "logged in elsewhere"), close(4002)];
    assert_eq!(t.got(&s9), displaced);
    assert!(t.got(&s10).is_empty());
}

#[test]
fn in_a_cluster_a_push_is_answered_once_every_part_is_routed() {
    let mut t = T::cluster();
    let s9 = t.online(9, "app");
    let body = r#"{"sk":"k","means":"to_uids","data":{"to_uids":["9","10"],"content":1}}"#;
    let routed = vec![Reply::Routed { nodes: 1 }, Reply::Routed { nodes: 0 }];
    let actions = routed_push(&mut t, body, routed);
    let [(200, reply)] = &replies(&actions)[..] else {
        panic!("{actions:?}")
    };
    let counts = (&reply["delivered"], &reply["onLine"]);
    assert_eq!(counts, (&json!(1), &json!(1)));
    assert!(t.got(&s9).is_empty(), "delivered through Redis");
    let (id, kept) = (id_of(reply), t.kept());
    assert!(
        kept[0].starts_with(&format!("{id} 0>9 push Delivered")),
        "{kept:?}"
    );
    assert!(kept[1].ends_with(" 0>10 push Undelivered 1"), "{kept:?}");
    // Redis is down: what is local is delivered here; nobody local is a 503, nothing kept.
    let failed = |n: usize| vec![Reply::Failed(StoreUnavailable); n];
    let actions = routed_push(&mut t, body, failed(2));
    assert_eq!(replies(&actions)[0].1["delivered"], 1);
    assert_eq!(t.got(&s9).len(), 1);
    assert_eq!(t.kept().len(), 2);
    let to_10 = r#"{"sk":"k","means":"to_uid","data":{"to_uid":"10"}}"#;
    let actions = routed_push(&mut t, to_10, failed(1));
    let cannot = json!({"code":503,"msg":"cannot route: redis is down"});
    assert_eq!(replies(&actions), [(503, cannot)]);
    assert!(t.kept().is_empty());
}

#[test]
fn in_a_cluster_the_login_frame_waits_for_the_presence_write() {
    let mut t = T::cluster();
    let c = t.arrive(9, "app", Some("dev"));
    t.answer(&c, pending(vec![kept(5, "1")]));
    assert!(t.got(&c).is_empty(), "held until welcome");
    let actions = t.actions();
    let [Action::Presence(p), Action::AwaitPresence(waits)] = &actions[..] else {
        panic!("{:?}", names(&actions))
    };
    let change = (p.uid, p.source, p.conn, p.online, p.device.as_deref());
    assert_eq!(change, (Uid(9), src("app"), c.conn, true, Some("dev")));
    assert_eq!(*waits, c.conn);
    t.r.welcome(&mut t.ws, c.conn);
    assert_eq!(names(&t.actions()), ["FetchPending"]);
    // The login frame waits for that take too: what it brings comes behind the frame, and
    // what is sent after it is live.
    assert!(t.got(&c).is_empty(), "held until the take is answered");
    t.r.fetch_answered(&mut t.ws, Uid(9), pending(vec![kept(6, "2")]), t.now);
    assert_eq!(
        t.got(&c),
        [login_frame(&c), kept_json(5, "1"), kept_json(6, "2")]
    );
    t.r.offline(c.conn, Uid(9), src("app"));
    let actions = t.actions();
    let gone = matches!(&actions[..], [Action::Presence(p)] if p.conn == c.conn && !p.online);
    assert!(gone, "{actions:?}");
}

#[test]
fn in_a_cluster_what_was_held_and_no_longer_fits_at_welcome_is_requeued() {
    let mut t = T::cluster();
    let c = t.arrive(9, "app", None);
    let room = t.ws.config().send_buffer;
    let sized = |n: usize| kept(5, &format!("\"{}\"", "x".repeat(n)));
    let beside = sized(room).frame.len() - room; // the header and the fields around the content
    let big = sized(room - 20 - beside);
    assert_eq!(big.frame.len(), room - 20, "fits in what is held");
    t.answer(&c, pending(vec![big]));
    t.actions();
    t.r.welcome(&mut t.ws, c.conn);
    t.actions();
    t.r.fetch_answered(&mut t.ws, Uid(9), pending(vec![]), t.now);
    let (sent, actions) = (t.got(&c).len(), t.actions());
    let ok = sent == 2 || requeued(&actions) == [[5]];
    assert!(
        ok,
        "5 neither sent ({sent}) nor requeued: {:?}",
        names(&actions)
    );
}

#[test]
fn in_a_cluster_an_inbound_message_no_local_connection_takes_is_kept_undelivered() {
    let mut t = T::cluster();
    let c = t.online(9, "app");
    t.ws.close(c.conn, 1001, "bye", t.now); // closing, its Offline not applied yet
    let m = message(55, 9, CONTENT);
    let (end, len) = (m.json().len() as u32 - 1, CONTENT.len() as u32);
    t.inbound(&deliver(&m, Some((end - len, len))).to_json());
    assert_eq!(t.kept(), [format!("55 7>9 text Undelivered {CONTENT}")]);
}

#[test]
fn after_redis_returns_presence_is_rewritten_and_kept_messages_fetched() {
    let mut t = T::cluster();
    let (a, b) = (t.online(9, "app"), t.online(9, "web"));
    t.r.resync(&t.ws);
    let actions = t.actions();
    // Groups' membership is read again: changes published meanwhile were missed.
    assert_eq!(names(&actions), ["Resync", "GroupLoad", "FetchPending"]);
    let tasks = tasks(&actions);
    let (key, Task::Resync(changes), _) = &tasks[0] else {
        panic!("not a resync")
    };
    assert_eq!(*key, PRESENCE_KEY);
    let mut conns: Vec<_> = changes.iter().map(|c| (c.conn.0, c.online)).collect();
    conns.sort();
    assert_eq!(conns, [(a.conn.0, true), (b.conn.0, true)]);
}
