//! What a task worker does with each task: the stores it serves from, chosen by the
//! configuration, and the answer for every task.

use crate::config::Config;
use crate::ids::unix_now;
use crate::ipc::{
    ClusterMessage, LoginRefusal, PendingFrame, Reply, Task, TaskFailure, PENDING_BYTES,
    PENDING_PER_LOGIN,
};
use crate::model::{Credentials, MessageId, StoredMessage, Uid};
use crate::protocol::frames;
use crate::store::cluster::ClusterStore;
use crate::store::mysql::MysqlStore;
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{MessageStore, StoreError, TakeLimit, TokenStore, TokenVerdict};

pub struct Stores {
    tokens: Box<dyn TokenStore>,
    messages: Box<dyn MessageStore>,
    /// Presence and routing, in cluster mode.
    cluster: Option<ClusterStore>,
}

/// The failure a store error means for the task's caller.
fn failure(e: &StoreError) -> TaskFailure {
    match e {
        StoreError::Refused(_) => TaskFailure::StoreRefused,
        StoreError::NodeIdInUse { node_id, holder } => TaskFailure::NodeIdInUse {
            node_id: *node_id,
            holder: holder.clone(),
        },
        StoreError::Open(_) | StoreError::Unavailable(_) => TaskFailure::StoreUnavailable,
    }
}

impl Stores {
    pub fn open(config: &Config) -> Result<Self, StoreError> {
        let tokens: Box<dyn TokenStore> = if config.cluster_enabled() {
            Box::new(RedisStore::open(config)?)
        } else {
            Box::new(SqliteStore::open(&config.server.data_dir)?)
        };
        let messages: Box<dyn MessageStore> = if config.mysql.url.is_empty() {
            Box::new(SqliteStore::open(&config.server.data_dir)?)
        } else {
            Box::new(MysqlStore::open(config)?)
        };
        let cluster = if config.cluster_enabled() {
            Some(ClusterStore::open(config)?)
        } else {
            None
        };
        Ok(Stores {
            tokens,
            messages,
            cluster,
        })
    }

    pub fn handle(&mut self, task: Task<'_>) -> Reply {
        let result = match task {
            Task::Login(login) => self.login(&login),
            Task::SaveToken(record) => self.tokens.save(&record).map(|_| Reply::Ok),
            Task::Store(batch) => self.store(&batch),
            Task::FetchPending(uid) => Ok(self.take_pending(uid)),
            Task::Requeue { uid, ids } => self
                .messages
                .requeue(uid, &ids, unix_now())
                .map(|_| Reply::Ok),
            Task::Ping => self.tokens.ping().map(|_| Reply::Ok),
            Task::GroupStore(m) => self
                .messages
                .group_insert(std::slice::from_ref(&m))
                .map(|_| Reply::Ok),
            Task::GroupJoin { group, uids, at } => self.group_join(group, &uids, at),
            Task::GroupLeave { group, leaving } => self.group_leave(group, &leaving),
            Task::GroupSeen { uid, seen } => {
                self.messages.group_seen(uid, &seen).map(|_| Reply::Ok)
            }
            Task::GroupOwed { uid, ids } => self.messages.group_owed(uid, &ids).map(|_| Reply::Ok),
            Task::GroupLoad => self.group_load(),
            Task::GroupUndelivered {
                group,
                id,
                except,
                passed_only,
            } => self
                .messages
                .group_undelivered(group, id, &except, passed_only)
                .map(|_| Reply::Ok),
            Task::CountPending(uid) => self
                .messages
                .count_pending(uid)
                .map(|(chats, groups)| Reply::Waiting { chats, groups }),
            Task::GroupPurge { before } => self.messages.group_purge(before).map(|n| {
                if n > 0 {
                    log::info!("{n} group message(s) past their retention forgotten");
                }
                Reply::Ok
            }),
            cluster_task => match self.cluster.as_mut() {
                Some(cluster) => cluster_task_reply(cluster, cluster_task),
                None => return Reply::Failed(TaskFailure::NotClustered),
            },
        };
        result.unwrap_or_else(|e| {
            log::error!("{e}");
            Reply::Failed(failure(&e))
        })
    }

    /// Stores a batch. A batch the store refuses is retried row by row, so that one row it
    /// cannot hold does not cost the others. In a cluster, a recipient who logged in on some
    /// node after the message was routed (and found nobody) is told to fetch it: whichever of
    /// the login and the store comes second sees the other, so no message waits for a later
    /// login.
    fn store(&mut self, batch: &[StoredMessage<'_>]) -> Result<Reply, StoreError> {
        let mut refused = 0u32;
        match self.messages.insert(batch) {
            Ok(()) => {}
            Err(StoreError::Refused(why)) if batch.len() > 1 => {
                log::warn!(
                    "a batch of {} was refused ({why}); storing row by row",
                    batch.len()
                );
                for m in batch {
                    match self.messages.insert(std::slice::from_ref(m)) {
                        Ok(()) => {}
                        Err(StoreError::Refused(why)) => {
                            log::error!("message {} cannot be kept: {why}", m.id);
                            refused += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
        if let Some(cluster) = self.cluster.as_mut() {
            let mut nudged = std::collections::HashSet::new();
            for m in batch.iter().filter(|m| m.delivery.state() == 0) {
                if nudged.insert(m.to) {
                    let payload = ClusterMessage::Fetch { uid: m.to }.to_json();
                    if let Err(e) = cluster.route(m.to, &payload, true) {
                        log::warn!("could not nudge {} about a kept message: {e}", m.to);
                    }
                }
            }
        }
        Ok(match refused {
            0 => Reply::Ok,
            refused => Reply::PartlyStored { refused },
        })
    }

    /// Membership lives with the group messages on one node, in Redis in a cluster (the
    /// message store then keeps each member's place for its offline messages).
    fn group_join(
        &mut self,
        group: &str,
        uids: &[Uid],
        at: MessageId,
    ) -> Result<Reply, StoreError> {
        let n = self.messages.group_join(group, uids, at)?;
        Ok(Reply::Members(match self.cluster.as_mut() {
            Some(cluster) => cluster.group_join(group, uids)?,
            None => n,
        }))
    }

    fn group_leave(
        &mut self,
        group: &str,
        leaving: &[(Uid, Option<MessageId>)],
    ) -> Result<Reply, StoreError> {
        let n = self.messages.group_leave(group, leaving)?;
        Ok(Reply::Members(match self.cluster.as_mut() {
            Some(cluster) => {
                let uids: Vec<Uid> = leaving.iter().map(|(u, _)| *u).collect();
                cluster.group_leave(group, &uids)?
            }
            None => n,
        }))
    }

    fn group_load(&mut self) -> Result<Reply, StoreError> {
        Ok(Reply::Groups(match self.cluster.as_mut() {
            Some(cluster) => cluster.group_all()?,
            None => self.messages.group_all()?,
        }))
    }

    fn login(&mut self, login: &Credentials) -> Result<Reply, StoreError> {
        Ok(match self.tokens.check(login, unix_now())? {
            TokenVerdict::Valid => self.take_pending(login.uid),
            TokenVerdict::Unknown => Reply::Refused(LoginRefusal::Unauthorized),
            TokenVerdict::Expired => Reply::Refused(LoginRefusal::Expired),
        })
    }

    /// A message store that is down does not stop a login: its messages come later. Each kept
    /// message goes back as the frame its recipient gets, built here, off the master.
    fn take_pending(&mut self, uid: Uid) -> Reply {
        let limit = TakeLimit {
            rows: PENDING_PER_LOGIN,
            bytes: PENDING_BYTES,
        };
        match self.messages.take_pending(uid, limit, unix_now()) {
            Ok(pending) => Reply::Pending {
                more: limit.reached(pending.len(), pending.iter().map(|m| m.content.len()).sum()),
                frames: pending
                    .iter()
                    .map(|m| PendingFrame {
                        id: m.id,
                        frame: match &m.group {
                            None => {
                                frames::message(m.id, &m.kind, m.from, m.to, m.time, 0, &m.content)
                            }
                            Some(g) => frames::group_message(
                                m.id, &m.kind, m.from, g, m.time, 0, &m.content,
                            ),
                        }
                        .0
                        .to_vec(),
                    })
                    .collect(),
                store_down: false,
            },
            Err(e) => {
                log::warn!("kept messages of {uid} not readable now: {e}");
                Reply::Pending {
                    frames: Vec::new(),
                    store_down: true,
                    more: false,
                }
            }
        }
    }
}

fn cluster_task_reply(cluster: &mut ClusterStore, task: Task<'_>) -> Result<Reply, StoreError> {
    Ok(match task {
        Task::Presence(changes) => cluster.presence(&changes).map(|_| Reply::Ok)?,
        Task::Route {
            uid,
            include_self,
            message,
        } => Reply::Routed {
            nodes: cluster.route(uid, &message.to_json(), include_self)?,
        },
        Task::Broadcast(message) => cluster.broadcast(&message.to_json()).map(|_| Reply::Ok)?,
        Task::Online(uid) => Reply::Sources(cluster.remote_sources(uid)?),
        Task::GroupOnline(uids) => Reply::Online(cluster.online_of(&uids)?),
        Task::GroupNodes(changes) => cluster.group_nodes(&changes).map(|_| Reply::Ok)?,
        Task::GroupRoute { group, message } => Reply::Routed {
            nodes: cluster.group_route(group, &message.to_json())?,
        },
        Task::Heartbeat => Reply::Nodes(cluster.heartbeat()?),
        Task::PurgeSelf => cluster.purge_self().map(|_| Reply::Ok)?,
        Task::Resync(changes) => {
            cluster.purge_self()?;
            cluster.presence(&changes).map(|_| Reply::Ok)?
        }
        Task::Login(_)
        | Task::SaveToken(_)
        | Task::Store(_)
        | Task::Requeue { .. }
        | Task::FetchPending(_)
        | Task::Ping
        | Task::GroupStore(_)
        | Task::GroupJoin { .. }
        | Task::GroupLeave { .. }
        | Task::GroupSeen { .. }
        | Task::GroupOwed { .. }
        | Task::GroupLoad
        | Task::GroupUndelivered { .. }
        | Task::CountPending(_)
        | Task::GroupPurge { .. } => Reply::Failed(TaskFailure::NotClustered),
    })
}
