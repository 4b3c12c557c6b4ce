//! Token and message stores behind one interface each. The embedded implementation (SQLite in
//! `data_dir`, shared by every task worker process) needs no server; Redis and MySQL
//! implementations plug in behind the same traits.
//!
//! Presence has no store of its own on one node: the master's registry is the presence table.

pub mod cluster;
pub mod login_record;
pub mod mysql;
pub mod redis;
pub mod sqlite;

use crate::ipc::TokenRecord;
use crate::protocol::{MessageRecord, Uid};
use std::fmt;

#[derive(Debug)]
pub enum StoreError {
    Open(String),
    Query(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open(e) => write!(f, "store cannot open: {e}"),
            StoreError::Query(e) => write!(f, "store query failed: {e}"),
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
    fn check(
        &mut self,
        uid: Uid,
        source: &str,
        token: &str,
        now: u64,
    ) -> Result<TokenVerdict, StoreError>;
    fn save(&mut self, record: &TokenRecord) -> Result<(), StoreError>;
}

pub trait MessageStore {
    /// Stores a batch in one transaction. A message already stored (same id) is left as it is,
    /// so that a batch retried after a worker died is harmless.
    fn insert(&mut self, messages: &[MessageRecord]) -> Result<(), StoreError>;
    /// Takes the messages stored for `uid` and not yet delivered, oldest first, marking them
    /// delivered in the same transaction: two takes never hand out one message twice.
    fn take_pending(
        &mut self,
        uid: Uid,
        limit: usize,
        now: u64,
    ) -> Result<Vec<MessageRecord>, StoreError>;
    /// Marks taken messages undelivered again (their recipient left before they were sent).
    fn requeue(&mut self, ids: &[u64], now: u64) -> Result<(), StoreError>;
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

/// Compares secrets in time independent of where they first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
