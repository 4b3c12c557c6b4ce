//! Cluster mode (Redis configured), the master's side. Presence changes go to task workers in
//! batches; a message for a uid on other nodes goes out through a worker's `Route` task (Redis
//! pub/sub on the nodes' own channels); what other nodes publish to this one arrives from the
//! subscriber process. Replies that depend on other nodes (chat acks, push replies) wait in a
//! `Waiter` until the routing answer comes back.

use super::outbuf::text_frame;
use super::pool::Origin;
use super::registry::ConnId;
use super::routing::{delivered_body, PushOutcome};
use super::subscriber::Subscriber;
use super::Master;
use crate::config::Config;
use crate::ids::unix_now;
use crate::ipc::{self, PresenceChange, Reply, Task, ToWorker};
use crate::protocol::{self, close_code, MessageRecord, Uid};
use crate::store::cluster::NodeName;
use log::{info, warn};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The task key of every presence write and of the start-up purge: one slot, one order.
pub const PRESENCE_KEY: u64 = 0;

/// Where a push's reply goes once it is known.
#[derive(Debug, Clone, Copy)]
pub enum ReplyTo {
    Udp(SocketAddr),
    Http(u64),
}

/// Something waiting for routing answers.
pub enum Waiter {
    /// A chat message nobody on this node took: its ack (and stored state) waits for Redis.
    ChatAck {
        conn: ConnId,
        record: MessageRecord,
    },
    Push(PushWaiter),
    Online {
        to: ReplyTo,
        local: Vec<String>,
    },
}

pub struct PushWaiter {
    to: ReplyTo,
    id: Option<u64>,
    delivered: usize,
    remaining: usize,
    failed: bool,
    /// Messages to keep once their state is known (undelivered anywhere: state 0).
    /// Each part's message, whether it reached someone, and its frame (for local delivery
    /// if Redis cannot route it).
    records: Vec<(MessageRecord, bool, String)>,
}

pub struct ClusterState {
    pub node: NodeName,
    /// `ip:port`, how broadcasts name their origin.
    node_label: String,
    subscriber: Subscriber,
    presence: Vec<PresenceChange>,
    /// Connections whose login frame waits for the next presence write.
    welcoming: Vec<ConnId>,
    waiters: HashMap<u64, Waiter>,
    next_waiter: u64,
    next_heartbeat: Instant,
    heartbeat_every: Duration,
    /// The start-up purge of this node's old presence entries has been answered.
    pub purged: bool,
}

impl ClusterState {
    pub fn new(config: &Config, exe: PathBuf) -> Result<ClusterState, ipc::IpcError> {
        let mut config_frame = Vec::new();
        ipc::encode(
            &ToWorker::Config(Box::new(config.clone())),
            &mut config_frame,
        )?;
        let node = NodeName::from_config(config);
        Ok(ClusterState {
            node_label: node.id(),
            node,
            subscriber: Subscriber::new(exe, config_frame),
            presence: Vec::new(),
            welcoming: Vec::new(),
            waiters: HashMap::new(),
            next_waiter: 1,
            next_heartbeat: Instant::now(),
            heartbeat_every: Duration::from_secs((config.redis.node_ttl / 3).max(1)),
            purged: false,
        })
    }

    pub fn subscribed(&self) -> bool {
        self.subscriber.subscribed
    }

    fn add_waiter(&mut self, w: Waiter) -> u64 {
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.insert(id, w);
        id
    }
}

impl Master {
    fn cluster_mut(&mut self) -> Option<&mut ClusterState> {
        self.cluster.as_mut()
    }

    /// Called every loop turn: heartbeats, subscriber respawn, presence batches.
    pub(super) fn cluster_turn(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.subscriber.tick(self.poll.registry(), now);
        if now >= c.next_heartbeat && self.stopping.is_none() {
            c.next_heartbeat = now + c.heartbeat_every;
            self.pool.submit(0, Task::Heartbeat, Origin::Heartbeat);
        }
        let changes = std::mem::take(&mut c.presence);
        let welcome = std::mem::take(&mut c.welcoming);
        if changes.is_empty() && welcome.is_empty() {
            return;
        }
        // All presence writes go through one worker slot, in order, with the resync among
        // them: a change can never overtake another. A failed write is not retried; after an
        // outage the node's whole presence is rewritten instead.
        self.pool.submit(
            PRESENCE_KEY,
            Task::Presence(changes),
            Origin::Presence { welcome },
        );
    }

    /// The next presence batch carries this connection's online change; its answer welcomes it.
    pub(super) fn await_presence(&mut self, conn: ConnId) {
        if let Some(c) = self.cluster_mut() {
            c.welcoming.push(conn);
        }
    }

    pub(super) fn presence_changed(&mut self, uid: Uid, source: &str, conn: ConnId, online: bool) {
        let device = self
            .sessions
            .get(&conn)
            .and_then(|s| s.device.as_deref().map(str::to_owned));
        if let Some(c) = self.cluster_mut() {
            c.presence.push(PresenceChange {
                uid,
                source: source.to_owned(),
                fd: conn,
                online,
                time: unix_now(),
                device,
            });
        }
    }

    pub(super) fn on_subscriber_event(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let (payloads, resubscribed) = c.subscriber.on_event(self.poll.registry(), now);
        if resubscribed {
            self.resync_presence();
        }
        for p in payloads {
            self.on_cluster_message(&p, now);
        }
    }

    /// Redis was away (and may have lost everything): rewrite this node's presence from the
    /// registry, the source of truth for its own connections.
    fn resync_presence(&mut self) {
        let time = unix_now();
        let mut changes = Vec::new();
        for (uid, entries) in self.registry.users() {
            for e in entries {
                let device = e.device.as_deref().map(str::to_owned);
                changes.push(PresenceChange {
                    uid,
                    source: e.source.to_string(),
                    fd: e.conn,
                    online: true,
                    time,
                    device,
                });
            }
        }
        info!(
            "Redis is back: rewriting the presence of {} connections",
            changes.len()
        );
        if let Some(c) = self.cluster_mut() {
            // Changes still queued are contained in the rewrite.
            c.presence.clear();
        }
        self.pool.submit(
            PRESENCE_KEY,
            Task::Resync(changes),
            Origin::Cluster {
                waiter: None,
                part: 0,
            },
        );
        // Messages for users here sent while this node could not be reached were kept (and the
        // nudge to fetch them was lost with the subscription): fetch them now.
        let uids: Vec<Uid> = self.registry.users().map(|(uid, _)| uid).collect();
        for uid in uids {
            self.pool
                .submit(uid, Task::FetchPending(uid), Origin::FetchPending { uid });
        }
    }

    /// A message another node (or this one, through a worker) published to this node.
    fn on_cluster_message(&mut self, payload: &str, now: Instant) {
        let Ok(msg) = serde_json::from_str::<Value>(payload) else {
            warn!("unreadable cluster message: {payload:.200}");
            return;
        };
        let uid = msg.get("uid").and_then(protocol::uid_from_json);
        match (msg["t"].as_str(), uid) {
            (Some("deliver"), Some(uid)) => {
                if let Some(frame) = msg["frame"].as_str() {
                    let _ = self.deliver_to_uid(uid, &text_frame(frame), now);
                }
            }
            (Some("broadcast"), _) => {
                let from_here = c_node_id(&self.cluster) == msg["origin"].as_str();
                if let (false, Some(frame)) = (from_here, msg["frame"].as_str()) {
                    self.deliver_to_all(&text_frame(frame), now);
                }
            }
            (Some("kick"), Some(uid)) => {
                self.kick_local(uid, now);
            }
            (Some("fetch"), Some(uid)) => {
                if self.registry.is_online(uid) {
                    self.pool
                        .submit(uid, Task::FetchPending(uid), Origin::FetchPending { uid });
                }
            }
            (Some("displace"), Some(uid)) => {
                let (Some(source), Some(fd)) = (msg["source"].as_str(), msg["fd"].as_u64()) else {
                    return;
                };
                let ours = self
                    .sessions
                    .get(&fd)
                    .and_then(|s| s.login.as_ref())
                    .is_some_and(|(u, src)| *u == uid && &**src == source);
                if ours {
                    if msg["same_device"] != true {
                        self.send_text(fd, &protocol::login_refused(441, "logged in elsewhere"));
                    }
                    self.close_session(fd, close_code::REPLACED, "logged in elsewhere", now);
                }
            }
            _ => warn!("unknown cluster message: {payload:.200}"),
        }
    }

    pub(super) fn kick_local(&mut self, uid: Uid, now: Instant) -> usize {
        let targets: Vec<ConnId> = self.registry.conn_ids(uid);
        for c in &targets {
            self.close_session(*c, close_code::KICKED, "kicked", now);
        }
        targets.len()
    }

    /// A chat message, routed through Redis to every node holding the recipient (this one
    /// included); its ack and stored state wait for the answer.
    pub(super) fn route_chat(&mut self, conn: ConnId, record: MessageRecord) {
        let payload = deliver_payload(record.to_uid, &record.to_frame_json(1));
        let uid = record.to_uid;
        let Some(c) = self.cluster_mut() else { return };
        let waiter = c.add_waiter(Waiter::ChatAck { conn, record });
        let origin = Origin::Cluster {
            waiter: Some(waiter),
            part: 0,
        };
        self.submit_route(uid, payload, true, origin);
    }

    /// Pushes to uids, cluster-wide: routed to every node holding each uid (this one included),
    /// answered when every route has answered.
    pub(super) fn route_push_to_uids(
        &mut self,
        to: ReplyTo,
        deliveries: Vec<(MessageRecord, String, usize)>,
    ) -> PushOutcome {
        let id = deliveries.first().map(|(r, _, _)| r.id);
        let delivered: usize = deliveries.iter().map(|(_, _, n)| n).sum();
        let remaining = deliveries.len();
        let routes: Vec<(Uid, String)> = deliveries
            .iter()
            .map(|(r, frame, _)| (r.to_uid, deliver_payload(r.to_uid, frame)))
            .collect();
        let records = deliveries
            .into_iter()
            .map(|(r, json, n)| (r, n > 0, json))
            .collect();
        let Some(c) = self.cluster_mut() else {
            return PushOutcome::Later;
        };
        let waiter = c.add_waiter(Waiter::Push(PushWaiter {
            to,
            id,
            delivered,
            remaining,
            failed: false,
            records,
        }));
        for (part, (uid, payload)) in routes.into_iter().enumerate() {
            let origin = Origin::Cluster {
                waiter: Some(waiter),
                part,
            };
            self.submit_route(uid, payload, true, origin);
        }
        PushOutcome::Later
    }

    /// Publishes `payload` to every live node holding `uid` (through a worker); `origin` waits.
    fn submit_route(&mut self, uid: Uid, payload: String, include_self: bool, origin: Origin) {
        self.pool.submit(
            uid,
            Task::Route {
                uid,
                payload,
                include_self,
            },
            origin,
        );
    }

    pub(super) fn route_kick(&mut self, to: ReplyTo, uid: Uid, kicked_here: usize) -> PushOutcome {
        let payload = json!({"t": "kick", "uid": uid.to_string()}).to_string();
        let Some(c) = self.cluster_mut() else {
            return PushOutcome::Later;
        };
        let waiter = c.add_waiter(Waiter::Push(PushWaiter {
            to,
            id: None,
            delivered: kicked_here,
            remaining: 1,
            failed: false,
            records: Vec::new(),
        }));
        self.submit_route(
            uid,
            payload,
            false,
            Origin::Cluster {
                waiter: Some(waiter),
                part: 0,
            },
        );
        PushOutcome::Later
    }

    pub(super) fn route_online(
        &mut self,
        to: ReplyTo,
        uid: Uid,
        local: Vec<String>,
    ) -> PushOutcome {
        let Some(c) = self.cluster_mut() else {
            return PushOutcome::Later;
        };
        let waiter = c.add_waiter(Waiter::Online { to, local });
        self.pool.submit(
            uid,
            Task::Online(uid),
            Origin::Cluster {
                waiter: Some(waiter),
                part: 0,
            },
        );
        PushOutcome::Later
    }

    pub(super) fn publish_broadcast(&mut self, frame: &str) {
        let Some(origin) = c_node_id(&self.cluster).map(str::to_owned) else {
            return;
        };
        let payload = json!({"t": "broadcast", "origin": origin, "frame": frame}).to_string();
        self.pool.submit(
            0,
            Task::Broadcast(payload),
            Origin::Cluster {
                waiter: None,
                part: 0,
            },
        );
    }

    /// A routing task answered: settle what waited for it.
    pub(super) fn on_cluster_answer(&mut self, waiter: Option<u64>, part: usize, reply: Reply) {
        let Some(id) = waiter else {
            if let Reply::Failed { code, message } = reply {
                warn!("cluster task failed ({code}): {message}");
            }
            return;
        };
        let Some(c) = self.cluster_mut() else { return };
        let Some(w) = c.waiters.remove(&id) else {
            return;
        };
        match w {
            Waiter::ChatAck { conn, mut record } => {
                record.state = match reply {
                    Reply::Routed { nodes } => u8::from(nodes > 0),
                    // Redis is down: users of this node still reach each other.
                    _ => u8::from(
                        self.deliver_to_uid(
                            record.to_uid,
                            &text_frame(&record.to_frame_json(1)),
                            Instant::now(),
                        ) > 0,
                    ),
                };
                self.send_text(
                    conn,
                    &protocol::ack_frame(record.id, record.to_uid, record.state),
                );
                self.persist(record);
            }
            Waiter::Online { to, mut local } => {
                let body = match reply {
                    Reply::Sources(remote) => {
                        local.extend(remote);
                        local.sort();
                        local.dedup();
                        Some(
                            json!({"code": 0, "msg": "ok", "onLine": u8::from(!local.is_empty()), "sources": local}),
                        )
                    }
                    _ if !local.is_empty() => {
                        Some(json!({"code": 0, "msg": "ok", "onLine": 1, "sources": local}))
                    }
                    _ => None,
                };
                match body {
                    Some(b) => self.send_push_reply(to, 200, &b.to_string()),
                    None => self.send_push_reply(
                        to,
                        503,
                        &super::http::error_body(503, "presence unavailable: redis is down"),
                    ),
                }
            }
            Waiter::Push(mut p) => {
                match reply {
                    Reply::Routed { nodes } => {
                        p.delivered += nodes as usize;
                        // Remote deliveries count once per node; the record is delivered.
                        if nodes > 0 {
                            if let Some((_, reached, _)) = p.records.get_mut(part) {
                                *reached = true;
                            }
                        }
                    }
                    // Redis is down: deliver here what can be, the rest is unroutable.
                    _ => match p.records.get_mut(part) {
                        Some((record, reached, json)) => {
                            let n = self.deliver_to_uid(
                                record.to_uid,
                                &text_frame(json),
                                Instant::now(),
                            );
                            *reached |= n > 0;
                            p.delivered += n;
                            p.failed |= n == 0;
                        }
                        None => p.failed = true,
                    },
                }
                p.remaining -= 1;
                if p.remaining > 0 {
                    if let Some(c) = self.cluster_mut() {
                        c.waiters.insert(id, Waiter::Push(p));
                    }
                    return;
                }
                self.finish_push(p);
            }
        }
    }

    fn finish_push(&mut self, p: PushWaiter) {
        let unroutable = p.failed && p.delivered == 0;
        if !unroutable {
            for (mut record, reached, _) in p.records {
                record.state = u8::from(reached);
                self.persist(record);
            }
        }
        let (status, body) = if unroutable {
            (
                503,
                super::http::error_body(503, "cannot route: redis is down"),
            )
        } else {
            (200, delivered_body(p.id, p.delivered))
        };
        self.send_push_reply(p.to, status, &body);
    }

    pub(super) fn send_push_reply(&mut self, to: ReplyTo, status: u16, body: &str) {
        match to {
            ReplyTo::Udp(addr) => {
                if let Some(s) = self.sockets.as_ref() {
                    let _ = s.udp.send_to(body.as_bytes(), addr);
                }
            }
            ReplyTo::Http(conn) => self.answer_api(conn, status, body),
        }
    }

    pub(super) fn stop_cluster(&mut self) {
        if let Some(c) = self.cluster.as_mut() {
            c.subscriber.stop(self.poll.registry());
        }
    }

    /// No presence change waits to be sent (a stopping node leaves presence clean).
    pub(super) fn cluster_idle(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.presence.is_empty() && c.welcoming.is_empty())
    }

    pub(super) fn cluster_ready(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.purged)
    }
}

fn c_node_id(cluster: &Option<ClusterState>) -> Option<&str> {
    cluster.as_ref().map(|c| c.node_label.as_str())
}

fn deliver_payload(uid: Uid, frame: &str) -> String {
    json!({"t": "deliver", "uid": uid.to_string(), "frame": frame}).to_string()
}
