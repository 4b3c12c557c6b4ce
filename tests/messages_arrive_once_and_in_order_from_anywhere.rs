//! The acceptance scenario of cluster mode: messages for one user, sent one after another from
//! every kind of origin (a chat from a user on one node, a UDP push to another, an HTTP push to
//! a third), arrive exactly once and in the order they were sent, both when they were kept
//! while the user was offline and when they are delivered live.
mod common;
use common::cluster::{start_cluster, Cluster};
use common::*;
use serde_json::{json, Value};

const RECIPIENT: u64 = 100;
const SENDER: u64 = 201;

/// Where a message comes from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// A chat from `SENDER`, logged in on node B.
    ChatOnB,
    /// A UDP `to_uid` push to node C.
    UdpToC,
    /// An HTTP `/api/push` `to_uid` to node A.
    HttpToA,
}

const ORIGINS: [Origin; 3] = [Origin::ChatOnB, Origin::UdpToC, Origin::HttpToA];

/// A message sent: its id (from the ack or the push reply), its text and where it came from.
#[derive(Debug)]
struct Sent {
    id: String,
    value: String,
    origin: Origin,
}

/// Sends message `seq` from `origin` and waits for its ack or reply; `online` says whether the
/// recipient is connected (ack state / delivered count).
fn send(c: &Cluster, sender: &mut Client, seq: usize, origin: Origin, online: bool) -> Sent {
    let value = format!("seq {seq:03}");
    let content = json!({"type": "text", "value": value});
    let data =
        json!({"to_uid": RECIPIENT.to_string(), "type": "chat", "uid": "9", "content": content});
    let reply = match origin {
        Origin::ChatOnB => {
            sender.chat(RECIPIENT, &value);
            let ack = sender.recv();
            assert_eq!(ack["type"], "ack", "{ack}");
            assert_eq!(ack["to_uid"], RECIPIENT.to_string(), "{ack}");
            assert_eq!(ack["state"], u8::from(online), "{ack}");
            ack
        }
        Origin::UdpToC => c.nodes[2].push("to_uid", data),
        Origin::HttpToA => {
            let body = json!({"sk": SECRET, "means": "to_uid", "data": data}).to_string();
            let (status, reply) = c.nodes[0].http(
                "POST",
                "/api/push",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            assert_eq!(status, 200, "{reply}");
            body_json(&reply)
        }
    };
    if !matches!(origin, Origin::ChatOnB) {
        assert_eq!(reply["code"], 0, "{origin:?}: {reply}");
        assert_eq!(reply["onLine"], u8::from(online), "{origin:?}: {reply}");
        let delivered = reply["delivered"].as_u64().expect("delivered");
        assert_eq!(delivered > 0, online, "{origin:?}: {reply}");
    }
    let id = reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{origin:?}: id is a string: {reply}"))
        .to_string();
    Sent { id, value, origin }
}

/// Reads one frame per message sent and checks that they are those messages, in order.
fn expect_in_order(client: &mut Client, sent: &[Sent], state: u8) {
    let got: Vec<Value> = recv_n(client, sent.len());
    let summary = |frames: &[Value]| -> Vec<String> {
        frames
            .iter()
            .map(|f| f["content"]["value"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let expected: Vec<&str> = sent.iter().map(|s| s.value.as_str()).collect();
    assert_eq!(
        summary(&got),
        expected,
        "received in the order sent, each once (sent: {sent:?})"
    );
    for (frame, s) in got.iter().zip(sent) {
        assert_eq!(frame["id"], s.id.as_str(), "{:?}: {frame}", s.origin);
        assert_eq!(frame["to_uid"], RECIPIENT.to_string(), "{frame}");
        assert_eq!(frame["type"], "chat", "{frame}");
        let from = match s.origin {
            Origin::ChatOnB => SENDER.to_string(),
            _ => "9".to_string(),
        };
        assert_eq!(frame["uid"], from, "{:?}: {frame}", s.origin);
        if matches!(s.origin, Origin::ChatOnB) {
            assert_eq!(frame["state"], state, "{frame}");
        }
    }
    // Nothing else: no duplicate, no stray message.
    client.expect_nothing_queued();
}

#[test]
fn messages_arrive_once_and_in_order_from_anywhere() {
    const OFFLINE: usize = 12;
    const ONLINE: usize = 12;
    let c = start_cluster("order", 3);
    let mut sender = c.login(1, SENDER, "app");

    // While the recipient is offline: kept, in order.
    let sent: Vec<Sent> = (0..OFFLINE)
        .map(|seq| send(&c, &mut sender, seq, ORIGINS[seq % 3], false))
        .collect();
    let mut recipient = c.login(0, RECIPIENT, "app");
    expect_in_order(&mut recipient, &sent, 0);

    // While the recipient is online on A: live, in order.
    let sent: Vec<Sent> = (OFFLINE..OFFLINE + ONLINE)
        .map(|seq| send(&c, &mut sender, seq, ORIGINS[seq % 3], true))
        .collect();
    expect_in_order(&mut recipient, &sent, 1);
    sender.expect_nothing_queued();
}

/// The live half of the scenario on its own, so that it is checked even when the stored half
/// fails.
#[test]
fn live_messages_arrive_once_and_in_order_from_anywhere() {
    const ONLINE: usize = 30;
    let c = start_cluster("order-live", 3);
    let mut sender = c.login(1, SENDER, "app");
    let mut recipient = c.login(0, RECIPIENT, "app");
    let sent: Vec<Sent> = (0..ONLINE)
        .map(|seq| send(&c, &mut sender, seq, ORIGINS[seq % 3], true))
        .collect();
    expect_in_order(&mut recipient, &sent, 1);
    sender.expect_nothing_queued();
}
