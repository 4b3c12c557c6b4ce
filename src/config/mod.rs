//! The configuration file: TOML -> validated `Config`. Every key has a named default; every
//! error names the file and the key.

mod validate;

use crate::net::IpRanges;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_WS_PORT: u16 = 9501;
pub const DEFAULT_UDP_PORT: u16 = 9502;
pub const DEFAULT_HTTP_PORT: u16 = 8880;
pub const DEFAULT_PID_FILE: &str = "run/wspush.pid";
pub const DEFAULT_LOG_FILE: &str = "logs/wspush.log";
pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_HEARTBEAT_IDLE_TIME: u64 = 60;
pub const DEFAULT_HANDSHAKE_TIMEOUT: u64 = 5;
pub const DEFAULT_HTTP_REQUEST_TIMEOUT: u64 = 10;
pub const DEFAULT_SLOW_CONSUMER_TIMEOUT: u64 = 5;
pub const DEFAULT_CONNECTION_RATE_PER_IP: u32 = 1000;
pub const DEFAULT_CONNECTION_BURST_PER_IP: u32 = 2000;
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
pub const DEFAULT_SEND_BUFFER_SIZE: usize = 1024 * 1024;
pub const DEFAULT_RATE_LIMIT: u32 = 100;
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 200;
pub const DEFAULT_RATE_LIMIT_BYTES: usize = 1024 * 1024;
pub const DEFAULT_RATE_LIMIT_BYTES_BURST: usize = 4 * 1024 * 1024;
pub const DEFAULT_TASK_TIMEOUT: u64 = 4;
pub const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 5;
pub const DEFAULT_ACCESS_TOKEN_LAYOUT: TokenLayout = TokenLayout::TokenUidSource;
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_NODE_TTL: u64 = 10;
pub const DEFAULT_MYSQL_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_STORE_RETRY_LIMIT: usize = 100_000;
pub const DEFAULT_STORE_QUEUE_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_CLOCK_SKEW: u64 = 30;
pub const DEFAULT_PUSH_RATE_PER_IP: u32 = 50_000;
pub const DEFAULT_PUSH_BURST_PER_IP: u32 = 100_000;

/// Bounds that keep a typo from becoming an outage.
const MIN_MESSAGE_SIZE: usize = 128;
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
const MAX_TASK_WORKERS: usize = 256;
const MAX_NODE_ID: u16 = 1023;

/// Order of the three dot-separated parts inside the decoded `access_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenLayout {
    #[serde(rename = "token.uid.source")]
    TokenUidSource,
    #[serde(rename = "uid.token.source")]
    UidTokenSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub push: Push,
    #[serde(default)]
    pub redis: Redis,
    #[serde(default)]
    pub mysql: Mysql,
    #[serde(default = "default_udp_group")]
    pub udpsocket_group: Vec<PushPeer>,
    /// Where the file was read from; filled in by `load`, not a key.
    #[serde(skip)]
    pub source_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub host: String,
    pub ws_port: u16,
    pub udp_port: u16,
    pub http_port: u16,
    /// 0 means two per CPU core.
    pub task_worker_num: usize,
    pub daemonize: bool,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    pub log_level: String,
    pub data_dir: PathBuf,
    pub heartbeat_idle_time: u64,
    pub handshake_timeout: u64,
    /// Seconds a client's send queue may stay full before it is cut off as a slow consumer.
    pub slow_consumer_timeout: u64,
    /// Seconds an HTTP API request may take from its first byte to its last.
    pub http_request_timeout: u64,
    /// New WebSocket connections per second from one source address, and the burst above it.
    pub connection_rate_per_ip: u32,
    pub connection_burst_per_ip: u32,
    /// 0 means derived from the open-file limit.
    pub max_connection: usize,
    pub max_message_size: usize,
    pub send_buffer_size: usize,
    pub rate_limit: u32,
    pub rate_limit_burst: u32,
    /// Client message bytes per second per connection, and the burst above it.
    pub rate_limit_bytes: usize,
    pub rate_limit_bytes_burst: usize,
    pub task_timeout: u64,
    pub shutdown_timeout: u64,
    pub node_id: u16,
    pub access_token_layout: TokenLayout,
    /// The demo login shortcut; always on while `host` is a loopback address.
    pub demo: bool,
    /// The address other nodes and applications know this node by (presence keys); empty
    /// means `host`, or 127.0.0.1 when `host` is a wildcard.
    pub advertise_ip: String,
    /// PEM certificate chain and private key: both set turn on TLS for the WebSocket port
    /// (`wss://`) and the HTTP API port (`https://`).
    pub ssl_cert_file: Option<PathBuf>,
    pub ssl_key_file: Option<PathBuf>,
    /// Addresses or CIDR ranges of proxies whose `X-Forwarded-For`, `X-Real-IP` or PROXY
    /// protocol header names the real client; from any other address they are ignored.
    pub trusted_proxies: Vec<String>,
    /// Connections from `trusted_proxies` start with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
    /// Addresses or CIDR ranges that may read `/metrics` without a secret.
    pub metrics_allow: Vec<String>,
    /// The most members a group may have: a `join_group` past it is refused (413).
    pub max_group_members: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Keep delivered messages too; undelivered ones are always kept.
    pub backup: bool,
    /// Bytes of messages waiting to be written to the store (batched, with a worker, or held
    /// for a retry); past it new messages are refused with 503 until the store catches up.
    pub queue_bytes: usize,
    /// Seconds a group message is kept for members who have not had it (default 7 days).
    pub group_retention: u64,
}

/// The push doors (UDP and HTTP API): how requests must be authenticated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Push {
    /// Refuse requests authenticated by a plain `sk`: only signed ones pass.
    pub require_signature: bool,
    /// Seconds a signed request's timestamp may differ from the server's clock.
    pub max_clock_skew: u64,
    /// Requests per second from one source address on the push doors (UDP and HTTP API
    /// together), and the burst above it; past it: 429.
    pub rate_per_ip: u32,
    pub burst_per_ip: u32,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            require_signature: false,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            rate_per_ip: DEFAULT_PUSH_RATE_PER_IP,
            burst_per_ip: DEFAULT_PUSH_BURST_PER_IP,
        }
    }
}

/// Redis: login tokens, presence, and routing between nodes. Empty `url`: one node alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    pub url: String,
    /// Connect, read and write timeout of every Redis call, in milliseconds.
    pub timeout_ms: u64,
    /// Seconds a node's heartbeat key lives; a node silent that long is taken for dead.
    pub node_ttl: u64,
}

/// MySQL/MariaDB: every message kept in table `chat`. Empty `url`: the embedded store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mysql {
    pub url: String,
    pub timeout_ms: u64,
    /// Messages the master holds for a retry while the database is down; past it the oldest
    /// delivered (backup-only) messages are dropped first, and every drop is counted and logged.
    pub retry_limit: usize,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: String::new(),
            timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            node_ttl: DEFAULT_NODE_TTL,
        }
    }
}

impl Default for Mysql {
    fn default() -> Self {
        Mysql {
            url: String::new(),
            timeout_ms: DEFAULT_MYSQL_TIMEOUT_MS,
            retry_limit: DEFAULT_STORE_RETRY_LIMIT,
        }
    }
}

/// One application back end allowed to push: its source address and shared secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPeer {
    pub ip: String,
    pub secret_key: String,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            host: DEFAULT_HOST.into(),
            ws_port: DEFAULT_WS_PORT,
            udp_port: DEFAULT_UDP_PORT,
            http_port: DEFAULT_HTTP_PORT,
            task_worker_num: 0,
            daemonize: true,
            pid_file: DEFAULT_PID_FILE.into(),
            log_file: DEFAULT_LOG_FILE.into(),
            log_level: DEFAULT_LOG_LEVEL.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            heartbeat_idle_time: DEFAULT_HEARTBEAT_IDLE_TIME,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            http_request_timeout: DEFAULT_HTTP_REQUEST_TIMEOUT,
            slow_consumer_timeout: DEFAULT_SLOW_CONSUMER_TIMEOUT,
            connection_rate_per_ip: DEFAULT_CONNECTION_RATE_PER_IP,
            connection_burst_per_ip: DEFAULT_CONNECTION_BURST_PER_IP,
            max_connection: 0,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            send_buffer_size: DEFAULT_SEND_BUFFER_SIZE,
            rate_limit: DEFAULT_RATE_LIMIT,
            rate_limit_burst: DEFAULT_RATE_LIMIT_BURST,
            rate_limit_bytes: DEFAULT_RATE_LIMIT_BYTES,
            rate_limit_bytes_burst: DEFAULT_RATE_LIMIT_BYTES_BURST,
            task_timeout: DEFAULT_TASK_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            node_id: 0,
            access_token_layout: DEFAULT_ACCESS_TOKEN_LAYOUT,
            demo: false,
            advertise_ip: String::new(),
            ssl_cert_file: None,
            ssl_key_file: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            metrics_allow: vec!["127.0.0.0/8".into(), "::1".into()],
            max_group_members: 100_000,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backup: true,
            queue_bytes: DEFAULT_STORE_QUEUE_BYTES,
            group_retention: 7 * 24 * 3600,
        }
    }
}

fn default_udp_group() -> Vec<PushPeer> {
    vec![PushPeer {
        ip: "127.0.0.1".into(),
        secret_key: "123456".into(),
    }]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: Server::default(),
            storage: Storage::default(),
            push: Push::default(),
            redis: Redis::default(),
            mysql: Mysql::default(),
            udpsocket_group: default_udp_group(),
            source_file: PathBuf::new(),
        }
    }
}

/// A configuration problem, located as precisely as we can: file, key and (for syntax) line.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub line: Option<usize>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates `path`; relative paths inside are made absolute against the
    /// current directory so that a daemon that changes directory still finds them.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.into(),
            key: None,
            line: None,
            problem: format!("cannot read: {e}"),
        })?;
        let mut config = Config::parse(&text, path)?;
        let cwd = std::env::current_dir().unwrap_or_default();
        let s = &mut config.server;
        let tls = [s.ssl_cert_file.as_mut(), s.ssl_key_file.as_mut()];
        for p in [&mut s.pid_file, &mut s.log_file, &mut s.data_dir]
            .into_iter()
            .chain(tls.into_iter().flatten())
        {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        }
        config.source_file = path.into();
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| syntax_error(&e, text, path))?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn task_workers(&self) -> usize {
        match self.server.task_worker_num {
            0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The demo login shortcut is safe only where nobody else can reach it.
    pub fn demo_enabled(&self) -> bool {
        self.server.demo
            || self
                .server
                .host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Both TLS files are set (checked by `validate`: both or neither).
    pub fn tls_enabled(&self) -> bool {
        self.server.ssl_cert_file.is_some() && self.server.ssl_key_file.is_some()
    }

    /// The certificate and key files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::net::tls::TlsFiles> {
        Some(crate::net::tls::TlsFiles {
            cert: self.server.ssl_cert_file.clone()?,
            key: self.server.ssl_key_file.clone()?,
        })
    }

    /// Reads the TLS pair (when configured) as a start-up check: an error names this file,
    /// the key and the PEM file at fault.
    pub fn load_tls(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
        let Some(files) = self.tls_files() else {
            return Ok(None);
        };
        files.load().map(Some).map_err(|e| ConfigError {
            file: self.source_file.clone(),
            key: Some(e.file_and_key().1.to_string()),
            line: None,
            problem: e.to_string(),
        })
    }

    /// The proxies whose headers are believed (validated at load).
    pub fn trusted_proxies(&self) -> IpRanges {
        IpRanges::parse(&self.server.trusted_proxies).unwrap_or_default()
    }

    /// Who may read `/metrics` without a secret (validated at load).
    pub fn metrics_allow(&self) -> IpRanges {
        IpRanges::parse(&self.server.metrics_allow).unwrap_or_default()
    }

    pub fn cluster_enabled(&self) -> bool {
        !self.redis.url.is_empty()
    }

    /// `ip:port` of this node's WebSocket door as other nodes and applications see it.
    pub fn node_address(&self) -> (String, u16) {
        let s = &self.server;
        let ip = if !s.advertise_ip.is_empty() {
            s.advertise_ip.clone()
        } else if s.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            "127.0.0.1".to_string()
        } else {
            s.host.clone()
        };
        (ip, s.ws_port)
    }

    /// The secret for a push from `ip`, if that address may push at all.
    pub fn push_secret(&self, ip: IpAddr) -> Option<&str> {
        let ip = canonical_ip(ip);
        self.udpsocket_group
            .iter()
            .find(|p| p.ip.parse().is_ok_and(|a| canonical_ip(a) == ip))
            .map(|p| p.secret_key.as_str())
    }
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) compare equal to their IPv4 form.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Turns a TOML error into one that names the line and, where it can, the `section.key`.
fn syntax_error(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let (line, key) = match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count();
            (Some(line_no + 1), key_at_line(text, line_no))
        }
        None => (None, None),
    };
    ConfigError {
        file: path.into(),
        key,
        line,
        problem: e.message().trim().to_string(),
    }
}

/// `section.key` for the `key = value` on line `line_no` (0-based), if that line holds one.
fn key_at_line(text: &str, line_no: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.get(line_no)?.split('=').next()?.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = lines[..line_no]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests;
