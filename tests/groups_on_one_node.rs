//! Groups on one node (PROTOCOL.md, groups): membership by push means, a group send reaching
//! every member connection once, group chat from members (403 for others), group messages kept
//! once for offline members and handed over at login in id order with their one-to-one
//! messages, membership across a restart, and the 400 and 413 refusals.
mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn text(value: &str) -> Value {
    json!({"type": "text", "value": value})
}

fn members(server: &Server, group: &str) -> (Vec<String>, Vec<String>) {
    let r = server.push("group_members", json!({"group": group}));
    assert_eq!(r["code"], 0, "{r}");
    let list = |k: &str| -> Vec<String> {
        r[k].as_array()
            .unwrap_or_else(|| panic!("{k} is a list: {r}"))
            .iter()
            .map(|v| v.as_str().expect("uid string").to_string())
            .collect()
    };
    (list("uids"), list("online"))
}

#[test]
fn join_leave_members_and_ungroup() {
    let server = ServerBuilder::new("groups-members")
        .set("max_group_members", "3")
        .start();
    let _online = server.login(2, "app");
    let r = server.push("join_group", json!({"group": "team:1", "uids": ["1", 2]}));
    assert_eq!(r, json!({"code": 0, "msg": "ok", "members": 2}));
    let r = server.push("join_group", json!({"group": "team:1", "uids": ["2", "3"]}));
    assert_eq!(r["members"], 3, "a member joining again counts once: {r}");
    assert_eq!(
        members(&server, "team:1"),
        (vec!["1".into(), "2".into(), "3".into()], vec!["2".into()])
    );
    // Past max_group_members: 413, and nobody joined.
    let r = server.push("join_group", json!({"group": "team:1", "uids": ["4"]}));
    assert_eq!(r["code"], 413, "{r}");
    assert_eq!(members(&server, "team:1").0.len(), 3);
    let r = server.push("leave_group", json!({"group": "team:1", "uids": ["1"]}));
    assert_eq!(r, json!({"code": 0, "msg": "ok", "members": 2}));
    let r = server.push("ungroup", json!({"group": "team:1"}));
    assert_eq!(r, json!({"code": 0, "msg": "ok", "members": 0}));
    assert_eq!(members(&server, "team:1"), (vec![], vec![]));
    // Refusals: a bad name, a missing key, a list that is not one.
    for (means, data) in [
        ("join_group", json!({"group": "a b", "uids": ["1"]})),
        (
            "join_group",
            json!({"group": "x".repeat(65), "uids": ["1"]}),
        ),
        ("join_group", json!({"uids": ["1"]})),
        ("join_group", json!({"group": "g"})),
        ("join_group", json!({"group": "g", "uids": "1"})),
        ("leave_group", json!({"group": "g", "uids": {"1": 1}})),
        ("to_group", json!({"group": 7, "content": 1})),
        ("group_members", json!({})),
        ("ungroup", json!({"group": ""})),
    ] {
        let r = server.push(means, data.clone());
        assert_eq!(r["code"], 400, "{means} {data}: {r}");
    }
}

#[test]
fn a_group_send_reaches_every_member_connection_once() {
    let server = Server::start("groups-send");
    let mut a_app = server.login(1, "app");
    let mut a_pc = server.login(1, "pc");
    let mut b = server.login(2, "app");
    let mut excluded = server.login(3, "app");
    let mut outsider = server.login(4, "app");
    let r = server.push("join_group", json!({"group": "g", "uids": ["1", "2", "3"]}));
    assert_eq!(r["members"], 3, "{r}");
    let r = server.push(
        "to_group",
        json!({"group": "g", "exclude_uid": "3", "type": "notice", "uid": "9", "content": text("hi")}),
    );
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(r["delivered"], 3, "three connections: {r}");
    assert_eq!(r["onLine"], 1, "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    for c in [&mut a_app, &mut a_pc, &mut b] {
        let got = c.recv();
        assert_eq!(got["id"], id.as_str(), "{got}");
        assert_eq!(got["to_group"], "g", "{got}");
        assert_eq!(got["type"], "notice", "{got}");
        assert_eq!(got["uid"], "9", "{got}");
        assert_eq!(got["content"], text("hi"), "{got}");
        c.expect_nothing_queued();
    }
    excluded.expect_nothing_queued();
    outsider.expect_nothing_queued();
    // A group nobody joined: delivered 0, not an error.
    let r = server.push("to_group", json!({"group": "nobody", "content": 1}));
    assert_eq!(
        (r["code"].clone(), r["delivered"].clone()),
        (json!(0), json!(0)),
        "{r}"
    );
}

#[test]
fn an_excluded_member_does_not_get_the_message_later_either() {
    let server = Server::start("groups-exclude");
    server.push("join_group", json!({"group": "g", "uids": ["1", "2"]}));
    let r = server.push(
        "to_group",
        json!({"group": "g", "exclude_uid": "2", "content": "not for 2"}),
    );
    let r2 = server.push("to_group", json!({"group": "g", "content": "for both"}));
    let mut one = server.login(1, "app");
    assert_eq!(one.recv()["id"], r["id"]);
    assert_eq!(one.recv()["id"], r2["id"]);
    let mut two = server.login(2, "app");
    assert_eq!(two.recv()["id"], r2["id"], "only what was not excluded");
    two.expect_nothing_queued();
}

#[test]
fn members_chat_in_their_group_and_others_get_403() {
    let server = Server::start("groups-chat");
    let mut alice = server.login(1, "app");
    let mut alice_pc = server.login(1, "pc");
    let mut bob = server.login(2, "app");
    let mut eve = server.login(3, "app");
    server.push("join_group", json!({"group": "room", "uids": ["1", "2"]}));
    alice.send(&json!({"to_group": "room", "type": "chat", "content": text("hello room")}));
    let got = bob.recv();
    assert_eq!(got["to_group"], "room", "{got}");
    assert_eq!(got["uid"], "1", "{got}");
    assert_eq!(got["state"], 1, "{got}");
    assert_eq!(got["content"], text("hello room"), "{got}");
    let id = got["id"].as_str().expect("id").to_string();
    assert_eq!(
        alice_pc.recv()["id"],
        id.as_str(),
        "the sender's other connection has it"
    );
    assert_eq!(
        alice.recv(),
        json!({"type": "ack", "id": id, "to_group": "room", "state": 1})
    );
    alice.expect_nothing_queued();
    eve.send(&json!({"to_group": "room", "type": "chat", "content": text("let me in")}));
    assert_eq!(
        eve.recv(),
        json!({"type": "error", "code": 403, "message": "not a member of room"})
    );
    bob.expect_nothing_queued();
}

/// The ids of `n` frames, checking each is a message.
fn ids_of(c: &mut Client, n: usize) -> Vec<(String, Value)> {
    recv_n(c, n)
        .into_iter()
        .map(|m| (m["id"].as_str().expect("id").to_string(), m))
        .collect()
}

#[test]
fn an_offline_member_gets_group_and_own_messages_at_login_in_order_once() {
    let server = Server::start("groups-offline");
    let mut alice = server.login(1, "app");
    // Bob joins, is online for one message, then goes away.
    let mut bob = server.login(2, "app");
    server.push("join_group", json!({"group": "g", "uids": ["1", "2"]}));
    let live = server.push("to_group", json!({"group": "g", "content": "live"}));
    assert_eq!(bob.recv()["content"], "live");
    assert_eq!(alice.recv()["content"], "live");
    bob.close();
    wait_for("bob offline", || {
        (server.push("online", json!({"uid": "2"}))["onLine"] == 0).then_some(())
    });
    // While away: group messages and one-to-one chats, interleaved.
    let mut sent = Vec::new();
    for i in 0..3 {
        let r = server.push(
            "to_group",
            json!({"group": "g", "content": format!("g{i}")}),
        );
        assert_eq!(alice.recv()["content"], format!("g{i}"));
        sent.push(r["id"].as_str().expect("id").to_string());
        alice.chat(2, &format!("c{i}"));
        let ack = alice.recv();
        assert_eq!(ack["state"], 0, "kept for later: {ack}");
        sent.push(ack["id"].as_str().expect("id").to_string());
    }
    // Carol joins now: she gets nothing from before joining.
    server.push("join_group", json!({"group": "g", "uids": ["3"]}));
    // Bob leaves while offline: what was sent while he was a member still reaches him.
    let r = server.push("leave_group", json!({"group": "g", "uids": ["2"]}));
    assert_eq!(r["members"], 2, "{r}");
    let after = server.push(
        "to_group",
        json!({"group": "g", "content": "after leaving"}),
    );
    assert_eq!(alice.recv()["content"], "after leaving");
    let mut bob = server.login(2, "app");
    let got = ids_of(&mut bob, 6);
    assert_eq!(
        got.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        sent,
        "in id order, group and one-to-one merged: {got:?}"
    );
    for (_, m) in &got {
        assert_eq!(m["state"], 0, "{m}");
    }
    assert!(got
        .iter()
        .all(|(id, _)| *id != live["id"] && *id != after["id"]));
    bob.expect_nothing_queued();
    bob.close();
    wait_for("bob offline again", || {
        (server.push("online", json!({"uid": "2"}))["onLine"] == 0).then_some(())
    });
    let mut bob = server.login(2, "app");
    bob.expect_nothing_queued();
    // Carol gets what was sent after she joined, nothing from before.
    let mut carol = server.login(3, "app");
    assert_eq!(carol.recv()["id"], after["id"]);
    carol.expect_nothing_queued();
}

#[test]
fn membership_and_kept_group_messages_survive_a_restart() {
    let server = Server::start("groups-restart");
    server.push("join_group", json!({"group": "keep", "uids": ["5", "6"]}));
    let r = server.push("to_group", json!({"group": "keep", "content": "kept"}));
    let id = r["id"].as_str().expect("id").to_string();
    let mut server = server;
    server.signal(Signal::SIGTERM);
    server.wait_exit();
    let again = Server {
        dir: server.dir.clone(),
        config: server.config.clone(),
        ws_port: server.ws_port,
        udp_port: server.udp_port,
        http_port: server.http_port,
        child: None,
        tls: None,
    }
    .spawn();
    assert_eq!(
        members(&again, "keep").0,
        vec!["5".to_string(), "6".to_string()]
    );
    let mut five = again.login(5, "app");
    let got = five.recv();
    assert_eq!(
        (got["id"].as_str(), got["to_group"].as_str()),
        (Some(id.as_str()), Some("keep"))
    );
    let r = again.push("to_group", json!({"group": "keep", "content": "live"}));
    assert_eq!(r["delivered"], 1, "{r}");
    assert_eq!(five.recv()["content"], "live");
}

fn http_push(server: &Server, means: &str, data: Value) -> (u16, Value) {
    let body = json!({"sk": SECRET, "means": means, "data": data}).to_string();
    let (status, reply) = server.http(
        "POST",
        "/api/push",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (status, body_json(&reply))
}

#[test]
fn a_group_of_100000_members_joined_10000_per_request() {
    let server = Server::start("groups-100k");
    const BASE: u64 = 10_000_000_000;
    let mut member = server.login(BASE + 99_999, "app");
    for batch in 0..10u64 {
        let uids: Vec<String> = (0..10_000)
            .map(|i| (BASE + batch * 10_000 + i).to_string())
            .collect();
        let (status, r) = http_push(&server, "join_group", json!({"group": "big", "uids": uids}));
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["members"], (batch + 1) * 10_000, "{r}");
    }
    let (status, r) = http_push(
        &server,
        "join_group",
        json!({"group": "big", "uids": ["7"]}),
    );
    assert_eq!(
        (status, r["code"].clone()),
        (413, json!(413)),
        "the 100,001st: {r}"
    );
    let (_, r) = http_push(
        &server,
        "to_group",
        json!({"group": "big", "content": "all of you"}),
    );
    assert_eq!(r["delivered"], 1, "the one member online: {r}");
    assert_eq!(member.recv()["content"], "all of you");
    let (status, r) = http_push(&server, "group_members", json!({"group": "big"}));
    assert_eq!(status, 200);
    assert_eq!(r["uids"].as_array().map(Vec::len), Some(100_000));
    assert_eq!(r["online"], json!([(BASE + 99_999).to_string()]));
    // Too long for a datagram: the UDP reply says where to ask.
    let r = server.push("group_members", json!({"group": "big"}));
    assert_eq!(r["code"], 413, "{r}");
    // A message (not a membership change) stays within max_message_size over HTTP too.
    let big = "x".repeat(70_000);
    let (status, _) = http_push(&server, "to_group", json!({"group": "big", "content": big}));
    assert_eq!(status, 413);
    // And all 100,000 leave at once.
    let (status, r) = http_push(&server, "ungroup", json!({"group": "big"}));
    assert_eq!((status, &r["members"]), (200, &json!(0)), "{r}");
}
