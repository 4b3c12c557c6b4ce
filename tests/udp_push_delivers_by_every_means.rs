//! Every `means` of a UDP push (PROTOCOL.md section 4) reaches exactly the connections it
//! names, with `data` plus an `id` (and `time` when absent), and the reply says how many.
mod common;
use common::*;
use serde_json::{json, Value};

/// Asserts the common shape of a successful delivery reply and returns its id.
fn ok_reply(reply: &Value, delivered: u64) -> u64 {
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["msg"], "ok", "{reply}");
    assert_eq!(reply["delivered"], delivered, "{reply}");
    assert_eq!(reply["onLine"], u8::from(delivered > 0), "{reply}");
    reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id is a string: {reply}"))
        .parse()
        .unwrap_or_else(|_| panic!("id is decimal: {reply}"))
}

/// `data` with the `id` of the reply and the `time` the server chose (a current Unix time).
fn expected_frame(data: &Value, got: &Value, id: u64) -> Value {
    let time = got["time"]
        .as_u64()
        .unwrap_or_else(|| panic!("time is a number: {got}"));
    assert!(time > 1_600_000_000, "time is a Unix time: {got}");
    let mut want = data.clone();
    want["id"] = json!(id.to_string());
    want["time"] = json!(time);
    want
}

fn chat(to_uid: &str, text: &str) -> Value {
    json!({"to_uid": to_uid, "type": "chat", "uid": "123456", "content": {"type": "text", "value": text}})
}

#[test]
fn to_uid_reaches_every_connection_of_the_uid_with_id_and_time() {
    let server = Server::start("udp-to-uid");
    let mut app = server.login(1, "app");
    let mut pc = server.login(1, "pc");
    let mut other = server.login(2, "app");
    let data = chat("1", "hello");
    let reply = server.push("to_uid", data.clone());
    let id = ok_reply(&reply, 2);
    for c in [&mut app, &mut pc] {
        let got = c.recv();
        assert_eq!(
            got,
            expected_frame(&data, &got, id),
            "data + id + time, nothing else"
        );
        c.expect_nothing_queued();
    }
    other.expect_nothing_queued();
}

#[test]
fn a_time_given_by_the_pusher_is_kept_as_is() {
    let server = Server::start("udp-time");
    let mut c = server.login(3, "app");
    let mut data = chat("3", "dated");
    data["time"] = json!("1599877568");
    let id = ok_reply(&server.push("to_uid", data.clone()), 1);
    let mut want = data.clone();
    want["id"] = json!(id.to_string());
    assert_eq!(c.recv(), want);
}

#[test]
fn a_datagram_may_end_with_a_newline() {
    let server = Server::start("udp-newline");
    let mut c = server.login(4, "app");
    let data = chat("4", "nl");
    let mut datagram = json!({"sk": SECRET, "means": "to_uid", "data": data}).to_string();
    datagram.push('\n');
    let id = ok_reply(&server.udp(datagram.as_bytes()), 1);
    let got = c.recv();
    assert_eq!(got, expected_frame(&data, &got, id));
}

#[test]
fn to_uid_for_an_offline_user_is_kept_and_handed_over_at_login() {
    let server = Server::start("udp-offline");
    let data = chat("50", "while away");
    let reply = server.push("to_uid", data.clone());
    let id = ok_reply(&reply, 0);
    let mut c = server.login(50, "app");
    let got = c.recv();
    assert_eq!(
        got["id"],
        id.to_string(),
        "the stored message comes right after the login frame: {got}"
    );
    assert_eq!(got["state"], 0, "{got}");
    assert_eq!(got["type"], "chat", "{got}");
    assert_eq!(got["to_uid"], "50", "{got}");
    assert_eq!(got["content"], data["content"], "{got}");
    c.expect_nothing_queued();
    // Handed over once: the next login finds nothing.
    c.close();
    let mut again = server.login(50, "app");
    again.expect_nothing_queued();
}

#[test]
fn to_uids_and_to_uid_all_reach_each_listed_uid_only() {
    let server = Server::start("udp-to-uids");
    let mut one = server.login(1, "app");
    let mut two = server.login(2, "app");
    let mut two_pc = server.login(2, "pc");
    let mut three = server.login(3, "app");

    let data = json!({"type": "notice", "to_uids": [1, "2", 99], "content": "a"});
    ok_reply(&server.push("to_uids", data), 3);
    for c in [&mut one, &mut two, &mut two_pc] {
        let got = c.recv();
        assert_eq!(got["content"], "a", "{got}");
        assert_eq!(got["type"], "notice", "{got}");
        c.expect_nothing_queued();
    }
    three.expect_nothing_queued();

    let data = json!({"type": "notice", "uid_all": ["3", 1], "content": "b"});
    ok_reply(&server.push("to_uid_all", data), 2);
    for c in [&mut three, &mut one] {
        assert_eq!(c.recv()["content"], "b");
        c.expect_nothing_queued();
    }
    two.expect_nothing_queued();
    two_pc.expect_nothing_queued();

    // Only offline uids: nothing delivered.
    let reply = server.push("to_uids", json!({"to_uids": [77, 78], "content": "c"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["delivered"], 0, "{reply}");
    assert_eq!(reply["onLine"], 0, "{reply}");
    one.expect_nothing_queued();
}

#[test]
fn an_empty_list_means_every_online_user() {
    let server = Server::start("udp-to-uids-all");
    let mut clients = [
        server.login(1, "app"),
        server.login(1, "pc"),
        server.login(2, "app"),
        server.login(3, "weixin"),
    ];
    for (means, list) in [("to_uids", "to_uids"), ("to_uid_all", "uid_all")] {
        let data = json!({"type": "notice", list: [], "content": means});
        ok_reply(&server.push(means, data), clients.len() as u64);
        for c in clients.iter_mut() {
            let got = c.recv();
            assert_eq!(got["content"], means, "{got}");
            assert!(
                got["id"].as_str().is_some_and(|i| i.parse::<u64>().is_ok()),
                "{got}"
            );
            c.expect_nothing_queued();
        }
    }
}

#[test]
fn broadcast_reaches_every_logged_in_connection() {
    let server = Server::start("udp-broadcast");
    let mut clients = vec![
        server.login(1, "app"),
        server.login(1, "pc"),
        server.login(2, "app"),
    ];
    // A connection that has not logged in (here: not even upgraded) is not a recipient.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", server.ws_port)).expect("connect");
    wait_for("the idle connection to be accepted", || {
        (server.stats()["connections"] == 4).then_some(())
    });
    let data = json!({"type": "broadcast", "content": {"type": "text", "value": "all"}});
    let id = ok_reply(&server.push("broadcast", data.clone()), 3);
    for c in clients.iter_mut() {
        let got = c.recv();
        assert_eq!(got, expected_frame(&data, &got, id));
        c.expect_nothing_queued();
    }
    // One more connection: one more delivery.
    clients.push(server.login(9, "app"));
    ok_reply(&server.push("broadcast", json!({"content": "again"})), 4);
    for c in clients.iter_mut() {
        assert_eq!(c.recv()["content"], "again");
    }
}

#[test]
fn to_fd_and_to_fd_all_address_connections() {
    let server = Server::start("udp-to-fd");
    let mut a = server.login(1, "app");
    let mut b = server.login(1, "pc");
    let mut c = server.login(2, "app");
    assert!(
        a.fd != b.fd && b.fd != c.fd && a.fd != c.fd,
        "distinct connection ids"
    );

    let data = json!({"type": "direct", "to_fd": a.fd, "content": "only a"});
    let id = ok_reply(&server.push("to_fd", data.clone()), 1);
    let got = a.recv();
    assert_eq!(got, expected_frame(&data, &got, id));
    for x in [&mut a, &mut b, &mut c] {
        x.expect_nothing_queued();
    }

    let data = json!({"type": "direct", "fd_all": [a.fd, c.fd], "content": "a and c"});
    ok_reply(&server.push("to_fd_all", data), 2);
    for x in [&mut a, &mut c] {
        assert_eq!(x.recv()["content"], "a and c");
    }
    for x in [&mut a, &mut b, &mut c] {
        x.expect_nothing_queued();
    }

    let data = json!({"type": "direct", "fd_all": [], "content": "everyone"});
    ok_reply(&server.push("to_fd_all", data), 3);
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.recv()["content"], "everyone");
        x.expect_nothing_queued();
    }

    // A connection id that names no connection delivers nothing.
    let unknown = a.fd.max(b.fd).max(c.fd) + 1000;
    let reply = server.push("to_fd", json!({"to_fd": unknown, "content": "nobody"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["delivered"], 0, "{reply}");
    assert_eq!(reply["onLine"], 0, "{reply}");
    for x in [&mut a, &mut b, &mut c] {
        x.expect_nothing_queued();
    }
}

#[test]
fn online_and_is_on_line_report_presence_and_sources() {
    let server = Server::start("udp-online");
    let _app = server.login(1, "app");
    let _pc = server.login(1, "pc");
    for (means, key) in [
        ("online", "uid"),
        ("is_on_line", "uid"),
        ("online", "to_uid"),
        ("is_on_line", "to_uid"),
    ] {
        let reply = server.push(means, json!({key: "1"}));
        assert_eq!(reply["code"], 0, "{means}/{key}: {reply}");
        assert_eq!(reply["onLine"], 1, "{means}/{key}: {reply}");
        assert_eq!(
            sorted_sources(&reply),
            ["app", "pc"],
            "{means}/{key}: {reply}"
        );

        let reply = server.push(means, json!({key: 2}));
        assert_eq!(reply["code"], 0, "{means}/{key}: {reply}");
        assert_eq!(reply["onLine"], 0, "{means}/{key}: {reply}");
        assert_eq!(reply["sources"], json!([]), "{means}/{key}: {reply}");
    }
}

#[test]
fn kick_closes_every_connection_of_the_uid_with_4003() {
    let server = Server::start("udp-kick");
    let mut a = server.login(1, "app");
    let mut b = server.login(1, "pc");
    let mut other = server.login(2, "app");
    let reply = server.push("kick", json!({"uid": "1"}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["delivered"], 2, "{reply}");
    a.expect_close(4003);
    b.expect_close(4003);
    other.expect_nothing_queued();
    let reply = server.push("online", json!({"uid": 1}));
    assert_eq!(
        reply["onLine"], 0,
        "kicked connections are offline: {reply}"
    );
    let reply = server.push("online", json!({"uid": 2}));
    assert_eq!(reply["onLine"], 1, "other users stay: {reply}");

    // Kicking someone who is not there kicks nobody.
    let reply = server.push("kick", json!({"uid": 1}));
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["delivered"], 0, "{reply}");
}

#[test]
fn to_uids_keeps_the_message_for_listed_uids_that_are_offline() {
    let server = Server::start("udp-to-uids-offline");
    let mut online = server.login(1, "app");
    let data = json!({"type": "chat", "uid": "5", "to_uids": ["1", "60"], "content": {"type": "text", "value": "for both"}});
    ok_reply(&server.push("to_uids", data), 1);
    assert_eq!(online.recv()["content"]["value"], "for both");
    let mut later = server.login(60, "app");
    let got = later.recv();
    assert_eq!(got["state"], 0, "{got}");
    assert_eq!(got["to_uid"], "60", "{got}");
    assert_eq!(got["content"]["value"], "for both", "{got}");
    later.expect_nothing_queued();
}

#[test]
fn broadcasts_and_pushes_keep_their_order_at_a_client_that_reads_late() {
    let server = ServerBuilder::new("udp-broadcast-order")
        .set("send_buffer_size", "8388608")
        .start();
    let mut late = server.login(1, "app");
    let mut prompt = server.login(2, "app");
    // Large frames fill the late reader's socket, so the server's queue for it holds the rest
    // while broadcasts (written at once to whoever can take them) and pushes interleave.
    let filler = "x".repeat(16 * 1024);
    for seq in 0..100 {
        if seq % 2 == 0 {
            let data = json!({"type": "notice", "content": {"seq": seq, "pad": filler}});
            ok_reply(&server.push("broadcast", data), 2);
        } else {
            let data = json!({"to_uid": "1", "type": "chat", "uid": "0",
                "content": {"seq": seq, "pad": filler}});
            ok_reply(&server.push("to_uid", data), 1);
        }
    }
    let seqs: Vec<u64> = (0..100)
        .map(|_| late.recv()["content"]["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    let seqs: Vec<u64> = (0..50)
        .map(|_| prompt.recv()["content"]["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (0..100).step_by(2).collect::<Vec<_>>());
}
