//! A task worker process: reads tasks from standard input, answers on standard output. It may
//! block (stores, network); the master never does. It exits when the master's end closes.

pub mod subscriber;

use crate::config::Config;
use crate::ids::unix_now;
use crate::ipc::{self, IpcError, Reply, Task, ToMaster, ToWorker, PENDING_PER_LOGIN};
use crate::protocol::MessageRecord;
use crate::store::cluster::ClusterStore;
use crate::store::mysql::MysqlStore;
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{MessageStore, StoreError, TokenStore, TokenVerdict};
use std::io::{self, BufReader, BufWriter, Write};

#[derive(Debug)]
pub enum WorkerError {
    Channel(IpcError),
    NoConfig,
    Store(StoreError),
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Channel(e) => write!(f, "{e}"),
            WorkerError::NoConfig => {
                f.write_str("the first frame from the master was not the configuration")
            }
            WorkerError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WorkerError {}

impl From<IpcError> for WorkerError {
    fn from(e: IpcError) -> Self {
        WorkerError::Channel(e)
    }
}

pub fn run() -> Result<(), WorkerError> {
    // If the master is killed outright, do not linger as an orphan.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let mut input = BufReader::with_capacity(256 * 1024, io::stdin().lock());
    let mut output = BufWriter::with_capacity(256 * 1024, io::stdout().lock());

    let config = match ipc::read_frame_blocking::<ToWorker>(&mut input)? {
        Some(ToWorker::Config(c)) => c,
        _ => return Err(WorkerError::NoConfig),
    };
    if crate::logging::redirect_to(&config.server.log_file).is_err() {
        // Standard error still reaches the master's log.
    }
    crate::logging::init("worker", &config.server.log_level);

    let mut stores = match Stores::open(&config) {
        Ok(s) => s,
        Err(e) => {
            send(
                &mut output,
                &ToMaster::Fatal {
                    message: e.to_string(),
                },
            )?;
            return Err(WorkerError::Store(e));
        }
    };
    // Logged before the master hears of it, so that the master's own "ready" line comes after
    // every worker's: log rotation right after start-up then loses no line to the old file.
    log::debug!("task worker ready");
    send(
        &mut output,
        &ToMaster::Ready {
            pid: std::process::id(),
        },
    )?;

    let mut frame = Vec::new();
    while let Some(msg) = ipc::read_frame_blocking::<ToWorker>(&mut input)? {
        match msg {
            ToWorker::Task { id, task } => {
                let reply = stores.handle(task);
                frame.clear();
                ipc::encode(&ToMaster::Done { id, reply }, &mut frame)?;
                output.write_all(&frame).map_err(IpcError::Io)?;
            }
            ToWorker::ReopenLog => {
                if let Err(e) = crate::logging::redirect_to(&config.server.log_file) {
                    log::error!("cannot reopen {}: {e}", config.server.log_file.display());
                }
            }
            ToWorker::Config(_) => log::warn!("ignoring a second configuration frame"),
        }
        // Answer in batches: flush only once no further task is already waiting.
        if input.buffer().is_empty() {
            output.flush().map_err(IpcError::Io)?;
        }
    }
    output.flush().map_err(IpcError::Io)?;
    log::debug!("master closed the channel; task worker exits");
    Ok(())
}

fn send(out: &mut impl Write, msg: &ToMaster) -> Result<(), IpcError> {
    let mut frame = Vec::new();
    ipc::encode(msg, &mut frame)?;
    out.write_all(&frame)?;
    out.flush()?;
    Ok(())
}

fn cluster_task_reply(cluster: &mut ClusterStore, task: Task) -> Result<Reply, StoreError> {
    Ok(match task {
        Task::Presence(changes) => cluster.presence(&changes).map(|_| Reply::Ok)?,
        Task::Route {
            uid,
            payload,
            include_self,
        } => Reply::Routed {
            nodes: cluster.route(uid, &payload, include_self)?,
        },
        Task::Broadcast(payload) => cluster.broadcast(&payload).map(|_| Reply::Ok)?,
        Task::Online(uid) => Reply::Sources(cluster.remote_sources(uid)?),
        Task::Heartbeat => match cluster.heartbeat() {
            Ok(()) => Reply::Ok,
            Err(StoreError::Query(e)) if e.contains("node_id") => Reply::Failed {
                code: 409,
                message: e,
            },
            Err(e) => return Err(e),
        },
        Task::PurgeSelf => cluster.purge_self().map(|_| Reply::Ok)?,
        Task::Resync(changes) => {
            cluster.purge_self()?;
            cluster.presence(&changes).map(|_| Reply::Ok)?
        }
        other => return Err(StoreError::Query(format!("not a cluster task: {other:?}"))),
    })
}

/// The stores a worker serves from, chosen by the configuration.
struct Stores {
    tokens: Box<dyn TokenStore>,
    messages: Box<dyn MessageStore>,
    /// Presence and routing, in cluster mode.
    cluster: Option<ClusterStore>,
}

impl Stores {
    fn open(config: &Config) -> Result<Self, StoreError> {
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

    fn handle(&mut self, task: Task) -> Reply {
        let result = match task {
            Task::Login(c) => self.login(c.uid, &c.source, &c.token),
            Task::SaveToken(record) => self.tokens.save(&record).map(|_| Reply::Ok),
            Task::Store(batch) => self.store(&batch),
            Task::FetchPending(uid) => Ok(self.take_pending(uid)),
            Task::Requeue(ids) => self.messages.requeue(&ids, unix_now()).map(|_| Reply::Ok),
            cluster_task => match self.cluster.as_mut() {
                Some(cluster) => cluster_task_reply(cluster, cluster_task),
                None => Err(StoreError::Query(
                    "a cluster task, but Redis is not configured".into(),
                )),
            },
        };
        result.unwrap_or_else(|e| {
            log::error!("{e}");
            Reply::Failed {
                code: 503,
                message: "store unavailable".into(),
            }
        })
    }

    /// Stores a batch. In a cluster, a recipient who logged in on some node after the message
    /// was routed (and found nobody) is told to fetch it: whichever of the login and the store
    /// comes second sees the other, so no message waits for a later login.
    fn store(&mut self, batch: &[MessageRecord]) -> Result<Reply, StoreError> {
        self.messages.insert(batch)?;
        if let Some(cluster) = self.cluster.as_mut() {
            let mut nudged = std::collections::HashSet::new();
            for m in batch.iter().filter(|m| m.state == 0) {
                if nudged.insert(m.to_uid) {
                    let payload =
                        serde_json::json!({"t": "fetch", "uid": m.to_uid.to_string()}).to_string();
                    if let Err(e) = cluster.route(m.to_uid, &payload, true) {
                        log::warn!("could not nudge {} about a stored message: {e}", m.to_uid);
                    }
                }
            }
        }
        Ok(Reply::Ok)
    }

    fn login(&mut self, uid: u64, source: &str, token: &str) -> Result<Reply, StoreError> {
        Ok(match self.tokens.check(uid, source, token, unix_now())? {
            TokenVerdict::Valid => self.take_pending(uid),
            TokenVerdict::Unknown => Reply::LoginRefused {
                code: 401,
                message: "unauthorized".into(),
            },
            TokenVerdict::Expired => Reply::LoginRefused {
                code: 401,
                message: "expired".into(),
            },
        })
    }

    /// A message store that is down does not stop a login: its messages come later.
    fn take_pending(&mut self, uid: u64) -> Reply {
        match self
            .messages
            .take_pending(uid, PENDING_PER_LOGIN, unix_now())
        {
            Ok(pending) => Reply::LoginOk {
                pending,
                store_down: false,
            },
            Err(e) => {
                log::warn!("stored messages of {uid} not readable now: {e}");
                Reply::LoginOk {
                    pending: Vec::new(),
                    store_down: true,
                }
            }
        }
    }
}
