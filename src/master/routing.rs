//! What the master does with a login request, a chat frame and a push: look up the registry,
//! encode each frame once, queue it to every target connection, keep what must be kept.

use super::cluster::ReplyTo;
use super::outbuf::{text_frame, SharedFrame};
use super::pool::Origin;
use super::push::{Means, PushData, PushRequest};
use super::registry::ConnId;
use super::ws::{Limits, Phase, Session};
use super::Master;
use crate::ids::unix_now;
use crate::ipc::Task;
use crate::protocol::{self, close_code, ClientRequest, MessageRecord, Uid};
use log::warn;
use serde_json::{json, Value};
use std::fmt::Write;
use std::time::Instant;

/// The outcome of a push, as its reply datagram or HTTP body says it.
pub enum PushOutcome {
    Now {
        status: u16,
        body: String,
    },
    /// The reply goes out when other nodes have answered.
    Later,
}

/// A message frame for `uid` read back into the record to keep (frames that are not messages,
/// such as acks and pongs, give None).
fn undelivered_record(uid: Uid, payload: &[u8]) -> Option<MessageRecord> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let id: u64 = v.get("id")?.as_str()?.parse().ok()?;
    if v.get("to_uid").and_then(protocol::uid_from_json) != Some(uid) {
        return None;
    }
    Some(MessageRecord {
        id,
        uid: v.get("uid").and_then(protocol::uid_from_json).unwrap_or(0),
        to_uid: uid,
        kind: v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("push")
            .to_owned(),
        state: 0,
        content: v
            .get("content")
            .map_or_else(|| "null".to_owned(), Value::to_string),
        time: v
            .get("time")
            .and_then(protocol::uid_from_json)
            .unwrap_or_else(unix_now),
    })
}

/// `{"code":0,"msg":"ok","id":..,"delivered":N,"onLine":0|1}` (no `id` for a kick), written
/// directly: it answers every push, here or once other nodes have answered.
pub fn delivered_body(id: Option<u64>, delivered: usize) -> String {
    let mut body = String::with_capacity(80);
    body.push_str("{\"code\":0,\"msg\":\"ok\"");
    if let Some(id) = id {
        let _ = write!(body, ",\"id\":\"{id}\"");
    }
    let _ = write!(
        body,
        ",\"delivered\":{delivered},\"onLine\":{}}}",
        u8::from(delivered > 0)
    );
    body
}

impl PushOutcome {
    /// For the HTTP door: Some((status, body)) now, or None when answered later.
    pub fn into_answer(self) -> Option<(u16, String)> {
        match self {
            PushOutcome::Now { status, body } => Some((status, body)),
            PushOutcome::Later => None,
        }
    }

    /// A push carried out here: see `delivered_body`.
    pub fn delivered(id: Option<u64>, delivered: usize) -> PushOutcome {
        PushOutcome::Now {
            status: 200,
            body: delivered_body(id, delivered),
        }
    }

    fn ok(extra: Value) -> PushOutcome {
        let mut body = json!({"code": 0, "msg": "ok"});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        PushOutcome::Now {
            status: 200,
            body: body.to_string(),
        }
    }
}

impl Master {
    pub(super) fn on_upgraded(
        &mut self,
        id: ConnId,
        access_token: Option<String>,
        device: Option<String>,
        now: Instant,
    ) {
        let layout = self.config.server.access_token_layout;
        let creds = access_token
            .as_deref()
            .map(|t| protocol::decode_access_token(t, layout));
        let Some(Ok(creds)) = creds else {
            self.stats.logins_refused += 1;
            self.send_text(id, &protocol::login_refused(401, "unauthorized"));
            self.close_session(id, close_code::UNAUTHORIZED, "unauthorized", now);
            return;
        };
        if let Some(s) = self.sessions.get_mut(&id) {
            s.device = device.map(Into::into);
        }
        *self.logging_in.entry(creds.uid).or_default() += 1;
        let origin = Origin::Login {
            conn: id,
            uid: creds.uid,
            source: creds.source.clone(),
        };
        self.pool.submit(creds.uid, Task::Login(creds), origin);
    }

    pub(super) fn on_client_text(&mut self, id: ConnId, text: &str, now: Instant) {
        let (rate, burst) = (self.limits.rate, self.limits.burst);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        // The sender is whoever this connection logged in as. Not `uid()`: a chat read in the
        // same turn as the client's Close frame finds the session closing already, and must
        // still be delivered (or kept).
        let Some(uid) = s.login.as_ref().map(|(uid, _)| *uid) else {
            return;
        };
        let (brate, bburst) = (self.limits.bytes_rate, self.limits.bytes_burst);
        let within = s.rate.allow(now, rate, burst)
            && s.bytes.allow_n(now, brate, bburst, text.len() as f64);
        if !within {
            // A short overrun gets a warning; a client that keeps going is cut off.
            if f64::from(s.rate.strikes.max(s.bytes.strikes)) > burst {
                self.close_session(id, close_code::POLICY, "rate limit exceeded", now);
            } else {
                self.send_text(id, &protocol::error_frame(429, "rate limit exceeded"));
            }
            return;
        }
        self.stats.messages_in += 1;
        if text.len() > self.config.server.max_message_size {
            let msg = format!(
                "message too large (at most {} bytes)",
                self.config.server.max_message_size
            );
            self.send_text(id, &protocol::error_frame(400, &msg));
            return;
        }
        match protocol::parse_client_frame(text) {
            Ok(ClientRequest::Ping) => self.send_text(id, protocol::PONG_FRAME),
            Err(protocol::BadFrame(why)) => self.send_text(id, &protocol::error_frame(400, &why)),
            Ok(ClientRequest::Chat {
                to_uid,
                kind,
                content,
            }) => {
                let mut record = MessageRecord {
                    id: self.ids.next_id(),
                    uid,
                    to_uid,
                    kind,
                    state: 1,
                    content: content.get().to_owned(),
                    time: unix_now(),
                };
                if self.cluster.is_some() {
                    // In a cluster every message for a uid travels through Redis, to the
                    // recipient's own node too: each node receives its users' messages in one
                    // order, whichever node they were sent to.
                    self.route_chat(id, record);
                    return;
                }
                let delivered = if self.registry.is_online(to_uid) {
                    self.deliver_to_uid(to_uid, &text_frame(&record.to_frame_json(1)), now)
                } else {
                    0
                };
                record.state = u8::from(delivered > 0);
                self.send_text(id, &protocol::ack_frame(record.id, to_uid, record.state));
                self.persist(record);
            }
        }
    }

    /// Queues one text frame to one connection.
    pub(super) fn send_text(&mut self, id: ConnId, text: &str) {
        self.send_frame(id, &text_frame(text), Instant::now());
    }

    /// Queues an encoded frame; a connection over its send bound is closed as a slow consumer.
    pub(super) fn send_frame(&mut self, id: ConnId, frame: &SharedFrame, now: Instant) -> bool {
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        if !queue_frame(s, frame, &self.limits, now) {
            return false;
        }
        self.stats.frames_out += 1;
        self.mark_flush(id);
        true
    }

    /// Connections whose send queue stayed full past `slow_consumer_timeout` are closed with
    /// 1008; what they never got is kept as undelivered (unless another connection of the
    /// same user is online: that device has it), so it comes at the next login.
    pub(super) fn cut_off_slow_consumers(&mut self, now: Instant) {
        let limit = std::time::Duration::from_secs(self.config.server.slow_consumer_timeout);
        let half = self.limits.send_buffer / 2;
        let mut cut = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            let Some(since) = s.full_since else { continue };
            if s.out.len() <= half || matches!(s.phase, Phase::Closing) {
                s.full_since = None;
            } else if now.duration_since(since) >= limit {
                cut.push(*id);
            }
        }
        for id in cut {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            self.stats.slow_consumers += 1;
            warn!(
                "connection {id} ({}) does not read: closed as a slow consumer",
                s.peer
            );
            let uid = s.login.as_ref().map(|(uid, _)| *uid);
            let dropped = s.close_slow_consumer(now);
            self.sync_registration(id);
            self.mark_flush(id);
            if let Some(uid) = uid.filter(|u| !self.registry.is_online(*u)) {
                self.keep_undelivered(uid, &dropped);
            }
        }
    }

    /// Messages for `uid` that were queued to a connection but never written: stored with
    /// state 0 (inserted if absent, set back to 0 if kept as delivered), in this order.
    fn keep_undelivered(&mut self, uid: Uid, frames: &[SharedFrame]) {
        let records: Vec<MessageRecord> = frames
            .iter()
            .filter_map(|f| undelivered_record(uid, super::outbuf::frame_payload(f)))
            .collect();
        if records.is_empty() {
            return;
        }
        let ids = records.iter().map(|r| r.id).collect();
        self.pool
            .submit(uid, Task::Store(records), Origin::Background);
        self.pool
            .submit(uid, Task::Requeue(ids), Origin::Background);
    }

    /// Sends `frame` to every connection of `uid`; returns how many took it.
    pub(super) fn deliver_to_uid(&mut self, uid: Uid, frame: &SharedFrame, now: Instant) -> usize {
        let targets: Vec<ConnId> = self.registry.conn_ids(uid);
        targets
            .into_iter()
            .filter(|c| self.send_frame(*c, frame, now))
            .count()
    }

    /// Keeps a message: always when undelivered, delivered ones only with `backup`.
    pub(super) fn persist(&mut self, record: MessageRecord) {
        if record.state == 0 {
            if self.logging_in.contains_key(&record.to_uid) {
                self.missed_while_logging_in.insert(record.to_uid);
            }
        } else if !self.config.storage.backup {
            return;
        }
        self.to_store.push(record);
    }

    /// One `Store` task per worker slot per loop turn, keyed so that a uid's messages go where
    /// that uid's logins go.
    pub(super) fn submit_store_batches(&mut self) {
        if self.to_store.is_empty() {
            return;
        }
        let slots = self.config.task_workers() as u64;
        let mut batches: Vec<Vec<MessageRecord>> = (0..slots).map(|_| Vec::new()).collect();
        for record in self.to_store.drain(..) {
            batches[(record.to_uid % slots) as usize].push(record);
        }
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            let key = batch[0].to_uid;
            self.pool
                .submit(key, Task::Store(batch), Origin::Background);
        }
    }

    /// Carries out a push. `Now` answers at once; `Later` means the answer depends on other
    /// nodes and goes to `to` when it is known.
    pub(super) fn execute_push(
        &mut self,
        req: PushRequest,
        to: ReplyTo,
        now: Instant,
    ) -> PushOutcome {
        self.stats.pushes += 1;
        let PushRequest { means, data } = req;
        let clustered = self.cluster.is_some();
        match means {
            Means::ToUid(uid) => self.push_to_uids(&[uid], &data, to, now),
            Means::ToUids(uids) if !uids.is_empty() => self.push_to_uids(&uids, &data, to, now),
            Means::ToUids(_) | Means::Broadcast | Means::ToFds(_) => {
                let (id, json) = self.stamp(&data);
                let frame = text_frame(&json);
                let delivered = match means {
                    Means::ToFds(fds) if !fds.is_empty() => {
                        let mut n = 0;
                        for c in fds {
                            let open = self
                                .sessions
                                .get(&c)
                                .is_some_and(|s| matches!(s.phase, Phase::Open { .. }));
                            if open && self.send_frame(c, &frame, now) {
                                n += 1;
                            }
                        }
                        n
                    }
                    Means::ToFds(_) => self.deliver_to_all(&frame, now),
                    _ => {
                        if clustered {
                            self.publish_broadcast(&json);
                        }
                        self.deliver_to_all(&frame, now)
                    }
                };
                PushOutcome::delivered(Some(id), delivered)
            }
            Means::Online(uid) => {
                let sources: Vec<String> = self
                    .registry
                    .connections_of(uid)
                    .iter()
                    .map(|e| e.source.to_string())
                    .collect();
                if clustered {
                    return self.route_online(to, uid, sources);
                }
                PushOutcome::ok(
                    json!({"onLine": u8::from(!sources.is_empty()), "sources": sources}),
                )
            }
            Means::Kick(uid) => {
                let kicked = self.kick_local(uid, now);
                if clustered {
                    return self.route_kick(to, uid, kicked);
                }
                PushOutcome::delivered(None, kicked)
            }
        }
    }

    /// Every open connection of this node, in one pass over the sessions: each gets the frame
    /// written at once rather than queued for the end of the turn, so the first recipients
    /// have it while the last are reached, and each (cold) session is touched once.
    pub(super) fn deliver_to_all(&mut self, frame: &SharedFrame, now: Instant) -> usize {
        let mut delivered = 0;
        let mut to_drop = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            if !matches!(s.phase, Phase::Open { .. }) || !queue_frame(s, frame, &self.limits, now) {
                continue;
            }
            delivered += 1;
            // Already due for a flush (it has more queued): that flush sends this frame too.
            if s.queued_for_flush {
                continue;
            }
            // What the socket did not take goes when it is writable again (its event marks
            // it); a broken or finished session is dropped by the end-of-turn flush.
            if s.flush().is_err() || s.is_done() {
                to_drop.push(*id);
            }
        }
        self.stats.frames_out += delivered as u64;
        for id in to_drop {
            self.mark_flush(id);
        }
        delivered
    }

    /// `data` stamped with a fresh `id` (and `time` when absent), as JSON text.
    fn stamp(&mut self, data: &PushData) -> (u64, String) {
        let id = self.ids.next_id();
        (id, data.stamped(id))
    }

    /// Each uid gets its own message (its own id and row): delivered here at once, and in a
    /// cluster routed to the other nodes before the reply.
    fn push_to_uids(
        &mut self,
        uids: &[Uid],
        data: &PushData,
        to: ReplyTo,
        now: Instant,
    ) -> PushOutcome {
        let mut deliveries = Vec::with_capacity(uids.len());
        for &to_uid in uids {
            let (id, json) = self.stamp(data);
            // In a cluster the uid's own node gets it through Redis too (see `route_chat`).
            let delivered = if self.cluster.is_some() {
                0
            } else {
                self.deliver_to_uid(to_uid, &text_frame(&json), now)
            };
            deliveries.push((id, to_uid, json, delivered));
        }
        let record = |(id, to_uid, _, delivered): &(u64, Uid, String, usize)| MessageRecord {
            id: *id,
            uid: data.sender,
            to_uid: *to_uid,
            kind: data.kind().to_owned(),
            state: u8::from(*delivered > 0),
            content: data.content().to_owned(),
            time: data.time(),
        };
        if self.cluster.is_some() {
            let deliveries = deliveries
                .into_iter()
                .map(|d| (record(&d), d.2, d.3))
                .collect();
            return self.route_push_to_uids(to, deliveries);
        }
        let first = deliveries.first().map(|d| d.0);
        let delivered: usize = deliveries.iter().map(|d| d.3).sum();
        // Only what must be kept is turned into a record.
        let keep_delivered = self.config.storage.backup;
        for d in deliveries.iter().filter(|d| d.3 == 0 || keep_delivered) {
            self.persist(record(d));
        }
        PushOutcome::delivered(first, delivered)
    }
}

/// Queues `frame` on a session within its send bound. Refused when full: that frame is not
/// delivered here, and the client has `slow_consumer_timeout` to catch up before it is cut off
/// (see `cut_off_slow_consumers`).
fn queue_frame(s: &mut Session, frame: &SharedFrame, limits: &Limits, now: Instant) -> bool {
    if s.send(frame, limits) {
        return true;
    }
    if !matches!(s.phase, Phase::Closing) {
        s.full_since.get_or_insert(now);
    }
    false
}
