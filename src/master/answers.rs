//! What the master does with a task worker's answer: a login checked (register, welcome, hand
//! over stored messages), stored messages fetched, a write that failed (to the retry queue).

use super::outbuf::text_frame;
use super::pool::{Completion, Origin};
use super::registry::ConnId;
use super::ws::Phase;
use super::Master;
use crate::ipc::{Reply, Task, PENDING_PER_LOGIN};
use crate::protocol::{self, close_code, MessageRecord, Uid};
use log::warn;
use std::time::Instant;

/// How long to wait before asking a message store that was down again.
const FETCH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl Master {
    pub(super) fn apply_completions(&mut self, now: Instant) {
        for Completion {
            origin,
            reply,
            task,
            key,
        } in self.pool.take_completions()
        {
            match origin {
                Origin::Login { conn, uid, source } => {
                    self.on_login_answer(conn, uid, source, reply, now)
                }
                Origin::FetchPending { uid } => match reply {
                    Reply::LoginOk {
                        pending,
                        store_down,
                    } => {
                        self.deliver_pending(uid, None, pending, now);
                        if store_down {
                            self.retry_fetch_later(uid, now);
                        }
                    }
                    _ => self.retry_fetch_later(uid, now),
                },
                Origin::DemoLogin { conn, body } => {
                    let response = match reply {
                        Reply::Ok => super::http::json_response(200, &body, false),
                        _ => super::http::json_response(
                            503,
                            &super::http::error_body(503, "store unavailable"),
                            false,
                        ),
                    };
                    if let Some(s) = self.sessions.get_mut(&conn) {
                        s.respond(&response);
                        self.mark_flush(conn);
                    }
                }
                Origin::HttpLogin { http } => {
                    let (status, body) = match reply {
                        Reply::Ok => (200, super::http::error_body(0, "ok")),
                        Reply::Failed { code, message } => {
                            (code, super::http::error_body(code, &message))
                        }
                        _ => (500, super::http::error_body(500, "unexpected answer")),
                    };
                    self.answer_api(http, status, &body);
                }
                Origin::Cluster { waiter, part } => self.on_cluster_answer(waiter, part, reply),
                Origin::Presence { welcome } => {
                    if let Reply::Failed { code, message } = reply {
                        warn!("presence write failed ({code}): {message}");
                    }
                    for conn in welcome {
                        self.finish_welcome(conn, now);
                    }
                }
                Origin::Heartbeat => {
                    if let Reply::Failed { code, message } = reply {
                        if code == 409 {
                            log::error!("{message}");
                        } else {
                            warn!("heartbeat failed: {message}");
                        }
                    }
                }
                Origin::Purge => {
                    if let Reply::Failed { message, .. } = reply {
                        warn!("could not clear this node's old presence entries: {message}");
                    }
                    if let Some(c) = self.cluster.as_mut() {
                        c.purged = true;
                    }
                }
                Origin::Background | Origin::StoreProbe => {
                    let probe = matches!(origin, Origin::StoreProbe);
                    match reply {
                        Reply::Failed { code, message } => {
                            warn!("a store write failed ({code}: {message}); it will be retried");
                            self.store_retry.failed(key, task, probe, now);
                        }
                        _ if probe => {
                            for (key, task) in self.store_retry.probe_succeeded() {
                                self.pool.submit(key, task, Origin::Background);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn on_login_answer(
        &mut self,
        conn: ConnId,
        uid: Uid,
        source: String,
        reply: Reply,
        now: Instant,
    ) {
        let left = self.logging_in.get_mut(&uid).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            self.logging_in.remove(&uid);
        }
        let missed = left == Some(0) && self.missed_while_logging_in.remove(&uid);
        let waiting = self
            .sessions
            .get(&conn)
            .is_some_and(|s| matches!(s.phase, Phase::AwaitingLogin));
        if !waiting {
            // The client left while its login was checked: give back what was taken for it.
            if let Reply::LoginOk { pending, .. } = reply {
                self.requeue(uid, pending.iter().map(|m| m.id).collect());
            }
            return;
        }
        match reply {
            Reply::LoginOk {
                pending,
                store_down,
            } => {
                let device = self.sessions.get(&conn).and_then(|s| s.device.clone());
                if let Some(old) = self
                    .registry
                    .register(uid, &source, conn, device.as_deref())
                {
                    if let Some(s) = self.sessions.get_mut(&old.conn) {
                        s.login = None;
                    }
                    // Its fdInfo entry goes; the clientInfo entry is already the new one's.
                    self.presence_changed(uid, &source, old.conn, false);
                    if !old.same_device {
                        self.send_text(
                            old.conn,
                            &protocol::login_refused(441, "logged in elsewhere"),
                        );
                    }
                    self.close_session(old.conn, close_code::REPLACED, "logged in elsewhere", now);
                }
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.phase = Phase::Open {
                        uid,
                        source: source.as_str().into(),
                    };
                    s.login = Some((uid, source.as_str().into()));
                    s.deadline = None;
                    s.last_active = now;
                }
                self.presence_changed(uid, &source, conn, true);
                self.stats.logins += 1;
                if self.cluster.is_some() {
                    // Welcomed once its presence is written (see `finish_welcome`).
                    if let Some(s) = self.sessions.get_mut(&conn) {
                        s.welcome = Some(Box::new(super::ws::Welcome::new(pending)));
                    }
                    self.await_presence(conn);
                } else {
                    self.send_text(conn, &protocol::login_ok(uid, &source, conn));
                    self.deliver_pending(uid, Some(conn), pending, now);
                }
                if missed {
                    self.pool
                        .submit(uid, Task::FetchPending(uid), Origin::FetchPending { uid });
                }
                if store_down {
                    self.retry_fetch_later(uid, now);
                }
                // Frames the client sent while its login was checked are still unread.
                self.on_session_readable(conn, now);
            }
            Reply::LoginRefused { code, message } => {
                self.stats.logins_refused += 1;
                self.send_text(conn, &protocol::login_refused(code, &message));
                self.close_session(conn, close_code::UNAUTHORIZED, &message, now);
            }
            _ => {
                self.stats.logins_refused += 1;
                self.send_text(conn, &protocol::login_refused(503, "service unavailable"));
                self.close_session(
                    conn,
                    close_code::TRY_AGAIN_LATER,
                    "service unavailable",
                    now,
                );
            }
        }
    }

    /// Cluster mode: this connection's presence write has been answered (or failed): send its
    /// login frame, its stored messages, what was held meanwhile, and fetch what was stored
    /// between its login check and its presence write.
    pub(super) fn finish_welcome(&mut self, conn: ConnId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let Some(welcome) = s.welcome.take() else {
            return;
        };
        let Some((uid, source)) = s.login.clone() else {
            self.requeue(0, welcome.pending.iter().map(|m| m.id).collect());
            return;
        };
        self.send_text(conn, &protocol::login_ok(uid, &source, conn));
        self.deliver_pending(uid, Some(conn), welcome.pending, now);
        for frame in &welcome.held {
            self.send_frame(conn, frame, now);
        }
        self.pool
            .submit(uid, Task::FetchPending(uid), Origin::FetchPending { uid });
    }

    /// Stored messages go out oldest first, to the connection that just logged in (`only`) or
    /// to every connection of the uid; those that reach nobody are given back to the store.
    fn deliver_pending(
        &mut self,
        uid: Uid,
        only: Option<ConnId>,
        pending: Vec<MessageRecord>,
        now: Instant,
    ) {
        if pending.is_empty() {
            return;
        }
        let more = pending.len() >= PENDING_PER_LOGIN;
        let targets: Vec<ConnId> = match only {
            Some(conn) => vec![conn],
            None => self.registry.conn_ids(uid),
        };
        let mut unsent = Vec::new();
        for m in &pending {
            let frame = text_frame(&m.to_frame_json(0));
            let mut reached = false;
            for conn in &targets {
                let ours = self
                    .sessions
                    .get(conn)
                    .and_then(|s| s.uid())
                    .is_some_and(|(u, _)| u == uid);
                reached |= ours && self.send_frame(*conn, &frame, now);
            }
            if !reached {
                unsent.push(m.id);
            }
        }
        let any_sent = unsent.len() < pending.len();
        self.requeue(uid, unsent);
        if more && any_sent {
            self.pool
                .submit(uid, Task::FetchPending(uid), Origin::FetchPending { uid });
        }
    }

    fn requeue(&mut self, uid: Uid, ids: Vec<u64>) {
        if !ids.is_empty() {
            self.pool
                .submit(uid, Task::Requeue(ids), Origin::Background);
        }
    }

    /// The message store could not be read: look again in a while, if the uid is still here.
    fn retry_fetch_later(&mut self, uid: Uid, now: Instant) {
        self.retry_fetch.entry(uid).or_insert(now + FETCH_RETRY);
    }

    pub(super) fn retry_due_fetches(&mut self, now: Instant) {
        let due: Vec<Uid> = self
            .retry_fetch
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(u, _)| *u)
            .collect();
        for uid in due {
            self.retry_fetch.remove(&uid);
            if self.registry.is_online(uid) {
                self.pool
                    .submit(uid, Task::FetchPending(uid), Origin::FetchPending { uid });
            }
        }
    }
}
