//! Soak test against the real binary: USERS logged-in clients chat with each other, a back end
//! pushes over UDP and clients reconnect continuously for DURATION_SECS; the server's memory and
//! open descriptors are sampled every 10 s. At the end every message sent must have arrived
//! exactly once (messages to a user who is between connections are stored and delivered at
//! the next login, so they count too).
//!
//! Run: `cargo bench --bench soak` (USERS=19000 DURATION_SECS=1800 THREADS=4 CHAT_RATE=1000
//! PUSH_RATE=500 CHURN_RATE=50, all per second in total).

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

mod common;
use common::{env_or, fd_count, rss_kib, stats_on, worker_pids, BenchServer, SECRET};
/// A client silent this long sends a WebSocket ping (the server closes idle clients at 60 s).
const PING_AFTER: Duration = Duration::from_secs(20);
/// Samples taken before this are warm-up: not part of the min/max.
const WARM_UP: Duration = Duration::from_secs(60);

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// xorshift64*: enough randomness for picking users, no extra dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// One monitor sample: seconds since the start, RSS of master + workers (KiB), master's fds.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    rss: u64,
    fds: u64,
}

fn sample(pid: u32, http: u16, started: Instant) -> (Sample, Option<u64>) {
    let st = stats_on(http);
    let mut pids = vec![pid];
    pids.extend(st.as_ref().map(worker_pids).unwrap_or_default());
    let rss = rss_kib(&pids);
    let fds = fd_count(pid);
    let conns = st.and_then(|s| s["connections"].as_u64());
    (
        Sample {
            secs: started.elapsed().as_secs_f64(),
            rss,
            fds,
        },
        conns,
    )
}

/// Counters shared by every thread.
#[derive(Default)]
struct Shared {
    /// Messages sent (chats accepted by the client library, pushes sent).
    sent: AtomicU64,
    /// Distinct message ids received (each id goes to one uid, so to one thread).
    received: AtomicU64,
    /// Stop sending and churning.
    stop: AtomicBool,
    /// Client threads that, after `stop`, have every user connected.
    settled: AtomicU64,
    /// Leave the receive loops.
    done: AtomicBool,
    reconnects: AtomicU64,
    /// Connections that ended without our asking (read error or server close).
    unexpected_closes: AtomicU64,
    /// Our closes the server did not answer within the timeout.
    close_timeouts: AtomicU64,
    push_errors: AtomicU64,
}

/// Blocking login; retried, since a login may be refused while the server is busy (503).
fn connect(uid: usize, ws_port: u16) -> Ws {
    let token = wspush::protocol::encode_access_token(&format!("t{uid}"), uid as u64, "app");
    let url = format!("ws://127.0.0.1:{ws_port}/?access_token={token}");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = tungstenite::connect(url.as_str()).map_err(|e| e.to_string());
        let result = result.and_then(|(mut ws, _)| {
            if let MaybeTlsStream::Plain(s) = ws.get_mut() {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            }
            let login = ws.read().map_err(|e| e.to_string())?;
            if login.to_text().unwrap_or("").contains("\"code\":200") {
                Ok(ws)
            } else {
                Err(login.to_string())
            }
        });
        match result {
            Ok(mut ws) => {
                if let MaybeTlsStream::Plain(s) = ws.get_mut() {
                    s.set_nonblocking(true).expect("nonblocking");
                }
                return ws;
            }
            Err(e) => {
                assert!(attempt < 50, "uid {uid}: login failed 50 times: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn raw_fd(ws: &mut Ws) -> i32 {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.as_raw_fd(),
        _ => unreachable!("plain TCP only"),
    }
}

struct Client {
    uid: usize,
    ws: Option<Ws>,
    last_send: Instant,
    /// A frame is buffered in tungstenite because the socket would block.
    unflushed: bool,
}

/// One client thread: its users, its poll, what it sent and what it received.
struct ClientThread {
    t: usize,
    clients: Vec<Client>,
    poll: Poll,
    ws_port: u16,
    /// Ids sent, with their recipient.
    sent: Vec<(String, usize)>,
    received: HashMap<String, u32>,
    /// Uids logged in again after their first login.
    reconnected: Vec<usize>,
    shared: Arc<Shared>,
}

impl ClientThread {
    fn record(&mut self, text: &str) {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if v["type"] != "chat" {
            return;
        }
        if let Some(id) = v["content"]["id"].as_str() {
            let n = self.received.entry(id.to_string()).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.shared.received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reads client `i` until the socket would block; a dead connection is dropped.
    fn read(&mut self, i: usize) {
        loop {
            let Some(ws) = self.clients[i].ws.as_mut() else {
                return;
            };
            match ws.read() {
                Ok(Message::Text(t)) => self.record(t.as_str()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("uid {}: connection ended: {e}", self.clients[i].uid);
                    self.shared
                        .unexpected_closes
                        .fetch_add(1, Ordering::Relaxed);
                    self.drop_client(i);
                    return;
                }
            }
        }
    }

    fn drop_client(&mut self, i: usize) {
        if let Some(mut ws) = self.clients[i].ws.take() {
            let fd = raw_fd(&mut ws);
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    fn attach(&mut self, i: usize) {
        let mut ws = connect(self.clients[i].uid, self.ws_port);
        let fd = raw_fd(&mut ws);
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            .expect("register");
        self.clients[i].ws = Some(ws);
        self.clients[i].last_send = Instant::now();
        self.clients[i].unflushed = false;
        // Frames after the login one may already sit in tungstenite's buffer: no event for them.
        self.read(i);
    }

    /// Closes client `i` with a close handshake, counting whatever arrives before the server's
    /// answer (after it, the server stores the user's messages), then logs it in again.
    fn churn(&mut self, i: usize) {
        if let Some(mut ws) = self.clients[i].ws.take() {
            let fd = raw_fd(&mut ws);
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            if let MaybeTlsStream::Plain(s) = ws.get_mut() {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            }
            let _ = ws.close(None);
            loop {
                match ws.read() {
                    Ok(Message::Text(t)) => self.record(t.as_str()),
                    Ok(_) => {}
                    Err(tungstenite::Error::ConnectionClosed) => break,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        self.shared.close_timeouts.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        self.attach(i);
        self.reconnected.push(self.clients[i].uid);
        self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    fn send_chat(&mut self, i: usize, to_uid: usize, id: String) {
        let Some(ws) = self.clients[i].ws.as_mut() else {
            return;
        };
        let frame = json!({"to_uid": to_uid.to_string(), "type": "chat", "content": {"id": id}});
        match ws.send(Message::text(frame.to_string())) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.clients[i].unflushed = true;
            }
            Err(e) => {
                eprintln!("uid {}: send failed: {e}", self.clients[i].uid);
                self.shared
                    .unexpected_closes
                    .fetch_add(1, Ordering::Relaxed);
                self.drop_client(i);
                return;
            }
        }
        self.clients[i].last_send = Instant::now();
        self.sent.push((id, to_uid));
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Pings the quiet clients (idle timeout) and flushes buffered frames.
    fn keep_alive(&mut self) {
        let now = Instant::now();
        for c in &mut self.clients {
            let Some(ws) = c.ws.as_mut() else { continue };
            let result = if now.duration_since(c.last_send) >= PING_AFTER {
                c.last_send = now;
                ws.send(Message::Ping(Default::default()))
            } else if c.unflushed {
                ws.flush()
            } else {
                continue;
            };
            c.unflushed = match result {
                Ok(()) => false,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => true,
                Err(_) => false, // the next read reports the dead connection
            };
        }
    }

    fn run(&mut self, chat_rate: f64, churn_rate: f64, users: usize, start: &Barrier) {
        let mut rng =
            Rng(0x9E37_79B9_7F4A_7C15 ^ (self.t as u64 + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
        start.wait();
        let started = Instant::now();
        let (mut chats, mut churns) = (0u64, 0u64);
        let mut last_keep_alive = started;
        let mut settled = false;
        let mut events = Events::with_capacity(1024);
        while !self.shared.done.load(Ordering::Relaxed) {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(2)));
            let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for i in ready {
                self.read(i);
            }
            if !self.shared.stop.load(Ordering::Relaxed) {
                let secs = started.elapsed().as_secs_f64();
                while (chats as f64) < secs * chat_rate {
                    chats += 1;
                    let i = rng.below(self.clients.len());
                    let to = rng.below(users) + 1;
                    let id = format!("c{}-{chats}", self.t);
                    self.send_chat(i, to, id);
                }
                while (churns as f64) < secs * churn_rate {
                    churns += 1;
                    let i = rng.below(self.clients.len());
                    self.churn(i);
                }
            }
            // Connections the server ended are logged in again (their messages were stored).
            for i in 0..self.clients.len() {
                if self.clients[i].ws.is_none() {
                    self.attach(i);
                    self.reconnected.push(self.clients[i].uid);
                    self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !settled && self.shared.stop.load(Ordering::Relaxed) {
                settled = true;
                self.shared.settled.fetch_add(1, Ordering::Relaxed);
            }
            if last_keep_alive.elapsed() >= Duration::from_secs(1) {
                last_keep_alive = Instant::now();
                self.keep_alive();
            }
        }
    }
}

fn pusher(
    udp_port: u16,
    rate: f64,
    users: usize,
    shared: &Shared,
    start: &Barrier,
) -> Vec<(String, usize)> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
    sock.set_nonblocking(true).expect("nonblocking");
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let mut sent = Vec::new();
    let mut in_flight = 0usize;
    let mut buf = [0u8; 2048];
    let mut drain = |in_flight: &mut usize| {
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            *in_flight = in_flight.saturating_sub(1);
            if !buf[..n].starts_with(b"{\"code\":0") {
                eprintln!("push refused: {}", String::from_utf8_lossy(&buf[..n]));
                shared.push_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    start.wait();
    let started = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        drain(&mut in_flight);
        let secs = started.elapsed().as_secs_f64();
        while (sent.len() as f64) < secs * rate && in_flight < 64 {
            let id = format!("p-{}", sent.len() + 1);
            let to = rng.below(users) + 1;
            let datagram = json!({"sk": SECRET, "means": "to_uid",
                "data": {"to_uid": to.to_string(), "type": "chat", "content": {"id": id}}})
            .to_string();
            sock.send_to(datagram.as_bytes(), ("127.0.0.1", udp_port))
                .expect("send");
            sent.push((id, to));
            shared.sent.fetch_add(1, Ordering::Relaxed);
            in_flight += 1;
            drain(&mut in_flight);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_flight > 0 && Instant::now() < deadline {
        drain(&mut in_flight);
        std::thread::sleep(Duration::from_millis(5));
    }
    if in_flight > 0 {
        eprintln!("{in_flight} UDP replies missing");
        shared
            .push_errors
            .fetch_add(in_flight as u64, Ordering::Relaxed);
    }
    sent
}

fn main() {
    // `cargo bench` passes --bench; nothing else is parsed.
    let users = env_or("USERS", 19_000);
    let duration = Duration::from_secs(env_or("DURATION_SECS", 1800) as u64);
    let threads = env_or("THREADS", 4).max(1);
    let chat_rate = env_or("CHAT_RATE", 1000) as f64;
    let push_rate = env_or("PUSH_RATE", 500) as f64;
    let churn_rate = env_or("CHURN_RATE", 50) as f64;
    let server = BenchServer::start("soak", "", "");
    println!(
        "soak: {users} users, {}s, {threads} client threads, {chat_rate} chats/s, {push_rate} pushes/s, {churn_rate} reconnects/s",
        duration.as_secs()
    );

    // Tokens, through pipelined keep-alive connections.
    server.register_tokens(1..=users);

    let shared = Arc::new(Shared::default());
    // Client threads, the pusher and main start the clock together, once everyone is logged in.
    let start = Arc::new(Barrier::new(threads + 2));
    let login_started = Instant::now();
    let ws_port = server.ws;
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let (shared, start) = (shared.clone(), start.clone());
            std::thread::spawn(move || {
                let mut ct = ClientThread {
                    t,
                    clients: Vec::new(),
                    poll: Poll::new().expect("poll"),
                    ws_port,
                    sent: Vec::new(),
                    received: HashMap::new(),
                    reconnected: Vec::new(),
                    shared,
                };
                for uid in (1..=users).filter(|u| u % threads == t) {
                    ct.clients.push(Client {
                        uid,
                        ws: None,
                        last_send: Instant::now(),
                        unflushed: false,
                    });
                    let i = ct.clients.len() - 1;
                    ct.attach(i);
                }
                ct.run(
                    chat_rate / threads as f64,
                    churn_rate / threads as f64,
                    users,
                    &start,
                );
                (ct.sent, ct.received, ct.reconnected)
            })
        })
        .collect();
    let push_thread = {
        let (shared, start, udp) = (shared.clone(), start.clone(), server.udp);
        std::thread::spawn(move || pusher(udp, push_rate, users, &shared, &start))
    };
    start.wait();
    println!(
        "{users} logged in in {:.1}s",
        login_started.elapsed().as_secs_f64()
    );
    let started = Instant::now();

    let monitor = {
        let (shared, pid, http) = (shared.clone(), server.child.id(), server.http);
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = started + Duration::from_secs(10);
            while !shared.done.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                next += Duration::from_secs(10);
                let (s, conns) = sample(pid, http, started);
                println!(
                    "{:>6.0}s  RSS {} KiB  fds {}  connections {}  sent {}  received {}  reconnects {}",
                    s.secs,
                    s.rss,
                    s.fds,
                    conns.map_or("?".to_string(), |c| c.to_string()),
                    shared.sent.load(Ordering::Relaxed),
                    shared.received.load(Ordering::Relaxed),
                    shared.reconnects.load(Ordering::Relaxed),
                );
                samples.push(s);
            }
            samples
        })
    };

    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let push_sent = push_thread.join().expect("pusher");
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.settled.load(Ordering::Relaxed) < threads as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = shared.sent.load(Ordering::Relaxed);
    println!("stopped sending at {total} messages; waiting for the rest");
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (last, conns) = sample(server.child.id(), server.http, started);
    shared.done.store(true, Ordering::Relaxed);
    let mut samples = monitor.join().expect("monitor");

    let mut sent: Vec<(String, usize)> = push_sent;
    let mut received: HashMap<String, u32> = HashMap::new();
    let mut reconnected = std::collections::HashSet::new();
    for h in clients {
        let (s, r, c) = h.join().expect("client thread");
        sent.extend(s);
        reconnected.extend(c);
        for (id, n) in r {
            *received.entry(id).or_insert(0) += n;
        }
    }
    let lost_ids: Vec<&(String, usize)> = sent
        .iter()
        .filter(|(id, _)| !received.contains_key(id))
        .collect();
    let lost = lost_ids.len();
    for (id, to) in lost_ids.iter().take(20) {
        let again = if reconnected.contains(to) {
            "reconnected"
        } else {
            "never reconnected"
        };
        println!("lost: {id} to uid {to} ({again})");
    }
    let duplicated = received.values().filter(|&&n| n > 1).count();
    let sent_set: std::collections::HashSet<&String> = sent.iter().map(|(id, _)| id).collect();
    let unexpected = received.keys().filter(|id| !sent_set.contains(id)).count();

    let warm: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.secs >= WARM_UP.as_secs_f64())
        .collect();
    if !warm.is_empty() {
        samples = warm;
    }
    samples.push(last);
    let rss_min = samples.iter().map(|s| s.rss).min().unwrap_or(0);
    let rss_max = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let fd_min = samples.iter().map(|s| s.fds).min().unwrap_or(0);
    let fd_max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    println!(
        "sent {} (chats and pushes), received {} distinct, lost {lost}, duplicated {duplicated}, unexpected ids {unexpected}",
        sent.len(),
        received.len()
    );
    println!(
        "reconnects {}, unexpected closes {}, unanswered closes {}, push errors {}, connections at the end {}",
        shared.reconnects.load(Ordering::Relaxed),
        shared.unexpected_closes.load(Ordering::Relaxed),
        shared.close_timeouts.load(Ordering::Relaxed),
        shared.push_errors.load(Ordering::Relaxed),
        conns.map_or("?".to_string(), |c| c.to_string()),
    );
    println!(
        "RSS min {rss_min} max {rss_max} last {} KiB; fds min {fd_min} max {fd_max} last {}",
        last.rss, last.fds
    );
    println!(
        "soak: {}s, {users} users: lost {lost}, duplicated {duplicated}, RSS {rss_min}-{rss_max} KiB, fds {fd_min}-{fd_max}",
        duration.as_secs()
    );
    assert_eq!(lost, 0, "messages lost");
    assert_eq!(duplicated, 0, "messages duplicated");
}
