//! Pushes from application back ends (UDP or HTTP): every `means` carried out, each frame
//! written once from the pusher's own `data` and shared by its recipients.

use super::Router;
use crate::ids::unix_now;
use crate::master::message::{Kind, Message};
use crate::master::security::security;
use crate::master::ws::{Outgoing, Sessions};
use crate::model::{Delivery, MessageId, Uid};
use crate::net::stream::Transport;
use crate::protocol::close_code;
use crate::protocol::push::{Means, PushData, PushRequest};
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Instant;

use super::ReplyTo;

/// The outcome of a push, as its reply datagram or HTTP body says it.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Now {
        status: u16,
        body: String,
    },
    /// The reply goes out when other nodes have answered.
    Later,
}

impl PushOutcome {
    pub(super) fn delivered(id: Option<MessageId>, delivered: usize) -> PushOutcome {
        PushOutcome::Now {
            status: 200,
            body: delivered_body(id, delivered),
        }
    }

    pub fn busy() -> PushOutcome {
        PushOutcome::Now {
            status: 503,
            body: crate::master::http::error_body(
                503,
                "busy: the store is behind, try again later",
            ),
        }
    }
}

/// The reply to a push that could not be kept: the store's backlog is full.
pub fn busy_body() -> String {
    crate::master::http::error_body(503, "busy: the store is behind, try again later")
}

/// `{"code":0,"msg":"ok","id":..,"delivered":N,"onLine":0|1}` (no `id` for a kick), written
/// directly: it answers every push, here or once other nodes have answered.
pub fn delivered_body(id: Option<MessageId>, delivered: usize) -> String {
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

/// `{"code":0,"msg":"ok","onLine":0|1,"sources":[..]}`
pub fn online_body(sources: &[String]) -> String {
    serde_json::json!({"code": 0, "msg": "ok", "onLine": u8::from(!sources.is_empty()), "sources": sources})
        .to_string()
}

impl Router {
    /// Carries out a push. `Now` answers at once; `Later` means the answer depends on other
    /// nodes and comes as an `Action::Reply` to `to`.
    pub fn push<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        req: PushRequest<'_>,
        to: ReplyTo,
        in_flight: usize,
        now: Instant,
    ) -> PushOutcome {
        self.stats.pushes += 1;
        self.in_flight = in_flight;
        let PushRequest { means, data } = req;
        match means {
            Means::ToUid(uid) => self.push_to_uids(ws, &[uid], &data, to, now),
            Means::ToUids(uids) if !uids.is_empty() => self.push_to_uids(ws, &uids, &data, to, now),
            Means::ToUids(_) | Means::Broadcast | Means::ToFds(_) => {
                let id = self.ids.next_id();
                let frame = data.frame(id, unix_now()).frame;
                let delivered = match means {
                    Means::ToFds(fds) if !fds.is_empty() => fds
                        .into_iter()
                        .filter(|c| ws.send_if_open(*c, Outgoing::Frame(frame.clone()), now))
                        .count(),
                    Means::ToFds(_) => ws.broadcast(&frame, now),
                    _ => {
                        self.relay_broadcast(&frame);
                        ws.broadcast(&frame, now)
                    }
                };
                PushOutcome::delivered(Some(id), delivered)
            }
            Means::Online(uid) => {
                let mut sources: Vec<String> = self
                    .registry
                    .connections_of(uid)
                    .iter()
                    .map(|e| e.source.to_string())
                    .collect();
                if self.relay.is_some() {
                    return self.relay_online(to, uid, sources);
                }
                sources.sort();
                PushOutcome::Now {
                    status: 200,
                    body: online_body(&sources),
                }
            }
            Means::Kick(uid) => {
                let kicked = self.kick_local(ws, uid, now);
                if self.relay.is_some() {
                    return self.relay_kick(to, uid, kicked);
                }
                PushOutcome::delivered(None, kicked)
            }
            Means::JoinGroup(group, uids) => self.join_group(group, uids, to),
            Means::LeaveGroup(group, uids) => self.leave_group(group, uids, to),
            Means::Ungroup(group) => self.ungroup(group, to),
            Means::GroupMembers(group) => self.group_members(&group, to),
            Means::ToGroup { group, exclude } => self.push_to_group(ws, group, exclude, &data, now),
        }
    }

    /// Each uid gets its own message (its own id and row): delivered here at once, and in a
    /// cluster routed through Redis before the reply. With the store's backlog full, a push
    /// to one uid is refused (503) only if it reached nobody; a push to several is refused
    /// before anything is delivered, as its reply cannot say which part was kept.
    fn push_to_uids<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        uids: &[Uid],
        data: &PushData<'_>,
        to: ReplyTo,
        now: Instant,
    ) -> PushOutcome {
        if uids.len() > 1 && !self.admit() {
            return PushOutcome::busy();
        }
        let time_now = unix_now();
        let mut messages = Vec::with_capacity(uids.len());
        for &uid in uids {
            let id = self.ids.next_id();
            let f = data.frame(id, time_now);
            messages.push(Rc::new(Message {
                id,
                from: data.sender,
                to: uid,
                time: data.time(time_now),
                frame: f.frame,
                kind: Kind::from_name(data.kind()),
                content: f.content,
            }));
        }
        let first = messages.first().map(|m| m.id);
        if self.relay.is_some() {
            return self.relay_push(to, messages);
        }
        let single = messages.len() == 1;
        let mut delivered = 0;
        for message in messages {
            let n = self.deliver_message(ws, &message, now);
            delivered += n;
            if single {
                if !self.keep_or_refuse(message, n > 0) {
                    return PushOutcome::busy();
                }
            } else {
                // Admitted above as a whole.
                let to = message.to;
                self.store.keep(message, Delivery::from_reached(n > 0));
                if n == 0 {
                    self.kept_undelivered(to);
                }
            }
        }
        PushOutcome::delivered(first, delivered)
    }

    /// Closes every connection of `uid` on this node with 4003.
    pub(super) fn kick_local<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        uid: Uid,
        now: Instant,
    ) -> usize {
        let targets: Vec<_> = self
            .registry
            .connections_of(uid)
            .iter()
            .map(|e| e.conn)
            .collect();
        for conn in &targets {
            if let Some((addr, _)) = ws.client(*conn) {
                security!("{}: uid {uid} kicked (connection {conn})", addr.ip());
            }
            ws.close(*conn, close_code::KICKED, "kicked", now);
        }
        targets.len()
    }
}
