//! With Redis configured, a node keeps the presence hashes of PROTOCOL.md section 6 in step with
//! its connections: `ws_clientInfo` (field uid: sources, each with time, fd, ip and port) and
//! `ws_fdInfo:{ip}{port}` (field fd: uid, isServer, source, time). Presence is written
//! asynchronously, so every check polls until the expected state (or times out and fails).
mod common;
use common::services::{RedisReply, RedisServer};
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const CLIENT_INFO: &str = "ws_clientInfo";

fn builder(tag: &str, redis: &RedisServer) -> ServerBuilder {
    ServerBuilder::new(tag)
        .set("node_id", "1")
        .extra(&format!("[redis]\nurl = \"{}\"\nnode_ttl = 3", redis.url()))
}

fn fd_info_key(ws_port: u16) -> String {
    format!("ws_fdInfo:127.0.0.1{ws_port}")
}

fn parse(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("presence value is JSON ({e}): {raw}"))
}

/// `HGET ws_clientInfo <uid>` as JSON, None when the field is absent.
fn client_info(redis: &RedisServer, uid: u64) -> Option<Value> {
    let reply = redis.cmd(&["HGET", CLIENT_INFO, &uid.to_string()]);
    if reply.is_nil() {
        return None;
    }
    Some(parse(&reply.as_string().expect("a string")))
}

/// `HGET ws_fdInfo:127.0.0.1<ws_port> <fd>` as JSON, None when the field is absent.
fn fd_info(redis: &RedisServer, ws_port: u16, fd: u64) -> Option<Value> {
    let reply = redis.cmd(&["HGET", &fd_info_key(ws_port), &fd.to_string()]);
    if reply.is_nil() {
        return None;
    }
    Some(parse(&reply.as_string().expect("a string")))
}

/// Every field of a hash, values parsed as JSON.
fn hash(redis: &RedisServer, key: &str) -> BTreeMap<String, Value> {
    let reply = redis.cmd(&["HGETALL", key]);
    let items = reply.as_array().expect("HGETALL gives an array");
    items
        .chunks(2)
        .map(|kv| {
            (
                kv[0].as_string().expect("field"),
                parse(&kv[1].as_string().expect("value")),
            )
        })
        .collect()
}

/// The sources of a clientInfo value whose entry names the node on `ws_port`, sorted.
fn sources_on(info: &Value, ws_port: u16) -> Vec<String> {
    info.as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, e)| e["ip"] == "127.0.0.1" && e["port"] == ws_port)
                .map(|(s, _)| s.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn plausible_time(v: &Value) -> bool {
    v.as_u64()
        .is_some_and(|t| t > 1_600_000_000 && t <= wspush::ids::unix_now() + 5)
}

/// Asserts one clientInfo entry: this node's address, this fd, a Unix time.
fn assert_entry(entry: &Value, fd: u64, ws_port: u16) {
    assert_eq!(entry["fd"], fd, "fd: {entry}");
    assert_eq!(entry["ip"], "127.0.0.1", "ip: {entry}");
    assert_eq!(entry["port"], ws_port, "port: {entry}");
    assert!(plausible_time(&entry["time"]), "time: {entry}");
}

/// Asserts one fdInfo value: exactly uid, isServer, source and time.
fn assert_fd_entry(entry: &Value, uid: u64, source: &str) {
    assert!(plausible_time(&entry["time"]), "time: {entry}");
    assert_eq!(
        *entry,
        json!({"uid": uid.to_string(), "isServer": false, "source": source, "time": entry["time"]}),
    );
}

/// Waits until `HGET ws_clientInfo uid` holds exactly `expected` sources on the node on
/// `ws_port`, each with the given fd; returns the value.
fn wait_client_info(
    redis: &RedisServer,
    uid: u64,
    ws_port: u16,
    expected: &[(&str, u64)],
) -> Value {
    let what = format!("ws_clientInfo {uid} to hold {expected:?}");
    let info = wait_for(&what, || {
        let info = client_info(redis, uid)?;
        let want: Vec<String> = {
            let mut w: Vec<String> = expected.iter().map(|(s, _)| s.to_string()).collect();
            w.sort();
            w
        };
        let matches = sources_on(&info, ws_port) == want
            && expected.iter().all(|(s, fd)| info[*s]["fd"] == *fd);
        matches.then_some(info)
    });
    for (source, fd) in expected {
        assert_entry(&info[*source], *fd, ws_port);
    }
    info
}

fn wait_client_info_gone(redis: &RedisServer, uid: u64) {
    wait_for(&format!("ws_clientInfo {uid} to be removed"), || {
        client_info(redis, uid).is_none().then_some(())
    });
}

fn wait_fd_info(redis: &RedisServer, ws_port: u16, fd: u64, uid: u64, source: &str) {
    let entry = wait_for(&format!("ws_fdInfo field {fd} ({uid}/{source})"), || {
        fd_info(redis, ws_port, fd)
    });
    assert_fd_entry(&entry, uid, source);
}

fn wait_fd_info_gone(redis: &RedisServer, ws_port: u16, fd: u64) {
    wait_for(&format!("ws_fdInfo field {fd} to be removed"), || {
        fd_info(redis, ws_port, fd).is_none().then_some(())
    });
}

#[test]
fn a_login_writes_both_hashes() {
    let redis = RedisServer::start();
    let server = builder("presence-login", &redis).start();
    let c = server.login(501, "app");
    assert!(c.fd > 0);
    let info = wait_client_info(&redis, 501, server.ws_port, &[("app", c.fd)]);
    assert_eq!(
        info["app"].as_object().map(|o| o.len()),
        Some(5),
        "time, fd, ip, port, client_ip: {info}"
    );
    assert_eq!(info["app"]["client_ip"], "127.0.0.1", "{info}");
    wait_fd_info(&redis, server.ws_port, c.fd, 501, "app");
    // Nothing else on this node.
    assert_eq!(
        hash(&redis, &fd_info_key(server.ws_port)).len(),
        1,
        "one fdInfo field per connection"
    );
}

#[test]
fn behind_a_trusted_proxy_the_entry_names_the_real_client() {
    use tungstenite::client::IntoClientRequest;
    let redis = RedisServer::start();
    let server = builder("presence-proxy", &redis)
        .set("trusted_proxies", "[\"127.0.0.1\"]")
        .start();
    server.register(502, "app", "tok502", far_future());
    let token = wspush::protocol::encode_access_token("tok502", 502, "app");
    let mut request = server
        .ws_url(&token)
        .into_client_request()
        .expect("request");
    let forwarded = "198.51.100.23, 127.0.0.1".parse().expect("header value");
    request.headers_mut().insert("X-Forwarded-For", forwarded);
    let (ws, _) = tungstenite::connect(request).expect("WebSocket handshake");
    let mut c = Client { ws, fd: 0 };
    c.expect_login();
    let info = wait_client_info(&redis, 502, server.ws_port, &[("app", c.fd)]);
    assert_eq!(info["app"]["client_ip"], "198.51.100.23", "{info}");
}

#[test]
fn sources_come_and_go_one_by_one() {
    let redis = RedisServer::start();
    let server = builder("presence-sources", &redis).start();
    let port = server.ws_port;
    let app = server.login(502, "app");
    let pc = server.login(502, "pc");
    assert_ne!(app.fd, pc.fd);
    wait_client_info(&redis, 502, port, &[("app", app.fd), ("pc", pc.fd)]);
    wait_fd_info(&redis, port, app.fd, 502, "app");
    wait_fd_info(&redis, port, pc.fd, 502, "pc");

    // Another user's entries are left alone by all of the below.
    let other = server.login(503, "weixin");
    wait_client_info(&redis, 503, port, &[("weixin", other.fd)]);

    let pc_fd = pc.fd;
    pc.close();
    wait_client_info(&redis, 502, port, &[("app", app.fd)]);
    wait_fd_info_gone(&redis, port, pc_fd);
    wait_fd_info(&redis, port, app.fd, 502, "app");

    let app_fd = app.fd;
    app.close();
    wait_client_info_gone(&redis, 502);
    wait_fd_info_gone(&redis, port, app_fd);

    wait_client_info(&redis, 503, port, &[("weixin", other.fd)]);
    wait_fd_info(&redis, port, other.fd, 503, "weixin");
}

#[test]
fn a_connection_that_drops_without_a_close_frame_is_removed() {
    let redis = RedisServer::start();
    let server = builder("presence-drop", &redis).start();
    let port = server.ws_port;
    let c = server.login(504, "app");
    let fd = c.fd;
    wait_client_info(&redis, 504, port, &[("app", fd)]);
    drop(c);
    wait_client_info_gone(&redis, 504);
    wait_fd_info_gone(&redis, port, fd);
}

#[test]
fn a_new_login_of_the_same_source_takes_over_the_entry() {
    let redis = RedisServer::start();
    let server = builder("presence-same-source", &redis).start();
    let port = server.ws_port;
    let mut old = server.login(505, "app");
    wait_client_info(&redis, 505, port, &[("app", old.fd)]);
    wait_fd_info(&redis, port, old.fd, 505, "app");

    let mut new = server.login(505, "app");
    assert_ne!(new.fd, old.fd);
    let frames = old.expect_close(4002);
    assert_eq!(frames[0]["code"], 441, "{frames:?}");

    wait_client_info(&redis, 505, port, &[("app", new.fd)]);
    wait_fd_info_gone(&redis, port, old.fd);
    wait_fd_info(&redis, port, new.fd, 505, "app");
    // After a round trip on the new connection (the old one is long closed), still the new one.
    new.expect_nothing_queued();
    wait_client_info(&redis, 505, port, &[("app", new.fd)]);
    assert_eq!(
        hash(&redis, &fd_info_key(port))
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec![new.fd.to_string()],
        "only the new connection in fdInfo"
    );
}

#[test]
fn a_kick_removes_the_entries() {
    let redis = RedisServer::start();
    let server = builder("presence-kick", &redis).start();
    let port = server.ws_port;
    let mut app = server.login(506, "app");
    let mut pc = server.login(506, "pc");
    let stays = server.login(507, "app");
    wait_client_info(&redis, 506, port, &[("app", app.fd), ("pc", pc.fd)]);
    wait_client_info(&redis, 507, port, &[("app", stays.fd)]);

    let reply = server.push("kick", json!({"uid": "506"}));
    assert_eq!(reply["code"], 0, "{reply}");
    app.expect_close(4003);
    pc.expect_close(4003);

    wait_client_info_gone(&redis, 506);
    wait_fd_info_gone(&redis, port, app.fd);
    wait_fd_info_gone(&redis, port, pc.fd);
    wait_client_info(&redis, 507, port, &[("app", stays.fd)]);
    wait_fd_info(&redis, port, stays.fd, 507, "app");
}

#[test]
fn a_killed_node_leaves_entries_that_it_clears_when_it_starts_again() {
    let redis = RedisServer::start();
    // Another node's users (a node this one never heard of): never touched by this one.
    let (other_port, other_fd) = (9, 7u64);
    let other_entry =
        json!({"time": 1_700_000_000u64, "fd": other_fd, "ip": "127.0.0.1", "port": other_port});
    let other_fd_entry =
        json!({"uid": "601", "isServer": false, "source": "pc", "time": 1_700_000_000u64});
    let set_field = |key: &str, field: &str, value: &Value| {
        assert!(matches!(
            redis.cmd(&["HSET", key, field, &value.to_string()]),
            RedisReply::Int(_)
        ));
    };
    set_field(CLIENT_INFO, "601", &json!({"pc": other_entry}));
    set_field(CLIENT_INFO, "699", &json!({"app": other_entry}));
    set_field(
        &fd_info_key(other_port),
        &other_fd.to_string(),
        &other_fd_entry,
    );

    let prepared = builder("presence-restart", &redis).prepare();
    let (dir, config) = (prepared.dir.clone(), prepared.config.clone());
    let (ws_port, udp_port, http_port) = (prepared.ws_port, prepared.udp_port, prepared.http_port);
    let mut first = prepared.spawn();
    let a = first.login(601, "app");
    let b_app = first.login(602, "app");
    let b_pc = first.login(602, "pc");
    wait_client_info(&redis, 601, ws_port, &[("app", a.fd)])
        .get("pc")
        .map_or_else(
            || panic!("601's entry from the other node is still there"),
            |e| assert_eq!(*e, other_entry),
        );
    wait_client_info(&redis, 602, ws_port, &[("app", b_app.fd), ("pc", b_pc.fd)]);
    wait_fd_info(&redis, ws_port, a.fd, 601, "app");
    wait_fd_info(&redis, ws_port, b_app.fd, 602, "app");
    wait_fd_info(&redis, ws_port, b_pc.fd, 602, "pc");

    // The node dies without a chance to clean up.
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    drop(first);
    drop((a, b_app, b_pc));
    let ours = |info: &Value| sources_on(info, ws_port);
    let info_601 = client_info(&redis, 601).expect("601 still in ws_clientInfo");
    assert_eq!(ours(&info_601), vec!["app"], "stale entry left: {info_601}");
    assert_eq!(info_601["pc"], other_entry);
    let info_602 = client_info(&redis, 602).expect("602 still in ws_clientInfo");
    assert_eq!(
        ours(&info_602),
        vec!["app", "pc"],
        "stale entries left: {info_602}"
    );
    assert_eq!(
        hash(&redis, &fd_info_key(ws_port)).len(),
        3,
        "stale fdInfo fields left"
    );

    // The same node (same config file, same ports) starts again; a user logs in at once. Its
    // connection ids start over, so they may equal the stale ones.
    let second = Server {
        dir,
        config,
        ws_port,
        udp_port,
        http_port,
        child: None,
        tls: None,
    }
    .spawn();
    let fresh = second.login(603, "app");

    // The stale entries go; the other node's stay; the new login's entry is not swept away.
    wait_for("the restarted node's stale entries to be cleared", || {
        let info_601 = client_info(&redis, 601)?;
        let fd_fields = hash(&redis, &fd_info_key(ws_port));
        let only_fresh = fd_fields.len() == 1
            && fd_fields
                .get(&fresh.fd.to_string())
                .is_some_and(|e| e["uid"] == "603");
        let fresh_info = client_info(&redis, 603)?;
        (client_info(&redis, 602).is_none()
            && ours(&info_601).is_empty()
            && only_fresh
            && fresh_info["app"]["fd"] == fresh.fd)
            .then_some(())
    });
    assert_eq!(
        client_info(&redis, 601),
        Some(json!({"pc": other_entry})),
        "the other node's source of 601 stays"
    );
    assert_eq!(client_info(&redis, 699), Some(json!({"app": other_entry})));
    assert_eq!(
        hash(&redis, &fd_info_key(other_port)),
        BTreeMap::from([(other_fd.to_string(), other_fd_entry)]),
        "the other node's fdInfo stays"
    );
    wait_client_info(&redis, 603, ws_port, &[("app", fresh.fd)]);
    wait_fd_info(&redis, ws_port, fresh.fd, 603, "app");

    // The restarted node serves the users that were on it before.
    let again = second.login(602, "pc");
    wait_client_info(&redis, 602, ws_port, &[("pc", again.fd)]);
    wait_fd_info(&redis, ws_port, again.fd, 602, "pc");
}

#[test]
fn a_node_stopped_gracefully_leaves_no_presence_behind() {
    let redis = RedisServer::start();
    let mut server = builder("presence-stop", &redis).start();
    let mut app = server.login(31, "app");
    let mut pc = server.login(32, "pc");
    wait_client_info(&redis, 31, server.ws_port, &[("app", app.fd)]);
    wait_fd_info(&redis, server.ws_port, pc.fd, 32, "pc");

    server.signal(Signal::SIGTERM);
    app.expect_close(1001);
    pc.expect_close(1001);
    assert!(server.wait_exit().success());

    // Gone at once, not after the heartbeat lapses: the node removed its own entries.
    assert_eq!(client_info(&redis, 31), None);
    assert_eq!(client_info(&redis, 32), None);
    assert!(hash(&redis, &fd_info_key(server.ws_port)).is_empty());
}
