//! `/api/stats`: the counters of every part, as one JSON object.

use super::*;
use crate::net::tls::HandshakeFailure;

impl Master {
    pub(super) fn tls_stats(&self) -> serde_json::Value {
        let c = &self.tls_counters;
        let failures: serde_json::Map<String, serde_json::Value> = HandshakeFailure::ALL
            .iter()
            .map(|f| (f.label().to_string(), c.failures(*f).into()))
            .collect();
        serde_json::json!({"handshakes": c.handshakes(), "failures": failures})
    }

    pub(super) fn stats_json(&self) -> String {
        let ws = self.ws.stats();
        let r = self.router.stats();
        let store = self.router.store();
        serde_json::json!({
            "code": 0,
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs(),
            "connections": self.ws.len(),
            "max_connections": self.ws_listener.as_ref().map_or(0, WsListener::max_connections),
            "online_users": self.router.registry().online_users(),
            "online_connections": self.router.registry().registered_connections(),
            "accepted": ws.accepted,
            "refused_over_cap": ws.refused_over_cap,
            "refused_rate_ip": ws.refused_rate_ip,
            "refused_push_rate": self.gate.refused_rate,
            "refused_busy": r.refused_busy,
            "backups_skipped": r.backups_skipped,
            "logins": r.logins,
            "logins_refused": r.logins_refused + ws.logins_refused,
            "messages_in": ws.messages_in,
            "messages_out": ws.frames_out,
            "pushes": r.pushes,
            "slow_consumers": ws.slow_consumers,
            "store_backlog_bytes": self.pool.backlog_bytes(),
            "store_retry_queue": store.waiting_for_retry(),
            "store_dropped": store.dropped(),
            "store_refused": r.store_refused,
            "cluster": self.cluster.as_ref().map(|c| serde_json::json!({
                "node": c.node(),
                "subscribed": c.subscribed(),
            })),
            "workers": self.pool.stats(),
            "worker_pids": self.pool.worker_pids(),
            "tls": self.config.tls_enabled().then(|| self.tls_stats()),
        })
        .to_string()
    }
}
