//! Delivery latency over one interval of the dashboard's history (`admin`), with
//! percentiles: the Prometheus histogram only ever grows and its buckets are not readable, so
//! the interval keeps its own. Log-linear buckets (four per power of two of microseconds)
//! put a percentile within 25 % of the truth; a whole loop turn is one `record`.

use std::time::Duration;

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 2;
const SUB: u64 = 1 << SUB_BITS;
/// Up to 2^40 µs (12 days): anything longer lands in the last bucket.
const BUCKETS: usize = (40 * SUB) as usize;

#[derive(Debug, Clone)]
pub struct LatencyWindow {
    buckets: [u64; BUCKETS],
    count: u64,
    max_us: u64,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            buckets: [0; BUCKETS],
            count: 0,
            max_us: 0,
        }
    }
}

/// Percentiles of one interval, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The bucket of `us`: below `SUB` one bucket per microsecond, then `SUB` per power of two.
fn bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros());
    let sub = (us >> (exp - u64::from(SUB_BITS))) & (SUB - 1);
    (((exp - u64::from(SUB_BITS) + 1) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The largest value bucket `i` holds (its upper bound, inclusive).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let (octave, sub) = (i / SUB - 1, i % SUB);
    ((SUB + sub + 1) << octave) - 1
}

impl LatencyWindow {
    /// `n` messages took `took` each (those of one loop turn).
    pub fn record(&mut self, took: Duration, n: u64) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)] += n;
        self.count += n;
        self.max_us = self.max_us.max(us);
    }

    #[cfg(test)]
    fn count(&self) -> u64 {
        self.count
    }

    /// None when nothing was recorded. A percentile is its bucket's upper bound, at most the
    /// largest value seen.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.count == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((q * self.count as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, n) in self.buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return upper(i).min(self.max_us);
                }
            }
            self.max_us
        };
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            p50: ms(at(0.50)),
            p90: ms(at(0.90)),
            p99: ms(at(0.99)),
            max: ms(self.max_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_within_a_quarter() {
        let mut last = 0;
        for us in (0..5000).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 2]) {
            let b = bucket(us);
            assert!(b >= last, "{us}: bucket {b} after {last}");
            last = b;
            if b < BUCKETS - 1 {
                assert!(
                    upper(b) >= us,
                    "{us} within bucket {b} (upper {})",
                    upper(b)
                );
                assert!(
                    upper(b) as f64 <= us as f64 * 1.25 + 1.0,
                    "{us}: {}",
                    upper(b)
                );
            }
        }
        // Each bucket's upper bound is the last value that maps to it.
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket(upper(i)), i);
            assert_eq!(bucket(upper(i) + 1), i + 1);
        }
    }

    #[test]
    fn percentiles_of_one_interval() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.percentiles(), None);
        // 90 fast messages (one turn of 200 µs), 9 at 2 ms, one at 50 ms.
        w.record(Duration::from_micros(200), 90);
        w.record(Duration::from_millis(2), 9);
        w.record(Duration::from_millis(50), 1);
        let p = w.percentiles().expect("recorded");
        assert!((0.2..=0.25).contains(&p.p50), "{p:?}");
        assert!((0.2..=0.25).contains(&p.p90), "{p:?}");
        assert!((2.0..=2.5).contains(&p.p99), "{p:?}");
        assert_eq!(p.max, 50.0);
        assert_eq!(w.count(), 100);
    }
}
