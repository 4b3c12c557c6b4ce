//! `GET /metrics`: the counters the master keeps, read at scrape time into Prometheus families
//! and written in the Prometheus text format (0.0.4) by `prometheus-client`. Nothing here runs
//! between scrapes.

use super::{Metrics, CODES, DOORS, MEANS, REDIS_OPS, STORE_OPS};
use crate::master::api::ApiRequest;
use crate::master::http;
use crate::master::Master;
use crate::net::tls::HandshakeFailure;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::{encode, CONTENT_TYPE};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::time::Instant;

type Labels = Vec<(&'static str, String)>;

/// One family's values, read from the counters at scrape time.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: Vec<(Labels, u64)>,
}

/// Every family but the histograms (which the registry encodes from the crate's own type).
#[derive(Debug, Default)]
struct Snapshot(Vec<Family>);

impl Snapshot {
    fn add(&mut self, kind: MetricType, name: &'static str, help: &'static str) -> &mut Family {
        self.0.push(Family {
            name,
            help,
            kind,
            series: Vec::new(),
        });
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.add(MetricType::Counter, name, help)
    }

    fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.add(MetricType::Gauge, name, help)
    }
}

impl Family {
    /// One series; `labels` are (name, value) pairs.
    fn with(&mut self, labels: &[(&'static str, &str)], value: impl TryInto<u64>) -> &mut Self {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.series
            .push((labels, value.try_into().unwrap_or(u64::MAX)));
        self
    }

    fn value(&mut self, value: impl TryInto<u64>) -> &mut Self {
        self.with(&[], value)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            // Ended with a period, as the registry ends the histograms' help.
            let help = format!("{}.", f.help);
            let mut metric = encoder.encode_descriptor(f.name, &help, None, f.kind)?;
            for (labels, value) in &f.series {
                let series = metric.encode_family(labels)?;
                match f.kind {
                    MetricType::Counter => ConstCounter::new(*value).encode(series)?,
                    _ => ConstGauge::new(*value).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

impl Master {
    /// Serves `/metrics` to `server.metrics_allow`, and to any address that may push and proves
    /// it (as `/api/stats`); 403 to the rest.
    pub(crate) fn serve_metrics(&mut self, r: ApiRequest, now: Instant) {
        let ip = r.peer.ip();
        let allowed = self.metrics.allows(ip)
            || (self.gate.admit(ip, now) && self.gate.authorize(&r.request, ip).is_ok());
        let (status, content_type, body) = if !allowed {
            let body = http::error_body(403, "metrics are not served to this address");
            (403, "application/json", body)
        } else if r.request.method != "GET" {
            (
                405,
                "application/json",
                http::error_body(405, "method not allowed"),
            )
        } else {
            match self.metrics_text(now) {
                Ok(text) => (200, CONTENT_TYPE, text),
                Err(e) => {
                    log::error!("the metrics cannot be written: {e}");
                    (
                        500,
                        "application/json",
                        http::error_body(500, "metrics unavailable"),
                    )
                }
            }
        };
        self.api
            .answer_as(r.conn, status, content_type, body.as_bytes(), now);
    }

    fn metrics_text(&self, now: Instant) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("wspush");
        self.metrics.register_histograms(&mut registry);
        registry.register_collector(Box::new(self.snapshot(now)));
        let mut text = String::with_capacity(16 * 1024);
        encode(&mut text, &registry)?;
        Ok(text)
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let mut s = Snapshot::default();
        self.connection_families(&mut s);
        self.message_families(&mut s);
        self.store_families(&mut s);
        self.worker_families(&mut s, now);
        let lost = self.cluster.as_ref().map_or(0, |c| c.subscriptions_lost());
        self.metrics.cluster_families(&mut s, lost);
        if self.config.tls_enabled() {
            self.tls_families(&mut s);
        }
        s
    }

    fn tls_families(&self, s: &mut Snapshot) {
        let c = &self.tls_counters;
        s.counter("tls_handshakes", "TLS handshakes completed, both ports")
            .value(c.handshakes());
        let f = s.counter(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason (plain_http, client_alert, protocol, abandoned)",
        );
        for why in HandshakeFailure::ALL {
            f.with(&[("reason", why.label())], c.failures(why));
        }
    }

    fn connection_families(&self, s: &mut Snapshot) {
        let (ws, api) = (self.ws.stats(), self.api.stats());
        s.gauge("connections", "Open connections, by door")
            .with(&[("door", "ws")], self.ws.len())
            .with(&[("door", "http")], self.api.len());
        s.counter("connections_accepted", "Connections accepted, by door")
            .with(&[("door", "ws")], ws.accepted)
            .with(&[("door", "http")], api.accepted);
        s.counter(
            "connections_refused",
            "WebSocket connections refused at accept, by reason",
        )
        .with(&[("reason", "over_cap")], ws.refused_over_cap)
        .with(&[("reason", "rate_per_ip")], ws.refused_rate_ip);
        let registry = self.router.registry();
        s.gauge(
            "online_users",
            "Users with at least one logged-in connection here",
        )
        .value(registry.online_users());
        s.gauge("online_connections", "Logged-in connections")
            .value(registry.registered_connections());
        let r = self.router.stats();
        s.counter("logins", "Logins accepted").value(r.logins);
        s.counter("login_refusals", "Logins refused, by reason")
            .with(&[("reason", "bad_token")], ws.logins_refused)
            .with(&[("reason", "unauthorized")], r.logins_unauthorized)
            .with(&[("reason", "expired")], r.logins_expired)
            .with(&[("reason", "unavailable")], r.logins_unavailable);
        s.counter(
            "slow_consumers_cut",
            "Connections closed (1008) because they did not read",
        )
        .value(ws.slow_consumers);
        let bytes = [
            ("ws", ws.bytes_in, ws.bytes_out),
            ("http", api.bytes_in, api.bytes_out),
            ("udp", self.metrics.udp_bytes_in, self.metrics.udp_bytes_out),
        ];
        let f = s.counter("bytes_in", "Bytes read from clients and pushers, by door");
        for (door, bytes_in, _) in bytes {
            f.with(&[("door", door)], bytes_in);
        }
        let f = s.counter("bytes_out", "Bytes written to clients and pushers, by door");
        for (door, _, bytes_out) in bytes {
            f.with(&[("door", door)], bytes_out);
        }
    }

    fn message_families(&self, s: &mut Snapshot) {
        let (ws, m) = (self.ws.stats(), &self.metrics);
        let pushes: u64 = m.pushes.iter().flatten().sum();
        s.counter(
            "messages_in",
            "Messages received: client chats, pushes, and other client frames (ping, bad ones)",
        )
        .with(&[("kind", "chat")], m.chats_in)
        .with(&[("kind", "push")], pushes)
        .with(
            &[("kind", "control")],
            ws.messages_in.saturating_sub(m.chats_in),
        );
        let messages = ws.chats_out + ws.pushes_out + ws.kept_out;
        s.counter(
            "messages_out",
            "Frames queued to clients: messages by type (a chat type, or a push), kept messages \
             handed over at login, and control frames (login, acks, errors, pongs)",
        )
        .with(&[("kind", "chat")], ws.chats_out)
        .with(&[("kind", "push")], ws.pushes_out)
        .with(&[("kind", "kept")], ws.kept_out)
        .with(
            &[("kind", "control")],
            ws.frames_out.saturating_sub(messages),
        );
        m.push_families(s);
        let r = self.router.stats();
        s.counter(
            "busy_refusals",
            "Messages refused (503) because the store's backlog was full",
        )
        .value(r.refused_busy);
    }

    fn store_families(&self, s: &mut Snapshot) {
        let store = self.router.store();
        let r = self.router.stats();
        s.gauge(
            "store_backlog_bytes",
            "Message bytes waiting for the store: batched, with the workers, or to retry",
        )
        .value(store.backlog_bytes(self.pool.backlog_bytes()));
        s.gauge(
            "store_backlog_limit_bytes",
            "storage.queue_bytes: past it, messages that reached nobody are refused",
        )
        .value(store.limit());
        s.gauge(
            "store_retry_queue",
            "Failed store writes waiting for a retry",
        )
        .value(store.waiting_for_retry());
        s.counter("store_rows_written", "Messages the store confirmed kept")
            .value(self.metrics.store_rows_written);
        s.counter(
            "store_rows_refused",
            "Messages the store refused to keep (a value it cannot hold)",
        )
        .value(r.store_refused);
        s.counter(
            "store_rows_dropped",
            "Messages dropped because the retry queue was full",
        )
        .value(store.dropped());
        s.counter(
            "store_backups_skipped",
            "Delivered messages not kept because the store's backlog was full",
        )
        .value(r.backups_skipped);
        let f = s.counter(
            "store_errors",
            "Store failures: writes that failed, kept messages that could not be read, tokens \
             that could not be checked",
        );
        for (op, n) in STORE_OPS.iter().zip(self.metrics.store_errors) {
            f.with(&[("op", op)], n);
        }
    }

    fn worker_families(&self, s: &mut Snapshot, now: Instant) {
        let slots = self.pool.stats();
        let f = s.counter(
            "worker_restarts",
            "Task workers replaced (died, or reloaded), by slot",
        );
        for w in &slots {
            f.with(&[("slot", &w.slot.to_string())], w.restarts);
        }
        let f = s.gauge("worker_tasks_waiting", "Tasks queued or in flight, by slot");
        for w in &slots {
            f.with(&[("slot", &w.slot.to_string())], w.queued + w.in_flight);
        }
        s.gauge("ready", "1 while /readyz answers 200")
            .value(u64::from(self.unready_reasons(now).is_empty()));
        s.gauge("uptime_seconds", "Seconds since the master started")
            .value(now.saturating_duration_since(self.started).as_secs());
    }
}

impl Metrics {
    fn register_histograms(&self, registry: &mut Registry) {
        // Clones share the histograms' counts: nothing is copied but a pointer.
        registry.register(
            "delivery_latency_seconds",
            "From a message's receipt by the master to the end of the loop turn that wrote it \
             to its recipients' sockets",
            self.delivery.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Task worker round trips, from submit to the worker's answer",
            self.tasks.clone(),
        );
    }

    fn push_families(&self, s: &mut Snapshot) {
        let f = s.counter("pushes", "Authenticated push requests, by door and means");
        for (d, door) in DOORS.iter().enumerate() {
            for (i, means) in MEANS.iter().enumerate() {
                f.with(&[("door", door), ("means", means)], self.pushes[d][i]);
            }
        }
        let f = s.counter(
            "push_replies",
            "Replies to push requests, by door and code (an HTTP status; UDP's code 0 is 200)",
        );
        for (d, door) in DOORS.iter().enumerate() {
            for (i, n) in self.replies[d].iter().enumerate() {
                let code = CODES.get(i).map_or("other".to_owned(), u16::to_string);
                f.with(&[("door", door), ("code", &code)], *n);
            }
        }
    }

    fn cluster_families(&self, s: &mut Snapshot, subscriptions_lost: u64) {
        s.counter(
            "cluster_publishes",
            "Messages published to other nodes through Redis: routed deliveries (one per node \
             reached) and broadcasts",
        )
        .with(&[("kind", "route")], self.cluster_routed)
        .with(&[("kind", "broadcast")], self.cluster_broadcasts);
        s.counter(
            "cluster_messages_received",
            "Messages other nodes (or this one) published to this node",
        )
        .value(self.cluster_received);
        let f = s.counter(
            "redis_errors",
            "Cluster operations on Redis that failed, and subscriptions lost, by operation",
        );
        for (op, n) in REDIS_OPS.iter().zip(self.redis_errors) {
            f.with(&[("op", op)], n);
        }
        f.with(&[("op", "subscribe")], subscriptions_lost);
    }
}

/// The families `Metrics` alone holds, as scraped (the rest need a running master).
#[cfg(test)]
pub(super) fn encode_snapshot_for_test(m: &Metrics) -> String {
    let mut registry = Registry::with_prefix("wspush");
    m.register_histograms(&mut registry);
    let mut s = Snapshot::default();
    s.counter("unlabelled", "One series without labels")
        .value(3u64);
    m.push_families(&mut s);
    m.cluster_families(&mut s, 0);
    registry.register_collector(Box::new(s));
    let mut text = String::new();
    encode(&mut text, &registry).expect("encode");
    assert!(text.contains("\nwspush_unlabelled_total 3\n"), "{text}");
    text
}
