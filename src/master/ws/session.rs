//! One client connection on the WebSocket port, as a state machine over any non-blocking
//! `Read + Write` (a TCP socket in the server, a scripted stream in the tests): the HTTP
//! upgrade (or a plain page request), the login, RFC 6455 frames, and the close. It reports
//! what happened as `WsEvent`s; it never looks past its own connection.

use super::frames::{self, Decoder, FrameLimits, Incoming, Violation};
use super::outqueue::{OutQueue, Outgoing};
use super::{WsEvent, WsStats};
use crate::config::TokenLayout;
use crate::master::http::{self, Parsed, Request};
use crate::master::rate::{Rate, RateBucket};
use crate::model::{ConnId, Source, Uid};
use crate::protocol::client::{parse_client_frame, ClientRequest};
use crate::protocol::{close_code, decode_access_token, frames as out};
use bytes::Bytes;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a closing connection may take to flush its close frame and hear the peer's.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A device id longer than this is ignored.
const MAX_DEVICE_ID: usize = 128;

/// What every session obeys, from the configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub frames: FrameLimits,
    /// A text message over this (but within `frames.max_message`) gets an error frame.
    pub max_message: usize,
    pub send_buffer: usize,
    pub frame_rate: Rate,
    pub byte_rate: Rate,
    pub handshake: Duration,
    pub idle: Duration,
    pub slow_consumer: Duration,
    pub layout: TokenLayout,
}

/// A logged-in connection.
struct Open {
    uid: Uid,
    source: Source,
    frames: RateBucket,
    bytes: RateBucket,
    /// Since when its send queue has been too full to take a frame.
    full_since: Option<Instant>,
    /// Cluster mode: the login frame waits until Redis knows where this connection is; what is
    /// sent to it meanwhile waits here.
    held: Option<Box<Held>>,
}

#[derive(Default)]
struct Held {
    entries: Vec<Outgoing>,
    bytes: usize,
}

enum State {
    /// Reading the HTTP request.
    Handshake {
        request: Vec<u8>,
        deadline: Instant,
    },
    /// Upgraded; the login is being checked, and nothing is read meanwhile. The 101 answer
    /// waits in the queue for the login frame, so that both leave in one TCP packet, unless
    /// the check is slow (`hold_upgrade` is cleared by the sweep).
    LoggingIn {
        deadline: Instant,
        hold_upgrade: bool,
    },
    Open(Open),
    /// A plain HTTP request waits for its answer.
    Page {
        deadline: Instant,
    },
    Closing {
        deadline: Instant,
        /// Upgraded connections wait for the peer's close frame (or its end of stream).
        await_peer: bool,
        /// The client broke the protocol: its input is drained, not parsed.
        broken: bool,
    },
}

/// Whether a read went as far as the socket would go.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Done,
    /// Stopped after handing over a chat: read again once it is applied.
    Paused,
}

/// What the periodic sweep found for one session.
#[derive(Debug, PartialEq, Eq)]
pub enum Sweep {
    Nothing,
    /// Its deadline passed (handshake, login, or close): drop it.
    Expired,
    /// Silent too long: close it with 1001.
    Idle,
    /// The held 101 answer may go now.
    ReleaseUpgrade,
    /// Its queue stayed full too long: cut it off.
    SlowConsumer,
}

pub struct Session<S> {
    stream: S,
    conn: ConnId,
    peer: SocketAddr,
    state: State,
    out: OutQueue,
    decoder: Decoder,
    device: Option<Box<str>>,
    last_active: Instant,
    pub(super) marked: bool,
}

impl<S: Read + Write> Session<S> {
    pub fn new(
        stream: S,
        conn: ConnId,
        peer: SocketAddr,
        now: Instant,
        cfg: &SessionConfig,
    ) -> Self {
        Session {
            stream,
            conn,
            peer,
            state: State::Handshake {
                request: Vec::new(),
                deadline: now + cfg.handshake,
            },
            out: OutQueue::default(),
            decoder: Decoder::default(),
            device: None,
            last_active: now,
            marked: false,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The (uid, source) it is logged in as, while it is open.
    pub fn login(&self) -> Option<(Uid, Source)> {
        match &self.state {
            State::Open(o) => Some((o.uid, o.source)),
            _ => None,
        }
    }

    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    pub fn is_logging_in(&self) -> bool {
        matches!(self.state, State::LoggingIn { .. })
    }

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
    ) -> ReadOutcome {
        match self.state {
            State::Handshake { .. } => self.read_handshake(scratch, cfg, now, stats, events),
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
            let State::Handshake { request, .. } = &mut self.state else {
                return;
            };
            request.extend_from_slice(&scratch[..n]);
            if request.len() > http::MAX_HEAD {
                break;
            }
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
                Ok(Some(n)) => self.decoder.extend(&scratch[..n]),
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
    fn leave_registry(&mut self, events: &mut Vec<WsEvent>) {
        if let State::Open(o) = &self.state {
            events.push(WsEvent::Offline {
                conn: self.conn,
                uid: o.uid,
                source: o.source,
            });
        }
    }

    /// Queues a frame within the send bound. False if it did not fit (the peer is not reading)
    /// or the connection is closing.
    pub fn send(&mut self, entry: Outgoing, cfg: &SessionConfig, now: Instant) -> bool {
        match &mut self.state {
            State::Closing { .. } => false,
            State::Open(o) => {
                if let Some(held) = o.held.as_mut() {
                    // Not welcomed yet: the login frame must come first.
                    if held.bytes + entry.len() > cfg.send_buffer {
                        return false;
                    }
                    held.bytes += entry.len();
                    held.entries.push(entry);
                    return true;
                }
                if self.out.len() + entry.len() > cfg.send_buffer {
                    o.full_since.get_or_insert(now);
                    return false;
                }
                self.out.push(entry);
                true
            }
            _ => {
                if self.out.len() + entry.len() > cfg.send_buffer {
                    return false;
                }
                self.out.push(entry);
                true
            }
        }
    }

    fn send_within(&mut self, frame: Bytes, cfg: &SessionConfig, now: Instant) -> bool {
        self.send(Outgoing::Frame(frame), cfg, now)
    }

    /// Queues protocol frames (pongs, close, login answers) whatever the send bound: they are
    /// small and the protocol needs them.
    fn push_control(&mut self, frame: Bytes) {
        self.out.push(Outgoing::Frame(frame));
    }

    /// The login was accepted: the connection is open for `uid` from `source`. `welcome_now`
    /// false holds what is sent to it until `welcome` (cluster mode). False if it is no longer
    /// waiting for its login (it left meanwhile).
    pub fn open(
        &mut self,
        uid: Uid,
        source: Source,
        welcome_now: bool,
        cfg: &SessionConfig,
        now: Instant,
    ) -> bool {
        if !self.is_logging_in() {
            return false;
        }
        self.state = State::Open(Open {
            uid,
            source,
            frames: RateBucket::new(cfg.frame_rate, now),
            bytes: RateBucket::new(cfg.byte_rate, now),
            full_since: None,
            held: (!welcome_now).then(Box::default),
        });
        self.last_active = now;
        true
    }

    /// Ends the wait for the login frame: `login` goes first, then everything held meanwhile
    /// (already within the send bound when it was held). False if nothing was waiting.
    pub fn welcome(&mut self, login: Bytes) -> bool {
        let State::Open(o) = &mut self.state else {
            return false;
        };
        let Some(held) = o.held.take() else {
            return false;
        };
        self.out.push(Outgoing::Frame(login));
        for entry in held.entries {
            self.out.push(entry);
        }
        true
    }

    /// Starts the closing handshake with `code`; what was queued before still goes first.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant, events: &mut Vec<WsEvent>) {
        let upgraded = match &self.state {
            State::Closing { .. } => return,
            State::LoggingIn { .. } | State::Open(_) => true,
            State::Handshake { .. } | State::Page { .. } => false,
        };
        if let State::Open(o) = &mut self.state {
            // What was held for the login frame goes before the close all the same.
            if let Some(held) = o.held.take() {
                held.entries.into_iter().for_each(|e| self.out.push(e));
            }
        }
        self.leave_registry(events);
        if upgraded {
            self.push_control(frames::close(code, reason));
        }
        self.state = State::Closing {
            deadline: now + CLOSE_GRACE,
            await_peer: upgraded,
            broken: false,
        };
    }

    /// The peer does not read: what it has not started to receive is taken back and it is
    /// closed with 1008. Returns its uid (if logged in) and what it never got.
    pub fn cut_off(
        &mut self,
        now: Instant,
        events: &mut Vec<WsEvent>,
    ) -> (Option<Uid>, Vec<Outgoing>) {
        let uid = self.login().map(|(uid, _)| uid);
        let dropped = self.out.take_unstarted();
        self.close(
            close_code::POLICY,
            "send buffer full: slow consumer",
            now,
            events,
        );
        (uid, dropped)
    }

    /// Answers a plain HTTP request with an error and closes once it is written.
    pub fn reply_and_close(&mut self, status: u16, msg: &str, now: Instant) {
        self.respond(
            &http::json_response(status, &http::error_body(status, msg), false),
            now,
        );
    }

    /// Answers a plain HTTP request; the connection closes once it is written.
    pub fn respond(&mut self, bytes: &[u8], now: Instant) {
        self.push_control(Bytes::copy_from_slice(bytes));
        self.state = State::Closing {
            deadline: now + CLOSE_GRACE,
            await_peer: false,
            broken: true,
        };
    }

    /// Writes what is queued. Err when the socket is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        if let State::LoggingIn {
            hold_upgrade: true, ..
        } = self.state
        {
            return Ok(());
        }
        self.out.write_to(&mut self.stream).map(|_| ())
    }

    /// True once nothing more will happen on this connection: it can be dropped.
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            State::Closing {
                await_peer: false,
                ..
            }
        ) && self.out.is_empty()
    }

    /// Deadlines, idleness and slow consumers, checked at the sweep's pace.
    pub fn sweep(&mut self, now: Instant, cfg: &SessionConfig) -> Sweep {
        let queued = self.out.len();
        match &mut self.state {
            State::LoggingIn { hold_upgrade, .. } if *hold_upgrade => {
                // The login check is slow: the client gets its 101 now, the login frame later.
                *hold_upgrade = false;
                Sweep::ReleaseUpgrade
            }
            State::Handshake { deadline, .. }
            | State::LoggingIn { deadline, .. }
            | State::Page { deadline }
            | State::Closing { deadline, .. } => {
                if *deadline <= now {
                    Sweep::Expired
                } else {
                    Sweep::Nothing
                }
            }
            State::Open(o) => {
                if let Some(since) = o.full_since {
                    if queued <= cfg.send_buffer / 2 {
                        o.full_since = None;
                    } else if now.duration_since(since) >= cfg.slow_consumer {
                        return Sweep::SlowConsumer;
                    }
                }
                if now.duration_since(self.last_active) >= cfg.idle {
                    Sweep::Idle
                } else {
                    Sweep::Nothing
                }
            }
        }
    }
}

fn is_upgrade(req: &Request) -> bool {
    req.header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests;
