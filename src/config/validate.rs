//! The checks a configuration must pass after it parses: each error names the key.

use super::*;

impl Config {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError {
            file: path.into(),
            key: Some(key.into()),
            line: None,
            problem,
        };
        let s = &self.server;
        if s.host.parse::<IpAddr>().is_err() {
            return Err(bad(
                "server.host",
                format!("`{}` is not an IP address", s.host),
            ));
        }
        for (key, port) in [
            ("server.ws_port", s.ws_port),
            ("server.udp_port", s.udp_port),
            ("server.http_port", s.http_port),
        ] {
            if port == 0 {
                return Err(bad(key, "must be a port from 1 to 65535".into()));
            }
        }
        if s.ws_port == s.http_port {
            return Err(bad(
                "server.http_port",
                "must differ from server.ws_port".into(),
            ));
        }
        if s.task_worker_num > MAX_TASK_WORKERS {
            return Err(bad(
                "server.task_worker_num",
                format!("at most {MAX_TASK_WORKERS}"),
            ));
        }
        if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&s.max_message_size) {
            return Err(bad(
                "server.max_message_size",
                format!("must be from {MIN_MESSAGE_SIZE} to {MAX_MESSAGE_SIZE} bytes"),
            ));
        }
        if s.send_buffer_size < 2 * s.max_message_size {
            return Err(bad(
                "server.send_buffer_size",
                "must be at least twice server.max_message_size".into(),
            ));
        }
        for (key, value) in [
            ("server.heartbeat_idle_time", s.heartbeat_idle_time),
            ("server.handshake_timeout", s.handshake_timeout),
            ("server.http_request_timeout", s.http_request_timeout),
            ("server.slow_consumer_timeout", s.slow_consumer_timeout),
            (
                "server.connection_rate_per_ip",
                u64::from(s.connection_rate_per_ip),
            ),
            (
                "server.connection_burst_per_ip",
                u64::from(s.connection_burst_per_ip),
            ),
            ("server.task_timeout", s.task_timeout),
            ("server.rate_limit", u64::from(s.rate_limit)),
            ("server.rate_limit_burst", u64::from(s.rate_limit_burst)),
        ] {
            if value == 0 {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        // A login's token check is a task: its answer, a 503 when the check takes too long,
        // must be possible before the client's handshake deadline.
        if s.task_timeout >= s.handshake_timeout {
            return Err(bad(
                "server.task_timeout",
                format!(
                    "must be less than server.handshake_timeout ({} s): a login's token check is a task, and its answer (503 when the store is slow) must reach the client before the handshake deadline",
                    s.handshake_timeout
                ),
            ));
        }
        if s.rate_limit_bytes == 0 {
            return Err(bad(
                "server.rate_limit_bytes",
                "must be greater than 0".into(),
            ));
        }
        if s.rate_limit_bytes_burst < 2 * s.max_message_size {
            return Err(bad(
                "server.rate_limit_bytes_burst",
                "must be at least twice server.max_message_size, or the largest message could never pass".into(),
            ));
        }
        if self.storage.queue_bytes < 4 * s.max_message_size {
            return Err(bad(
                "storage.queue_bytes",
                "must be at least four times server.max_message_size".into(),
            ));
        }
        if s.max_group_members == 0 {
            return Err(bad(
                "server.max_group_members",
                "must be greater than 0".into(),
            ));
        }
        if self.storage.group_retention == 0 {
            return Err(bad(
                "storage.group_retention",
                "must be greater than 0 (seconds)".into(),
            ));
        }
        if s.node_id > MAX_NODE_ID {
            return Err(bad("server.node_id", format!("at most {MAX_NODE_ID}")));
        }
        if s.log_level.parse::<log::LevelFilter>().is_err() {
            return Err(bad(
                "server.log_level",
                "one of error, warn, info, debug, trace".into(),
            ));
        }
        if self.push.rate_per_ip == 0 || self.push.burst_per_ip == 0 {
            return Err(bad(
                "push.rate_per_ip",
                "rate_per_ip and burst_per_ip must be greater than 0".into(),
            ));
        }
        if self.push.max_clock_skew == 0 || self.push.max_clock_skew > 3600 {
            return Err(bad(
                "push.max_clock_skew",
                "must be from 1 to 3600 seconds".into(),
            ));
        }
        if !s.advertise_ip.is_empty() && s.advertise_ip.parse::<IpAddr>().is_err() {
            return Err(bad(
                "server.advertise_ip",
                format!("`{}` is not an IP address", s.advertise_ip),
            ));
        }
        if !self.redis.url.is_empty() {
            if let Err(e) = redis::Client::open(self.redis.url.as_str()) {
                return Err(bad("redis.url", format!("not a Redis URL: {e}")));
            }
            if self.redis.timeout_ms == 0 || self.redis.node_ttl < 3 {
                return Err(bad(
                    "redis.node_ttl",
                    "timeout_ms must be > 0 and node_ttl at least 3".into(),
                ));
            }
        }
        if !self.mysql.url.is_empty() {
            if let Err(e) = mysql::Opts::from_url(&self.mysql.url) {
                return Err(bad("mysql.url", format!("not a MySQL URL: {e}")));
            }
            if self.mysql.timeout_ms == 0 {
                return Err(bad("mysql.timeout_ms", "must be greater than 0".into()));
            }
        }
        match (&s.ssl_cert_file, &s.ssl_key_file) {
            (Some(_), None) => {
                return Err(bad(
                    "server.ssl_key_file",
                    "must be set with server.ssl_cert_file (both or neither)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "server.ssl_cert_file",
                    "must be set with server.ssl_key_file (both or neither)".into(),
                ))
            }
            _ => {}
        }
        for (key, list) in [
            ("server.trusted_proxies", &s.trusted_proxies),
            ("server.metrics_allow", &s.metrics_allow),
        ] {
            if let Err(e) = IpRanges::parse(list) {
                return Err(bad(&format!("{key}[{}]", e.index), e.to_string()));
            }
        }
        if s.proxy_protocol && s.trusted_proxies.is_empty() {
            return Err(bad(
                "server.proxy_protocol",
                "needs server.trusted_proxies: only the proxies listed there may send the header"
                    .into(),
            ));
        }
        for (i, peer) in self.udpsocket_group.iter().enumerate() {
            if peer.ip.parse::<IpAddr>().is_err() {
                return Err(bad(
                    &format!("udpsocket_group[{i}].ip"),
                    format!("`{}` is not an IP address", peer.ip),
                ));
            }
            if peer.secret_key.is_empty() {
                return Err(bad(
                    &format!("udpsocket_group[{i}].secret_key"),
                    "is empty".into(),
                ));
            }
        }
        Ok(())
    }
}
