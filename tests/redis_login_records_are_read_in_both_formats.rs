//! With Redis configured, a login is checked against `login{uid}` as the application's login
//! server writes it (PROTOCOL.md section 1): JSON, or `think_serialize:` + PHP `serialize()`,
//! with `uid` and `expires` as numbers or strings. `POST /api/login` writes the same key as JSON
//! and keeps the sources already in it.
mod common;
use common::services::{RedisReply, RedisServer};
use common::*;
use serde_json::{json, Value};
use wspush::protocol::encode_access_token;

const UID: u64 = 123456;
const KEY: &str = "login123456";

/// A node using `redis` for its tokens (and, with it, cluster mode).
fn node(tag: &str, redis: &RedisServer) -> Server {
    ServerBuilder::new(tag)
        .set("node_id", "1")
        .extra(&format!("[redis]\nurl = \"{}\"\nnode_ttl = 3", redis.url()))
        .start()
}

fn set(redis: &RedisServer, key: &str, value: &str) {
    assert_eq!(
        redis.cmd(&["SET", key, value]),
        RedisReply::Status("OK".into())
    );
}

fn refused(message: &str) -> Value {
    json!({"type": "login", "code": 401, "message": message, "data": []})
}

/// Connects as (token, uid, source) and asserts exactly the refusal `frame`, then close 4001.
fn assert_refused(server: &Server, token: &str, uid: u64, source: &str, frame: Value) {
    let mut c = server.connect(&encode_access_token(token, uid, source), None);
    let frames = c.expect_close(4001);
    assert_eq!(
        frames,
        vec![frame],
        "{token}.{uid}.{source}: one refusal frame, then close 4001"
    );
}

/// Connects as (token, uid, source), asserts the login frame and that the connection is online.
fn assert_logs_in(server: &Server, token: &str, uid: u64, source: &str) -> Client {
    let mut c = server.connect(&encode_access_token(token, uid, source), None);
    let login = c.recv();
    let fd = login["data"]["fd"]
        .as_u64()
        .unwrap_or_else(|| panic!("{token}.{uid}.{source}: fd is a number: {login}"));
    assert_eq!(
        login,
        json!({"type": "login", "code": 200, "message": "ok",
               "data": {"uid": uid.to_string(), "source": source, "fd": fd}}),
        "{token}.{uid}.{source}"
    );
    c.fd = fd;
    c.send_text("ping");
    assert_eq!(c.recv(), json!({"type": "pong"}), "online after the login");
    c
}

/// PHP `serialize()` of a string: its length in bytes, then the bytes.
fn php_str(s: &str) -> String {
    format!("s:{}:\"{}\";", s.len(), s)
}

fn php_int(n: u64) -> String {
    format!("i:{n};")
}

/// PHP `serialize()` of an array of `(key, already serialized value)` pairs.
fn php_array(entries: &[(&str, String)]) -> String {
    let body: String = entries
        .iter()
        .map(|(k, v)| format!("{}{v}", php_str(k)))
        .collect();
    format!("a:{}:{{{body}}}", entries.len())
}

/// `think_serialize:` + PHP serialize of one source record.
fn php_record(uid: String, token: &str, expires: String) -> String {
    php_array(&[
        ("uid", uid),
        ("token", php_str(token)),
        ("expires", expires),
    ])
}

#[test]
fn php_builder_matches_the_protocol_example() {
    // The example of PROTOCOL.md, built by the helpers the other tests use.
    let built = php_array(&[(
        "app",
        php_record(php_int(123456), "fe24NDU2341N", php_int(1799999999)),
    )]);
    assert_eq!(
        built,
        r#"a:1:{s:3:"app";a:3:{s:3:"uid";i:123456;s:5:"token";s:12:"fe24NDU2341N";s:7:"expires";i:1799999999;}}"#
    );
}

#[test]
fn json_records_log_in_with_numbers_or_strings() {
    let redis = RedisServer::start();
    let server = node("redis-json", &redis);
    let future = far_future();
    let record = json!({
        "app": {"uid": UID, "token": "fe24NDU2341N", "expires": future},
        "pc": {"uid": UID.to_string(), "token": "x9a8b7", "expires": future.to_string()},
    });
    set(&redis, KEY, &record.to_string());

    let _app = assert_logs_in(&server, "fe24NDU2341N", UID, "app");
    let _pc = assert_logs_in(&server, "x9a8b7", UID, "pc");

    // Each source has its own token.
    assert_refused(&server, "x9a8b7", UID, "app", refused("unauthorized"));
    assert_refused(&server, "fe24NDU2341N", UID, "pc", refused("unauthorized"));
    assert_refused(&server, "fe24NDU2341X", UID, "app", refused("unauthorized"));
    // A source the record does not have.
    assert_refused(
        &server,
        "fe24NDU2341N",
        UID,
        "weixin",
        refused("unauthorized"),
    );
    // A uid without any record.
    assert_refused(
        &server,
        "fe24NDU2341N",
        654321,
        "app",
        refused("unauthorized"),
    );
}

#[test]
fn json_record_past_its_expiry_is_refused_as_expired() {
    let redis = RedisServer::start();
    let server = node("redis-json-expired", &redis);
    let past = wspush::ids::unix_now() - 60;
    let record = json!({
        "app": {"uid": UID, "token": "old-app", "expires": past},
        "pc": {"uid": UID.to_string(), "token": "old-pc", "expires": past.to_string()},
        "weixin": {"uid": UID, "token": "fresh", "expires": far_future()},
    });
    set(&redis, KEY, &record.to_string());
    assert_refused(&server, "old-app", UID, "app", refused("expired"));
    assert_refused(&server, "old-pc", UID, "pc", refused("expired"));
    // Expiry is per source.
    let _weixin = assert_logs_in(&server, "fresh", UID, "weixin");
    // A wrong token is not told that the record has expired.
    assert_refused(&server, "not-old-app", UID, "app", refused("unauthorized"));
}

#[test]
fn think_serialize_records_log_in_with_numbers_or_strings() {
    let redis = RedisServer::start();
    let server = node("redis-php", &redis);
    let future = far_future();
    let value = format!(
        "think_serialize:{}",
        php_array(&[
            (
                "app",
                php_record(php_int(UID), "fe24NDU2341N", php_int(future))
            ),
            (
                "pc",
                php_record(
                    php_str(&UID.to_string()),
                    "x9a8b7",
                    php_str(&future.to_string())
                )
            ),
        ])
    );
    set(&redis, KEY, &value);

    let _app = assert_logs_in(&server, "fe24NDU2341N", UID, "app");
    let _pc = assert_logs_in(&server, "x9a8b7", UID, "pc");
    assert_refused(&server, "fe24NDU2341X", UID, "app", refused("unauthorized"));
    assert_refused(&server, "fe24NDU2341N", UID, "pc", refused("unauthorized"));
    assert_refused(
        &server,
        "fe24NDU2341N",
        UID,
        "weixin",
        refused("unauthorized"),
    );
}

#[test]
fn think_serialize_record_past_its_expiry_is_refused_as_expired() {
    let redis = RedisServer::start();
    let server = node("redis-php-expired", &redis);
    let past = wspush::ids::unix_now() - 60;
    let value = format!(
        "think_serialize:{}",
        php_array(&[
            ("app", php_record(php_int(UID), "old", php_int(past))),
            (
                "pc",
                php_record(php_int(UID), "fresh", php_int(far_future()))
            ),
        ])
    );
    set(&redis, KEY, &value);
    assert_refused(&server, "old", UID, "app", refused("expired"));
    let _pc = assert_logs_in(&server, "fresh", UID, "pc");
}

#[test]
fn unreadable_records_are_refused_and_harm_nothing_else() {
    let redis = RedisServer::start();
    let server = node("redis-garbage", &redis);
    let future = far_future();
    let good = php_array(&[("app", php_record(php_int(UID), "tok", php_int(future)))]);
    let garbage = [
        "not a record".to_string(),
        "[1,2,3]".to_string(),
        r#"{"app": "tok"}"#.to_string(),
        json!({"app": {"uid": UID, "token": ["tok"], "expires": future}}).to_string(),
        // Cut short, and a string whose stated length is wrong.
        format!("think_serialize:{}", &good[..good.len() - 5]),
        format!(
            "think_serialize:{}",
            good.replace("s:3:\"tok\"", "s:4:\"tok\"")
        ),
        // PHP text without the prefix is not JSON either.
        good.clone(),
    ];
    for (n, value) in garbage.iter().enumerate() {
        set(&redis, KEY, value);
        assert_refused(&server, "tok", UID, "app", refused("unauthorized"));
        // The node still serves other users, and the same key once it is readable.
        let other = 777_000 + n as u64;
        set(
            &redis,
            &format!("login{other}"),
            &json!({"app": {"uid": other, "token": "ok", "expires": future}}).to_string(),
        );
        let _c = assert_logs_in(&server, "ok", other, "app");
    }
    set(&redis, KEY, &format!("think_serialize:{good}"));
    let _c = assert_logs_in(&server, "tok", UID, "app");
}

#[test]
fn record_of_another_uid_under_the_key_is_refused() {
    let redis = RedisServer::start();
    let server = node("redis-other-uid", &redis);
    let record = json!({"app": {"uid": 42, "token": "tok", "expires": far_future()}});
    set(&redis, KEY, &record.to_string());
    assert_refused(&server, "tok", UID, "app", refused("unauthorized"));
    assert_refused(&server, "tok", 42, "app", refused("unauthorized"));
}

/// `login{uid}` as JSON; panics if it is missing or not JSON.
fn stored_record(redis: &RedisServer, uid: u64) -> Value {
    let raw = redis
        .cmd(&["GET", &format!("login{uid}")])
        .as_string()
        .unwrap_or_else(|| panic!("login{uid} is set"));
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("login{uid} is JSON ({e}): {raw}"))
}

/// Checks one source of a stored record: uid (a number or a string of digits), token, expires.
fn assert_source(record: &Value, source: &str, uid: u64, token: &str, expires: u64) {
    let entry = &record[source];
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    assert_eq!(number(&entry["uid"]), Some(uid), "{source} uid: {record}");
    assert_eq!(entry["token"], token, "{source} token: {record}");
    assert_eq!(
        number(&entry["expires"]),
        Some(expires),
        "{source} expires: {record}"
    );
}

#[test]
fn api_login_writes_json_and_keeps_the_other_sources() {
    let redis = RedisServer::start();
    let server = node("redis-api-login", &redis);
    let (t1, t2) = (far_future(), far_future() + 1000);

    server.register(UID, "app", "fe24NDU2341N", t1);
    let record = stored_record(&redis, UID);
    assert_source(&record, "app", UID, "fe24NDU2341N", t1);
    assert_eq!(record.as_object().map(|o| o.len()), Some(1), "{record}");

    server.register(UID, "pc", "x9a8b7", t2);
    let record = stored_record(&redis, UID);
    assert_source(&record, "app", UID, "fe24NDU2341N", t1);
    assert_source(&record, "pc", UID, "x9a8b7", t2);
    assert_eq!(record.as_object().map(|o| o.len()), Some(2), "{record}");

    let _app = assert_logs_in(&server, "fe24NDU2341N", UID, "app");
    let _pc = assert_logs_in(&server, "x9a8b7", UID, "pc");

    // A new token for one source replaces only that source's.
    server.register(UID, "app", "renewed", t2);
    let record = stored_record(&redis, UID);
    assert_source(&record, "app", UID, "renewed", t2);
    assert_source(&record, "pc", UID, "x9a8b7", t2);
    assert_refused(&server, "fe24NDU2341N", UID, "app", refused("unauthorized"));
    let _app = assert_logs_in(&server, "renewed", UID, "app");
    let _pc = assert_logs_in(&server, "x9a8b7", UID, "pc");

    // A record written by the application's login server keeps its sources too.
    set(
        &redis,
        "login654321",
        &json!({"weixin": {"uid": "654321", "token": "wx", "expires": t1}}).to_string(),
    );
    server.register(654321, "app", "ap", t1);
    let record = stored_record(&redis, 654321);
    assert_source(&record, "weixin", 654321, "wx", t1);
    assert_source(&record, "app", 654321, "ap", t1);
    let _wx = assert_logs_in(&server, "wx", 654321, "weixin");
    let _ap = assert_logs_in(&server, "ap", 654321, "app");
}

#[test]
fn api_login_keeps_the_sources_of_a_think_serialize_record() {
    let redis = RedisServer::start();
    let server = node("redis-api-login-php", &redis);
    let future = far_future();
    let value = format!(
        "think_serialize:{}",
        php_array(&[("pc", php_record(php_int(UID), "x9a8b7", php_int(future)))])
    );
    set(&redis, KEY, &value);
    let _pc = assert_logs_in(&server, "x9a8b7", UID, "pc");

    // The login server registers another source through the API: the PHP-written one stays.
    server.register(UID, "app", "fe24NDU2341N", future);
    let _app = assert_logs_in(&server, "fe24NDU2341N", UID, "app");
    let stored = redis.cmd(&["GET", KEY]).as_string();
    let mut pc = server.connect(&encode_access_token("x9a8b7", UID, "pc"), None);
    let login = pc.recv();
    assert_eq!(
        login["code"], 200,
        "the pc source written by the PHP login server must survive POST /api/login of app; \
         got {login}, and {KEY} is now {stored:?}"
    );
    assert_eq!(login["data"]["source"], "pc", "{login}");
}
