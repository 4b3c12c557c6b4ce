//! The embedded store's side of groups (see `groups`): tables `group_message`,
//! `group_member` and `group_owed`, created with the others (`sqlite::SCHEMA`).

use super::groups::GroupMessages;
use super::sqlite::{store_err, SqliteStore};
use super::StoreError;
use crate::model::{MessageId, PendingMessage, StoredGroupMessage, Uid};
use rusqlite::{params, Connection};

/// A member's group messages after its `seen`, and those it is owed, oldest first.
const GROUP_PENDING: &str = "
SELECT m.id, m.uid, m.grp, m.type, m.content, m.create_time
  FROM group_member c JOIN group_message m ON m.grp = c.grp AND m.id > c.seen
 WHERE c.uid = ?1 AND (m.exclude_uid IS NULL OR m.exclude_uid <> ?1)
UNION
SELECT m.id, m.uid, m.grp, m.type, m.content, m.create_time
  FROM group_owed o JOIN group_message m ON m.id = o.id
 WHERE o.uid = ?1
ORDER BY 1 LIMIT ?2";

/// Members whose place is already past a message being written (and who were members when
/// it was sent) are owed it: a take went on without it.
const LATE_OWED: &str = "
INSERT OR IGNORE INTO group_owed (uid, id)
SELECT c.uid, m.id FROM group_member c JOIN group_message m ON m.grp = c.grp
 WHERE m.id = ?2 AND c.grp = ?1 AND c.seen >= m.id AND c.joined < m.id
   AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)";

/// Whether a group message waits for a member: no content read, nothing to sort.
pub(super) const GROUP_PENDING_ANY: &str = "
SELECT 1 FROM group_member c JOIN group_message m ON m.grp = c.grp AND m.id > c.seen
 WHERE c.uid = ?1 AND (m.exclude_uid IS NULL OR m.exclude_uid <> ?1)
UNION ALL
SELECT 1 FROM group_owed o JOIN group_message m ON m.id = o.id WHERE o.uid = ?1
LIMIT 1";

/// How many group messages `uid` is owed (`GROUP_PENDING` without its limit).
pub(super) const GROUP_PENDING_COUNT: &str = "
SELECT COUNT(*) FROM (
SELECT m.id FROM group_member c JOIN group_message m ON m.grp = c.grp AND m.id > c.seen
 WHERE c.uid = ?1 AND (m.exclude_uid IS NULL OR m.exclude_uid <> ?1)
UNION
SELECT o.id FROM group_owed o JOIN group_message m ON m.id = o.id WHERE o.uid = ?1)";

/// The group messages `uid` is owed, oldest first.
pub(super) fn read_group_pending(
    db: &Connection,
    uid: Uid,
    rows: usize,
) -> Result<Vec<PendingMessage>, StoreError> {
    let mut stmt = db.prepare_cached(GROUP_PENDING).map_err(store_err)?;
    let rows = stmt
        .query_map(params![uid.0 as i64, rows as i64], |r| {
            Ok(PendingMessage {
                id: MessageId(r.get::<_, i64>(0)? as u64),
                from: Uid(r.get::<_, i64>(1)? as u64),
                to: uid,
                group: Some(r.get(2)?),
                kind: r.get(3)?,
                content: r.get(4)?,
                time: r.get::<_, i64>(5)? as u64,
            })
        })
        .map_err(store_err)?;
    rows.collect::<Result<_, _>>().map_err(store_err)
}

/// `uid` has had its groups' messages up to these ids (a member's `seen` never goes back).
pub(super) fn advance_seen(
    tx: &Connection,
    uid: Uid,
    seen: &[(&str, MessageId)],
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("UPDATE group_member SET seen = MAX(seen, ?3) WHERE grp = ?1 AND uid = ?2")
        .map_err(store_err)?;
    for (group, id) in seen {
        stmt.execute(params![group, uid.0 as i64, id.0 as i64])
            .map_err(store_err)?;
    }
    Ok(())
}

/// Group messages `ids` are owed to `uid`. `kept_only`: only ids of kept group messages (the
/// list may hold one-to-one ones too).
pub(super) fn owe(
    tx: &Connection,
    uid: Uid,
    ids: &[MessageId],
    kept_only: bool,
) -> Result<(), StoreError> {
    let sql = if kept_only {
        "INSERT OR IGNORE INTO group_owed (uid, id)
         SELECT ?1, id FROM group_message WHERE id = ?2"
    } else {
        "INSERT OR IGNORE INTO group_owed (uid, id) VALUES (?1, ?2)"
    };
    let mut stmt = tx.prepare_cached(sql).map_err(store_err)?;
    for id in ids {
        stmt.execute(params![uid.0 as i64, id.0 as i64])
            .map_err(store_err)?;
    }
    Ok(())
}

impl GroupMessages for SqliteStore {
    fn group_insert(&mut self, messages: &[StoredGroupMessage<'_>]) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO group_message
                     (id, grp, uid, type, content, create_time, exclude_uid)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(store_err)?;
            let mut late = tx.prepare_cached(LATE_OWED).map_err(store_err)?;
            for m in messages {
                let inserted = stmt
                    .execute(params![
                        m.id.0 as i64,
                        m.group,
                        m.from.0 as i64,
                        m.kind,
                        m.content,
                        m.time as i64,
                        m.exclude.map(|u| u.0 as i64)
                    ])
                    .map_err(store_err)?;
                if inserted > 0 {
                    late.execute(params![m.group, m.id.0 as i64])
                        .map_err(store_err)?;
                }
            }
        }
        tx.commit().map_err(store_err)
    }

    fn group_undelivered(
        &mut self,
        group: &str,
        id: MessageId,
        except: &[Uid],
        passed_only: bool,
    ) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT OR IGNORE INTO group_owed (uid, id)
             SELECT c.uid, m.id FROM group_member c JOIN group_message m ON m.grp = c.grp
              WHERE c.grp = ?1 AND m.id = ?2 AND c.joined < m.id
                AND (?3 = 0 OR c.seen >= m.id)
                AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)",
            params![group, id.0 as i64, i64::from(passed_only)],
        )
        .map_err(store_err)?;
        {
            let mut had = tx
                .prepare_cached("DELETE FROM group_owed WHERE uid = ?1 AND id = ?2")
                .map_err(store_err)?;
            for uid in except {
                had.execute(params![uid.0 as i64, id.0 as i64])
                    .map_err(store_err)?;
            }
        }
        tx.commit().map_err(store_err)
    }

    fn group_join(&mut self, group: &str, uids: &[Uid], at: MessageId) -> Result<u64, StoreError> {
        let tx = self.write_tx()?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO group_member (grp, uid, seen, joined)
                     VALUES (?1, ?2, ?3, ?3)",
                )
                .map_err(store_err)?;
            for uid in uids {
                stmt.execute(params![group, uid.0 as i64, at.0 as i64])
                    .map_err(store_err)?;
            }
        }
        let n = member_count(&tx, group)?;
        tx.commit().map_err(store_err)?;
        Ok(n)
    }

    fn group_leave(
        &mut self,
        group: &str,
        leaving: &[(Uid, Option<MessageId>)],
    ) -> Result<u64, StoreError> {
        let tx = self.write_tx()?;
        {
            let mut keep_owed = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO group_owed (uid, id)
                     SELECT c.uid, m.id FROM group_member c
                       JOIN group_message m ON m.grp = c.grp AND m.id > MAX(c.seen, ?3)
                      WHERE c.grp = ?1 AND c.uid = ?2
                        AND (m.exclude_uid IS NULL OR m.exclude_uid <> c.uid)",
                )
                .map_err(store_err)?;
            let mut remove = tx
                .prepare_cached("DELETE FROM group_member WHERE grp = ?1 AND uid = ?2")
                .map_err(store_err)?;
            for (uid, seen) in leaving {
                let seen = seen.map_or(0, |s| s.0 as i64);
                keep_owed
                    .execute(params![group, uid.0 as i64, seen])
                    .map_err(store_err)?;
                remove
                    .execute(params![group, uid.0 as i64])
                    .map_err(store_err)?;
            }
        }
        let n = member_count(&tx, group)?;
        tx.commit().map_err(store_err)?;
        Ok(n)
    }

    fn group_seen(&mut self, uid: Uid, seen: &[(&str, MessageId)]) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        advance_seen(&tx, uid, seen)?;
        tx.commit().map_err(store_err)
    }

    fn group_owed(&mut self, uid: Uid, ids: &[MessageId]) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        owe(&tx, uid, ids, false)?;
        tx.commit().map_err(store_err)
    }

    fn group_all(&mut self) -> Result<Vec<(String, Vec<Uid>)>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT grp, uid FROM group_member ORDER BY grp")
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, Uid(r.get::<_, i64>(1)? as u64)))
            })
            .map_err(store_err)?;
        let mut out: Vec<(String, Vec<Uid>)> = Vec::new();
        for row in rows {
            let (group, uid) = row.map_err(store_err)?;
            match out.last_mut() {
                Some((g, members)) if *g == group => members.push(uid),
                _ => out.push((group, vec![uid])),
            }
        }
        Ok(out)
    }

    fn group_purge(&mut self, before: MessageId) -> Result<u64, StoreError> {
        let tx = self.write_tx()?;
        let n = tx
            .execute(
                "DELETE FROM group_message WHERE id < ?1",
                params![before.0 as i64],
            )
            .map_err(store_err)?;
        tx.execute(
            "DELETE FROM group_owed WHERE id < ?1",
            params![before.0 as i64],
        )
        .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(n as u64)
    }
}

fn member_count(tx: &Connection, group: &str) -> Result<u64, StoreError> {
    tx.prepare_cached("SELECT COUNT(*) FROM group_member WHERE grp = ?1")
        .map_err(store_err)?
        .query_row(params![group], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(store_err)
}
