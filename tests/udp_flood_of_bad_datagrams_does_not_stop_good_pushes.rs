//! A flood of refused datagrams (random bytes, wrong `sk`, an address outside
//! `udpsocket_group`) neither delivers anything nor keeps good pushes from being carried out,
//! answered and delivered in order.
mod common;
use common::*;
use serde_json::{json, Value};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const UID: u64 = 4242;
const GOOD_PUSHES: usize = 200;
/// The flood sends at least this many datagrams, and goes on while good pushes are under way.
const MIN_FLOOD: usize = 20_000;
const MAX_FLOOD: usize = 400_000;
/// How many times one good push is sent when its datagram gets no answer: UDP may drop it
/// while the server's receive queue is full of garbage.
const ATTEMPTS: usize = 10;

/// xorshift64*: enough randomness for garbage, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends refused datagrams until told to stop (at least `MIN_FLOOD`, at most `MAX_FLOOD`);
/// returns how many were sent.
fn flood(port: u16, stop: Arc<AtomicBool>) -> usize {
    let local = UdpSocket::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1");
    let foreign = UdpSocket::bind(("127.0.0.2", 0)).expect("bind 127.0.0.2");
    let target = ("127.0.0.1", port);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let forged = |n: usize, sk: &str| {
        json!({"sk": sk, "means": "to_uid", "data": {"to_uid": UID.to_string(), "type": "chat", "seq": format!("forged{n}")}})
            .to_string()
    };
    let mut sent = 0;
    while sent < MAX_FLOOD && (sent < MIN_FLOOD || !stop.load(Ordering::Relaxed)) {
        let datagram = match sent % 4 {
            0 | 1 => {
                let len = 1 + (rng.next() % 1500) as usize;
                rng.bytes(len)
            }
            2 => forged(sent, "wrong-secret").into_bytes(),
            _ => forged(sent, SECRET).into_bytes(),
        };
        let sock = if sent % 4 == 3 { &foreign } else { &local };
        // A full socket buffer may refuse a datagram: that is part of a flood.
        let _ = sock.send_to(&datagram, target);
        sent += 1;
    }
    sent
}

/// One good push: sent again (from a fresh socket, so that no stale answer is taken) when
/// its datagram or answer is lost to the flood.
fn good_push(port: u16, seq: usize) -> Value {
    let datagram = json!({"sk": SECRET, "means": "to_uid",
        "data": {"to_uid": UID.to_string(), "type": "chat", "seq": seq, "content": {"type": "text", "value": format!("good {seq}")}}})
    .to_string();
    for _ in 0..ATTEMPTS {
        let sock = UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        sock.send_to(datagram.as_bytes(), ("127.0.0.1", port))
            .expect("send");
        let mut buf = [0u8; 65_536];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return serde_json::from_slice(&buf[..n]).expect("reply is JSON");
        }
    }
    panic!("push {seq} got no answer in {ATTEMPTS} attempts");
}

#[test]
fn good_pushes_get_through_a_flood_of_bad_datagrams() {
    let server = Server::start("udp-flood");
    let mut client = server.login(UID, "app");
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (port, stop) = (server.udp_port, stop.clone());
        std::thread::spawn(move || flood(port, stop))
    };

    let mut ids = Vec::with_capacity(GOOD_PUSHES);
    for seq in 0..GOOD_PUSHES {
        let reply = good_push(server.udp_port, seq);
        assert_eq!(reply["code"], 0, "push {seq}: {reply}");
        assert_eq!(reply["delivered"], 1, "push {seq}: {reply}");
        assert_eq!(reply["onLine"], 1, "push {seq}: {reply}");
        ids.push(
            reply["id"]
                .as_str()
                .unwrap_or_else(|| panic!("id: {reply}"))
                .to_string(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let flooded = flooder.join().expect("flood thread");
    assert!(flooded >= MIN_FLOOD);

    for (seq, id) in ids.iter().enumerate() {
        let got = client.recv();
        assert_eq!(
            got["seq"], seq,
            "good pushes arrive in order, and nothing forged among them: {got}"
        );
        assert_eq!(&got["id"], id, "{got}");
        assert_eq!(got["content"]["value"], format!("good {seq}"), "{got}");
    }
    client.send_text("ping");
    assert_eq!(
        client.recv(),
        json!({"type": "pong"}),
        "no forged push was delivered"
    );

    // The server still serves everything else.
    let (status, body) = server.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    let reply = server.push("online", json!({"uid": UID}));
    assert_eq!(reply["onLine"], 1, "{reply}");
}
