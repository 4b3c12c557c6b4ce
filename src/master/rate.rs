//! A token bucket: `rate` events a second, `burst` at once. Used per connection (frames and
//! bytes a client sends) and per source address (new connections, pushes).

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug)]
pub struct RateBucket {
    tokens: f32,
    last: Instant,
    /// Refusals in a row.
    pub strikes: u32,
}

impl RateBucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        RateBucket {
            tokens: rate.burst as f32,
            last: now,
            strikes: 0,
        }
    }

    /// True once the bucket has refilled to `burst`: it no longer remembers anything.
    pub fn is_full(&self, now: Instant, rate: Rate) -> bool {
        f64::from(self.tokens) + now.duration_since(self.last).as_secs_f64() * rate.per_second
            >= rate.burst
    }

    pub fn allow(&mut self, now: Instant, rate: Rate) -> bool {
        self.allow_n(now, rate, 1.0)
    }

    /// Takes `n` tokens (bytes, for a byte rate) if the bucket holds them.
    pub fn allow_n(&mut self, now: Instant, rate: Rate, n: f64) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (f64::from(self.tokens) + elapsed * rate.per_second).min(rate.burst) as f32;
        if f64::from(self.tokens) >= n {
            self.tokens -= n as f32;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let rate = Rate {
            per_second: 10.0,
            burst: 2.0,
        };
        let t = Instant::now();
        let mut b = RateBucket::new(rate, t);
        assert!(b.allow(t, rate) && b.allow(t, rate));
        assert!(!b.allow(t, rate));
        assert_eq!(b.strikes, 1);
        assert!(b.allow(t + Duration::from_millis(100), rate));
        assert_eq!(b.strikes, 0);
        assert!(b.is_full(t + Duration::from_secs(1), rate));
        assert!(
            !b.allow_n(t + Duration::from_secs(1), rate, 3.0),
            "more than the burst"
        );
    }
}
