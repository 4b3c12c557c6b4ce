//! A node that dies without a word (SIGKILL) stops sending heartbeats; the other nodes notice
//! within the node TTL and remove its users from presence (PROTOCOL.md section 6): they count as
//! offline, and a message to them is kept and handed over at their next login.
mod common;
use common::cluster::start_cluster;
use common::*;
use nix::sys::signal::Signal;
use serde_json::json;

/// User 1 chats to user 2 on the same node; 2 gets it live and 1 gets the ack.
fn local_chat(from: &mut Client, to: &mut Client, value: &str) {
    from.chat(2, value);
    let got = to.recv();
    assert_eq!(got["uid"], "1", "{got}");
    assert_eq!(got["state"], 1, "{got}");
    assert_eq!(got["content"]["value"], value, "{got}");
    let ack = from.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], got["id"], "{ack}");
    assert_eq!(ack["state"], 1, "{ack}");
}

#[test]
fn users_of_a_killed_node_go_offline_and_their_messages_wait_for_them() {
    let mut c = start_cluster("dead", 2);
    let mut u1 = c.login(0, 1, "app");
    let mut u2 = c.login(0, 2, "app");
    let u7 = c.login(1, 7, "app");
    let b_port = c.nodes[1].ws_port;
    let fd_info = format!("ws_fdInfo:127.0.0.1{b_port}");

    // While B lives, A sees 7 and Redis holds B's entries.
    let reply = c.nodes[0].push("online", json!({"uid": "7"}));
    assert_eq!(reply["onLine"], 1, "{reply}");
    assert_eq!(c.redis.cmd(&["EXISTS", &fd_info]).as_int(), Some(1));
    local_chat(&mut u1, &mut u2, "before B dies");

    c.nodes[1].signal(Signal::SIGKILL);
    c.nodes[1].wait_exit();
    drop(u7);

    // A notices through B's missing heartbeat, and keeps serving its own users meanwhile.
    let mut n = 0;
    wait_for("A to see user 7 offline", || {
        n += 1;
        local_chat(&mut u1, &mut u2, &format!("while B is dead {n}"));
        (c.nodes[0].push("online", json!({"uid": "7"}))["onLine"] == 0).then_some(())
    });
    wait_for("user 7 to leave ws_clientInfo", || {
        n += 1;
        local_chat(&mut u1, &mut u2, &format!("while B is dead {n}"));
        c.presence(7).is_none().then_some(())
    });
    assert_eq!(
        c.redis.cmd(&["EXISTS", &fd_info]).as_int(),
        Some(0),
        "B's ws_fdInfo is removed too"
    );
    let reply = c.nodes[0].push("online", json!({"uid": "7"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["onLine"], 0, "{reply}");

    // A message to 7 is kept, and handed over when 7 logs in on A.
    u1.chat(7, "for when you are back");
    let ack = u1.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["to_uid"], "7", "{ack}");
    assert_eq!(ack["state"], 0, "stored, not delivered: {ack}");
    let mut back = c.login(0, 7, "app");
    let got = back.recv();
    assert_eq!(got["type"], "chat", "{got}");
    assert_eq!(got["id"], ack["id"], "{got}");
    assert_eq!(got["uid"], "1", "{got}");
    assert_eq!(got["state"], 0, "{got}");
    assert_eq!(got["content"]["value"], "for when you are back", "{got}");
    back.expect_nothing_queued();

    // A is still whole: its users, old and new, chat and are reachable.
    local_chat(&mut u1, &mut u2, "after B died");
    back.chat(1, "hello again");
    let got = u1.recv();
    assert_eq!(got["uid"], "7", "{got}");
    assert_eq!(got["state"], 1, "{got}");
    assert_eq!(back.recv()["state"], 1);
    u1.expect_nothing_queued();
    u2.expect_nothing_queued();
}
