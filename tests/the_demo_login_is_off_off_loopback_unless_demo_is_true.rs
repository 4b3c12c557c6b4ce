//! A server that listens on a non-loopback address with `demo = false` (the default) refuses
//! `/demo/login` and `/demo/online` with 403, saying which rule refused them; the demo page
//! itself is still served, to connect with an access token made with `/api/login`.
mod common;
use common::*;
use serde_json::Value;

#[test]
fn the_demo_login_is_off_off_loopback_unless_demo_is_true() {
    let prepared = ServerBuilder::new("demo-off").prepare();
    let text = read_file(&prepared.config).replace("host = \"127.0.0.1\"", "host = \"0.0.0.0\"");
    std::fs::write(&prepared.config, text).expect("config");
    let server = prepared.spawn();
    for path in ["/demo/login?uid=5", "/demo/online"] {
        let (status, body) =
            http_request_opt(server.ws_port, "GET", path, &[], b"").expect("an answer");
        let body = body_json(&body);
        assert_eq!(
            (status, &body["code"]),
            (403, &Value::from(403)),
            "{path}: {body}"
        );
        let msg = body["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("loopback") && msg.contains("demo = false"),
            "{body}"
        );
    }
    let (status, page) = http_request_opt(server.ws_port, "GET", "/", &[], b"").expect("page");
    assert_eq!(status, 200);
    assert!(
        page.contains("id=\"access_token\""),
        "the page offers a token field"
    );
    // An access token made with /api/login logs in as usual.
    server.login(5, "pc");
}
