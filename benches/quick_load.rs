//! Quick load against the real binary: logins per second, then UDP `to_uid` pushes delivered per
//! second (windowed), checking that nothing is lost, duplicated or reordered, and the server's
//! CPU time per delivered message (master and workers, from /proc).
//!
//! Run: `cargo bench --bench quick_load` (USERS=2000 THREADS=4 PUSHES=100000 WINDOW=256).

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};
use std::io::ErrorKind;
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

mod common;
use common::{cpu_secs, env_or, rss_kib, BenchServer, SECRET};

fn main() {
    // `cargo bench` passes --bench; nothing else is parsed.
    let users = env_or("USERS", 2000);
    let threads = env_or("THREADS", 4);
    let pushes = env_or("PUSHES", 100_000);
    let window = env_or("WINDOW", 256);
    let server = BenchServer::start("bench", "", "");
    println!(
        "quick_load: {users} users, {threads} client threads, {pushes} pushes, window {window}"
    );

    // Tokens, through one pipelined keep-alive connection.
    let started = Instant::now();
    server.register_tokens(1..=users);
    println!(
        "tokens written: {:.0}/s",
        users as f64 / started.elapsed().as_secs_f64()
    );

    // Logins: each thread connects its share one after another.
    let rss0 = rss_kib(&server.pids());
    let cpu0 = cpu_secs(&server.pids());
    let started = Instant::now();
    let ws_port = server.ws;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut clients = Vec::new();
                for uid in (1..=users).filter(|u| u % threads == t) {
                    let token = wspush::protocol::encode_access_token(
                        &format!("t{uid}"),
                        uid as u64,
                        "app",
                    );
                    let url = format!("ws://127.0.0.1:{ws_port}/?access_token={token}");
                    let (mut ws, _) = tungstenite::connect(url).expect("connect");
                    let login = ws.read().expect("login frame");
                    assert!(
                        login.to_text().unwrap_or("").contains("\"code\":200"),
                        "{login}"
                    );
                    clients.push((uid, ws));
                }
                clients
            })
        })
        .collect();
    let groups: Vec<Vec<(usize, WebSocket<MaybeTlsStream<TcpStream>>)>> = handles
        .into_iter()
        .map(|h| h.join().expect("login thread"))
        .collect();
    let login_secs = started.elapsed().as_secs_f64();
    let login_cpu = cpu_secs(&server.pids()) - cpu0;
    println!(
        "logins: {:.0}/s ({users} in {login_secs:.2}s), server CPU {:.1} us per login",
        users as f64 / login_secs,
        login_cpu * 1e6 / users as f64
    );
    let rss1 = rss_kib(&server.pids());
    println!(
        "memory: {:.2} KiB resident per idle logged-in connection, all processes ({rss0} -> {rss1} KiB)",
        rss1.saturating_sub(rss0) as f64 / users as f64
    );

    // Pushes: one UDP sender, windowed; receivers check order per uid and count.
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = groups
        .into_iter()
        .map(|clients| {
            let (received, failed, done) = (received.clone(), failed.clone(), done.clone());
            std::thread::spawn(move || receive(clients, users, &received, &failed, &done))
        })
        .collect();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Replies arrive in bursts; the default buffer would drop some.
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
    let cpu0 = cpu_secs(&server.pids());
    let started = Instant::now();
    let mut in_flight = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..pushes {
        let uid = seq % users + 1;
        let datagram = json!({"sk": SECRET, "means": "to_uid",
            "data": {"to_uid": uid.to_string(), "type": "chat", "uid": "0", "content": {"seq": seq}}})
        .to_string();
        sock.send_to(datagram.as_bytes(), ("127.0.0.1", server.udp))
            .expect("send");
        in_flight += 1;
        while in_flight >= window {
            let (n, _) = sock.recv_from(&mut buf).expect("a reply within 5 s");
            assert!(
                buf[..n].starts_with(b"{\"code\":0"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
            in_flight -= 1;
        }
    }
    let mut lost_replies = 0;
    while in_flight > 0 {
        if sock.recv_from(&mut buf).is_err() {
            lost_replies += in_flight;
            break;
        }
        in_flight -= 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < pushes as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = started.elapsed().as_secs_f64();
    let push_cpu = cpu_secs(&server.pids()) - cpu0;
    done.store(true, Ordering::Relaxed);
    // The receivers drop their clients: every connection closes.
    for r in receivers {
        r.join().expect("receiver");
    }
    let got = received.load(Ordering::Relaxed);
    println!(
        "pushes: {:.0} delivered/s ({got} of {pushes} in {secs:.2}s), server CPU {:.1} us per delivered push",
        got as f64 / secs,
        push_cpu * 1e6 / got.max(1) as f64
    );
    // Memory after every connection is gone: does it come back near the baseline?
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .stats()
        .is_some_and(|s| s["connections"].as_u64() != Some(0))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let settle = Instant::now() + Duration::from_secs(3);
    let mut after = rss_kib(&server.pids());
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(250));
        after = after.min(rss_kib(&server.pids()));
    }
    println!(
        "memory after all {users} closed: {after} KiB (baseline {rss0} KiB, with them {rss1} KiB)"
    );
    assert_eq!(lost_replies, 0, "UDP replies lost");
    assert_eq!(got, pushes as u64, "lost or duplicated messages");
    assert!(
        !failed.load(Ordering::Relaxed),
        "a message arrived out of order"
    );
}

/// Reads every client with mio until `done`; checks each uid's `seq` increases by `users`.
fn receive(
    mut clients: Vec<(usize, WebSocket<MaybeTlsStream<TcpStream>>)>,
    users: usize,
    received: &AtomicU64,
    failed: &AtomicBool,
    done: &AtomicBool,
) {
    let mut poll = Poll::new().expect("poll");
    let mut last: Vec<Option<u64>> = vec![None; clients.len()];
    for (i, (_, ws)) in clients.iter_mut().enumerate() {
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_nonblocking(true).expect("nonblocking");
            poll.registry()
                .register(&mut SourceFd(&s.as_raw_fd()), Token(i), Interest::READABLE)
                .expect("register");
        }
    }
    let mut events = Events::with_capacity(1024);
    while !done.load(Ordering::Relaxed) {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(50)));
        for ev in events.iter() {
            let i = ev.token().0;
            let (uid, ws) = &mut clients[i];
            loop {
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        let seq = v["content"]["seq"].as_u64().unwrap_or(u64::MAX);
                        let expected = last[i].map_or((*uid - 1) as u64, |p| p + users as u64);
                        if seq != expected {
                            failed.store(true, Ordering::Relaxed);
                        }
                        last[i] = Some(seq);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}
