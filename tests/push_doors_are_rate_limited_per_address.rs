//! The push doors (UDP and HTTP API) limit requests per source address: past the burst a
//! request is answered 429 and not carried out; other addresses keep their own allowance.
mod common;
use common::*;
use serde_json::json;

#[test]
fn a_flood_of_pushes_from_one_address_is_limited_and_others_are_not() {
    let server = ServerBuilder::new("push-rate")
        .push_peers(&[("127.0.0.1", SECRET), ("127.0.0.2", SECRET)])
        .extra("[push]\nrate_per_ip = 2\nburst_per_ip = 5")
        .start();
    let mut c = server.login(7, "app");
    let push = |from: &str, n: usize| {
        let datagram = json!({"sk": SECRET, "means": "to_uid",
            "data": {"to_uid": "7", "type": "chat", "content": {"n": n}}});
        udp_request(from, server.udp_port, datagram.to_string().as_bytes())
    };
    let codes: Vec<u64> = (0..20)
        .map(|n| push("127.0.0.1", n)["code"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(codes.last(), Some(&429), "the flood is limited: {codes:?}");
    assert!(codes.iter().all(|c| *c == 0 || *c == 429), "{codes:?}");
    // The HTTP door draws on the same address's allowance, spent a moment ago.
    let (status, body) = server.http("GET", &format!("/api/online?uid=7&sk={SECRET}"), &[], b"");
    assert_eq!(status, 429, "{body}");
    // Exactly the accepted pushes were delivered, in order.
    let accepted: Vec<usize> = codes
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == 0)
        .map(|(n, _)| n)
        .collect();
    assert!(!accepted.is_empty(), "some pushes get through: {codes:?}");
    for n in &accepted {
        assert_eq!(c.recv()["content"]["n"], *n);
    }
    c.send_text("ping");
    assert_eq!(
        c.recv(),
        json!({"type": "pong"}),
        "nothing beyond the accepted pushes"
    );
    // Another address has its own allowance.
    assert_eq!(push("127.0.0.2", 99)["code"], 0);
    assert_eq!(c.recv()["content"]["n"], 99);
}
