//! A demo login mints a token kept only in the master's memory: it logs in the uid and source
//! it was made for, and nothing else. It writes no token record: the real token of the same
//! uid and source keeps working, and once the server restarts (its demo tokens gone) the demo
//! token is checked against the token store like any other and refused.
mod common;
use common::*;
use serde_json::Value;
use wspush::protocol::encode_access_token;

/// `/demo/login` for (uid, source): the access token it hands out and the token inside it.
fn demo_login(server: &Server, uid: u64, source: &str) -> (String, String) {
    let path = format!("/demo/login?uid={uid}&source={source}");
    let (status, body) = http_request_opt(server.ws_port, "GET", &path, &[], b"").expect("answer");
    assert_eq!(status, 200, "{body}");
    let body: Value = body_json(&body);
    assert_eq!(
        (&body["uid"], &body["source"]),
        (&Value::from(uid.to_string()), &Value::from(source))
    );
    let access = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let decoded =
        wspush::protocol::decode_access_token(&access, wspush::config::TokenLayout::TokenUidSource)
            .expect("a decodable access token");
    (access, decoded.token)
}

/// Connects with `access` and asserts a 401 login frame and close 4001.
fn refused(server: &Server, access: &str) {
    let mut c = server.connect(access, None);
    let frames = c.expect_close(4001);
    assert_eq!(
        frames.first().map(|f| &f["code"]),
        Some(&Value::from(401)),
        "{frames:?}"
    );
}

#[test]
fn a_demo_token_logs_in_but_is_never_a_real_token() {
    let prepared = ServerBuilder::new("demo-token").prepare();
    let (dir, config) = (prepared.dir.clone(), prepared.config.clone());
    let (ws_port, udp_port, http_port) = (prepared.ws_port, prepared.udp_port, prepared.http_port);
    let mut server = prepared.spawn();
    server.register(8, "pc", "real-token-8", far_future());
    let real = encode_access_token("real-token-8", 8, "pc");

    // A demo token for 8/pc logs in as 8/pc.
    let (access, token) = demo_login(&server, 8, "pc");
    assert!(token.starts_with("wspush-demo:"), "{token}");
    let mut demo = server.connect(&access, None);
    let login = demo.expect_login();
    assert_eq!(
        (&login["data"]["uid"], &login["data"]["source"]),
        (&Value::from("8"), &Value::from("pc"))
    );

    // For another source or uid it is no token at all.
    refused(&server, &encode_access_token(&token, 8, "app"));
    refused(&server, &encode_access_token(&token, 9, "pc"));

    // The real token was not replaced: it logs in, and takes the place of the demo login.
    let mut c = server.connect(&real, None);
    c.expect_login();
    demo.expect_close(4002);
    c.close();

    // A new server process on the same store: the demo token was never in it.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_exit();
    drop(server);
    let server = Server {
        dir,
        config,
        ws_port,
        udp_port,
        http_port,
        child: None,
        tls: None,
    }
    .spawn();
    refused(&server, &access);
    server.connect(&real, None).expect_login();
}
