//! Client frames are rate limited per connection (`rate_limit` a second, `rate_limit_burst` at
//! once). A frame over the limit gets a 429 error frame; a client that keeps going (more refused
//! frames in a row than the burst) is closed with 1008. Other connections are not affected.
mod common;
use common::*;
use serde_json::{json, Value};
use tungstenite::{Bytes, Message};

const BURST: usize = 5;

fn start(tag: &str) -> Server {
    ServerBuilder::new(tag)
        .set("rate_limit", "5")
        .set("rate_limit_burst", &BURST.to_string())
        .start()
}

/// Queues `n` text pings and writes them in one go, so that they arrive together.
fn send_pings_at_once(c: &mut Client, n: usize) {
    for _ in 0..n {
        c.ws.write(Message::text("ping")).expect("queue");
    }
    c.ws.flush().expect("flush");
}

fn is_rate_error(v: &Value) -> bool {
    v["type"] == "error" && v["code"] == 429
}

/// Proves the connection is open and has nothing more to say: a WebSocket ping frame (not rate
/// limited) is answered with its pong, and no text frame comes first. Call it only once every
/// expected answer was read: the server may answer a ping frame ahead of earlier text frames.
fn open_and_quiet(c: &mut Client) {
    c.ws.send(Message::Ping(Bytes::from_static(b"probe")))
        .expect("send ping");
    let (pong, texts) = c.read_pong();
    assert!(texts.is_empty(), "extra text frames: {texts:?}");
    assert_eq!(&pong[..], b"probe");
}

#[test]
fn frames_within_the_burst_are_all_served() {
    let server = start("rate-within");
    let mut c = server.login(1, "app");
    send_pings_at_once(&mut c, BURST);
    let frames = recv_n(&mut c, BURST);
    assert_eq!(frames, vec![json!({"type": "pong"}); BURST]);
    open_and_quiet(&mut c);
}

#[test]
fn a_short_overrun_gets_429_and_the_connection_stays_open() {
    let server = start("rate-overrun");
    let mut c = server.login(1, "app");
    send_pings_at_once(&mut c, BURST + 3);
    // Every frame is answered, with a pong or a 429.
    let frames = recv_n(&mut c, BURST + 3);
    let refused: Vec<&Value> = frames.iter().filter(|f| is_rate_error(f)).collect();
    assert!(
        !refused.is_empty(),
        "frames over the burst are refused: {frames:?}"
    );
    for f in &refused {
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
    }
    assert!(
        frames
            .iter()
            .all(|f| is_rate_error(f) || *f == json!({"type": "pong"})),
        "only pongs and 429 errors: {frames:?}"
    );
    assert_eq!(
        frames[0],
        json!({"type": "pong"}),
        "the first frame is within the burst"
    );
    open_and_quiet(&mut c);
}

#[test]
fn a_client_that_keeps_going_is_closed_with_1008() {
    let server = start("rate-close");
    let mut other = server.login(2, "app");
    let mut third = server.login(3, "app");
    let mut flooder = server.login(1, "app");
    send_pings_at_once(&mut flooder, 4 * BURST);
    let frames = flooder.expect_close(1008);
    assert!(
        frames.iter().any(is_rate_error),
        "warned with 429 before the close: {frames:?}"
    );
    assert!(
        frames
            .iter()
            .all(|f| is_rate_error(f) || *f == json!({"type": "pong"})),
        "only pongs and 429 errors before the close: {frames:?}"
    );
    assert!(
        frames.len() < 4 * BURST,
        "not every frame was served: {frames:?}"
    );

    // The flooder is gone; the others chat on.
    wait_for("the flooder to go offline", || {
        (server.push("online", json!({"uid": "1"}))["onLine"] == 0).then_some(())
    });
    other.chat(3, "still fine");
    let got = third.recv();
    assert_eq!(got["content"]["value"], "still fine", "{got}");
    assert_eq!(got["uid"], "2");
    let ack = other.recv();
    assert_eq!(
        (ack["type"].clone(), ack["state"].clone()),
        (json!("ack"), json!(1)),
        "{ack}"
    );
    third.send_text("ping");
    assert_eq!(third.recv(), json!({"type": "pong"}));
}

#[test]
fn a_byte_flood_is_limited_too() {
    // Few frames but large ones: the byte rate refuses them (429), then closes (1008).
    let server = ServerBuilder::new("rate-bytes")
        .set("max_message_size", "1024")
        .set("rate_limit", "1000")
        .set("rate_limit_burst", "5")
        .set("rate_limit_bytes", "1000")
        .set("rate_limit_bytes_burst", "2048")
        .start();
    let mut flooder = server.login(1, "app");
    let mut target = server.login(2, "app");
    let big = "b".repeat(900);
    for _ in 0..20 {
        flooder.chat(2, &big);
    }
    let (frames, ending) = flooder.until_closed();
    assert!(matches!(ending, Ending::Close(1008, _)), "{ending:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "error" && f["code"] == 429),
        "refused with 429 first: {frames:?}"
    );
    let acked = frames.iter().filter(|f| f["type"] == "ack").count();
    assert!(
        (1..20).contains(&acked),
        "some within the allowance, not all: {acked}"
    );
    for _ in 0..acked {
        assert_eq!(target.recv()["content"]["value"], big.as_str());
    }
}
