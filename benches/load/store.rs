//! The `store` scenario's view of the message store the server writes: MariaDB when
//! `WSPUSH_BENCH_MYSQL` is set (a URL), else the embedded SQLite file in the server's
//! directory; and how many rows it holds.

use mysql::prelude::Queryable;
use std::path::Path;

pub enum Store {
    Mysql(String),
    Sqlite,
}

impl Store {
    pub fn from_env() -> Store {
        match std::env::var("WSPUSH_BENCH_MYSQL") {
            Ok(url) if !url.is_empty() => Store::Mysql(url),
            _ => Store::Sqlite,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Store::Mysql(_) => "MariaDB",
            Store::Sqlite => "embedded SQLite",
        }
    }

    /// The server's `[storage]` lines (every delivered message kept too) and the sections
    /// that point it at the store.
    pub fn server_config(&self) -> (String, String) {
        let storage = "backup = true".to_owned();
        match self {
            Store::Mysql(url) => (storage, format!("[mysql]\nurl = \"{url}\"\n")),
            Store::Sqlite => (storage, String::new()),
        }
    }

    /// Rows of `chat` with an id above `after` (ids grow with time), or None when the store
    /// cannot be read yet (say, the table is not created yet).
    pub fn rows_after(&self, server_dir: &Path, after: u64) -> Option<u64> {
        match self {
            Store::Mysql(url) => {
                let mut conn = mysql::Conn::new(mysql::Opts::from_url(url).ok()?).ok()?;
                conn.exec_first("SELECT COUNT(*) FROM chat WHERE id > ?", (after,))
                    .ok()?
            }
            Store::Sqlite => {
                let db = rusqlite::Connection::open(server_dir.join("data/wspush.db")).ok()?;
                db.query_row(
                    "SELECT COUNT(*) FROM chat WHERE id > ?1",
                    [after as i64],
                    |r| r.get::<_, i64>(0),
                )
                .ok()
                .map(|n| n as u64)
            }
        }
    }

    /// The highest message id kept so far (0 when none).
    pub fn max_id(&self, server_dir: &Path) -> u64 {
        let found = match self {
            Store::Mysql(url) => mysql::Opts::from_url(url)
                .ok()
                .and_then(|o| mysql::Conn::new(o).ok())
                .and_then(|mut c| {
                    c.query_first::<Option<u64>, _>("SELECT MAX(id) FROM chat")
                        .ok()
                })
                .flatten()
                .flatten(),
            Store::Sqlite => rusqlite::Connection::open(server_dir.join("data/wspush.db"))
                .ok()
                .and_then(|db| {
                    db.query_row("SELECT MAX(id) FROM chat", [], |r| {
                        r.get::<_, Option<i64>>(0)
                    })
                    .ok()
                })
                .flatten()
                .map(|n| n as u64),
        };
        found.unwrap_or(0)
    }
}
