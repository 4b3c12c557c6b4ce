//! The routing core: what the master does with what the doors report. It owns the uid
//! registry, stamps message ids, writes each message's frame once and queues it to every
//! connection of its recipient, and decides what is kept. It does no I/O of its own: it works on
//! the WebSocket sessions it is handed, and leaves tasks for the workers and replies for the
//! push doors in its outbox (`Action`s), which the master carries out. Generic over the
//! sessions' stream, so that its tests run without sockets.
//!
//! The parts: chats and deliveries (here), logins and kept messages (`login`), pushes
//! (`push`), the cluster's routing through Redis (`relay`), and the demo page's tokens
//! (`demo`).

mod backlog;
pub mod demo;
mod group;
mod group_send;
mod login;
mod push;
mod relay;

pub use group::GroupChange;
pub use push::{online_body, PushOutcome};
pub use relay::{WaiterId, PRESENCE_KEY};

use crate::ids::{unix_now, IdGenerator};
use crate::ipc::{self, Task};
use crate::master::api::ApiConnId;
use crate::master::groups::Groups;
use crate::master::message::{Kind, Message};
use crate::master::registry::Registry;
use crate::master::store_queue::StoreQueue;
use crate::master::ws::{Outgoing, Sessions};
use crate::model::{
    ConnId, Credentials, Delivery, GroupName, MessageId, PresenceChange, Source, Uid,
};
use crate::net::stream::Transport;
use crate::protocol::frames;
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

/// Who waits for a task's answer.
#[derive(Debug, Clone)]
pub enum Origin {
    Login {
        conn: ConnId,
        uid: Uid,
        source: Source,
    },
    FetchPending {
        uid: Uid,
    },
    /// `POST /api/login`.
    ApiLogin {
        conn: ApiConnId,
    },
    /// A write nobody waits for (store, requeue); a failure goes to the retry queue.
    Store,
    /// The oldest failed write, sent to see whether the store is back.
    StoreProbe,
    /// A cluster route; the waiter (and which of its parts this is) is settled by its answer.
    Route {
        waiter: WaiterId,
        part: usize,
    },
    /// A cluster task nobody waits for (a broadcast, a presence rewrite).
    Cluster,
    Heartbeat,
    /// The start-up purge of this node's old presence entries.
    Purge,
    /// A presence batch; the connections in `welcome` get their login frame when it is answered.
    Presence {
        welcome: Vec<ConnId>,
    },
    /// Readiness: a worker slot's ping (see `metrics::readiness`).
    Ping {
        slot: usize,
    },
    /// A group membership change; its pusher waits for the answer.
    Group {
        to: ReplyTo,
        change: GroupChange,
    },
    /// A group message's write (`retry`: tried again after it failed); logins waiting for it
    /// go on when it is answered.
    GroupStored {
        group: GroupName,
        id: MessageId,
        retry: bool,
    },
    /// The start-up read of every group.
    GroupLoad,
    /// Cluster: a group message published to the nodes with members online.
    GroupRoute {
        group: GroupName,
        id: MessageId,
    },
    /// The dashboard's look-up of a uid: what was found here, waiting for the store's count
    /// of its messages waiting.
    AdminUser {
        conn: ApiConnId,
        found: serde_json::Value,
    },
    /// Cluster: which members of a group are online on some node.
    GroupOnline {
        to: ReplyTo,
        uids: Vec<Uid>,
    },
}

/// Where a push's reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo {
    Udp(SocketAddr),
    Api(ApiConnId),
    /// A demo helper on the WebSocket port (`/demo/join`).
    Page(ConnId),
}

/// What the router leaves for the master to carry out.
#[derive(Debug)]
pub enum Action {
    /// A task for the worker slot of `key`.
    Task {
        key: u64,
        body: Bytes,
        origin: Origin,
    },
    /// A push answered once other nodes had answered.
    Reply {
        to: ReplyTo,
        status: u16,
        body: String,
    },
    /// Cluster: a connection came or went (for the presence hashes).
    Presence(PresenceChange),
    /// Cluster: this connection's login frame waits for the next presence write.
    AwaitPresence(ConnId),
}

/// Counters for `/api/stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RouterStats {
    pub logins: u64,
    pub logins_refused: u64,
    /// `logins_refused` by reason: no such token, an expired one, the store could not say.
    pub logins_unauthorized: u64,
    pub logins_expired: u64,
    pub logins_unavailable: u64,
    pub pushes: u64,
    /// Messages refused because the store's backlog was full (503).
    pub refused_busy: u64,
    /// Backup copies of delivered messages not kept because the store's backlog was full.
    pub backups_skipped: u64,
    /// Messages the store refused to keep (a value it cannot hold).
    pub store_refused: u64,
}

pub struct Router {
    registry: Registry,
    ids: IdGenerator,
    store: StoreQueue,
    /// Cluster mode: messages go through Redis, and replies wait for it.
    relay: Option<relay::Relay>,
    actions: Vec<Action>,
    stats: RouterStats,
    /// The store's backlog with the workers, as last noted (see `note_in_flight`).
    in_flight: usize,
    /// Uids with kept messages on their way to them: newer messages wait behind.
    backlogs: backlog::Backlogs,
    /// Cluster mode: connections whose login frame waits for the take started at `welcome`.
    welcoming: HashMap<Uid, Vec<ConnId>>,
    /// The demo page's tokens, judged here and never by a worker.
    demo: demo::DemoTokens,
    groups: Groups,
    max_group_members: usize,
    /// Logins whose take waits for a group message to be written first (see
    /// `Groups::has_unstored`).
    waiting_logins: Vec<(ConnId, Credentials, MessageId)>,
    /// Fetches waiting the same way.
    waiting_fetches: Vec<(Uid, MessageId)>,
    /// The start-up read of the groups was asked for (and, after a failure, when again).
    groups_asked: bool,
    groups_ask_after: Option<Instant>,
    /// Group messages whose write failed: tried again (by themselves, on their group's slot).
    group_retries: std::collections::VecDeque<group_send::GroupRetry>,
    /// Group messages sent to members while a take of their messages was with a worker: owed
    /// to them once the take is answered, but those it brought (see `group::settle_held`).
    held_group: HashMap<Uid, group_send::Held>,
}

impl Router {
    pub fn new(node_id: u16, store: StoreQueue, clustered: Option<String>) -> Router {
        Router {
            registry: Registry::default(),
            ids: IdGenerator::new(node_id),
            store,
            relay: clustered.map(relay::Relay::new),
            actions: Vec::new(),
            stats: RouterStats::default(),
            in_flight: 0,
            backlogs: backlog::Backlogs::default(),
            welcoming: HashMap::new(),
            demo: demo::DemoTokens::default(),
            groups: Groups::default(),
            max_group_members: usize::MAX,
            waiting_logins: Vec::new(),
            waiting_fetches: Vec::new(),
            groups_asked: false,
            groups_ask_after: None,
            group_retries: std::collections::VecDeque::new(),
            held_group: HashMap::new(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    pub fn store(&self) -> &StoreQueue {
        &self.store
    }

    /// Everything left for the master since the last call, into `into` (both keep their room).
    pub fn drain_actions(&mut self, into: &mut Vec<Action>) {
        into.append(&mut self.actions);
    }

    #[cfg(test)]
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn task(&mut self, key: u64, task: &Task<'_>, origin: Origin) {
        match ipc::encode_task(task) {
            Ok(body) => self.actions.push(Action::Task { key, body, origin }),
            Err(e) => log::error!("a task cannot be encoded: {e}"),
        }
    }

    /// Saves a login record (`POST /api/login`).
    pub fn save_token(&mut self, record: crate::model::TokenRecord, origin: Origin) {
        self.task(record.uid.0, &Task::SaveToken(record), origin);
    }

    /// Gives back the room of tables that held far more than they do now.
    pub fn shrink(&mut self) {
        self.registry.shrink();
        self.demo.shrink();
        self.groups.shrink();
    }

    /// Hands the batched messages to the workers (once per loop turn).
    pub fn submit_store_batches(&mut self) {
        for (key, body) in self.store.take_tasks() {
            self.actions.push(Action::Task {
                key,
                body,
                origin: Origin::Store,
            });
        }
    }

    /// The bytes of tasks the workers have not answered yet (the store's backlog in flight).
    pub fn note_in_flight(&mut self, bytes: usize) {
        self.in_flight = bytes;
    }

    /// True when a message to several recipients may be accepted at all: the store's backlog
    /// has room. Counts a refusal.
    fn admit(&mut self) -> bool {
        let room = self.store.has_room(self.in_flight);
        if !room {
            self.stats.refused_busy += 1;
        }
        room
    }

    /// Keeps a message that reached `reached` (as the store must: undelivered always, a
    /// delivered one as a backup copy). With the store's backlog full, a backup copy is
    /// skipped (its recipient has it) and False means a message that reached nobody cannot be
    /// kept: the caller refuses it (503), having delivered nothing.
    fn keep_or_refuse(&mut self, message: Rc<Message>, reached: bool) -> bool {
        let delivery = Delivery::from_reached(reached);
        if !self.store.wants(delivery) {
            return true;
        }
        if self.store.has_room(self.in_flight) {
            let to = message.to;
            self.store.keep(message, delivery);
            if !reached {
                self.kept_undelivered(to);
            }
            return true;
        }
        if reached {
            self.stats.backups_skipped += 1;
            return true;
        }
        self.stats.refused_busy += 1;
        false
    }

    /// A chat from a logged-in client: stamped, its frame written once (content copied as raw
    /// JSON from the client's own frame) and queued to every connection of `to`; the sender
    /// gets its ack. `in_flight` is the bytes the workers have not answered yet.
    #[allow(clippy::too_many_arguments)]
    pub fn chat<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        conn: ConnId,
        from: Uid,
        to: Uid,
        kind: &'static str,
        text: &[u8],
        content: Range<usize>,
        in_flight: usize,
        now: Instant,
    ) {
        self.in_flight = in_flight;
        let content = std::str::from_utf8(&text[content]).unwrap_or("null");
        let id = self.ids.next_id();
        let time = unix_now();
        let (frame, layout) = frames::message(id, kind, from, to, time, 1, content);
        let message = Rc::new(Message {
            id,
            from,
            to,
            time,
            frame,
            kind: Kind::Named(kind),
            content: Some(layout.content),
        });
        if self.relay.is_some() {
            // In a cluster every message for a uid travels through Redis, to the recipient's
            // own node too: each node receives its users' messages in one order, whichever
            // node they were sent to.
            return self.relay_chat(conn, message);
        }
        let reached = self.deliver_message(ws, &message, now) > 0;
        self.ack_or_refuse(ws, conn, message, reached, now);
    }

    /// The sender's answer to its chat: its ack, once the message is kept as it must be; or
    /// error 503 when it reached nobody and the store's backlog is full.
    fn ack_or_refuse<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        conn: ConnId,
        message: Rc<Message>,
        reached: bool,
        now: Instant,
    ) {
        let (id, to) = (message.id, message.to);
        let frame = if self.keep_or_refuse(message, reached) {
            frames::ack(id, to, Delivery::from_reached(reached).state())
        } else {
            frames::error(503, "busy: try again later")
        };
        ws.send(conn, Outgoing::Frame(frame), now);
    }

    /// Queues `message` to every connection of its recipient; returns how many took it.
    fn deliver_message<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        message: &Rc<Message>,
        now: Instant,
    ) -> usize {
        // Older kept messages are on their way to this uid: this one is kept behind them.
        if self.backlogs.holds(message.to) {
            return 0;
        }
        deliver(
            &self.registry,
            ws,
            message.to,
            || Outgoing::Message(Rc::clone(message)),
            now,
        )
    }

    /// A logged-in connection left: it leaves the registry (and the cluster's presence).
    pub fn offline(&mut self, conn: ConnId, uid: Uid, source: Source) {
        if self.registry.unregister(uid, source, conn) {
            self.presence(uid, source, conn, false, None, None);
        }
        if !self.registry.is_online(uid) {
            // What waits is taken at its next login.
            self.backlogs.forget(uid);
            self.groups_offline(uid);
        }
    }

    /// A slow consumer was cut off: what it never got is kept as undelivered (unless another
    /// connection of the same user is online: that device has it), so it comes at the next
    /// login, once and in order.
    pub fn undelivered(&mut self, uid: Uid, entries: Vec<Outgoing>) {
        if !self.registry.is_online(uid) {
            self.keep_unsent(uid, entries);
        }
    }

    /// Keeps messages for `uid` that never reached it: kept ones are made undelivered again,
    /// live ones kept as undelivered.
    fn keep_unsent(&mut self, uid: Uid, entries: Vec<Outgoing>) {
        let mut requeue = Vec::new();
        let mut owed = Vec::new();
        for entry in entries {
            match entry {
                Outgoing::Message(m) if m.to == uid => {
                    requeue.push(m.id);
                    self.store.keep(m, Delivery::Undelivered);
                }
                Outgoing::Kept { id, .. } => requeue.push(id),
                Outgoing::Group(m) => owed.push(m.id),
                _ => {}
            }
        }
        self.owe(uid, owed);
        // The batch above is written first (same slot, in order); a copy already kept as
        // delivered is then marked undelivered again.
        self.submit_store_batches();
        let any = !requeue.is_empty();
        self.requeue(uid, requeue);
        if any {
            self.kept_undelivered(uid);
        }
    }

    /// Marks kept messages that did not reach their recipient undelivered again.
    fn requeue(&mut self, uid: Uid, ids: Vec<MessageId>) {
        if !ids.is_empty() {
            self.task(uid.0, &Task::Requeue { uid, ids }, Origin::Store);
        }
    }

    /// Cluster mode: tells the presence hashes that a connection came or went.
    fn presence(
        &mut self,
        uid: Uid,
        source: Source,
        conn: ConnId,
        online: bool,
        device: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) {
        if self.relay.is_some() {
            self.actions.push(Action::Presence(PresenceChange {
                uid,
                source,
                conn,
                online,
                time: unix_now(),
                device: device.map(str::to_owned),
                client,
            }));
        }
    }
}

/// Queues one entry (made by `entry`, once per connection) to every connection of `uid`;
/// returns how many took it.
fn deliver<S: Transport>(
    registry: &Registry,
    ws: &mut Sessions<S>,
    uid: Uid,
    mut entry: impl FnMut() -> Outgoing,
    now: Instant,
) -> usize {
    let mut delivered = 0;
    for e in registry.connections_of(uid) {
        if ws.send(e.conn, entry(), now) {
            delivered += 1;
        }
    }
    delivered
}

#[cfg(test)]
mod tests;
