//! Signed pushes: an HMAC-SHA256, keyed with the sender's secret, over a timestamp and the
//! request, so that the secret never travels. A signature is good for `max_clock_skew` seconds
//! either side of now, and only once: a replay within that window is refused.
//!
//! UDP: the datagram is `sig:v1:<unix seconds>:<hex hmac>\n<body>`, signed over `<ts>.<body>`.
//! HTTP: headers `X-Wspush-Timestamp: <ts>` and `X-Wspush-Signature: <hex hmac>` (or
//! `v1=<hex>`), signed over `<ts>.<METHOD> <target>\n<body>` (target: path and query as sent).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};

type HmacSha256 = Hmac<Sha256>;

const UDP_PREFIX: &[u8] = b"sig:v1:";
/// Signatures remembered at most; past it, new signed requests are refused until old ones
/// age out (memory stays bounded under a flood of valid, distinct requests).
const REPLAY_CACHE_LIMIT: usize = 200_000;

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Malformed,
    BadSignature,
    Stale,
    Replayed,
    Busy,
}

impl SignatureError {
    pub fn message(&self) -> &'static str {
        match self {
            SignatureError::Malformed => "malformed signature",
            SignatureError::BadSignature => "bad signature",
            SignatureError::Stale => "signature timestamp outside the allowed clock skew",
            SignatureError::Replayed => "signature already used",
            SignatureError::Busy => "too many signed requests; retry later",
        }
    }
}

/// A datagram's signature line and the body after it, if the datagram is signed.
pub struct SignedDatagram<'a> {
    pub timestamp: u64,
    pub signature: Vec<u8>,
    pub body: &'a [u8],
}

/// Splits `sig:v1:<ts>:<hex>\n<body>`. None: not a signed datagram. Err: signed, but malformed.
pub fn split_datagram(datagram: &[u8]) -> Option<Result<SignedDatagram<'_>, SignatureError>> {
    let rest = datagram.strip_prefix(UDP_PREFIX)?;
    let parse = || {
        let newline = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(SignatureError::Malformed)?;
        let line = std::str::from_utf8(&rest[..newline]).map_err(|_| SignatureError::Malformed)?;
        let (ts, hex_sig) = line.split_once(':').ok_or(SignatureError::Malformed)?;
        Ok(SignedDatagram {
            timestamp: ts.trim().parse().map_err(|_| SignatureError::Malformed)?,
            signature: hex::decode(hex_sig.trim()).map_err(|_| SignatureError::Malformed)?,
            body: &rest[newline + 1..],
        })
    };
    Some(parse())
}

/// The signature an HTTP request presents, decoded.
pub fn http_signature(timestamp: &str, signature: &str) -> Result<(u64, Vec<u8>), SignatureError> {
    let ts = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed)?;
    let hex_sig = signature.trim();
    let hex_sig = hex_sig.strip_prefix("v1=").unwrap_or(hex_sig);
    Ok((
        ts,
        hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?,
    ))
}

/// What an HTTP request's signature covers.
pub fn http_signed_content(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{method} {target}\n").into_bytes();
    content.extend_from_slice(body);
    content
}

/// Checks signatures and remembers the good ones for the length of the skew window.
pub struct Verifier {
    max_skew: u64,
    seen: HashSet<Vec<u8>>,
    order: VecDeque<(u64, Vec<u8>)>,
}

impl Verifier {
    pub fn new(max_skew: u64) -> Verifier {
        Verifier {
            max_skew,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Verifies `signature` over `<timestamp>.<content>` with `secret`, at time `now`.
    pub fn verify(
        &mut self,
        secret: &str,
        timestamp: u64,
        signature: &[u8],
        content: &[u8],
        now: u64,
    ) -> Result<(), SignatureError> {
        // Constant-time comparison.
        keyed_mac(secret, timestamp, content)
            .ok_or(SignatureError::BadSignature)?
            .verify_slice(signature)
            .map_err(|_| SignatureError::BadSignature)?;
        if timestamp.abs_diff(now) > self.max_skew {
            return Err(SignatureError::Stale);
        }
        self.forget_older_than(now.saturating_sub(2 * self.max_skew + 1));
        if self.seen.contains(signature) {
            return Err(SignatureError::Replayed);
        }
        if self.seen.len() >= REPLAY_CACHE_LIMIT {
            return Err(SignatureError::Busy);
        }
        self.seen.insert(signature.to_vec());
        self.order.push_back((now, signature.to_vec()));
        Ok(())
    }

    /// A signature can be replayed only within its skew window, so older ones can go.
    fn forget_older_than(&mut self, cutoff: u64) {
        while self.order.front().is_some_and(|(at, _)| *at < cutoff) {
            if let Some((_, sig)) = self.order.pop_front() {
                self.seen.remove(&sig);
            }
        }
    }
}

/// The MAC over `<timestamp>.<content>` keyed with `secret` (None only if the key is refused,
/// which HMAC never does).
fn keyed_mac(secret: &str, timestamp: u64, content: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(content);
    Some(mac)
}

/// The hex HMAC a sender computes: for tests, the benches and the README's example.
pub fn sign(secret: &str, timestamp: u64, content: &[u8]) -> Option<String> {
    keyed_mac(secret, timestamp, content).map(|mac| hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_signature_passes_once() {
        let mut v = Verifier::new(30);
        let sig = hex::decode(sign("k", 1000, b"body").expect("signed")).expect("hex");
        assert_eq!(v.verify("k", 1000, &sig, b"body", 1010), Ok(()));
        assert_eq!(
            v.verify("k", 1000, &sig, b"body", 1010),
            Err(SignatureError::Replayed)
        );
    }

    #[test]
    fn wrong_key_body_or_time_fail() {
        let mut v = Verifier::new(30);
        let sig = hex::decode(sign("k", 1000, b"body").expect("signed")).expect("hex");
        assert_eq!(
            v.verify("other", 1000, &sig, b"body", 1000),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            v.verify("k", 1000, &sig, b"bodY", 1000),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            v.verify("k", 1001, &sig, b"body", 1000),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            v.verify("k", 1000, &sig, b"body", 1031),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v.verify("k", 1000, &sig, b"body", 969),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn old_signatures_are_forgotten() {
        let mut v = Verifier::new(5);
        let sig = hex::decode(sign("k", 100, b"x").expect("signed")).expect("hex");
        assert_eq!(v.verify("k", 100, &sig, b"x", 100), Ok(()));
        let later = hex::decode(sign("k", 200, b"y").expect("signed")).expect("hex");
        assert_eq!(v.verify("k", 200, &later, b"y", 200), Ok(()));
        assert_eq!(v.seen.len(), 1, "the first left the window");
    }

    #[test]
    fn datagrams_split() {
        assert!(split_datagram(b"{\"means\":1}").is_none());
        let s = split_datagram(b"sig:v1:123:abcd\n{}")
            .expect("signed")
            .expect("well formed");
        assert_eq!(
            (s.timestamp, s.signature.as_slice(), s.body),
            (123, &[0xab, 0xcd][..], &b"{}"[..])
        );
        assert!(matches!(
            split_datagram(b"sig:v1:123:zz\n{}"),
            Some(Err(SignatureError::Malformed))
        ));
        assert!(matches!(
            split_datagram(b"sig:v1:123:abcd"),
            Some(Err(SignatureError::Malformed))
        ));
        assert_eq!(http_signature("5", "v1=abcd"), Ok((5, vec![0xab, 0xcd])));
    }
}
