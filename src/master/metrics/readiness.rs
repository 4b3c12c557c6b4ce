//! `/readyz`: ready only while every worker slot answers a ping (a task like any other, in the
//! slot's queue, that the worker answers once its token store has answered a cheap read), and,
//! in a cluster, the subscription to Redis holds. A hung worker (stopped, or stuck in a store
//! call) leaves its ping unanswered: overdue after `OVERDUE`, so the node turns unready within
//! `PING_EVERY + OVERDUE` plus a sweep. `/healthz` stays liveness only.

use crate::ipc::{self, Reply, Task, TaskFailure};
use crate::master::router::Origin;
use crate::master::Master;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// How often each slot is pinged (a slot with a ping in flight is not pinged again).
const PING_EVERY: Duration = Duration::from_secs(1);
/// A ping unanswered this long means the slot does not answer.
const OVERDUE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Probe {
    /// When the ping in flight was sent.
    sent: Option<Instant>,
    /// The last answer's failure.
    failure: Option<TaskFailure>,
}

pub struct Readiness {
    probes: Vec<Probe>,
    /// `Task::Ping`, encoded once.
    ping: Option<Bytes>,
    next_round: Instant,
}

impl Readiness {
    pub fn new(slots: usize, now: Instant) -> Readiness {
        let ping = ipc::encode_task(&Task::Ping)
            .map_err(|e| log::error!("the readiness ping cannot be encoded: {e}"))
            .ok();
        Readiness {
            probes: (0..slots).map(|_| Probe::default()).collect(),
            ping,
            next_round: now,
        }
    }

    /// The slots to ping now, each with the ping's body; counted as sent.
    fn due(&mut self, now: Instant) -> Vec<(usize, Bytes)> {
        let Some(ping) = self.ping.as_ref().filter(|_| now >= self.next_round) else {
            return Vec::new();
        };
        self.next_round = now + PING_EVERY;
        let mut due = Vec::new();
        for (slot, p) in self.probes.iter_mut().enumerate() {
            if p.sent.is_none() {
                p.sent = Some(now);
                due.push((slot, ping.clone()));
            }
        }
        due
    }

    fn answered(&mut self, slot: usize, reply: &Reply) {
        if let Some(p) = self.probes.get_mut(slot) {
            p.sent = None;
            p.failure = match reply {
                Reply::Failed(f) => Some(f.clone()),
                _ => None,
            };
        }
    }

    /// Why slot `slot` is not ready, if it is not. A worker that has just reported ready
    /// counts as answering until its first ping is overdue.
    fn slot_trouble(&self, slot: usize, now: Instant) -> Option<String> {
        let p = self.probes.get(slot)?;
        if let Some(late) = p
            .sent
            .map(|t| now.saturating_duration_since(t))
            .filter(|late| *late >= OVERDUE)
        {
            return Some(format!(
                "task worker {slot} has not answered for {} ms",
                late.as_millis()
            ));
        }
        let f = p.failure.as_ref()?;
        Some(format!("task worker {slot}: token store: {f}"))
    }
}

impl Master {
    /// Pings the worker slots when due (from the sweep).
    pub(in crate::master) fn ping_workers(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        for (slot, body) in self.readiness.due(now) {
            self.pool.submit(slot as u64, body, Origin::Ping { slot });
        }
    }

    pub(in crate::master) fn ping_answered(&mut self, slot: usize, reply: &Reply) {
        self.readiness.answered(slot, reply);
    }

    /// Every reason this node is not ready; none when it is.
    pub(in crate::master) fn unready_reasons(&self, now: Instant) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.stopping.is_some() {
            reasons.push("stopping".to_owned());
        }
        for slot in 0..self.pool.slot_count() {
            if !self.pool.slot_ready(slot) {
                reasons.push(format!("task worker {slot} is starting"));
            } else if let Some(why) = self.readiness.slot_trouble(slot, now) {
                reasons.push(why);
            }
        }
        if let Some(c) = self.cluster.as_ref() {
            if !c.subscribed() {
                reasons.push("redis: not subscribed to this node's channel".to_owned());
            }
        }
        reasons
    }

    /// `GET /readyz`: 200 `{"code":0,"status":"ready"}`, or 503 with the reasons.
    pub(in crate::master) fn readyz(&self, now: Instant) -> (u16, String) {
        let reasons = self.unready_reasons(now);
        if reasons.is_empty() {
            return (
                200,
                serde_json::json!({"code": 0, "status": "ready"}).to_string(),
            );
        }
        let body = serde_json::json!({
            "code": 503,
            "status": "not ready",
            "reasons": reasons,
        });
        (503, body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_ready_once_answered_and_unready_when_its_ping_is_overdue() {
        let t0 = Instant::now();
        let mut r = Readiness::new(2, t0);
        let due = r.due(t0);
        assert_eq!(due.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(r.slot_trouble(0, t0), None, "not overdue yet");
        r.answered(0, &Reply::Ok);
        assert_eq!(r.slot_trouble(0, t0), None);
        // Slot 1 stays silent: overdue after OVERDUE, and not pinged twice meanwhile.
        let later = t0 + PING_EVERY;
        assert_eq!(
            r.due(later).iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [0]
        );
        let late = t0 + OVERDUE;
        assert!(r
            .slot_trouble(1, late)
            .is_some_and(|why| why.contains("has not answered for")));
        r.answered(1, &Reply::Failed(TaskFailure::StoreUnavailable));
        assert!(r
            .slot_trouble(1, late)
            .is_some_and(|why| why.contains("store unavailable")));
        r.answered(1, &Reply::Ok);
        assert_eq!(r.slot_trouble(1, late), None);
    }
}
