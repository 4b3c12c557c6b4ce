//! Writes that failed (the message store is down, or a task timed out) wait here, in the master,
//! and are retried: first the oldest alone as a probe, then, once it succeeds, all the rest.
//! Bounded: past `limit` messages the oldest backup copies (delivered messages) go first, then
//! the oldest undelivered ones; every drop is counted and logged, never silent.

use crate::ipc::Task;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const PROBE_EVERY: Duration = Duration::from_secs(1);

pub struct RetryQueue {
    /// (key, task): Store and Requeue tasks, oldest first.
    tasks: VecDeque<(u64, Task)>,
    messages: usize,
    limit: usize,
    probe_in_flight: bool,
    next_probe: Option<Instant>,
    pub dropped: u64,
}

fn weight(task: &Task) -> usize {
    match task {
        Task::Store(batch) => batch.len(),
        Task::Requeue(ids) => ids.len(),
        _ => 1,
    }
}

impl RetryQueue {
    pub fn new(limit: usize) -> Self {
        RetryQueue {
            tasks: VecDeque::new(),
            messages: 0,
            limit,
            probe_in_flight: false,
            next_probe: None,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// A write failed: keep it for later (at the front if it was the probe).
    pub fn failed(&mut self, key: u64, task: Task, was_probe: bool, now: Instant) {
        self.messages += weight(&task);
        if was_probe {
            self.probe_in_flight = false;
            self.tasks.push_front((key, task));
        } else {
            self.tasks.push_back((key, task));
        }
        self.next_probe.get_or_insert(now + PROBE_EVERY);
        self.enforce_limit();
    }

    /// The probe got through: everything waiting can go now.
    pub fn probe_succeeded(&mut self) -> Vec<(u64, Task)> {
        self.probe_in_flight = false;
        self.next_probe = None;
        self.messages = 0;
        self.tasks.drain(..).collect()
    }

    /// The write to send as a probe, when one is due.
    pub fn due_probe(&mut self, now: Instant) -> Option<(u64, Task)> {
        if self.probe_in_flight || self.next_probe.is_none_or(|t| t > now) {
            return None;
        }
        let (key, task) = self.tasks.pop_front()?;
        self.messages -= weight(&task);
        self.probe_in_flight = true;
        self.next_probe = Some(now + PROBE_EVERY);
        Some((key, task))
    }

    fn enforce_limit(&mut self) {
        // Backup copies of delivered messages first: their recipients already have them.
        for (_, task) in self.tasks.iter_mut() {
            if self.messages <= self.limit {
                break;
            }
            if let Task::Store(batch) = task {
                let before = batch.len();
                batch.retain(|m| m.state == 0);
                let gone = before - batch.len();
                self.messages -= gone;
                self.dropped += gone as u64;
                if gone > 0 {
                    log::error!("store retry queue full: dropped {gone} backup copies of delivered messages");
                }
            }
        }
        while self.messages > self.limit {
            let Some((_, task)) = self.tasks.pop_front() else {
                break;
            };
            let gone = weight(&task);
            self.messages -= gone;
            self.dropped += gone as u64;
            log::error!("store retry queue full: dropped {gone} undelivered messages (or marks); the store has been down too long");
        }
        self.tasks.retain(|(_, t)| weight(t) > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageRecord;

    fn batch(ids: &[(u64, u8)]) -> Task {
        Task::Store(
            ids.iter()
                .map(|&(id, state)| MessageRecord {
                    id,
                    uid: 1,
                    to_uid: 2,
                    kind: "chat".into(),
                    state,
                    content: "{}".into(),
                    time: 0,
                })
                .collect(),
        )
    }

    #[test]
    fn probes_one_then_releases_all() {
        let now = Instant::now();
        let mut q = RetryQueue::new(100);
        q.failed(1, batch(&[(1, 0)]), false, now);
        q.failed(1, batch(&[(2, 0)]), false, now);
        assert!(q.due_probe(now).is_none(), "not before the pause");
        let later = now + PROBE_EVERY;
        let (_, probe) = q.due_probe(later).expect("probe");
        assert!(matches!(probe, Task::Store(ref b) if b[0].id == 1));
        assert!(q.due_probe(later).is_none(), "one probe at a time");
        q.failed(1, probe, true, later);
        let (_, again) = q.due_probe(later + PROBE_EVERY).expect("probe again");
        assert!(
            matches!(again, Task::Store(ref b) if b[0].id == 1),
            "the oldest stays first"
        );
        assert_eq!(q.probe_succeeded().len(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn over_the_limit_backups_go_first_and_drops_are_counted() {
        let now = Instant::now();
        let mut q = RetryQueue::new(3);
        q.failed(1, batch(&[(1, 1), (2, 0)]), false, now);
        q.failed(1, batch(&[(3, 0), (4, 1)]), false, now);
        assert_eq!((q.len(), q.dropped), (3, 1), "one backup copy dropped");
        q.failed(1, batch(&[(5, 0), (6, 0)]), false, now);
        assert!(q.len() <= 3);
        assert_eq!(q.dropped, 3);
    }
}
