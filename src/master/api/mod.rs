//! The HTTP API door (port 8880): keep-alive connections whose requests, pipelined or not, are
//! handed over one at a time and answered in order. The table owns accept, read, the request
//! deadline, queue, flush and the one path by which a connection goes; what a request means is
//! the master's (`routes`), and it answers through `answer`.

mod assets;
mod demo;
pub mod routes;

pub use crate::master::token::ApiConnId;

use crate::master::http::{self, json_response, Parsed, Request};
use crate::master::token::Token;
use crate::master::ws::{OutQueue, Outgoing};
use crate::net::stream::{Conn, Transport};
use crate::net::tls::TlsAcceptor;
use crate::net::{forwarded, IpRanges};
use bytes::Bytes;
use log::warn;
use mio::net::TcpListener;
use mio::{Interest, Registry};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after the last byte a connection with nothing pending is kept.
const API_IDLE: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 16 * 1024;

/// A request for the master to answer.
pub struct ApiRequest {
    pub conn: ApiConnId,
    /// The client: behind a trusted proxy, the one the proxy named.
    pub peer: SocketAddr,
    /// It came through a trusted proxy.
    pub via_proxy: bool,
    pub request: Request,
}

/// The longest body `POST /api/push` takes for a group membership change (`join_group`,
/// `leave_group` of 10,000 uids and more); every other request stays within
/// `server.max_message_size`.
pub const MAX_MEMBERSHIP_BODY: usize = 2 * 1024 * 1024;

/// `server.max_message_size` for every body, but `POST /api/push`'s from an address that may
/// push (a membership change may be longer; the route refuses a longer message itself).
struct BodyLimits {
    message: usize,
    push: usize,
}

impl http::BodyLimit for BodyLimits {
    fn for_path(&self, path: &str) -> usize {
        if path == "/api/push" {
            self.push
        } else {
            self.message
        }
    }
}

/// Bounds on each request.
pub struct ApiLimits {
    pub max_body: usize,
    pub request_timeout: Duration,
    /// Addresses that may push (`udpsocket_group`): only they may send a membership change
    /// past `max_body`, so that nobody else can make a connection hold `MAX_MEMBERSHIP_BODY`.
    pub push_peers: Vec<std::net::IpAddr>,
}

/// Which peers are proxies whose word on the client's address is believed.
pub struct ProxyTrust {
    pub trusted: IpRanges,
    /// Their connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

struct ApiConn {
    stream: Conn,
    /// The TCP peer; after a PROXY header, the client it named.
    peer: SocketAddr,
    via_proxy: bool,
    buf: Vec<u8>,
    out: OutQueue,
    /// A request is with the master (or a task worker); the ones behind it wait their turn.
    waiting: bool,
    keep_alive: bool,
    peer_done: bool,
    last_active: Instant,
    /// When the first byte of the request being read arrived: a request must be complete
    /// within `http_request_timeout` of it, however slowly its bytes trickle in.
    request_started: Option<Instant>,
    marked: bool,
}

pub struct ApiDoor {
    /// None once stopping (the listener is closed).
    listener: Option<TcpListener>,
    conns: HashMap<ApiConnId, ApiConn>,
    next: u64,
    max_body: usize,
    /// Canonical addresses that may push (see `ApiLimits::push_peers`).
    push_peers: Vec<std::net::IpAddr>,
    request_timeout: Duration,
    trust: ProxyTrust,
    /// Set when the port speaks TLS (`https://`).
    tls: Option<TlsAcceptor>,
    requests: Vec<ApiRequest>,
    to_flush: Vec<ApiConnId>,
    scratch: Vec<u8>,
    stats: ApiStats,
}

/// Counters for the metrics.
#[derive(Debug, Default, Clone)]
pub struct ApiStats {
    pub accepted: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ApiDoor {
    pub fn new(
        listener: TcpListener,
        limits: ApiLimits,
        trust: ProxyTrust,
        tls: Option<TlsAcceptor>,
    ) -> ApiDoor {
        ApiDoor {
            listener: Some(listener),
            conns: HashMap::new(),
            next: 1,
            max_body: limits.max_body,
            push_peers: limits
                .push_peers
                .into_iter()
                .map(crate::config::canonical_ip)
                .collect(),
            request_timeout: limits.request_timeout,
            trust,
            tls,
            requests: Vec::new(),
            to_flush: Vec::new(),
            scratch: Vec::new(),
            stats: ApiStats::default(),
        }
    }

    /// New connections get this configuration (a renewed certificate); open ones keep theirs.
    pub fn set_tls(&mut self, tls: Option<TlsAcceptor>) {
        self.tls = tls;
    }

    pub fn stats(&self) -> &ApiStats {
        &self.stats
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn listener_mut(&mut self) -> Option<&mut TcpListener> {
        self.listener.as_mut()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn accept(&mut self, reg: &Registry, now: Instant) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("accept on the HTTP port failed: {e}");
                    return;
                }
            };
            let conn = ApiConnId(self.next);
            self.next += 1;
            self.stats.accepted += 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if reg
                .register(&mut stream, Token::Api(conn).into(), interest)
                .is_err()
            {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let via_proxy = self.trust.trusted.contains(peer.ip());
            let proxy_header = via_proxy && self.trust.proxy_protocol;
            let stream = match Conn::new(stream, peer, proxy_header, self.tls.as_ref()) {
                Ok(s) => s,
                Err(e) => {
                    warn!("cannot start TLS for a connection: {e}");
                    continue;
                }
            };
            self.conns.insert(
                conn,
                ApiConn {
                    stream,
                    peer,
                    via_proxy,
                    buf: Vec::new(),
                    out: Default::default(),
                    waiting: false,
                    keep_alive: true,
                    peer_done: false,
                    last_active: now,
                    request_started: None,
                    marked: false,
                },
            );
        }
    }

    /// Requests ready for the master, in order.
    pub fn take_requests(&mut self) -> Vec<ApiRequest> {
        std::mem::take(&mut self.requests)
    }

    /// The longest `POST /api/push` body taken from `peer`.
    fn push_body(&self, peer: std::net::IpAddr) -> usize {
        if self.push_peers.contains(&crate::config::canonical_ip(peer)) {
            self.max_body.max(MAX_MEMBERSHIP_BODY)
        } else {
            self.max_body
        }
    }

    /// Reads and hands over the next request, unless one is already with the master.
    pub fn on_event(&mut self, conn: ApiConnId, now: Instant) {
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
        }
        loop {
            let Some(peer) = self.conns.get(&conn).map(|c| c.peer.ip()) else {
                return;
            };
            let max = http::MAX_HEAD + self.push_body(peer);
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let mut drained = c.peer_done;
            // Read no further than one request ahead of what is being answered: the rest
            // stays in the kernel (which pushes back on the client) until this is answered.
            while !drained && c.buf.len() <= max {
                match c.stream.read(&mut self.scratch) {
                    Ok(0) => {
                        c.peer_done = true;
                        drained = true;
                    }
                    Ok(n) => {
                        self.stats.bytes_in += n as u64;
                        c.buf.extend_from_slice(&self.scratch[..n]);
                        c.last_active = now;
                        c.request_started.get_or_insert(now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.peer_done = true;
                        c.keep_alive = false;
                        drained = true;
                    }
                }
            }
            if let Some(client) = c.stream.take_proxied_peer() {
                c.peer = client;
            }
            let before = c.buf.len();
            self.next_request(conn, now);
            self.mark(conn);
            let Some(c) = self.conns.get(&conn) else {
                return;
            };
            // Edge-triggered readiness: if we stopped at the bound, nobody will tell us the
            // socket still holds data, so go on while answering makes room.
            if drained || c.waiting || !c.keep_alive || c.buf.len() >= before {
                return;
            }
        }
    }

    /// Parses the next buffered request and hands it over (or answers a malformed one).
    fn next_request(&mut self, conn: ApiConnId, now: Instant) {
        let Some(peer) = self.conns.get(&conn).map(|c| c.peer.ip()) else {
            return;
        };
        let limits = BodyLimits {
            message: self.max_body,
            push: self.push_body(peer),
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.waiting || !c.keep_alive {
            return;
        }
        match http::parse_request(&c.buf, limits) {
            Parsed::Partial => {}
            Parsed::Invalid(status, why) => {
                c.keep_alive = false;
                c.buf = Vec::new();
                let body = http::error_body(status, why);
                c.out
                    .push(Outgoing::Frame(json_response(status, &body, false).into()));
            }
            Parsed::Complete(request, used) => {
                c.buf.drain(..used);
                // A pipelined request behind this one starts its clock now.
                c.request_started = (!c.buf.is_empty()).then_some(now);
                c.keep_alive = request.keep_alive;
                c.waiting = true;
                let peer = match c.via_proxy {
                    true => client_behind(&self.trust, c.peer, &request),
                    false => c.peer,
                };
                self.requests.push(ApiRequest {
                    conn,
                    peer,
                    via_proxy: c.via_proxy,
                    request,
                });
            }
        }
    }

    /// Answers the request `conn` handed over; the next one (buffered, or still in the socket)
    /// is read and handed over in turn.
    pub fn answer(&mut self, conn: ApiConnId, status: u16, body: &str, now: Instant) {
        self.answer_as(conn, status, "application/json", body.as_bytes(), now);
    }

    /// As `answer`, with a body of another type (the metrics' text).
    pub fn answer_as(
        &mut self,
        conn: ApiConnId,
        status: u16,
        content_type: &str,
        body: &[u8],
        now: Instant,
    ) {
        self.answer_with(conn, status, content_type, &[], body, now);
    }

    /// As `answer_as`, with more header lines (the dashboard's).
    pub fn answer_with(
        &mut self,
        conn: ApiConnId,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.waiting = false;
        let response = http::response_with(status, content_type, headers, body, c.keep_alive);
        c.out.push(Outgoing::Frame(Bytes::from(response)));
        self.on_event(conn, now);
    }

    fn mark(&mut self, conn: ApiConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.marked {
                c.marked = true;
                self.to_flush.push(conn);
            }
        }
    }

    pub fn on_writable(&mut self, conn: ApiConnId) {
        self.mark(conn);
    }

    pub fn flush(&mut self) {
        for conn in std::mem::take(&mut self.to_flush) {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.marked = false;
            let queued = c.out.len();
            let written = c
                .out
                .write_to(&mut c.stream)
                .and_then(|_| match c.stream.flush() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    other => other,
                });
            self.stats.bytes_out += queued.saturating_sub(c.out.len()) as u64;
            let finished = !c.waiting
                && c.out.is_empty()
                && !c.stream.has_pending_output()
                && (!c.keep_alive || (c.peer_done && c.buf.is_empty()));
            if written.is_err() || finished {
                // The one path by which a connection goes: dropping it closes the socket,
                // which also takes it out of the poll.
                if let Some(mut c) = self.conns.remove(&conn) {
                    c.stream.finish();
                }
            }
        }
    }

    /// Requests that take too long get 408; connections idle too long go.
    pub fn sweep(&mut self, now: Instant) {
        let limit = self.request_timeout;
        let slow: Vec<ApiConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.waiting
                    && c.keep_alive
                    && c.request_started
                        .is_some_and(|t| now.duration_since(t) >= limit)
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in slow {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.keep_alive = false;
                c.buf = Vec::new();
                let body = http::error_body(408, "request not complete in time");
                c.out
                    .push(Outgoing::Frame(json_response(408, &body, false).into()));
            }
            self.mark(conn);
        }
        self.conns
            .retain(|_, c| c.waiting || now.duration_since(c.last_active) < API_IDLE);
    }

    /// On stop: the port closes; connections finish what they are answering, then close.
    pub fn stop(&mut self, reg: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = reg.deregister(&mut listener);
        }
        let conns: Vec<ApiConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.keep_alive = false;
            }
            self.mark(conn);
        }
    }

    pub fn shrink(&mut self) {
        crate::master::memory::shrink_map(&mut self.conns);
    }
}

/// The client a trusted proxy names in the request's headers (each request of a kept-alive
/// proxy connection may be another client's), or the peer itself.
fn client_behind(trust: &ProxyTrust, peer: SocketAddr, request: &Request) -> SocketAddr {
    forwarded::client_behind(
        peer.ip(),
        request.header("x-forwarded-for"),
        request.header("x-real-ip"),
        &trust.trusted,
    )
    .map_or(peer, |ip| SocketAddr::new(ip, 0))
}
