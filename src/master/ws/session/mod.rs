//! One client connection on the WebSocket port, as a state machine over any non-blocking
//! `Read + Write` (a TCP socket in the server, a scripted stream in the tests): the HTTP
//! upgrade (or a plain page request), the login, RFC 6455 frames, and the close. It reports
//! what happened as `WsEvent`s; it never looks past its own connection.

use super::frames::{self, Decoder, FrameLimits};
use super::outqueue::{OutQueue, Outgoing};
use super::WsEvent;
use crate::config::TokenLayout;
use crate::master::http;
use crate::master::rate::{Rate, RateBucket};
use crate::model::{ConnId, Source, Uid};
use crate::net::stream::Transport;
use crate::protocol::close_code;
use bytes::Bytes;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a closing connection may take to flush its close frame and hear the peer's.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A login not answered this long before the handshake deadline is refused (503, 1013): the
/// sweep runs every 250 ms, so the refusal is on the wire before the deadline.
pub const LOGIN_ANSWER_MARGIN: Duration = Duration::from_millis(500);

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
    /// the check is slow (`hold_upgrade` is cleared by the sweep). `deadline` is the
    /// handshake's: a check not answered by `LOGIN_ANSWER_MARGIN` before it is refused.
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
    /// Its login was not answered in time: refuse it (503, 1013) before the handshake deadline.
    LoginTimedOut,
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
    /// `peer` is a trusted proxy until the client it speaks for is known.
    via_proxy: bool,
}

impl<S: Transport> Session<S> {
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
            via_proxy: false,
        }
    }

    pub fn set_via_proxy(&mut self, via_proxy: bool) {
        self.via_proxy = via_proxy;
    }

    /// It came through a trusted proxy.
    pub fn via_proxy(&self) -> bool {
        self.via_proxy
    }

    /// The client's address (behind a trusted proxy, the one it named).
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
    /// Writes what is queued. Err when the socket is dead. Ok(Some(uid)) when a logged-in
    /// connection whose queue had been full has caught up (its queue is under half the
    /// bound again): what was kept for it meanwhile can come now.
    pub fn flush(&mut self, cfg: &SessionConfig) -> io::Result<Option<Uid>> {
        if let State::LoggingIn {
            hold_upgrade: true, ..
        } = self.state
        {
            // The stream may still owe its own handshake (TLS) all the same.
            return self.flush_stream().map(|()| None);
        }
        self.out.write_to(&mut self.stream)?;
        self.flush_stream()?;
        if let State::Open(o) = &mut self.state {
            if o.full_since.is_some() && self.out.len() <= cfg.send_buffer / 2 {
                o.full_since = None;
                return Ok(Some(o.uid));
            }
        }
        Ok(None)
    }

    /// What the stream's own layer (TLS) holds goes out; the socket being full is no error.
    fn flush_stream(&mut self) -> io::Result<()> {
        match self.stream.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
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
            && !self.stream.has_pending_output()
    }

    /// The connection is being dropped: the stream says goodbye at its own layer.
    pub fn finish(&mut self) {
        self.stream.finish();
    }

    /// Deadlines, idleness and slow consumers, checked at the sweep's pace.
    pub fn sweep(&mut self, now: Instant, cfg: &SessionConfig) -> Sweep {
        let queued = self.out.len();
        match &mut self.state {
            State::LoggingIn { deadline, .. } if *deadline <= now + LOGIN_ANSWER_MARGIN => {
                Sweep::LoginTimedOut
            }
            State::LoggingIn { hold_upgrade, .. } if *hold_upgrade => {
                // The login check is slow: the client gets its 101 now, the login frame later.
                *hold_upgrade = false;
                Sweep::ReleaseUpgrade
            }
            State::LoggingIn { .. } => Sweep::Nothing,
            State::Handshake { deadline, .. }
            | State::Page { deadline }
            | State::Closing { deadline, .. } => {
                if *deadline <= now {
                    Sweep::Expired
                } else {
                    Sweep::Nothing
                }
            }
            State::Open(o) => {
                // Caught up since is reported (and cleared) by `flush`.
                let cut = o.full_since.is_some_and(|since| {
                    queued > cfg.send_buffer / 2 && now.duration_since(since) >= cfg.slow_consumer
                });
                if cut {
                    return Sweep::SlowConsumer;
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

#[cfg(test)]
mod login_deadline_tests;
mod read;
#[cfg(test)]
mod tests;
