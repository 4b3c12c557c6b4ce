//! Groups: membership answered by the store, sends to the members online here, what members
//! are owed, and where an offline member stands.

use super::*;
use crate::master::router::GroupChange;

/// `uids` join `group`, as the store answers it.
fn join(t: &mut T, group: &str, uids: &[u64]) {
    let list: Vec<String> = uids.iter().map(u64::to_string).collect();
    let body = format!(
        r#"{{"sk":"k","means":"join_group","data":{{"group":"{group}","uids":{}}}}}"#,
        json!(list)
    );
    assert_eq!(t.push(&body, 0), PushOutcome::Later);
    let actions = t.actions();
    let (_, Task::GroupJoin { uids: asked, .. }, Origin::Group { to, change }) =
        &tasks(&actions)[0]
    else {
        panic!("{:?}", names(&actions))
    };
    assert_eq!(asked.len(), uids.len());
    let members = uids.len() as u64;
    t.r.group_answered(*to, change.clone(), Reply::Members(members));
    let reply = replies(&t.actions());
    assert_eq!(
        reply,
        [(200, json!({"code":0,"msg":"ok","members":members}))]
    );
}

fn to_group(t: &mut T, group: &str, exclude: Option<u64>) -> (u16, Value) {
    let exclude = exclude.map_or(String::new(), |u| format!(r#","exclude_uid":"{u}""#));
    let body = format!(
        r#"{{"sk":"k","means":"to_group","data":{{"group":"{group}"{exclude},"content":[1]}}}}"#
    );
    now_reply(t.push(&body, 0))
}

#[test]
fn a_group_send_is_one_frame_to_every_member_connection_and_one_row() {
    let mut t = T::new(true, LIMIT);
    let (a, a2, b, c, x) = (
        t.online(1, "app"),
        t.online(1, "web"),
        t.online(2, "app"),
        t.online(3, "app"),
        t.online(4, "app"),
    );
    join(&mut t, "g", &[1, 2, 3, 9]);
    let (status, reply) = to_group(&mut t, "g", Some(3));
    assert_eq!((status, &reply["delivered"]), (200, &json!(3)), "{reply}");
    let id = id_of(&reply);
    for client in [&a, &a2, &b] {
        let got = t.got(client);
        assert_eq!(got.len(), 1, "once");
        assert_eq!(
            (id_of(&got[0]), &got[0]["to_group"]),
            (id.clone(), &json!("g"))
        );
    }
    assert!(t.got(&c).is_empty(), "excluded");
    assert!(t.got(&x).is_empty(), "not a member");
    let actions = t.actions();
    let stores: Vec<_> = tasks(&actions)
        .into_iter()
        .filter_map(|(_, task, _)| match task {
            Task::GroupStore(m) => {
                Some((m.id.to_string(), m.group.to_owned(), m.content.to_owned()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        stores,
        [(id, "g".to_owned(), "[1]".to_owned())],
        "kept once"
    );
    assert!(t.kept().is_empty(), "no one-to-one rows");
}

#[test]
fn an_unknown_group_delivers_nothing_and_keeps_nothing() {
    let mut t = T::new(true, LIMIT);
    let (status, reply) = to_group(&mut t, "nobody", None);
    assert_eq!((status, &reply["delivered"]), (200, &json!(0)));
    assert!(t.actions().is_empty());
}

#[test]
fn a_member_still_taking_older_messages_is_owed_what_its_take_did_not_bring() {
    let mut t = T::new(true, LIMIT);
    let a = t.online(1, "app");
    join(&mut t, "g", &[1, 2]);
    // 2 is logging in: its take is with a worker.
    let b = t.arrive(2, "app", None);
    let (_, first) = to_group(&mut t, "g", None);
    let (_, second) = to_group(&mut t, "g", None);
    assert_eq!(first["delivered"], 1, "only 1: {first}");
    assert_eq!(t.got(&a).len(), 2);
    let actions = t.actions();
    assert!(
        !names(&actions).contains(&"GroupOwed".to_owned()),
        "not before the take answers"
    );
    // Both are written (the next take waits for writes on their way).
    let writes: Vec<_> = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Task {
                    origin: Origin::GroupStored { .. },
                    ..
                }
            )
        })
        .map(|a| group_write(std::slice::from_ref(a)))
        .collect();
    for w in writes {
        answer_write(&mut t, w, Reply::Ok);
    }
    // The take brought the first (stored in time), not the second: the second is owed.
    let id = MessageId(id_of(&first).parse().expect("id"));
    let (frame, _) = frames::group_message(id, "push", Uid(0), "g", 1000, 0, "[1]");
    let frame = frame.to_vec();
    t.answer(&b, pending(vec![PendingFrame { id, frame }]));
    let actions = t.actions();
    let owed: Vec<_> = tasks(&actions)
        .into_iter()
        .filter_map(|(key, task, _)| match task {
            Task::GroupOwed { uid, ids } => Some((
                key,
                uid.0,
                ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(owed, [(2, 2, vec![id_of(&second)])], "on 2's slot, for 2");
    assert!(
        names(&actions).contains(&"FetchPending".to_owned()),
        "taken next"
    );
    let got = t.got(&b);
    assert_eq!(
        got.len(),
        2,
        "its login frame and the first, not the second live: {got:?}"
    );
}

#[test]
fn a_new_hold_of_an_online_member_first_records_what_it_had_live() {
    let mut t = T::new(true, LIMIT);
    let _a = t.online(1, "app");
    join(&mut t, "g", &[1]);
    let (_, reply) = to_group(&mut t, "g", None);
    let write = group_write(&t.actions());
    // Another device of 1 logs in: its take must not hand 1 what it had live.
    t.upgrade(&mock::upgrade_request(1, "web", None));
    let actions = t.actions();
    // The group's message is not written yet: the login's take waits for it.
    assert_eq!(names(&actions), ["GroupSeen"]);
    answer_write(&mut t, write, Reply::Ok);
    assert_eq!(
        names(&t.actions()),
        ["Login"],
        "once the message is written"
    );
    let (key, Task::GroupSeen { uid, seen }, _) = &tasks(&actions)[0] else {
        panic!("not a GroupSeen")
    };
    assert_eq!((*key, uid.0), (1, 1));
    assert_eq!(
        seen.iter()
            .map(|(g, id)| (g.to_string(), id.to_string()))
            .collect::<Vec<_>>(),
        [("g".to_owned(), id_of(&reply))]
    );
}

#[test]
fn members_chat_and_others_get_403() {
    let mut t = T::new(true, LIMIT);
    let (a, a2, b, x) = (
        t.online(1, "app"),
        t.online(1, "web"),
        t.online(2, "app"),
        t.online(3, "app"),
    );
    join(&mut t, "room", &[1, 2]);
    let chat = |t: &mut T, c: &Client| {
        let text = r#"{"to_group":"room","content":"hi"}"#;
        let range = text.len() - 5..text.len() - 1;
        let (ws, now) = (&mut t.ws, t.now);
        let group = GroupName::new("room").expect("name");
        t.r.group_chat(
            ws,
            c.conn,
            Uid(c.uid),
            group,
            "chat",
            text.as_bytes(),
            range,
            0,
            now,
        );
    };
    chat(&mut t, &a);
    let got = t.got(&b);
    assert_eq!(
        (&got[0]["content"], &got[0]["uid"], &got[0]["state"]),
        (&json!("hi"), &json!("1"), &json!(1))
    );
    let id = id_of(&got[0]);
    assert_eq!(t.got(&a2).len(), 1, "the sender's other connection");
    assert_eq!(
        t.got(&a),
        [json!({"type":"ack","id":id,"to_group":"room","state":1})]
    );
    chat(&mut t, &x);
    assert_eq!(
        t.got(&x),
        [json!({"type":"error","code":403,"message":"not a member of room"})]
    );
    assert!(t.got(&b).is_empty());
}

#[test]
fn a_member_going_offline_tells_the_store_where_it_stands() {
    let mut t = T::new(true, LIMIT);
    let a = t.online(1, "app");
    join(&mut t, "g", &[1]);
    let (_, reply) = to_group(&mut t, "g", None);
    let id = id_of(&reply);
    let write = group_write(&t.actions());
    answer_write(&mut t, write, Reply::Ok);
    t.r.offline(a.conn, Uid(1), src("app"));
    let actions = t.actions();
    let seen: Vec<_> = tasks(&actions)
        .into_iter()
        .filter_map(|(_, task, _)| match task {
            Task::GroupSeen { uid, seen } => {
                Some((uid.0, seen[0].0.to_owned(), seen[0].1.to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(seen, [(1, "g".to_owned(), id)]);
}

#[test]
fn a_join_past_the_limit_is_413_and_asks_nothing() {
    let mut t = T::new(true, LIMIT);
    t.r.set_max_group_members(2);
    join(&mut t, "g", &[1, 2]);
    let body = r#"{"sk":"k","means":"join_group","data":{"group":"g","uids":["2","3"]}}"#;
    let (status, reply) = now_reply(t.push(body, 0));
    assert_eq!((status, &reply["code"]), (413, &json!(413)));
    assert!(t.actions().is_empty());
    // A leave answered by the store shrinks the table: then 3 fits.
    t.r.group_answered(
        udp(),
        GroupChange::Leave(GroupName::new("g").expect("g"), vec![Uid(1)]),
        Reply::Members(1),
    );
    t.actions();
    let body = r#"{"sk":"k","means":"join_group","data":{"group":"g","uids":["3"]}}"#;
    assert_eq!(t.push(body, 0), PushOutcome::Later);
}

/// The group message write among `actions`: (key, body, group, id, retry).
fn group_write(actions: &[Action]) -> (u64, Bytes, GroupName, MessageId, bool) {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Task {
                key,
                body,
                origin: Origin::GroupStored { group, id, retry },
            } => Some((*key, body.clone(), group.clone(), *id, *retry)),
            _ => None,
        })
        .expect("a group message write")
}

fn answer_write(t: &mut T, write: (u64, Bytes, GroupName, MessageId, bool), reply: Reply) {
    let (key, body, group, id, retry) = write;
    t.r.group_write_answered(key, body, group, id, retry, reply, t.now);
}

#[test]
fn a_failed_group_write_is_tried_again_and_members_places_stop_before_it() {
    let mut t = T::new(true, LIMIT);
    let a = t.online(1, "app");
    join(&mut t, "g", &[1]);
    let (_, first) = to_group(&mut t, "g", None);
    let write = group_write(&t.actions());
    answer_write(&mut t, write, Reply::Failed(StoreUnavailable));
    let (_, second) = to_group(&mut t, "g", None);
    let write2 = group_write(&t.actions());
    answer_write(&mut t, write2, Reply::Ok);
    assert_eq!(t.got(&a).len(), 2, "both live");
    // Going offline: its place stops before the message not written yet.
    t.r.offline(a.conn, Uid(1), src("app"));
    let actions = t.actions();
    let seen: Vec<u64> = tasks(&actions)
        .into_iter()
        .filter_map(|(_, task, _)| match task {
            Task::GroupSeen { seen, .. } => Some(seen[0].1 .0),
            _ => None,
        })
        .collect();
    let first: u64 = id_of(&first).parse().expect("id");
    assert_eq!(
        seen,
        [first - 1],
        "not past {first} (second: {})",
        id_of(&second)
    );
    // Tried again a second later, on the group's slot, as a retry.
    t.r.retry_group_writes(t.now);
    assert!(t.actions().is_empty(), "not yet");
    t.r.retry_group_writes(t.now + Duration::from_secs(2));
    let (_, _, _, id, retry) = group_write(&t.actions());
    assert_eq!((id.0, retry), (first, true));
    assert_eq!(t.r.group_writes_waiting(), 0);
}

#[test]
fn a_group_message_no_other_node_heard_is_owed_to_all_but_those_here() {
    let mut t = T::cluster();
    let a = t.online(1, "app");
    join(&mut t, "g", &[1, 2]);
    let (_, reply) = to_group(&mut t, "g", None);
    assert_eq!(t.got(&a).len(), 1);
    let actions = t.actions();
    let (group, id) = actions
        .iter()
        .find_map(|a| match a {
            Action::Task {
                origin: Origin::GroupRoute { group, id },
                ..
            } => Some((group.clone(), *id)),
            _ => None,
        })
        .expect("a group route");
    assert_eq!(id.to_string(), id_of(&reply));
    t.r.group_route_answered(group, id, &Reply::Failed(StoreUnavailable));
    let actions = t.actions();
    let undelivered: Vec<_> = tasks(&actions)
        .into_iter()
        .filter_map(|(_, task, _)| match task {
            Task::GroupUndelivered { id, except, .. } => Some((id, except)),
            _ => None,
        })
        .collect();
    assert_eq!(
        undelivered,
        [(id, vec![Uid(1)])],
        "all but 1, who had it here"
    );
}

#[test]
fn while_the_subscription_is_lost_places_stop_at_what_was_heard_before() {
    let mut t = T::cluster();
    let a = t.online(1, "app");
    join(&mut t, "g", &[1]);
    let (_, before) = to_group(&mut t, "g", None);
    let write = group_write(&t.actions());
    answer_write(&mut t, write, Reply::Ok);
    t.r.subscription_lost();
    let (_, after) = to_group(&mut t, "g", None);
    let write = group_write(&t.actions());
    answer_write(&mut t, write, Reply::Ok);
    assert_ne!(id_of(&before), id_of(&after));
    t.r.offline(a.conn, Uid(1), src("app"));
    let actions = t.actions();
    let seen: Vec<String> = tasks(&actions)
        .into_iter()
        .filter_map(|(_, task, _)| match task {
            Task::GroupSeen { seen, .. } => Some(seen[0].1.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        [id_of(&before)],
        "what others published meanwhile may be missing"
    );
}

#[test]
fn a_relayed_group_message_older_than_one_heard_before_is_owed_to_places_past_it() {
    let mut t = T::cluster();
    let a = t.online(1, "app");
    t.r.group_changed_elsewhere(GroupChange::Join(
        GroupName::new("g").expect("g"),
        vec![Uid(1)],
    ));
    t.actions();
    let relay = |id: u64| {
        let meta = MessageMeta {
            id: MessageId(id),
            from: Uid(7),
            time: 1000,
            kind: "chat".into(),
            content: None,
        };
        let frame = format!(r#"{{"id":"{id}","to_group":"g"}}"#);
        ClusterMessage::Group {
            origin: "10.0.0.9:9501",
            group: "g",
            exclude: None,
            meta,
            frame: frame.as_bytes(),
        }
        .to_json()
    };
    t.inbound(&relay(200));
    assert!(!names(&t.actions()).contains(&"GroupUndelivered".to_owned()));
    t.inbound(&relay(100));
    assert_eq!(t.got(&a).len(), 2, "both delivered here");
    let actions = t.actions();
    let owed: Vec<_> = tasks(&actions)
        .into_iter()
        .filter_map(|(_, task, _)| match task {
            Task::GroupUndelivered {
                id,
                except,
                passed_only,
                ..
            } => Some((id.0, except, passed_only)),
            _ => None,
        })
        .collect();
    assert_eq!(owed, [(100, vec![Uid(1)], true)]);
}
