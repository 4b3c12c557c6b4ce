//! Heap allocations of the master's event-loop thread per chat message and per UDP push.
//!
//! The real master runs in this process, on its own thread, whose allocations (calls and bytes)
//! a counting global allocator records; the clients run on other threads of the same process and
//! are not counted, nor are the task workers (separate processes: the real binary).
//!
//! Each storage setting (`storage.backup` false, then true) runs in a child process of its own
//! (this bench re-executed), so that one master never counts while another is alive; the child
//! exits once it has printed its figures, and its task workers end on the EOF of their channel.
//!
//! Per case: warm up, let the loop settle, snapshot the counters, run the measured messages,
//! settle again (the last stores' answers come back), snapshot again. A `realloc` counts as one
//! allocation of its new size (dhat's convention). Bytes of allocations of 256 KiB or more are
//! also given apart: with storage on they vary from run to run (a buffer regrown past a shrink
//! threshold, as often as the workers happen to lag), while the rest is stable.
//!
//! Environment: MESSAGES (default 20000) per case, WARMUP (default 2000), BACKUP (`false`,
//! `true`; default both).

use mio::net::{TcpListener, UdpSocket};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

// ---- the counting allocator ----------------------------------------------------------------

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes of the allocations of `LARGE` bytes or more, part of `BYTES`: a buffer regrown past a
/// shrink threshold shows here, with a size set by timing (how far the workers lag).
static LARGE_BYTES: AtomicU64 = AtomicU64::new(0);
const LARGE: usize = 256 * 1024;

thread_local! {
    /// Set on the master's thread only. Const-initialised and without a destructor: reading it
    /// never allocates (which would recurse into the allocator).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn note(size: usize) {
    if counting() {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
        if size >= LARGE {
            LARGE_BYTES.fetch_add(size as u64, Relaxed);
        }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            REALLOCS.fetch_add(1, Relaxed);
        }
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snapshot {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
    large_bytes: u64,
    at: Instant,
}

fn snapshot() -> Snapshot {
    Snapshot {
        allocs: ALLOCS.load(Relaxed),
        reallocs: REALLOCS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
        large_bytes: LARGE_BYTES.load(Relaxed),
        at: Instant::now(),
    }
}

// ---- setup ---------------------------------------------------------------------------------

const SECRET: &str = "alloc-bench-secret";
const CHAT_WINDOW: usize = 8;
const UDP_WINDOW: usize = 64;
/// Time given to the loop after a phase: in-flight store tasks come back, queues drain.
const SETTLE: Duration = Duration::from_millis(400);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const CASE_ENV: &str = "WSPUSH_ALLOC_BENCH_BACKUP";

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn case_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("wspush-allocations-{pid}"))
}

/// The sockets as `daemon::bind` makes them (it is private), on ports the kernel picks.
fn bind() -> wspush::master::Sockets {
    use nix::sys::socket::{listen, setsockopt, sockopt, Backlog};
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let ws = TcpListener::bind(any).expect("bind the WebSocket port");
    let http = TcpListener::bind(any).expect("bind the HTTP port");
    let udp = UdpSocket::bind(any).expect("bind the UDP port");
    for listener in [&ws, &http] {
        listen(listener, Backlog::MAXCONN).expect("listen");
    }
    let _ = setsockopt(&udp, sockopt::RcvBuf, &(4 * 1024 * 1024));
    let _ = setsockopt(&udp, sockopt::SndBuf, &(4 * 1024 * 1024));
    wspush::master::Sockets {
        ws,
        http,
        udp,
        tls: None,
    }
}

fn config(dir: &Path, sockets: &wspush::master::Sockets, backup: bool) -> wspush::config::Config {
    let mut c = wspush::config::Config::default();
    let s = &mut c.server;
    s.host = "127.0.0.1".into();
    s.ws_port = sockets.ws.local_addr().expect("ws address").port();
    s.http_port = sockets.http.local_addr().expect("http address").port();
    s.udp_port = sockets.udp.local_addr().expect("udp address").port();
    s.task_worker_num = 2;
    s.daemonize = false;
    s.pid_file = dir.join("wspush.pid");
    s.log_file = dir.join("wspush.log");
    s.data_dir = dir.join("data");
    s.log_level = "warn".into();
    // Limits a bench client on one address would trip: the bench measures the server.
    s.rate_limit = 1_000_000_000;
    s.rate_limit_burst = 1_000_000_000;
    s.rate_limit_bytes = 1 << 40;
    s.rate_limit_bytes_burst = 1 << 40;
    s.connection_rate_per_ip = 1_000_000;
    s.connection_burst_per_ip = 1_000_000;
    c.push.rate_per_ip = 1_000_000_000;
    c.push.burst_per_ip = 1_000_000_000;
    c.storage.backup = backup;
    c.udpsocket_group = vec![wspush::config::PushPeer {
        ip: "127.0.0.1".into(),
        secret_key: SECRET.into(),
    }];
    c
}

/// Starts the master on its own, counted thread; returns once it reports ready.
fn start_master(dir: &Path, backup: bool) -> wspush::config::Config {
    std::fs::create_dir_all(dir).expect("create the bench directory");
    let sockets = bind();
    let config = config(dir, &sockets, backup);
    let (notifier, ready) = UnixStream::pair().expect("socket pair");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_wspush"));
    let for_master = config.clone();
    std::thread::Builder::new()
        .name("master".into())
        .spawn(move || {
            COUNTING.with(|c| c.set(true));
            let master =
                wspush::master::Master::new(for_master, sockets, 1024, exe, Some(notifier), None)
                    .expect("Master::new");
            master.run().expect("the master's loop");
        })
        .expect("spawn the master thread");
    ready
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut line = String::new();
    let _ = BufReader::new(ready).read_line(&mut line);
    assert!(
        line.starts_with("ready "),
        "the master did not report ready: {line:?} (log: {})",
        config.server.log_file.display()
    );
    config
}

/// `POST /api/login` for (uid, source app, token `t<uid>`), as benches/common does.
fn register_token(http_port: u16, uid: u64) {
    let body = serde_json::json!({"sk": SECRET, "uid": uid, "source": "app",
        "token": format!("t{uid}"), "expires": 4_000_000_000u64})
    .to_string();
    let mut s = TcpStream::connect(("127.0.0.1", http_port)).expect("connect to the HTTP port");
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).expect("timeout");
    write!(
        s,
        "POST /api/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the login record");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("the login reply");
    assert!(
        reply.contains("\"code\":0"),
        "login record refused: {reply}"
    );
}

fn login(ws_port: u16, uid: u64) -> Ws {
    let token = wspush::protocol::encode_access_token(&format!("t{uid}"), uid, "app");
    let url = format!("ws://127.0.0.1:{ws_port}/?access_token={token}");
    let (mut ws, _) = tungstenite::connect(url).expect("WebSocket handshake");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
    }
    let frame = read_text(&mut ws, "the login frame");
    assert!(
        frame.contains("\"type\":\"login\"") && frame.contains("\"code\":200"),
        "login refused: {frame}"
    );
    ws
}

fn read_text(ws: &mut Ws, what: &str) -> String {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return t.as_str().to_owned(),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("{what}: unexpected {other:?}"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// About 1 KiB of text; the sequence number makes every message differ, at a fixed length.
fn text(i: usize, filler: &str) -> String {
    format!("{i:010} {filler}")
}

fn filler() -> String {
    "The quick brown fox jumps over the lazy dog. "
        .repeat(23)
        .chars()
        .take(989)
        .collect()
}

/// The receiver reads `n` chat frames while `send` runs on this thread.
fn with_receiver(receiver: &mut Ws, n: usize, send: impl FnOnce()) {
    std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            for _ in 0..n {
                let frame = read_text(receiver, "a delivered message");
                assert!(
                    frame.contains("\"type\":\"chat\""),
                    "not a chat frame: {frame}"
                );
            }
        });
        send();
        reading.join().expect("the receiver");
    });
}

/// `n` chat messages from `sender` to uid 2, at most `CHAT_WINDOW` not yet acknowledged.
fn chat(sender: &mut Ws, receiver: &mut Ws, n: usize, filler: &str) {
    with_receiver(receiver, n, || {
        let (mut sent, mut acked) = (0, 0);
        while acked < n {
            while sent < n && sent - acked < CHAT_WINDOW {
                let frame = serde_json::json!({"to_uid": "2", "type": "chat",
                    "content": {"type": "text", "value": text(sent, filler)}})
                .to_string();
                sender
                    .send(Message::text(frame))
                    .expect("send a chat message");
                sent += 1;
            }
            let ack = read_text(sender, "an ack");
            assert!(
                ack.contains("\"type\":\"ack\"") && ack.contains("\"state\":1"),
                "not a delivered ack: {ack}"
            );
            acked += 1;
        }
    });
}

/// `n` UDP pushes to uid 2, at most `UDP_WINDOW` not yet answered.
fn udp_push(socket: &std::net::UdpSocket, receiver: &mut Ws, n: usize, filler: &str) {
    with_receiver(receiver, n, || {
        let mut buf = vec![0u8; 65_536];
        let (mut sent, mut answered) = (0, 0);
        while answered < n {
            while sent < n && sent - answered < UDP_WINDOW {
                let datagram = serde_json::json!({"sk": SECRET, "means": "to_uid",
                    "data": {"to_uid": "2", "type": "chat", "uid": "0",
                        "content": {"type": "text", "value": text(sent, filler)}}})
                .to_string();
                socket.send(datagram.as_bytes()).expect("send a push");
                sent += 1;
            }
            let len = socket
                .recv(&mut buf)
                .expect("a push reply (lost datagram?)");
            let reply = std::str::from_utf8(&buf[..len]).expect("UTF-8 reply");
            assert!(
                reply.contains("\"code\":0") && reply.contains("\"delivered\":1"),
                "push not delivered: {reply}"
            );
            answered += 1;
        }
    });
}

struct Figures {
    case: &'static str,
    backup: bool,
    msgs: usize,
    allocs: f64,
    reallocs: f64,
    bytes: f64,
    large_bytes: f64,
    secs: f64,
}

/// Warm-up, settle, measure, settle: the counters' difference per message.
fn measure(
    case: &'static str,
    backup: bool,
    warmup: usize,
    msgs: usize,
    mut run: impl FnMut(usize),
) -> Figures {
    run(warmup);
    std::thread::sleep(SETTLE);
    let before = snapshot();
    run(msgs);
    let sent = Instant::now();
    std::thread::sleep(SETTLE);
    let after = snapshot();
    let per = |a: u64, b: u64| (b - a) as f64 / msgs as f64;
    Figures {
        case,
        backup,
        msgs,
        allocs: per(before.allocs, after.allocs),
        reallocs: per(before.reallocs, after.reallocs),
        bytes: per(before.bytes, after.bytes),
        large_bytes: per(before.large_bytes, after.large_bytes),
        secs: (sent - before.at).as_secs_f64(),
    }
}

/// One storage setting, in this (child) process: prints RESULT lines on stdout, then exits.
fn run_case(backup: bool) -> ! {
    let msgs = env_or("MESSAGES", 20_000).max(1);
    let warmup = env_or("WARMUP", 2_000);
    let dir = case_dir(std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    wspush::logging::init("master", "warn");
    let config = start_master(&dir, backup);
    let s = &config.server;
    register_token(s.http_port, 1);
    register_token(s.http_port, 2);
    let mut sender = login(s.ws_port, 1);
    let mut receiver = login(s.ws_port, 2);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    udp.connect(("127.0.0.1", s.udp_port)).expect("connect UDP");
    udp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let filler = filler();

    std::thread::sleep(SETTLE);
    let idle_from = snapshot();
    std::thread::sleep(Duration::from_secs(1));
    let idle_to = snapshot();
    let idle_per_sec =
        (idle_to.allocs - idle_from.allocs) as f64 / (idle_to.at - idle_from.at).as_secs_f64();
    eprintln!("backup={backup}: idle master loop: {idle_per_sec:.1} allocations/s");

    let results = [
        measure("chat", backup, warmup, msgs, |n| {
            chat(&mut sender, &mut receiver, n, &filler)
        }),
        measure("udp", backup, warmup, msgs, |n| {
            udp_push(&udp, &mut receiver, n, &filler)
        }),
    ];
    for f in &results {
        eprintln!(
            "backup={backup}: {} {} messages in {:.2} s ({:.0}/s)",
            f.case,
            f.msgs,
            f.secs,
            f.msgs as f64 / f.secs
        );
        println!(
            "RESULT case={} backup={} msgs={} allocs_per_msg={:.2} bytes_per_msg={:.0} \
             reallocs_per_msg={:.2} large_bytes_per_msg={:.0}",
            f.case, f.backup, f.msgs, f.allocs, f.bytes, f.reallocs, f.large_bytes
        );
    }
    let _ = std::io::stdout().flush();
    let _ = std::fs::remove_dir_all(&dir);
    // The task workers end on the EOF of their channel.
    std::process::exit(0);
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("?")
}

fn main() {
    if let Ok(backup) = std::env::var(CASE_ENV) {
        run_case(backup == "true");
    }
    let cases: &[bool] = match std::env::var("BACKUP").as_deref() {
        Ok("false") => &[false],
        Ok("true") => &[true],
        _ => &[false, true],
    };
    println!(
        "allocations: counts the master's event-loop thread only (the task workers are separate \
         processes; the bench's clients run on other threads); release build"
    );
    let exe = std::env::current_exe().expect("own executable");
    let mut lines = Vec::new();
    for &backup in cases {
        let mut child = Command::new(&exe)
            .env(CASE_ENV, backup.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("re-run this bench for one case");
        let out = child.stdout.take().expect("child stdout");
        for line in BufReader::new(out).lines() {
            let line = line.expect("child output");
            if line.starts_with("RESULT ") {
                lines.push(line);
            } else {
                println!("{line}");
            }
        }
        let status = child.wait().expect("wait for the case");
        let _ = std::fs::remove_dir_all(case_dir(child.id()));
        assert!(status.success(), "case backup={backup} failed: {status}");
    }
    println!();
    println!(
        "{:<6} {:<7} {:>7} {:>12} {:>14} {:>11} {:>20}",
        "case", "backup", "msgs", "allocs/msg", "reallocs/msg", "bytes/msg", "of which >=256KiB"
    );
    for l in &lines {
        println!(
            "{:<6} {:<7} {:>7} {:>12} {:>14} {:>11} {:>20}",
            field(l, "case"),
            field(l, "backup"),
            field(l, "msgs"),
            field(l, "allocs_per_msg"),
            field(l, "reallocs_per_msg"),
            field(l, "bytes_per_msg"),
            field(l, "large_bytes_per_msg")
        );
    }
    println!();
    for l in &lines {
        println!("{l}");
    }
}
