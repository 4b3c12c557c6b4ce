//! Applying what happened: the doors' events, the workers' answers and the subscriber's
//! messages go to the router; the router's tasks go to the pool and its late replies to the
//! push doors. `settle` repeats until nothing is left, since each step may cause the others.

use super::http::error_body;
use super::metrics::Door;
use super::pool::Completion;
use super::router::{Action, Origin, PushOutcome, ReplyTo};
use super::ws::WsEvent;
use super::Master;
use crate::ipc::{ClusterMessage, Reply, TaskFailure};
use log::warn;
use std::time::Instant;

/// The lists `settle` works through, kept for their room.
#[derive(Default)]
pub(super) struct Work {
    events: Vec<WsEvent>,
    completions: Vec<Completion<Origin>>,
    actions: Vec<Action>,
}

/// The HTTP status a failed task answers with.
pub fn failure_status(f: &TaskFailure) -> u16 {
    match f {
        TaskFailure::StoreRefused | TaskFailure::TooLarge => 500,
        TaskFailure::NodeIdInUse { .. } => 409,
        TaskFailure::NotClustered => 500,
        TaskFailure::StoreUnavailable | TaskFailure::TimedOut | TaskFailure::WorkerLost => 503,
    }
}

impl Master {
    /// Applies events, requests, answers and actions until none is left.
    pub(super) fn settle(&mut self, now: Instant) {
        // Kept across turns for their room: a turn allocates no lists.
        let mut work = std::mem::take(&mut self.work);
        loop {
            let mut progress = false;
            self.ws.drain_events(&mut work.events);
            for e in work.events.drain(..) {
                progress = true;
                self.on_ws_event(e, now);
            }
            for r in self.api.take_requests() {
                progress = true;
                self.serve_api(r, now);
            }
            self.router.note_in_flight(self.pool.backlog_bytes());
            self.pool.drain_completions(&mut work.completions);
            for c in work.completions.drain(..) {
                progress = true;
                self.on_completion(c, now);
            }
            self.router.drain_actions(&mut work.actions);
            for a in work.actions.drain(..) {
                progress = true;
                self.apply_action(a, now);
            }
            // After what the last reads reported is applied: sessions paused after a chat (or
            // just logged in) read on.
            if self.ws.has_pending_reads() {
                progress = true;
                self.ws.read_pending(now);
            }
            if !progress {
                self.work = work;
                return;
            }
        }
    }

    fn on_ws_event(&mut self, e: WsEvent, now: Instant) {
        match e {
            WsEvent::Login { conn, login, .. } => self.router.login_requested(conn, login, now),
            WsEvent::Page { conn, request } => self.serve_page(conn, request, now),
            WsEvent::Chat {
                conn,
                from,
                to,
                kind,
                text,
                content,
            } => {
                self.metrics.chat_received();
                let in_flight = self.pool.backlog_bytes();
                self.router.chat(
                    &mut self.ws,
                    conn,
                    from,
                    to,
                    kind,
                    &text,
                    content,
                    in_flight,
                    now,
                );
            }
            WsEvent::GroupChat {
                conn,
                from,
                group,
                kind,
                text,
                content,
            } => {
                self.metrics.chat_received();
                let in_flight = self.pool.backlog_bytes();
                self.router.group_chat(
                    &mut self.ws,
                    conn,
                    from,
                    group,
                    kind,
                    &text,
                    content,
                    in_flight,
                    now,
                );
            }
            WsEvent::Offline { conn, uid, source } => self.router.offline(conn, uid, source),
            WsEvent::Undelivered { uid, entries, .. } => self.router.undelivered(uid, entries),
            WsEvent::Drained { uid, .. } => self.router.drained(uid),
            WsEvent::Closed { .. } => self.reclaimer.connection_closed(),
        }
    }

    fn on_completion(&mut self, c: Completion<Origin>, now: Instant) {
        self.metrics.task_answered(&c);
        let Completion {
            origin,
            key,
            body,
            reply,
            ..
        } = c;
        match origin {
            Origin::Login { conn, uid, source } => {
                self.router
                    .login_answered(&mut self.ws, conn, uid, source, reply, now)
            }
            Origin::FetchPending { uid } => {
                self.router.fetch_answered(&mut self.ws, uid, reply, now)
            }
            Origin::ApiLogin { conn } => {
                let (status, body) = match reply {
                    Reply::Ok => (200, error_body(0, "ok")),
                    Reply::Failed(f) => {
                        let status = failure_status(&f);
                        (status, error_body(status, &f.to_string()))
                    }
                    _ => (500, error_body(500, "unexpected answer")),
                };
                self.api.answer(conn, status, &body, now);
            }
            Origin::Store => self.router.store_answered(key, body, false, reply, now),
            Origin::StoreProbe => self.router.store_answered(key, body, true, reply, now),
            Origin::Route { waiter, part } => {
                self.router
                    .route_answered(&mut self.ws, waiter, part, reply, now)
            }
            Origin::Cluster => {
                if let Reply::Failed(why) = reply {
                    warn!("cluster task failed: {why}");
                }
            }
            Origin::Heartbeat => {
                if let Some(c) = self.cluster.as_mut() {
                    c.heartbeat_answered(reply, now);
                }
            }
            Origin::Purge => {
                if let Some(c) = self.cluster.as_mut() {
                    c.purge_answered(&reply);
                }
            }
            Origin::Ping { slot } => self.ping_answered(slot, &reply),
            Origin::AdminUser { conn, found } => self.admin_user_answered(conn, found, reply, now),
            Origin::Group { to, change } => self.router.group_answered(to, change, reply),
            Origin::GroupStored { group, id, retry } => self
                .router
                .group_write_answered(key, body, group, id, retry, reply, now),
            Origin::GroupLoad => self.router.groups_answered(reply),
            Origin::GroupRoute { group, id } => self.router.group_route_answered(group, id, &reply),
            Origin::GroupOnline { to, uids } => self.router.group_online_answered(to, uids, reply),
            Origin::Presence { welcome } => {
                if let Reply::Failed(why) = reply {
                    warn!("presence write failed: {why}");
                }
                for conn in welcome {
                    self.router.welcome(&mut self.ws, conn);
                }
            }
        }
    }

    fn apply_action(&mut self, a: Action, now: Instant) {
        match a {
            Action::Task { key, body, origin } => {
                self.pool.submit(key, body, origin);
            }
            Action::Reply { to, status, body } => match to {
                ReplyTo::Udp(addr) => {
                    self.metrics.push_replied(Door::Udp, status);
                    self.metrics.datagram(0, body.len());
                    if let Some(udp) = self.udp.as_ref() {
                        udp.send_to(addr, &body);
                    }
                }
                ReplyTo::Page(conn) => {
                    let answer = crate::master::http::json_response(status, &body, false);
                    self.ws.respond(conn, &answer, now);
                }
                ReplyTo::Api(conn) => {
                    self.metrics.push_replied(Door::Http, status);
                    self.api.answer(conn, status, &body, now);
                }
            },
            Action::Presence(change) => {
                if let Some(c) = self.cluster.as_mut() {
                    c.presence_changed(change);
                }
            }
            Action::AwaitPresence(conn) => {
                if let Some(c) = self.cluster.as_mut() {
                    c.await_presence(conn);
                }
            }
        }
    }

    /// What other nodes published to this one.
    pub(super) fn on_subscriber(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let inbound = c.on_subscriber_event(now);
        if inbound.lost {
            self.router.subscription_lost();
        }
        if inbound.resubscribed {
            // Changes still queued are contained in the rewrite.
            c.forget_queued_presence();
            self.router.resync(&self.ws);
        }
        for m in inbound.messages {
            match ClusterMessage::from_json(&m) {
                Ok(message) => {
                    self.metrics.cluster_inbound(&message, c.node());
                    self.router.cluster_message(&mut self.ws, message, now);
                }
                Err(e) => warn!(
                    "unreadable cluster message ({}): {:.200}",
                    e.0,
                    String::from_utf8_lossy(&m)
                ),
            }
        }
    }

    /// Reads and answers datagrams (a few batches; the rest waits for the next turn).
    pub(super) fn serve_udp(&mut self, now: Instant) {
        let Master {
            udp,
            gate,
            router,
            ws,
            pool,
            config,
            metrics,
            ..
        } = self;
        let Some(udp) = udp.as_mut() else {
            return;
        };
        let in_flight = pool.backlog_bytes();
        let max = config.server.max_message_size;
        self.udp_backlog = udp.serve(|d| {
            let (status, body) = if !gate.admit(d.from.ip(), now) {
                (429, error_body(429, "too many pushes from this address"))
            } else if d.truncated || d.payload.len() > max {
                (413, error_body(413, "datagram too large"))
            } else {
                match gate.open_datagram(d.payload, d.from.ip()) {
                    Ok(push) => {
                        metrics.push_received(Door::Udp, &push.means);
                        match router.push(ws, push, ReplyTo::Udp(d.from), in_flight, now) {
                            PushOutcome::Now { status, body } => (status, body),
                            PushOutcome::Later => {
                                metrics.datagram(d.payload.len(), 0);
                                return None;
                            }
                        }
                    }
                    Err(e) => (e.code, error_body(e.code, &e.msg)),
                }
            };
            metrics.push_replied(Door::Udp, status);
            metrics.datagram(d.payload.len(), body.len());
            Some(body)
        });
    }
}
