//! Token and message stores behind one interface each. The embedded implementation (SQLite in
//! `data_dir`, shared by every task worker process) needs no server; Redis (tokens) and MySQL
//! (messages) plug in behind the same traits, and `cluster` keeps the cluster's shared state
//! (presence, routing, liveness) in Redis. Stores are used from task workers only.
//!
//! Presence has no store of its own on one node: the master's registry is the presence table.

pub mod cluster;
mod cluster_groups;
pub mod groups;
pub mod login_record;
pub mod mysql;
pub mod redis;
pub mod sqlite;
mod sqlite_groups;

use crate::model::{Credentials, MessageId, PendingMessage, StoredMessage, TokenRecord, Uid};
use crate::secret::same_secret;
use std::fmt;

/// Why a store call failed, in the terms a caller acts on.
#[derive(Debug)]
pub enum StoreError {
    /// The store cannot be opened at all (bad path, bad URL): the worker cannot serve.
    Open(String),
    /// The store is down, busy or slow: the same call may succeed later.
    Unavailable(String),
    /// The store refused this request (a constraint, a value it cannot hold): retrying the same
    /// request will not help.
    Refused(String),
    /// Another live node holds this node's id.
    NodeIdInUse { node_id: u16, holder: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open(e) => write!(f, "store cannot open: {e}"),
            StoreError::Unavailable(e) => write!(f, "store unavailable: {e}"),
            StoreError::Refused(e) => write!(f, "store refused the request: {e}"),
            StoreError::NodeIdInUse { node_id, holder } => write!(
                f,
                "node_id {node_id} is in use by the live node {holder}: give each node its own server.node_id"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// The outcome of checking a login against the stored record.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenVerdict {
    Valid,
    /// No record for this uid and source, or a different token.
    Unknown,
    Expired,
}

pub trait TokenStore {
    fn check(&mut self, login: &Credentials, now: u64) -> Result<TokenVerdict, StoreError>;
    fn save(&mut self, record: &TokenRecord) -> Result<(), StoreError>;
    /// One cheap read, for readiness: Ok while the store answers.
    fn ping(&mut self) -> Result<(), StoreError>;
}

pub trait MessageStore: groups::GroupMessages {
    /// Stores a batch in one transaction. A message already stored (same id) is left as it is,
    /// so that a batch retried after a worker died is harmless.
    fn insert(&mut self, messages: &[StoredMessage<'_>]) -> Result<(), StoreError>;
    /// Takes the messages stored for `uid` and not yet delivered, oldest first, within `limit`,
    /// marking them delivered in the same transaction: two takes never hand out one message
    /// twice.
    fn take_pending(
        &mut self,
        uid: Uid,
        limit: TakeLimit,
        now: u64,
    ) -> Result<Vec<PendingMessage>, StoreError>;
    /// How many messages wait for `uid`'s next login: one-to-one, and group ones (a look-up
    /// for the dashboard).
    fn count_pending(&mut self, uid: Uid) -> Result<(u64, u64), StoreError>;
    /// Marks taken messages undelivered again (their recipient, `uid`, did not get them); a
    /// group message among them is owed to `uid` again.
    fn requeue(&mut self, uid: Uid, ids: &[MessageId], now: u64) -> Result<(), StoreError>;
}

/// How much one take of kept messages may hand out: at most `rows` messages, and none after
/// the one that reaches `bytes` of content (so always at least one): what a connection's send
/// queue can take at once, so that a login with a large backlog never holds it all in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeLimit {
    pub rows: usize,
    pub bytes: usize,
}

impl TakeLimit {
    /// Whether a take that handed out `taken` with `bytes` of content may have left more.
    pub fn reached(&self, taken: usize, bytes: usize) -> bool {
        taken >= self.rows || bytes >= self.bytes
    }
}

/// The verdict on a presented token against the stored one (None: no record).
pub fn verdict(stored: Option<(&str, u64)>, presented: &str, now: u64) -> TokenVerdict {
    match stored {
        Some((token, _)) if !same_secret(token, presented) => TokenVerdict::Unknown,
        Some((_, expires)) if expires < now => TokenVerdict::Expired,
        Some(_) => TokenVerdict::Valid,
        None => TokenVerdict::Unknown,
    }
}
