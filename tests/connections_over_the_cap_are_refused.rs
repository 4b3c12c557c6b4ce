//! With `max_connection = N`, N connections are served; one more is answered with HTTP 503 and
//! closed, and the ones already there are not disturbed. A freed place can be taken again.
mod common;
use common::*;
use serde_json::json;
use std::net::TcpStream;

const CAP: u64 = 3;

/// Opens a TCP connection to the WebSocket port, sends nothing, and reads until the server
/// ends it; returns what it sent.
fn refused_connection(port: u16) -> Vec<u8> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    read_until_server_closes(s, "a connection over the cap")
}

fn all_chat(clients: &mut [Client], uids: &[u64]) {
    let n = clients.len();
    for i in 0..n {
        let to = (i + 1) % n;
        let text = format!("from {} to {}", uids[i], uids[to]);
        clients[i].chat(uids[to], &text);
        assert_eq!(clients[to].recv()["content"]["value"], text.as_str());
        let ack = clients[i].recv();
        assert_eq!(
            (ack["type"].clone(), ack["state"].clone()),
            (json!("ack"), json!(1)),
            "{ack}"
        );
    }
}

#[test]
fn the_connection_over_the_cap_gets_503_and_the_others_carry_on() {
    let server = ServerBuilder::new("cap")
        .set("max_connection", &CAP.to_string())
        .start();
    assert_eq!(server.stats()["max_connections"], CAP);
    let uids: Vec<u64> = (1..=CAP).collect();
    let mut clients: Vec<Client> = uids.iter().map(|u| server.login(*u, "app")).collect();
    all_chat(&mut clients, &uids);

    let got = refused_connection(server.ws_port);
    let (status, body, _) = parse_response(&got)
        .unwrap_or_else(|| panic!("an HTTP response: {:?}", String::from_utf8_lossy(&got)));
    assert_eq!(status, 503, "{body}");
    let stats = server.stats();
    assert_eq!(stats["refused_over_cap"], 1, "{stats}");
    assert_eq!(stats["connections"], CAP, "{stats}");

    // The refusal disturbed nobody.
    all_chat(&mut clients, &uids);

    // A WebSocket client is refused too, with an error rather than a hang.
    server.register(99, "app", "t99", far_future());
    let url = server.ws_url(&wspush::protocol::encode_access_token("t99", 99, "app"));
    assert!(
        tungstenite::connect(url).is_err(),
        "no handshake over the cap"
    );
    assert_eq!(server.stats()["refused_over_cap"], 2);
}

#[test]
fn a_freed_place_can_be_taken_again() {
    let server = ServerBuilder::new("cap-free")
        .set("max_connection", &CAP.to_string())
        .start();
    let mut clients: Vec<Client> = (1..=CAP).map(|u| server.login(u, "app")).collect();
    let got = refused_connection(server.ws_port);
    assert_eq!(parse_response(&got).map(|r| r.0), Some(503));

    clients.remove(0).close();
    wait_for("the closed connection to free its place", || {
        (server.stats()["connections"].as_u64()? < CAP).then_some(())
    });
    let mut newcomer = server.login(10, "app");
    clients[0].chat(10, "welcome");
    assert_eq!(newcomer.recv()["content"]["value"], "welcome");

    // Full again.
    let got = refused_connection(server.ws_port);
    assert_eq!(parse_response(&got).map(|r| r.0), Some(503));
    assert_eq!(server.stats()["refused_over_cap"], 2);
}
