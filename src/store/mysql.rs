//! MySQL/MariaDB message store: table `chat` (PROTOCOL.md section 7), created if missing.
//! Batches go in multi-row inserts, one transaction each; values are always bound parameters.
//! The connection is opened lazily and reopened after an error.

use super::{MessageStore, StoreError, TakeLimit};
use crate::config::Config;
use crate::model::{MessageId, PendingMessage, StoredMessage, Uid};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, TxOpts, Value};
use std::time::Duration;

/// Rows per INSERT statement: large enough to amortise the round trip, small enough to stay
/// far below max_allowed_packet with 64 KiB messages.
const ROWS_PER_INSERT: usize = 200;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS chat (
    id          BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    uid         BIGINT UNSIGNED NOT NULL,
    to_uid      BIGINT UNSIGNED NOT NULL,
    type        VARCHAR(32)     NOT NULL,
    state       TINYINT         NOT NULL DEFAULT 0,
    content     MEDIUMTEXT      NOT NULL,
    create_time INT UNSIGNED    NOT NULL,
    update_time INT UNSIGNED    NOT NULL,
    KEY to_uid_state (to_uid, state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

pub struct MysqlStore {
    opts: Opts,
    conn: Option<Conn>,
}

/// A refusal by the server for this statement, or trouble reaching it that may pass.
fn db_err(e: mysql::Error) -> StoreError {
    // Server errors that are about the server's state, not the statement: too many
    // connections, lock wait timeout, deadlock, read-only, shutting down.
    const TRANSIENT: [u16; 6] = [1040, 1205, 1213, 1290, 1053, 1927];
    match &e {
        mysql::Error::MySqlError(m) if !TRANSIENT.contains(&m.code) => {
            StoreError::Refused(format!("mysql: {e}"))
        }
        _ => StoreError::Unavailable(format!("mysql: {e}")),
    }
}

impl MysqlStore {
    pub fn open(config: &Config) -> Result<MysqlStore, StoreError> {
        let opts = Opts::from_url(&config.mysql.url)
            .map_err(|e| StoreError::Open(format!("mysql: {e}")))?;
        let timeout = Some(Duration::from_millis(config.mysql.timeout_ms));
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(timeout)
            .read_timeout(timeout)
            .write_timeout(timeout);
        Ok(MysqlStore {
            opts: opts.into(),
            conn: None,
        })
    }

    fn with<T>(&mut self, f: impl FnOnce(&mut Conn) -> mysql::Result<T>) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let mut conn = Conn::new(self.opts.clone()).map_err(db_err)?;
            conn.query_drop(SCHEMA).map_err(db_err)?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable("mysql: no connection".into()));
        };
        let result = f(conn);
        if result.is_err() {
            // Whatever failed, a fresh connection is the safe place to retry from.
            self.conn = None;
        }
        result.map_err(db_err)
    }
}

fn set_state(
    tx: &mut mysql::Transaction<'_>,
    ids: &[MessageId],
    state: u8,
    now: u64,
) -> mysql::Result<()> {
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        let marks = vec!["?"; chunk.len()].join(",");
        let mut params: Vec<Value> = vec![state.into(), now.into()];
        params.extend(chunk.iter().map(|id| Value::from(id.0)));
        tx.exec_drop(
            format!("UPDATE chat SET state = ?, update_time = ? WHERE id IN ({marks})"),
            params,
        )?;
    }
    Ok(())
}

impl MessageStore for MysqlStore {
    fn insert(&mut self, messages: &[StoredMessage<'_>]) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            for chunk in messages.chunks(ROWS_PER_INSERT) {
                let rows = vec!["(?,?,?,?,?,?,?,?)"; chunk.len()].join(",");
                let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 8);
                for m in chunk {
                    params.extend([
                        m.id.0.into(),
                        m.from.0.into(),
                        m.to.0.into(),
                        m.kind.into(),
                        m.delivery.state().into(),
                        m.content.into(),
                        m.time.into(),
                        m.time.into(),
                    ]);
                }
                // A batch retried after a worker died may hold rows already written.
                tx.exec_drop(
                    format!(
                        "INSERT INTO chat (id, uid, to_uid, type, state, content, create_time, update_time)
                         VALUES {rows} ON DUPLICATE KEY UPDATE id = id"
                    ),
                    params,
                )?;
            }
            tx.commit()
        })
    }

    fn take_pending(
        &mut self,
        uid: Uid,
        limit: TakeLimit,
        now: u64,
    ) -> Result<Vec<PendingMessage>, StoreError> {
        self.with(|conn| {
            // Most logins have nothing waiting: one indexed read, no transaction, no row locks.
            let any: Option<u8> = conn.exec_first(
                "SELECT 1 FROM chat WHERE to_uid = ? AND state = 0 LIMIT 1",
                (uid.0,),
            )?;
            if any.is_none() {
                return Ok(Vec::new());
            }
            let mut tx = conn.start_transaction(TxOpts::default())?;
            let mut taken: Vec<PendingMessage> = Vec::new();
            let mut bytes = 0;
            // Rows past the byte limit are read off the wire and dropped, not kept.
            let rows = tx.exec_iter(
                "SELECT id, uid, to_uid, type, content, create_time FROM chat
                 WHERE to_uid = ? AND state = 0 ORDER BY id LIMIT ? FOR UPDATE",
                (uid.0, limit.rows as u64),
            )?;
            for row in rows {
                if bytes >= limit.bytes {
                    continue;
                }
                let (id, from, to, kind, content, time): (u64, u64, u64, String, String, u64) =
                    mysql::from_row_opt(row?).map_err(|e| mysql::Error::FromRowError(e.0))?;
                bytes += content.len();
                taken.push(PendingMessage {
                    id: MessageId(id),
                    from: Uid(from),
                    to: Uid(to),
                    kind,
                    content,
                    time,
                });
            }
            let ids: Vec<MessageId> = taken.iter().map(|m| m.id).collect();
            set_state(&mut tx, &ids, 1, now)?;
            tx.commit()?;
            Ok(taken)
        })
    }

    fn requeue(&mut self, ids: &[MessageId], now: u64) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            set_state(&mut tx, ids, 0, now)?;
            tx.commit()
        })
    }
}
