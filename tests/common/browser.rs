//! A headless Chromium (Debian's `chromium` package) driven over the Chrome DevTools Protocol
//! with tungstenite, and JavaScript probes of the demo page. A missing browser is a failure,
//! never a skip.

use super::{unique_dir, WAIT};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to start and print its DevTools address.
const BROWSER_START: Duration = Duration::from_secs(30);

/// JavaScript: the demo page has loaded.
pub const DEMO_PAGE_LOADED: &str = "document.readyState === 'complete' \
    && document.title === 'wspush demo' && !!document.getElementById('login')";

/// `/usr/bin/chromium`, or `chromium` found on PATH; panics with how to install it otherwise.
pub fn chromium_path() -> PathBuf {
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
pub struct Browser {
    child: Option<Child>,
    profile: PathBuf,
    cdp: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Everything Chromium printed on stderr, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    pub fn launch() -> Browser {
        Browser::launch_with(&[])
    }

    /// Launches with `extra` command-line flags after the standard ones.
    pub fn launch_with(extra: &[String]) -> Browser {
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
        .args(extra)
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
    pub fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_command(session, method, params)
            .unwrap_or_else(|err| panic!("DevTools {method} failed: {err}"))
    }

    /// Like `command`, but an error answer comes back as `Err` with the error object.
    pub fn try_command(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
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
                        return Err(err.clone());
                    }
                    return Ok(v["result"].clone());
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
    pub fn open_page(&mut self, url: &str) -> String {
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
    pub fn eval(&mut self, page: &str, expression: &str) -> Value {
        self.try_eval(page, expression)
            .unwrap_or_else(|err| panic!("DevTools Runtime.evaluate failed: {err}"))
    }

    /// Like `eval`, but a page that cannot evaluate now (no document yet, or a browser error
    /// page such as a refused certificate's) is an `Err` with DevTools' error. A JavaScript
    /// exception still panics: it is a mistake in the expression.
    fn try_eval(&mut self, page: &str, expression: &str) -> Result<Value, Value> {
        let r = self.try_command(
            Some(page),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("JavaScript `{expression}` threw: {ex}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// What the page shows: address, status, online list and log, for failure messages.
    pub fn describe(&mut self, page: &str) -> String {
        let v = self.try_eval(
            page,
            "(() => { const t = (id) => { const e = document.getElementById(id); \
             return e ? e.innerText : '<no #' + id + '>'; }; \
             return 'url: ' + location.href + '\\nstatus: ' + t('status') + '\\nonline: ' + t('online') \
             + '\\nlog:\\n' + t('log'); })()",
        );
        match v {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(err) => format!("<cannot evaluate in the page: {err}>"),
        }
    }

    /// Polls the JavaScript condition `expression` on `page` until it is true (a page that
    /// cannot evaluate yet counts as false); on timeout, panics with `what`, what every page
    /// in `pages` shows, and Chromium's stderr.
    pub fn wait_until(&mut self, page: &str, what: &str, expression: &str, pages: &[(&str, &str)]) {
        self.wait_or_tell(page, what, expression, |b| {
            let mut state = String::new();
            for (name, p) in pages {
                state.push_str(&format!("--- page {name} ---\n{}\n", b.describe(p)));
            }
            state
        });
    }

    /// As `wait_until`, for pages other than the demo's: on timeout, tells what the JavaScript
    /// `state` evaluates to on `page`.
    pub fn wait_until_js(&mut self, page: &str, what: &str, expression: &str, state: &str) {
        self.wait_or_tell(page, what, expression, |b| match b.try_eval(page, state) {
            Ok(v) => format!("--- state ---\n{v}\n"),
            Err(err) => format!("<cannot evaluate in the page: {err}>\n"),
        });
    }

    fn wait_or_tell(
        &mut self,
        page: &str,
        what: &str,
        expression: &str,
        tell: impl FnOnce(&mut Browser) -> String,
    ) {
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            if self.try_eval(page, expression) == Ok(Value::Bool(true)) {
                return;
            }
            if Instant::now() >= deadline {
                let state = tell(self);
                let stderr = self.stderr.lock().unwrap().join("\n");
                panic!(
                    "timed out after {WAIT:?} waiting for {what}\n{state}--- Chromium stderr ---\n{stderr}"
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Sets an input's value, as typing would.
    pub fn fill(&mut self, page: &str, id: &str, value: &str) {
        let js = format!(
            "(() => {{ const e = document.getElementById({id}); e.value = {value}; \
             e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            id = json!(id),
            value = json!(value)
        );
        assert_eq!(self.eval(page, &js), json!(true));
    }

    pub fn click(&mut self, page: &str, id: &str) {
        let js = format!(
            "(() => {{ const e = document.getElementById({id}); if (e.disabled) return 'disabled'; \
             e.dispatchEvent(new MouseEvent('click', {{bubbles: true, cancelable: true}})); return true; }})()",
            id = json!(id)
        );
        assert_eq!(self.eval(page, &js), json!(true), "clicking #{id}");
    }

    /// The texts of the error entries in the page's log.
    pub fn log_errors(&mut self, page: &str) -> Value {
        self.eval(
            page,
            "Array.from(document.querySelectorAll('#log .msg-err')).map((e) => e.textContent)",
        )
    }

    /// Writes a PNG screenshot of `page` to `path`, for a human to look at; failures ignored.
    pub fn save_screenshot(&mut self, page: &str, path: &Path) {
        let shot = self.command(
            Some(page),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        );
        if let Some(data) = shot["data"].as_str() {
            use base64::Engine;
            if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(data) {
                let _ = std::fs::write(path, png);
            }
        }
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
pub fn log_has(selector: &str, parts: &[&str]) -> String {
    format!(
        "Array.from(document.querySelectorAll('#log ' + {sel})).some((e) => {parts}.every((p) => e.textContent.includes(p)))",
        sel = json!(selector),
        parts = json!(parts)
    )
}

/// JavaScript: does the page's status line start with `prefix`?
pub fn status_starts_with(prefix: &str) -> String {
    format!(
        "document.getElementById('status').textContent.startsWith({})",
        json!(prefix)
    )
}

/// Types `uid` and clicks "Demo login & connect".
pub fn log_in(b: &mut Browser, page: &str, uid: &str) {
    b.fill(page, "uid", uid);
    b.click(page, "login");
}

/// Pastes `access_token` and clicks "Connect with token".
pub fn connect_with_token(b: &mut Browser, page: &str, access_token: &str) {
    b.fill(page, "access_token", access_token);
    b.click(page, "connect");
}

/// Types a recipient and a message and clicks "Send".
pub fn send_chat(b: &mut Browser, page: &str, to: &str, text: &str) {
    b.fill(page, "to_uid", to);
    b.fill(page, "message", text);
    b.click(page, "send");
}
