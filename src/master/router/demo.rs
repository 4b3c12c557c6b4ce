//! The demo page's tokens: minted by `/demo/login`, kept only here, in the master's memory,
//! and accepted only for a WebSocket login of the uid and source they were made for. They are
//! never written to a token store, so the demo cannot replace a real user's token; a real
//! token is never in this table. Bounded in number (the oldest goes first) and in time.
//! Per node: in a cluster, a demo token works only on the node that made it.

use crate::model::{Credentials, Source, Uid};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Every demo token starts so, followed by `SECRET_BYTES` random bytes in hex.
pub const PREFIX: &str = "wspush-demo:";
/// 128 bits from the system's CSPRNG: a guessable demo token would be a login as anyone.
const SECRET_BYTES: usize = 16;
/// Demo tokens held at most; past it the oldest is forgotten.
pub const CAPACITY: usize = 10_000;
/// How long a demo token may be used to log in (an open connection stays).
pub const TTL: Duration = Duration::from_secs(3600);

type Secret = [u8; SECRET_BYTES];

/// The system could not give random bytes: no token is made.
#[derive(Debug)]
pub struct NoRandomness(getrandom::Error);

impl fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no random bytes for a demo token: {}", self.0)
    }
}

impl std::error::Error for NoRandomness {}

struct Entry {
    uid: Uid,
    source: Source,
    expires: Instant,
}

pub struct DemoTokens {
    entries: HashMap<Secret, Entry>,
    /// Oldest first; with one TTL for all, also the first to expire.
    order: VecDeque<Secret>,
    capacity: usize,
    ttl: Duration,
}

impl Default for DemoTokens {
    fn default() -> Self {
        DemoTokens::new(CAPACITY, TTL)
    }
}

impl DemoTokens {
    pub fn new(capacity: usize, ttl: Duration) -> DemoTokens {
        DemoTokens {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// A new token for (uid, source), usable until `now + ttl`.
    pub fn mint(&mut self, uid: Uid, source: Source, now: Instant) -> Result<String, NoRandomness> {
        let mut secret = Secret::default();
        getrandom::fill(&mut secret).map_err(NoRandomness)?;
        self.forget_expired(now);
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => self.entries.remove(&oldest),
                None => break,
            };
        }
        let expires = now + self.ttl;
        self.entries.insert(
            secret,
            Entry {
                uid,
                source,
                expires,
            },
        );
        self.order.push_back(secret);
        Ok(format!("{PREFIX}{}", hex::encode(secret)))
    }

    /// True when `login` carries a live demo token made for its uid and source. Anything else
    /// (a real token, an unknown or expired demo token, another uid's) is not judged here.
    pub fn accepts(&mut self, login: &Credentials, now: Instant) -> bool {
        let Some(secret) = secret_of(&login.token) else {
            return false;
        };
        self.forget_expired(now);
        self.entries
            .get(&secret)
            .is_some_and(|e| e.uid == login.uid && e.source == login.source && now < e.expires)
    }

    /// Gives back the room of a table that held far more than it does now.
    pub fn shrink(&mut self) {
        crate::master::memory::shrink_map(&mut self.entries);
        if self.order.capacity() > 1024 && self.order.capacity() > 4 * self.order.len() {
            self.order.shrink_to_fit();
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            if self.entries.get(oldest).is_some_and(|e| now < e.expires) {
                return;
            }
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// The random part of a token of the demo's form.
fn secret_of(token: &str) -> Option<Secret> {
    let hex = token.strip_prefix(PREFIX)?;
    let mut secret = Secret::default();
    hex::decode_to_slice(hex, &mut secret).ok()?;
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(token: &str, uid: u64, source: &str) -> Credentials {
        Credentials {
            uid: Uid(uid),
            token: token.to_owned(),
            source: Source::new(source).expect("source"),
        }
    }

    fn pc() -> Source {
        Source::new("pc").expect("source")
    }

    #[test]
    fn a_demo_token_logs_in_only_its_uid_and_source() {
        let (mut t, now) = (DemoTokens::default(), Instant::now());
        let token = t.mint(Uid(5), pc(), now).expect("random bytes");
        assert!(
            token.starts_with(PREFIX) && token.len() == PREFIX.len() + 32,
            "{token}"
        );
        assert!(t.accepts(&login(&token, 5, "pc"), now));
        assert!(!t.accepts(&login(&token, 6, "pc"), now), "another uid");
        assert!(!t.accepts(&login(&token, 5, "app"), now), "another source");
        let other = t.mint(Uid(5), pc(), now).expect("random bytes");
        assert_ne!(token, other, "random, never a counter");
        assert!(t.accepts(&login(&token, 5, "pc"), now), "both live");
    }

    #[test]
    fn a_real_token_is_never_a_demo_one() {
        let (mut t, now) = (DemoTokens::default(), Instant::now());
        let token = t.mint(Uid(5), pc(), now).expect("random bytes");
        let forged = format!("{PREFIX}{}", "0".repeat(32));
        for real in [
            "fe24NDU2341N",
            PREFIX,
            forged.as_str(),
            &token[1..],
            &token.to_uppercase(),
        ] {
            assert!(!t.accepts(&login(real, 5, "pc"), now), "{real}");
        }
        let longer = format!("{token}0");
        assert!(!t.accepts(&login(&longer, 5, "pc"), now));
    }

    #[test]
    fn a_demo_token_stops_working_after_its_ttl() {
        let ttl = Duration::from_secs(60);
        let (mut t, now) = (DemoTokens::new(10, ttl), Instant::now());
        let token = t.mint(Uid(5), pc(), now).expect("random bytes");
        let later = now + Duration::from_secs(30);
        let young = t.mint(Uid(6), pc(), later).expect("random bytes");
        assert!(t.accepts(
            &login(&token, 5, "pc"),
            now + ttl - Duration::from_millis(1)
        ));
        assert!(!t.accepts(&login(&token, 5, "pc"), now + ttl), "expired");
        assert_eq!(t.len(), 1, "forgotten once expired");
        assert!(t.accepts(&login(&young, 6, "pc"), now + ttl));
        assert!(!t.accepts(&login(&young, 6, "pc"), later + ttl));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn past_its_capacity_the_oldest_token_goes_first() {
        let (mut t, now) = (DemoTokens::new(3, TTL), Instant::now());
        let tokens: Vec<String> = (1..=4)
            .map(|uid| t.mint(Uid(uid), pc(), now).expect("random bytes"))
            .collect();
        assert_eq!(t.len(), 3);
        assert!(
            !t.accepts(&login(&tokens[0], 1, "pc"), now),
            "the oldest went"
        );
        for (uid, token) in (2..=4).zip(&tokens[1..]) {
            assert!(t.accepts(&login(token, uid, "pc"), now), "{uid}");
        }
    }
}
