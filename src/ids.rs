//! Message ids: decimal, increasing per node, unique across nodes with distinct `node_id`s.
//! Layout: microseconds since 2024-01-01 (50 bits, until 2059) << 13 | node_id << 3 | sequence.
//! Microseconds, so that messages stamped on different nodes one after the other (a pusher
//! waits for one reply, then sends to another node) sort in the order they were sent, as
//! far as the nodes' clocks agree.

use crate::model::MessageId;
use std::time::{SystemTime, UNIX_EPOCH};

const EPOCH_US: u64 = 1_704_067_200_000_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 3;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const TIME_SHIFT: u32 = NODE_BITS + SEQ_BITS;

pub struct IdGenerator {
    node: u64,
    last: u64,
}

impl IdGenerator {
    pub fn new(node_id: u16) -> Self {
        IdGenerator {
            node: u64::from(node_id) & ((1 << NODE_BITS) - 1),
            last: 0,
        }
    }

    /// Never repeats and never decreases, even if the wall clock steps back or a
    /// microsecond's sequence runs out: it then borrows from the next microsecond.
    pub fn next_id(&mut self) -> MessageId {
        let us = now_us().saturating_sub(EPOCH_US);
        let candidate = (us << TIME_SHIFT) | (self.node << SEQ_BITS);
        let id = if candidate > self.last {
            candidate
        } else if self.last & SEQ_MASK < SEQ_MASK {
            self.last + 1
        } else {
            // Sequence exhausted: move to the next microsecond slot of this node.
            (((self.last >> TIME_SHIFT) + 1) << TIME_SHIFT) | (self.node << SEQ_BITS)
        };
        self.last = id;
        MessageId(id)
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The smallest id stamped at `unix_secs` or later (on any node).
pub fn first_id_at(unix_secs: u64) -> MessageId {
    let us = (unix_secs * 1_000_000).saturating_sub(EPOCH_US);
    MessageId(us << TIME_SHIFT)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increasing_and_unique_under_burst() {
        let mut g = IdGenerator::new(3);
        let mut prev = 0;
        for _ in 0..100_000 {
            let id = g.next_id().0;
            assert!(id > prev);
            assert_eq!((id >> SEQ_BITS) & ((1 << NODE_BITS) - 1), 3);
            assert!(id < 1 << 63, "fits a signed 64-bit column");
            prev = id;
        }
    }

    #[test]
    fn later_stamps_on_other_nodes_sort_later() {
        let mut a = IdGenerator::new(900);
        let mut b = IdGenerator::new(1);
        let first = a.next_id();
        // Any real gap between two sends is at least a microsecond.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_micros(2) {}
        assert!(b.next_id() > first);
    }

    #[test]
    fn nodes_never_collide() {
        let mut a = IdGenerator::new(1);
        let mut b = IdGenerator::new(2);
        let xs: std::collections::HashSet<u64> = (0..10_000).map(|_| a.next_id().0).collect();
        assert!((0..10_000).all(|_| !xs.contains(&b.next_id().0)));
    }
}
