//! Groups in a cluster of three nodes sharing one Redis and one MariaDB: membership changed on
//! one node is known on every node; a group send from any node reaches every member
//! connection on every node once (but `exclude_uid`); members chat across nodes; an offline
//! member gets what was sent meanwhile at its next login on another node, even after the
//! node it was on was killed; membership survives a node's restart.
mod common;
use common::cluster::start_cluster;
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Waits until `node` knows `n` members of `group`; returns its `group_members` reply.
fn members_known(node: &Server, group: &str, n: usize) -> Value {
    wait_for(
        &format!("{n} members of {group} known on node {}", node.ws_port),
        || {
            let r = node.push("group_members", json!({"group": group}));
            (r["uids"].as_array().map(Vec::len) == Some(n)).then_some(r)
        },
    )
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|u| u.as_str().expect("uid string").to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn group_sends_and_chats_reach_every_member_on_every_node_once() {
    let c = start_cluster("groups-c3", 3);
    let mut alice = c.login(0, 1, "app");
    let mut bob_app = c.login(1, 2, "app");
    let mut bob_pc = c.login(2, 2, "pc");
    let mut carol = c.login(2, 3, "app");
    let mut dave = c.login(1, 4, "app");
    let mut outsider = c.login(0, 5, "app");
    let r = c.nodes[0].push(
        "join_group",
        json!({"group": "team", "uids": ["1", "2", "3", "4"]}),
    );
    assert_eq!(r, json!({"code": 0, "msg": "ok", "members": 4}));
    for node in &c.nodes {
        let r = members_known(node, "team", 4);
        assert_eq!(
            sorted(&r["online"]),
            ["1", "2", "3", "4"],
            "online anywhere: {r}"
        );
    }
    // A push on node 3, excluding dave.
    let r = c.nodes[2].push(
        "to_group",
        json!({"group": "team", "exclude_uid": "4", "content": "to all"}),
    );
    assert_eq!(r["code"], 0, "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    for client in [&mut alice, &mut bob_app, &mut bob_pc, &mut carol] {
        let got = client.recv();
        assert_eq!(
            (got["id"].as_str(), got["to_group"].as_str()),
            (Some(id.as_str()), Some("team")),
            "{got}"
        );
        client.expect_nothing_queued();
    }
    dave.expect_nothing_queued();
    outsider.expect_nothing_queued();
    // Carol (node 3) chats to the group: everyone else on every node, and her ack.
    carol.send(&json!({"to_group": "team", "type": "chat", "content": "hi team"}));
    let ack = carol.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["to_group"], "team", "{ack}");
    for client in [&mut alice, &mut bob_app, &mut bob_pc, &mut dave] {
        let got = client.recv();
        assert_eq!(got["id"], ack["id"], "{got}");
        assert_eq!(got["uid"], "3", "{got}");
        client.expect_nothing_queued();
    }
    carol.expect_nothing_queued();
    // A non-member on node 1 is refused.
    outsider.send(&json!({"to_group": "team", "type": "chat", "content": "me too"}));
    assert_eq!(outsider.recv()["code"], 403);
    // Leaving on node 2 is known everywhere.
    let r = c.nodes[1].push("leave_group", json!({"group": "team", "uids": ["4"]}));
    assert_eq!(r["members"], 3, "{r}");
    for node in &c.nodes {
        members_known(node, "team", 3);
    }
}

/// The nodes Redis names as having a member of `group` online, sorted.
fn group_nodes(c: &common::cluster::Cluster, group: &str) -> Vec<String> {
    let reply = c
        .redis
        .cmd(&["SMEMBERS", &format!("wspush:group_nodes:{group}")]);
    let mut nodes: Vec<String> = reply
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.as_string())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn a_group_message_goes_only_to_nodes_with_a_member_online() {
    let c = start_cluster("groups-c3-nodes", 3);
    let name = |i: usize| format!("127.0.0.1:{}", c.nodes[i].ws_port);
    let mut alice = c.login(0, 1, "app");
    let bob = c.login(1, 2, "app");
    let mut bystander = c.login(2, 3, "app");
    c.nodes[2].push("join_group", json!({"group": "few", "uids": ["1", "2"]}));
    let mut expected = vec![name(0), name(1)];
    expected.sort();
    wait_for("nodes 1 and 2 in the group's node set", || {
        (group_nodes(&c, "few") == expected).then_some(())
    });
    // Bob leaves: node 2 has no member online any more.
    bob.close();
    wait_for("node 2 out of the group's node set", || {
        (group_nodes(&c, "few") == [name(0)]).then_some(())
    });
    let before = (received(&c.nodes[0]), received(&c.nodes[1]));
    let r = c.nodes[2].push("to_group", json!({"group": "few", "content": "only here"}));
    assert_eq!(r["delivered"], 0, "no member on the node that took it: {r}");
    assert_eq!(alice.recv()["content"], "only here");
    wait_for("node 1 to count the group message", || {
        (received(&c.nodes[0]) == before.0 + 1).then_some(())
    });
    // Node 1 took it before node 2 could have: node 2 got nothing.
    assert_eq!(
        received(&c.nodes[1]),
        before.1,
        "node 2 has no member online"
    );
    bystander.expect_nothing_queued();
}

/// Messages published to `node` through Redis (`/metrics`).
fn received(node: &Server) -> u64 {
    let (status, body) = node.http("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("wspush_cluster_messages_received_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no cluster_messages_received in /metrics"))
}

#[test]
fn an_offline_member_gets_its_messages_on_another_node_after_its_node_was_killed() {
    let mut c = start_cluster("groups-c3-kill", 3);
    let mut alice = c.login(0, 1, "app");
    let erin = c.login(1, 7, "app");
    c.nodes[0].push("join_group", json!({"group": "g", "uids": ["1", "7"]}));
    for node in &c.nodes {
        members_known(node, "g", 2);
    }
    let live = c.nodes[0].push("to_group", json!({"group": "g", "content": "live"}));
    let mut erin = erin;
    assert_eq!(erin.recv()["id"], live["id"]);
    assert_eq!(alice.recv()["id"], live["id"]);
    erin.close();
    wait_for("erin offline", || c.presence(7).is_none().then_some(()));
    let mut sent = Vec::new();
    for i in 0..2 {
        let r = c.nodes[0].push(
            "to_group",
            json!({"group": "g", "content": format!("g{i}")}),
        );
        assert_eq!(alice.recv()["content"], format!("g{i}"));
        sent.push(r["id"].as_str().expect("id").to_string());
        alice.chat(7, &format!("c{i}"));
        let ack = alice.recv();
        sent.push(ack["id"].as_str().expect("id").to_string());
    }
    // Everything is written before the node erin was on dies.
    wait_for("group messages written", || {
        let rows = c.db.query("SELECT COUNT(*) FROM group_message");
        (rows.first().and_then(|r| r.first()).map(String::as_str) == Some("3")).then_some(())
    });
    c.nodes[1].signal(Signal::SIGKILL);
    let _ = c.nodes[1].wait_exit();
    let mut erin = c.login(2, 7, "app");
    let got: Vec<String> = recv_n(&mut erin, 4)
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(got, sent, "in id order, each once");
    erin.expect_nothing_queued();
}

#[test]
fn membership_survives_a_node_restart() {
    let mut c = start_cluster("groups-c3-restart", 2);
    c.nodes[0].push("join_group", json!({"group": "stay", "uids": ["11", "12"]}));
    members_known(&c.nodes[1], "stay", 2);
    c.nodes[1].signal(Signal::SIGTERM);
    c.nodes[1].wait_exit();
    let old = &c.nodes[1];
    let again = Server {
        dir: old.dir.clone(),
        config: old.config.clone(),
        ws_port: old.ws_port,
        udp_port: old.udp_port,
        http_port: old.http_port,
        child: None,
        tls: None,
    }
    .spawn();
    let r = again.push("group_members", json!({"group": "stay"}));
    assert_eq!(sorted(&r["uids"]), ["11", "12"], "{r}");
    c.nodes[1] = again;
}
