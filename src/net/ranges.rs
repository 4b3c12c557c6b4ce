//! Lists of addresses and CIDR ranges from the configuration (`trusted_proxies`,
//! `metrics_allow`): parsed once, matched per connection.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// A set of address ranges; a plain address is a range of one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRanges(Vec<IpNet>);

/// An entry that is neither an address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRange {
    pub index: usize,
    pub entry: String,
}

impl fmt::Display for BadRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is neither an IP address nor a CIDR range (like 10.0.0.0/8)",
            self.entry
        )
    }
}

impl IpRanges {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<IpRanges, BadRange> {
        entries
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let e = e.as_ref().trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadRange {
                        index,
                        entry: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(IpRanges)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// IPv4-mapped IPv6 addresses (dual-stack sockets) match their IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = crate::config::canonical_ip(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ranges_match() {
        let r = IpRanges::parse(&["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8"]).unwrap();
        for yes in [
            "10.1.2.3",
            "192.168.1.7",
            "::1",
            "fd12::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(r.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "::2", "127.0.0.1"] {
            assert!(!r.contains(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn a_bad_entry_is_named() {
        let e = IpRanges::parse(&["10.0.0.0/8", "10.0.0.0/33"]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.to_string().contains("10.0.0.0/33"));
        assert!(IpRanges::parse(&["example.com"]).is_err());
    }
}
