//! The WebSocket door: every client connection of this node, in one table that owns accept,
//! read, queue, flush and the one path by which a connection goes. Sessions report what
//! happened as `WsEvent`s; the master applies them (registry, routing, tasks) and tells the
//! table what to send or close. Generic over the stream, so that the tests drive it without
//! sockets.

pub mod admission;
mod fanout;
mod frames;
pub mod listener;
#[cfg(test)]
pub mod mock;
mod outqueue;
mod session;

pub use frames::FrameLimits;
pub use outqueue::{OutQueue, Outgoing};
pub use session::SessionConfig;

use crate::master::http::Request;
use crate::model::{ConnId, Credentials, GroupName, Source, Uid};
use crate::net::stream::Transport;
use admission::Admission;
use bytes::Bytes;
use serde::Serialize;
use session::{ReadOutcome, Session, Sweep};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

/// Bytes read from a socket per system call, into the buffer every session shares.
const READ_CHUNK: usize = 64 * 1024;

/// What a connection did, for the master to act on.
#[derive(Debug)]
pub enum WsEvent {
    /// The upgrade is done and asks to log in with these credentials.
    Login {
        conn: ConnId,
        login: Credentials,
        device: Option<Box<str>>,
    },
    /// A plain HTTP request on the WebSocket port (the demo page and its helpers).
    Page { conn: ConnId, request: Request },
    /// A chat message from a logged-in client, within its limits: `content` is the range of
    /// `text` that holds the raw JSON of its content.
    Chat {
        conn: ConnId,
        from: Uid,
        to: Uid,
        kind: &'static str,
        text: Bytes,
        content: Range<usize>,
    },
    /// A chat to a group from a logged-in client, as `Chat`.
    GroupChat {
        conn: ConnId,
        from: Uid,
        group: GroupName,
        kind: &'static str,
        text: Bytes,
        content: Range<usize>,
    },
    /// A logged-in connection started closing: it left the registry.
    Offline {
        conn: ConnId,
        uid: Uid,
        source: Source,
    },
    /// A logged-in connection whose queue had been full has caught up.
    Drained { conn: ConnId, uid: Uid },
    /// A slow consumer was cut off: what it never got.
    Undelivered {
        conn: ConnId,
        uid: Uid,
        entries: Vec<Outgoing>,
    },
    /// The connection is gone.
    Closed { conn: ConnId },
}

/// Counters for `/api/stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WsStats {
    pub accepted: u64,
    pub refused_over_cap: u64,
    pub refused_rate_ip: u64,
    /// Logins refused at the door (an access token that does not decode).
    pub logins_refused: u64,
    pub messages_in: u64,
    pub frames_out: u64,
    pub slow_consumers: u64,
    /// Of `frames_out`: messages by their type (a chat type, or a push), and kept messages
    /// handed over again; the rest are control frames (login, acks, errors, pongs).
    pub chats_out: u64,
    pub pushes_out: u64,
    pub kept_out: u64,
    /// Bytes read from, and written to, client sockets.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What a queued entry counts as in `WsStats`.
#[derive(Clone, Copy)]
enum Carried {
    Chat,
    Push,
    Kept,
    Control,
}

impl Carried {
    fn of(entry: &Outgoing) -> Carried {
        match entry {
            Outgoing::Message(m) if m.kind.is_chat() => Carried::Chat,
            Outgoing::Message(_) => Carried::Push,
            Outgoing::Group(m) if m.kind.is_chat() => Carried::Chat,
            Outgoing::Group(_) => Carried::Push,
            Outgoing::Kept { .. } => Carried::Kept,
            Outgoing::Frame(_) => Carried::Control,
        }
    }
}

impl WsStats {
    fn queued(&mut self, carried: Carried, n: u64) {
        self.frames_out += n;
        match carried {
            Carried::Chat => self.chats_out += n,
            Carried::Push => self.pushes_out += n,
            Carried::Kept => self.kept_out += n,
            Carried::Control => {}
        }
    }
}

pub struct Sessions<S> {
    /// Boxed: the table then holds pointers, so the rehash that churn brings moves and wastes
    /// little.
    sessions: HashMap<ConnId, Box<Session<S>>>,
    cfg: SessionConfig,
    scratch: Vec<u8>,
    to_flush: Vec<ConnId>,
    /// The lists being worked through, kept for their room (`to_flush`, `to_read` swap with
    /// them each turn).
    flushing: Vec<ConnId>,
    reading: Vec<ConnId>,
    /// Sessions with input left unread: logged in (nothing is read while a login is checked),
    /// or paused after handing over a chat.
    to_read: Vec<ConnId>,
    events: Vec<WsEvent>,
    stats: WsStats,
    next_conn: u64,
    admission: Admission,
}

impl<S: Transport> Sessions<S> {
    pub fn new(cfg: SessionConfig, admission: Admission) -> Self {
        Sessions {
            sessions: HashMap::new(),
            cfg,
            scratch: Vec::new(),
            to_flush: Vec::new(),
            to_read: Vec::new(),
            flushing: Vec::new(),
            reading: Vec::new(),
            events: Vec::new(),
            stats: WsStats::default(),
            next_conn: 1,
            admission,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &WsStats {
        &self.stats
    }

    pub fn stats_mut(&mut self) -> &mut WsStats {
        &mut self.stats
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The id the next connection gets (ids are never reused).
    pub fn next_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    pub fn admission_mut(&mut self) -> &mut Admission {
        &mut self.admission
    }

    /// Takes a new connection under `conn` (from `next_id`) from a client at `peer`.
    pub fn insert(&mut self, conn: ConnId, stream: S, peer: SocketAddr, now: Instant) {
        self.insert_from(conn, stream, peer, false, now);
    }

    /// As `insert`; `via_proxy`: `peer` is a trusted proxy, and the client it speaks for is
    /// admitted once its request (or PROXY header) names it.
    pub fn insert_from(
        &mut self,
        conn: ConnId,
        stream: S,
        peer: SocketAddr,
        via_proxy: bool,
        now: Instant,
    ) {
        self.stats.accepted += 1;
        let mut session = Session::new(stream, conn, peer, now, &self.cfg);
        session.set_via_proxy(via_proxy);
        self.sessions.insert(conn, Box::new(session));
    }

    /// Everything the sessions reported since the last call, in order.
    pub fn take_events(&mut self) -> Vec<WsEvent> {
        std::mem::take(&mut self.events)
    }

    /// As `take_events`, into `into` (both keep their room: no allocation per turn).
    pub fn drain_events(&mut self, into: &mut Vec<WsEvent>) {
        into.append(&mut self.events);
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn on_readable(&mut self, conn: ConnId, now: Instant) {
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
        }
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let outcome = s.on_readable(
            &mut self.scratch,
            &self.cfg,
            now,
            &mut self.stats,
            &mut self.events,
            &mut self.admission,
        );
        if outcome == ReadOutcome::Paused {
            self.to_read.push(conn);
        }
        self.mark(conn);
    }

    /// Sessions with input left to read (they logged in, or paused after a chat): read now.
    pub fn read_pending(&mut self, now: Instant) {
        let mut conns = std::mem::take(&mut self.reading);
        std::mem::swap(&mut conns, &mut self.to_read);
        for conn in conns.drain(..) {
            self.on_readable(conn, now);
        }
        self.reading = conns;
    }

    pub fn has_pending_reads(&self) -> bool {
        !self.to_read.is_empty()
    }

    pub fn on_writable(&mut self, conn: ConnId) {
        self.mark(conn);
    }

    fn mark(&mut self, conn: ConnId) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            if !s.marked {
                s.marked = true;
                self.to_flush.push(conn);
            }
        }
    }

    /// Queues `entry` for `conn` within its send bound. False when it did not fit (a slow
    /// consumer: it gets `slow_consumer_timeout` to catch up) or the connection is closing.
    pub fn send(&mut self, conn: ConnId, entry: Outgoing, now: Instant) -> bool {
        let carried = Carried::of(&entry);
        self.send_as(conn, entry, carried, now)
    }

    fn send_as(&mut self, conn: ConnId, entry: Outgoing, carried: Carried, now: Instant) -> bool {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return false;
        };
        if !s.send(entry, &self.cfg, now) {
            return false;
        }
        self.stats.queued(carried, 1);
        self.mark(conn);
        true
    }

    /// As `send`, but only to a logged-in connection (`to_fd` pushes).
    pub fn send_if_open(&mut self, conn: ConnId, entry: Outgoing, now: Instant) -> bool {
        let open = self.sessions.get(&conn).is_some_and(|s| s.is_open());
        open && self.send_as(conn, entry, Carried::Push, now)
    }

    /// The login of `conn` was accepted (see `Session::open`). False if the connection is no
    /// longer waiting for it.
    pub fn open(
        &mut self,
        conn: ConnId,
        uid: Uid,
        source: Source,
        welcome_now: bool,
        now: Instant,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return false;
        };
        if !s.open(uid, source, welcome_now, &self.cfg, now) {
            return false;
        }
        // Frames it sent while its login was checked are still unread.
        self.to_read.push(conn);
        self.mark(conn);
        true
    }

    /// Ends the wait for the login frame (cluster mode): `login` goes now, then what was held
    /// meanwhile. False if `conn` was not waiting.
    pub fn welcome(&mut self, conn: ConnId, login: Bytes) -> bool {
        let welcomed = self
            .sessions
            .get_mut(&conn)
            .is_some_and(|s| s.welcome(login));
        if welcomed {
            self.mark(conn);
        }
        welcomed
    }

    pub fn is_logging_in(&self, conn: ConnId) -> bool {
        self.sessions.get(&conn).is_some_and(|s| s.is_logging_in())
    }

    /// The (uid, source) `conn` is logged in as.
    pub fn login(&self, conn: ConnId) -> Option<(Uid, Source)> {
        self.sessions.get(&conn)?.login()
    }

    /// The client's address, and whether it came through a trusted proxy.
    pub fn client(&self, conn: ConnId) -> Option<(SocketAddr, bool)> {
        let s = self.sessions.get(&conn)?;
        Some((s.peer(), s.via_proxy()))
    }

    pub fn device(&self, conn: ConnId) -> Option<&str> {
        self.sessions.get(&conn)?.device()
    }

    /// Closes `conn` with a WebSocket close code; a logged-in one leaves the registry at once.
    pub fn close(&mut self, conn: ConnId, code: u16, reason: &str, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.close(code, reason, now, &mut self.events);
            self.mark(conn);
        }
    }

    /// Answers a plain HTTP request on the WebSocket port; it closes once written.
    pub fn respond(&mut self, conn: ConnId, bytes: &[u8], now: Instant) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.respond(bytes, now);
            self.mark(conn);
        }
    }

    /// Writes what the marked sessions have queued; drops those that are finished or broken.
    pub fn flush(&mut self) {
        let mut conns = std::mem::take(&mut self.flushing);
        std::mem::swap(&mut conns, &mut self.to_flush);
        for conn in conns.drain(..) {
            let Some(s) = self.sessions.get_mut(&conn) else {
                continue;
            };
            s.marked = false;
            let queued = s.queued_bytes();
            let flushed = s.flush(&self.cfg);
            self.stats.bytes_out += queued.saturating_sub(s.queued_bytes()) as u64;
            match flushed {
                Ok(drained) if !s.is_done() => {
                    if let Some(uid) = drained {
                        self.events.push(WsEvent::Drained { conn, uid });
                    }
                }
                _ => self.drop_session(conn),
            }
        }
        self.flushing = conns;
    }

    /// The one path that removes a connection.
    fn drop_session(&mut self, conn: ConnId) {
        if let Some(mut s) = self.sessions.remove(&conn) {
            s.finish();
            // A connection dropped while still logged in (its socket broke) leaves too.
            s.close(
                crate::protocol::close_code::GOING_AWAY,
                "",
                Instant::now(),
                &mut self.events,
            );
            self.events.push(WsEvent::Closed { conn });
        }
    }

    /// Deadlines, idle connections, held upgrades and slow consumers.
    pub fn sweep(&mut self, now: Instant) {
        self.admission.prune(now);
        let mut verdicts = Vec::new();
        for (conn, s) in self.sessions.iter_mut() {
            match s.sweep(now, &self.cfg) {
                Sweep::Nothing => {}
                verdict => verdicts.push((*conn, verdict)),
            }
        }
        for (conn, verdict) in verdicts {
            match verdict {
                Sweep::Nothing => {}
                Sweep::Expired => self.drop_session(conn),
                Sweep::Idle => self.close(
                    conn,
                    crate::protocol::close_code::GOING_AWAY,
                    "idle timeout",
                    now,
                ),
                Sweep::ReleaseUpgrade => self.mark(conn),
                Sweep::LoginTimedOut => self.refuse_late_login(conn, now),
                Sweep::SlowConsumer => self.cut_off(conn, now),
            }
        }
    }

    /// A login whose check did not come back in time gets the store-unavailable answer (503,
    /// 1013) while the client still waits; the check's late answer finds it gone.
    fn refuse_late_login(&mut self, conn: ConnId, now: Instant) {
        self.stats.logins_refused += 1;
        log::warn!("connection {conn}: its login was not checked in time; refused with 503");
        let frame = crate::protocol::frames::login_unavailable();
        self.send(conn, Outgoing::Frame(frame), now);
        let (code, reason) = crate::protocol::frames::LOGIN_UNAVAILABLE_CLOSE;
        self.close(conn, code, reason, now);
    }

    /// Closes a connection that does not read with 1008; what it never got is reported.
    fn cut_off(&mut self, conn: ConnId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        self.stats.slow_consumers += 1;
        log::warn!(
            "connection {conn} ({}) does not read: closed as a slow consumer",
            s.peer()
        );
        let (uid, entries) = s.cut_off(now, &mut self.events);
        if let Some(uid) = uid {
            self.events
                .push(WsEvent::Undelivered { conn, uid, entries });
        }
        self.mark(conn);
    }

    /// On stop: logged-in and logging-in connections get close 1001, the rest are dropped.
    pub fn close_all(&mut self, now: Instant) {
        let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
        for conn in conns {
            let upgraded = self
                .sessions
                .get(&conn)
                .is_some_and(|s| s.is_open() || s.is_logging_in());
            if upgraded {
                self.close(
                    conn,
                    crate::protocol::close_code::GOING_AWAY,
                    "server shutting down",
                    now,
                );
            } else {
                self.drop_session(conn);
            }
        }
    }

    /// Gives back the room of a table that held far more connections than it does now.
    pub fn shrink(&mut self) {
        crate::master::memory::shrink_map(&mut self.sessions);
        if self.flushing.capacity() > 4096 {
            self.flushing = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests;
