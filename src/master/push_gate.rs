//! Who may push, for both push doors (UDP and the HTTP API): the source address must be in
//! `udpsocket_group`, the request must prove that address's secret (a plain `sk`, or a signature
//! that is checked and remembered against replays), and each address has a request rate.

use crate::config::{canonical_ip as canonical, Config};
use crate::ids::unix_now;
use crate::master::http::{self, Request};
use crate::master::ip_limit::IpLimiter;
use crate::master::security::security;
use crate::protocol::push::{parse_push, PushError, PushRequest};
use crate::protocol::signature::{self, Verifier};
use crate::secret::same_secret;
use std::net::IpAddr;
use std::time::Instant;

pub struct PushGate {
    /// Allowed addresses (IPv4-mapped IPv6 folded to IPv4) and their secrets, parsed once.
    peers: Vec<(IpAddr, String)>,
    require_signature: bool,
    verifier: Verifier,
    per_address: IpLimiter,
    pub refused_rate: u64,
}

impl PushGate {
    pub fn new(config: &Config) -> PushGate {
        PushGate {
            peers: config
                .udpsocket_group
                .iter()
                .filter_map(|p| Some((canonical(p.ip.parse().ok()?), p.secret_key.clone())))
                .collect(),
            require_signature: config.push.require_signature,
            verifier: Verifier::new(config.push.max_clock_skew),
            per_address: IpLimiter::new(config.push.rate_per_ip, config.push.burst_per_ip),
            refused_rate: 0,
        }
    }

    /// The secret of `ip`, if that address may push at all.
    pub fn secret(&self, ip: IpAddr) -> Option<&str> {
        let ip = canonical(ip);
        self.peers
            .iter()
            .find(|(a, _)| *a == ip)
            .map(|(_, s)| s.as_str())
    }

    /// Whether `key` is the secret of any address that may push (the dashboard's key from an
    /// address that may only scrape). Every entry is compared, whatever matches first.
    pub fn is_any_secret(&self, key: &str) -> bool {
        self.peers
            .iter()
            .fold(false, |found, (_, s)| same_secret(s, key) | found)
    }

    /// Within the address's request rate? A refusal is counted.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ok = self.per_address.allow(ip, now);
        if !ok {
            self.refused_rate += 1;
            security!("{ip}: push refused: over its request rate (429)");
        }
        ok
    }

    pub fn prune(&mut self, now: Instant) {
        self.per_address.prune(now);
    }

    /// A datagram from `ip`, authenticated and parsed: signed (`sig:v1:` line) or with its
    /// `sk` inside.
    pub fn open_datagram<'a>(
        &mut self,
        datagram: &'a [u8],
        ip: IpAddr,
    ) -> Result<PushRequest<'a>, PushError> {
        let opened = self.open_datagram_quietly(datagram, ip);
        if let Err(e) = &opened {
            if e.code == 401 {
                security!("{ip}: UDP push refused: {}", e.msg);
            }
        }
        opened
    }

    fn open_datagram_quietly<'a>(
        &mut self,
        datagram: &'a [u8],
        ip: IpAddr,
    ) -> Result<PushRequest<'a>, PushError> {
        let refused = |msg: &'static str| PushError {
            code: 401,
            msg: msg.into(),
        };
        // Borrowed from `peers` while `verifier` is used: two fields, no copy of the secret.
        let ip = canonical(ip);
        let secret = self
            .peers
            .iter()
            .find(|(a, _)| *a == ip)
            .map(|(_, s)| s.as_str());
        let (body, presented) = match signature::split_datagram(datagram) {
            Some(Ok(signed)) => {
                let secret = secret.ok_or_else(|| refused("address not allowed"))?;
                self.verifier
                    .verify(
                        secret,
                        signed.timestamp,
                        &signed.signature,
                        signed.body,
                        unix_now(),
                    )
                    .map_err(|e| refused(e.message()))?;
                (signed.body, Some(secret))
            }
            Some(Err(e)) => return Err(refused(e.message())),
            None if self.require_signature && secret.is_some() => {
                return Err(refused("signature required"))
            }
            None => (datagram, None),
        };
        parse_push(body, secret, presented)
    }

    /// The secret an HTTP request proves it knows: by a valid signature (then it never
    /// travelled), or as a plain `sk` (header, query, body). Err(why) for a bad or replayed
    /// signature, or a plain `sk` when signatures are required.
    pub fn presented(&mut self, req: &Request, ip: IpAddr) -> Result<Option<String>, &'static str> {
        let presented = self.presented_quietly(req, ip);
        if let Err(why) = presented {
            security!("{ip}: HTTP {} {} refused: {why}", req.method, req.path);
        }
        presented
    }

    fn presented_quietly(
        &mut self,
        req: &Request,
        ip: IpAddr,
    ) -> Result<Option<String>, &'static str> {
        let signed = (
            req.header("x-wspush-timestamp"),
            req.header("x-wspush-signature"),
        );
        if let (Some(ts), Some(sig)) = signed {
            let Some(secret) = self.secret(ip).map(str::to_owned) else {
                return Err("address not allowed");
            };
            let (ts, sig) = signature::http_signature(ts, sig).map_err(|e| e.message())?;
            let target = if req.query.is_empty() {
                req.path.clone()
            } else {
                format!("{}?{}", req.path, req.query)
            };
            let content = signature::http_signed_content(&req.method, &target, &req.body);
            self.verifier
                .verify(&secret, ts, &sig, &content, unix_now())
                .map_err(|e| e.message())?;
            return Ok(Some(secret));
        }
        if self.require_signature {
            return Err("signature required");
        }
        Ok(http::presented_secret(req).map(|s| s.into_owned()))
    }

    /// Whether `req` from `ip` is authorized; Err(why) when not.
    pub fn authorize(&mut self, req: &Request, ip: IpAddr) -> Result<(), &'static str> {
        let presented = self.presented(req, ip)?;
        let verdict = match (self.secret(ip), presented) {
            (None, _) => Err("address not allowed"),
            (Some(s), Some(p)) if same_secret(s, &p) => Ok(()),
            _ => Err("wrong sk"),
        };
        if let Err(why) = verdict {
            security!("{ip}: HTTP {} {} refused: {why}", req.method, req.path);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_is_the_same_address() {
        let g = PushGate::new(&Config::default());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(g.secret(mapped), Some("123456"));
        assert_eq!(g.secret("10.0.0.1".parse().expect("ip")), None);
    }
}
