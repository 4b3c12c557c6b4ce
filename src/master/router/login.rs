//! Logins and kept messages: a login checked by a worker registers its connection (displacing
//! an older one of the same uid and source), welcomes it, and hands over what was kept for it,
//! oldest first, a send queue's worth at a time; what reaches nobody is made undelivered
//! again. While kept messages are on their way to a uid, newer ones join them (`backlog`).

use super::backlog::Next;
use super::{deliver, Origin, Router};
use crate::ipc::{LoginRefusal, PendingFrame, Reply, Task, TaskFailure};
use crate::master::security::security;
use crate::master::ws::{Outgoing, Sessions};
use crate::model::{ConnId, Credentials, MessageId, Source, Uid};
use crate::net::stream::Transport;
use crate::protocol::{close_code, frames};
use bytes::Bytes;
use std::time::Instant;

impl Router {
    /// An upgrade asks to log in: the check (and the take of what was kept for the uid) goes
    /// to the worker slot of its uid. A demo token is judged here instead, from the demo table
    /// alone: the worker is only asked for the take (a fetch carries no token), so the login
    /// frame and the kept messages come as after any login.
    pub fn login_requested(&mut self, conn: ConnId, login: Credentials, now: Instant) {
        self.begin_hold(login.uid);
        self.backlogs.take_started(login.uid);
        self.groups.arriving(login.uid);
        if let Some(upto) = self.groups.unstored_newest(login.uid) {
            // The take would miss the group messages on their way to the store: it waits for
            // those sent until now (later ones are held for it, see `group_send`).
            self.waiting_logins.push((conn, login, upto));
            return;
        }
        self.submit_login(conn, login, now);
    }

    /// Sends a login's check (and take) to its worker.
    pub(super) fn submit_login(&mut self, conn: ConnId, login: Credentials, now: Instant) {
        // What is batched goes first, so that the check's take sees it.
        self.submit_store_batches();
        let origin = Origin::Login {
            conn,
            uid: login.uid,
            source: login.source,
        };
        if self.demo.accepts(&login, now) {
            self.task(login.uid.0, &Task::FetchPending(login.uid), origin);
        } else {
            self.task(login.uid.0, &Task::Login(login), origin);
        }
    }

    /// A token for the demo page's login of (uid, source): kept in the master only.
    pub fn mint_demo_token(
        &mut self,
        uid: Uid,
        source: Source,
        now: Instant,
    ) -> Result<String, super::demo::NoRandomness> {
        self.demo.mint(uid, source, now)
    }

    /// A login check was answered.
    pub fn login_answered<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        conn: ConnId,
        uid: Uid,
        source: Source,
        reply: Reply,
        now: Instant,
    ) {
        self.groups.arrived(uid);
        self.settle_held(uid, &reply);
        if !ws.is_logging_in(conn) {
            // The client left while its login was checked: give back what was taken for it.
            if let Reply::Pending { frames, .. } = reply {
                self.requeue(uid, frames.iter().map(|f| f.id).collect());
            }
            return self.take_done(uid, true, false);
        }
        let (frames, store_down, more) = match reply {
            Reply::Pending {
                frames,
                store_down,
                more,
            } => (frames, store_down, more),
            Reply::Refused(why) => {
                self.stats.logins_refused += 1;
                let message = match why {
                    LoginRefusal::Unauthorized => {
                        self.stats.logins_unauthorized += 1;
                        "unauthorized"
                    }
                    LoginRefusal::Expired => {
                        self.stats.logins_expired += 1;
                        "expired"
                    }
                };
                if let Some((addr, _)) = ws.client(conn) {
                    security!("{}: login of {uid}/{source} refused: {message}", addr.ip());
                }
                let frame = frames::login_refused(401, message);
                ws.send(conn, Outgoing::Frame(frame), now);
                ws.close(conn, close_code::UNAUTHORIZED, message, now);
                return self.take_done(uid, true, false);
            }
            other => {
                if let Reply::Failed(why) = other {
                    log::warn!("login of {uid} could not be checked: {why}");
                }
                self.stats.logins_refused += 1;
                self.stats.logins_unavailable += 1;
                ws.send(conn, Outgoing::Frame(frames::login_unavailable()), now);
                let (code, why) = frames::LOGIN_UNAVAILABLE_CLOSE;
                ws.close(conn, code, why, now);
                return self.take_done(uid, true, false);
            }
        };
        let device = ws.device(conn).map(str::to_owned);
        if let Some(old) = self.registry.register(uid, source, conn, device.as_deref()) {
            // Its fdInfo entry goes; the clientInfo entry is already the new one's.
            self.presence(uid, source, old.conn, false, None, None);
            if !old.same_device {
                let frame = frames::login_refused(441, "logged in elsewhere");
                ws.send(old.conn, Outgoing::Frame(frame), now);
            }
            ws.close(old.conn, close_code::REPLACED, "logged in elsewhere", now);
        }
        let clustered = self.relay.is_some();
        if self.registry.connections_of(uid).len() == 1 {
            self.groups_online(uid);
        }
        ws.open(conn, uid, source, !clustered, now);
        let client = ws.client(conn).map(|(addr, _)| addr.ip());
        self.presence(uid, source, conn, true, device.as_deref(), client);
        self.stats.logins += 1;
        if clustered {
            // Welcomed once its presence is written (see `welcome`); what is sent to it until
            // then, its kept messages first, waits in its session.
            self.actions.push(super::Action::AwaitPresence(conn));
        } else {
            let frame = frames::login_ok(uid, source.as_str(), conn);
            ws.send(conn, Outgoing::Frame(frame), now);
        }
        let all_sent = self.deliver_pending(ws, uid, Some(conn), frames, now);
        if store_down {
            self.store_unreadable(uid, now);
        } else {
            self.take_done(uid, all_sent, more);
        }
    }

    /// Cluster mode: this connection's presence write has been answered (or failed). What
    /// other nodes kept for it between its login check and its presence write is fetched; its
    /// login frame goes once that take is answered, so that a message sent to it after the
    /// client has its login frame is delivered live, not kept behind that take.
    pub fn welcome<S: Transport>(&mut self, ws: &mut Sessions<S>, conn: ConnId) {
        let Some((uid, _)) = ws.login(conn) else {
            return;
        };
        self.welcoming.entry(uid).or_default().push(conn);
        self.fetch(uid);
    }

    /// The take started at `welcome` was answered: the login frames go, then what it brought
    /// and what waited meanwhile.
    fn finish_welcomes<S: Transport>(&mut self, ws: &mut Sessions<S>, uid: Uid) {
        for conn in self.welcoming.remove(&uid).unwrap_or_default() {
            if let Some((u, source)) = ws.login(conn) {
                ws.welcome(conn, frames::login_ok(u, source.as_str(), conn));
            }
        }
    }

    /// Kept messages go out oldest first, to the connection that just logged in (`only`) or
    /// to every connection of the uid; those that reach nobody are made undelivered again.
    /// True if every one went out.
    fn deliver_pending<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        uid: Uid,
        only: Option<ConnId>,
        pending: Vec<PendingFrame>,
        now: Instant,
    ) -> bool {
        let mut unsent: Vec<MessageId> = Vec::new();
        for p in pending {
            // Once one did not fit, the later ones wait too, in order.
            if !unsent.is_empty() {
                unsent.push(p.id);
                continue;
            }
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
        let all_sent = unsent.is_empty();
        self.requeue(uid, unsent);
        all_sent
    }

    /// A take of `uid`'s kept messages has been handled: take again, wait for a connection to
    /// catch up, or end its backlog (see `backlog`).
    pub(super) fn take_done(&mut self, uid: Uid, all_sent: bool, more: bool) {
        if !self.registry.is_online(uid) {
            // What is kept comes at its next login.
            self.backlogs.forget(uid);
            return;
        }
        if self.backlogs.answered(uid, all_sent, more) == Next::Take {
            self.submit_fetch(uid);
        }
    }

    /// The message store could not be read for `uid`: live messages go out again meanwhile,
    /// and the take is tried again in a while.
    fn store_unreadable(&mut self, uid: Uid, now: Instant) {
        self.backlogs.forget(uid);
        self.store.fetch_later(uid, now);
    }

    /// Asks the store for what is kept for `uid` and not yet delivered; newer messages wait
    /// behind it. Messages still batched go first (same worker slot, in order), so the take
    /// sees them.
    pub(super) fn fetch(&mut self, uid: Uid) {
        self.begin_hold(uid);
        self.backlogs.take_started(uid);
        self.submit_fetch(uid);
    }

    pub(super) fn submit_fetch(&mut self, uid: Uid) {
        if let Some(upto) = self.groups.unstored_newest(uid) {
            // As a login's take: a group message owed to it may not be written yet.
            self.waiting_fetches.push((uid, upto));
            return;
        }
        self.submit_fetch_now(uid);
    }

    pub(super) fn submit_fetch_now(&mut self, uid: Uid) {
        self.submit_store_batches();
        self.task(
            uid.0,
            &Task::FetchPending(uid),
            Origin::FetchPending { uid },
        );
    }

    /// A fetch was answered.
    pub fn fetch_answered<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        uid: Uid,
        reply: Reply,
        now: Instant,
    ) {
        self.settle_held(uid, &reply);
        match reply {
            Reply::Pending {
                frames,
                store_down,
                more,
            } => {
                let all_sent = self.deliver_pending(ws, uid, None, frames, now);
                if store_down {
                    self.store_unreadable(uid, now);
                } else {
                    self.take_done(uid, all_sent, more);
                }
            }
            _ => self.store_unreadable(uid, now),
        }
        self.finish_welcomes(ws, uid);
    }

    /// A connection of `uid` that had refused frames (its queue was full) has caught up: what
    /// waited for it is taken now.
    pub fn drained(&mut self, uid: Uid) {
        if self.backlogs.drained(uid) {
            self.submit_fetch(uid);
        }
    }

    /// A message was kept undelivered for `uid`: if a take of its messages is running it may
    /// have missed it; if `uid` is online, its queues are full: it comes once they drain.
    pub(super) fn kept_undelivered(&mut self, uid: Uid) {
        if self.backlogs.holds(uid) {
            self.backlogs.kept(uid);
        } else if self.registry.is_online(uid) {
            self.begin_hold(uid);
            self.backlogs.wait_for_drain(uid);
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
