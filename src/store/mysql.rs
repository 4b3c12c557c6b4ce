//! MySQL/MariaDB message store: table `chat` (PROTOCOL.md section 7), created if missing.
//! Batches go in multi-row inserts, one transaction each; values are always bound parameters.
//! The connection is opened lazily and reopened after an error.

use super::groups::{merge_take, seen_after_take, GroupMessages};
use super::{MessageStore, StoreError, TakeLimit};
use crate::config::Config;
use crate::model::{MessageId, PendingMessage, StoredGroupMessage, StoredMessage, Uid};
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

/// Group messages, kept once each, and each member's place in its groups (see `groups`).
const GROUP_SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS group_message (
    id          BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    grp         VARCHAR(64)     NOT NULL,
    uid         BIGINT UNSIGNED NOT NULL,
    type        VARCHAR(32)     NOT NULL,
    content     MEDIUMTEXT      NOT NULL,
    create_time INT UNSIGNED    NOT NULL,
    exclude_uid BIGINT UNSIGNED NULL,
    KEY grp_id (grp, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS group_member (
    grp  VARCHAR(64)     NOT NULL,
    uid  BIGINT UNSIGNED NOT NULL,
    seen BIGINT UNSIGNED NOT NULL,
    joined BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (grp, uid),
    KEY uid (uid),
    KEY grp_seen (grp, seen)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS group_owed (
    uid BIGINT UNSIGNED NOT NULL,
    id  BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (uid, id),
    KEY id (id)
) ENGINE=InnoDB",
];

/// Members whose place is already past a message being written (and who were members when
/// it was sent) are owed it: a take went on without it.
const LATE_OWED: &str = "
INSERT IGNORE INTO group_owed (uid, id)
SELECT c.uid, m.id FROM group_member c JOIN group_message m ON m.grp = c.grp
 WHERE m.id = ? AND c.grp = ? AND c.seen >= m.id AND c.joined < m.id
   AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)";

/// Whether a group message waits for a member: no content read, no temporary table.
const GROUP_PENDING_ANY: &str = "
SELECT 1 FROM group_member c JOIN group_message m ON m.grp = c.grp AND m.id > c.seen
 WHERE c.uid = ? AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)
UNION ALL
SELECT 1 FROM group_owed o JOIN group_message m ON m.id = o.id WHERE o.uid = ?
LIMIT 1";

/// A member's group messages after its `seen`, and those it is owed, oldest first.
const GROUP_PENDING: &str = "
SELECT m.id, m.uid, m.grp, m.type, m.content, m.create_time
  FROM group_member c JOIN group_message m ON m.grp = c.grp AND m.id > c.seen
 WHERE c.uid = ? AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)
UNION
SELECT m.id, m.uid, m.grp, m.type, m.content, m.create_time
  FROM group_owed o JOIN group_message m ON m.id = o.id
 WHERE o.uid = ?
ORDER BY 1 LIMIT ?";

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
            for table in GROUP_SCHEMA {
                conn.query_drop(table).map_err(db_err)?;
            }
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
            // Most logins have nothing waiting: indexed reads, no transaction, no row locks.
            let group_waits: Option<u8> = conn.exec_first(GROUP_PENDING_ANY, (uid.0, uid.0))?;
            if read_chats(conn, uid, 1, "")?.is_empty() && group_waits.is_none() {
                return Ok(Vec::new());
            }
            let mut tx = conn.start_transaction(TxOpts::default())?;
            let chats = read_chats(&mut tx, uid, limit.rows, " FOR UPDATE")?;
            let groups = read_group_pending(&mut tx, uid, limit.rows)?;
            let taken = merge_take(chats, groups, limit);
            let chat_ids: Vec<MessageId> = taken
                .iter()
                .filter(|m| m.group.is_none())
                .map(|m| m.id)
                .collect();
            set_state(&mut tx, &chat_ids, 1, now)?;
            for m in taken.iter().filter(|m| m.group.is_some()) {
                tx.exec_drop(
                    "DELETE FROM group_owed WHERE uid = ? AND id = ?",
                    (uid.0, m.id.0),
                )?;
            }
            advance_seen(&mut tx, uid, &seen_after_take(&taken))?;
            tx.commit()?;
            Ok(taken)
        })
    }

    fn count_pending(&mut self, uid: Uid) -> Result<(u64, u64), StoreError> {
        self.with(|conn| {
            let chats: Option<u64> = conn.exec_first(
                "SELECT COUNT(*) FROM chat WHERE to_uid = ? AND state = 0",
                (uid.0,),
            )?;
            let groups: Option<u64> = conn.exec_first(
                "SELECT COUNT(*) FROM (
                 SELECT m.id FROM group_member c
                   JOIN group_message m ON m.grp = c.grp AND m.id > c.seen
                  WHERE c.uid = ? AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)
                 UNION
                 SELECT o.id FROM group_owed o JOIN group_message m ON m.id = o.id
                  WHERE o.uid = ?) owed",
                (uid.0, uid.0),
            )?;
            Ok((chats.unwrap_or(0), groups.unwrap_or(0)))
        })
    }

    fn requeue(&mut self, uid: Uid, ids: &[MessageId], now: u64) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            set_state(&mut tx, ids, 0, now)?;
            // A group message taken and not delivered is owed again.
            for id in ids {
                tx.exec_drop(
                    "INSERT IGNORE INTO group_owed (uid, id)
                     SELECT ?, id FROM group_message WHERE id = ?",
                    (uid.0, id.0),
                )?;
            }
            tx.commit()
        })
    }
}

type Row6 = (u64, u64, String, String, String, u64);

/// `uid`'s undelivered one-to-one messages, oldest first (`lock`: ` FOR UPDATE` or nothing).
fn read_chats(
    q: &mut impl Queryable,
    uid: Uid,
    rows: usize,
    lock: &str,
) -> mysql::Result<Vec<PendingMessage>> {
    let rows: Vec<(u64, u64, u64, String, String, u64)> = q.exec(
        format!(
            "SELECT id, uid, to_uid, type, content, create_time FROM chat
             WHERE to_uid = ? AND state = 0 ORDER BY id LIMIT ?{lock}"
        ),
        (uid.0, rows as u64),
    )?;
    Ok(rows
        .into_iter()
        .map(|(id, from, to, kind, content, time)| PendingMessage {
            id: MessageId(id),
            from: Uid(from),
            to: Uid(to),
            group: None,
            kind,
            content,
            time,
        })
        .collect())
}

/// The group messages `uid` is owed, oldest first.
fn read_group_pending(
    q: &mut impl Queryable,
    uid: Uid,
    rows: usize,
) -> mysql::Result<Vec<PendingMessage>> {
    let rows: Vec<Row6> = q.exec(GROUP_PENDING, (uid.0, uid.0, rows as u64))?;
    Ok(rows
        .into_iter()
        .map(|(id, from, group, kind, content, time)| PendingMessage {
            id: MessageId(id),
            from: Uid(from),
            to: uid,
            group: Some(group),
            kind,
            content,
            time,
        })
        .collect())
}

/// `uid` has had its groups' messages up to these ids (a member's `seen` never goes back).
fn advance_seen(q: &mut impl Queryable, uid: Uid, seen: &[(&str, MessageId)]) -> mysql::Result<()> {
    for (group, id) in seen {
        q.exec_drop(
            "UPDATE group_member SET seen = GREATEST(seen, ?) WHERE grp = ? AND uid = ?",
            (id.0, *group, uid.0),
        )?;
    }
    Ok(())
}

fn member_count(q: &mut impl Queryable, group: &str) -> mysql::Result<u64> {
    let n: Option<u64> =
        q.exec_first("SELECT COUNT(*) FROM group_member WHERE grp = ?", (group,))?;
    Ok(n.unwrap_or(0))
}

impl GroupMessages for MysqlStore {
    fn group_insert(&mut self, messages: &[StoredGroupMessage<'_>]) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            // One row a statement: whether it is new decides whether it is owed late.
            for m in messages {
                tx.exec_drop(
                    "INSERT IGNORE INTO group_message
                     (id, grp, uid, type, content, create_time, exclude_uid)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.id.0,
                        m.group,
                        m.from.0,
                        m.kind,
                        m.content,
                        m.time,
                        m.exclude.map(|u| u.0),
                    ),
                )?;
                if tx.affected_rows() > 0 {
                    tx.exec_drop(LATE_OWED, (m.id.0, m.group))?;
                }
            }
            tx.commit()
        })
    }

    fn group_undelivered(
        &mut self,
        group: &str,
        id: MessageId,
        except: &[Uid],
        passed_only: bool,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            tx.exec_drop(
                "INSERT IGNORE INTO group_owed (uid, id)
                 SELECT c.uid, m.id FROM group_member c JOIN group_message m ON m.grp = c.grp
                  WHERE m.id = ? AND c.grp = ? AND c.joined < m.id
                    AND (? = 0 OR c.seen >= m.id)
                    AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)",
                (id.0, group, u8::from(passed_only)),
            )?;
            for chunk in except.chunks(ROWS_PER_INSERT * 5) {
                let marks = vec!["?"; chunk.len()].join(",");
                let mut params: Vec<Value> = vec![id.0.into()];
                params.extend(chunk.iter().map(|u| Value::from(u.0)));
                tx.exec_drop(
                    format!("DELETE FROM group_owed WHERE id = ? AND uid IN ({marks})"),
                    params,
                )?;
            }
            tx.commit()
        })
    }

    fn group_join(&mut self, group: &str, uids: &[Uid], at: MessageId) -> Result<u64, StoreError> {
        self.with(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            for chunk in uids.chunks(ROWS_PER_INSERT * 5) {
                let rows = vec!["(?,?,?,?)"; chunk.len()].join(",");
                let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
                for uid in chunk {
                    params.extend([group.into(), uid.0.into(), at.0.into(), at.0.into()]);
                }
                tx.exec_drop(
                    format!(
                        "INSERT IGNORE INTO group_member (grp, uid, seen, joined) VALUES {rows}"
                    ),
                    params,
                )?;
            }
            let n = member_count(&mut tx, group)?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn group_leave(
        &mut self,
        group: &str,
        leaving: &[(Uid, Option<MessageId>)],
    ) -> Result<u64, StoreError> {
        self.with(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            // An online leaver had everything up to its `seen`; then what each is owed is kept
            // and it leaves, a set of leavers per statement (an ungroup may be 100,000).
            for (uid, seen) in leaving {
                if let Some(seen) = seen {
                    advance_seen(&mut tx, *uid, &[(group, *seen)])?;
                }
            }
            for chunk in leaving.chunks(ROWS_PER_INSERT * 5) {
                let marks = vec!["?"; chunk.len()].join(",");
                let mut params: Vec<Value> = vec![group.into()];
                params.extend(chunk.iter().map(|(uid, _)| Value::from(uid.0)));
                tx.exec_drop(
                    format!(
                        "INSERT IGNORE INTO group_owed (uid, id)
                         SELECT c.uid, m.id FROM group_member c
                           JOIN group_message m ON m.grp = c.grp AND m.id > c.seen
                          WHERE c.grp = ? AND c.uid IN ({marks})
                            AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)"
                    ),
                    params.clone(),
                )?;
                tx.exec_drop(
                    format!("DELETE FROM group_member WHERE grp = ? AND uid IN ({marks})"),
                    params,
                )?;
            }
            let n = member_count(&mut tx, group)?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn group_seen(&mut self, uid: Uid, seen: &[(&str, MessageId)]) -> Result<(), StoreError> {
        self.with(|conn| advance_seen(conn, uid, seen))
    }

    fn group_owed(&mut self, uid: Uid, ids: &[MessageId]) -> Result<(), StoreError> {
        self.with(|conn| {
            for id in ids {
                conn.exec_drop(
                    "INSERT IGNORE INTO group_owed (uid, id) VALUES (?, ?)",
                    (uid.0, id.0),
                )?;
            }
            Ok(())
        })
    }

    fn group_all(&mut self) -> Result<Vec<(String, Vec<Uid>)>, StoreError> {
        self.with(|conn| {
            let rows: Vec<(String, u64)> =
                conn.query("SELECT grp, uid FROM group_member ORDER BY grp")?;
            let mut out: Vec<(String, Vec<Uid>)> = Vec::new();
            for (group, uid) in rows {
                match out.last_mut() {
                    Some((g, members)) if *g == group => members.push(Uid(uid)),
                    _ => out.push((group, vec![Uid(uid)])),
                }
            }
            Ok(out)
        })
    }

    fn group_purge(&mut self, before: MessageId) -> Result<u64, StoreError> {
        self.with(|conn| {
            conn.exec_drop("DELETE FROM group_message WHERE id < ?", (before.0,))?;
            let n = conn.affected_rows();
            conn.exec_drop("DELETE FROM group_owed WHERE id < ?", (before.0,))?;
            Ok(n)
        })
    }
}
