//! The kernel's share of moving one message over loopback on this machine, with no server
//! logic at all: what a push costs at least. A writer process sends small frames round robin
//! to CONNS TCP connections (one `write` each, as the master's `writev` does) and, in the
//! second part, answers datagrams one `recv` and one `send` at a time (the UDP door batches
//! them, which saves the calls but not the per-datagram network path); a reader process
//! drains the connections with epoll. The writer's CPU time per message is the floor that
//! `load -- push` is compared with: on loopback the receiver's kernel path (TCP receive,
//! wakeup) runs inside the writer's system call, so it is charged to the writer, as it is to
//! the server in the load benches.
//!
//! Run: `cargo bench --bench kernel_floor` (CONNS=1000 MESSAGES=200000).

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Instant;

mod common;
use common::env_or;

/// A frame the size of a typical pushed message (server frame header + ~140 bytes of JSON).
const FRAME: [u8; 150] = [b'x'; 150];

fn cpu_secs() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// Child: reads every connection until each has seen `per_conn * FRAME.len()` bytes.
fn drain(readers: Vec<TcpStream>, per_conn: usize) {
    let mut poll = Poll::new().expect("poll");
    let mut streams: Vec<MioStream> = readers
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true).expect("nonblocking");
            MioStream::from_std(s)
        })
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(i), Interest::READABLE)
            .expect("register");
    }
    let mut left: Vec<usize> = vec![per_conn * FRAME.len(); streams.len()];
    let mut open = streams.len();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 65536];
    while open > 0 {
        poll.poll(&mut events, None).expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match streams[i].read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let before = left[i];
                        left[i] = left[i].saturating_sub(n);
                        if before > 0 && left[i] == 0 {
                            open -= 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
}

fn tcp_floor(conns: usize, messages: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut writers = Vec::with_capacity(conns);
    let mut readers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let r = TcpStream::connect(addr).expect("connect");
        let (w, _) = listener.accept().expect("accept");
        w.set_nodelay(true).expect("nodelay");
        writers.push(w);
        readers.push(r);
    }
    let per_conn = messages / conns;
    // SAFETY: single-threaded at this point; the child only drains sockets and exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(writers);
            drain(readers, per_conn);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(readers);
            let cpu0 = cpu_secs();
            let started = Instant::now();
            for _ in 0..per_conn {
                for w in writers.iter_mut() {
                    w.write_all(&FRAME).expect("write");
                }
            }
            let cpu = cpu_secs() - cpu0;
            waitpid(child, None).expect("wait");
            let sent = per_conn * conns;
            println!(
                "TCP: {sent} frames of {} bytes to {conns} connections in {:.2} s: {:.2} us writer CPU per frame",
                FRAME.len(),
                started.elapsed().as_secs_f64(),
                cpu * 1e6 / sent as f64
            );
        }
    }
}

/// Datagrams in and one reply each, with plain recv/send: the network path per datagram is
/// the floor whether or not the calls are batched.
fn udp_floor(messages: usize) {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = server.local_addr().expect("addr");
    let from = client.local_addr().expect("addr");
    // SAFETY: as above.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // The pusher: a window of datagrams in flight, small enough for the default
            // socket buffers (a dropped datagram would leave both sides waiting).
            let mut buf = [0u8; 2048];
            let mut in_flight = 0;
            for _ in 0..messages {
                client.send_to(&FRAME, to).expect("send");
                in_flight += 1;
                while in_flight >= 32 {
                    client.recv_from(&mut buf).expect("reply");
                    in_flight -= 1;
                }
            }
            while in_flight > 0 {
                client.recv_from(&mut buf).expect("reply");
                in_flight -= 1;
            }
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            let mut buf = [0u8; 2048];
            let cpu0 = cpu_secs();
            for _ in 0..messages {
                let (n, _) = server.recv_from(&mut buf).expect("recv");
                server.send_to(&buf[..n.min(60)], from).expect("reply");
            }
            let cpu = cpu_secs() - cpu0;
            waitpid(child, None).expect("wait");
            println!(
                "UDP: {messages} datagrams received and answered: {:.2} us CPU per datagram",
                cpu * 1e6 / messages as f64
            );
        }
    }
}

fn main() {
    let conns = env_or("CONNS", 1000);
    let messages = env_or("MESSAGES", 200_000);
    tcp_floor(conns, messages);
    udp_floor(messages);
}
