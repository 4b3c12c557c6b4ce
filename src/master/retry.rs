//! Writes that failed (the message store is down, or a task timed out) wait here, in the master,
//! and are retried: first the oldest alone as a probe, then, once it succeeds, all the rest.
//! Bounded: past `limit` messages the oldest backup copies (delivered messages) go first, then
//! the oldest undelivered ones; every drop is counted and logged, never silent.
//!
//! Writes are kept as the task bodies that failed; they are decoded only to weigh them and to
//! drop backup copies, both rare.

use crate::ipc::{self, Task};
use crate::model::Delivery;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A failed write: its task key and body, and how many messages (or marks) it carries.
struct Failed {
    key: u64,
    body: Bytes,
    weight: usize,
}

pub struct RetryQueue {
    tasks: VecDeque<Failed>,
    messages: usize,
    bytes: usize,
    limit: usize,
    probe_in_flight: bool,
    next_probe: Option<Instant>,
    pub dropped: u64,
}

fn weight(body: &[u8]) -> usize {
    match ipc::decode::<Task>(body) {
        Ok(Task::Store(batch)) => batch.len(),
        Ok(Task::Requeue { ids, .. }) => ids.len(),
        _ => 1,
    }
}

impl RetryQueue {
    pub fn new(limit: usize) -> Self {
        RetryQueue {
            tasks: VecDeque::new(),
            messages: 0,
            bytes: 0,
            limit,
            probe_in_flight: false,
            next_probe: None,
            dropped: 0,
        }
    }

    /// Messages (and marks) waiting.
    pub fn len(&self) -> usize {
        self.messages
    }

    /// Bytes of the bodies waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// A write failed: keep it for later (at the front if it was the probe).
    pub fn failed(&mut self, key: u64, body: Bytes, was_probe: bool, now: Instant) {
        let f = Failed {
            key,
            weight: weight(&body),
            body,
        };
        self.messages += f.weight;
        self.bytes += f.body.len();
        if was_probe {
            self.probe_in_flight = false;
            self.tasks.push_front(f);
        } else {
            self.tasks.push_back(f);
        }
        self.next_probe.get_or_insert(now + PROBE_EVERY);
        self.enforce_limit();
    }

    /// The probe got through: everything waiting can go now.
    pub fn probe_succeeded(&mut self) -> Vec<(u64, Bytes)> {
        self.probe_in_flight = false;
        self.next_probe = None;
        self.messages = 0;
        self.bytes = 0;
        self.tasks.drain(..).map(|f| (f.key, f.body)).collect()
    }

    /// The write to send as a probe, when one is due.
    pub fn due_probe(&mut self, now: Instant) -> Option<(u64, Bytes)> {
        if self.probe_in_flight || self.next_probe.is_none_or(|t| t > now) {
            return None;
        }
        let f = self.tasks.pop_front()?;
        self.messages -= f.weight;
        self.bytes -= f.body.len();
        self.probe_in_flight = true;
        self.next_probe = Some(now + PROBE_EVERY);
        Some((f.key, f.body))
    }

    fn enforce_limit(&mut self) {
        // Backup copies of delivered messages first: their recipients already have them.
        for f in self.tasks.iter_mut() {
            if self.messages <= self.limit {
                break;
            }
            let Ok(Task::Store(batch)) = ipc::decode::<Task>(&f.body) else {
                continue;
            };
            let before = batch.len();
            let kept: Vec<_> = batch
                .into_iter()
                .filter(|m| m.delivery == Delivery::Undelivered)
                .collect();
            let gone = before - kept.len();
            if gone == 0 {
                continue;
            }
            let Ok(body) = ipc::encode_task(&Task::Store(kept)) else {
                continue;
            };
            self.messages -= gone;
            self.bytes = self.bytes - f.body.len() + body.len();
            self.dropped += gone as u64;
            f.weight -= gone;
            f.body = body;
            log::error!(
                "store retry queue full: dropped {gone} backup copies of delivered messages"
            );
        }
        while self.messages > self.limit {
            let Some(f) = self.tasks.pop_front() else {
                break;
            };
            self.messages -= f.weight;
            self.bytes -= f.body.len();
            self.dropped += f.weight as u64;
            log::error!(
                "store retry queue full: dropped {} undelivered messages (or marks); the store has been down too long",
                f.weight
            );
        }
        self.tasks.retain(|f| f.weight > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageId, StoredMessage, Uid};

    fn batch(ids: &[(u64, Delivery)]) -> Bytes {
        let records: Vec<StoredMessage> = ids
            .iter()
            .map(|&(id, delivery)| StoredMessage {
                id: MessageId(id),
                from: Uid(1),
                to: Uid(2),
                kind: "chat",
                delivery,
                content: "{}",
                time: 0,
            })
            .collect();
        ipc::encode_task(&Task::Store(records)).expect("encode")
    }

    fn ids(body: &[u8]) -> Vec<u64> {
        match ipc::decode::<Task>(body) {
            Ok(Task::Store(b)) => b.iter().map(|m| m.id.0).collect(),
            _ => Vec::new(),
        }
    }

    const U: Delivery = Delivery::Undelivered;
    const D: Delivery = Delivery::Delivered;

    #[test]
    fn probes_one_then_releases_all() {
        let now = Instant::now();
        let mut q = RetryQueue::new(100);
        q.failed(1, batch(&[(1, U)]), false, now);
        q.failed(1, batch(&[(2, U)]), false, now);
        assert!(q.due_probe(now).is_none(), "not before the pause");
        let later = now + PROBE_EVERY;
        let (_, probe) = q.due_probe(later).expect("probe");
        assert_eq!(ids(&probe), vec![1]);
        assert!(q.due_probe(later).is_none(), "one probe at a time");
        q.failed(1, probe, true, later);
        let (_, again) = q.due_probe(later + PROBE_EVERY).expect("probe again");
        assert_eq!(ids(&again), vec![1], "the oldest stays first");
        assert_eq!(q.probe_succeeded().len(), 1);
        assert_eq!(q.len(), 0);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn over_the_limit_backups_go_first_and_drops_are_counted() {
        let now = Instant::now();
        let mut q = RetryQueue::new(3);
        q.failed(1, batch(&[(1, D), (2, U)]), false, now);
        q.failed(1, batch(&[(3, U), (4, D)]), false, now);
        assert_eq!((q.len(), q.dropped), (3, 1), "one backup copy dropped");
        q.failed(1, batch(&[(5, U), (6, U)]), false, now);
        assert!(q.len() <= 3);
        assert_eq!(q.dropped, 3);
        let left: Vec<u64> = q
            .probe_succeeded()
            .iter()
            .flat_map(|(_, b)| ids(b))
            .collect();
        assert!(left.ends_with(&[5, 6]), "the newest stay: {left:?}");
    }
}
