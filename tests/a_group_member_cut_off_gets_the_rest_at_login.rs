//! A group member whose connection stops reading is cut off as a slow consumer like any
//! other; the group messages it never got (its queue was full, or they were still queued
//! when it was cut) come at its next login, once each and in order, while the members that
//! read are not held up.
mod common;
use common::*;
use serde_json::json;

#[test]
fn what_a_cut_off_member_never_got_comes_at_its_next_login_once() {
    let server = ServerBuilder::new("group-slow")
        .set("send_buffer_size", "262144")
        .set("slow_consumer_timeout", "1")
        .start();
    let mut slow = server.login(1, "app");
    let mut reader = server.login(2, "app");
    let r = server.push("join_group", json!({"group": "g", "uids": ["1", "2"]}));
    assert_eq!(r["members"], 2, "{r}");
    let filler = "s".repeat(30 * 1024);
    let mut sent = 0u64;
    // Until the slow member's queue refuses one: then a few more, which it is owed too.
    let mut refused_at = None;
    while refused_at.is_none_or(|at| sent < at + 5) {
        let r = server.push(
            "to_group",
            json!({"group": "g", "content": {"seq": sent, "value": filler}}),
        );
        assert_eq!(r["code"], 0, "{r}");
        assert_eq!(
            reader.recv()["content"]["seq"],
            sent,
            "the reader is not held up"
        );
        if r["delivered"] == 1 && refused_at.is_none() {
            refused_at = Some(sent);
        }
        sent += 1;
        assert!(sent < 4000, "a member that never reads was never refused");
    }
    wait_for("the slow consumer to be cut off", || {
        (server.stats()["slow_consumers"].as_u64()? >= 1).then_some(())
    });
    // What reached its socket before the cut, then what it is owed: every message once.
    let (before, _) = slow.until_closed();
    let mut seen: Vec<u64> = before
        .iter()
        .filter_map(|f| f["content"]["seq"].as_u64())
        .collect();
    wait_for("member 1 offline", || {
        (server.push("online", json!({"uid": "1"}))["onLine"] == 0).then_some(())
    });
    let mut again = server.login(1, "app");
    while (seen.len() as u64) < sent {
        let f = again.recv();
        assert_eq!(f["state"], 0, "kept for it: {f}");
        assert_eq!(f["to_group"], "g", "{f}");
        seen.push(f["content"]["seq"].as_u64().expect("seq"));
    }
    let expected: Vec<u64> = (0..sent).collect();
    assert_eq!(seen, expected, "every group message exactly once, in order");
    again.expect_nothing_queued();
}
