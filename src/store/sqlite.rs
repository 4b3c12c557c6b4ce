//! The embedded store: one SQLite file in `data_dir`, opened by each task worker (WAL mode, so
//! readers never wait for the writer). Tokens and messages survive restarts of any process.

use super::{verdict, MessageStore, StoreError, TokenStore, TokenVerdict};
use crate::ipc::TokenRecord;
use crate::protocol::{MessageRecord, Uid};
use rusqlite::{params, Connection, OptionalExtension};
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
CREATE INDEX IF NOT EXISTS chat_to_uid_state ON chat (to_uid, state);
";

pub struct SqliteStore {
    db: Connection,
}

fn is_busy(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

fn query_err(e: rusqlite::Error) -> StoreError {
    StoreError::Query(e.to_string())
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
    fn check(
        &mut self,
        uid: Uid,
        source: &str,
        token: &str,
        now: u64,
    ) -> Result<TokenVerdict, StoreError> {
        let row: Option<(String, i64)> = self
            .db
            .prepare_cached("SELECT token, expires FROM login_token WHERE uid = ?1 AND source = ?2")
            .map_err(query_err)?
            .query_row(params![uid as i64, source], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(query_err)?;
        Ok(verdict(
            row.as_ref().map(|(t, e)| (t.as_str(), *e as u64)),
            token,
            now,
        ))
    }

    fn save(&mut self, r: &TokenRecord) -> Result<(), StoreError> {
        self.db
            .prepare_cached(
                "INSERT INTO login_token (uid, source, token, expires) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (uid, source) DO UPDATE SET token = excluded.token, expires = excluded.expires",
            )
            .map_err(query_err)?
            .execute(params![r.uid as i64, r.source, r.token, r.expires as i64])
            .map_err(query_err)?;
        Ok(())
    }
}

impl MessageStore for SqliteStore {
    fn insert(&mut self, messages: &[MessageRecord]) -> Result<(), StoreError> {
        let tx = self.db.transaction().map_err(query_err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chat (id, uid, to_uid, type, state, content, create_time, update_time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )
                .map_err(query_err)?;
            for m in messages {
                stmt.execute(params![
                    m.id as i64,
                    m.uid as i64,
                    m.to_uid as i64,
                    m.kind,
                    m.state,
                    m.content,
                    m.time as i64
                ])
                .map_err(query_err)?;
            }
        }
        tx.commit().map_err(query_err)
    }

    fn take_pending(
        &mut self,
        uid: Uid,
        limit: usize,
        now: u64,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        // Most logins have nothing waiting: a cached read, no transaction, no file lock.
        let any: Option<i64> = self
            .db
            .prepare_cached("SELECT 1 FROM chat WHERE to_uid = ?1 AND state = 0 LIMIT 1")
            .map_err(query_err)?
            .query_row(params![uid as i64], |r| r.get(0))
            .optional()
            .map_err(query_err)?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let tx = self.db.transaction().map_err(query_err)?;
        let taken: Vec<MessageRecord> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, uid, to_uid, type, content, create_time FROM chat
                     WHERE to_uid = ?1 AND state = 0 ORDER BY id LIMIT ?2",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map(params![uid as i64, limit as i64], |r| {
                    Ok(MessageRecord {
                        id: r.get::<_, i64>(0)? as u64,
                        uid: r.get::<_, i64>(1)? as u64,
                        to_uid: r.get::<_, i64>(2)? as u64,
                        kind: r.get(3)?,
                        state: 0,
                        content: r.get(4)?,
                        time: r.get::<_, i64>(5)? as u64,
                    })
                })
                .map_err(query_err)?;
            rows.collect::<Result<_, _>>().map_err(query_err)?
        };
        set_state(&tx, taken.iter().map(|m| m.id), 1, now)?;
        tx.commit().map_err(query_err)?;
        Ok(taken)
    }

    fn requeue(&mut self, ids: &[u64], now: u64) -> Result<(), StoreError> {
        let tx = self.db.transaction().map_err(query_err)?;
        set_state(&tx, ids.iter().copied(), 0, now)?;
        tx.commit().map_err(query_err)
    }
}

fn set_state(
    tx: &rusqlite::Transaction<'_>,
    ids: impl Iterator<Item = u64>,
    state: u8,
    now: u64,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("UPDATE chat SET state = ?2, update_time = ?3 WHERE id = ?1")
        .map_err(query_err)?;
    for id in ids {
        stmt.execute(params![id as i64, state, now as i64])
            .map_err(query_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wspush-sqlite-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (SqliteStore::open(&dir).expect("open"), dir)
    }

    #[test]
    fn tokens_check_and_expire() {
        let (mut s, dir) = temp_store();
        let rec = TokenRecord {
            uid: 7,
            source: "app".into(),
            token: "tok".into(),
            expires: 100,
        };
        s.save(&rec).expect("save");
        assert_eq!(
            s.check(7, "app", "tok", 50).expect("check"),
            TokenVerdict::Valid
        );
        assert_eq!(
            s.check(7, "app", "bad", 50).expect("check"),
            TokenVerdict::Unknown
        );
        assert_eq!(
            s.check(7, "pc", "tok", 50).expect("check"),
            TokenVerdict::Unknown
        );
        assert_eq!(
            s.check(7, "app", "tok", 101).expect("check"),
            TokenVerdict::Expired
        );
        s.save(&TokenRecord {
            expires: 200,
            ..rec
        })
        .expect("overwrite");
        assert_eq!(
            s.check(7, "app", "tok", 150).expect("check"),
            TokenVerdict::Valid
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pending_in_order_and_idempotent_insert() {
        let (mut s, dir) = temp_store();
        let msg = |id, state| MessageRecord {
            id,
            uid: 1,
            to_uid: 2,
            kind: "chat".into(),
            state,
            content: "{}".into(),
            time: 5,
        };
        s.insert(&[msg(3, 0), msg(1, 0), msg(2, 1)])
            .expect("insert");
        s.insert(&[msg(3, 0)]).expect("retry is harmless");
        let take = |s: &mut SqliteStore| -> Vec<u64> {
            s.take_pending(2, 10, 9)
                .expect("take")
                .iter()
                .map(|m| m.id)
                .collect()
        };
        assert_eq!(take(&mut s), vec![1, 3]);
        assert!(take(&mut s).is_empty(), "taken once");
        s.requeue(&[3], 9).expect("requeue");
        assert_eq!(take(&mut s), vec![3]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
