//! The reading side of a session: the HTTP request and upgrade, then frames and what each
//! message means (rate limits, chat parsing, pings, the peer's close).

use super::{ReadOutcome, Session, SessionConfig, State};
use crate::master::http::{self, Parsed, Request};
use crate::master::security::security;
use crate::master::ws::admission::Admission;
use crate::master::ws::frames::{self, Decoder, Incoming, Violation};
use crate::master::ws::outqueue::Outgoing;
use crate::master::ws::{WsEvent, WsStats};
use crate::net::stream::Transport;
use crate::protocol::client::{parse_client_frame, ClientRequest};
use crate::protocol::{close_code, decode_access_token, frames as out};
use bytes::Bytes;
use std::io;
use std::time::Instant;

/// A device id longer than this is ignored.
const MAX_DEVICE_ID: usize = 128;

impl<S: Transport> Session<S> {
    /// Reads what the socket holds and reports it. `scratch` is the read buffer every session
    /// shares: a session keeps only the bytes of an unfinished frame.
    ///
    /// A chat is handed over one at a time: the session stops after it and returns
    /// `ReadOutcome::Paused`, to be read again once the chat is applied, so that its ack is queued
    /// before anything the session answers to the frames behind it (a 429, a close).
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        cfg: &SessionConfig,
        now: Instant,
        stats: &mut WsStats,
        events: &mut Vec<WsEvent>,
        admission: &mut Admission,
    ) -> ReadOutcome {
        match self.state {
            State::Handshake { .. } => {
                self.read_handshake(scratch, cfg, now, stats, events, admission)
            }
            State::LoggingIn { .. } => {}
            State::Open(_) | State::Closing { broken: false, .. } => {
                return self.read_frames(scratch, cfg, now, stats, events)
            }
            State::Page { .. } | State::Closing { broken: true, .. } => {
                self.discard_input(scratch, now, events)
            }
        }
        ReadOutcome::Done
    }

    /// Reads until the socket would block; Err(()) when the peer is gone (end of stream or a
    /// broken socket): the session has been told.
    fn read_some(&mut self, scratch: &mut [u8]) -> Result<Option<usize>, ()> {
        loop {
            return match self.stream.read(scratch) {
                Ok(0) => Err(()),
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => Err(()),
            };
        }
    }

    fn read_handshake(
        &mut self,
        scratch: &mut [u8],
        cfg: &SessionConfig,
        now: Instant,
        stats: &mut WsStats,
        events: &mut Vec<WsEvent>,
        admission: &mut Admission,
    ) {
        let mut gone = false;
        loop {
            let n = match self.read_some(scratch) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(()) => {
                    // What came before the end of the stream is still a request to answer.
                    gone = true;
                    break;
                }
            };
            stats.bytes_in += n as u64;
            let State::Handshake { request, .. } = &mut self.state else {
                return;
            };
            request.extend_from_slice(&scratch[..n]);
            if request.len() > http::MAX_HEAD {
                break;
            }
        }
        if let Some(client) = self.stream.take_proxied_peer() {
            self.peer = client;
        }
        let State::Handshake { request, .. } = &mut self.state else {
            return;
        };
        match http::parse_request(request, 0) {
            Parsed::Partial if gone => self.peer_gone(now, events),
            Parsed::Partial => {}
            Parsed::Invalid(status, why) => self.reply_and_close(status, why, now),
            Parsed::Complete(req, used) => {
                let rest = request.split_off(used);
                if self.via_proxy && !self.admit_client(&req, now, stats, admission) {
                    return;
                }
                if is_upgrade(&req) {
                    self.upgrade(&req, &rest, cfg, now, stats, events);
                } else {
                    self.state = State::Page {
                        deadline: now + cfg.handshake,
                    };
                    events.push(WsEvent::Page {
                        conn: self.conn,
                        request: req,
                    });
                }
            }
        }
    }

    /// Behind a trusted proxy: the client the request names (unless a PROXY header did) is
    /// the one judged by the per-address rate. False when it was refused.
    fn admit_client(
        &mut self,
        req: &Request,
        now: Instant,
        stats: &mut WsStats,
        admission: &mut Admission,
    ) -> bool {
        if let Some(ip) = admission.client_behind(self.peer.ip(), req) {
            self.peer = std::net::SocketAddr::new(ip, 0);
        }
        if admission.admit(self.peer.ip(), now) {
            return true;
        }
        stats.refused_rate_ip += 1;
        security!(
            "{}: too many new connections from this address (through a proxy): refused",
            self.peer.ip()
        );
        self.reply_and_close(429, "too many new connections from this address", now);
        false
    }

    fn upgrade(
        &mut self,
        req: &Request,
        rest: &[u8],
        cfg: &SessionConfig,
        now: Instant,
        stats: &mut WsStats,
        events: &mut Vec<WsEvent>,
    ) {
        let key = req.header("sec-websocket-key").unwrap_or_default();
        if req.method != "GET"
            || req.header("sec-websocket-version") != Some("13")
            || key.is_empty()
        {
            return self.reply_and_close(
                400,
                "a WebSocket upgrade needs GET, Sec-WebSocket-Version: 13 and a key",
                now,
            );
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        self.out.push(Outgoing::Frame(Bytes::from(response)));
        // Frames the client sent right behind its request wait for the login.
        self.decoder.extend(rest);
        let deadline = match self.state {
            State::Handshake { deadline, .. } => deadline,
            _ => now + cfg.handshake,
        };
        self.state = State::LoggingIn {
            deadline,
            hold_upgrade: true,
        };
        self.device = req
            .param("token")
            .filter(|d| !d.is_empty() && d.len() <= MAX_DEVICE_ID)
            .map(Into::into);
        let token = req.param("access_token");
        match token.as_deref().map(|t| decode_access_token(t, cfg.layout)) {
            Some(Ok(login)) => events.push(WsEvent::Login {
                conn: self.conn,
                login,
                device: self.device.clone(),
            }),
            _ => {
                stats.logins_refused += 1;
                security!(
                    "{}: login refused: no access_token, or one that does not decode",
                    self.peer.ip()
                );
                self.push_control(out::login_refused(401, "unauthorized"));
                self.close(close_code::UNAUTHORIZED, "unauthorized", now, events);
            }
        }
    }

    fn read_frames(
        &mut self,
        scratch: &mut [u8],
        cfg: &SessionConfig,
        now: Instant,
        stats: &mut WsStats,
        events: &mut Vec<WsEvent>,
    ) -> ReadOutcome {
        loop {
            // What is buffered first: frames sent behind the upgrade request, or read before.
            loop {
                match self.decoder.next(cfg.frames) {
                    Ok(None) => break,
                    Ok(Some(message)) => {
                        self.last_active = now;
                        let handed = events.len();
                        self.on_message(message, cfg, now, stats, events);
                        if matches!(events.get(handed), Some(WsEvent::Chat { .. })) {
                            return ReadOutcome::Paused;
                        }
                    }
                    Err(v) => {
                        self.violation(v, now, events);
                        return ReadOutcome::Done;
                    }
                }
            }
            match self.read_some(scratch) {
                Ok(Some(n)) => {
                    stats.bytes_in += n as u64;
                    self.decoder.extend(&scratch[..n]);
                }
                Ok(None) => break,
                Err(()) => {
                    self.decoder.release_if_idle();
                    self.peer_gone(now, events);
                    return ReadOutcome::Done;
                }
            }
        }
        self.decoder.release_if_idle();
        ReadOutcome::Done
    }

    fn on_message(
        &mut self,
        message: Incoming,
        cfg: &SessionConfig,
        now: Instant,
        stats: &mut WsStats,
        events: &mut Vec<WsEvent>,
    ) {
        let open = matches!(self.state, State::Open(_));
        match message {
            Incoming::Text(text) if open => self.on_text(text, cfg, now, stats, events),
            Incoming::Binary if open => {
                self.send_within(out::error(400, "binary frames are not supported"), cfg, now);
            }
            Incoming::Ping(payload) if open => self.on_ping(&payload, cfg, now),
            Incoming::Close(code) => {
                let reply = code.unwrap_or(1000);
                self.close(reply, "", now, events);
                if let State::Closing { await_peer, .. } = &mut self.state {
                    *await_peer = false;
                }
            }
            // Pongs count as activity only; data read while closing is dropped.
            _ => {}
        }
    }

    /// A ping's pong obeys the send bound like any frame: a client that pings without reading
    /// cannot grow its queue, and is cut off as a slow consumer.
    fn on_ping(&mut self, payload: &[u8], cfg: &SessionConfig, now: Instant) {
        self.send(Outgoing::Frame(frames::pong(payload)), cfg, now);
    }

    fn on_text(
        &mut self,
        text: Bytes,
        cfg: &SessionConfig,
        now: Instant,
        stats: &mut WsStats,
        events: &mut Vec<WsEvent>,
    ) {
        let State::Open(o) = &mut self.state else {
            return;
        };
        let within = o.frames.allow(now, cfg.frame_rate)
            && o.bytes.allow_n(now, cfg.byte_rate, text.len() as f64);
        if !within {
            // A short overrun gets a warning; a client that keeps going is cut off.
            if f64::from(o.frames.strikes.max(o.bytes.strikes)) > cfg.frame_rate.burst {
                security!(
                    "{}: uid {} closed (1008): it kept sending over its rate limit",
                    self.peer.ip(),
                    o.uid
                );
                return self.close(close_code::POLICY, "rate limit exceeded", now, events);
            }
            self.send_within(out::error(429, "rate limit exceeded"), cfg, now);
            return;
        }
        let from = o.uid;
        stats.messages_in += 1;
        if text.len() > cfg.max_message {
            let why = format!("message too large (at most {} bytes)", cfg.max_message);
            self.send_within(out::error(400, &why), cfg, now);
            return;
        }
        // Checked UTF-8 when the frame was read.
        let Ok(s) = std::str::from_utf8(&text) else {
            return;
        };
        match parse_client_frame(s) {
            Ok(ClientRequest::Ping) => {
                self.send_within(out::pong(), cfg, now);
            }
            Err(bad) => {
                self.send_within(out::error(400, &bad.0), cfg, now);
            }
            Ok(ClientRequest::Chat { to, kind, content }) => {
                // `content` was borrowed from `text`: its place is its address minus text's.
                let start = content.get().as_ptr() as usize - s.as_ptr() as usize;
                let content = start..start + content.get().len();
                events.push(WsEvent::Chat {
                    conn: self.conn,
                    from,
                    to,
                    kind,
                    text,
                    content,
                });
            }
            Ok(ClientRequest::GroupChat {
                group,
                kind,
                content,
            }) => {
                let start = content.get().as_ptr() as usize - s.as_ptr() as usize;
                let content = start..start + content.get().len();
                events.push(WsEvent::GroupChat {
                    conn: self.conn,
                    from,
                    group,
                    kind,
                    text,
                    content,
                });
            }
        }
    }

    fn violation(&mut self, v: Violation, now: Instant, events: &mut Vec<WsEvent>) {
        self.close(v.close_code(), v.reason(), now, events);
        if let State::Closing { broken, .. } = &mut self.state {
            *broken = true;
        }
        self.decoder = Decoder::default();
    }

    fn discard_input(&mut self, scratch: &mut [u8], now: Instant, events: &mut Vec<WsEvent>) {
        loop {
            match self.read_some(scratch) {
                Ok(Some(_)) => {}
                Ok(None) => return,
                // A page request whose client half-closed still gets its answer (or expires).
                Err(()) if matches!(self.state, State::Page { .. }) => return,
                Err(()) => return self.peer_gone(now, events),
            }
        }
    }

    /// The peer closed its side or the socket broke: nothing more will be read or answered.
    fn peer_gone(&mut self, now: Instant, events: &mut Vec<WsEvent>) {
        self.leave_registry(events);
        self.state = State::Closing {
            deadline: now,
            await_peer: false,
            broken: true,
        };
    }

    /// A logged-in connection that starts closing receives nothing more: it leaves the registry.
    pub(super) fn leave_registry(&mut self, events: &mut Vec<WsEvent>) {
        if let State::Open(o) = &self.state {
            events.push(WsEvent::Offline {
                conn: self.conn,
                uid: o.uid,
                source: o.source,
            });
        }
    }
}

fn is_upgrade(req: &Request) -> bool {
    req.header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}
