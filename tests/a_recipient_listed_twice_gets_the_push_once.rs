//! A uid or connection id listed twice in `to_uids`, `uid_all` or `fd_all` is one recipient:
//! it gets the push once, `delivered` counts it once, and an offline uid gets one stored copy,
//! over UDP and over `POST /api/push` alike.
mod common;
use common::*;
use serde_json::{json, Value};

/// Sends the push through `door` ("udp" or "http") and returns the reply.
fn push(server: &Server, door: &str, means: &str, data: Value) -> Value {
    let body = json!({"sk": SECRET, "means": means, "data": data}).to_string();
    match door {
        "udp" => server.udp(body.as_bytes()),
        _ => {
            let (status, reply) = server.http("POST", "/api/push", &[], body.as_bytes());
            assert_eq!(status, 200, "{reply}");
            body_json(&reply)
        }
    }
}

#[test]
fn a_recipient_listed_twice_gets_the_push_once() {
    let server = Server::start("push-twice");
    let mut a = server.login(1, "app");
    let mut b = server.login(2, "app");
    for door in ["udp", "http"] {
        let uids = json!([1, "1", 2, 1, "2"]);
        for (means, key) in [("to_uids", "to_uids"), ("to_uid_all", "uid_all")] {
            let reply = push(&server, door, means, json!({key: uids, "content": door}));
            assert_eq!(reply["delivered"], 2, "{door} {means}: {reply}");
        }
        let fds = json!([a.fd, b.fd, a.fd, a.fd.to_string()]);
        let reply = push(
            &server,
            door,
            "to_fd_all",
            json!({"fd_all": fds, "content": door}),
        );
        assert_eq!(reply["delivered"], 2, "{door}: {reply}");
        for c in [&mut a, &mut b] {
            for _ in 0..3 {
                assert_eq!(c.recv()["content"], door);
            }
            c.expect_nothing_queued();
        }
        // Offline, listed three times: one copy kept, handed over at the next login.
        let uid = if door == "udp" { 30 } else { 31 };
        let reply = push(
            &server,
            door,
            "to_uids",
            json!({"to_uids": [uid, uid, uid], "content": door}),
        );
        assert_eq!(
            (&reply["code"], &reply["delivered"]),
            (&json!(0), &json!(0)),
            "{reply}"
        );
        let mut late = server.login(uid, "app");
        assert_eq!(late.recv()["content"], door);
        late.expect_nothing_queued();
    }
}
