//! Giving memory back after a flood of connections has gone, or a backlog of messages has
//! been written: the maps shrink to their contents, and glibc's allocator returns its freed
//! pages to the system (`crate::trim`), which it otherwise keeps for later. Done only after many connections closed, at most once
//! a second: a trim walks the heap (milliseconds for tens of megabytes). The tail of a flood
//! (fewer closes than the threshold, after a trim) gets one more trim once closes stop.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Connections that must have gone since the last trim before another is worth it.
const CLOSES_BEFORE_TRIM: u64 = 1000;
/// A store backlog this large, once written, is worth a trim.
const BACKLOG_BEFORE_TRIM: usize = 4 * 1024 * 1024;
const TRIM_AT_MOST_EVERY: Duration = Duration::from_secs(1);

pub struct Reclaimer {
    closes_since_trim: u64,
    last_trim: Option<Instant>,
    /// `closes_since_trim` at the previous check: unchanged means closes have stopped.
    closes_at_last_check: u64,
    /// The last trim was for a flood, whose tail may still be unreturned.
    after_flood: bool,
    /// The largest store backlog seen since the last trim, and the latest.
    backlog_peak: usize,
    backlog_now: usize,
}

impl Reclaimer {
    pub fn new() -> Reclaimer {
        Reclaimer {
            closes_since_trim: 0,
            last_trim: None,
            closes_at_last_check: 0,
            after_flood: false,
            backlog_peak: 0,
            backlog_now: 0,
        }
    }

    pub fn connection_closed(&mut self) {
        self.closes_since_trim += 1;
    }

    /// The bytes waiting for the store now; a large backlog that has drained asks for a trim.
    pub fn store_backlog(&mut self, bytes: usize) {
        self.backlog_peak = self.backlog_peak.max(bytes);
        self.backlog_now = bytes;
    }

    /// True when enough has been freed since the last trim, and not too recently; or when a
    /// flood's tail has closed and nothing more is closing; or when a large store backlog has
    /// been written. Called at a steady pace (the sweep).
    pub fn due(&mut self, now: Instant) -> bool {
        let rested = self
            .last_trim
            .is_none_or(|t| now.duration_since(t) >= TRIM_AT_MOST_EVERY);
        let flood = self.closes_since_trim >= CLOSES_BEFORE_TRIM;
        let tail = self.after_flood
            && self.closes_since_trim > 0
            && self.closes_since_trim == self.closes_at_last_check;
        self.closes_at_last_check = self.closes_since_trim;
        let drained = self.backlog_peak >= BACKLOG_BEFORE_TRIM && self.backlog_now == 0;
        let due = rested && (flood || tail || drained);
        if due {
            self.backlog_peak = 0;
            self.after_flood = flood;
            self.closes_since_trim = 0;
            self.closes_at_last_check = 0;
            self.last_trim = Some(now);
        }
        due
    }
}

/// Shrinks a map that holds far fewer entries than it has room for.
pub fn shrink_map<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(r: &mut Reclaimer, n: u64) {
        (0..n).for_each(|_| r.connection_closed());
    }

    #[test]
    fn a_flood_and_its_tail_are_each_trimmed_once() {
        let mut r = Reclaimer::new();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        close(&mut r, 999);
        assert!(!r.due(at(0)), "under the threshold, no flood yet");
        close(&mut r, 201);
        assert!(r.due(at(250)), "a flood");
        close(&mut r, 800);
        assert!(!r.due(at(500)), "still closing");
        assert!(
            !r.due(at(750)),
            "closes stopped, but too soon after the last trim"
        );
        assert!(r.due(at(1250)), "the tail, once closes stopped");
        close(&mut r, 10);
        assert!(!r.due(at(2500)));
        assert!(!r.due(at(2750)), "a trickle after a tail is no flood");
    }

    #[test]
    fn a_large_store_backlog_is_trimmed_once_written() {
        let mut r = Reclaimer::new();
        let t0 = Instant::now();
        r.store_backlog(16 << 20);
        assert!(!r.due(t0), "still waiting to be written");
        r.store_backlog(0);
        assert!(r.due(t0 + Duration::from_millis(250)));
        assert!(!r.due(t0 + Duration::from_secs(5)), "once");
        r.store_backlog(1 << 20);
        r.store_backlog(0);
        assert!(
            !r.due(t0 + Duration::from_secs(9)),
            "a small backlog is not worth it"
        );
    }
}
