//! Cluster mode (PROTOCOL.md sections 2 to 6): three nodes sharing one Redis and one MariaDB act
//! as one server. Chats, pushes (UDP and HTTP), broadcasts, kicks and `online` reach users on
//! whichever node they are; a login of the same uid and source on another node displaces the
//! older connection; message ids from different nodes never collide.
mod common;
use common::cluster::start_cluster;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;

fn text(value: &str) -> Value {
    json!({"type": "text", "value": value})
}

/// The id of a successful push reply (UDP datagram or HTTP body), after checking it.
fn pushed(reply: &Value) -> String {
    assert_eq!(reply["code"], 0, "{reply}");
    assert!(
        reply["delivered"].as_u64().is_some_and(|n| n >= 1),
        "{reply}"
    );
    assert_eq!(reply["onLine"], 1, "{reply}");
    reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id is a string: {reply}"))
        .to_string()
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

/// `from` chats to `to_uid`; `to` receives it live (state 1) and `from` gets the ack.
fn chat_across(from: &mut Client, from_uid: u64, to: &mut Client, to_uid: u64, value: &str) {
    from.chat(to_uid, value);
    let got = to.recv();
    assert_eq!(got["type"], "chat", "{got}");
    assert_eq!(got["uid"], from_uid.to_string(), "{got}");
    assert_eq!(got["to_uid"], to_uid.to_string(), "{got}");
    assert_eq!(got["state"], 1, "{got}");
    assert_eq!(got["content"], text(value), "{got}");
    let id = got["id"].as_str().expect("id is a string");
    assert!(id.parse::<u64>().is_ok(), "decimal id: {got}");
    assert_eq!(
        from.recv(),
        json!({"type": "ack", "id": id, "to_uid": to_uid.to_string(), "state": 1})
    );
}

#[test]
fn chats_pushes_online_and_kick_reach_users_on_other_nodes() {
    let c = start_cluster("c3-chat", 3);
    let (a, b, cn) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let mut u1 = c.login(0, 1, "app");
    let mut u2 = c.login(1, 2, "app");
    let mut u3 = c.login(2, 3, "app");

    chat_across(&mut u1, 1, &mut u2, 2, "hello from A to B");
    chat_across(&mut u2, 2, &mut u1, 1, "hello from B to A");

    // UDP push to node C for user 1, who is on A.
    let data = json!({"to_uid": "1", "type": "chat", "uid": "9", "content": text("udp via C")});
    let reply = cn.push("to_uid", data);
    let id = pushed(&reply);
    let got = u1.recv();
    assert_eq!(got["id"], id.as_str(), "{got}");
    assert_eq!(got["to_uid"], "1", "{got}");
    assert_eq!(got["uid"], "9", "{got}");
    assert_eq!(got["content"], text("udp via C"), "{got}");

    // HTTP push to node B for user 3, who is on C.
    let data = json!({"to_uid": "3", "type": "chat", "uid": "9", "content": text("http via B")});
    let (status, reply) = http_push(b, "to_uid", data);
    assert_eq!(status, 200, "{reply}");
    let id = pushed(&reply);
    let got = u3.recv();
    assert_eq!(got["id"], id.as_str(), "{got}");
    assert_eq!(got["content"], text("http via B"), "{got}");

    // Presence of a user on C, asked at A; and of a uid nobody uses.
    let reply = a.push("online", json!({"uid": "3"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["onLine"], 1, "{reply}");
    assert_eq!(sorted_sources(&reply), vec!["app"], "{reply}");
    let reply = a.push("online", json!({"uid": "424242"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["onLine"], 0, "{reply}");

    for u in [&mut u1, &mut u2, &mut u3] {
        u.expect_nothing_queued();
    }

    // Kick of user 2 (on B), sent to A.
    let reply = a.push("kick", json!({"uid": "2"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert!(
        reply["delivered"].as_u64().is_some_and(|n| n >= 1),
        "{reply}"
    );
    let before = u2.expect_close(4003);
    assert!(before.is_empty(), "nothing before the kick: {before:?}");
    wait_for("user 2 to be offline everywhere", || {
        (cn.push("online", json!({"uid": "2"}))["onLine"] == 0).then_some(())
    });
    // The others stay.
    u1.expect_nothing_queued();
    u3.expect_nothing_queued();
    chat_across(&mut u3, 3, &mut u1, 1, "still here after the kick");
}

#[test]
fn broadcast_reaches_users_on_every_node_exactly_once() {
    let c = start_cluster("c3-bcast", 3);
    let mut users = vec![
        c.login(0, 1, "app"),
        c.login(0, 4, "pc"),
        c.login(1, 2, "app"),
        c.login(2, 3, "app"),
    ];

    // Over UDP to node B.
    let data = json!({"type": "notice", "content": text("to everybody, via B")});
    let reply = c.nodes[1].push("broadcast", data);
    assert_eq!(reply["code"], 0, "{reply}");
    let id = reply["id"].as_str().expect("id").to_string();
    for u in &mut users {
        let got = u.recv();
        assert_eq!(got["id"], id.as_str(), "{got}");
        assert_eq!(got["type"], "notice", "{got}");
        assert_eq!(got["content"], text("to everybody, via B"), "{got}");
        u.expect_nothing_queued();
    }

    // Over HTTP to node C.
    let data = json!({"type": "notice", "content": text("to everybody, via C")});
    let (status, reply) = http_push(&c.nodes[2], "broadcast", data);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["code"], 0, "{reply}");
    let id = reply["id"].as_str().expect("id").to_string();
    for u in &mut users {
        let got = u.recv();
        assert_eq!(got["id"], id.as_str(), "{got}");
        assert_eq!(got["content"], text("to everybody, via C"), "{got}");
        u.expect_nothing_queued();
    }
}

#[test]
fn same_uid_and_source_on_another_node_displaces_the_older_and_devices_coexist() {
    let c = start_cluster("c3-displace", 3);
    let mut u1 = c.login(1, 1, "app");

    // uid 4 from app on A, then on C.
    let mut old = c.login(0, 4, "app");
    let mut new = c.login(2, 4, "app");
    let before = old.expect_close(4002);
    assert_eq!(before.len(), 1, "one notice before the close: {before:?}");
    assert_eq!(before[0]["type"], "login", "{before:?}");
    assert_eq!(before[0]["code"], 441, "{before:?}");
    chat_across(&mut u1, 1, &mut new, 4, "to the newest connection");
    new.expect_nothing_queued();
    let reply = c.nodes[1].push("online", json!({"uid": "4"}));
    assert_eq!(reply["onLine"], 1, "{reply}");
    assert_eq!(sorted_sources(&reply), vec!["app"], "{reply}");

    // uid 5 from app on A and from pc on B: a chat from C reaches both.
    let mut u3 = c.login(2, 3, "app");
    let mut app = c.login(0, 5, "app");
    let mut pc = c.login(1, 5, "pc");
    u3.chat(5, "to both devices");
    let mut ids = HashSet::new();
    for device in [&mut app, &mut pc] {
        let got = device.recv();
        assert_eq!(got["uid"], "3", "{got}");
        assert_eq!(got["state"], 1, "{got}");
        assert_eq!(got["content"], text("to both devices"), "{got}");
        ids.insert(got["id"].as_str().expect("id").to_string());
        device.expect_nothing_queued();
    }
    assert_eq!(ids.len(), 1, "one message, one id: {ids:?}");
    let id = ids.into_iter().next().expect("id");
    assert_eq!(
        u3.recv(),
        json!({"type": "ack", "id": id, "to_uid": "5", "state": 1})
    );
    let reply = c.nodes[2].push("online", json!({"uid": "5"}));
    assert_eq!(reply["onLine"], 1, "{reply}");
    assert_eq!(sorted_sources(&reply), vec!["app", "pc"], "{reply}");
}

#[test]
fn message_ids_from_different_nodes_never_collide() {
    const PER_SENDER: usize = 100;
    let c = start_cluster("c3-ids", 3);
    // One chat sender on each node, to an offline uid.
    let senders: Vec<Client> = (0..3).map(|i| c.login(i, 11 + i as u64, "app")).collect();
    let ids: Vec<Vec<String>> = std::thread::scope(|s| {
        let mut threads = Vec::new();
        for (i, mut sender) in senders.into_iter().enumerate() {
            threads.push(s.spawn(move || {
                (0..PER_SENDER)
                    .map(|k| {
                        sender.chat(900, &format!("chat {i} {k}"));
                        let ack = sender.recv();
                        assert_eq!(ack["type"], "ack", "{ack}");
                        assert_eq!(ack["state"], 0, "900 is offline: {ack}");
                        ack["id"].as_str().expect("id").to_string()
                    })
                    .collect::<Vec<_>>()
            }));
        }
        for node in &c.nodes {
            threads.push(s.spawn(move || {
                (0..PER_SENDER)
                    .map(|k| {
                        let data = json!({"to_uid": "901", "type": "chat", "uid": "9", "content": text(&format!("push {k}"))});
                        let reply = node.push("to_uid", data);
                        assert_eq!(reply["code"], 0, "{reply}");
                        reply["id"].as_str().expect("id").to_string()
                    })
                    .collect::<Vec<_>>()
            }));
        }
        threads.into_iter().map(join_or_resume).collect()
    });
    let all: Vec<&String> = ids.iter().flatten().collect();
    let total = all.len();
    assert_eq!(total, 6 * PER_SENDER);
    let distinct: HashSet<&String> = all.into_iter().collect();
    assert_eq!(distinct.len(), total, "ids collided");
    // Every one of them is its own stored row: a collision would have merged two.
    wait_for("every message to be stored", || {
        let rows =
            c.db.try_query("SELECT COUNT(DISTINCT id) FROM chat WHERE to_uid IN (900, 901)")
                .ok()?;
        (rows[0][0] == total.to_string()).then_some(())
    });
}
