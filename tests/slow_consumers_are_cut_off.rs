//! A client that stops reading fills its send buffer (`send_buffer_size`) and is closed as a
//! slow consumer (1008): from then on it counts as not delivered, it leaves the registry, and
//! `/api/stats` counts it. Clients that do read are not held up by it.
mod common;
use common::*;
use serde_json::{json, Value};

/// Enough to fill any loopback socket buffers plus the server's bound many times over.
const MAX_PUSHES: usize = 4000;

fn start(tag: &str) -> Server {
    ServerBuilder::new(tag)
        .set("send_buffer_size", "262144")
        .set("max_message_size", "65536")
        .set("slow_consumer_timeout", "1")
        .start()
}

fn big_push(server: &Server, to_uid: u64, i: usize, filler: &str) -> Value {
    let reply = server.push(
        "to_uid",
        json!({"to_uid": to_uid.to_string(), "type": "chat", "content": {"type": "text", "seq": i, "value": filler}}),
    );
    assert_eq!(reply["code"], 0, "{reply}");
    reply
}

/// Pushes 30 KB messages to `slow` (never read) until one is not delivered; after each, pushes
/// a small one to `reader`'s uid and checks it arrives, in order. Returns how many got through.
fn fill_until_cut_off(
    server: &Server,
    slow_uid: u64,
    reader: &mut Client,
    reader_uid: u64,
) -> usize {
    let filler = "s".repeat(30 * 1024);
    for i in 0..MAX_PUSHES {
        let reply = big_push(server, slow_uid, i, &filler);
        let to_reader = server.push(
            "to_uid",
            json!({"to_uid": reader_uid.to_string(), "type": "chat", "content": {"type": "text", "seq": i}}),
        );
        assert_eq!(
            to_reader["delivered"], 1,
            "the reading client takes every push: {to_reader}"
        );
        let got = reader.recv();
        assert_eq!(got["content"]["seq"], i, "in order: {got}");
        match reply["delivered"].as_u64() {
            Some(1) => {}
            Some(0) => return i,
            _ => panic!("delivered is 0 or 1: {reply}"),
        }
    }
    panic!("{MAX_PUSHES} pushes of 30 KB all delivered to a client that never reads")
}

#[test]
fn a_client_that_never_reads_is_cut_off_and_the_others_are_served() {
    let server = start("slow");
    let _slow = server.login(1, "app");
    let mut reader = server.login(2, "app");
    let through = fill_until_cut_off(&server, 1, &mut reader, 2);
    assert!(
        through * 30 * 1024 >= 262_144,
        "the server's own buffer was used first ({through} pushes)"
    );

    let slow_count = wait_for("stats to count the slow consumer", || {
        let n = server.stats()["slow_consumers"].as_u64()?;
        (n >= 1).then_some(n)
    });
    assert_eq!(slow_count, 1, "only the client that does not read");
    let online = server.push("online", json!({"uid": "1"}));
    assert_eq!(
        online["onLine"], 0,
        "the cut-off client left the registry: {online}"
    );
    let again = big_push(&server, 1, MAX_PUSHES, "after");
    assert_eq!(again["delivered"], 0, "{again}");

    // The reading client carries on.
    for i in 0..20 {
        let r = server.push(
            "to_uid",
            json!({"to_uid": "2", "type": "chat", "content": {"n": i}}),
        );
        assert_eq!(r["delivered"], 1, "{r}");
        assert_eq!(reader.recv()["content"]["n"], i);
    }
}

#[test]
fn the_cut_off_client_gets_whole_frames_then_close_1008() {
    let server = start("slow-close");
    let mut slow = server.login(1, "app");
    let mut reader = server.login(2, "app");
    let through = fill_until_cut_off(&server, 1, &mut reader, 2);
    // Its queue stays full: past slow_consumer_timeout it is cut off.
    wait_for("the slow consumer to be cut off", || {
        (server.stats()["slow_consumers"].as_u64()? >= 1).then_some(())
    });
    // Reading now: what was sent before the cut arrives as whole frames, in order, with no gap
    // (a frame half written is finished, never broken off), and the close says why.
    let (frames, ending) = slow.until_closed();
    assert!(
        !frames.is_empty() && frames.len() <= through,
        "{} of {through}",
        frames.len()
    );
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["content"]["seq"], i, "frame {i} in order");
        assert_eq!(
            f["content"]["value"].as_str().map(str::len),
            Some(30 * 1024),
            "frame {i} whole"
        );
    }
    assert!(matches!(ending, Ending::Close(1008, _)), "{ending:?}");
}

#[test]
fn what_a_cut_off_client_never_got_comes_at_its_next_login_once() {
    let server = start("slow-kept");
    let mut slow = server.login(1, "app");
    let mut reader = server.login(2, "app");
    let sent = fill_until_cut_off(&server, 1, &mut reader, 2) + 1;
    wait_for("the slow consumer to be cut off", || {
        (server.stats()["slow_consumers"].as_u64()? >= 1).then_some(())
    });
    // What reached the socket before the cut, then what was kept for later: every push once.
    let (before, _) = slow.until_closed();
    let mut again = server.login(1, "app");
    let mut seen: Vec<u64> = before
        .iter()
        .filter_map(|f| f["content"]["seq"].as_u64())
        .collect();
    while seen.len() < sent {
        let f = again.recv();
        assert_eq!(f["state"], 0, "kept as undelivered: {}", f["id"]);
        seen.push(f["content"]["seq"].as_u64().expect("seq"));
    }
    let expected: Vec<u64> = (0..sent as u64).collect();
    assert_eq!(seen, expected, "every push exactly once, in order");
    again.send_text("ping");
    assert_eq!(again.recv(), json!({"type": "pong"}), "nothing more");
}
