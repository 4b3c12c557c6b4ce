//! The master process: one single-threaded mio loop that owns every listening socket and client
//! connection (through its doors: `ws`, `api`, `udp`), the uid registry (through the `router`),
//! the task worker `pool` and, in a cluster, the node's side of Redis (`cluster`). It never
//! blocks: anything that might goes to a task worker, and the answers come back as events.
//!
//! Each loop turn: readiness events go to the door that owns them; what the doors report is
//! applied by the router (`apply`); the router's tasks go to the pool and its replies to the
//! doors; then everything queued is written.

mod admin;
pub mod api;
mod apply;
mod child;
mod cluster;
mod groups;
pub mod http;
mod ip_limit;
mod lifecycle;
mod memory;
pub mod message;
mod metrics;
mod pool;
mod push_gate;
mod rate;
pub mod registry;
mod reload_report;
mod retry;
mod router;
pub(crate) mod security;
mod signals;
mod stats;
mod store_queue;
mod token;
mod udp;
pub mod ws;

use crate::config::Config;
use crate::ipc::{self, IpcError};
use crate::net::stream::Conn;
use crate::net::tls::{TlsAcceptor, TlsCounters};
use api::{ApiDoor, ApiLimits, ProxyTrust};
use cluster::Cluster;
use log::{error, info, warn};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll};
use pool::{Pool, ProcessSpawner};
use push_gate::PushGate;
use router::{Origin, Router};
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use token::Token;
use udp::UdpDoor;
use ws::admission::Admission;
use ws::listener::WsListener;
use ws::{FrameLimits, SessionConfig, Sessions};

/// How often idle connections and deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// How often group messages past `storage.group_retention` are forgotten.
const GROUP_PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How often the sweep runs while a reload is in progress (it drives the reload).
const RELOAD_SWEEP: Duration = Duration::from_millis(20);

/// The sockets a master serves, bound before it daemonizes so that bind errors reach the shell,
/// and the TLS configuration they speak (read before too, for the same reason).
pub struct Sockets {
    pub ws: TcpListener,
    pub http: TcpListener,
    pub udp: UdpSocket,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why the master could not start, or stopped on an error: one variant per step.
#[derive(Debug)]
pub enum MasterError {
    Poll(io::Error),
    Signals(io::Error),
    /// The configuration frame for the children could not be encoded.
    ConfigFrame(IpcError),
    SpawnWorkers(io::Error),
    /// A task worker reported that it cannot serve (its store will not open, say).
    WorkerCannotStart(String),
    OpenDoors(io::Error),
    Loop(io::Error),
}

impl fmt::Display for MasterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterError::Poll(e) => write!(f, "cannot create the event loop: {e}"),
            MasterError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            MasterError::ConfigFrame(e) => write!(f, "cannot encode the configuration: {e}"),
            MasterError::SpawnWorkers(e) => write!(f, "cannot start the task workers: {e}"),
            MasterError::WorkerCannotStart(e) => write!(f, "a task worker cannot start: {e}"),
            MasterError::OpenDoors(e) => write!(f, "cannot listen: {e}"),
            MasterError::Loop(e) => write!(f, "event loop failed: {e}"),
        }
    }
}

impl std::error::Error for MasterError {}

pub struct Master {
    poll: Poll,
    config: Config,
    /// None once stopping (the listener is closed).
    ws_listener: Option<WsListener>,
    ws: Sessions<Conn>,
    /// Handshakes on both TLS ports, counted together.
    tls_counters: Rc<TlsCounters>,
    api: ApiDoor,
    /// None once stopping (the socket is closed).
    udp: Option<UdpDoor>,
    gate: PushGate,
    router: Router,
    pool: Pool<Origin, ProcessSpawner>,
    cluster: Option<Cluster>,
    signals: signals::Signals,
    /// Gives memory back after many connections have gone.
    reclaimer: memory::Reclaimer,
    started: Instant,
    next_sweep: Instant,
    /// When group messages past their retention are next forgotten.
    next_group_purge: Instant,
    /// The UDP socket may hold datagrams not read yet: the next turn does not sleep.
    udp_backlog: bool,
    /// Listeners are registered only once every worker is up (and, in a cluster, this node's
    /// stale presence is cleared), so that no client is served half-ready.
    doors_open: bool,
    stopping: Option<Instant>,
    ready_notifier: Option<std::os::unix::net::UnixStream>,
    pid_file: Option<PathBuf>,
    work: apply::Work,
    metrics: metrics::Metrics,
    readiness: metrics::Readiness,
    reloads: reload_report::ReloadReport,
    /// The dashboard's last ten minutes, a sample a second.
    history: admin::History,
}

/// Who may connect on the WebSocket port: the per-address rate, judged by the real client
/// behind a trusted proxy.
pub(crate) fn admission(config: &Config) -> Admission {
    let s = &config.server;
    Admission::new(
        ip_limit::IpLimiter::new(s.connection_rate_per_ip, s.connection_burst_per_ip),
        config.trusted_proxies(),
        s.proxy_protocol,
    )
}

/// Session limits from the configuration.
pub(crate) fn session_config(config: &Config) -> SessionConfig {
    let s = &config.server;
    SessionConfig {
        // Up to twice the maximum gets a polite error frame; past that, 1009.
        frames: FrameLimits {
            max_frame: 2 * s.max_message_size,
            max_message: 2 * s.max_message_size,
        },
        max_message: s.max_message_size,
        send_buffer: s.send_buffer_size,
        frame_rate: rate::Rate {
            per_second: f64::from(s.rate_limit),
            burst: f64::from(s.rate_limit_burst),
        },
        byte_rate: rate::Rate {
            per_second: s.rate_limit_bytes as f64,
            burst: s.rate_limit_bytes_burst as f64,
        },
        handshake: Duration::from_secs(s.handshake_timeout),
        idle: Duration::from_secs(s.heartbeat_idle_time),
        slow_consumer: Duration::from_secs(s.slow_consumer_timeout),
        layout: s.access_token_layout,
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
        let poll = Poll::new().map_err(MasterError::Poll)?;
        let mut signals = signals::Signals::install().map_err(MasterError::Signals)?;
        poll.registry()
            .register(
                &mut signals.wakeup,
                Token::Signals.into(),
                Interest::READABLE,
            )
            .map_err(MasterError::Signals)?;
        let config_frame = ipc::child_greeting(&config).map_err(MasterError::ConfigFrame)?;
        let registry = poll.registry().try_clone().map_err(MasterError::Poll)?;
        let pool = Pool::new(
            config.task_workers(),
            config_frame.clone(),
            Duration::from_secs(config.server.task_timeout),
            ProcessSpawner::new(exe.clone(), registry),
        );
        let cluster = config
            .cluster_enabled()
            .then(|| Cluster::new(&config, exe, config_frame));
        let s = &config.server;
        let store = store_queue::StoreQueue::new(
            config.task_workers(),
            config.storage.backup,
            config.storage.queue_bytes,
            config.mysql.retry_limit,
        );
        let mut router = Router::new(
            s.node_id,
            store,
            cluster.as_ref().map(|c| c.node().to_owned()),
        );
        router.set_max_group_members(s.max_group_members);
        if config.cluster_enabled() && config.mysql.url.is_empty() {
            warn!(
                "cluster without [mysql]: each node keeps messages, and groups' messages and \
                 members' places, in its own SQLite file; a user gets what was kept for it only \
                 from the node that kept it. Set mysql.url on every node."
            );
        }
        let now = Instant::now();
        let tls_counters = Rc::new(TlsCounters::default());
        let tls = sockets.tls.map(|config| TlsAcceptor {
            config,
            counters: tls_counters.clone(),
        });
        Ok(Master {
            ws_listener: Some(WsListener::new(sockets.ws, max_connections, tls.clone())),
            ws: Sessions::new(session_config(&config), admission(&config)),
            api: ApiDoor::new(
                sockets.http,
                ApiLimits {
                    max_body: s.max_message_size,
                    request_timeout: Duration::from_secs(s.http_request_timeout),
                    push_peers: config
                        .udpsocket_group
                        .iter()
                        .filter_map(|p| p.ip.parse().ok())
                        .collect(),
                },
                ProxyTrust {
                    trusted: config.trusted_proxies(),
                    proxy_protocol: s.proxy_protocol,
                },
                tls,
            ),
            tls_counters,
            udp: Some(UdpDoor::new(sockets.udp, s.max_message_size)),
            gate: PushGate::new(&config),
            router,
            pool,
            cluster,
            signals,
            reclaimer: memory::Reclaimer::new(),
            started: now,
            next_sweep: now + SWEEP_EVERY,
            next_group_purge: now + GROUP_PURGE_EVERY,
            udp_backlog: false,
            doors_open: false,
            stopping: None,
            ready_notifier,
            reloads: reload_report::ReloadReport::new(pid_file.as_deref()),
            pid_file,
            work: apply::Work::default(),
            metrics: metrics::Metrics::new(config.metrics_allow(), config.cluster_enabled(), now),
            readiness: metrics::Readiness::new(config.task_workers().max(1), now),
            history: admin::History::new(now),
            poll,
            config,
        })
    }

    pub fn run(mut self) -> Result<(), MasterError> {
        self.pool.start().map_err(MasterError::SpawnWorkers)?;
        if let Some((key, body, origin)) = self.cluster.as_ref().and_then(|_| Cluster::purge_task())
        {
            self.pool.submit(key, body, origin);
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
                    return Err(MasterError::Loop(e));
                }
            }
            let now = Instant::now();
            self.metrics.turn_started(now);
            for event in events.iter() {
                self.dispatch(event, now);
            }
            self.settle(now);
            if self.udp_backlog {
                self.serve_udp(now);
            }
            if now >= self.next_sweep {
                self.sweep(now);
            }
            self.router.submit_store_batches();
            self.router.submit_group_nodes();
            self.cluster_turn(now);
            self.settle(now);
            self.pool.flush();
            self.settle(now);
            self.ws.flush();
            self.metrics.turn_flushed();
            self.api.flush();
            self.report_readiness()?;
            if self.ready_to_exit(now) {
                break;
            }
        }
        self.finish();
        Ok(())
    }

    fn dispatch(&mut self, event: &mio::event::Event, now: Instant) {
        match Token::decode(event.token()) {
            Some(Token::WsListener) => {
                if let Some(l) = self.ws_listener.as_mut() {
                    l.accept(&mut self.ws, self.poll.registry(), now);
                }
            }
            Some(Token::ApiListener) => self.api.accept(self.poll.registry(), now),
            // Read after the other events (see `serve_udp`).
            Some(Token::Udp) => self.udp_backlog = true,
            Some(Token::Signals) => self.on_signals(now),
            Some(Token::Subscriber) => self.on_subscriber(now),
            Some(Token::Worker(generation)) => self.pool.on_event(generation),
            Some(Token::Ws(conn)) => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.ws.on_readable(conn, now);
                }
                if event.is_writable() {
                    self.ws.on_writable(conn);
                }
            }
            Some(Token::Api(conn)) => self.api.on_event(conn, now),
            None => warn!("an event for an unknown token {:?}", event.token()),
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let pending = self.signals.take();
        if pending.child {
            self.pool.reap();
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
            self.pool.reopen_logs();
            info!("log file reopened");
            self.reload_tls();
        }
    }

    /// SIGHUP: the certificate and key are read again (a renewed certificate). New
    /// connections get the new pair, open ones keep theirs; a bad pair leaves the old one.
    fn reload_tls(&mut self) {
        let Some(files) = self.config.tls_files() else {
            return;
        };
        match files.load() {
            Ok(config) => {
                let acceptor = TlsAcceptor {
                    config,
                    counters: self.tls_counters.clone(),
                };
                if let Some(l) = self.ws_listener.as_mut() {
                    l.set_tls(Some(acceptor.clone()));
                }
                self.api.set_tls(Some(acceptor));
                info!(
                    "TLS certificate and key reloaded from {}",
                    files.cert.display()
                );
            }
            Err(e) => error!("TLS not reloaded, the old certificate stays: {e}"),
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SWEEP_EVERY;
        self.ws.sweep(now);
        self.api.sweep(now);
        self.gate.prune(now);
        self.router.retry_fetches(now);
        self.router.prune_waiting_logins(&self.ws);
        self.router.retry_group_writes(now);
        self.router.probe_store(now);
        let backlog = self.pool.backlog_bytes() + self.router.store().batched_bytes();
        self.reclaimer.store_backlog(backlog);
        if self.reclaimer.due(now) {
            self.ws.shrink();
            self.api.shrink();
            self.router.shrink();
            crate::trim::trim_allocator();
        }
        self.pool.tick(now);
        self.ping_workers(now);
        if now >= self.next_group_purge && self.doors_open {
            self.next_group_purge = now + GROUP_PURGE_EVERY;
            self.router
                .purge_groups(self.config.storage.group_retention);
        }
        self.sample_history(now);
        for event in self.pool.take_reload_events() {
            self.reloads.report(&event);
        }
        if self.pool.reloading() {
            self.next_sweep = now + RELOAD_SWEEP;
        }
    }

    fn cluster_turn(&mut self, now: Instant) {
        let stopping = self.stopping.is_some();
        if let Some(c) = self.cluster.as_mut() {
            for (key, body, origin) in c.turn(self.poll.registry(), now, stopping) {
                self.pool.submit(key, body, origin);
            }
        }
    }
}
