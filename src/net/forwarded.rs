//! The client's address as a trusted proxy reports it in HTTP headers. Only a peer listed in
//! `trusted_proxies` is believed; from anyone else the headers change nothing.

use super::IpRanges;
use std::net::IpAddr;

/// The client behind `peer` by the request's `X-Forwarded-For` (the right-most address that
/// is not itself a trusted proxy: each proxy appends the address it saw, and only the part
/// our proxies wrote can be believed) or else `X-Real-IP`. None when `peer` is not trusted
/// or the headers name nobody usable.
pub fn client_behind(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    trusted: &IpRanges,
) -> Option<IpAddr> {
    if !trusted.contains(peer) {
        return None;
    }
    if let Some(list) = forwarded_for {
        let mut hops = list.rsplit(',').map(parse_hop);
        let mut last = None;
        for hop in hops.by_ref() {
            let ip = hop?;
            last = Some(ip);
            if !trusted.contains(ip) {
                return Some(ip);
            }
        }
        // Every hop is one of ours: the left-most is the nearest thing to a client we have.
        if last.is_some() {
            return last;
        }
    }
    real_ip.and_then(parse_hop)
}

/// One address of a forwarding list: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> IpRanges {
        IpRanges::parse(&["10.0.0.0/8"]).unwrap()
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = trusted();
        let proxy = ip("10.0.0.2");
        let got = |xff, real| client_behind(proxy, xff, real, &t);
        assert_eq!(got(Some("203.0.113.5"), None), Some(ip("203.0.113.5")));
        // A client may write anything on the left; only what our proxies added counts.
        assert_eq!(
            got(Some("6.6.6.6, 203.0.113.5, 10.0.0.9"), None),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            got(Some("[2001:db8::7]:443"), None),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(got(Some("10.1.1.1, 10.0.0.9"), None), Some(ip("10.1.1.1")));
        assert_eq!(got(None, Some("198.51.100.1")), Some(ip("198.51.100.1")));
        assert_eq!(got(Some("garbage"), Some("198.51.100.1")), None);
        assert_eq!(got(None, None), None);
    }

    #[test]
    fn an_untrusted_peer_changes_nothing() {
        assert_eq!(
            client_behind(
                ip("192.0.2.1"),
                Some("203.0.113.5"),
                Some("1.1.1.1"),
                &trusted()
            ),
            None
        );
    }
}
