//! Messages on their way to the store. A message to keep joins its worker slot's batch (slot by
//! recipient, as that uid's logins); once per loop turn each batch becomes one `Store` task,
//! encoded from the messages themselves (no copy of their records). The whole backlog (batches,
//! tasks in flight, failed writes waiting for a retry) is bounded in bytes: past the bound the
//! doors refuse new messages with 503 rather than accept what could not be kept.

use crate::ipc::{self, Task};
use crate::master::message::Message;
use crate::master::retry::RetryQueue;
use crate::model::{Delivery, StoredMessage, Uid};
use bytes::Bytes;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The most message bytes (roughly) in one `Store` task.
const TASK_BYTES: usize = 1024 * 1024;
/// A batch list that grew past this in a burst is given back once it is handed over.
const KEEP_BATCH_CAPACITY: usize = 4096;

/// How long to wait before asking a message store that was down again.
const FETCH_RETRY: Duration = Duration::from_secs(1);

pub struct StoreQueue {
    backup: bool,
    /// One batch per worker slot.
    batches: Vec<Vec<(Rc<Message>, Delivery)>>,
    /// Bytes of the frames the batches hold.
    batched_bytes: usize,

    /// The most bytes waiting to be written (batched, in flight, or waiting for a retry).
    limit: usize,
    retry: RetryQueue,
    /// Uids whose kept messages could not be read (store down), and when to try again.
    retry_fetch: HashMap<Uid, Instant>,
}

impl StoreQueue {
    pub fn new(slots: usize, backup: bool, limit: usize, retry_limit: usize) -> Self {
        StoreQueue {
            backup,
            batches: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            batched_bytes: 0,

            limit,
            retry: RetryQueue::new(retry_limit),
            retry_fetch: HashMap::new(),
        }
    }

    /// True when a new message may be accepted: the backlog, with `in_flight` bytes of tasks
    /// the workers have not answered, is within the bound.
    pub fn has_room(&self, in_flight: usize) -> bool {
        self.batched_bytes + in_flight + self.retry.bytes() < self.limit
    }

    /// The whole backlog `has_room` weighs, with `in_flight` bytes at the workers.
    pub fn backlog_bytes(&self, in_flight: usize) -> usize {
        self.batched_bytes + in_flight + self.retry.bytes()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether a message with this outcome must be kept at all.
    pub fn wants(&self, delivery: Delivery) -> bool {
        delivery == Delivery::Undelivered || self.backup
    }

    /// Keeps a message (undelivered always, delivered ones only with `backup`).
    pub fn keep(&mut self, message: Rc<Message>, delivery: Delivery) {
        if !self.wants(delivery) {
            return;
        }
        let slot = (message.to.0 % self.batches.len() as u64) as usize;
        self.batched_bytes += message.frame.len();
        self.batches[slot].push((message, delivery));
    }

    /// Bytes of messages batched and not yet handed to a worker.
    pub fn batched_bytes(&self) -> usize {
        self.batched_bytes
    }

    pub fn is_idle(&self) -> bool {
        self.batched_bytes == 0 && self.batches.iter().all(Vec::is_empty)
    }

    /// One `Store` task per slot that has messages: (key, body). The key is a recipient of the
    /// batch, so the task runs where that uid's logins run.
    pub fn take_tasks(&mut self) -> Vec<(u64, Bytes)> {
        let mut tasks = Vec::new();
        if self.batched_bytes == 0 {
            return tasks;
        }
        for batch in &mut self.batches {
            let Some(key) = batch.first().map(|(m, _)| m.to.0) else {
                continue;
            };
            // Tasks of at most about `TASK_BYTES` each: a worker never holds a huge frame, and
            // a failed write retries no more than that.
            let mut start = 0;
            while start < batch.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < batch.len() && (end == start || bytes < TASK_BYTES) {
                    bytes += batch[end].0.frame.len();
                    end += 1;
                }
                let records: Vec<StoredMessage> = batch[start..end]
                    .iter()
                    .map(|(m, d)| m.stored(*d))
                    .collect();
                match ipc::encode_task(&Task::Store(records)) {
                    Ok(body) => tasks.push((key, body)),
                    Err(e) => log::error!("{} messages cannot be kept: {e}", end - start),
                }
                start = end;
            }
            batch.clear();
            if batch.capacity() > KEEP_BATCH_CAPACITY {
                *batch = Vec::new();
            }
        }
        self.batched_bytes = 0;
        tasks
    }

    /// A store write failed: it waits for a retry.
    pub fn write_failed(&mut self, key: u64, body: Bytes, was_probe: bool, now: Instant) {
        self.retry.failed(key, body, was_probe, now);
    }

    /// The write to send as a probe, when one is due.
    pub fn due_probe(&mut self, now: Instant) -> Option<(u64, Bytes)> {
        self.retry.due_probe(now)
    }

    /// The probe got through: every write waiting goes again.
    pub fn probe_succeeded(&mut self) -> Vec<(u64, Bytes)> {
        self.retry.probe_succeeded()
    }

    pub fn waiting_for_retry(&self) -> usize {
        self.retry.len()
    }

    pub fn dropped(&self) -> u64 {
        self.retry.dropped
    }

    /// The message store could not be read for `uid`: look again in a while.
    pub fn fetch_later(&mut self, uid: Uid, now: Instant) {
        self.retry_fetch.entry(uid).or_insert(now + FETCH_RETRY);
    }

    /// Uids whose fetch is due again.
    pub fn due_fetches(&mut self, now: Instant) -> Vec<Uid> {
        let due: Vec<Uid> = self
            .retry_fetch
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(u, _)| *u)
            .collect();
        for uid in &due {
            self.retry_fetch.remove(uid);
        }
        due
    }

    /// Writes still to come: messages batched or waiting for a retry.
    pub fn pending_writes(&self) -> usize {
        self.batches.iter().map(Vec::len).sum::<usize>() + self.retry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::message::Kind;
    use crate::model::MessageId;
    use crate::protocol::frames;

    fn message(id: u64, to: u64, content: &str) -> Rc<Message> {
        let (frame, layout) =
            frames::message(MessageId(id), "chat", Uid(1), Uid(to), 5, 1, content);
        Rc::new(Message {
            id: MessageId(id),
            from: Uid(1),
            to: Uid(to),
            time: 5,
            frame,
            kind: Kind::Named("chat"),
            content: Some(layout.content),
        })
    }

    fn stored(body: &[u8]) -> Vec<(u64, u64, Delivery, String)> {
        match ipc::decode::<Task>(body) {
            Ok(Task::Store(b)) => b
                .iter()
                .map(|m| (m.id.0, m.to.0, m.delivery, m.content.to_owned()))
                .collect(),
            other => panic!("not a store task: {other:?}"),
        }
    }

    #[test]
    fn batches_by_recipient_slot_with_content_as_is() {
        let mut q = StoreQueue::new(2, true, 1 << 20, 100);
        q.keep(message(1, 10, r#"{"a":"\"x"}"#), Delivery::Delivered);
        q.keep(message(2, 11, "1"), Delivery::Undelivered);
        q.keep(message(3, 12, "2"), Delivery::Delivered);
        let mut tasks = q.take_tasks();
        tasks.sort_by_key(|(key, _)| *key % 2);
        assert_eq!(tasks.len(), 2);
        assert_eq!(
            stored(&tasks[0].1),
            vec![
                (1, 10, Delivery::Delivered, r#"{"a":"\"x"}"#.to_owned()),
                (3, 12, Delivery::Delivered, "2".to_owned())
            ]
        );
        assert_eq!(
            stored(&tasks[1].1),
            vec![(2, 11, Delivery::Undelivered, "1".to_owned())]
        );
        assert!(q.take_tasks().is_empty());
        assert!(q.is_idle());
    }

    #[test]
    fn a_large_batch_is_split_into_tasks_of_about_a_mebibyte() {
        let big = format!("\"{}\"", "x".repeat(300 * 1024));
        let mut q = StoreQueue::new(1, true, 1 << 30, 100);
        for id in 0..10 {
            q.keep(message(id, 10, &big), Delivery::Delivered);
        }
        let tasks = q.take_tasks();
        let ids: Vec<Vec<u64>> = tasks
            .iter()
            .map(|(_, b)| stored(b).iter().map(|r| r.0).collect())
            .collect();
        assert_eq!(ids, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert!(tasks.iter().all(|(key, _)| *key == 10));
    }

    #[test]
    fn without_backup_only_undelivered_messages_are_kept() {
        let mut q = StoreQueue::new(1, false, 1 << 20, 100);
        q.keep(message(1, 10, "1"), Delivery::Delivered);
        assert!(q.is_idle());
        q.keep(message(2, 10, "1"), Delivery::Undelivered);
        assert_eq!(q.take_tasks().len(), 1);
    }

    #[test]
    fn the_backlog_is_bounded_in_bytes() {
        let big = format!("\"{}\"", "x".repeat(1000));
        let mut q = StoreQueue::new(1, true, 3000, 100);
        assert!(q.has_room(0));
        q.keep(message(1, 10, &big), Delivery::Delivered);
        q.keep(message(2, 10, &big), Delivery::Delivered);
        assert!(q.has_room(0));
        assert!(!q.has_room(1000), "with a task in flight");
        q.keep(message(3, 10, &big), Delivery::Delivered);
        assert!(!q.has_room(0));
        let tasks = q.take_tasks();
        assert!(q.has_room(0), "handed to the pool, counted there");
        q.write_failed(tasks[0].0, tasks[0].1.clone(), false, Instant::now());
        assert!(!q.has_room(0), "a failed write still counts");
    }
}
