//! Cluster mode (Redis configured), the routing side: a message for a uid goes out through a
//! worker's `Route` task (Redis pub/sub on the nodes' own channels), and what other nodes
//! publish to this one comes back in as a `ClusterMessage`. Replies that depend on other nodes
//! (chat acks, push replies) wait here until the routing answer comes.

use super::push::{busy_body, delivered_body, online_body, PushOutcome};
use super::{Action, Origin, ReplyTo, Router};
use crate::ids::unix_now;
use crate::ipc::{ClusterMessage, MessageMeta, Reply, Task};
use crate::master::http::error_body;
use crate::master::message::{Kind, Message};
use crate::master::ws::{Outgoing, Sessions};
use crate::model::{ConnId, Delivery, GroupName, MessageId, PresenceChange, Uid};
use crate::net::stream::Transport;
use crate::protocol::{close_code, frames};
use bytes::Bytes;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

/// The task key of every presence write: one slot, one order.
pub const PRESENCE_KEY: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaiterId(u64);

/// Something waiting for routing answers.
enum Waiter {
    /// A chat message: its ack (and kept state) waits for Redis.
    ChatAck {
        conn: ConnId,
        message: Rc<Message>,
    },
    Push(PushWaiter),
    Online {
        to: ReplyTo,
        local: Vec<String>,
    },
}

struct PushWaiter {
    to: ReplyTo,
    id: Option<MessageId>,
    delivered: usize,
    remaining: usize,
    failed: bool,
    /// Each part's message and whether it reached someone.
    parts: Vec<(Rc<Message>, bool)>,
}

pub(super) struct Relay {
    /// `ip:port`: how broadcasts name their origin.
    pub(super) node: String,
    waiters: HashMap<WaiterId, Waiter>,
    next: u64,
}

impl Relay {
    pub fn new(node: String) -> Relay {
        Relay {
            node,
            waiters: HashMap::new(),
            next: 1,
        }
    }

    fn add(&mut self, w: Waiter) -> WaiterId {
        let id = WaiterId(self.next);
        self.next += 1;
        self.waiters.insert(id, w);
        id
    }
}

/// The Redis form of a message's delivery.
fn deliver_message(message: &Message) -> ClusterMessage<'_> {
    let json = message.json();
    let header = message.frame.len() - json.len();
    ClusterMessage::Deliver {
        uid: message.to,
        meta: MessageMeta {
            id: message.id,
            from: message.from,
            time: message.time,
            kind: message.kind().into(),
            content: message
                .content
                .clone()
                .map(|r| ((r.start - header) as u32, r.len() as u32)),
        },
        frame: json,
    }
}

impl Router {
    fn relay_mut(&mut self) -> Option<&mut Relay> {
        self.relay.as_mut()
    }

    /// Publishes `message` to every live node holding its recipient (this one included).
    fn route(&mut self, message: &Message, origin: Origin) {
        let task = Task::Route {
            uid: message.to,
            include_self: true,
            message: deliver_message(message),
        };
        self.task(message.to.0, &task, origin);
    }

    /// A chat message, routed through Redis; its ack and kept state wait for the answer.
    pub(super) fn relay_chat(&mut self, conn: ConnId, message: Rc<Message>) {
        let Some(relay) = self.relay_mut() else {
            return;
        };
        let waiter = relay.add(Waiter::ChatAck {
            conn,
            message: Rc::clone(&message),
        });
        self.route(&message, Origin::Route { waiter, part: 0 });
    }

    /// Pushes to uids, cluster-wide; answered when every route has answered.
    pub(super) fn relay_push(&mut self, to: ReplyTo, messages: Vec<Rc<Message>>) -> PushOutcome {
        let id = messages.first().map(|m| m.id);
        let Some(relay) = self.relay_mut() else {
            return PushOutcome::Later;
        };
        let waiter = relay.add(Waiter::Push(PushWaiter {
            to,
            id,
            delivered: 0,
            remaining: messages.len(),
            failed: false,
            parts: messages.iter().map(|m| (Rc::clone(m), false)).collect(),
        }));
        for (part, m) in messages.iter().enumerate() {
            self.route(m, Origin::Route { waiter, part });
        }
        PushOutcome::Later
    }

    pub(super) fn relay_kick(&mut self, to: ReplyTo, uid: Uid, kicked_here: usize) -> PushOutcome {
        let Some(relay) = self.relay_mut() else {
            return PushOutcome::Later;
        };
        let waiter = relay.add(Waiter::Push(PushWaiter {
            to,
            id: None,
            delivered: kicked_here,
            remaining: 1,
            failed: false,
            parts: Vec::new(),
        }));
        let task = Task::Route {
            uid,
            include_self: false,
            message: ClusterMessage::Kick { uid },
        };
        self.task(uid.0, &task, Origin::Route { waiter, part: 0 });
        PushOutcome::Later
    }

    pub(super) fn relay_online(
        &mut self,
        to: ReplyTo,
        uid: Uid,
        local: Vec<String>,
    ) -> PushOutcome {
        let Some(relay) = self.relay_mut() else {
            return PushOutcome::Later;
        };
        let waiter = relay.add(Waiter::Online { to, local });
        self.task(uid.0, &Task::Online(uid), Origin::Route { waiter, part: 0 });
        PushOutcome::Later
    }

    /// Publishes a broadcast frame (its JSON) to every node; the others deliver it.
    pub(super) fn relay_broadcast(&mut self, frame: &Bytes) {
        let Some(relay) = self.relay.as_ref() else {
            return;
        };
        let origin = relay.node.clone();
        let task = Task::Broadcast(ClusterMessage::Broadcast {
            origin: &origin,
            frame: frames::payload(frame),
        });
        self.task(PRESENCE_KEY, &task, Origin::Cluster);
    }

    /// A routing task answered: settle what waited for it.
    pub fn route_answered<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        waiter: WaiterId,
        part: usize,
        reply: Reply,
        now: Instant,
    ) {
        let Some(w) = self.relay_mut().and_then(|r| r.waiters.remove(&waiter)) else {
            return;
        };
        match w {
            Waiter::ChatAck { conn, message } => {
                let reached = match reply {
                    Reply::Routed { nodes } => nodes > 0,
                    // Redis is down: users of this node still reach each other.
                    _ => self.deliver_message(ws, &message, now) > 0,
                };
                self.ack_or_refuse(ws, conn, message, reached, now);
            }
            Waiter::Online { to, mut local } => {
                let (status, body) = match reply {
                    Reply::Sources(remote) => {
                        local.extend(remote);
                        local.sort();
                        local.dedup();
                        (200, online_body(&local))
                    }
                    _ if !local.is_empty() => {
                        local.sort();
                        (200, online_body(&local))
                    }
                    _ => (503, error_body(503, "presence unavailable: redis is down")),
                };
                self.actions.push(Action::Reply { to, status, body });
            }
            Waiter::Push(mut p) => {
                match reply {
                    Reply::Routed { nodes } => {
                        p.delivered += nodes as usize;
                        // Remote deliveries count once per node; the message is delivered.
                        if let Some((_, reached)) = p.parts.get_mut(part).filter(|_| nodes > 0) {
                            *reached = true;
                        }
                    }
                    // Redis is down: deliver here what can be, the rest is unroutable.
                    _ => match p.parts.get(part).map(|(m, _)| Rc::clone(m)) {
                        Some(message) => {
                            let n = self.deliver_message(ws, &message, now);
                            if let Some((_, reached)) = p.parts.get_mut(part) {
                                *reached |= n > 0;
                            }
                            p.delivered += n;
                            p.failed |= n == 0;
                        }
                        None => p.failed = true,
                    },
                }
                p.remaining -= 1;
                if p.remaining > 0 {
                    if let Some(r) = self.relay_mut() {
                        r.waiters.insert(waiter, Waiter::Push(p));
                    }
                    return;
                }
                self.finish_push(p);
            }
        }
    }

    fn finish_push(&mut self, p: PushWaiter) {
        let unroutable = p.failed && p.delivered == 0;
        let single = p.parts.len() == 1;
        let mut busy = false;
        if !unroutable {
            for (message, reached) in p.parts {
                if single {
                    busy = !self.keep_or_refuse(message, reached);
                } else {
                    // Admitted as a whole before it was routed.
                    self.store.keep(message, Delivery::from_reached(reached));
                }
            }
        }
        let (status, body) = if unroutable {
            (503, error_body(503, "cannot route: redis is down"))
        } else if busy {
            (503, busy_body())
        } else {
            (200, delivered_body(p.id, p.delivered))
        };
        self.actions.push(Action::Reply {
            to: p.to,
            status,
            body,
        });
    }

    /// Whether `origin` (a node's `ip:port`) names this node.
    fn is_here(&self, origin: &str) -> bool {
        self.relay.as_ref().is_some_and(|r| r.node == origin)
    }

    /// Another node (or this one, through a worker) published to this node.
    pub fn cluster_message<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        message: ClusterMessage<'_>,
        now: Instant,
    ) {
        match message {
            ClusterMessage::Deliver { uid, meta, frame } => {
                let message = Rc::new(relayed(uid, &meta, frame));
                if self.deliver_message(ws, &message, now) == 0 {
                    // Routed here, but the connection is gone or cannot take it: the sender
                    // counted this node as reached, so this node keeps it for the next login.
                    self.keep_unsent(uid, vec![Outgoing::Message(message)]);
                }
            }
            ClusterMessage::Broadcast { origin, frame } => {
                let from_here = self.is_here(origin);
                if !from_here {
                    ws.broadcast(&frames::text(frame), now);
                }
            }
            ClusterMessage::Kick { uid } => {
                self.kick_local(ws, uid, now);
            }
            ClusterMessage::Group {
                origin,
                group,
                exclude,
                meta,
                frame,
            } => {
                let from_here = self.is_here(origin);
                if let (false, Some(group)) = (from_here, GroupName::new(group)) {
                    self.group_relayed(ws, group, exclude, &meta, frame, now);
                }
            }
            ClusterMessage::Members {
                origin,
                group,
                join,
                uids,
            } => {
                let from_here = self.is_here(origin);
                if let (false, Some(group)) = (from_here, GroupName::new(group)) {
                    self.group_changed_elsewhere(if join {
                        super::GroupChange::Join(group, uids)
                    } else {
                        super::GroupChange::Leave(group, uids)
                    });
                }
            }
            ClusterMessage::Fetch { uid } => {
                if self.registry.is_online(uid) {
                    self.fetch(uid);
                }
            }
            ClusterMessage::Displace {
                uid,
                source,
                conn,
                same_device,
            } => {
                if ws.login(conn) == Some((uid, source)) {
                    if !same_device {
                        let frame = frames::login_refused(441, "logged in elsewhere");
                        ws.send(conn, Outgoing::Frame(frame), now);
                    }
                    ws.close(conn, close_code::REPLACED, "logged in elsewhere", now);
                }
            }
        }
    }

    /// Redis was away (and may have lost everything): this node's presence is rewritten from
    /// the registry, the source of truth for its own connections, and what was kept for its
    /// users meanwhile (the nudges to fetch it were lost with the subscription) is fetched.
    pub fn resync<S: Transport>(&mut self, ws: &Sessions<S>) {
        let time = unix_now();
        let changes: Vec<PresenceChange> = self
            .registry
            .users()
            .flat_map(|(uid, entries)| {
                entries.iter().map(move |e| PresenceChange {
                    uid,
                    source: e.source,
                    conn: e.conn,
                    online: true,
                    time,
                    device: e.device.as_deref().map(str::to_owned),
                    client: ws.client(e.conn).map(|(addr, _)| addr.ip()),
                })
            })
            .collect();
        log::info!(
            "Redis is back: rewriting the presence of {} connections",
            changes.len()
        );
        self.task(PRESENCE_KEY, &Task::Resync(changes), Origin::Cluster);
        // The rewrite took this node out of every group's node set: it goes back in where it
        // has members online.
        let groups = self.groups.with_members_online();
        let nodes: Vec<(&str, bool)> = groups.iter().map(|g| (g.as_str(), true)).collect();
        if !nodes.is_empty() {
            self.task(PRESENCE_KEY, &Task::GroupNodes(nodes), Origin::Cluster);
        }
        self.groups.take_transitions();
        // Membership changes published while the subscription was away were missed: the
        // table is read again.
        self.groups_asked = false;
        self.ask_for_groups(std::time::Instant::now());
        let uids: Vec<Uid> = self.registry.users().map(|(uid, _)| uid).collect();
        for uid in uids {
            // Their places stop before the gap (`begin_hold`): the take brings what was
            // published while the subscription was away.
            self.fetch(uid);
        }
        self.groups.gap_closed();
    }

    /// The subscription to this node's channel was lost: group messages published meanwhile
    /// are not heard here (see `Groups::gap_opened`).
    pub fn subscription_lost(&mut self) {
        self.groups.gap_opened();
    }
}

/// A message another node routed here, as this node keeps it: the frame's JSON in a frame of
/// its own, the kept fields found by `meta`.
fn relayed(to: Uid, meta: &MessageMeta<'_>, json: &[u8]) -> Message {
    let frame = frames::text(json);
    let header = frame.len() - json.len();
    let kind = Kind::from_name(&meta.kind);
    let content = meta
        .content
        .map(|(start, len)| header + start as usize..header + (start + len) as usize)
        .filter(|r| r.end <= frame.len());
    Message {
        id: meta.id,
        from: meta.from,
        to,
        time: meta.time,
        frame,
        kind,
        content,
    }
}
