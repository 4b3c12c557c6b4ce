//! Accepting on the WebSocket port: the connection cap and the per-address rate of new
//! connections are enforced here, before a session exists.

use super::Sessions;
use crate::master::http;
use crate::master::ip_limit::IpLimiter;
use crate::master::token::Token;
use log::warn;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use std::io::{self, Write};
use std::time::Instant;

pub struct WsListener {
    listener: TcpListener,
    max_connections: usize,
    /// New connections per source address.
    per_address: IpLimiter,
}

impl WsListener {
    pub fn new(listener: TcpListener, max_connections: usize, per_address: IpLimiter) -> Self {
        WsListener {
            listener,
            max_connections,
            per_address,
        }
    }

    pub fn listener_mut(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    /// Accepts until the backlog is empty; each connection joins `sessions`.
    pub fn accept(&mut self, sessions: &mut Sessions<TcpStream>, reg: &Registry, now: Instant) {
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
            if !self.per_address.allow(peer.ip(), now) {
                sessions.stats_mut().refused_rate_ip += 1;
                let body = http::error_body(429, "too many new connections from this address");
                let _ = stream.write(&http::json_response(429, &body, false));
                continue;
            }
            let _ = stream.set_nodelay(true);
            let conn = sessions.next_id();
            let token = Token::Ws(conn).into();
            if let Err(e) =
                reg.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                warn!("cannot register a connection: {e}");
                continue;
            }
            sessions.insert(conn, stream, peer, now);
        }
    }

    /// Forgets addresses that stopped connecting.
    pub fn prune(&mut self, now: Instant) {
        self.per_address.prune(now);
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
}
