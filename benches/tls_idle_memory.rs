//! Heap one idle TLS connection keeps in the server, against a plain one, and against rustls's
//! buffered `ServerConnection` (what `Conn` held before it used the unbuffered API).
//!
//! Each connection is a real loopback TCP pair in this process: a rustls client (resumption
//! off, so a full handshake, as the load generator's agents make) sends a request shaped like a
//! WebSocket upgrade, the server side answers with a 101-sized reply and a login-frame-sized
//! one, and the client is then dropped (its socket stays open), so the server side is left
//! as an idle logged-in connection is. The connection's TCP socket is kernel memory and not
//! counted here; nor is the session the master keeps beside it (the same with or without TLS).
//!
//! Counted per connection, from just before it is accepted to just after its client is
//! dropped, so only what the server side still holds remains:
//! - Rust heap: bytes and allocations still live, through a counting global allocator;
//! - malloc in use: glibc's `mallinfo2().uordblks`, which also sees aws-lc's own C
//!   allocations (the keys) and malloc's chunk headers. Chunks parked in glibc's per-thread
//!   cache count as in use; the warm-up fills that cache first, so its share is small.
//!
//! The first `WARMUP` connections of each kind are not counted (the thread's shared TLS
//! scratch buffers are made by the first one). Waiting is poll(2) on the two sockets with a
//! deadline, never a sleep.
//!
//! Environment: CONNS (default 2,000) counted connections per kind, WARMUP (default 50).
//!
//! ```sh
//! cargo bench --bench tls_idle_memory
//! ```

use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wspush::net::stream::Conn;
use wspush::net::tls::{TlsAcceptor, TlsCounters, TlsFiles};

#[allow(dead_code)]
#[path = "common/tls.rs"]
mod tls;

// ---- the counting allocator ----------------------------------------------------------------

struct Counting;

/// Bytes and allocations live now.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        LIVE_ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        LIVE_ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (Rust heap bytes live, Rust allocations live, malloc bytes in use).
fn snapshot() -> (i64, i64, i64) {
    // SAFETY: mallinfo2 only reads glibc's own heap bookkeeping.
    let malloc = unsafe { libc::mallinfo2() }.uordblks as i64;
    (LIVE_BYTES.load(Relaxed), LIVE_ALLOCS.load(Relaxed), malloc)
}

// ---- one connection ------------------------------------------------------------------------

/// A request the size of an agent's upgrade request, and the server's two answers: the 101
/// response and the login frame.
const REQUEST: usize = 280;
const ANSWERS: [usize; 2] = [129, 72];
/// How long one connection's exchange may take.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    /// `Conn` over TLS: rustls's unbuffered connection (src/net/tls_conn.rs).
    Unbuffered,
    /// rustls's buffered `ServerConnection`, driven as the previous `Conn` drove it.
    Buffered,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain Conn",
            Kind::Unbuffered => "TLS Conn (unbuffered, now)",
            Kind::Buffered => "TLS ServerConnection (buffered, before)",
        }
    }
}

/// The server's side of a connection.
enum Server {
    Conn(Conn),
    /// As the previous `Conn` held it: the TLS state boxed beside the socket.
    Buffered(Box<ServerConnection>, TcpStream),
}

impl Server {
    fn fd(&self) -> i32 {
        match self {
            Server::Conn(c) => c.tcp().as_raw_fd(),
            Server::Buffered(_, tcp) => tcp.as_raw_fd(),
        }
    }

    /// Reads what has come into `got`, until the socket would block.
    fn read(&mut self, got: &mut Vec<u8>) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        match self {
            Server::Conn(c) => loop {
                match c.read(&mut buf) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            },
            Server::Buffered(tls, tcp) => loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                match tls.read_tls(tcp) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
                tls.process_new_packets().map_err(io::Error::other)?;
                write_tls(tls, tcp)?;
            },
        }
    }

    fn answer(&mut self) -> io::Result<()> {
        for size in ANSWERS {
            let answer = vec![b'a'; size];
            match self {
                Server::Conn(c) => {
                    c.write_all(&answer)?;
                    c.flush()?;
                }
                Server::Buffered(tls, tcp) => {
                    tls.writer().write_all(&answer)?;
                    write_tls(tls, tcp)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes what the buffered connection has ready (a loopback socket takes these few bytes).
fn write_tls(tls: &mut ServerConnection, tcp: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(tcp)?;
    }
    Ok(())
}

/// The client's side; dropped once the answers are in.
struct Client {
    tcp: TcpStream,
    tls: Option<ClientConnection>,
}

impl Client {
    fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if let Some(t) = self.tls.as_mut() {
            while t.wants_write() {
                t.write_tls(&mut self.tcp)?;
            }
        }
        Ok(())
    }

    fn read(&mut self, got: &mut Vec<u8>) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let Some(t) = self.tls.as_mut() else {
                match self.tcp.read(&mut buf) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
                continue;
            };
            match t.read_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
            t.process_new_packets().map_err(io::Error::other)?;
            loop {
                match t.reader().read(&mut buf) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Waits until either socket has something to read, or panics at the deadline.
fn wait_readable(fds: [i32; 2], deadline: Instant) {
    let mut polls = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "a connection's exchange made no progress");
    // SAFETY: `polls` is a valid array of two pollfd for the call's duration.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), 2, left.as_millis().max(1) as i32) };
    assert!(
        n > 0 || io::Error::last_os_error().kind() == ErrorKind::Interrupted,
        "a connection's exchange made no progress"
    );
}

struct Side {
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    server_config: Arc<ServerConfig>,
    client_config: Arc<ClientConfig>,
}

impl Side {
    /// Accepts one connection of `kind`, runs its exchange and drops the client. Returns the
    /// server's side and the client's socket, both to be kept open.
    fn connection(&self, kind: Kind) -> (Server, TcpStream) {
        let tcp = TcpStream::connect(self.addr).expect("connect");
        let (accepted, peer) = self.listener.accept().expect("accept");
        // As the server's listener sets them; without TCP_NODELAY the second answer would
        // wait for a delayed ACK.
        for s in [&accepted, &tcp] {
            s.set_nonblocking(true).expect("nonblocking");
            s.set_nodelay(true).expect("nodelay");
        }
        let mut server = match kind {
            Kind::Plain => Server::Conn(
                Conn::new(mio::net::TcpStream::from_std(accepted), peer, false, None)
                    .expect("conn"),
            ),
            Kind::Unbuffered => Server::Conn(
                Conn::new(
                    mio::net::TcpStream::from_std(accepted),
                    peer,
                    false,
                    Some(&self.acceptor),
                )
                .expect("conn"),
            ),
            Kind::Buffered => Server::Buffered(
                Box::new(ServerConnection::new(self.server_config.clone()).expect("tls")),
                accepted,
            ),
        };
        let mut client = Client {
            tls: (kind != Kind::Plain).then(|| {
                ClientConnection::new(self.client_config.clone(), tls::server_name())
                    .expect("client")
            }),
            tcp,
        };
        let request = vec![b'r'; REQUEST];
        match client.tls.as_mut() {
            Some(t) => t.writer().write_all(&request).expect("request"),
            None => client.tcp.write_all(&request).expect("request"),
        }
        let deadline = Instant::now() + DEADLINE;
        let (mut got, mut answer, mut answered) = (Vec::new(), Vec::new(), false);
        let answers: usize = ANSWERS.iter().sum();
        while answer.len() < answers {
            client.write_pending().expect("client write");
            server.read(&mut got).expect("server read");
            if !answered && got.len() >= REQUEST {
                server.answer().expect("server answer");
                answered = true;
            }
            client.read(&mut answer).expect("client read");
            if answer.len() < answers && !client.wants_write() {
                wait_readable([client.tcp.as_raw_fd(), server.fd()], deadline);
            }
        }
        assert_eq!(got.len(), REQUEST, "the server read the request once");
        (server, client.tcp)
    }
}

struct Figures {
    rust_bytes: Vec<i64>,
    rust_allocs: i64,
    malloc_bytes: i64,
}

fn measure(side: &Side, kind: Kind, warmup: usize, conns: usize) -> Figures {
    // Room for every connection first: the vector's growth is not the connections' memory.
    let mut kept = Vec::with_capacity(warmup + conns);
    let mut rust_bytes = Vec::with_capacity(conns);
    let (mut rust_allocs, mut malloc_bytes) = (0, 0);
    for i in 0..warmup + conns {
        let before = snapshot();
        let pair = side.connection(kind);
        let after = snapshot();
        kept.push(pair);
        if i >= warmup {
            rust_bytes.push(after.0 - before.0);
            rust_allocs += after.1 - before.1;
            malloc_bytes += after.2 - before.2;
        }
    }
    drop(kept);
    Figures {
        rust_bytes,
        rust_allocs,
        malloc_bytes,
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let conns = env_or("CONNS", 2_000).max(1);
    let warmup = env_or("WARMUP", 50);
    let dir = std::env::temp_dir().join(format!("wspush-tls-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = tls::BenchCert::new();
    cert.server_lines(&dir);
    let files = TlsFiles {
        cert: dir.join("bench.crt"),
        key: dir.join("bench.key"),
    };
    let server_config = files.load().expect("the bench certificate loads");
    let _ = std::fs::remove_dir_all(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let side = Side {
        addr: listener.local_addr().expect("addr"),
        listener,
        acceptor: TlsAcceptor {
            config: server_config.clone(),
            counters: Rc::new(TlsCounters::default()),
        },
        server_config,
        client_config: tls::client_config(&cert.der),
    };
    println!(
        "== idle connection, server side: {conns} connections per kind after {warmup} warm-up; \
         request {REQUEST} B, answers {ANSWERS:?} B"
    );
    println!(
        "  size_of: Conn {} B, rustls ServerConnection {} B, UnbufferedServerConnection {} B",
        std::mem::size_of::<Conn>(),
        std::mem::size_of::<ServerConnection>(),
        std::mem::size_of::<rustls::server::UnbufferedServerConnection>()
    );
    for kind in [Kind::Plain, Kind::Unbuffered, Kind::Buffered] {
        let f = measure(&side, kind, warmup, conns);
        let mut sorted = f.rust_bytes.clone();
        sorted.sort_unstable();
        let n = conns as f64;
        let mean = sorted.iter().sum::<i64>() as f64 / n;
        println!(
            "  {:<40} Rust heap {mean:.0} B in {:.1} allocations (per connection: min {}, median {}, max {}); \
             malloc in use {:.0} B",
            kind.name(),
            f.rust_allocs as f64 / n,
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
            f.malloc_bytes as f64 / n
        );
        println!(
            "RESULT kind={} conns={conns} rust_bytes={mean:.0} rust_allocs={:.2} rust_bytes_median={} malloc_bytes={:.0}",
            match kind {
                Kind::Plain => "plain",
                Kind::Unbuffered => "tls_unbuffered",
                Kind::Buffered => "tls_buffered",
            },
            f.rust_allocs as f64 / n,
            sorted[sorted.len() / 2],
            f.malloc_bytes as f64 / n
        );
    }
}
