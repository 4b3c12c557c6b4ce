//! With `[mysql]` configured, messages are kept in the table `chat` of PROTOCOL.md section 7:
//! undelivered ones (state 0) until their recipient logs in, delivered ones (state 1) too unless
//! `storage.backup` is off. A database that dies loses nothing that was acked: writes wait in
//! the server and go in when it is back, and a login while it is down gets its stored messages
//! once it returns. Values are bound parameters.
mod common;
use common::services::{MariaDb, RedisServer};
use common::*;
use serde_json::{json, Value};

/// `MariaDb::start()`, one at a time: `mariadb-install-db` keeps its temporary tables in the
/// shared /tmp, where another install starting at the same moment deletes them as stale
/// ("Unknown table 'mysql.tmp_user_sys'").
fn start_db() -> MariaDb {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    MariaDb::start()
}

fn mysql_section(db: &MariaDb) -> String {
    format!("[mysql]\nurl = \"{}\"", db.url())
}

fn node(tag: &str, db: &MariaDb) -> Server {
    ServerBuilder::new(tag).extra(&mysql_section(db)).start()
}

/// One row of `chat`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: String,
    uid: String,
    to_uid: String,
    kind: String,
    state: String,
    content: Value,
    create_time: u64,
    update_time: u64,
}

/// The rows of `chat` for `to_uid`, by id; None while the table does not exist or the query
/// fails.
fn try_rows(db: &MariaDb, to_uid: u64) -> Option<Vec<Row>> {
    let rows = db
        .try_query(&format!(
            "SELECT id, uid, to_uid, type, state, content, create_time, update_time \
             FROM chat WHERE to_uid = {to_uid} ORDER BY id"
        ))
        .ok()?;
    Some(
        rows.into_iter()
            .map(|r| Row {
                id: r[0].clone(),
                uid: r[1].clone(),
                to_uid: r[2].clone(),
                kind: r[3].clone(),
                state: r[4].clone(),
                content: serde_json::from_str(&r[5])
                    .unwrap_or_else(|e| panic!("content is JSON ({e}): {:?}", r[5])),
                create_time: r[6].parse().expect("create_time"),
                update_time: r[7].parse().expect("update_time"),
            })
            .collect(),
    )
}

/// Waits until `to_uid` has exactly `n` rows, all in `state`; returns them.
fn wait_rows(db: &MariaDb, to_uid: u64, n: usize, state: &str) -> Vec<Row> {
    wait_for(&format!("{n} rows for {to_uid} in state {state}"), || {
        try_rows(db, to_uid).filter(|rows| rows.len() == n && rows.iter().all(|r| r.state == state))
    })
}

fn text(value: &str) -> Value {
    json!({"type": "text", "value": value})
}

/// Sends a chat and returns its ack, asserting its shape and `state`.
fn chat_acked(c: &mut Client, to_uid: u64, content: &Value, state: u8) -> String {
    c.send(&json!({"to_uid": to_uid.to_string(), "type": "chat", "content": content}));
    let ack = c.recv();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["to_uid"], to_uid.to_string(), "{ack}");
    assert_eq!(ack["state"], state, "{ack}");
    ack["id"].as_str().expect("ack id").to_string()
}

/// Asserts that a chat frame carries this id, sender, content and state.
fn assert_chat(frame: &Value, id: &str, from: u64, to: u64, content: &Value, state: u8) {
    assert_eq!(frame["type"], "chat", "{frame}");
    assert_eq!(frame["id"], id, "{frame}");
    assert_eq!(frame["uid"], from.to_string(), "{frame}");
    assert_eq!(frame["to_uid"], to.to_string(), "{frame}");
    assert_eq!(frame["content"], *content, "{frame}");
    assert_eq!(frame["state"], state, "{frame}");
}

fn stats_number(server: &Server, key: &str) -> u64 {
    let stats = server.stats();
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a number: {stats}"))
}

#[test]
fn the_chat_table_has_the_original_columns_and_an_index_on_to_uid_and_state() {
    let db = start_db();
    let server = node("mysql-schema", &db);
    // The first use of the store creates the table: a login reads the stored messages.
    let _c = server.login(1, "app");
    let mut columns: Vec<String> = db
        .query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = 'test' AND TABLE_NAME = 'chat'",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    columns.sort();
    let mut expected = [
        "id",
        "uid",
        "to_uid",
        "type",
        "state",
        "content",
        "create_time",
        "update_time",
    ];
    expected.sort();
    assert_eq!(columns, expected);

    let stats = db.query(
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = 'test' AND TABLE_NAME = 'chat' ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    );
    let mut indexes: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in stats {
        indexes.entry(r[0].clone()).or_default().push(r[1].clone());
    }
    assert!(
        indexes
            .values()
            .any(|cols| cols.len() >= 2 && cols[0] == "to_uid" && cols[1] == "state"),
        "an index on (to_uid, state): {indexes:?}"
    );
}

/// A chat to an offline uid is a row in state 0; at login the recipient gets the rows, oldest
/// first, and they turn to state 1.
fn offline_chats_round_trip(server: &Server, db: &MariaDb) {
    let mut alice = server.login(11, "app");
    let contents: Vec<Value> = (0..3).map(|i| text(&format!("while away {i}"))).collect();
    let ids: Vec<String> = contents
        .iter()
        .map(|c| chat_acked(&mut alice, 77, c, 0))
        .collect();
    let rows = wait_rows(db, 77, 3, "0");
    let now = wspush::ids::unix_now();
    for ((row, id), content) in rows.iter().zip(&ids).zip(&contents) {
        assert_eq!(row.id, *id, "the row's id is the message id: {row:?}");
        assert_eq!(
            (row.uid.as_str(), row.to_uid.as_str(), row.kind.as_str()),
            ("11", "77", "chat"),
            "{row:?}"
        );
        assert_eq!(row.content, *content, "{row:?}");
        assert!(
            row.create_time > 1_600_000_000 && row.create_time <= now + 5,
            "{row:?}"
        );
    }

    let mut bob = server.login(77, "pc");
    for (id, content) in ids.iter().zip(&contents) {
        assert_chat(&bob.recv(), id, 11, 77, content, 0);
    }
    bob.expect_nothing_queued();
    let delivered = wait_rows(db, 77, 3, "1");
    for (before, after) in rows.iter().zip(&delivered) {
        assert_eq!(
            (&after.id, &after.content, after.create_time),
            (&before.id, &before.content, before.create_time),
            "only the state (and update time) changes"
        );
        assert!(after.update_time >= before.create_time, "{after:?}");
    }

    // Taken once: a second login finds nothing.
    bob.close();
    let mut again = server.login(77, "pc");
    again.expect_nothing_queued();
}

#[test]
fn offline_chats_are_rows_in_state_0_until_the_recipient_logs_in() {
    let db = start_db();
    let server = node("mysql-offline", &db);
    offline_chats_round_trip(&server, &db);
}

#[test]
fn offline_chats_go_to_mysql_in_cluster_mode_too() {
    let db = start_db();
    let redis = RedisServer::start();
    let server = ServerBuilder::new("mysql-cluster")
        .set("node_id", "1")
        .extra(&format!(
            "[redis]\nurl = \"{}\"\nnode_ttl = 3\n{}",
            redis.url(),
            mysql_section(&db)
        ))
        .start();
    wait_for("the cluster subscription", || {
        (server.try_stats()?["cluster"]["subscribed"] == true).then_some(())
    });
    offline_chats_round_trip(&server, &db);
}

#[test]
fn delivered_chats_are_kept_in_state_1_by_default() {
    let db = start_db();
    let server = node("mysql-backup", &db);
    let mut alice = server.login(21, "app");
    let mut bob = server.login(22, "app");
    let content = text("live");
    let id = chat_acked(&mut alice, 22, &content, 1);
    assert_chat(&bob.recv(), &id, 21, 22, &content, 1);
    let rows = wait_rows(&db, 22, 1, "1");
    assert_eq!(rows[0].id, id);
    assert_eq!(
        (rows[0].uid.as_str(), rows[0].kind.as_str()),
        ("21", "chat")
    );
    assert_eq!(rows[0].content, content);
}

#[test]
fn without_backup_only_undelivered_chats_are_kept() {
    let db = start_db();
    let server = ServerBuilder::new("mysql-no-backup")
        .extra(&format!(
            "[storage]\nbackup = false\n{}",
            mysql_section(&db)
        ))
        .start();
    let mut alice = server.login(31, "app");
    let mut bob = server.login(32, "app");
    let live = text("delivered at once");
    let live_id = chat_acked(&mut alice, 32, &live, 1);
    assert_chat(&bob.recv(), &live_id, 31, 32, &live, 1);
    // Bob leaves; the next chat to him is kept. Both went to the store in this order, to the
    // same recipient: once the second one's row is there, the first one's would be too.
    bob.close();
    let away = text("kept for later");
    let away_id = chat_acked(&mut alice, 32, &away, 0);
    let rows = wait_rows(&db, 32, 1, "0");
    assert_eq!(rows[0].id, away_id, "only the undelivered chat is a row");
    assert_eq!(rows[0].content, away);

    let mut bob = server.login(32, "app");
    assert_chat(&bob.recv(), &away_id, 31, 32, &away, 0);
    bob.expect_nothing_queued();
}

#[test]
fn chats_acked_while_mysql_is_down_are_all_stored_when_it_returns() {
    let mut db = start_db();
    let server = node("mysql-down", &db);
    let mut alice = server.login(41, "app");
    const TOTAL: usize = 40;
    let mut sent = Vec::new();
    for i in 0..TOTAL {
        if i == 10 {
            // Killed under traffic: the first chats may still be on their way to it.
            db.stop();
        }
        let content = text(&format!("m{i}"));
        let id = chat_acked(&mut alice, 88, &content, 0);
        sent.push((id, content));
    }
    wait_for("failed writes to wait in the retry queue", || {
        (stats_number(&server, "store_retry_queue") > 0).then_some(())
    });

    db.restart();
    let rows = wait_rows(&db, 88, TOTAL, "0");
    for (row, (id, content)) in rows.iter().zip(&sent) {
        assert_eq!((&row.id, &row.content), (id, content), "{row:?}");
        assert_eq!(row.uid, "41");
    }
    wait_for("the retry queue to drain", || {
        (stats_number(&server, "store_retry_queue") == 0).then_some(())
    });
    assert_eq!(stats_number(&server, "store_dropped"), 0);

    let mut bob = server.login(88, "app");
    for (id, content) in &sent {
        assert_chat(&bob.recv(), id, 41, 88, content, 0);
    }
    bob.expect_nothing_queued();
    wait_rows(&db, 88, TOTAL, "1");
}

#[test]
fn a_login_while_mysql_is_down_gets_its_messages_when_it_returns() {
    let mut db = start_db();
    let server = node("mysql-login-down", &db);
    let mut alice = server.login(51, "app");
    let sent: Vec<(String, Value)> = (0..3)
        .map(|i| {
            let content = text(&format!("stored {i}"));
            (chat_acked(&mut alice, 90, &content, 0), content)
        })
        .collect();
    wait_rows(&db, 90, 3, "0");

    db.stop();
    // The login itself does not need the message store.
    let mut bob = server.login(90, "app");
    bob.send_text("ping");
    assert_eq!(bob.recv(), json!({"type": "pong"}), "online, nothing yet");

    db.restart();
    // No new login: the server fetches again by itself.
    for (id, content) in &sent {
        assert_chat(&bob.recv(), id, 51, 90, content, 0);
    }
    bob.expect_nothing_queued();
    wait_rows(&db, 90, 3, "1");
    bob.close();
    let mut again = server.login(90, "app");
    again.expect_nothing_queued();
}

#[test]
fn values_are_bound_parameters() {
    let db = start_db();
    let server = node("mysql-injection", &db);
    let mut alice = server.login(61, "app");
    let nasty = json!({
        "type": "text",
        "value": "it's \"quoted\" '); DROP TABLE chat; --",
        "more": "\\' OR '1'='1 ` backtick; \\\\ back\\slash\n\ttab 😀",
    });
    let id = chat_acked(&mut alice, 62, &nasty, 0);
    let rows = wait_rows(&db, 62, 1, "0");
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].content, nasty, "stored intact");
    assert_eq!(
        db.query("SELECT COUNT(*) FROM chat WHERE to_uid = 62"),
        vec![vec!["1"]],
        "the table is still there"
    );

    let mut bob = server.login(62, "app");
    assert_chat(&bob.recv(), &id, 61, 62, &nasty, 0);
    bob.expect_nothing_queued();
}
