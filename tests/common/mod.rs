//! Starts the real `wspush` binary on free loopback ports in a temporary directory, and talks to
//! it with real clients: WebSocket (tungstenite), UDP and HTTP. Nothing here sleeps for a fixed
//! time to wait for the server: everything polls with a deadline.
#![allow(dead_code)]
pub mod browser;
pub mod cluster;
pub mod services;
pub mod tls;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Bytes, Message, WebSocket};

pub const SECRET: &str = "test-secret";
pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `f` until it returns Some, or panics after `WAIT` with `what`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Two distinct free TCP ports: both are held until both are known, so that the system cannot
/// hand out the same port twice.
fn free_tcp_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("free port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("free port").port();
    (port(&a), port(&b))
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn unique_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("wspush-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wspush")
}

/// `wspush <args> -c <config>` with standard input closed; the caller sets up its output.
pub fn wspush_command(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args).arg("-c").arg(config).stdin(Stdio::null());
    cmd
}

/// A running server. Dropping it kills the whole process group it started.
pub struct Server {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub ws_port: u16,
    pub udp_port: u16,
    pub http_port: u16,
    pub child: Option<Child>,
    /// Set when the server speaks TLS: a client configuration that trusts its certificate.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Builds a config file; `extra_server` lines go into `[server]`, `extra` after it.
pub struct ServerBuilder {
    tag: String,
    server_lines: Vec<String>,
    extra: String,
    group: Vec<(String, String)>,
    tls: Option<tls::TestCert>,
}

impl ServerBuilder {
    pub fn new(tag: &str) -> Self {
        ServerBuilder {
            tag: tag.into(),
            server_lines: Vec::new(),
            extra: String::new(),
            group: vec![("127.0.0.1".into(), SECRET.into())],
            tls: None,
        }
    }

    /// Serves TLS with `cert` (written into the server's directory as `server.crt/.key`).
    pub fn tls(mut self, cert: &tls::TestCert) -> Self {
        self.tls = Some(cert.clone());
        self
    }

    /// One `key = value` line for `[server]`, e.g. `.set("heartbeat_idle_time", "1")`.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.server_lines.push(format!("{key} = {value}"));
        self
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn push_peers(mut self, peers: &[(&str, &str)]) -> Self {
        self.group = peers
            .iter()
            .map(|(ip, sk)| (ip.to_string(), sk.to_string()))
            .collect();
        self
    }

    /// Writes the config and starts the server in the foreground; waits until it serves.
    pub fn start(self) -> Server {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let mut server = self.prepare().launch();
            match server.wait_ready_or_exit() {
                Ok(()) => return server,
                // Free ports are picked, released, then bound by the server: another test may
                // take one in between. Fresh ports then; any other start-up failure is real.
                Err(why) if why.contains("cannot bind") && attempt < ATTEMPTS => continue,
                Err(why) => panic!("wspush exited during start-up: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Writes the config only.
    pub fn prepare(&self) -> Server {
        let dir = unique_dir(&self.tag);
        let ((ws_port, http_port), udp_port) = (free_tcp_ports(), free_udp_port());
        let mut text = format!(
            "[server]\nhost = \"127.0.0.1\"\nws_port = {ws_port}\nudp_port = {udp_port}\nhttp_port = {http_port}\n\
             task_worker_num = 2\ndaemonize = false\npid_file = \"{d}/run/wspush.pid\"\nlog_file = \"{d}/logs/wspush.log\"\n\
             data_dir = \"{d}/data\"\nlog_level = \"debug\"\n",
            d = dir.display()
        );
        if let Some(cert) = &self.tls {
            let (crt, key) = cert.write(&dir, "server");
            text.push_str(&format!(
                "ssl_cert_file = \"{}\"\nssl_key_file = \"{}\"\n",
                crt.display(),
                key.display()
            ));
        }
        for line in &self.server_lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&self.extra);
        for (ip, sk) in &self.group {
            text.push_str(&format!(
                "\n[[udpsocket_group]]\nip = \"{ip}\"\nsecret_key = \"{sk}\"\n"
            ));
        }
        let config = dir.join("websocket.toml");
        std::fs::write(&config, text).expect("write config");
        Server {
            dir,
            config,
            ws_port,
            udp_port,
            http_port,
            child: None,
            tls: self.tls.as_ref().map(|c| c.client.clone()),
        }
    }
}

impl Server {
    pub fn start(tag: &str) -> Server {
        ServerBuilder::new(tag).start()
    }

    /// Starts the prepared server in the foreground and waits until every worker is ready.
    pub fn spawn(self) -> Server {
        let mut server = self.launch();
        server.wait_ready();
        server
    }

    /// Starts the prepared server in the foreground without waiting for anything.
    pub fn launch(self) -> Server {
        let start = wspush_command(&["start", "--foreground"], &self.config);
        self.launch_command(start)
    }

    /// As `launch`, with `start` as the command (another binary, another environment): it
    /// must start this server's config in the foreground. Its standard error goes to
    /// stderr.log.
    pub fn launch_command(mut self, mut start: Command) -> Server {
        let stderr = std::fs::File::create(self.dir.join("stderr.log")).expect("stderr.log");
        let child = start
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn wspush");
        self.child = Some(child);
        self
    }

    /// Stops the server gracefully (SIGTERM: clients get 1001) and waits until it has exited.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        self.wait_exit();
    }

    /// Starts a stopped server again: the same configuration, ports and data. Waits until it
    /// serves.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let stderr = std::fs::File::create(self.dir.join("stderr.log")).expect("stderr.log");
        let child = wspush_command(&["start", "--foreground"], &self.config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn wspush");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Panics, with the log, if the server process has already exited: for start-up waits.
    pub fn assert_not_exited(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let stderr = read_file(&self.dir.join("stderr.log"));
                panic!(
                    "wspush exited during start-up: {status}\n{stderr}\n{}",
                    self.log()
                );
            }
        }
    }

    /// Waits until every worker is ready; Err(what the server said) if it exited instead.
    pub fn wait_ready_or_exit(&mut self) -> Result<(), String> {
        wait_for("the server to be ready", || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let stderr = read_file(&self.dir.join("stderr.log"));
                    return Some(Err(format!("{status}\n{stderr}\n{}", self.log())));
                }
            }
            let stats = self.try_stats()?;
            let workers = stats["workers"].as_array()?;
            workers.iter().all(|w| w["ready"] == true).then_some(Ok(()))
        })
    }

    pub fn wait_ready(&mut self) {
        wait_for("the server to be ready", || {
            self.assert_not_exited();
            let stats = self.try_stats()?;
            let workers = stats["workers"].as_array()?;
            workers.iter().all(|w| w["ready"] == true).then_some(())
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("server running")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/wspush.log")).unwrap_or_default()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("run/wspush.pid")
    }

    pub fn ws_url(&self, access_token: &str) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!(
            "{scheme}://127.0.0.1:{}/?access_token={access_token}",
            self.ws_port
        )
    }

    pub fn signal(&self, sig: Signal) {
        send_signal(self.pid(), sig);
    }

    /// Waits for the server process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("server running");
        let status = wait_for("the server to exit", || child.try_wait().ok().flatten());
        self.child = None;
        status
    }

    /// `/api/stats`, or None if the server does not answer yet.
    /// Signed, so that it works whether or not the server requires signatures; a nonce in the
    /// query makes each poll's signature new (a repeated one is refused as a replay).
    pub fn try_stats(&self) -> Option<Value> {
        static NONCE: AtomicU64 = AtomicU64::new(0);
        let target = format!("/api/stats?n={}", NONCE.fetch_add(1, Ordering::SeqCst));
        let ts = wspush::ids::unix_now();
        let sig =
            wspush::protocol::signature::sign(SECRET, ts, format!("GET {target}\n").as_bytes())
                .expect("signed");
        let ts = ts.to_string();
        let headers = [
            ("X-Wspush-Timestamp", ts.as_str()),
            ("X-Wspush-Signature", sig.as_str()),
        ];
        let (status, body) = self.http_opt("GET", &target, &headers, b"")?;
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    pub fn stats(&self) -> Value {
        self.try_stats().expect("stats")
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        workers(&self.stats())
            .iter()
            .filter_map(|w| w["pid"].as_u64())
            .map(|p| p as u32)
            .collect()
    }

    /// Writes a login record through `POST /api/login`.
    pub fn register(&self, uid: u64, source: &str, token: &str, expires: u64) {
        let body = json!({"sk": SECRET, "uid": uid.to_string(), "source": source, "token": token, "expires": expires});
        let (status, reply) = self.http("POST", "/api/login", &[], body.to_string().as_bytes());
        assert_eq!(status, 200, "register {uid}/{source}: {reply}");
    }

    /// Registers a token for (uid, source) and connects with it; asserts the login frame.
    pub fn login(&self, uid: u64, source: &str) -> Client {
        let token = format!("tok{uid}{source}");
        self.register(uid, source, &token, far_future());
        let mut c = self.connect(
            &wspush::protocol::encode_access_token(&token, uid, source),
            None,
        );
        let login = c.expect_login();
        assert_eq!(login["data"]["uid"], uid.to_string());
        c
    }

    /// Opens a WebSocket with this access_token (and device id), without reading anything.
    pub fn connect(&self, access_token: &str, device: Option<&str>) -> Client {
        let mut url = self.ws_url(access_token);
        if let Some(d) = device {
            url.push_str(&format!("&token={d}"));
        }
        match &self.tls {
            Some(client) => tls::wss_client(&url, client),
            None => Client::connect(&url),
        }
    }

    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        self.http_opt(method, path, headers, body)
            .expect("HTTP answer")
    }

    /// One request on the HTTP API port (HTTPS when the server speaks TLS); None if nothing
    /// answers.
    pub fn http_opt(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<(u16, String)> {
        match &self.tls {
            Some(client) => {
                tls::https_request_opt(self.http_port, client, method, path, headers, body)
            }
            None => http_request_opt(self.http_port, method, path, headers, body),
        }
    }

    /// Sends one UDP datagram from 127.0.0.1 and returns the reply datagram as JSON.
    pub fn udp(&self, datagram: &[u8]) -> Value {
        udp_request("127.0.0.1", self.udp_port, datagram)
    }

    pub fn push(&self, means: &str, data: Value) -> Value {
        self.udp(
            json!({"sk": SECRET, "means": means, "data": data})
                .to_string()
                .as_bytes(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Workers die with the master (parent-death signal and end of file).
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn far_future() -> u64 {
    wspush::ids::unix_now() + 86_400
}

/// One UDP request from `source_ip` (127.0.0.x) with its reply.
pub fn udp_request(source_ip: &str, port: u16, datagram: &[u8]) -> Value {
    let sock = UdpSocket::bind((source_ip, 0)).expect("bind UDP");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    sock.send_to(datagram, ("127.0.0.1", port)).expect("send");
    let mut buf = [0u8; 65_536];
    let (n, _) = sock.recv_from(&mut buf).expect("UDP reply");
    serde_json::from_slice(&buf[..n]).expect("reply is JSON")
}

/// `Authorization` value that carries the push secret.
pub fn bearer() -> String {
    format!("Bearer {SECRET}")
}

/// The head of an HTTP/1.1 request, blank line included: `Host: x`, `Content-Length`, then
/// `headers` in their order.
pub fn http_request_head(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_length: usize,
) -> String {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {content_length}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// A one-shot HTTP/1.1 request (Connection: close). None if nothing answers.
pub fn http_request_opt(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    let headers = [&[("Connection", "close")], headers].concat();
    let mut bytes = http_request_head(method, path, &headers, body.len()).into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    parse_response(&out).map(|(status, body, _)| (status, body))
}

/// The value of header `name` (any case) in a response head, trimmed and lowercased.
pub fn header_value(head: &str, name: &str) -> Option<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix(prefix.as_str())
            .map(|v| v.trim().to_string())
    })
}

/// Parses one HTTP response from `buf`: status, body, bytes used.
pub fn parse_response(buf: &[u8]) -> Option<(u16, String, usize)> {
    let text = std::str::from_utf8(buf).ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len = header_value(head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(rest.len());
    let body = rest.get(..len)?.to_string();
    Some((status, body, head.len() + 4 + len))
}

/// Reads from `s` until one whole response has arrived (bounded by `WAIT`), without waiting
/// for the server to close; returns its status and body. Panics if the server closes first.
pub fn read_http_response(s: &mut TcpStream) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((status, body, _)) = parse_response(&buf) {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "no whole response within {WAIT:?}: {:?}",
            String::from_utf8_lossy(&buf)
        );
        match s.read(&mut chunk) {
            Ok(0) => panic!(
                "closed without a whole response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read failed: {e} after {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// A response body as JSON; panics with the body if it is not.
pub fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is JSON ({e}): {body}"))
}

/// Reads `s` until the server ends it (end of stream or reset) and returns what it sent;
/// panics, naming the connection as `what`, if it is still open after `WAIT`.
pub fn read_until_server_closes(mut s: TcpStream, what: &str) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "{what} is still open after {WAIT:?}; the server sent {:?}",
                    String::from_utf8_lossy(&got)
                );
            }
            Err(_) => return got,
        }
    }
}

/// A WebSocket client over a blocking socket with a read timeout.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
    pub fd: u64,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Ending {
    Close(u16, String),
    /// Closed without a close frame.
    Dropped,
}

impl Client {
    pub fn connect(url: &str) -> Client {
        let (ws, _) = tungstenite::connect(url).expect("WebSocket handshake");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        Client { ws, fd: 0 }
    }

    pub fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    pub fn send_text(&mut self, t: &str) {
        self.ws.send(Message::text(t)).expect("send");
    }

    pub fn chat(&mut self, to_uid: u64, text: &str) {
        self.send(&json!({"to_uid": to_uid.to_string(), "type": "chat", "content": {"type": "text", "value": text}}));
    }

    /// Reads the login frame, asserts it is a successful login, records its fd and returns it.
    pub fn expect_login(&mut self) -> Value {
        let login = self.recv();
        assert_eq!(login["type"], "login", "{login}");
        assert_eq!(login["code"], 200, "{login}");
        self.fd = login["data"]["fd"].as_u64().expect("fd");
        login
    }

    /// Proves that nothing is queued for this client ahead of a fresh pong.
    pub fn expect_nothing_queued(&mut self) {
        self.send_text("ping");
        assert_eq!(
            self.recv(),
            json!({"type": "pong"}),
            "no other frame was queued before the pong"
        );
    }

    /// The next text frame as JSON, within `WAIT`; panics on close or timeout.
    pub fn recv(&mut self) -> Value {
        self.try_recv_within(WAIT)
            .unwrap_or_else(|| panic!("no frame within {WAIT:?}"))
    }

    /// The next text frame within `limit`, or None if none came (the connection is fine).
    pub fn try_recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("JSON frame"))
                }
                Ok(Message::Close(f)) => panic!("closed while waiting for a frame: {f:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => panic!("connection failed while waiting for a frame: {e}"),
            }
        }
    }

    /// Reads raw frames until a pong frame arrives; returns its payload and the text frames before.
    pub fn read_pong(&mut self) -> (Bytes, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let mut texts = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Pong(payload)) => return (payload, texts),
                Ok(Message::Text(t)) => texts.push(t.as_str().to_string()),
                Ok(Message::Close(f)) => panic!("closed while waiting for a pong: {f:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    assert!(Instant::now() < deadline, "no pong frame within {WAIT:?}");
                }
                Err(e) => panic!("connection failed while waiting for a pong: {e}"),
            }
        }
    }

    /// Reads until the connection ends; returns the frames seen before and how it ended.
    pub fn until_closed(&mut self) -> (Vec<Value>, Ending) {
        let deadline = Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("JSON frame"))
                }
                Ok(Message::Close(Some(f))) => {
                    return (
                        frames,
                        Ending::Close(u16::from(f.code), f.reason.as_str().to_string()),
                    )
                }
                Ok(Message::Close(None)) => return (frames, Ending::Close(1005, String::new())),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    assert!(
                        Instant::now() < deadline,
                        "connection not closed within {WAIT:?}"
                    );
                }
                Err(_) => return (frames, Ending::Dropped),
            }
        }
    }

    /// Asserts that the connection is closed with `code`; returns the frames before the close.
    pub fn expect_close(&mut self, code: u16) -> Vec<Value> {
        let (frames, ending) = self.until_closed();
        match ending {
            Ending::Close(c, _) => assert_eq!(c, code, "close code (frames before: {frames:?})"),
            Ending::Dropped => {
                panic!("dropped without a close frame, expected {code}; frames: {frames:?}")
            }
        }
        frames
    }

    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let _ = self.until_closed();
    }
}

/// Collects text frames until `n` have arrived (panics after `WAIT`).
pub fn recv_n(c: &mut Client, n: usize) -> Vec<Value> {
    (0..n).map(|_| c.recv()).collect()
}

pub fn local_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn read_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Sorted `sources` of an `online` reply; panics unless it is a list of strings.
pub fn sorted_sources(reply: &Value) -> Vec<String> {
    let mut s: Vec<String> = reply["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("sources is a list: {reply}"))
        .iter()
        .map(|v| v.as_str().expect("source is a string").to_string())
        .collect();
    s.sort();
    s
}

// --- Processes: workers, signals, pids ---

/// The `workers` list of `/api/stats`.
pub fn workers(stats: &Value) -> Vec<Value> {
    stats["workers"].as_array().expect("workers").clone()
}

/// The pid of the worker in `slot` according to `/api/stats`, if it has one.
pub fn slot_pid(stats: &Value, slot: usize) -> Option<u32> {
    stats["workers"][slot]["pid"].as_u64().map(|p| p as u32)
}

/// The pid of the worker in `slot`; panics if there is none.
pub fn worker_pid(stats: &Value, slot: usize) -> u32 {
    slot_pid(stats, slot).unwrap_or_else(|| panic!("no pid for slot {slot}: {stats}"))
}

pub fn send_signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap_or_else(|e| panic!("{sig} to {pid}: {e}"));
}

/// `/proc/<pid>/stat`: (state, parent pid), or None once the pid is gone.
pub fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True while `pid` runs (a zombie runs no more code, whoever has yet to reap it).
pub fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Waits until `pid` no longer runs; `what` says what is awaited, e.g. "a worker to exit".
pub fn wait_for_exit_of(pid: u32, what: &str) {
    wait_for(what, || (!pid_alive(pid)).then_some(()));
}

/// Sends SIGCONT when dropped: a stopped worker would not act on its parent-death signal.
pub struct ContinueOnDrop(pub u32);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

// --- Traffic while the workers are disturbed ---

/// Sets the flag when dropped, so that traffic threads end even if the main thread panics.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Joins a scoped thread, passing its panic on as it was.
pub fn join_or_resume<T>(t: std::thread::ScopedJoinHandle<'_, T>) -> T {
    t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// How many offline uids each traffic thread of `logins_and_offline_chats` chats to.
pub const OFFLINE_RECIPIENTS_PER_THREAD: u64 = 4;
/// How many chats each round of `logins_and_offline_chats` sends.
pub const OFFLINE_CHATS_PER_ROUND: u64 = 2;
/// Bounds each traffic thread; keeps every recipient under one login's batch of stored messages.
pub const OFFLINE_MAX_ROUNDS: u64 = 400;

/// What one traffic thread sent: per offline recipient, (sender uid, text) in sending order.
pub type Sent = BTreeMap<u64, Vec<(u64, String)>>;

/// Logs in a fresh uid per round (each must get 200) and chats to offline uids (each chat must
/// be acked as stored), until `stop` or `OFFLINE_MAX_ROUNDS`. Thread `thread` chats to
/// `first_offline_uid + thread * 100 + n` for n below `OFFLINE_RECIPIENTS_PER_THREAD`; `rounds`
/// counts the rounds done.
pub fn logins_and_offline_chats(
    server: &Server,
    first_offline_uid: u64,
    thread: u64,
    stop: &AtomicBool,
    rounds: &AtomicU64,
) -> Sent {
    let mut sent = Sent::new();
    for round in 0..OFFLINE_MAX_ROUNDS {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let uid = 10_000 + thread * 10_000 + round;
        let mut client = server.login(uid, "app");
        for k in 0..OFFLINE_CHATS_PER_ROUND {
            let n = (round * OFFLINE_CHATS_PER_ROUND + k) % OFFLINE_RECIPIENTS_PER_THREAD;
            let to = first_offline_uid + thread * 100 + n;
            let text = format!("t{thread} r{round} k{k}");
            client.chat(to, &text);
            let ack = client.recv();
            assert_eq!(ack["type"], "ack", "{ack}");
            assert_eq!(ack["to_uid"], to.to_string(), "{ack}");
            assert_eq!(ack["state"], 0, "the recipient is offline: {ack}");
            sent.entry(to).or_default().push((uid, text));
        }
        client.close();
        rounds.fetch_add(1, Ordering::SeqCst);
    }
    sent
}

/// Starts `threads` threads of `logins_and_offline_chats` in `scope`, numbered from 0.
pub fn spawn_offline_chats<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    server: &'scope Server,
    first_offline_uid: u64,
    threads: u64,
    stop: &'scope AtomicBool,
    rounds: &'scope AtomicU64,
) -> Vec<std::thread::ScopedJoinHandle<'scope, Sent>> {
    (0..threads)
        .map(|t| {
            scope
                .spawn(move || logins_and_offline_chats(server, first_offline_uid, t, stop, rounds))
        })
        .collect()
}

/// Checks what the traffic threads sent in `rounds` rounds: `OFFLINE_CHATS_PER_ROUND` chats a
/// round, and each offline recipient logs in and gets exactly what was sent to it, in order;
/// `also` checks each of those frames further.
pub fn assert_offline_chats_delivered(
    server: &Server,
    sent: &[Sent],
    rounds: u64,
    also: impl Fn(&Value),
) {
    let total: usize = sent.iter().flat_map(|s| s.values()).map(Vec::len).sum();
    assert_eq!(total as u64, rounds * OFFLINE_CHATS_PER_ROUND);
    for (to, messages) in sent.iter().flatten() {
        let mut c = server.login(*to, "app");
        let got = recv_n(&mut c, messages.len());
        for (frame, (from, text)) in got.iter().zip(messages) {
            assert_eq!(frame["type"], "chat", "{frame}");
            assert_eq!(frame["uid"], from.to_string(), "{frame}");
            assert_eq!(
                frame["content"]["value"],
                text.as_str(),
                "order for {to}: {frame}"
            );
            also(frame);
        }
        // Stored messages come straight after the login: the pong being next means no more.
        c.send_text("ping");
        assert_eq!(
            c.recv(),
            json!({"type": "pong"}),
            "nothing beyond what was sent to {to}"
        );
    }
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source` (127.0.0.2, ...),
/// so that a test can be another host (a proxy, a stranger).
pub fn connect_from(source: &str, port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let local: SocketAddr = format!("{source}:0").parse().expect("source address");
    let SocketAddr::V4(local) = local else {
        panic!("an IPv4 source")
    };
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(local),
    )
    .expect("bind source");
    let remote = SockaddrIn::new(127, 0, 0, 1, port);
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &remote).expect("connect");
    TcpStream::from(fd)
}
