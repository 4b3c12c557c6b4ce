//! Cross-node latency: a user logged in on node A, UDP pushes sent to node B one at a time;
//! the time from sending each push to the frame arriving at the user (B -> Redis -> A).
//!
//! Run: `WSPUSH_BENCH_REDIS=redis://127.0.0.1:6379/15 cargo bench --bench cross_node_latency`
//! (PUSHES=2000). It needs a Redis it may write to (presence keys of two test nodes).

use serde_json::{json, Value};
use std::net::UdpSocket;
use std::time::Instant;

mod common;
use common::{env_or, BenchServer, SECRET};

/// One node of the pair, sharing `redis` with the other.
fn start_node(n: u16, redis: &str) -> BenchServer {
    BenchServer::start(
        &format!("xnode{n}"),
        &format!("node_id = {n}"),
        &format!("[redis]\nurl = \"{redis}\""),
    )
}

fn main() {
    let Ok(redis) = std::env::var("WSPUSH_BENCH_REDIS") else {
        println!("cross_node_latency: set WSPUSH_BENCH_REDIS to a Redis URL it may write to");
        return;
    };
    let pushes = env_or("PUSHES", 2000);
    let (a, b) = (start_node(1, &redis), start_node(2, &redis));
    let uid = 4242u64;
    a.register_tokens(std::iter::once(uid as usize));
    let token = wspush::protocol::encode_access_token(&format!("t{uid}"), uid, "app");
    let (mut ws, _) =
        tungstenite::connect(format!("ws://127.0.0.1:{}/?access_token={token}", a.ws)).expect("ws");
    let login = ws.read().expect("login");
    assert!(
        login.to_text().unwrap_or("").contains("\"code\":200"),
        "{login}"
    );
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut reply = [0u8; 1024];
    let mut samples = Vec::with_capacity(pushes);
    for seq in 0..pushes {
        let datagram = json!({"sk": SECRET, "means": "to_uid", "data": {"to_uid": uid.to_string(), "type": "chat", "content": {"seq": seq}}});
        let sent = Instant::now();
        udp.send_to(datagram.to_string().as_bytes(), ("127.0.0.1", b.udp))
            .expect("send");
        let frame = ws.read().expect("frame");
        samples.push(sent.elapsed());
        let v: Value = serde_json::from_str(frame.to_text().unwrap_or("")).expect("json");
        assert_eq!(v["content"]["seq"], seq, "in order, none lost");
        udp.recv_from(&mut reply).expect("reply");
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "cross_node_latency: {pushes} pushes via node B to a user on node A: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}
