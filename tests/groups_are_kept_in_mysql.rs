//! With `[mysql]` on one node, groups live in MySQL (PROTOCOL.md section 12): the members
//! (`group_member`), each group message once (`group_message`), what a member is owed
//! (`group_owed`). A large group joins and leaves within the task timeout.
mod common;
use common::services::MariaDb;
use common::*;
use serde_json::{json, Value};

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

fn count(db: &MariaDb, sql: &str) -> String {
    db.query(sql)
        .first()
        .and_then(|r| r.first())
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_group_in_mysql_keeps_one_row_per_message_and_serves_offline_members() {
    let db = MariaDb::start();
    let server = ServerBuilder::new("groups-mysql")
        .extra(&format!("[mysql]\nurl = \"{}\"", db.url()))
        .start();
    let mut online = server.login(1, "app");
    const BASE: u64 = 20_000_000_000;
    for batch in 0..2u64 {
        let mut uids: Vec<String> = (0..10_000)
            .map(|i| (BASE + batch * 10_000 + i).to_string())
            .collect();
        if batch == 0 {
            uids.push("1".into());
        }
        let (status, r) = http_push(&server, "join_group", json!({"group": "big", "uids": uids}));
        assert_eq!(status, 200, "{r}");
    }
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM group_member WHERE grp = 'big'"),
        "20001"
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, r) = http_push(&server, "to_group", json!({"group": "big", "content": i}));
        assert_eq!(r["delivered"], 1, "{r}");
        assert_eq!(online.recv()["content"], i);
        ids.push(r["id"].as_str().expect("id").to_string());
    }
    wait_for("3 rows in group_message", || {
        (count(&db, "SELECT COUNT(*) FROM group_message") == "3").then_some(())
    });
    // An offline member gets the three at its login, in order, once.
    let mut late = server.login(BASE + 5, "app");
    let got: Vec<String> = recv_n(&mut late, 3)
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(got, ids);
    late.expect_nothing_queued();
    // Everyone leaves: the offline members are owed what was sent while they were members.
    let (status, r) = http_push(&server, "ungroup", json!({"group": "big"}));
    assert_eq!((status, &r["members"]), (200, &json!(0)), "{r}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM group_member"), "0");
    // 20,001 members, 2 of them had the 3 messages: the other 19,999 are owed 3 each.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM group_owed"),
        (19_999 * 3).to_string()
    );
    let mut other = server.login(BASE + 7, "app");
    assert_eq!(recv_n(&mut other, 3).len(), 3);
    other.expect_nothing_queued();
}
