//! New connections per source address: a token bucket each, so that a flood of connections from
//! one address is refused early (HTTP 429) while other addresses are served as usual.

use super::rate::{Rate, RateBucket};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

pub struct IpLimiter {
    rate: Rate,
    buckets: HashMap<IpAddr, RateBucket>,
}

impl IpLimiter {
    pub fn new(per_second: u32, burst: u32) -> IpLimiter {
        IpLimiter {
            rate: Rate {
                per_second: f64::from(per_second),
                burst: f64::from(burst),
            },
            buckets: HashMap::new(),
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.rate;
        self.buckets
            .entry(ip)
            .or_insert_with(|| RateBucket::new(rate, now))
            .allow(now, rate)
    }

    /// Forgets addresses whose bucket has refilled: the map holds only recent senders.
    pub fn prune(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets.retain(|_, b| !b.is_full(now, rate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_address_is_limited_others_are_not() {
        let now = Instant::now();
        let mut l = IpLimiter::new(1, 3);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!((0..3).all(|_| l.allow(a, now)));
        assert!(!l.allow(a, now), "past the burst");
        assert!(l.allow(b, now), "another address is served");
        assert!(
            l.allow(a, now + Duration::from_secs(1)),
            "refilled by the rate"
        );
        l.prune(now + Duration::from_secs(10));
        assert!(l.buckets.is_empty(), "full buckets are forgotten");
    }
}
