//! The dashboard's history: one sample a second for the last ten minutes, so that a page
//! opened now shows them at once. A sample is derived from two readings of the master's
//! running totals (`sampler`): gauges as read, counters as rates per second. Nothing here
//! reads the master; it only keeps and writes what it is given.

use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often a sample is taken, and how many are kept (ten minutes).
pub const EVERY: Duration = Duration::from_secs(1);
pub const CAPACITY: usize = 600;

/// A series is a gauge (its value as read) or a rate (the change of a running total, per
/// second).
#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Rate,
}

impl Kind {
    fn derive(self, now: f64, before: f64, secs: f64) -> f64 {
        match self {
            Kind::Gauge => now,
            // A total that went down (a worker slot's count after a restart) is no rate.
            Kind::Rate => ((now - before) / secs).max(0.0),
        }
    }
}

/// A struct of named series, declared once: its fields, their names in the JSON, and how a
/// sample is derived from two readings.
macro_rules! series {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $kind:ident = $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Clone, Copy, PartialEq)]
        pub struct $name {
            $(pub $field: f64,)*
        }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($label,)*];

            fn derive(now: &Self, before: &Self, secs: f64) -> Self {
                $name {
                    $($field: Kind::$kind.derive(now.$field, before.$field, secs),)*
                }
            }

            fn to_vec(self) -> Vec<f64> {
                vec![$(self.$field,)*]
            }
        }
    };
}

series! {
    /// The node's series. Raw (in a `Reading`): gauges and running totals; in a `Sample`:
    /// gauges and rates per second. Latencies are in milliseconds (NaN: no message in the
    /// interval), memory in bytes.
    Values {
        connections: Gauge = "connections",
        online_users: Gauge = "online_users",
        logins: Rate = "logins",
        refused_bad_token: Rate = "refused.bad_token",
        refused_unauthorized: Rate = "refused.unauthorized",
        refused_expired: Rate = "refused.expired",
        refused_unavailable: Rate = "refused.unavailable",
        refused_over_cap: Rate = "refused.over_cap",
        refused_rate_ip: Rate = "refused.rate_per_ip",
        in_chat: Rate = "in.chat",
        in_push: Rate = "in.push",
        in_control: Rate = "in.control",
        out_chat: Rate = "out.chat",
        out_push: Rate = "out.push",
        out_kept: Rate = "out.kept",
        out_control: Rate = "out.control",
        push_200: Rate = "push.200",
        push_400: Rate = "push.400",
        push_401: Rate = "push.401",
        push_405: Rate = "push.405",
        push_413: Rate = "push.413",
        push_429: Rate = "push.429",
        push_500: Rate = "push.500",
        push_503: Rate = "push.503",
        push_other: Rate = "push.other",
        latency_p50: Gauge = "latency.p50",
        latency_p90: Gauge = "latency.p90",
        latency_p99: Gauge = "latency.p99",
        latency_max: Gauge = "latency.max",
        store_backlog: Gauge = "store.backlog_bytes",
        store_rows: Rate = "store.rows",
        store_retry: Gauge = "store.retry_queue",
        store_busy: Rate = "store.busy_refusals",
        slow_consumers: Rate = "slow_consumers",
        memory_master: Gauge = "memory.master",
        memory_workers: Gauge = "memory.workers",
        redis_errors: Rate = "redis.errors",
        heartbeat_ms: Gauge = "redis.heartbeat_ms",
    }
}

series! {
    /// One task worker slot's series.
    WorkerValues {
        queue: Gauge = "queue",
        tasks: Rate = "tasks",
        memory: Gauge = "memory",
    }
}

/// What the sampler read at one moment.
#[derive(Debug, Default, Clone)]
pub struct Reading {
    pub values: Values,
    /// By slot.
    pub workers: Vec<WorkerValues>,
}

struct Sample {
    /// Unix time in milliseconds.
    at_ms: u64,
    values: Values,
    workers: Vec<WorkerValues>,
}

pub struct History {
    samples: VecDeque<Sample>,
    /// The previous reading, which the next one's rates are taken against.
    last: Option<(Instant, Reading)>,
    next: Instant,
}

impl History {
    pub fn new(now: Instant) -> History {
        History {
            samples: VecDeque::with_capacity(CAPACITY),
            last: None,
            next: now,
        }
    }

    /// A sample is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Takes `reading` (made at `now`, Unix time `at_ms`): a sample against the previous
    /// reading. The first reading is only the base of the next.
    pub fn record(&mut self, reading: Reading, now: Instant, at_ms: u64) {
        // Keeps the cadence while the loop is late by less than a second.
        self.next += EVERY;
        if self.next <= now {
            self.next = now + EVERY;
        }
        if let Some((then, before)) = &self.last {
            let secs = now.saturating_duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                if self.samples.len() == CAPACITY {
                    self.samples.pop_front();
                }
                let workers = reading.workers.iter().zip(&before.workers);
                self.samples.push_back(Sample {
                    at_ms,
                    values: Values::derive(&reading.values, &before.values, secs),
                    workers: workers
                        .map(|(w, b)| WorkerValues::derive(w, b, secs))
                        .collect(),
                });
            }
        }
        self.last = Some((now, reading));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.samples.len()
    }

    /// The samples taken after `after_ms`, by column: `t` (their times), `series` (each of
    /// `Values::NAMES`) and `workers` (per slot, each of `WorkerValues::NAMES`).
    pub fn columns(&self, after_ms: u64) -> Map<String, Value> {
        let first = self.samples.partition_point(|s| s.at_ms <= after_ms);
        let picked: Vec<&Sample> = self.samples.range(first..).collect();
        let times: Vec<u64> = picked.iter().map(|s| s.at_ms).collect();
        let rows: Vec<Vec<f64>> = picked.iter().map(|s| s.values.to_vec()).collect();
        let mut series = Map::new();
        for (i, name) in Values::NAMES.iter().enumerate() {
            series.insert((*name).into(), column(rows.iter().map(|r| r[i])));
        }
        let slots = picked.iter().map(|s| s.workers.len()).max().unwrap_or(0);
        let workers: Vec<Value> = (0..slots)
            .map(|slot| {
                let rows: Vec<Option<Vec<f64>>> = picked
                    .iter()
                    .map(|s| s.workers.get(slot).map(|w| w.to_vec()))
                    .collect();
                let mut one = Map::new();
                one.insert("slot".into(), json!(slot));
                for (i, name) in WorkerValues::NAMES.iter().enumerate() {
                    let values = rows.iter().map(|r| r.as_ref().map_or(f64::NAN, |r| r[i]));
                    one.insert((*name).into(), column(values));
                }
                Value::Object(one)
            })
            .collect();
        let mut out = Map::new();
        out.insert("t".into(), json!(times));
        out.insert("series".into(), Value::Object(series));
        out.insert("workers".into(), Value::Array(workers));
        out
    }
}

/// A column of values, to a thousandth (no one reads further on a plot, and the JSON stays
/// short; whole numbers are written as integers); NaN becomes null.
fn column(values: impl Iterator<Item = f64>) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: integers below it are exact
    Value::Array(
        values
            .map(|v| {
                let v = (v * 1000.0).round() / 1000.0;
                match v.is_finite() {
                    true if v.fract() == 0.0 && v.abs() < EXACT => json!(v as i64),
                    true => json!(v),
                    false => Value::Null,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(connections: f64, logins: f64, done: &[f64]) -> Reading {
        Reading {
            values: Values {
                connections,
                logins,
                latency_p99: f64::NAN,
                ..Values::default()
            },
            workers: done
                .iter()
                .map(|&tasks| WorkerValues {
                    queue: 1.0,
                    tasks,
                    memory: 4096.0,
                })
                .collect(),
        }
    }

    #[test]
    fn gauges_are_kept_and_totals_become_rates_per_second() {
        let t0 = Instant::now();
        let mut h = History::new(t0);
        assert!(h.due(t0));
        h.record(reading(5.0, 100.0, &[10.0, 20.0]), t0, 1_000);
        assert_eq!(h.len(), 0, "the first reading is only a base");
        assert!(!h.due(t0 + Duration::from_millis(999)));
        let t1 = t0 + Duration::from_secs(2);
        assert!(h.due(t1));
        h.record(reading(7.0, 160.0, &[30.0, 10.0]), t1, 3_000);
        let c = Value::Object(h.columns(0));
        assert_eq!(c["t"], json!([3000]));
        assert_eq!(c["series"]["connections"], json!([7]));
        assert_eq!(c["series"]["logins"], json!([30]), "60 logins in 2 s");
        assert_eq!(
            c["series"]["latency.p99"],
            json!([null]),
            "no message: no latency"
        );
        assert_eq!(c["workers"][0]["tasks"], json!([10]));
        assert_eq!(
            c["workers"][1]["tasks"],
            json!([0]),
            "a total that went down (a restarted slot) is no rate"
        );
        assert_eq!(c["workers"][1]["memory"], json!([4096]));
        let values = [1.0 / 3.0, 2.5, f64::NAN, 1e6];
        assert_eq!(
            column(values.into_iter()),
            json!([0.333, 2.5, null, 1000000])
        );
        assert_eq!(
            Value::Object(h.columns(3_000))["t"],
            json!([]),
            "nothing after the last sample"
        );
    }

    #[test]
    fn ten_minutes_are_kept_and_read_from_any_point() {
        let t0 = Instant::now();
        let mut h = History::new(t0);
        for i in 0..=(CAPACITY as u64 + 50) {
            let now = t0 + EVERY * i as u32;
            h.record(reading(i as f64, 0.0, &[]), now, 1_000 * i);
        }
        assert_eq!(h.len(), CAPACITY);
        let all = Value::Object(h.columns(0));
        let times = all["t"].as_array().expect("times");
        assert_eq!(times.len(), CAPACITY);
        assert_eq!(times[0], json!(51_000), "the oldest ones went");
        let tail = Value::Object(h.columns(640_000));
        assert_eq!(
            tail["t"],
            json!([
                641_000, 642_000, 643_000, 644_000, 645_000, 646_000, 647_000, 648_000, 649_000,
                650_000
            ])
        );
        assert_eq!(tail["series"]["connections"][9], json!(650));
        assert_eq!(Values::NAMES.len(), Values::default().to_vec().len());
    }

    #[test]
    fn the_cadence_holds_when_the_loop_is_a_little_late() {
        let t0 = Instant::now();
        let mut h = History::new(t0);
        h.record(Reading::default(), t0, 0);
        // Taken 250 ms late (the sweep's granularity): the next is still due a second after
        // the first, not after this one.
        let late = t0 + EVERY + Duration::from_millis(250);
        h.record(Reading::default(), late, 1_250);
        assert!(h.due(t0 + 2 * EVERY));
        // A loop stalled for seconds starts a new cadence.
        let stalled = t0 + 10 * EVERY;
        h.record(Reading::default(), stalled, 10_000);
        assert!(!h.due(stalled + Duration::from_millis(999)));
    }
}
