//! Redis is the cluster's shared state. While it is down a node refuses new logins (503, then
//! close 1013) and cannot route to other nodes (503), but its connected users keep talking to
//! each other; when Redis is back (empty: it keeps nothing on disk) logins and cross-node
//! routing work again without restarting any node.
mod common;
use common::cluster::{start_cluster, Cluster};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn all_subscribed(c: &Cluster) -> bool {
    c.nodes.iter().all(|n| {
        n.try_stats()
            .is_some_and(|s| s["cluster"]["subscribed"] == true)
    })
}

/// `from` (uid `from_uid`) chats to `to`, on the same node: delivered live, acked with state 1.
fn chat(from: &mut Client, from_uid: u64, to: &mut Client, to_uid: u64, value: &str) {
    from.chat(to_uid, value);
    let got = to.recv();
    assert_eq!(got["uid"], from_uid.to_string(), "{got}");
    assert_eq!(got["state"], 1, "{got}");
    assert_eq!(got["content"]["value"], value, "{got}");
    let ack = from.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], got["id"], "{ack}");
    assert_eq!(ack["to_uid"], to_uid.to_string(), "{ack}");
    assert_eq!(ack["state"], 1, "{ack}");
}

fn access_token(uid: u64) -> String {
    wspush::protocol::encode_access_token(&format!("tok{uid}app"), uid, "app")
}

#[test]
fn a_redis_outage_is_survived() {
    let mut c = start_cluster("outage", 2);
    let mut u1 = c.login(0, 1, "app");
    let mut u2 = c.login(0, 2, "app");
    let mut u3 = c.login(1, 3, "app");
    chat(&mut u1, 1, &mut u3, 3, "before the outage");
    // A login record for a newcomer, written while Redis is up.
    c.nodes[0].register(4, "app", "tok4app", far_future());

    c.redis.stop();

    // A new login cannot be checked: refused with 503, closed with 1013.
    let mut newcomer = c.nodes[0].connect(&access_token(4), None);
    let (frames, ending) = newcomer.until_closed();
    assert_eq!(frames.len(), 1, "one frame before the close: {frames:?}");
    assert_eq!(frames[0]["type"], "login", "{frames:?}");
    assert_eq!(frames[0]["code"], 503, "{frames:?}");
    assert!(
        matches!(ending, Ending::Close(1013, _)),
        "closed with 1013: {ending:?}"
    );

    // Users already on A keep talking to each other.
    for i in 0..3 {
        chat(&mut u1, 1, &mut u2, 2, &format!("during the outage {i}"));
        chat(
            &mut u2,
            2,
            &mut u1,
            1,
            &format!("answer during the outage {i}"),
        );
    }

    // A push for user 3, on B, sent to A cannot be routed.
    let data = json!({"to_uid": "3", "type": "chat", "uid": "9", "content": {"type": "text", "value": "nowhere"}});
    let reply = c.nodes[0].push("to_uid", data);
    assert_eq!(reply["code"], 503, "{reply}");

    c.redis.restart();

    // Redis came back empty: the login server writes the record again, and logins work.
    let mut attempts = 0;
    let mut back = wait_for("a new login on A to succeed", || {
        attempts += 1;
        let body = json!({"sk": SECRET, "uid": "4", "source": "app", "token": "tok4app", "expires": far_future()});
        let (status, _) = c.nodes[0].http("POST", "/api/login", &[], body.to_string().as_bytes());
        if status != 200 {
            return None;
        }
        let mut client = c.nodes[0].connect(&access_token(4), None);
        let login = client.recv();
        assert_eq!(login["type"], "login", "{login}");
        (login["code"] == 200).then_some(client)
    });
    eprintln!("a login succeeded at attempt {attempts}");
    back.expect_nothing_queued();
    wait_for("both nodes to be subscribed again", || {
        all_subscribed(&c).then_some(())
    });

    // Cross-node chat works again: user 3, connected to B all along, is reachable from A.
    let deadline = Instant::now() + WAIT;
    let mut tries = 0;
    let acked = loop {
        tries += 1;
        let value = format!("after the outage {tries}");
        u1.chat(3, &value);
        let ack = u1.recv();
        assert_eq!(ack["type"], "ack", "{ack}");
        if ack["state"] == 1 {
            break (ack, value);
        }
        assert!(
            Instant::now() < deadline,
            "a chat from A to 3 (connected to B all along) is still acked {ack} after {tries} \
             tries; ws_clientInfo 3 = {:?}",
            c.presence(3)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("delivered at try {tries}");
    let (ack, value) = acked;
    // Earlier tries, if any, were stored and may come first (state 0).
    let got = (0..tries)
        .map(|_| u3.recv())
        .find(|f| f["id"] == ack["id"])
        .unwrap_or_else(|| panic!("user 3 never got {ack}"));
    assert_eq!(got["content"]["value"], value.as_str(), "{got}");
    assert_eq!(got["state"], 1, "{got}");
    // And the other way round.
    u3.chat(1, "from B after the outage");
    let got = u1.recv();
    assert_eq!(got["uid"], "3", "{got}");
    assert_eq!(got["content"]["value"], "from B after the outage", "{got}");
    assert_eq!(u3.recv()["state"], 1);
}

#[test]
fn stats_tell_when_the_cluster_subscription_is_lost() {
    let mut c = start_cluster("outage-stats", 1);
    assert!(all_subscribed(&c));
    c.redis.stop();
    wait_for(
        "stats to show cluster.subscribed false while Redis is down",
        || {
            let stats = c.nodes[0].try_stats()?;
            (stats["cluster"]["subscribed"] == false).then_some(())
        },
    );
    c.redis.restart();
    wait_for("stats to show cluster.subscribed true again", || {
        all_subscribed(&c).then_some(())
    });
}

#[test]
fn a_killed_subscriber_is_replaced_and_routing_resumes() {
    let c = start_cluster("subscriber-killed", 2);
    let mut u1 = c.login(0, 11, "app");
    let mut u2 = c.login(1, 12, "app");
    // Node B's subscriber: the child of its master started as `cluster-subscriber`.
    let master = c.nodes[1].pid();
    let subscriber = subscriber_of(master).expect("a subscriber process");
    send_signal(subscriber, nix::sys::signal::Signal::SIGKILL);
    // A new subscriber, and routing to node B live again.
    wait_for("a new subscriber on node B", || {
        let s = c.nodes[1].try_stats()?;
        (s["cluster"]["subscribed"] == true
            && subscriber_of(master).is_some_and(|p| p != subscriber))
        .then_some(())
    });
    u1.chat(12, "after");
    assert_eq!(u1.recv()["state"], 1, "delivered live");
    assert_eq!(u2.recv()["content"]["value"], "after");
    u2.send_text("ping");
    assert_eq!(u2.recv(), json!({"type": "pong"}), "nothing twice");
}

/// The pid of a node's subscriber: the child of its master started as `cluster-subscriber`.
fn subscriber_of(master: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|p: &u32| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("cluster-subscriber"))
        })
}
