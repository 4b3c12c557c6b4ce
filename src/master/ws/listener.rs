//! Accepting on the WebSocket port: the connection cap and the per-address rate of new
//! connections are enforced here, before a session exists (for a client behind a trusted
//! proxy, the rate waits until the session knows who it is). Each connection's stream gets
//! its layers here: a PROXY header to read, TLS.

use super::admission::Arrival;
use super::Sessions;
use crate::master::http;
use crate::master::security::security;
use crate::master::token::Token;
use crate::net::stream::Conn;
use crate::net::tls::TlsAcceptor;
use log::warn;
use mio::net::TcpListener;
use mio::{Interest, Registry};
use std::io::{self, Write};
use std::time::Instant;

pub struct WsListener {
    listener: TcpListener,
    max_connections: usize,
    /// Set when the port speaks TLS (`wss://`).
    tls: Option<TlsAcceptor>,
}

impl WsListener {
    pub fn new(listener: TcpListener, max_connections: usize, tls: Option<TlsAcceptor>) -> Self {
        WsListener {
            listener,
            max_connections,
            tls,
        }
    }

    pub fn listener_mut(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    /// New connections get this configuration (a renewed certificate); open ones keep theirs.
    pub fn set_tls(&mut self, tls: Option<TlsAcceptor>) {
        self.tls = tls;
    }

    /// Accepts until the backlog is empty; each connection joins `sessions`.
    pub fn accept(&mut self, sessions: &mut Sessions<Conn>, reg: &Registry, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; try next turn.
                    warn!("accept on the WebSocket port failed: {e}");
                    return;
                }
            };
            if sessions.len() >= self.max_connections {
                sessions.stats_mut().refused_over_cap += 1;
                let body = http::error_body(503, "server full");
                let _ = stream.write(&http::json_response(503, &body, false));
                continue;
            }
            let via_proxy = match sessions.admission_mut().arrive(peer.ip(), now) {
                Arrival::Refused => {
                    sessions.stats_mut().refused_rate_ip += 1;
                    security!(
                        "{}: too many new connections from this address: refused",
                        peer.ip()
                    );
                    // A TLS client could not read a plain answer: it is only closed.
                    if self.tls.is_none() {
                        let body =
                            http::error_body(429, "too many new connections from this address");
                        let _ = stream.write(&http::json_response(429, &body, false));
                    }
                    continue;
                }
                Arrival::Direct => None,
                Arrival::ViaProxy { header } => Some(header),
            };
            let _ = stream.set_nodelay(true);
            let conn = sessions.next_id();
            let token = Token::Ws(conn).into();
            if let Err(e) =
                reg.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                warn!("cannot register a connection: {e}");
                continue;
            }
            let proxy_header = via_proxy == Some(true);
            match Conn::new(stream, peer, proxy_header, self.tls.as_ref()) {
                Ok(c) => sessions.insert_from(conn, c, peer, via_proxy.is_some(), now),
                Err(e) => warn!("cannot start TLS for a connection: {e}"),
            }
        }
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
}
