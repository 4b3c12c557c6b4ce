//! The demo page served at `GET /` on the WebSocket port works in a real browser: two headless
//! Chromium tabs log in through the demo login, see each other online, chat both ways with
//! delivery acks, and a back-end push over UDP shows up on the page. A third tab whose requests
//! carry a proxy's header is refused the demo login, and connects with a pasted access token.
//!
//! Chromium (Debian's `chromium` package) is driven over the Chrome DevTools Protocol
//! (`common::browser`). A missing browser is a failure, never a skip.
mod common;
use common::browser::*;
use common::*;
use serde_json::json;
use std::path::Path;

#[test]
fn demo_page_lets_two_browsers_chat() {
    // Fail early and clearly when the browser is missing, before starting anything.
    chromium_path();
    let server = Server::start("demo-page");
    // Declared after the server, so the browser goes first when the test ends or fails.
    let mut b = Browser::launch();
    let url = format!("http://127.0.0.1:{}/", server.ws_port);

    let a = b.open_page(&url);
    let bb = b.open_page(&url);
    let pages = [("A", a.as_str()), ("B", bb.as_str())];
    let loaded = DEMO_PAGE_LOADED;
    b.wait_until(&a, "page A to load the demo page", loaded, &pages);
    b.wait_until(&bb, "page B to load the demo page", loaded, &pages);

    // Both log in through /demo/login and connect their WebSocket.
    log_in(&mut b, &a, "501");
    log_in(&mut b, &bb, "502");
    b.wait_until(
        &a,
        "page A to be online as 501",
        &status_starts_with("online as 501"),
        &pages,
    );
    b.wait_until(
        &bb,
        "page B to be online as 502",
        &status_starts_with("online as 502"),
        &pages,
    );
    for page in [&a, &bb] {
        let enabled = b.eval(
            page,
            "['to_uid', 'message', 'send'].every((id) => !document.getElementById(id).disabled)",
        );
        assert_eq!(
            enabled,
            json!(true),
            "the chat inputs are enabled once online"
        );
    }

    // Page A's online list (polled by the page) comes to show 502.
    b.wait_until(
        &a,
        "page A's online list to show 502",
        "!!document.querySelector('#online li[data-uid=\"502\"]')",
        &pages,
    );

    // A → B, with the ack marking A's message delivered.
    send_chat(&mut b, &a, "502", "hello from A");
    b.wait_until(
        &bb,
        "page B to receive \"hello from A\" from 501",
        &log_has(".msg-in", &["501 → 502: hello from A"]),
        &pages,
    );
    b.wait_until(
        &a,
        "page A's message to be marked delivered",
        &log_has(
            ".msg-out.delivered",
            &["me → 502: hello from A", "delivered"],
        ),
        &pages,
    );
    assert_eq!(
        b.eval(&a, "document.getElementById('message').value"),
        json!(""),
        "the message box is cleared after sending"
    );

    // B → A.
    send_chat(&mut b, &bb, "501", "hi A");
    b.wait_until(
        &a,
        "page A to receive \"hi A\" from 502",
        &log_has(".msg-in", &["502 → 501: hi A"]),
        &pages,
    );
    b.wait_until(
        &bb,
        "page B's reply to be marked delivered",
        &log_has(".msg-out.delivered", &["me → 501: hi A", "delivered"]),
        &pages,
    );

    // A back end pushes to 502 over UDP; page B shows it.
    let reply = server.push(
        "to_uid",
        json!({"to_uid": "502", "type": "chat", "uid": "0", "content": {"type": "text", "value": "pushed by backend"}}),
    );
    assert_eq!(reply["code"], 0, "{reply}");
    assert!(
        reply["delivered"].as_u64().is_some_and(|n| n >= 1),
        "{reply}"
    );
    b.wait_until(
        &bb,
        "page B to show the back-end push",
        &log_has(".msg-in", &["pushed by backend"]),
        &pages,
    );

    // Tab C comes as through a proxy: the demo login is refused, and the page says why; an
    // access token made with /api/login, pasted, connects it.
    let c = b.open_page("about:blank");
    b.command(Some(&c), "Network.enable", json!({}));
    let proxied = json!({"headers": {"X-Forwarded-For": "203.0.113.7"}});
    b.command(Some(&c), "Network.setExtraHTTPHeaders", proxied);
    b.command(Some(&c), "Page.navigate", json!({"url": url}));
    let pages = [("A", a.as_str()), ("B", bb.as_str()), ("C", c.as_str())];
    b.wait_until(&c, "page C to load the demo page", loaded, &pages);
    log_in(&mut b, &c, "503");
    b.wait_until(
        &c,
        "page C to show the demo login refused through a proxy",
        &log_has(".msg-err", &["demo login refused (403)", "proxy"]),
        &pages,
    );
    b.wait_until(
        &c,
        "page C's online list to say it is not shown",
        "document.getElementById('online').textContent.includes('not shown')",
        &pages,
    );
    server.register(503, "app", "pasted-503", far_future());
    let access = wspush::protocol::encode_access_token("pasted-503", 503, "app");
    connect_with_token(&mut b, &c, &access);
    b.wait_until(
        &c,
        "page C to be online as 503 with the pasted token",
        &status_starts_with("online as 503 (app"),
        &pages,
    );
    send_chat(&mut b, &a, "503", "hello C");
    b.wait_until(
        &c,
        "page C to receive \"hello C\" from 501",
        &log_has(".msg-in", &["501 → 503: hello C"]),
        &pages,
    );

    // Nothing went wrong on pages A and B.
    for (name, page) in &pages[..2] {
        let errors = b.log_errors(page);
        assert_eq!(errors, json!([]), "error entries in page {name}'s log");
    }

    // A screenshot of page B, for a human to look at (not checked).
    b.save_screenshot(&bb, Path::new("/tmp/wspush-demo.png"));
}
