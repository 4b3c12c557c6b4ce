//! Giving memory back after a flood of connections has gone: the maps shrink to their
//! contents, and glibc's allocator returns its freed pages to the system (`malloc_trim`),
//! which it otherwise keeps for later. Done only after many connections closed, at most once
//! a second: a trim walks the heap (milliseconds for tens of megabytes).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Connections that must have gone since the last trim before another is worth it.
const CLOSES_BEFORE_TRIM: u64 = 1000;
const TRIM_AT_MOST_EVERY: Duration = Duration::from_secs(1);

pub struct Reclaimer {
    closes_since_trim: u64,
    last_trim: Option<Instant>,
}

impl Reclaimer {
    pub fn new() -> Reclaimer {
        Reclaimer {
            closes_since_trim: 0,
            last_trim: None,
        }
    }

    pub fn connection_closed(&mut self) {
        self.closes_since_trim += 1;
    }

    /// True when enough has been freed since the last trim, and not too recently.
    pub fn due(&mut self, now: Instant) -> bool {
        let due = self.closes_since_trim >= CLOSES_BEFORE_TRIM
            && self
                .last_trim
                .is_none_or(|t| now.duration_since(t) >= TRIM_AT_MOST_EVERY);
        if due {
            self.closes_since_trim = 0;
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

/// Returns the allocator's free pages to the system.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap bookkeeping; it takes no pointers from us
    // and is safe to call at any time from the one thread that runs the loop.
    unsafe {
        libc::malloc_trim(0);
    }
}
