//! The admin dashboard (`GET /admin` on the HTTP API port) in headless Chromium: it asks for
//! the key (a wrong one is refused), then plots the node's series from `/api/admin/history`,
//! and the plots fill and move while the test drives traffic; a tab opened later shows the
//! history at once; its actions look a uid up, push to it (and to a group, whatever the reply)
//! and kick it, which closes the test client with 4003. Its data is refused without the key,
//! with the key in the URL, and to an address allowed neither to push nor to scrape. In a
//! cluster it lists the live nodes.
//!
//! `screenshots_for_the_readme` (ignored; `cargo test --test
//! the_admin_dashboard_plots_live_traffic_and_kicks -- --ignored`) writes `docs/admin-*.png`.
//!
//! Chromium (Debian's `chromium` package) is driven over the Chrome DevTools Protocol
//! (`common::browser`). A missing browser is a failure, never a skip.
mod common;
use common::browser::*;
use common::cluster::start_cluster;
use common::*;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// JavaScript: what the dashboard shows, for failure messages.
const STATE: &str = "JSON.stringify({dashboard: window.dashboard, \
    login: document.getElementById('login').className, error: document.getElementById('login-error').textContent, \
    conn: document.getElementById('conn').textContent, result: document.getElementById('result').textContent, \
    charts: Array.from(document.querySelectorAll('.chart')).map((c) => [c.id, c.dataset.points, c.dataset.max])})";

/// JavaScript: the page has loaded and asks for the key.
const KEY_FORM: &str = "document.readyState === 'complete' && !!document.getElementById('login') \
    && !document.getElementById('login').classList.contains('hidden')";

/// A plain HTTP GET from the loopback address `from`, answered and closed: status line,
/// headers and body as text.
fn get_from(from: &str, port: u16, path: &str, headers: &str) -> String {
    let mut s = connect_from(from, port);
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).expect("send");
    String::from_utf8_lossy(&read_until_server_closes(s, "the dashboard request")).into_owned()
}

/// JavaScript: the chart `id` has drawn points, and the largest is above `min`.
fn chart_above(id: &str, min: f64) -> String {
    format!(
        "(() => {{ const c = document.getElementById('chart-{id}'); \
         return !!c && Number(c.dataset.points) > 0 && Number(c.dataset.max) > {min}; }})()"
    )
}

/// Opens the dashboard in a new tab and gives it the key.
fn open_dashboard(b: &mut Browser, server: &Server) -> String {
    let page = b.open_page(&format!("http://127.0.0.1:{}/admin", server.http_port));
    b.wait_until_js(&page, "the dashboard to ask for its key", KEY_FORM, STATE);
    enter_key(b, &page, SECRET);
    b.wait_until_js(
        &page,
        "the dashboard to poll",
        "window.dashboard.polls >= 1",
        STATE,
    );
    page
}

fn enter_key(b: &mut Browser, page: &str, key: &str) {
    b.fill(page, "key", key);
    let js = "document.getElementById('enter').click(); true";
    assert_eq!(b.eval(page, js), json!(true));
}

/// Pushes to a reading client and logs fresh uids in and out, until `stop`.
fn drive_traffic(server: &Server, stop: &AtomicBool, rounds: &AtomicU64) {
    let mut reader = server.login(802, "app");
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let reply = server.push(
            "to_uid",
            json!({"to_uid": "802", "type": "chat", "uid": "0", "content": {"type": "text", "value": n.to_string()}}),
        );
        assert_eq!(reply["code"], 0, "{reply}");
        assert_eq!(reader.recv()["content"]["value"], n.to_string());
        if n.is_multiple_of(50) {
            server.login(900_000 + n, "pc").close();
        }
        n += 1;
        rounds.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn the_dashboard_plots_live_traffic_and_kicks() {
    chromium_path();
    let server = ServerBuilder::new("admin")
        .set("metrics_allow", "[\"127.0.0.1\"]")
        .start();
    let port = server.http_port;

    // Without the key, with it in the URL, with another: refused. From 127.0.0.2 (neither in
    // udpsocket_group nor in metrics_allow) not even the page is served.
    let (status, body) = server.http("GET", "/api/admin/history", &[], b"");
    assert_eq!(status, 401, "{body}");
    let in_url = format!("/api/admin/history?sk={SECRET}");
    let (status, body) = server.http("GET", &in_url, &[], b"");
    assert_eq!(status, 401, "the key is never taken from a URL: {body}");
    let wrong = [("Authorization", "Bearer not-the-key")];
    assert_eq!(server.http("GET", "/api/admin/history", &wrong, b"").0, 401);
    let bearer = format!("Bearer {SECRET}");
    let key = [("Authorization", bearer.as_str())];
    let (status, body) = server.http("GET", "/api/admin/history", &key, b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body_json(&body)["info"]["capacity"], 600, "{body}");
    let stranger = get_from("127.0.0.2", port, "/admin", "");
    assert!(stranger.starts_with("HTTP/1.1 403"), "{stranger}");
    let header = format!("Authorization: Bearer {SECRET}\r\n");
    let stranger = get_from("127.0.0.2", port, "/api/admin/history", &header);
    assert!(stranger.starts_with("HTTP/1.1 403"), "{stranger}");
    // The page runs nothing but its own script and style, and talks to this origin only.
    let page = get_from("127.0.0.1", port, "/admin", "");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("Content-Security-Policy: default-src 'none'; script-src 'sha256-"),
        "{page}"
    );

    let mut b = Browser::launch();
    let a = b.open_page(&format!("http://127.0.0.1:{port}/admin"));
    b.wait_until_js(&a, "the dashboard to ask for its key", KEY_FORM, STATE);
    enter_key(&mut b, &a, "not-the-key");
    b.wait_until_js(
        &a,
        "a wrong key to be refused",
        "document.getElementById('login-error').textContent.includes('wrong key') \
         && !sessionStorage.getItem('wspush.admin.key')",
        STATE,
    );
    enter_key(&mut b, &a, SECRET);
    b.wait_until_js(
        &a,
        "the dashboard to poll",
        "window.dashboard.polls >= 1",
        STATE,
    );

    let mut target = server.login(801, "app");
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let traffic = scope.spawn(|| drive_traffic(&server, &stop, &rounds));
        let _stop = StopOnDrop(&stop);

        // The plots fill: connections, pushes in and out, replies, latency, memory.
        for (id, min) in [
            ("connections", 1.0),
            ("in", 0.0),
            ("out", 0.0),
            ("pushes", 0.0),
            ("latency", 0.0),
            ("logins", 0.0),
            ("memory", 1e6),
            ("tasks", 0.0),
        ] {
            let what = format!("the {id} chart to show values above {min}");
            b.wait_until_js(&a, &what, &chart_above(id, min), STATE);
        }
        // ... and move: a later poll redraws them differently.
        b.eval(
            &a,
            "window.before = {t: window.dashboard.lastT, \
             png: document.querySelector('#chart-in canvas').toDataURL()}; true",
        );
        b.wait_until_js(
            &a,
            "the messages-in plot to move",
            "window.dashboard.lastT > window.before.t \
             && document.querySelector('#chart-in canvas').toDataURL() !== window.before.png",
            STATE,
        );
        let tiles = b.eval(&a, "document.getElementById('tiles').textContent");
        assert!(
            tiles.as_str().is_some_and(|t| t.contains("messages in/s")),
            "{tiles}"
        );

        // A tab opened now shows the seconds already sampled at its first poll.
        let samples = b.eval(&a, "window.dashboard.samples").as_u64().unwrap_or(0);
        assert!(samples >= 2, "{samples}");
        let later = open_dashboard(&mut b, &server);
        let first = b
            .eval(&later, "window.dashboard.samples")
            .as_u64()
            .unwrap_or(0);
        assert!(
            first >= samples,
            "a new tab starts with the history: {first} samples (the first tab had {samples})"
        );
        b.wait_until_js(&later, "its plots", &chart_above("in", 0.0), STATE);

        // Look the target up, push to it, push to a group, kick it.
        b.fill(&a, "uid", "801");
        b.click(&a, "lookup");
        b.wait_until_js(
            &a,
            "the look-up of 801",
            "document.getElementById('result').textContent.includes('\"online_here\": true') \
             && document.getElementById('result').textContent.includes('\"source\": \"app\"') \
             && document.getElementById('result').textContent.includes('\"waiting\": {')",
            STATE,
        );
        b.click(&a, "push");
        let pushed = target.recv();
        assert_eq!(
            pushed["content"]["value"], "test push from the dashboard",
            "{pushed}"
        );
        b.wait_until_js(
            &a,
            "the push's reply",
            "document.getElementById('result').textContent.includes('\"delivered\": 1')",
            STATE,
        );
        b.fill(&a, "group", "g1");
        b.click(&a, "push-group");
        b.wait_until_js(
            &a,
            "the group push's reply, whatever it is",
            "document.getElementById('result').textContent.startsWith('push to group g1 → HTTP')",
            STATE,
        );
        b.click(&a, "kick");
        let armed = b.eval(&a, "document.getElementById('kick').textContent");
        assert_eq!(armed, json!("Really kick 801?"), "a kick takes two clicks");
        b.click(&a, "kick");
        target.expect_close(4003);
        b.wait_until_js(
            &a,
            "the kick's reply",
            "document.getElementById('result').textContent.startsWith('kick 801 → HTTP 200') \
             && document.getElementById('result').textContent.includes('\"delivered\": 1')",
            STATE,
        );

        stop.store(true, Ordering::SeqCst);
        join_or_resume(traffic);
    });
    assert!(rounds.load(Ordering::SeqCst) > 0);
    b.save_screenshot(&a, Path::new("/tmp/wspush-admin.png"));
}

/// In a cluster the dashboard lists the live nodes as its heartbeat sees them in Redis, with
/// their connections and how long ago each sent its heartbeat, and times its own heartbeat's
/// round trip.
#[test]
fn the_dashboard_lists_the_nodes_of_a_cluster() {
    let c = start_cluster("admin-cluster", 2);
    let _one = c.login(0, 701, "app");
    let _two = c.login(1, 702, "app");
    let _three = c.login(1, 703, "pc");
    let bearer = format!("Bearer {SECRET}");
    let key = [("Authorization", bearer.as_str())];
    let name = |i: usize| format!("127.0.0.1:{}", c.nodes[i].ws_port);
    let cluster = wait_for(
        "node 1's dashboard to list both nodes with their connections",
        || {
            let (status, body) = c.nodes[0].http("GET", "/api/admin/history", &key, b"");
            assert_eq!(status, 200, "{body}");
            let info = body_json(&body)["info"].clone();
            let nodes = info["cluster"]["nodes"].as_array()?.clone();
            let connections = |node: String| {
                let n = nodes.iter().find(|n| n["node"] == node.as_str())?;
                n["connections"].as_u64()
            };
            let both = connections(name(0)) == Some(1) && connections(name(1)) == Some(2);
            (both && nodes.len() == 2 && info["cluster"]["heartbeat_ms"].is_number())
                .then_some(info["cluster"].clone())
        },
    );
    for node in cluster["nodes"].as_array().expect("nodes") {
        let age = node["heartbeat_age_s"].as_i64().expect("an age");
        assert!((0..=3).contains(&age), "within node_ttl (3 s): {cluster}");
    }
    assert_eq!(cluster["node"], name(0), "{cluster}");
    assert_eq!(cluster["subscribed"], true, "{cluster}");
}

/// Screenshots for the README, under load: the dashboard at a laptop's width (light) and a
/// phone's (dark).
#[test]
#[ignore = "writes docs/admin-*.png; run by hand"]
fn screenshots_for_the_readme() {
    chromium_path();
    // Chats as fast as the clients go: no per-client rate limit in the way; readers that
    // never send are not idle.
    let server = ServerBuilder::new("admin-shots")
        .set("heartbeat_idle_time", "3600")
        .set("rate_limit", "1000000")
        .set("rate_limit_burst", "1000000")
        .start();
    let mut b = Browser::launch();
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::thread::scope(|scope| {
        let traffic: Vec<_> = (0..3)
            .map(|i| {
                let (server, stop, rounds) = (&server, &stop, &rounds);
                scope.spawn(move || {
                    if i == 0 {
                        return drive_traffic(server, stop, rounds);
                    }
                    // A chatting pair of its own.
                    let mut from = server.login(810 + i, "app");
                    let mut to = server.login(820 + i, "app");
                    while !stop.load(Ordering::SeqCst) {
                        from.chat(820 + i, "chat under load");
                        assert_eq!(from.recv()["type"], "ack");
                        assert_eq!(to.recv()["content"]["value"], "chat under load");
                    }
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        let page = open_dashboard(&mut b, &server);
        // Three minutes of history in the plots (each wait within DevTools' answer time).
        b.wait_until_js(
            &page,
            "some history",
            "window.dashboard.samples >= 2",
            STATE,
        );
        for _ in 0..13 {
            b.eval(
                &page,
                "new Promise((ok) => setTimeout(() => ok(true), 14000))",
            );
        }
        for (name, width, height, scheme) in [
            ("admin-laptop.png", 1366, 1500, "light"),
            ("admin-phone.png", 390, 2400, "dark"),
        ] {
            b.command(
                Some(&page),
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500}),
            );
            b.command(
                Some(&page),
                "Emulation.setEmulatedMedia",
                json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
            );
            let polls = b
                .eval(&page, "window.dashboard.polls")
                .as_u64()
                .unwrap_or(0);
            let redrawn = format!("window.dashboard.polls >= {}", polls + 2);
            b.wait_until_js(&page, "a redraw at this size", &redrawn, STATE);
            b.save_screenshot(&page, &docs.join(name));
        }
        stop.store(true, Ordering::SeqCst);
        for t in traffic {
            join_or_resume(t);
        }
    });
}
