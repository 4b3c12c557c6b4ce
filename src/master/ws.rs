//! One client connection on the WebSocket port: the HTTP upgrade (or a plain page request), then
//! RFC 6455 frames through tungstenite's `WebSocketContext`. Every byte the session sends goes
//! through its one `OutQueue`, so shared data frames, pongs and the close frame never interleave.

use crate::master::http::{self, Parsed, Request};
use crate::master::outbuf::{OutQueue, SharedFrame};
use crate::master::registry::ConnId;
use crate::protocol::{close_code, Uid};
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

/// How long a closing connection may take to flush its close frame and hear the peer's.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request.
    Handshake,
    /// Upgraded; the login check is with a task worker. Nothing is read meanwhile.
    AwaitingLogin,
    Open {
        uid: Uid,
        source: Box<str>,
    },
    /// A plain HTTP request waits for its answer (a demo login is with a task worker).
    PlainHttp,
    Closing,
}

/// What a read produced, for the master to act on.
#[derive(Debug)]
pub enum WsEvent {
    Upgraded {
        access_token: Option<String>,
        device: Option<String>,
    },
    Page(Request),
    Text(String),
    /// A data frame that is not text.
    Binary,
    /// The connection is finished: drop it once its queue has drained.
    Finished,
}

/// The per-connection limits, from the configuration.
#[derive(Clone, Copy)]
pub struct Limits {
    pub ws: WebSocketConfig,
    pub send_buffer: usize,
    pub rate: f64,
    pub burst: f64,
    pub bytes_rate: f64,
    pub bytes_burst: f64,
}

/// A token bucket: `rate` frames a second, `burst` at once.
pub struct RateBucket {
    tokens: f32,
    last: Instant,
    pub strikes: u32,
}

impl RateBucket {
    pub fn new(burst: f64, now: Instant) -> Self {
        RateBucket {
            tokens: burst as f32,
            last: now,
            strikes: 0,
        }
    }

    /// True once the bucket has refilled to `burst`: it no longer remembers anything.
    pub fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        f64::from(self.tokens) + now.duration_since(self.last).as_secs_f64() * rate >= burst
    }

    pub fn allow(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.allow_n(now, rate, burst, 1.0)
    }

    /// Takes `n` tokens (bytes, for a byte rate) if the bucket holds them.
    pub fn allow_n(&mut self, now: Instant, rate: f64, burst: f64, n: f64) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (f64::from(self.tokens) + elapsed * rate).min(burst) as f32;
        if f64::from(self.tokens) >= n {
            self.tokens -= n as f32;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }
}

/// What waits for a connection's login frame: its stored messages, and frames sent meanwhile.
pub struct Welcome {
    pub pending: Vec<crate::protocol::MessageRecord>,
    pub held: Vec<SharedFrame>,
    held_bytes: usize,
}

impl Welcome {
    pub fn new(pending: Vec<crate::protocol::MessageRecord>) -> Self {
        Welcome {
            pending,
            held: Vec::new(),
            held_bytes: 0,
        }
    }
}

/// Lets tungstenite read from the socket while everything it writes joins our queue in order.
struct QueuedIo<'a> {
    stream: &'a mut TcpStream,
    out: &'a mut OutQueue,
}

impl Read for QueuedIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for QueuedIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push(Rc::from(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct Session {
    pub id: ConnId,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub phase: Phase,
    ctx: Option<WebSocketContext>,
    request: Vec<u8>,
    pub out: OutQueue,
    pub last_active: Instant,
    /// Handshake deadline, then closing deadline.
    pub deadline: Option<Instant>,
    pub rate: RateBucket,
    /// Message bytes per second, beside frames per second.
    pub bytes: RateBucket,
    /// The peer has finished (closed its side or answered our close).
    peer_done: bool,
    pub device: Option<Box<str>>,
    /// What the registry holds for this connection, until it is unregistered.
    pub login: Option<(Uid, Box<str>)>,
    /// Since when its send queue has been too full to take a frame (a slow consumer).
    pub full_since: Option<Instant>,
    /// The client broke the protocol (size, UTF-8, framing): nothing more is parsed.
    broken: bool,
    /// Cluster mode: logged in, but the login frame waits until Redis knows where this
    /// connection is (so that nothing sent to it from then on can miss it).
    pub welcome: Option<Box<Welcome>>,
    pub queued_for_flush: bool,
    /// The 101 answer waits for the login frame, so that both leave in one TCP packet (one
    /// send less per login on both sides). The sweep lets it go if the check is slow.
    pub upgrade_held: bool,
}

impl Session {
    pub fn new(
        id: ConnId,
        stream: TcpStream,
        peer: SocketAddr,
        now: Instant,
        handshake: Duration,
        burst: f64,
        bytes_burst: f64,
    ) -> Self {
        Session {
            id,
            stream,
            peer,
            phase: Phase::Handshake,
            ctx: None,
            request: Vec::new(),
            out: OutQueue::default(),
            last_active: now,
            deadline: Some(now + handshake),
            rate: RateBucket::new(burst, now),
            bytes: RateBucket::new(bytes_burst, now),
            peer_done: false,
            device: None,
            login: None,
            full_since: None,
            broken: false,
            welcome: None,
            queued_for_flush: false,
            upgrade_held: false,
        }
    }

    pub fn uid(&self) -> Option<(Uid, &str)> {
        match &self.phase {
            Phase::Open { uid, source } => Some((*uid, source)),
            _ => None,
        }
    }

    /// Reads what the socket holds and reports it; on a protocol violation it starts the close
    /// itself (with the RFC's code) and reports nothing more.
    pub fn on_readable(&mut self, limits: &Limits, now: Instant, events: &mut Vec<WsEvent>) {
        match self.phase {
            Phase::Handshake => self.read_handshake(limits, events),
            Phase::AwaitingLogin => {}
            // A client that broke the protocol gets no more parsing: its input is drained.
            Phase::Open { .. } | Phase::Closing if self.broken => self.discard_input(events),
            Phase::Open { .. } | Phase::Closing => self.read_frames(now, events),
            Phase::PlainHttp => self.discard_input(events),
        }
    }

    fn read_handshake(&mut self, limits: &Limits, events: &mut Vec<WsEvent>) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.peer_done = true;
                    events.push(WsEvent::Finished);
                    return;
                }
                Ok(n) => self.request.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    events.push(WsEvent::Finished);
                    return;
                }
            }
            if self.request.len() > http::MAX_HEAD {
                break;
            }
        }
        match http::parse_request(&self.request, 0) {
            Parsed::Partial => {}
            Parsed::Invalid(status, why) => self.reply_and_close(status, why),
            Parsed::Complete(req, used) => {
                let rest = self.request.split_off(used);
                self.request = Vec::new();
                if is_upgrade(&req) {
                    self.upgrade(&req, rest, limits, events);
                } else {
                    self.phase = Phase::PlainHttp;
                    events.push(WsEvent::Page(req));
                }
            }
        }
    }

    fn upgrade(
        &mut self,
        req: &Request,
        rest: Vec<u8>,
        limits: &Limits,
        events: &mut Vec<WsEvent>,
    ) {
        let key = req.header("sec-websocket-key").unwrap_or_default();
        if req.method != "GET"
            || req.header("sec-websocket-version") != Some("13")
            || key.is_empty()
        {
            self.reply_and_close(
                400,
                "a WebSocket upgrade needs GET, Sec-WebSocket-Version: 13 and a key",
            );
            return;
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        self.out.push(Rc::from(response.as_bytes()));
        self.ctx = Some(WebSocketContext::from_partially_read(
            rest,
            Role::Server,
            Some(limits.ws),
        ));
        self.phase = Phase::AwaitingLogin;
        self.upgrade_held = true;
        events.push(WsEvent::Upgraded {
            access_token: req.param("access_token"),
            device: req
                .param("token")
                .filter(|d| !d.is_empty() && d.len() <= 128),
        });
    }

    fn read_frames(&mut self, now: Instant, events: &mut Vec<WsEvent>) {
        loop {
            let Some(ctx) = self.ctx.as_mut() else { return };
            let mut io = QueuedIo {
                stream: &mut self.stream,
                out: &mut self.out,
            };
            match ctx.read(&mut io) {
                Ok(msg) => {
                    self.last_active = now;
                    match msg {
                        Message::Text(t) if matches!(self.phase, Phase::Open { .. }) => {
                            events.push(WsEvent::Text(t.as_str().to_owned()))
                        }
                        Message::Binary(_) if matches!(self.phase, Phase::Open { .. }) => {
                            events.push(WsEvent::Binary)
                        }
                        Message::Close(_) => {
                            self.peer_done = true;
                            self.begin_closing(now);
                        }
                        // Pings are answered by tungstenite; pongs only count as activity.
                        _ => {}
                    }
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.peer_done = true;
                    events.push(WsEvent::Finished);
                    return;
                }
                // After any of these the frame codec is in no state to read on (tungstenite
                // asserts so): the session stops parsing and only drains its input.
                Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                    self.broken = true;
                    return self.close(close_code::TOO_BIG, "message too big", now);
                }
                Err(WsError::Capacity(_)) => {
                    self.broken = true;
                    return self.close(close_code::TOO_BIG, "frame too big", now);
                }
                Err(WsError::Utf8(_)) => {
                    self.broken = true;
                    return self.close(close_code::INVALID_DATA, "invalid UTF-8", now);
                }
                Err(WsError::Protocol(e)) => {
                    self.broken = true;
                    if matches!(self.phase, Phase::Closing) {
                        self.peer_done = true;
                        events.push(WsEvent::Finished);
                        return;
                    }
                    return self.close(close_code::PROTOCOL_ERROR, &e.to_string(), now);
                }
                Err(_) => {
                    self.peer_done = true;
                    events.push(WsEvent::Finished);
                    return;
                }
            }
        }
    }

    fn discard_input(&mut self, events: &mut Vec<WsEvent>) {
        let mut sink = [0u8; 1024];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => {
                    self.peer_done = true;
                    events.push(WsEvent::Finished);
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    events.push(WsEvent::Finished);
                    return;
                }
            }
        }
    }

    /// Queues a frame. False if the queue is over its bound: the peer is not reading.
    pub fn send(&mut self, frame: &SharedFrame, limits: &Limits) -> bool {
        if matches!(self.phase, Phase::Closing) {
            return false;
        }
        if let Some(w) = self.welcome.as_mut() {
            // Not welcomed yet: the login frame must come first.
            if w.held_bytes + frame.len() > limits.send_buffer {
                return false;
            }
            w.held_bytes += frame.len();
            w.held.push(Rc::clone(frame));
            return true;
        }
        if self.out.len() + frame.len() > limits.send_buffer {
            return false;
        }
        self.out.push(Rc::clone(frame));
        true
    }

    /// Starts the closing handshake with `code`; what was queued before still goes first.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        if let Some(ctx) = self.ctx.as_mut() {
            let frame = CloseFrame {
                code: code.into(),
                reason: truncate(reason, 120).to_owned().into(),
            };
            let mut io = QueuedIo {
                stream: &mut self.stream,
                out: &mut self.out,
            };
            let _ = ctx.close(&mut io, Some(frame));
        }
        self.begin_closing(now);
    }

    /// The peer does not read: what it has not taken is dropped and it is closed.
    /// Returns the frames it never got.
    pub fn close_slow_consumer(&mut self, now: Instant) -> Vec<SharedFrame> {
        let dropped = self.out.clear_unstarted();
        self.close(close_code::POLICY, "send buffer full: slow consumer", now);
        dropped
    }

    /// Answers a plain HTTP request with an error and closes after it is written.
    pub fn reply_and_close(&mut self, status: u16, msg: &str) {
        self.respond(&http::json_response(
            status,
            &http::error_body(status, msg),
            false,
        ));
    }

    /// Answers a plain HTTP request; the connection closes once it is written.
    pub fn respond(&mut self, bytes: &[u8]) {
        self.out.push(Rc::from(bytes));
        self.begin_closing(Instant::now());
    }

    fn begin_closing(&mut self, now: Instant) {
        self.phase = Phase::Closing;
        self.deadline = Some(now + CLOSE_GRACE);
    }

    /// Writes what is queued. Err when the socket is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.upgrade_held && matches!(self.phase, Phase::AwaitingLogin) {
            return Ok(());
        }
        self.out.write_to(&mut self.stream).map(|_| ())
    }

    /// True once nothing more will happen on this connection: it can be dropped.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Closing)
            && self.out.is_empty()
            && (self.peer_done || self.ctx.is_none())
    }
}

fn is_upgrade(req: &Request) -> bool {
    req.header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
