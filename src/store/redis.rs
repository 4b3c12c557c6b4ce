//! Redis, used from task workers only: login tokens (`login{uid}`), and (cluster mode) presence
//! and routing between nodes. One connection per worker, opened lazily and reopened after an
//! error, with timeouts on every call, so that a Redis outage costs an error reply, never a hang.

use super::login_record;
use super::{verdict, StoreError, TokenStore, TokenVerdict};
use crate::config::Config;
use crate::model::{Credentials, TokenRecord};
use redis::{Connection, RedisResult};
use std::time::Duration;

pub struct RedisStore {
    client: redis::Client,
    conn: Option<Connection>,
    timeout: Duration,
}

/// Trouble reaching Redis may pass; an error Redis answered is about the request.
fn redis_err(e: redis::RedisError) -> StoreError {
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
    {
        StoreError::Unavailable(format!("redis: {e}"))
    } else {
        StoreError::Refused(format!("redis: {e}"))
    }
}

impl RedisStore {
    pub fn open(config: &Config) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(config.redis.url.as_str())
            .map_err(|e| StoreError::Open(format!("redis: {e}")))?;
        Ok(RedisStore {
            client,
            conn: None,
            timeout: Duration::from_millis(config.redis.timeout_ms),
        })
    }

    /// Runs `f` on the connection, (re)connecting first if needed. A connection-level failure
    /// on a connection opened earlier is retried once on a fresh one: after Redis restarted, the
    /// old connection is dead, and a command sent into it never ran on the new server.
    pub fn with<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let reused = self.conn.is_some();
        match self.try_once(&mut f) {
            Err(e) if reused && self.conn.is_none() => {
                log::debug!("redis connection went stale ({e:?}); reconnecting");
                self.try_once(&mut f)
            }
            other => other,
        }
    }

    fn try_once<T>(
        &mut self,
        f: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(self.timeout)
                .map_err(redis_err)?;
            conn.set_read_timeout(Some(self.timeout))
                .map_err(redis_err)?;
            conn.set_write_timeout(Some(self.timeout))
                .map_err(redis_err)?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable("redis: no connection".into()));
        };
        f(conn).map_err(|e| {
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error()
            {
                self.conn = None;
            }
            redis_err(e)
        })
    }
}

impl TokenStore for RedisStore {
    fn check(&mut self, login: &Credentials, now: u64) -> Result<TokenVerdict, StoreError> {
        let (uid, source, token) = (login.uid, login.source.as_str(), login.token.as_str());
        let raw: Option<Vec<u8>> =
            self.with(|c| redis::cmd("GET").arg(format!("login{uid}")).query(c))?;
        let Some(raw) = raw else {
            return Ok(TokenVerdict::Unknown);
        };
        let record = match login_record::parse(&raw) {
            Ok(all) => login_record::source_record(&all, source),
            Err(e) => {
                log::warn!("login{uid} is unreadable: {}", e.0);
                None
            }
        };
        // A record naming another uid is no record for this one.
        let record = record.filter(|r| r.uid == uid.0);
        Ok(verdict(
            record.as_ref().map(|r| (r.token.as_str(), r.expires)),
            token,
            now,
        ))
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.with(|c| redis::cmd("PING").query::<String>(c))
            .map(|_| ())
    }

    /// Sets one source inside `login{uid}`, keeping the others and the record's format (a
    /// PHP-serialized record stays PHP-serialized: the PHP login server reads it too). WATCH
    /// makes the read-modify-write atomic against other writers.
    fn save(&mut self, r: &TokenRecord) -> Result<(), StoreError> {
        let key = format!("login{}", r.uid);
        let entry = serde_json::json!({"uid": r.uid, "token": r.token, "expires": r.expires});
        self.with(|c| {
            redis::transaction(c, &[&key], |c, pipe| {
                let current: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(c)?;
                let php = current
                    .as_deref()
                    .is_some_and(login_record::is_think_serialize);
                let mut all = current
                    .as_deref()
                    .and_then(|raw| login_record::parse(raw).ok())
                    .unwrap_or_default();
                all.insert(r.source.to_string(), entry.clone());
                let value = if php {
                    login_record::to_think_serialize(&all)
                } else {
                    serde_json::Value::Object(all).to_string()
                };
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .ignore()
                    .query::<Option<()>>(c)
            })
        })?;
        Ok(())
    }
}
