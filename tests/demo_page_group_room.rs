//! The demo page's group room in a real browser: two headless Chromium tabs log in, join
//! `demo:room` through the demo helper, chat in the room (each sees the other's message, the
//! sender's is marked delivered by its ack), and a back-end `to_group` push shows up on both.
//! A group not named `demo:...` cannot be joined from the page.
mod common;
use common::browser::*;
use common::*;
use serde_json::json;

#[test]
fn two_browsers_chat_in_a_group_room() {
    chromium_path();
    let server = Server::start("demo-group");
    let mut b = Browser::launch();
    let url = format!("http://127.0.0.1:{}/", server.ws_port);
    let a = b.open_page(&url);
    let bb = b.open_page(&url);
    let pages = [("A", a.as_str()), ("B", bb.as_str())];
    for (name, page) in pages {
        b.wait_until(
            page,
            &format!("page {name} to load"),
            DEMO_PAGE_LOADED,
            &pages,
        );
    }
    log_in(&mut b, &a, "601");
    log_in(&mut b, &bb, "602");
    b.wait_until(&a, "A online", &status_starts_with("online as 601"), &pages);
    b.wait_until(
        &bb,
        "B online",
        &status_starts_with("online as 602"),
        &pages,
    );

    for (name, page) in pages {
        b.click(page, "join");
        b.wait_until(
            page,
            &format!("page {name} to have joined #demo:room"),
            &log_has(".msg-sys", &["joined #demo:room"]),
            &pages,
        );
    }
    let r = server.push("group_members", json!({"group": "demo:room"}));
    assert_eq!(r["uids"], json!(["601", "602"]), "{r}");

    send_chat(&mut b, &a, "#demo:room", "hello room");
    b.wait_until(
        &bb,
        "page B to receive A's message in the room",
        &log_has(".msg-in", &["601 → #demo:room: hello room"]),
        &pages,
    );
    b.wait_until(
        &a,
        "page A's room message to be marked delivered",
        &log_has(".msg-out.delivered", &["me → #demo:room: hello room"]),
        &pages,
    );
    send_chat(&mut b, &bb, "#demo:room", "hi from B");
    b.wait_until(
        &a,
        "page A to receive B's message in the room",
        &log_has(".msg-in", &["602 → #demo:room: hi from B"]),
        &pages,
    );

    let r = server.push(
        "to_group",
        json!({"group": "demo:room", "type": "chat", "uid": "0", "content": {"type": "text", "value": "room notice"}}),
    );
    assert_eq!(r["delivered"], 2, "{r}");
    for (name, page) in pages {
        b.wait_until(
            page,
            &format!("page {name} to show the back-end's room notice"),
            &log_has(".msg-in", &["0 → #demo:room: room notice"]),
            &pages,
        );
    }

    // Only demo:... groups: the page cannot put its user in an application's group.
    b.fill(&a, "group", "team:1");
    b.click(&a, "join");
    b.wait_until(
        &a,
        "page A to show the refused join",
        &log_has(".msg-err", &["join refused (400)", "demo:"]),
        &pages,
    );
    assert_eq!(
        b.log_errors(&bb),
        json!([]),
        "error entries in page B's log"
    );
    let errors = b.log_errors(&a);
    assert_eq!(
        errors.as_array().map(Vec::len),
        Some(1),
        "only the refused join: {errors}"
    );
}
