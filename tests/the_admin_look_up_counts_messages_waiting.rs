//! The dashboard's look-up of a uid (`GET /api/admin/user`) says how many messages wait for
//! its next login: one-to-one ones and group ones, as the store counts them.
mod common;
use common::*;
use serde_json::json;

#[test]
fn a_look_up_counts_what_waits_for_the_uid() {
    let server = Server::start("admin-waiting");
    let auth = bearer();
    let look_up = |uid: u64| {
        let path = format!("/api/admin/user?uid={uid}");
        let (status, body) = server.http("GET", &path, &[("Authorization", auth.as_str())], b"");
        assert_eq!(status, 200, "{body}");
        body_json(&body)
    };
    let nothing = look_up(5);
    assert_eq!(
        nothing["waiting"],
        json!({"chats": 0, "groups": 0}),
        "{nothing}"
    );
    assert_eq!(nothing["online_here"], false);
    for i in 0..2 {
        let r = server.push("to_uid", json!({"to_uid": "5", "content": i}));
        assert_eq!(r["code"], 0, "{r}");
    }
    server.push("join_group", json!({"group": "g", "uids": ["5"]}));
    server.push("to_group", json!({"group": "g", "content": "g"}));
    wait_for("the store to count 2 and 1", || {
        (look_up(5)["waiting"] == json!({"chats": 2, "groups": 1})).then_some(())
    });
    // Taken at its login: nothing waits any more.
    let mut five = server.login(5, "app");
    assert_eq!(recv_n(&mut five, 3).len(), 3);
    wait_for("nothing waiting after the login", || {
        let r = look_up(5);
        (r["waiting"] == json!({"chats": 0, "groups": 0}) && r["online_here"] == true).then_some(())
    });
}
