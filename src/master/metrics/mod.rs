//! What an operator watches: `/metrics` (Prometheus) and `/readyz`. On the hot path everything
//! is a plain integer add into counters kept where things happen (the doors' and the router's
//! stats, the pool's, and the few here that no door keeps); the Prometheus families are built
//! from them only when scraped (`exposition`). The two latency histograms are the exposition
//! crate's own, fed once per task answer and once per message at the end of its loop turn.
//! Readiness pings every worker slot (`readiness`).

mod exposition;
mod readiness;
mod window;

pub use readiness::Readiness;
pub use window::LatencyWindow;

use crate::ipc::{task_head, ClusterMessage, Reply, TaskHead};
use crate::master::pool::Completion;
use crate::master::router::Origin;
use crate::net::ranges::IpRanges;
use crate::protocol::push::Means;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The push doors, as the `door` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Udp,
    Http,
}

const DOORS: [&str; 2] = ["udp", "http"];

/// The `means` label, by `means_index`.
const MEANS: [&str; 13] = [
    "to_uid",
    "to_uids",
    "to_uid_all",
    "broadcast",
    "to_fd",
    "to_fd_all",
    "online",
    "kick",
    "join_group",
    "leave_group",
    "to_group",
    "group_members",
    "ungroup",
];

/// The reply codes counted one by one (HTTP statuses; a UDP reply's `code` 0 is 200); any
/// other counts as `other`.
pub const CODES: [u16; 8] = [200, 400, 401, 405, 413, 429, 500, 503];

/// `store_errors_total{op}`: a write the store failed, kept messages it could not read, a
/// token it could not check.
const STORE_OPS: [&str; 3] = ["write", "read", "token"];
const STORE_WRITE: usize = 0;
const STORE_READ: usize = 1;
const STORE_TOKEN: usize = 2;

/// `redis_errors_total{op}`: cluster tasks that failed (and `subscribe`: subscriptions lost,
/// which the cluster counts).
const REDIS_OPS: [&str; 5] = ["route", "publish", "presence", "heartbeat", "purge"];
const REDIS_ROUTE: usize = 0;
const REDIS_PUBLISH: usize = 1;
const REDIS_PRESENCE: usize = 2;
const REDIS_HEARTBEAT: usize = 3;
const REDIS_PURGE: usize = 4;

/// Counters no door keeps, the latency histograms, and who may scrape.
pub struct Metrics {
    /// Addresses served without `sk` (`server.metrics_allow`).
    allow: IpRanges,
    clustered: bool,
    pushes: [[u64; MEANS.len()]; DOORS.len()],
    replies: [[u64; CODES.len() + 1]; DOORS.len()],
    udp_bytes_in: u64,
    udp_bytes_out: u64,
    chats_in: u64,
    store_rows_written: u64,
    store_errors: [u64; STORE_OPS.len()],
    redis_errors: [u64; REDIS_OPS.len()],
    /// Deliveries the route tasks reported (one publish per node reached), and broadcasts.
    cluster_routed: u64,
    cluster_broadcasts: u64,
    cluster_received: u64,
    /// Messages this node routed to its own connections so far: those of the current turn
    /// are `routed - routed_before_turn`.
    routed: u64,
    routed_before_turn: u64,
    turn_started: Instant,
    delivery: Histogram,
    tasks: Histogram,
    /// The delivery latencies since the dashboard's last sample.
    window: LatencyWindow,
    /// The last heartbeat Redis answered: when, and its round trip.
    heartbeat: Option<(Instant, Duration)>,
}

/// Running totals the dashboard's history takes a reading of once a second.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub chats_in: u64,
    pub pushes: u64,
    /// Push replies by code, in the order of `CODES`, then any other code.
    pub replies: [u64; CODES.len() + 1],
    pub store_rows_written: u64,
    pub redis_errors: u64,
}

impl Metrics {
    pub fn new(allow: IpRanges, clustered: bool, now: Instant) -> Metrics {
        Metrics {
            allow,
            clustered,
            pushes: Default::default(),
            replies: Default::default(),
            udp_bytes_in: 0,
            udp_bytes_out: 0,
            chats_in: 0,
            store_rows_written: 0,
            store_errors: Default::default(),
            redis_errors: Default::default(),
            cluster_routed: 0,
            cluster_broadcasts: 0,
            cluster_received: 0,
            routed: 0,
            routed_before_turn: 0,
            turn_started: now,
            // 50 µs to about 1.6 s: a loop turn, from idle to badly overloaded.
            delivery: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 100 µs to about 6.5 s: a token check or a batch of rows, to a store timing out.
            tasks: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            window: LatencyWindow::default(),
            heartbeat: None,
        }
    }

    pub fn totals(&self) -> Totals {
        let mut replies = [0; CODES.len() + 1];
        for door in &self.replies {
            for (sum, n) in replies.iter_mut().zip(door) {
                *sum += n;
            }
        }
        Totals {
            chats_in: self.chats_in,
            pushes: self.pushes.iter().flatten().sum(),
            replies,
            store_rows_written: self.store_rows_written,
            redis_errors: self.redis_errors.iter().sum(),
        }
    }

    /// The delivery latencies since the last call.
    pub fn take_window(&mut self) -> LatencyWindow {
        std::mem::take(&mut self.window)
    }

    /// When Redis last answered a heartbeat, and how long that took.
    pub fn last_heartbeat(&self) -> Option<(Instant, Duration)> {
        self.heartbeat
    }

    /// Whether `ip` may scrape without presenting a secret.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.contains(ip)
    }

    /// A loop turn starts (after the poll, at `now`): what it routes was received at `now`.
    pub fn turn_started(&mut self, now: Instant) {
        self.turn_started = now;
        self.routed_before_turn = self.routed;
    }

    /// The turn's writes are done: each message it routed took from the turn's start until
    /// now to reach its recipients' sockets.
    pub fn turn_flushed(&mut self) {
        let routed = self.routed - self.routed_before_turn;
        if routed == 0 {
            return;
        }
        let took = self.turn_started.elapsed();
        self.window.record(took, routed);
        let took = took.as_secs_f64();
        for _ in 0..routed {
            self.delivery.observe(took);
        }
    }

    /// A client's chat was handed to the router. In a cluster it reaches its recipients when
    /// Redis brings it back (counted then, in `cluster_inbound`).
    pub fn chat_received(&mut self) {
        self.chats_in += 1;
        self.routed += u64::from(!self.clustered);
    }

    /// An authenticated push, about to be carried out.
    pub fn push_received(&mut self, door: Door, means: &Means) {
        let i = means_index(means);
        self.pushes[door as usize][i] += 1;
        // `online` and `kick` write no message; in a cluster, pushes to uids travel through
        // Redis first (see `chat_received`).
        let delivered_here = match means {
            Means::Online(_) | Means::Kick(_) => false,
            Means::ToUid(_) => !self.clustered,
            Means::ToUids(uids) => uids.is_empty() || !self.clustered,
            Means::Broadcast | Means::ToFds(_) | Means::ToGroup { .. } => true,
            Means::JoinGroup(..)
            | Means::LeaveGroup(..)
            | Means::GroupMembers(_)
            | Means::Ungroup(_) => false,
        };
        self.routed += u64::from(delivered_here);
    }

    /// A push door answered with `status` (an HTTP status; UDP's `code` 0 is 200).
    pub fn push_replied(&mut self, door: Door, status: u16) {
        let i = CODES
            .iter()
            .position(|c| *c == status)
            .unwrap_or(CODES.len());
        self.replies[door as usize][i] += 1;
    }

    pub fn datagram(&mut self, bytes_in: usize, bytes_out: usize) {
        self.udp_bytes_in += bytes_in as u64;
        self.udp_bytes_out += bytes_out as u64;
    }

    /// Something another node (or this one) published to this node. `from_here`: this node's
    /// own broadcast, which it delivered when it was pushed.
    pub fn cluster_inbound(&mut self, message: &ClusterMessage<'_>, node: &str) {
        self.cluster_received += 1;
        let delivers = match message {
            ClusterMessage::Deliver { .. } => true,
            ClusterMessage::Broadcast { origin, .. } | ClusterMessage::Group { origin, .. } => {
                *origin != node
            }
            _ => false,
        };
        self.routed += u64::from(delivers);
    }

    /// A task was answered: its latency, and what its answer says of the stores and Redis.
    pub fn task_answered(&mut self, c: &Completion<Origin>) {
        if let Some(took) = c.took {
            self.tasks.observe(took.as_secs_f64());
        }
        let failed = matches!(c.reply, Reply::Failed(_));
        let unreadable = matches!(
            c.reply,
            Reply::Pending {
                store_down: true,
                ..
            }
        );
        match &c.origin {
            Origin::GroupStored { .. } if failed => self.store_errors[STORE_WRITE] += 1,
            Origin::GroupStored { .. } => self.store_rows_written += 1,
            Origin::Store | Origin::StoreProbe => match (&c.reply, task_head(&c.body)) {
                (Reply::Failed(_), _) => self.store_errors[STORE_WRITE] += 1,
                (Reply::PartlyStored { refused }, TaskHead::Store { rows }) => {
                    self.store_rows_written += rows.saturating_sub(u64::from(*refused));
                }
                (_, TaskHead::Store { rows }) => self.store_rows_written += rows,
                _ => {}
            },
            Origin::Login { .. } if failed => self.store_errors[STORE_TOKEN] += 1,
            Origin::Login { .. } | Origin::FetchPending { .. } if failed || unreadable => {
                self.store_errors[STORE_READ] += 1;
            }
            Origin::Route { .. } | Origin::GroupRoute { .. } => match c.reply {
                Reply::Routed { nodes } => self.cluster_routed += u64::from(nodes),
                Reply::Failed(_) => self.redis_errors[REDIS_ROUTE] += 1,
                _ => {}
            },
            Origin::Cluster => match (&c.reply, task_head(&c.body)) {
                (Reply::Failed(_), _) => self.redis_errors[REDIS_PUBLISH] += 1,
                (_, TaskHead::Broadcast) => self.cluster_broadcasts += 1,
                _ => {}
            },
            Origin::Presence { .. } if failed => self.redis_errors[REDIS_PRESENCE] += 1,
            Origin::Heartbeat if failed => self.redis_errors[REDIS_HEARTBEAT] += 1,
            Origin::Heartbeat => self.heartbeat = c.took.map(|took| (Instant::now(), took)),
            Origin::Purge if failed => self.redis_errors[REDIS_PURGE] += 1,
            _ => {}
        }
    }
}

fn means_index(means: &Means) -> usize {
    match means {
        Means::ToUid(_) => 0,
        Means::ToUids(uids) if !uids.is_empty() => 1,
        Means::ToUids(_) => 2,
        Means::Broadcast => 3,
        Means::ToFds(fds) if !fds.is_empty() => 4,
        Means::ToFds(_) => 5,
        Means::Online(_) => 6,
        Means::Kick(_) => 7,
        Means::JoinGroup(..) => 8,
        Means::LeaveGroup(..) => 9,
        Means::ToGroup { .. } => 10,
        Means::GroupMembers(_) => 11,
        Means::Ungroup(_) => 12,
    }
}

#[cfg(test)]
mod tests;
