//! `GET /metrics` is Prometheus text that a Prometheus parser reads line by line, and its
//! counters move with the traffic: logins and refusals, chats, pushes by door, means and reply
//! code, messages out by kind, bytes, rows kept, and the two latency histograms.
mod common;
use common::*;
use prometheus_parse::{LineInfo, Scrape, Value as Sample};
use serde_json::json;

/// Scrapes `/metrics`; panics unless every line is Prometheus text.
fn scrape(server: &Server) -> Scrape {
    let (status, body) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{body}");
    for line in body.lines() {
        assert_ne!(
            LineInfo::parse(line),
            LineInfo::Ignored,
            "not Prometheus text: {line:?}"
        );
    }
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the series `name{labels}` (labels as given, no others).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| {
            x.metric == name
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"));
    match sample.value {
        Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
        ref other => panic!("{name} is not a number: {other:?}"),
    }
}

#[test]
fn metrics_count_traffic_in_the_prometheus_format() {
    let server = Server::start("metrics-traffic");
    let before = scrape(&server);
    let moved = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        value(after, name, labels) - value(&before, name, labels)
    };

    let mut alice = server.login(1, "app");
    let mut bob = server.login(2, "app");
    alice.chat(2, "hello");
    assert_eq!(bob.recv()["content"]["value"], "hello");
    assert_eq!(alice.recv()["type"], "ack");
    let forged = wspush::protocol::encode_access_token("forged", 3, "app");
    server.connect(&forged, None).expect_close(4001);

    let content = json!({"type": "text", "value": "pushed"});
    let reply = server.push("to_uid", json!({"to_uid": "2", "content": content}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(bob.recv()["content"], content);
    let wrong_sk = json!({"sk": "wrong", "means": "to_uid", "data": {"to_uid": "2"}});
    assert_eq!(server.udp(wrong_sk.to_string().as_bytes())["code"], 401);
    let body = json!({"means": "to_uids", "data": {"to_uids": ["1", "2"], "content": content}});
    let auth = bearer();
    let headers = [("Authorization", auth.as_str())];
    let (status, reply) = server.http("POST", "/api/push", &headers, body.to_string().as_bytes());
    assert_eq!(status, 200, "{reply}");
    assert_eq!(alice.recv()["content"], content);
    assert_eq!(bob.recv()["content"], content);

    // Every message is kept (`storage.backup`): the chat and the three pushed messages. The
    // forged login's connection is gone once the server has read its close.
    let after = wait_for("four rows kept and two connections left", || {
        let s = scrape(&server);
        let rows = moved(&s, "wspush_store_rows_written_total", &[]);
        let conns = value(&s, "wspush_connections", &[("door", "ws")]);
        (rows >= 4.0 && conns == 2.0).then_some(s)
    });
    let expect = |name: &str, labels: &[(&str, &str)], n: f64| {
        assert_eq!(moved(&after, name, labels), n, "{name}{labels:?}");
    };
    expect("wspush_logins_total", &[], 2.0);
    expect(
        "wspush_login_refusals_total",
        &[("reason", "unauthorized")],
        1.0,
    );
    expect("wspush_messages_in_total", &[("kind", "chat")], 1.0);
    expect("wspush_messages_in_total", &[("kind", "push")], 2.0);
    expect("wspush_messages_out_total", &[("kind", "chat")], 1.0);
    expect("wspush_messages_out_total", &[("kind", "push")], 3.0);
    let udp_to_uid = [("door", "udp"), ("means", "to_uid")];
    expect("wspush_pushes_total", &udp_to_uid, 1.0);
    expect(
        "wspush_pushes_total",
        &[("door", "http"), ("means", "to_uids")],
        1.0,
    );
    let replies = "wspush_push_replies_total";
    expect(replies, &[("door", "udp"), ("code", "200")], 1.0);
    expect(replies, &[("door", "udp"), ("code", "401")], 1.0);
    expect(replies, &[("door", "http"), ("code", "200")], 1.0);
    // One message each: the chat, the push to a uid, the push to two uids.
    expect("wspush_delivery_latency_seconds_count", &[], 3.0);
    assert!(moved(&after, "wspush_task_duration_seconds_count", &[]) >= 5.0);
    for door in ["ws", "udp", "http"] {
        for name in ["wspush_bytes_in_total", "wspush_bytes_out_total"] {
            assert!(
                moved(&after, name, &[("door", door)]) > 0.0,
                "{name} {door}"
            );
        }
    }
    assert_eq!(value(&after, "wspush_online_users", &[]), 2.0);
    assert_eq!(value(&after, "wspush_ready", &[]), 1.0);
}
