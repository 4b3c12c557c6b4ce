//! What one agent counts of the messages its clients receive: each (sender, receiver) pair
//! numbers its messages 0, 1, 2, ...; a bit per number tells duplicates, and the highest number
//! seen so far tells reordering. Latency goes into an hdrhistogram.

use crate::control::{new_hist, Counts};
use hdrhistogram::Histogram;

/// A sequence number past this is not one the bench sent (it would need a huge bitmap).
const MAX_SEQ: u64 = 1 << 26;

/// The messages one receiver got from one sender.
pub struct Stream {
    sender: u64,
    /// Bit `seq` set once that number has arrived.
    seen: Vec<u64>,
    highest: Option<u64>,
}

/// Counts and latencies of one agent.
pub struct Tally {
    pub counts: Counts,
    pub hist: Histogram<u64>,
    /// Lowest and highest latency since `take_window`.
    window_min: u64,
    window_max: u64,
    /// When the latest new message arrived.
    pub last_at_ns: u64,
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            counts: Counts::default(),
            hist: new_hist(),
            window_min: u64::MAX,
            window_max: 0,
            last_at_ns: 0,
        }
    }

    /// A message `seq` from `sender`, stamped `sent_ns`, arrived at `now_ns` at the receiver
    /// whose streams are `streams`.
    pub fn delivery(
        &mut self,
        streams: &mut Vec<Stream>,
        sender: u64,
        seq: u64,
        sent_ns: u64,
        now_ns: u64,
    ) {
        if seq >= MAX_SEQ {
            self.counts.bad += 1;
            return;
        }
        // A receiver hears from one or a few senders: a linear search beats hashing.
        let stream = match streams.iter().position(|s| s.sender == sender) {
            Some(i) => &mut streams[i],
            None => {
                streams.push(Stream {
                    sender,
                    seen: Vec::new(),
                    highest: None,
                });
                streams.last_mut().expect("just pushed")
            }
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if stream.seen.len() <= word {
            stream.seen.resize(word + 1, 0);
        }
        if stream.seen[word] & bit != 0 {
            self.counts.duplicates += 1;
            return;
        }
        stream.seen[word] |= bit;
        if stream.highest.is_some_and(|h| seq < h) {
            self.counts.reordered += 1;
        } else {
            stream.highest = Some(seq);
        }
        self.counts.unique += 1;
        self.last_at_ns = now_ns;
        let latency = now_ns.saturating_sub(sent_ns).max(1);
        self.hist.saturating_record(latency);
        self.window_min = self.window_min.min(latency);
        self.window_max = self.window_max.max(latency);
    }

    /// Lowest and highest latency since the last call (0, 0 if nothing arrived), and restarts.
    pub fn take_window(&mut self) -> (u64, u64) {
        let w = if self.window_max == 0 {
            (0, 0)
        } else {
            (self.window_min, self.window_max)
        };
        self.window_min = u64::MAX;
        self.window_max = 0;
        w
    }
}
