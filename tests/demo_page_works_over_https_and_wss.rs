//! With TLS on, the demo page works in a real browser over `https://` and `wss://` with a
//! self-signed certificate: two headless Chromium tabs load it over https, see that the demo
//! login is refused because TLS is on, connect over wss with access tokens made with
//! `POST /api/login` over https and pasted into the page, chat both ways with delivery acks,
//! and a back-end push over UDP shows up on the page.
//!
//! Chromium (Debian's `chromium` package) is driven over the Chrome DevTools Protocol
//! (`common::browser`). It trusts exactly the test's certificate, named by the SHA-256 of its
//! public key (`--ignore-certificate-errors-spki-list`), not every certificate. A missing
//! browser is a failure, never a skip.
mod common;
use common::browser::*;
use common::tls::TestCert;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// `tls.handshakes` from `/api/stats` (itself asked over https, which adds one).
fn tls_handshakes(stats: &Value) -> u64 {
    stats["tls"]["handshakes"]
        .as_u64()
        .unwrap_or_else(|| panic!("tls.handshakes in {stats}"))
}

#[test]
fn demo_page_works_over_https_and_wss() {
    // Fail early and clearly when the browser is missing, before starting anything.
    chromium_path();
    let cert = TestCert::new();
    let server = ServerBuilder::new("demo-page-tls").tls(&cert).start();
    // Declared after the server, so the browser goes first when the test ends or fails. Trusts
    // this certificate only: with another key's hash the pages stay on Chromium's error page
    // (ERR_CERT_AUTHORITY_INVALID), headless or not.
    let mut b = Browser::launch_with(&[format!(
        "--ignore-certificate-errors-spki-list={}",
        cert.spki_sha256
    )]);
    let url = format!("https://127.0.0.1:{}/", server.ws_port);

    let a = b.open_page(&url);
    let bb = b.open_page(&url);
    let pages = [("A", a.as_str()), ("B", bb.as_str())];
    b.wait_until(
        &a,
        "page A to load the demo page over https",
        DEMO_PAGE_LOADED,
        &pages,
    );
    b.wait_until(
        &bb,
        "page B to load the demo page over https",
        DEMO_PAGE_LOADED,
        &pages,
    );
    for page in [&a, &bb] {
        assert_eq!(
            b.eval(page, "location.protocol"),
            json!("https:"),
            "the page is served over https"
        );
    }

    // The page tells why its demo login cannot be used here: its hint names TLS, the demo
    // login button gets the server's refusal, and the online list says it is not shown.
    let hint = b.eval(&a, "document.getElementById('hint').textContent");
    assert!(
        hint.as_str().is_some_and(|h| h.contains("when TLS is on")),
        "the hint names TLS among the demo login's refusals: {hint}"
    );
    log_in(&mut b, &a, "601");
    b.wait_until(
        &a,
        "page A to show the demo login refused because TLS is on",
        &log_has(
            ".msg-err",
            &[
                "demo login refused (403)",
                "the demo login is off while TLS is on",
            ],
        ),
        &pages,
    );
    b.wait_until(
        &a,
        "page A's online list to say it is not shown while TLS is on",
        "document.getElementById('online').textContent.includes('not shown: the demo login is off while TLS is on')",
        &pages,
    );

    // Tokens registered over https, pasted into the pages, connect them over wss.
    server.register(601, "pc", "tls-601", far_future());
    server.register(602, "app", "tls-602", far_future());
    let before = tls_handshakes(&server.stats());
    let token_a = wspush::protocol::encode_access_token("tls-601", 601, "pc");
    let token_b = wspush::protocol::encode_access_token("tls-602", 602, "app");
    connect_with_token(&mut b, &a, &token_a);
    connect_with_token(&mut b, &bb, &token_b);
    b.wait_until(
        &a,
        "page A to be online as 601 over wss",
        &status_starts_with("online as 601 (pc"),
        &pages,
    );
    b.wait_until(
        &bb,
        "page B to be online as 602 over wss",
        &status_starts_with("online as 602 (app"),
        &pages,
    );

    // The server sees the two pages' connections, made on its TLS-only WebSocket port: at
    // least their two handshakes and this stats request's own.
    let stats = server.stats();
    assert_eq!(stats["online_connections"], 2, "{stats}");
    assert_eq!(stats["online_users"], 2, "{stats}");
    let after = tls_handshakes(&stats);
    assert!(
        after >= before + 3,
        "TLS handshakes went from {before} to {after}: {stats}"
    );
    // Chromium trusted the certificate: no handshake of it was refused with an alert.
    assert_eq!(stats["tls"]["failures"]["client_alert"], 0, "{stats}");
    assert_eq!(stats["tls"]["failures"]["plain_http"], 0, "{stats}");

    // A → B, with the ack marking A's message delivered.
    send_chat(&mut b, &a, "602", "hello over wss");
    b.wait_until(
        &bb,
        "page B to receive \"hello over wss\" from 601",
        &log_has(".msg-in", &["601 → 602: hello over wss"]),
        &pages,
    );
    b.wait_until(
        &a,
        "page A's message to be marked delivered",
        &log_has(
            ".msg-out.delivered",
            &["me → 602: hello over wss", "delivered"],
        ),
        &pages,
    );

    // B → A.
    send_chat(&mut b, &bb, "601", "hi back over wss");
    b.wait_until(
        &a,
        "page A to receive \"hi back over wss\" from 602",
        &log_has(".msg-in", &["602 → 601: hi back over wss"]),
        &pages,
    );
    b.wait_until(
        &bb,
        "page B's reply to be marked delivered",
        &log_has(
            ".msg-out.delivered",
            &["me → 601: hi back over wss", "delivered"],
        ),
        &pages,
    );

    // A back end pushes to 602 over UDP; page B shows it.
    let reply = server.push(
        "to_uid",
        json!({"to_uid": "602", "type": "chat", "uid": "0", "content": {"type": "text", "value": "pushed to a wss page"}}),
    );
    assert_eq!(reply["code"], 0, "{reply}");
    assert!(
        reply["delivered"].as_u64().is_some_and(|n| n >= 1),
        "{reply}"
    );
    b.wait_until(
        &bb,
        "page B to show the back-end push",
        &log_has(".msg-in", &["pushed to a wss page"]),
        &pages,
    );

    // Page B never logged an error; page A only the demo login's refusal.
    assert_eq!(
        b.log_errors(&bb),
        json!([]),
        "error entries in page B's log"
    );
    let errors = b.log_errors(&a);
    let unexpected: Vec<&Value> = errors
        .as_array()
        .expect("an array")
        .iter()
        .filter(|e| {
            !e.as_str()
                .is_some_and(|t| t.contains("demo login refused (403)"))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "error entries in page A's log: {errors}"
    );

    // A screenshot of page B, for a human to look at (not checked).
    b.save_screenshot(&bb, Path::new("/tmp/wspush-demo-tls.png"));
}
