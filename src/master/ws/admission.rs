//! Who may open a connection on the WebSocket port, judged by the client's real address: a
//! direct client at accept; one that comes through a trusted proxy once the PROXY header or
//! the forwarding headers have named it. Each address has its own rate of new connections.

use crate::master::http::Request;
use crate::master::ip_limit::IpLimiter;
use crate::net::{forwarded, IpRanges};
use std::net::IpAddr;
use std::time::Instant;

pub struct Admission {
    per_address: IpLimiter,
    trusted: IpRanges,
    proxy_protocol: bool,
}

/// A new connection, as its peer's address alone decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    Direct,
    /// From a trusted proxy: the client is judged when it is known. `header`: a PROXY
    /// protocol header comes first.
    ViaProxy {
        header: bool,
    },
    /// Over its address's rate.
    Refused,
}

impl Admission {
    pub fn new(per_address: IpLimiter, trusted: IpRanges, proxy_protocol: bool) -> Admission {
        Admission {
            per_address,
            trusted,
            proxy_protocol,
        }
    }

    pub fn arrive(&mut self, peer: IpAddr, now: Instant) -> Arrival {
        if self.trusted.contains(peer) {
            Arrival::ViaProxy {
                header: self.proxy_protocol,
            }
        } else if self.per_address.allow(peer, now) {
            Arrival::Direct
        } else {
            Arrival::Refused
        }
    }

    /// The client a trusted proxy at `peer` names in the request's headers.
    pub fn client_behind(&self, peer: IpAddr, req: &Request) -> Option<IpAddr> {
        forwarded::client_behind(
            peer,
            req.header("x-forwarded-for"),
            req.header("x-real-ip"),
            &self.trusted,
        )
    }

    /// A client that came through a proxy, now that its address is known.
    pub fn admit(&mut self, client: IpAddr, now: Instant) -> bool {
        self.per_address.allow(client, now)
    }

    /// Forgets addresses that stopped connecting.
    pub fn prune(&mut self, now: Instant) {
        self.per_address.prune(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_judged_by_their_clients() {
        let trusted = IpRanges::parse(&["10.0.0.0/8"]).unwrap();
        let mut a = Admission::new(IpLimiter::new(1, 1), trusted, true);
        let now = Instant::now();
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let direct: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(a.arrive(proxy, now), Arrival::ViaProxy { header: true });
        }
        assert_eq!(a.arrive(direct, now), Arrival::Direct);
        assert_eq!(a.arrive(direct, now), Arrival::Refused);
        let client: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(a.admit(client, now));
        assert!(!a.admit(client, now));
        assert!(a.admit("203.0.113.2".parse().unwrap(), now));
    }
}
