//! The demo page served at `GET /` on the WebSocket port works in a real browser: two headless
//! Chromium tabs log in through the demo login, see each other online, chat both ways with
//! delivery acks, and a back-end push over UDP shows up on the page. A third tab whose requests
//! carry a proxy's header is refused the demo login, and connects with a pasted access token.
//!
//! Chromium (Debian's `chromium` package) is driven over the Chrome DevTools Protocol with
//! tungstenite. A missing browser is a failure, never a skip.
mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to start and print its DevTools address.
const BROWSER_START: Duration = Duration::from_secs(30);

/// `/usr/bin/chromium`, or `chromium` found on PATH; panics with how to install it otherwise.
fn chromium_path() -> PathBuf {
    let default = PathBuf::from("/usr/bin/chromium");
    if default.is_file() {
        return default;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "Chromium is needed for this test but neither /usr/bin/chromium nor `chromium` on PATH \
             exists. Run sh/test (it installs it) or `apt-get install -y chromium` as root."
        )
    })
}

/// A headless Chromium and one DevTools connection to it. Dropping it closes the browser,
/// kills its process group and removes the temporary profile.
struct Browser {
    child: Option<Child>,
    profile: PathBuf,
    cdp: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Everything Chromium printed on stderr, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    fn launch() -> Browser {
        let exe = chromium_path();
        let profile = unique_dir("chromium-profile");
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--remote-debugging-port=0", "about:blank"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // Its own process group, so that Drop can end the renderer and helper processes too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));

        // A thread keeps draining stderr (a full pipe would stall Chromium) and hands over lines.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let pipe = child.stderr.take().expect("stderr pipe");
        let seen = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                seen.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + BROWSER_START;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(i) = line.find("DevTools listening on ") {
                        break line[i + "DevTools listening on ".len()..]
                            .trim()
                            .to_string();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_dir_all(&profile);
                    panic!(
                        "Chromium printed no \"DevTools listening on ws://...\" line within \
                         {BROWSER_START:?} ({e}); its stderr:\n{}",
                        stderr.lock().unwrap().join("\n")
                    );
                }
            }
        };

        let (cdp, _) = tungstenite::connect(url.as_str())
            .unwrap_or_else(|e| panic!("DevTools WebSocket {url}: {e}"));
        if let MaybeTlsStream::Plain(s) = cdp.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("read timeout");
        }
        Browser {
            child: Some(child),
            profile,
            cdp,
            next_id: 1,
            stderr,
        }
    }

    /// Sends one DevTools command (to a page when `session` is given) and returns its result.
    /// Events that arrive meanwhile are skipped.
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.cdp
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("DevTools send {method}: {e}"));
        let deadline = Instant::now() + WAIT;
        loop {
            match self.cdp.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("DevTools sends JSON");
                    if v["id"].as_u64() != Some(id) {
                        continue; // an event, or the answer to something else
                    }
                    if let Some(err) = v.get("error") {
                        panic!("DevTools {method} failed: {err}");
                    }
                    return v["result"].clone();
                }
                Ok(Message::Close(f)) => {
                    panic!("DevTools connection closed during {method}: {f:?}")
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    assert!(
                        Instant::now() < deadline,
                        "no DevTools answer to {method} within {WAIT:?}"
                    );
                }
                Err(e) => panic!(
                    "DevTools connection failed during {method}: {e}\nChromium stderr:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Opens a new tab at `url` and returns the session id to drive it with.
    fn open_page(&mut self, url: &str) -> String {
        let target = self.command(None, "Target.createTarget", json!({"url": url}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self.command(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string()
    }

    /// Evaluates `expression` in the page and returns its value (promises are awaited).
    fn eval(&mut self, page: &str, expression: &str) -> Value {
        let r = self.command(
            Some(page),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("JavaScript `{expression}` threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// What the page shows: status, online list and log, for failure messages.
    fn describe(&mut self, page: &str) -> String {
        let v = self.eval(
            page,
            "(() => { const t = (id) => { const e = document.getElementById(id); \
             return e ? e.innerText : '<no #' + id + '>'; }; \
             return 'status: ' + t('status') + '\\nonline: ' + t('online') + '\\nlog:\\n' + t('log'); })()",
        );
        v.as_str().unwrap_or_default().to_string()
    }

    /// Polls the JavaScript condition `expression` on `page` until it is true; on timeout,
    /// panics with `what` and what every page in `pages` shows.
    fn wait_until(&mut self, page: &str, what: &str, expression: &str, pages: &[(&str, &str)]) {
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            if self.eval(page, expression) == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let mut state = String::new();
                for (name, p) in pages {
                    state.push_str(&format!("--- page {name} ---\n{}\n", self.describe(p)));
                }
                panic!("timed out after {WAIT:?} waiting for {what}\n{state}");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Sets an input's value, as typing would.
    fn fill(&mut self, page: &str, id: &str, value: &str) {
        let js = format!(
            "(() => {{ const e = document.getElementById({id}); e.value = {value}; \
             e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            id = json!(id),
            value = json!(value)
        );
        assert_eq!(self.eval(page, &js), json!(true));
    }

    fn click(&mut self, page: &str, id: &str) {
        let js = format!(
            "(() => {{ const e = document.getElementById({id}); if (e.disabled) return 'disabled'; \
             e.dispatchEvent(new MouseEvent('click', {{bubbles: true, cancelable: true}})); return true; }})()",
            id = json!(id)
        );
        assert_eq!(self.eval(page, &js), json!(true), "clicking #{id}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.cdp.send(Message::text(
            json!({"id": 0, "method": "Browser.close"}).to_string(),
        ));
        let _ = self.cdp.close(None);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    _ => break,
                }
            }
            // Whatever is left of the group (the browser if it did not close, its helpers).
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// JavaScript: is there an element matching `selector` in #log whose text contains all `parts`?
fn log_has(selector: &str, parts: &[&str]) -> String {
    format!(
        "Array.from(document.querySelectorAll('#log ' + {sel})).some((e) => {parts}.every((p) => e.textContent.includes(p)))",
        sel = json!(selector),
        parts = json!(parts)
    )
}

fn status_starts_with(prefix: &str) -> String {
    format!(
        "document.getElementById('status').textContent.startsWith({})",
        json!(prefix)
    )
}

fn log_in(b: &mut Browser, page: &str, uid: &str) {
    b.fill(page, "uid", uid);
    b.click(page, "login");
}

fn send_chat(b: &mut Browser, page: &str, to: &str, text: &str) {
    b.fill(page, "to_uid", to);
    b.fill(page, "message", text);
    b.click(page, "send");
}

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
    let loaded = "document.readyState === 'complete' && document.title === 'wspush demo' \
                  && !!document.getElementById('login')";
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
    b.fill(&c, "access_token", &access);
    b.click(&c, "connect");
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
        let errors = b.eval(
            page,
            "Array.from(document.querySelectorAll('#log .msg-err')).map((e) => e.textContent)",
        );
        assert_eq!(errors, json!([]), "error entries in page {name}'s log");
    }

    // A screenshot of page B, for a human to look at (not checked).
    let shot = b.command(
        Some(&bb),
        "Page.captureScreenshot",
        json!({"format": "png"}),
    );
    if let Some(data) = shot["data"].as_str() {
        use base64::Engine;
        if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(data) {
            let _ = std::fs::write("/tmp/wspush-demo.png", png);
        }
    }
}
