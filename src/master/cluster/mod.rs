//! Cluster mode (Redis configured), the node's side of the cluster's shared state: presence
//! changes batched into one task per loop turn (all through one worker slot, in order), the
//! heartbeat that keeps this node alive in Redis (and its node id its own), the start-up purge
//! of its stale entries, and the subscriber process that hears what other nodes publish.
//! Routing messages through Redis is the router's (`router::relay`).

mod subscriber;

pub use subscriber::Inbound;

use crate::config::Config;
use crate::ipc::{self, Reply, Task, TaskFailure};
use crate::master::router::{Origin, PRESENCE_KEY};
use crate::model::{ConnId, NodeSeen, PresenceChange};
use bytes::Bytes;
use log::{error, warn};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use subscriber::Subscriber;

pub struct Cluster {
    /// `ip:port`, how this node names itself in Redis.
    node: String,
    subscriber: Subscriber,
    presence: Vec<PresenceChange>,
    /// Connections whose login frame waits for the next presence write.
    welcoming: Vec<ConnId>,
    next_heartbeat: Instant,
    heartbeat_every: Duration,
    /// The start-up purge of this node's old presence entries has been answered.
    purged: bool,
    /// The live nodes as the last heartbeat saw them, and when it was answered.
    nodes: Option<(Instant, Vec<NodeSeen>)>,
}

impl Cluster {
    pub fn new(config: &Config, exe: PathBuf, config_frame: Vec<u8>) -> Cluster {
        let (ip, port) = config.node_address();
        Cluster {
            node: format!("{ip}:{port}"),
            subscriber: Subscriber::new(exe, config_frame),
            presence: Vec::new(),
            welcoming: Vec::new(),
            next_heartbeat: Instant::now(),
            heartbeat_every: Duration::from_secs((config.redis.node_ttl / 3).max(1)),
            purged: false,
            nodes: None,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn subscribed(&self) -> bool {
        self.subscriber.subscribed()
    }

    /// How often the subscription to this node's channel was lost (Redis went away).
    pub fn subscriptions_lost(&self) -> u64 {
        self.subscriber.losses()
    }

    /// The task that clears what an earlier run of this node left in Redis.
    pub fn purge_task() -> Option<(u64, Bytes, Origin)> {
        encode(&Task::PurgeSelf).map(|b| (PRESENCE_KEY, b, Origin::Purge))
    }

    pub fn presence_changed(&mut self, change: PresenceChange) {
        self.presence.push(change);
    }

    /// The next presence batch carries this connection's online change; its answer welcomes it.
    pub fn await_presence(&mut self, conn: ConnId) {
        self.welcoming.push(conn);
    }

    /// Redis is back: presence is rewritten whole, so the changes still queued are moot.
    pub fn forget_queued_presence(&mut self) {
        self.presence.clear();
    }

    /// Every loop turn: the subscriber kept alive, the heartbeat when due, and this turn's
    /// presence changes as one task. Returns the tasks to submit.
    pub fn turn(
        &mut self,
        reg: &mio::Registry,
        now: Instant,
        stopping: bool,
    ) -> Vec<(u64, Bytes, Origin)> {
        let mut tasks = Vec::new();
        self.subscriber.tick(reg, now);
        if now >= self.next_heartbeat && !stopping {
            self.next_heartbeat = now + self.heartbeat_every;
            tasks.extend(encode(&Task::Heartbeat).map(|b| (PRESENCE_KEY, b, Origin::Heartbeat)));
        }
        if self.presence.is_empty() && self.welcoming.is_empty() {
            return tasks;
        }
        // All presence writes go through one worker slot, in order, with the resync among
        // them: a change can never overtake another. A failed write is not retried; after an
        // outage the node's whole presence is rewritten instead.
        let changes = std::mem::take(&mut self.presence);
        let welcome = std::mem::take(&mut self.welcoming);
        match encode(&Task::Presence(changes)) {
            Some(body) => tasks.push((PRESENCE_KEY, body, Origin::Presence { welcome })),
            None => self.welcoming = welcome,
        }
        tasks
    }

    pub fn on_subscriber_event(&mut self, now: Instant) -> Inbound {
        self.subscriber.on_event(now)
    }

    /// A heartbeat was answered (at `now`): its view of the live nodes is kept.
    pub fn heartbeat_answered(&mut self, reply: Reply, now: Instant) {
        match reply {
            Reply::Failed(why @ TaskFailure::NodeIdInUse { .. }) => error!("{why}"),
            Reply::Failed(why) => warn!("heartbeat failed: {why}"),
            Reply::Nodes(nodes) => self.nodes = Some((now, nodes)),
            _ => {}
        }
    }

    /// The live nodes as the last answered heartbeat saw them, and when.
    pub fn nodes(&self) -> Option<(Instant, &[NodeSeen])> {
        self.nodes.as_ref().map(|(at, n)| (*at, n.as_slice()))
    }

    /// The start-up purge was answered (a failure is logged; the node starts all the same).
    pub fn purge_answered(&mut self, reply: &Reply) {
        if let Reply::Failed(why) = reply {
            warn!("could not clear this node's old presence entries: {why}");
        }
        self.purged = true;
    }

    /// Ready to open the doors: the purge is done.
    pub fn ready(&self) -> bool {
        self.purged
    }

    /// No presence change waits to be sent (a stopping node leaves presence clean).
    pub fn idle(&self) -> bool {
        self.presence.is_empty() && self.welcoming.is_empty()
    }

    pub fn stop(&mut self) {
        self.subscriber.stop();
    }
}

fn encode(task: &Task<'_>) -> Option<Bytes> {
    ipc::encode_task(task)
        .map_err(|e| error!("a cluster task cannot be encoded: {e}"))
        .ok()
}
