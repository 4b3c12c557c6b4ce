//! `to_uids`, `to_uid_all` and `to_fd_all` name their recipients in a list (PROTOCOL.md
//! section 5). Without that list (absent or `null`) the push is refused with 400 over UDP and
//! over HTTP and reaches nobody: a pusher that forgot the list must not reach everyone. An
//! empty list still means everyone.
mod common;
use common::*;
use serde_json::{json, Value};

const LISTS: [(&str, &str); 3] = [
    ("to_uids", "to_uids"),
    ("to_uid_all", "uid_all"),
    ("to_fd_all", "fd_all"),
];

/// The same push over UDP and over `POST /api/push`: both replies.
fn both_doors(server: &Server, means: &str, data: &Value) -> [(u16, Value); 2] {
    let body = json!({"sk": SECRET, "means": means, "data": data}).to_string();
    let udp = server.udp(body.as_bytes());
    let (status, http) = server.http("POST", "/api/push", &[], body.as_bytes());
    // A UDP reply's `code` 0 is the HTTP door's 200.
    let udp_status = match udp["code"].as_u64() {
        Some(0) => 200,
        code => code.unwrap_or_default() as u16,
    };
    [(udp_status, udp), (status, body_json(&http))]
}

#[test]
fn a_push_without_its_list_is_refused() {
    let server = Server::start("push-no-list");
    let mut a = server.login(1, "app");
    let mut b = server.login(2, "app");
    for (means, key) in LISTS {
        let missing = [json!({"content": "x"}), json!({key: null, "content": "x"})];
        for data in missing {
            for (status, reply) in both_doors(&server, means, &data) {
                assert_eq!(
                    (status, &reply["code"]),
                    (400, &json!(400)),
                    "{means} {data}: {reply}"
                );
                let msg = reply["msg"].as_str().unwrap_or_default();
                assert!(
                    msg.contains(&format!("data.{key}")),
                    "names the key: {reply}"
                );
            }
        }
    }
    // Nothing reached anyone; an empty list still reaches everyone.
    for c in [&mut a, &mut b] {
        c.expect_nothing_queued();
    }
    for (means, key) in LISTS {
        for (status, reply) in both_doors(&server, means, &json!({key: [], "content": means})) {
            assert_eq!((status, &reply["delivered"]), (200, &json!(2)), "{reply}");
        }
        for c in [&mut a, &mut b] {
            for _ in 0..2 {
                assert_eq!(c.recv()["content"], means);
            }
            c.expect_nothing_queued();
        }
    }
}
