//! The browser client library (`/wspush.js` on the WebSocket port) in headless Chromium:
//!
//! - against the real server, it settles `send` promises by their acks and error frames,
//!   survives a server restart (it reconnects by itself), and then hands over the messages
//!   stored while it was away exactly once and in order;
//! - against a fake socket driven frame by frame (`tests/js/wspush_logic.js`), what a real
//!   server cannot be made to do on demand: group acks and errors (groups are another
//!   branch's), late and out-of-order acks, redelivered messages, unanswered pings, the
//!   backoff's bounds and the close codes that stop it.
//!
//! Chromium (Debian's `chromium` package) is driven over the Chrome DevTools Protocol
//! (`common::browser`). A missing browser is a failure, never a skip.
mod common;
use common::browser::*;
use common::*;
use serde_json::{json, Value};

const LOGIC: &str = include_str!("js/wspush_logic.js");

/// JavaScript: what the page's client has seen, for failure messages.
const STATE: &str = "JSON.stringify({state: t.client.state, statuses: t.statuses.slice(-10), \
     got: t.got.map((m) => [m.id, m.content && m.content.value, m.state])})";

/// Opens the demo page of `server` (same origin as the library) and waits for it.
fn open(b: &mut Browser, server: &Server) -> String {
    let page = b.open_page(&format!("http://127.0.0.1:{}/", server.ws_port));
    b.wait_until(&page, "the demo page to load", DEMO_PAGE_LOADED, &[]);
    page
}

fn push_text(server: &Server, uid: &str, text: &str) -> Value {
    let reply = server.push(
        "to_uid",
        json!({"to_uid": uid, "type": "chat", "uid": "0", "content": {"type": "text", "value": text}}),
    );
    assert_eq!(reply["code"], 0, "{reply}");
    reply
}

#[test]
fn the_library_survives_a_restart_and_delivers_each_message_once_in_order() {
    chromium_path();
    let mut server = ServerBuilder::new("wspush-js")
        .set("max_message_size", "2048")
        .start();
    server.register(701, "pc", "js-701", far_future());
    let token = wspush::protocol::encode_access_token("js-701", 701, "pc");
    let mut peer = server.login(702, "app");
    let mut b = Browser::launch();
    let page = open(&mut b, &server);

    // Both builds load: the classic script sets window.WsPush, the same code as the module.
    let classic = b.eval(
        &page,
        "new Promise((ok, fail) => { const s = document.createElement('script'); \
         s.src = '/wspush.classic.js'; s.onload = () => ok(typeof window.WsPush === 'function' \
         && WsPush.accessToken('js-701', '701', 'pc')); s.onerror = fail; document.head.append(s); })",
    );
    assert_eq!(classic, json!(token), "the classic build encodes the token");

    // A client through the ES module. Its token function can hold a connection attempt: the
    // test uses that once, so that messages are surely stored while it is away.
    let setup = format!(
        "(async () => {{ const {{ WsPush }} = await import('/wspush.js'); \
         const t = window.t = {{ got: [], statuses: [], hold: null, waiting: false }}; \
         t.client = new WsPush('ws://127.0.0.1:{port}/', {{ \
           token: () => {{ if (!t.hold) return {token}; t.waiting = true; \
             return t.hold.then(() => {{ t.waiting = false; return {token}; }}); }}, \
           backoffInitial: 100, backoffMax: 400, \
           onMessage: (m) => t.got.push(m), onStatus: (s) => t.statuses.push(s) }}); \
         return true; }})()",
        port = server.ws_port,
        token = json!(token),
    );
    assert_eq!(b.eval(&page, &setup), json!(true));
    b.wait_until_js(
        &page,
        "the library to log in",
        "t.client.state === 'online'",
        STATE,
    );
    let login = b.eval(&page, "t.client.login");
    assert_eq!(login["uid"], "701", "{login}");

    // Sends settle by their answers, in order: delivered, stored, refused (too large: error
    // frame 400), and the one after the refusal is still matched to its own ack.
    let results = b.eval(
        &page,
        "Promise.allSettled([ \
           t.client.send('702', {type: 'text', value: 'js to 702'}), \
           t.client.send('799', {type: 'text', value: 'js to offline 799'}), \
           t.client.send('702', {type: 'text', value: 'x'.repeat(3000)}), \
           t.client.send('702', {type: 'text', value: 'after the refusal'}) ]) \
         .then((rs) => rs.map((r) => r.status === 'fulfilled' ? r.value \
           : {error: r.reason.code, message: r.reason.message}))",
    );
    let r = results.as_array().expect("four results");
    assert_eq!(
        (
            r[0]["type"].clone(),
            r[0]["to_uid"].clone(),
            r[0]["state"].clone()
        ),
        (json!("ack"), json!("702"), json!(1)),
        "{results}"
    );
    assert_eq!(
        (r[1]["to_uid"].clone(), r[1]["state"].clone()),
        (json!("799"), json!(0)),
        "{results}"
    );
    assert_eq!(r[2]["error"], 400, "{results}");
    assert!(
        r[2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large")),
        "{results}"
    );
    assert_eq!(
        (r[3]["to_uid"].clone(), r[3]["state"].clone()),
        (json!("702"), json!(1)),
        "{results}"
    );
    assert_ne!(r[0]["id"], r[3]["id"], "{results}");
    for want in ["js to 702", "after the refusal"] {
        let got = peer.recv();
        assert_eq!(
            (got["uid"].clone(), got["content"]["value"].clone()),
            (json!("701"), json!(want)),
            "{got}"
        );
    }

    // A live push arrives.
    assert_eq!(push_text(&server, "701", "m1")["onLine"], 1);
    b.wait_until_js(&page, "m1 to arrive", "t.got.length === 1", STATE);

    // The server stops: the library hears 1001 and keeps trying while nothing listens.
    server.stop();
    peer.expect_close(1001);
    b.wait_until_js(
        &page,
        "the library to be offline after 1001 and to fail a reconnection",
        "t.statuses.some((s) => s.state === 'offline' && s.code === 1001 && s.reason === 'server shutting down') \
         && t.statuses.some((s) => s.state === 'offline' && s.code === 1006)",
        STATE,
    );
    // Its next attempt waits for its token until the messages below are stored.
    b.eval(
        &page,
        "t.hold = new Promise((r) => { t.release = r; }); true",
    );
    b.wait_until_js(
        &page,
        "the next attempt to wait for its token",
        "t.waiting",
        STATE,
    );

    server.start_again();
    for text in ["m2", "m3", "m4", "m5"] {
        let reply = push_text(&server, "701", text);
        assert_eq!(
            reply["onLine"], 0,
            "701 is away, so {text} is stored: {reply}"
        );
    }
    let mut peer = server.login(702, "app");
    peer.chat(701, "m6");
    let ack = peer.recv();
    assert_eq!(
        (ack["type"].clone(), ack["state"].clone()),
        (json!("ack"), json!(0)),
        "{ack}"
    );

    // Released, it logs in and gets what was stored, then a live message behind it.
    b.eval(&page, "t.release(); true");
    b.wait_until_js(
        &page,
        "the library to log in again",
        "t.client.state === 'online'",
        STATE,
    );
    b.wait_until_js(&page, "m2 to m6 to arrive", "t.got.length >= 6", STATE);
    assert_eq!(push_text(&server, "701", "m7")["onLine"], 1);
    b.wait_until_js(
        &page,
        "m7 to arrive",
        "t.got.some((m) => m.content.value === 'm7')",
        STATE,
    );
    let got = b.eval(&page, "t.got.map((m) => [m.id, m.content.value, m.state])");
    let got = got.as_array().expect("a list");
    let texts: Vec<&str> = got.iter().map(|m| m[1].as_str().unwrap_or("?")).collect();
    assert_eq!(
        texts,
        ["m1", "m2", "m3", "m4", "m5", "m6", "m7"],
        "each once, in order: {got:?}"
    );
    // Stored messages come in the canonical shape with state 0; a live push is the pusher's
    // data with an id (no state).
    let states: Vec<Value> = got.iter().map(|m| m[2].clone()).collect();
    let (live, stored) = (Value::Null, json!(0));
    let want = [&live, &stored, &stored, &stored, &stored, &stored, &live];
    assert!(states.iter().eq(want), "states: {got:?}");
    let mut ids: Vec<&str> = got.iter().map(|m| m[0].as_str().unwrap_or("")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "distinct ids: {got:?}");

    // Sends work on the new connection.
    let ack = b.eval(
        &page,
        "t.client.send('702', {type: 'text', value: 'back again'})",
    );
    assert_eq!(
        (ack["type"].clone(), ack["state"].clone()),
        (json!("ack"), json!(1)),
        "{ack}"
    );
    let got = peer.recv();
    assert_eq!(got["content"]["value"], "back again", "{got}");
}

#[test]
fn the_library_logic_holds_against_a_fake_socket() {
    chromium_path();
    let server = Server::start("wspush-js-logic");
    let mut b = Browser::launch();
    let page = open(&mut b, &server);
    let run = format!("{LOGIC}\n;(async () => wspushLogic((await import('/wspush.js')).WsPush))()");
    let result = b.eval(&page, &run);
    assert_eq!(result["failures"], json!([]), "{result}");
    assert!(
        result["checks"].as_u64().is_some_and(|n| n >= 50),
        "{result}"
    );
}
