//! In cluster mode `/readyz` is 503 while Redis (the token store and the cluster's channel)
//! does not answer, with the reason, and 200 again once Redis is back; `/metrics` counts the
//! lost subscription as a Redis error.
mod common;
use common::services::RedisServer;
use common::*;
use serde_json::Value;

fn readyz(server: &Server) -> (u16, Value) {
    let (status, body) = server.http("GET", "/readyz", &[], b"");
    (status, body_json(&body))
}

#[test]
fn readyz_turns_503_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let server = ServerBuilder::new("readyz-redis")
        .extra(&format!(
            "[redis]\nurl = \"{}\"\ntimeout_ms = 300\nnode_ttl = 3",
            redis.url()
        ))
        .start();
    wait_for("the node to be ready", || {
        (readyz(&server).0 == 200).then_some(())
    });

    redis.stop();
    let body = wait_for("/readyz to turn 503", || {
        let (status, body) = readyz(&server);
        (status == 503).then_some(body)
    });
    assert_eq!(body["status"], "not ready", "{body}");
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("redis") || reasons.contains("store unavailable"),
        "{body}"
    );
    let (status, _) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "liveness is not readiness");

    redis.restart();
    wait_for("/readyz to be 200 again", || {
        (readyz(&server).0 == 200).then_some(())
    });
    let (status, text) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{text}");
    let lost = r#"wspush_redis_errors_total{op="subscribe"} "#;
    let line = text
        .lines()
        .find(|l| l.starts_with(lost))
        .unwrap_or_else(|| panic!("no {lost} in {text}"));
    let n: u64 = line[lost.len()..].parse().expect("a count");
    assert!(n >= 1, "{line}");
}
