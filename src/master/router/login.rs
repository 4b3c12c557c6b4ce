//! Logins and kept messages: a login checked by a worker registers its connection (displacing
//! an older one of the same uid and source), welcomes it, and hands over what was kept for it,
//! oldest first; what reaches nobody is made undelivered again.

use super::{deliver, Origin, Router};
use crate::ipc::{LoginRefusal, PendingFrame, Reply, Task, TaskFailure, PENDING_PER_LOGIN};
use crate::master::ws::{Outgoing, Sessions};
use crate::model::{ConnId, Credentials, MessageId, Source, Uid};
use crate::protocol::{close_code, frames};
use bytes::Bytes;
use std::io::{Read, Write};
use std::time::Instant;

impl Router {
    /// An upgrade asks to log in: the check goes to the worker slot of its uid.
    pub fn login_requested(&mut self, conn: ConnId, login: Credentials) {
        self.store.login_started(login.uid);
        let origin = Origin::Login {
            conn,
            uid: login.uid,
            source: login.source,
        };
        self.task(login.uid.0, &Task::Login(login), origin);
    }

    /// A login check was answered.
    pub fn login_answered<S: Read + Write>(
        &mut self,
        ws: &mut Sessions<S>,
        conn: ConnId,
        uid: Uid,
        source: Source,
        reply: Reply,
        now: Instant,
    ) {
        let missed = self.store.login_answered(uid);
        if !ws.is_logging_in(conn) {
            // The client left while its login was checked: give back what was taken for it.
            if let Reply::Pending { frames, .. } = reply {
                self.requeue(uid, frames.iter().map(|f| f.id).collect());
            }
            return;
        }
        let (frames, store_down) = match reply {
            Reply::Pending { frames, store_down } => (frames, store_down),
            Reply::Refused(why) => {
                self.stats.logins_refused += 1;
                let message = match why {
                    LoginRefusal::Unauthorized => "unauthorized",
                    LoginRefusal::Expired => "expired",
                };
                ws.send(
                    conn,
                    Outgoing::Frame(frames::login_refused(401, message)),
                    now,
                );
                ws.close(conn, close_code::UNAUTHORIZED, message, now);
                return;
            }
            other => {
                if let Reply::Failed(why) = other {
                    log::warn!("login of {uid} could not be checked: {why}");
                }
                self.stats.logins_refused += 1;
                let frame = frames::login_refused(503, "service unavailable");
                ws.send(conn, Outgoing::Frame(frame), now);
                ws.close(
                    conn,
                    close_code::TRY_AGAIN_LATER,
                    "service unavailable",
                    now,
                );
                return;
            }
        };
        let device = ws.device(conn).map(str::to_owned);
        if let Some(old) = self.registry.register(uid, source, conn, device.as_deref()) {
            // Its fdInfo entry goes; the clientInfo entry is already the new one's.
            self.presence(uid, source, old.conn, false, None);
            if !old.same_device {
                let frame = frames::login_refused(441, "logged in elsewhere");
                ws.send(old.conn, Outgoing::Frame(frame), now);
            }
            ws.close(old.conn, close_code::REPLACED, "logged in elsewhere", now);
        }
        let clustered = self.relay.is_some();
        ws.open(conn, uid, source, !clustered, now);
        self.presence(uid, source, conn, true, device.as_deref());
        self.stats.logins += 1;
        if clustered {
            // Welcomed once its presence is written (see `welcome`); what is sent to it until
            // then, its kept messages first, waits in its session.
            self.deliver_pending(ws, uid, Some(conn), frames, now);
            self.actions.push(super::Action::AwaitPresence(conn));
        } else {
            let frame = frames::login_ok(uid, source.as_str(), conn);
            ws.send(conn, Outgoing::Frame(frame), now);
            self.deliver_pending(ws, uid, Some(conn), frames, now);
        }
        if missed {
            self.fetch(uid);
        }
        if store_down {
            self.store.fetch_later(uid, now);
        }
    }

    /// Cluster mode: this connection's presence write has been answered (or failed): its
    /// login frame goes now, then what waited for it, and what was kept between its login
    /// check and its presence write is fetched.
    pub fn welcome<S: Read + Write>(&mut self, ws: &mut Sessions<S>, conn: ConnId) {
        let Some((uid, source)) = ws.login(conn) else {
            return;
        };
        if ws.welcome(conn, frames::login_ok(uid, source.as_str(), conn)) {
            self.fetch(uid);
        }
    }

    /// Kept messages go out oldest first, to the connection that just logged in (`only`) or
    /// to every connection of the uid; those that reach nobody are made undelivered again.
    fn deliver_pending<S: Read + Write>(
        &mut self,
        ws: &mut Sessions<S>,
        uid: Uid,
        only: Option<ConnId>,
        pending: Vec<PendingFrame>,
        now: Instant,
    ) {
        if pending.is_empty() {
            return;
        }
        let more = pending.len() >= PENDING_PER_LOGIN;
        let total = pending.len();
        let mut unsent: Vec<MessageId> = Vec::new();
        for p in pending {
            let (id, frame) = (p.id, Bytes::from(p.frame));
            let entry = || Outgoing::Kept {
                id,
                frame: frame.clone(),
            };
            let reached = match only {
                Some(conn) => {
                    ws.login(conn).is_some_and(|(u, _)| u == uid) && ws.send(conn, entry(), now)
                }
                None => deliver(&self.registry, ws, uid, entry, now) > 0,
            };
            if !reached {
                unsent.push(id);
            }
        }
        let any_sent = unsent.len() < total;
        self.requeue(uid, unsent);
        if more && any_sent {
            self.fetch(uid);
        }
    }

    /// Asks the store for what is kept for `uid` and not yet delivered.
    pub(super) fn fetch(&mut self, uid: Uid) {
        self.task(
            uid.0,
            &Task::FetchPending(uid),
            Origin::FetchPending { uid },
        );
    }

    /// A fetch was answered.
    pub fn fetch_answered<S: Read + Write>(
        &mut self,
        ws: &mut Sessions<S>,
        uid: Uid,
        reply: Reply,
        now: Instant,
    ) {
        match reply {
            Reply::Pending { frames, store_down } => {
                self.deliver_pending(ws, uid, None, frames, now);
                if store_down {
                    self.store.fetch_later(uid, now);
                }
            }
            _ => self.store.fetch_later(uid, now),
        }
    }

    /// Fetches that failed earlier, tried again for uids still here.
    pub fn retry_fetches(&mut self, now: Instant) {
        for uid in self.store.due_fetches(now) {
            if self.registry.is_online(uid) {
                self.fetch(uid);
            }
        }
    }

    /// A store write (or its probe) was answered: a failure waits for a retry; a probe that
    /// got through sends every write that waited.
    pub fn store_answered(
        &mut self,
        key: u64,
        body: Bytes,
        probe: bool,
        reply: Reply,
        now: Instant,
    ) {
        match reply {
            Reply::Failed(TaskFailure::StoreRefused) => {
                // Nothing in it can be kept: retrying would block every write behind it.
                log::error!("the store refused a write outright; its messages are not kept");
                self.stats.store_refused += 1;
                if probe {
                    self.release_retries();
                }
            }
            Reply::Failed(why) => {
                log::warn!("a store write failed ({why}); it will be retried");
                self.store.write_failed(key, body, probe, now);
            }
            reply => {
                if let Reply::PartlyStored { refused } = reply {
                    self.stats.store_refused += u64::from(refused);
                }
                if probe {
                    self.release_retries();
                }
            }
        }
    }

    fn release_retries(&mut self) {
        for (key, body) in self.store.probe_succeeded() {
            self.actions.push(super::Action::Task {
                key,
                body,
                origin: Origin::Store,
            });
        }
    }

    /// The oldest failed write, when a probe is due.
    pub fn probe_store(&mut self, now: Instant) {
        if let Some((key, body)) = self.store.due_probe(now) {
            self.actions.push(super::Action::Task {
                key,
                body,
                origin: Origin::StoreProbe,
            });
        }
    }
}
