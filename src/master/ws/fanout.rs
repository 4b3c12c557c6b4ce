//! Writing one frame to many connections (a broadcast, a group's members): each connection
//! gets it written at once rather than queued for the end of the turn, so the first
//! recipients have it while the last are reached.

use super::{Carried, Outgoing, Session, SessionConfig, Sessions, WsEvent, WsStats};
use crate::model::ConnId;
use crate::net::stream::Transport;
use bytes::Bytes;
use std::time::Instant;

impl<S: Transport> Sessions<S> {
    /// As `send`, but written at once (as a broadcast is) unless the connection already has
    /// frames waiting: the first recipients of a fan-out have it while the last are reached.
    pub fn send_now(&mut self, conn: ConnId, entry: Outgoing, now: Instant) -> bool {
        let carried = Carried::of(&entry);
        let Some(s) = self.sessions.get_mut(&conn) else {
            return false;
        };
        if !s.send(entry, &self.cfg, now) {
            return false;
        }
        self.stats.queued(carried, 1);
        if !write_through(conn, s, &self.cfg, &mut self.stats, &mut self.events) {
            self.mark(conn);
        }
        true
    }

    /// Every logged-in connection of this node, in one pass: each gets the frame written at
    /// once rather than queued for the end of the turn, so the first recipients have it while
    /// the last are reached, and each session is touched once.
    pub fn broadcast(&mut self, frame: &Bytes, now: Instant) -> usize {
        let mut delivered = 0;
        let mut broken = Vec::new();
        for (conn, s) in self.sessions.iter_mut() {
            if !s.is_open() || !s.send(Outgoing::Frame(frame.clone()), &self.cfg, now) {
                continue;
            }
            delivered += 1;
            if !write_through(*conn, s, &self.cfg, &mut self.stats, &mut self.events) {
                broken.push(*conn);
            }
        }
        self.stats.queued(Carried::Push, delivered as u64);
        for conn in broken {
            self.mark(conn);
        }
        delivered
    }
}

/// Writes what was just queued on `s` now, unless a flush is already due (it has more queued:
/// that flush sends this too). False when the connection broke or is done (the end-of-turn
/// pass closes it).
fn write_through<S: Transport>(
    conn: ConnId,
    s: &mut Session<S>,
    cfg: &SessionConfig,
    stats: &mut WsStats,
    events: &mut Vec<WsEvent>,
) -> bool {
    if s.marked {
        return true;
    }
    // What the socket did not take goes when it is writable again.
    let queued = s.queued_bytes();
    let flushed = s.flush(cfg);
    stats.bytes_out += queued.saturating_sub(s.queued_bytes()) as u64;
    match flushed {
        Ok(Some(uid)) => {
            events.push(WsEvent::Drained { conn, uid });
            true
        }
        Ok(None) => !s.is_done(),
        Err(_) => false,
    }
}
