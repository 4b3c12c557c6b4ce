//! The master process: one single-threaded mio loop that owns every listening socket, every
//! client connection, the uid registry and the task worker pool. It never blocks: anything
//! that might (stores) goes to a task worker, and the answers come back as events.

mod answers;
pub mod api;
pub mod cluster;
pub mod http;
mod ip_limit;
mod memory;
pub mod outbuf;
pub mod pool;
pub mod push;
pub mod registry;
mod retry;
mod routing;
pub mod signals;
pub mod signature;
mod subscriber;
mod udp;
mod udp_batch;
pub mod ws;

use crate::config::Config;
use crate::ids::IdGenerator;
use crate::protocol::{close_code, MessageRecord, Uid};
use api::ApiConn;
use log::{error, info, warn};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use pool::Pool;
use registry::{ConnId, Registry};
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use ws::{Limits, Phase, Session, WsEvent};

const WS_LISTENER: Token = Token(0);
const HTTP_LISTENER: Token = Token(1);
const UDP_SOCKET: Token = Token(2);
const SIGNALS: Token = Token(3);
const SESSION_BASE: usize = 16;
const API_BASE: usize = 1 << 48;
/// tungstenite's read buffer, allocated for every connection: small, because most frames
/// are; a larger frame gets its full length reserved and is read in chunks of this size.
const READ_CHUNK: usize = 1024;
/// How often idle connections and deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// How long after the last byte an HTTP API connection with nothing pending is kept.
const API_IDLE: Duration = Duration::from_secs(30);

/// The sockets a master serves, bound before it daemonizes so that bind errors reach the shell.
pub struct Sockets {
    pub ws: TcpListener,
    pub http: TcpListener,
    pub udp: UdpSocket,
}

/// Counters for `/api/stats`.
#[derive(Default)]
struct Stats {
    accepted: u64,
    refused_over_cap: u64,
    refused_rate_ip: u64,
    refused_push_rate: u64,
    logins: u64,
    logins_refused: u64,
    messages_in: u64,
    frames_out: u64,
    pushes: u64,
    slow_consumers: u64,
}

pub struct Master {
    poll: Poll,
    config: Config,
    limits: Limits,
    sockets: Option<Sockets>,
    /// Boxed: the table then holds pointers, so the rehash that churn brings (a rebuild, or a
    /// doubling at 19,000 connections) moves and wastes little.
    sessions: HashMap<ConnId, Box<Session>>,
    api_conns: HashMap<u64, ApiConn>,
    registry: Registry,
    pool: Pool,
    signals: signals::Signals,
    ids: IdGenerator,
    stats: Stats,
    next_conn: ConnId,
    next_api: u64,
    max_connections: usize,
    to_flush: Vec<ConnId>,
    api_to_flush: Vec<u64>,
    /// Messages to persist, handed to workers in one batch per loop turn.
    to_store: Vec<MessageRecord>,
    /// Uids with a login check in flight, and those among them a message was stored for
    /// meanwhile (their login answer may have missed it, so it is fetched again).
    logging_in: HashMap<Uid, u32>,
    missed_while_logging_in: HashSet<Uid>,
    /// Uids whose stored messages could not be read (store down), and when to try again.
    retry_fetch: HashMap<Uid, Instant>,
    /// Writes that failed, waiting for the store to come back.
    store_retry: retry::RetryQueue,
    ready_notifier: Option<std::os::unix::net::UnixStream>,
    stopping: Option<Instant>,
    pid_file: Option<PathBuf>,
    /// Taken while a batch is handled (the handler needs `&mut self`).
    udp_batch: Option<Box<udp_batch::UdpBatch>>,
    /// The UDP socket may hold datagrams not read yet.
    udp_backlog: bool,
    started: Instant,
    next_sweep: Instant,
    /// Cluster mode (Redis configured).
    cluster: Option<cluster::ClusterState>,
    /// Checks signed pushes and remembers them against replays.
    verifier: signature::Verifier,
    /// New WebSocket connections per source address.
    ip_limit: ip_limit::IpLimiter,
    /// Requests per source address on the push doors (UDP and the HTTP API, together).
    push_limit: ip_limit::IpLimiter,
    /// Gives memory back after many connections have gone.
    reclaimer: memory::Reclaimer,
    /// Listeners are registered only once every worker is up (and, in a cluster, this node's
    /// stale presence is cleared), so that no client is served half-ready.
    doors_open: bool,
}

#[derive(Debug)]
pub enum MasterError {
    Io(io::Error),
    Startup(String),
}

impl std::fmt::Display for MasterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterError::Io(e) => write!(f, "{e}"),
            MasterError::Startup(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MasterError {}

impl From<io::Error> for MasterError {
    fn from(e: io::Error) -> Self {
        MasterError::Io(e)
    }
}

impl Master {
    pub fn new(
        config: Config,
        sockets: Sockets,
        max_connections: usize,
        exe: PathBuf,
        ready_notifier: Option<std::os::unix::net::UnixStream>,
        pid_file: Option<PathBuf>,
    ) -> Result<Master, MasterError> {
        let poll = Poll::new()?;
        let reg = poll.registry();
        let mut signals = signals::Signals::install()?;
        reg.register(&mut signals.wakeup, SIGNALS, Interest::READABLE)?;
        let cluster = if config.cluster_enabled() {
            Some(
                cluster::ClusterState::new(&config, exe.clone())
                    .map_err(|e| MasterError::Startup(e.to_string()))?,
            )
        } else {
            None
        };
        let pool = Pool::new(&config, exe).map_err(|e| MasterError::Startup(e.to_string()))?;
        let s = &config.server;
        let limits = Limits {
            ws: tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(READ_CHUNK)
                .write_buffer_size(0)
                .max_write_buffer_size(64 * 1024)
                // Up to twice the maximum gets a polite error frame; past that, 1009.
                .max_message_size(Some(2 * s.max_message_size))
                .max_frame_size(Some(2 * s.max_message_size)),
            send_buffer: s.send_buffer_size,
            rate: f64::from(s.rate_limit),
            burst: f64::from(s.rate_limit_burst),
            bytes_rate: s.rate_limit_bytes as f64,
            bytes_burst: s.rate_limit_bytes_burst as f64,
        };
        let now = Instant::now();
        Ok(Master {
            poll,
            ids: IdGenerator::new(s.node_id),
            limits,
            sockets: Some(sockets),
            sessions: HashMap::new(),
            api_conns: HashMap::new(),
            registry: Registry::default(),
            pool,
            signals,
            stats: Stats::default(),
            next_conn: 1,
            next_api: 1,
            max_connections,
            to_flush: Vec::new(),
            api_to_flush: Vec::new(),
            to_store: Vec::new(),
            logging_in: HashMap::new(),
            missed_while_logging_in: HashSet::new(),
            retry_fetch: HashMap::new(),
            store_retry: retry::RetryQueue::new(config.mysql.retry_limit),
            ready_notifier,
            stopping: None,
            pid_file,
            udp_backlog: false,
            udp_batch: Some(Box::new(udp_batch::UdpBatch::new(
                config.server.max_message_size,
            ))),
            started: now,
            next_sweep: now + SWEEP_EVERY,
            cluster,
            doors_open: false,
            verifier: signature::Verifier::new(config.push.max_clock_skew),
            reclaimer: memory::Reclaimer::new(),
            push_limit: ip_limit::IpLimiter::new(config.push.rate_per_ip, config.push.burst_per_ip),
            ip_limit: ip_limit::IpLimiter::new(
                config.server.connection_rate_per_ip,
                config.server.connection_burst_per_ip,
            ),
            config,
        })
    }

    pub fn run(mut self) -> Result<(), MasterError> {
        self.pool.start(self.poll.registry())?;
        if self.cluster.is_some() {
            self.pool.submit(
                cluster::PRESENCE_KEY,
                crate::ipc::Task::PurgeSelf,
                pool::Origin::Purge,
            );
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.udp_backlog {
                Duration::ZERO
            } else {
                self.next_sweep.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                self.dispatch(event, now);
            }
            if self.udp_backlog {
                self.on_udp_readable(now);
            }
            self.apply_completions(now);
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + SWEEP_EVERY;
            }
            self.submit_store_batches();
            self.cluster_turn(now);
            self.pool.flush(self.poll.registry());
            self.apply_completions(now);
            self.flush_sessions();
            self.flush_api();
            self.report_readiness()?;
            if self.ready_to_exit(now) {
                break;
            }
        }
        self.finish();
        Ok(())
    }

    fn dispatch(&mut self, event: &mio::event::Event, now: Instant) {
        match event.token() {
            WS_LISTENER => self.accept_ws(now),
            HTTP_LISTENER => self.accept_api(now),
            // Read after the other events (see `on_udp_readable`).
            UDP_SOCKET => self.udp_backlog = true,
            SIGNALS => self.on_signals(now),
            subscriber::SUBSCRIBER_TOKEN => self.on_subscriber_event(now),
            t if Pool::owns(t) && t.0 < API_BASE => self.pool.on_event(t, self.poll.registry()),
            t if t.0 >= API_BASE => self.on_api_event((t.0 - API_BASE) as u64, now),
            t => {
                let id = (t.0 - SESSION_BASE) as ConnId;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_session_readable(id, now);
                }
                if event.is_writable() {
                    self.mark_flush(id);
                }
            }
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let pending = self.signals.take();
        if pending.child {
            self.pool.reap(self.poll.registry());
        }
        if pending.stop && self.stopping.is_none() {
            self.begin_stop(now);
        }
        if pending.reload && self.stopping.is_none() {
            self.pool.begin_reload();
        }
        if pending.reopen_logs {
            if let Err(e) = crate::logging::redirect_to(&self.config.server.log_file) {
                error!(
                    "cannot reopen {}: {e}",
                    self.config.server.log_file.display()
                );
            }
            self.pool.broadcast_reopen_logs();
            info!("log file reopened");
        }
    }

    fn accept_ws(&mut self, now: Instant) {
        loop {
            let Some(sockets) = self.sockets.as_mut() else {
                return;
            };
            let (mut stream, peer) = match sockets.ws.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; try next turn.
                    warn!("accept on the WebSocket port failed: {e}");
                    return;
                }
            };
            if self.sessions.len() >= self.max_connections {
                self.stats.refused_over_cap += 1;
                let body = http::error_body(503, "server full");
                let _ = stream.write(&http::json_response(503, &body, false));
                continue;
            }
            if !self.ip_limit.allow(peer.ip(), now) {
                self.stats.refused_rate_ip += 1;
                let body = http::error_body(429, "too many new connections from this address");
                let _ = stream.write(&http::json_response(429, &body, false));
                continue;
            }
            let _ = stream.set_nodelay(true);
            let id = self.next_conn;
            self.next_conn += 1;
            let token = Token(SESSION_BASE + id as usize);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register a connection: {e}");
                continue;
            }
            self.stats.accepted += 1;
            let handshake = Duration::from_secs(self.config.server.handshake_timeout);
            self.sessions.insert(
                id,
                Box::new(Session::new(
                    id,
                    stream,
                    peer,
                    now,
                    handshake,
                    self.limits.burst,
                    self.limits.bytes_burst,
                )),
            );
        }
    }

    fn on_session_readable(&mut self, id: ConnId, now: Instant) {
        let mut events = Vec::new();
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.on_readable(&self.limits, now, &mut events);
        for event in events {
            match event {
                WsEvent::Upgraded {
                    access_token,
                    device,
                } => self.on_upgraded(id, access_token, device, now),
                WsEvent::Page(req) => self.on_page_request(id, req),
                WsEvent::Text(text) => self.on_client_text(id, &text, now),
                WsEvent::Binary => self.send_text(
                    id,
                    &crate::protocol::error_frame(400, "binary frames are not supported"),
                ),
                WsEvent::Finished => {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        if !matches!(s.phase, Phase::Closing) {
                            s.phase = Phase::Closing;
                        }
                    }
                }
            }
        }
        self.sync_registration(id);
        self.mark_flush(id);
    }

    /// A session that has begun closing receives nothing more: take it out of the registry.
    fn sync_registration(&mut self, id: ConnId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if matches!(s.phase, Phase::Closing) {
            if let Some((uid, source)) = s.login.take() {
                self.unregister(uid, &source, id);
            }
        }
    }

    fn mark_flush(&mut self, id: ConnId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if !s.queued_for_flush {
                s.queued_for_flush = true;
                self.to_flush.push(id);
            }
        }
    }

    fn flush_sessions(&mut self) {
        let ids = std::mem::take(&mut self.to_flush);
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            s.queued_for_flush = false;
            if s.flush().is_err() || s.is_done() {
                self.drop_session(id);
            }
        }
    }

    /// The one path that removes a connection and everything tied to it.
    fn drop_session(&mut self, id: ConnId) {
        let login = self.sessions.get_mut(&id).and_then(|s| s.login.take());
        if let Some((uid, source)) = login {
            self.unregister(uid, &source, id);
        }
        if let Some(mut s) = self.sessions.remove(&id) {
            let _ = self.poll.registry().deregister(&mut s.stream);
            self.reclaimer.connection_closed();
        }
    }

    /// Takes (uid, source, conn) out of the registry, and out of the cluster's presence.
    fn unregister(&mut self, uid: Uid, source: &str, conn: ConnId) {
        if self.registry.unregister(uid, source, conn) {
            self.presence_changed(uid, source, conn, false);
        }
    }

    /// Closes a session with a WebSocket close code; it leaves the registry at once.
    fn close_session(&mut self, id: ConnId, code: u16, reason: &str, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.close(code, reason, now);
        }
        self.sync_registration(id);
        self.mark_flush(id);
    }

    fn sweep(&mut self, now: Instant) {
        let idle = Duration::from_secs(self.config.server.heartbeat_idle_time);
        let mut expired = Vec::new();
        let mut idle_ones = Vec::new();
        let mut slow_logins = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            if s.upgrade_held && matches!(s.phase, Phase::AwaitingLogin) {
                // The login check is slow: the client gets its 101 now, the login frame later.
                s.upgrade_held = false;
                slow_logins.push(*id);
            }
            if s.deadline.is_some_and(|d| d <= now) && !matches!(s.phase, Phase::Open { .. }) {
                expired.push(*id);
            } else if matches!(s.phase, Phase::Open { .. })
                && now.duration_since(s.last_active) >= idle
            {
                idle_ones.push(*id);
            }
        }
        for id in slow_logins {
            self.mark_flush(id);
        }
        for id in expired {
            self.drop_session(id);
        }
        for id in idle_ones {
            self.close_session(id, close_code::GOING_AWAY, "idle timeout", now);
        }
        self.sweep_api(now, API_IDLE);
        self.cut_off_slow_consumers(now);
        self.retry_due_fetches(now);
        self.ip_limit.prune(now);
        if self.reclaimer.due(now) {
            memory::shrink_map(&mut self.sessions);
            memory::shrink_map(&mut self.api_conns);
            self.registry.shrink();
            memory::trim_allocator();
        }
        self.push_limit.prune(now);
        if let Some((key, task)) = self.store_retry.due_probe(now) {
            self.pool.submit(key, task, pool::Origin::StoreProbe);
        }
        self.pool.tick(self.poll.registry(), now);
        if self.pool.reloading() {
            // Reload progress is driven by the sweep: look again soon.
            self.next_sweep = now + Duration::from_millis(20);
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        info!("stopping: closing {} connections", self.sessions.len());
        self.stopping = Some(now + Duration::from_secs(self.config.server.shutdown_timeout));
        if let Some(mut sockets) = self.sockets.take() {
            let reg = self.poll.registry();
            let _ = reg.deregister(&mut sockets.ws);
            let _ = reg.deregister(&mut sockets.http);
            let _ = reg.deregister(&mut sockets.udp);
        }
        let ids: Vec<ConnId> = self.sessions.keys().copied().collect();
        for id in ids {
            let open = self
                .sessions
                .get(&id)
                .is_some_and(|s| matches!(s.phase, Phase::Open { .. } | Phase::AwaitingLogin));
            if open {
                self.close_session(id, close_code::GOING_AWAY, "server shutting down", now);
            } else {
                self.drop_session(id);
            }
        }
        self.stop_api();
    }

    fn ready_to_exit(&self, now: Instant) -> bool {
        match self.stopping {
            None => false,
            Some(deadline) => {
                now >= deadline
                    || (self.sessions.is_empty()
                        && self.api_conns.is_empty()
                        && self.pool.is_idle()
                        && self.to_store.is_empty()
                        && self.cluster_idle())
            }
        }
    }

    fn finish(&mut self) {
        if !self.pool.is_idle() {
            warn!("stopping with task(s) still in flight after the shutdown timeout");
        }
        if !self.store_retry.is_empty() {
            error!(
                "stopping with {} message(s) the store never accepted (it is down): they are lost",
                self.store_retry.len()
            );
        }
        self.pool
            .shutdown(self.poll.registry(), Duration::from_secs(2));
        self.stop_cluster();
        if let Some(pid_file) = &self.pid_file {
            let _ = std::fs::remove_file(pid_file);
        }
        info!("stopped");
    }

    /// Tells the `start` command (waiting in the parent) that every worker is up, or why not.
    fn report_readiness(&mut self) -> Result<(), MasterError> {
        if self.doors_open {
            if let Some(message) = self.pool.fatal.take() {
                error!("a task worker cannot serve: {message}");
            }
            return Ok(());
        }
        if let Some(message) = self.pool.fatal.take() {
            if let Some(mut notifier) = self.ready_notifier.take() {
                let _ = writeln!(notifier, "error: a task worker cannot start: {message}");
            }
            self.pool
                .shutdown(self.poll.registry(), Duration::from_secs(1));
            self.stop_cluster();
            return Err(MasterError::Startup(format!(
                "a task worker cannot start: {message}"
            )));
        }
        if !self.pool.all_ready() || !self.cluster_ready() {
            return Ok(());
        }
        self.open_doors()?;
        info!(
            "ready: ws {} udp {} http {} on {}, {} task workers, up to {} connections{}",
            self.config.server.ws_port,
            self.config.server.udp_port,
            self.config.server.http_port,
            self.config.server.host,
            self.config.task_workers(),
            self.max_connections,
            if self.cluster.is_some() {
                ", cluster mode (Redis)"
            } else {
                ""
            }
        );
        if let Some(mut notifier) = self.ready_notifier.take() {
            let _ = writeln!(notifier, "ready {}", std::process::id());
        }
        Ok(())
    }

    fn open_doors(&mut self) -> Result<(), MasterError> {
        if let Some(sockets) = self.sockets.as_mut() {
            let reg = self.poll.registry();
            reg.register(&mut sockets.ws, WS_LISTENER, Interest::READABLE)?;
            reg.register(&mut sockets.http, HTTP_LISTENER, Interest::READABLE)?;
            reg.register(&mut sockets.udp, UDP_SOCKET, Interest::READABLE)?;
        }
        self.doors_open = true;
        Ok(())
    }

    fn stats_json(&self) -> String {
        let s = &self.stats;
        serde_json::json!({
            "code": 0,
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs(),
            "connections": self.sessions.len(),
            "max_connections": self.max_connections,
            "online_users": self.registry.online_users(),
            "online_connections": self.registry.registered_connections(),
            "accepted": s.accepted,
            "refused_over_cap": s.refused_over_cap,
            "refused_rate_ip": s.refused_rate_ip,
            "refused_push_rate": s.refused_push_rate,
            "logins": s.logins,
            "logins_refused": s.logins_refused,
            "messages_in": s.messages_in,
            "messages_out": s.frames_out,
            "pushes": s.pushes,
            "slow_consumers": s.slow_consumers,
            "store_retry_queue": self.store_retry.len(),
            "store_dropped": self.store_retry.dropped,
            "cluster": self.cluster.as_ref().map(|c| serde_json::json!({
                "node": c.node.id(),
                "subscribed": c.subscribed(),
            })),
            "workers": self.pool.stats(),
            "worker_pids": self.pool.worker_pids(),
        })
        .to_string()
    }
}
