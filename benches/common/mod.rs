//! What the load benches share: starting the release binary on free ports, its HTTP API, and
//! reading the server's processes (master and workers) from /proc.
#![allow(dead_code)]

pub mod tls;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SECRET: &str = "bench-secret";

/// Limits a load generator on one address would trip; benches measure the server, not them.
const UNLIMITED: &str = "rate_limit = 100000\nrate_limit_burst = 100000\n\
    connection_rate_per_ip = 1000000\nconnection_burst_per_ip = 1000000\n";

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A server started for a bench; killed and its directory removed when dropped.
pub struct BenchServer {
    pub child: Child,
    pub ws: u16,
    pub udp: u16,
    pub http: u16,
    pub dir: PathBuf,
    /// Serving wss:// and https:// with this certificate; the client configuration trusts it.
    pub tls: Option<(tls::BenchCert, Arc<ClientConfig>)>,
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // WSPUSH_BENCH_KEEP_DIR=1 keeps the server's directory (its log, its store) to look at.
        if std::env::var_os("WSPUSH_BENCH_KEEP_DIR").is_some() {
            eprintln!("bench server directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl BenchServer {
    /// Starts the release binary (2 task workers, no backup copies, limits lifted) with
    /// `server` lines added to `[server]` and `sections` after it; waits until it serves and,
    /// in cluster mode, is subscribed.
    pub fn start(tag: &str, server: &str, sections: &str) -> BenchServer {
        BenchServer::start_with(tag, server, "backup = false", sections)
    }

    /// As `start`, with `storage` as the `[storage]` section's lines.
    pub fn start_with(tag: &str, server: &str, storage: &str, sections: &str) -> BenchServer {
        BenchServer::start_tls(tag, server, storage, sections, None)
    }

    /// As `start_with`; with `cert`, both TCP ports speak TLS with it (and this side's HTTP
    /// calls speak https).
    pub fn start_tls(
        tag: &str,
        server: &str,
        storage: &str,
        sections: &str,
        cert: Option<tls::BenchCert>,
    ) -> BenchServer {
        let dir = std::env::temp_dir().join(format!("wspush-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (ws, udp, http) = (free_port(), free_port(), free_port());
        let tls_lines = cert
            .as_ref()
            .map_or(String::new(), |c| c.server_lines(&dir));
        let server = format!("{server}{tls_lines}");
        let config = format!(
            "[server]\nws_port = {ws}\nudp_port = {udp}\nhttp_port = {http}\ntask_worker_num = 2\ndaemonize = false\n\
             pid_file = \"{d}/wspush.pid\"\nlog_file = \"{d}/wspush.log\"\ndata_dir = \"{d}/data\"\nlog_level = \"warn\"\n\
             {UNLIMITED}{server}\n[storage]\n{storage}\n[push]\nrate_per_ip = 100000000\nburst_per_ip = 100000000\n\
             {sections}\n[[udpsocket_group]]\nip = \"127.0.0.1\"\nsecret_key = \"{SECRET}\"\n",
            d = dir.display()
        );
        let path = dir.join("websocket.toml");
        std::fs::write(&path, config).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_wspush"))
            .args(["start", "--foreground", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let server = BenchServer {
            child,
            ws,
            udp,
            http,
            dir,
            tls: cert.map(|c| {
                let client = tls::client_config(&c.der);
                (c, client)
            }),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = server
                .stats()
                .is_some_and(|s| s["cluster"].is_null() || s["cluster"]["subscribed"] == true);
            if ready {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/api/stats` once every worker is ready.
    pub fn stats(&self) -> Option<Value> {
        stats_over(self.http, self.tls_client())
    }

    fn tls_client(&self) -> Option<&Arc<ClientConfig>> {
        self.tls.as_ref().map(|(_, client)| client)
    }

    /// The master and its task workers.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        pids.extend(self.stats().map(|s| worker_pids(&s)).unwrap_or_default());
        pids
    }

    /// Writes a login record for each uid in `uids` (token `t<uid>`, source app), pipelined.
    pub fn register_tokens(&self, uids: impl Iterator<Item = usize>) {
        let requests: Vec<String> = uids
            .map(|uid| {
                let body = serde_json::json!({"sk": SECRET, "uid": uid, "source": "app", "token": format!("t{uid}"),
                    "expires": 4_000_000_000u64})
                .to_string();
                format!("POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            })
            .collect();
        for chunk in requests.chunks(500) {
            let replies = http_exchange_over(self.http, self.tls_client(), chunk);
            for reply in replies.expect("token replies") {
                assert!(reply.contains("\"code\":0"), "{reply}");
            }
        }
    }
}

/// `/api/stats` of the server on `http_port`, once every worker is ready.
pub fn stats_on(http_port: u16) -> Option<Value> {
    stats_over(http_port, None)
}

/// As `stats_on`, over https when `tls` is given.
pub fn stats_over(http_port: u16, tls: Option<&Arc<ClientConfig>>) -> Option<Value> {
    let req =
        format!("GET /api/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n\r\n");
    let body = http_exchange_over(http_port, tls, &[req])?.pop()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["workers"]
        .as_array()?
        .iter()
        .all(|w| w["ready"] == true)
        .then_some(v)
}

/// Sends `requests` on one keep-alive connection, pipelined, and returns the response bodies.
pub fn http_exchange(port: u16, requests: &[String]) -> Option<Vec<String>> {
    http_exchange_over(port, None, requests)
}

/// As `http_exchange`, over https when `tls` is given.
pub fn http_exchange_over(
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
    requests: &[String],
) -> Option<Vec<String>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    match tls {
        None => exchange(tcp, requests),
        Some(config) => {
            let conn = ClientConnection::new(config.clone(), tls::server_name()).ok()?;
            exchange(StreamOwned::new(conn, tcp), requests)
        }
    }
}

fn exchange(mut s: impl Read + Write, requests: &[String]) -> Option<Vec<String>> {
    s.write_all(requests.concat().as_bytes()).ok()?;
    s.flush().ok()?;
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while got.len() < requests.len() {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            got.push(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string());
            buf.drain(..end + 4 + len);
        }
    }
    Some(got)
}

/// The task worker pids named in `/api/stats`.
pub fn worker_pids(stats: &Value) -> Vec<u32> {
    stats["worker_pids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_u64())
        .map(|p| p as u32)
        .collect()
}

/// Resident memory of these processes, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// utime + stime of these processes, in seconds.
pub fn cpu_secs(pids: &[u32]) -> f64 {
    let ticks = 100.0; // sysconf(_SC_CLK_TCK) on Linux
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = after.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / ticks
        })
        .sum()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}
