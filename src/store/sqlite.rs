//! The embedded store: one SQLite file in `data_dir`, opened by each task worker (WAL mode, so
//! readers never wait for the writer). Tokens and messages survive restarts of any process.
//!
//! Only undelivered messages are indexed (a partial index on `state = 0`): a backup copy of a
//! delivered message is appended to the table and touches no index page, where an index on
//! every row made each commit rewrite one index page per recipient.

use super::groups::{merge_take, seen_after_take};
use super::sqlite_groups::{advance_seen, owe, read_group_pending};
use super::{verdict, MessageStore, StoreError, TakeLimit, TokenStore, TokenVerdict};
use crate::model::{Credentials, MessageId, PendingMessage, StoredMessage, TokenRecord, Uid};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

const DB_FILE: &str = "wspush.db";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS login_token (
    uid     INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    token   TEXT    NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (uid, source)
);
CREATE TABLE IF NOT EXISTS chat (
    id          INTEGER PRIMARY KEY,
    uid         INTEGER NOT NULL,
    to_uid      INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    state       INTEGER NOT NULL DEFAULT 0,
    content     TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_undelivered ON chat (to_uid, id) WHERE state = 0;
DROP INDEX IF EXISTS chat_to_uid_state;
CREATE TABLE IF NOT EXISTS group_message (
    id          INTEGER PRIMARY KEY,
    grp         TEXT    NOT NULL,
    uid         INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    exclude_uid INTEGER
);
CREATE INDEX IF NOT EXISTS group_message_grp ON group_message (grp, id);
CREATE TABLE IF NOT EXISTS group_member (
    grp  TEXT    NOT NULL,
    uid  INTEGER NOT NULL,
    seen INTEGER NOT NULL,
    joined INTEGER NOT NULL,
    PRIMARY KEY (grp, uid)
);
CREATE INDEX IF NOT EXISTS group_member_uid ON group_member (uid);
CREATE INDEX IF NOT EXISTS group_member_seen ON group_member (grp, seen);
CREATE TABLE IF NOT EXISTS group_owed (
    uid INTEGER NOT NULL,
    id  INTEGER NOT NULL,
    PRIMARY KEY (uid, id)
);
CREATE INDEX IF NOT EXISTS group_owed_id ON group_owed (id);
";

pub struct SqliteStore {
    pub(super) db: Connection,
}

/// Busy, locked or I/O trouble may pass; anything else is about the request itself.
pub(super) fn store_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, OutOfMemory, SystemIoFailure,
    };
    match e.sqlite_error_code() {
        Some(
            DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen | OutOfMemory,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Refused(e.to_string()),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

impl SqliteStore {
    /// Opens (creating if needed) the store. Workers start together and race to switch a new
    /// file to WAL mode, a step SQLite's busy handler does not cover: retry it while busy.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Open(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join(DB_FILE);
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::try_open(&path) {
                Ok(db) => return Ok(SqliteStore { db }),
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(StoreError::Open(format!("{}: {e}", path.display()))),
            }
        }
    }

    fn try_open(path: &Path) -> rusqlite::Result<Connection> {
        let db = Connection::open(path)?;
        db.busy_timeout(BUSY_TIMEOUT)?;
        // NORMAL in WAL mode: a power loss may lose the last commits, never corrupt the file.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)?;
        Ok(db)
    }
}

impl TokenStore for SqliteStore {
    fn check(&mut self, login: &Credentials, now: u64) -> Result<TokenVerdict, StoreError> {
        let row: Option<(String, i64)> = self
            .db
            .prepare_cached("SELECT token, expires FROM login_token WHERE uid = ?1 AND source = ?2")
            .map_err(store_err)?
            .query_row(params![login.uid.0 as i64, login.source.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(store_err)?;
        Ok(verdict(
            row.as_ref().map(|(t, e)| (t.as_str(), *e as u64)),
            &login.token,
            now,
        ))
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        // A read of the tokens' table itself: the file is there, readable and not locked out.
        self.db
            .prepare_cached("SELECT 1 FROM login_token LIMIT 1")
            .map_err(store_err)?
            .query_row([], |_| Ok(()))
            .optional()
            .map_err(store_err)?;
        Ok(())
    }

    fn save(&mut self, r: &TokenRecord) -> Result<(), StoreError> {
        self.db
            .prepare_cached(
                "INSERT INTO login_token (uid, source, token, expires) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (uid, source) DO UPDATE SET token = excluded.token, expires = excluded.expires",
            )
            .map_err(store_err)?
            .execute(params![
                r.uid.0 as i64,
                r.source.as_str(),
                r.token,
                r.expires as i64
            ])
            .map_err(store_err)?;
        Ok(())
    }
}

impl MessageStore for SqliteStore {
    fn insert(&mut self, messages: &[StoredMessage<'_>]) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chat (id, uid, to_uid, type, state, content, create_time, update_time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )
                .map_err(store_err)?;
            for m in messages {
                stmt.execute(params![
                    m.id.0 as i64,
                    m.from.0 as i64,
                    m.to.0 as i64,
                    m.kind,
                    m.delivery.state(),
                    m.content,
                    m.time as i64
                ])
                .map_err(store_err)?;
            }
        }
        tx.commit().map_err(store_err)
    }

    fn take_pending(
        &mut self,
        uid: Uid,
        limit: TakeLimit,
        now: u64,
    ) -> Result<Vec<PendingMessage>, StoreError> {
        // Most logins have nothing waiting: indexed reads, no write lock.
        if self.read_chats(uid, 1)?.is_empty()
            && !self.exists(super::sqlite_groups::GROUP_PENDING_ANY, uid)?
        {
            return Ok(Vec::new());
        }
        let tx = self.write_tx()?;
        let chats = read_chats(&tx, uid, limit.rows)?;
        let groups = read_group_pending(&tx, uid, limit.rows)?;
        let taken = merge_take(chats, groups, limit);
        set_state(
            &tx,
            taken.iter().filter(|m| m.group.is_none()).map(|m| m.id),
            1,
            now,
        )?;
        {
            let mut unowe = tx
                .prepare_cached("DELETE FROM group_owed WHERE uid = ?1 AND id = ?2")
                .map_err(store_err)?;
            for m in taken.iter().filter(|m| m.group.is_some()) {
                unowe
                    .execute(params![uid.0 as i64, m.id.0 as i64])
                    .map_err(store_err)?;
            }
        }
        advance_seen(&tx, uid, &seen_after_take(&taken))?;
        tx.commit().map_err(store_err)?;
        Ok(taken)
    }

    fn count_pending(&mut self, uid: Uid) -> Result<(u64, u64), StoreError> {
        let chats = self.count(
            "SELECT COUNT(*) FROM chat WHERE to_uid = ?1 AND state = 0",
            uid,
        )?;
        let groups = self.count(super::sqlite_groups::GROUP_PENDING_COUNT, uid)?;
        Ok((chats, groups))
    }

    fn requeue(&mut self, uid: Uid, ids: &[MessageId], now: u64) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        set_state(&tx, ids.iter().copied(), 0, now)?;
        // A group message taken and not delivered is owed again.
        owe(&tx, uid, ids, true)?;
        tx.commit().map_err(store_err)
    }
}

impl SqliteStore {
    pub(super) fn count(&self, sql: &str, uid: Uid) -> Result<u64, StoreError> {
        self.db
            .prepare_cached(sql)
            .map_err(store_err)?
            .query_row(params![uid.0 as i64], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(store_err)
    }

    /// A transaction that takes the file's write lock at once (a write never upgrades later,
    /// where two workers could deadlock).
    pub(super) fn write_tx(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        self.db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)
    }

    /// Whether `sql` (one `?1`, the uid) finds a row.
    fn exists(&self, sql: &str, uid: Uid) -> Result<bool, StoreError> {
        self.db
            .prepare_cached(sql)
            .map_err(store_err)?
            .query_row(params![uid.0 as i64], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(store_err)
    }

    fn read_chats(&mut self, uid: Uid, rows: usize) -> Result<Vec<PendingMessage>, StoreError> {
        read_chats(&self.db, uid, rows)
    }
}

/// `uid`'s undelivered one-to-one messages, oldest first.
fn read_chats(db: &Connection, uid: Uid, rows: usize) -> Result<Vec<PendingMessage>, StoreError> {
    let mut stmt = db
        .prepare_cached(
            "SELECT id, uid, to_uid, type, content, create_time FROM chat
             WHERE to_uid = ?1 AND state = 0 ORDER BY id LIMIT ?2",
        )
        .map_err(store_err)?;
    let rows = stmt
        .query_map(params![uid.0 as i64, rows as i64], |r| {
            Ok(PendingMessage {
                id: MessageId(r.get::<_, i64>(0)? as u64),
                from: Uid(r.get::<_, i64>(1)? as u64),
                to: Uid(r.get::<_, i64>(2)? as u64),
                group: None,
                kind: r.get(3)?,
                content: r.get(4)?,
                time: r.get::<_, i64>(5)? as u64,
            })
        })
        .map_err(store_err)?;
    rows.collect::<Result<_, _>>().map_err(store_err)
}

fn set_state(
    tx: &rusqlite::Transaction<'_>,
    ids: impl Iterator<Item = MessageId>,
    state: u8,
    now: u64,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("UPDATE chat SET state = ?2, update_time = ?3 WHERE id = ?1")
        .map_err(store_err)?;
    for id in ids {
        stmt.execute(params![id.0 as i64, state, now as i64])
            .map_err(store_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoredGroupMessage;
    use crate::model::{Delivery, Source};
    use crate::store::groups::GroupMessages;

    fn temp_store() -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wspush-sqlite-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (SqliteStore::open(&dir).expect("open"), dir)
    }

    fn login(uid: u64, source: &str, token: &str) -> Credentials {
        Credentials {
            uid: Uid(uid),
            source: Source::new(source).expect("source"),
            token: token.into(),
        }
    }

    #[test]
    fn tokens_check_and_expire() {
        let (mut s, dir) = temp_store();
        let rec = TokenRecord {
            uid: Uid(7),
            source: Source::new("app").expect("source"),
            token: "tok".into(),
            expires: 100,
        };
        s.save(&rec).expect("save");
        let check = |s: &mut SqliteStore, l: Credentials, now| s.check(&l, now).expect("check");
        assert_eq!(
            check(&mut s, login(7, "app", "tok"), 50),
            TokenVerdict::Valid
        );
        assert_eq!(
            check(&mut s, login(7, "app", "bad"), 50),
            TokenVerdict::Unknown
        );
        assert_eq!(
            check(&mut s, login(7, "pc", "tok"), 50),
            TokenVerdict::Unknown
        );
        assert_eq!(
            check(&mut s, login(7, "app", "tok"), 101),
            TokenVerdict::Expired
        );
        s.save(&TokenRecord {
            expires: 200,
            ..rec
        })
        .expect("overwrite");
        assert_eq!(
            check(&mut s, login(7, "app", "tok"), 150),
            TokenVerdict::Valid
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pending_in_order_and_idempotent_insert() {
        let (mut s, dir) = temp_store();
        let msg = |id, delivery| StoredMessage {
            id: MessageId(id),
            from: Uid(1),
            to: Uid(2),
            kind: "chat",
            delivery,
            content: "{}",
            time: 5,
        };
        let (undelivered, delivered) = (Delivery::Undelivered, Delivery::Delivered);
        s.insert(&[msg(3, undelivered), msg(1, undelivered), msg(2, delivered)])
            .expect("insert");
        s.insert(&[msg(3, undelivered)]).expect("retry is harmless");
        let take = |s: &mut SqliteStore| -> Vec<u64> {
            s.take_pending(
                Uid(2),
                TakeLimit {
                    rows: 10,
                    bytes: 1 << 20,
                },
                9,
            )
            .expect("take")
            .iter()
            .map(|m| m.id.0)
            .collect()
        };
        assert_eq!(take(&mut s), vec![1, 3]);
        assert!(take(&mut s).is_empty(), "taken once");
        s.requeue(Uid(2), &[MessageId(3)], 9).expect("requeue");
        assert_eq!(take(&mut s), vec![3]);
        // A backup copy made undelivered again (its recipient was cut off) comes back too.
        s.requeue(Uid(2), &[MessageId(2)], 9).expect("requeue");
        assert_eq!(take(&mut s), vec![2]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn group_messages_are_kept_once_and_taken_in_order_with_the_rest() {
        let (mut s, dir) = temp_store();
        let limit = TakeLimit {
            rows: 100,
            bytes: 1 << 20,
        };
        let take = |s: &mut SqliteStore, uid| -> Vec<(u64, Option<String>)> {
            s.take_pending(Uid(uid), limit, 9)
                .expect("take")
                .into_iter()
                .map(|m| (m.id.0, m.group))
                .collect()
        };
        let group_msg = |id| StoredGroupMessage {
            id: MessageId(id),
            from: Uid(1),
            group: "g",
            kind: "chat",
            content: "\"hi\"",
            time: 5,
            exclude: None,
        };
        // Uid 2 joins at 10; uid 3 at 25: nothing from before joining.
        assert_eq!(
            s.group_join("g", &[Uid(2)], MessageId(10)).expect("join"),
            1
        );
        s.group_insert(&[group_msg(20)]).expect("insert");
        assert_eq!(
            s.group_join("g", &[Uid(3), Uid(2)], MessageId(25))
                .expect("join"),
            2
        );
        s.group_insert(&[group_msg(30), group_msg(30)])
            .expect("insert twice is once");
        s.insert(&[StoredMessage {
            id: MessageId(22),
            from: Uid(1),
            to: Uid(2),
            kind: "chat",
            delivery: Delivery::Undelivered,
            content: "1",
            time: 5,
        }])
        .expect("chat");
        let g = Some("g".to_string());
        assert_eq!(
            take(&mut s, 2),
            [(20, g.clone()), (22, None), (30, g.clone())]
        );
        assert!(take(&mut s, 2).is_empty(), "each exactly once");
        assert_eq!(take(&mut s, 3), [(30, g.clone())]);
        // Taken and not delivered: owed again; cut off live: owed.
        s.requeue(Uid(3), &[MessageId(30)], 9).expect("requeue");
        s.group_owed(Uid(3), &[MessageId(40)]).expect("owed");
        s.group_insert(&[group_msg(40)]).expect("insert");
        assert_eq!(take(&mut s, 3), [(30, g.clone()), (40, g.clone())]);
        // Uid 2 was online up to 40, then went offline.
        s.group_seen(Uid(2), &[("g", MessageId(40))]).expect("seen");
        s.group_insert(&[group_msg(50)]).expect("insert");
        // Leaving keeps what was sent while a member.
        assert_eq!(s.group_leave("g", &[(Uid(2), None)]).expect("leave"), 1);
        s.group_insert(&[group_msg(60)]).expect("insert");
        assert_eq!(take(&mut s, 2), [(50, g.clone())]);
        assert_eq!(
            s.group_all().expect("all"),
            [("g".to_string(), vec![Uid(3)])]
        );
        assert_eq!(s.group_purge(MessageId(55)).expect("purge"), 4);
        assert_eq!(take(&mut s, 3), [(60, g)]);
        // Written late (its first write failed): owed to whoever's place passed it.
        s.group_insert(&[group_msg(58)]).expect("late");
        assert_eq!(take(&mut s, 3), [(58, Some("g".to_string()))]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_take_stops_at_its_byte_limit_and_keeps_the_rest() {
        let (mut s, dir) = temp_store();
        let big = format!("\"{}\"", "x".repeat(1000));
        let rows: Vec<StoredMessage> = (1..=5)
            .map(|id| StoredMessage {
                id: MessageId(id),
                from: Uid(1),
                to: Uid(2),
                kind: "chat",
                delivery: Delivery::Undelivered,
                content: &big,
                time: 5,
            })
            .collect();
        s.insert(&rows).expect("insert");
        let limit = TakeLimit {
            rows: 10,
            bytes: 2500,
        };
        let ids = |v: Vec<PendingMessage>| v.iter().map(|m| m.id.0).collect::<Vec<_>>();
        assert_eq!(
            ids(s.take_pending(Uid(2), limit, 9).expect("take")),
            vec![1, 2, 3]
        );
        assert_eq!(
            ids(s.take_pending(Uid(2), limit, 9).expect("take")),
            vec![4, 5]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_old_store_is_migrated_to_the_partial_index() {
        let (s, dir) = temp_store();
        s.db.execute_batch("CREATE INDEX chat_to_uid_state ON chat (to_uid, state)")
            .expect("the old index");
        drop(s);
        let s = SqliteStore::open(&dir).expect("reopen");
        let indexes: Vec<String> = s
            .db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'chat'")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("names");
        assert_eq!(indexes, vec!["chat_undelivered".to_string()]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
