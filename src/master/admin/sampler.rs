//! Takes the dashboard's reading once a second, from the sweep: the running totals the doors,
//! the router, the pool and the metrics already keep (plain integer reads), the latency window
//! of the interval, and each process's resident memory from `/proc` (an in-memory file
//! system: no disk, no waiting). About as costly as one small HTTP answer a second.

use super::history::{Reading, Values, WorkerValues};
use crate::master::Master;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

impl Master {
    /// A sample, when one is due.
    pub(in crate::master) fn sample_history(&mut self, now: Instant) {
        if !self.history.due(now) {
            return;
        }
        let reading = self.reading(now);
        self.history.record(reading, now, unix_ms());
    }

    fn reading(&mut self, now: Instant) -> Reading {
        let ws = self.ws.stats();
        let r = self.router.stats();
        let t = self.metrics.totals();
        let latency = self.metrics.take_window().percentiles();
        let store = self.router.store();
        let slots = self.pool.stats();
        let workers: Vec<WorkerValues> = slots
            .iter()
            .map(|s| WorkerValues {
                queue: (s.queued + s.in_flight) as f64,
                tasks: s.done as f64,
                memory: s.pid.and_then(rss_bytes).unwrap_or(0) as f64,
            })
            .collect();
        let heartbeat = self
            .metrics
            .last_heartbeat()
            .filter(|(at, _)| now.saturating_duration_since(*at).as_secs() < 60);
        let control_out = ws
            .frames_out
            .saturating_sub(ws.chats_out + ws.pushes_out + ws.kept_out);
        let [p200, p400, p401, p405, p413, p429, p500, p503, other] = t.replies;
        let f = |n: u64| n as f64;
        let values = Values {
            connections: f(self.ws.len() as u64),
            online_users: f(self.router.registry().online_users() as u64),
            logins: f(r.logins),
            refused_bad_token: f(ws.logins_refused),
            refused_unauthorized: f(r.logins_unauthorized),
            refused_expired: f(r.logins_expired),
            refused_unavailable: f(r.logins_unavailable),
            refused_over_cap: f(ws.refused_over_cap),
            refused_rate_ip: f(ws.refused_rate_ip),
            in_chat: f(t.chats_in),
            in_push: f(t.pushes),
            in_control: f(ws.messages_in.saturating_sub(t.chats_in)),
            out_chat: f(ws.chats_out),
            out_push: f(ws.pushes_out),
            out_kept: f(ws.kept_out),
            out_control: f(control_out),
            push_200: f(p200),
            push_400: f(p400),
            push_401: f(p401),
            push_405: f(p405),
            push_413: f(p413),
            push_429: f(p429),
            push_500: f(p500),
            push_503: f(p503),
            push_other: f(other),
            latency_p50: latency.map_or(f64::NAN, |p| p.p50),
            latency_p90: latency.map_or(f64::NAN, |p| p.p90),
            latency_p99: latency.map_or(f64::NAN, |p| p.p99),
            latency_max: latency.map_or(f64::NAN, |p| p.max),
            store_backlog: store.backlog_bytes(self.pool.backlog_bytes()) as f64,
            store_rows: f(t.store_rows_written),
            store_retry: store.waiting_for_retry() as f64,
            store_busy: f(r.refused_busy),
            slow_consumers: f(ws.slow_consumers),
            memory_master: rss_bytes(std::process::id()).unwrap_or(0) as f64,
            memory_workers: workers.iter().map(|w| w.memory).sum(),
            redis_errors: f(t.redis_errors),
            heartbeat_ms: heartbeat.map_or(f64::NAN, |(_, took)| took.as_secs_f64() * 1000.0),
        };
        Reading { values, workers }
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The resident memory of `pid` (`VmRSS` of `/proc/<pid>/status`), if it can be read.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_resident_memory() {
        let rss = super::rss_bytes(std::process::id()).expect("VmRSS");
        assert!(rss > 100_000, "{rss}");
        assert_eq!(super::rss_bytes(u32::MAX), None);
    }
}
