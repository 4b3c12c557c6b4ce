//! The PROXY protocol header (v1 text, v2 binary) a TCP load balancer puts before the client's
//! first byte: parsed by the `ppp` crate, read here without over-reading into what follows.

use ppp::{v1, v2, HeaderResult, PartialResult};
use std::net::SocketAddr;

/// Longest header accepted: v1 is at most 107 bytes; v2's TLVs are bounded by us, not by the
/// 64 KiB its length field allows.
pub const MAX_HEADER: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A complete header of `len` bytes; `client` is None for a proxy's own connection
    /// (v2 LOCAL, a health check) or an address family without one (v1 UNKNOWN, Unix).
    Done {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// Not a PROXY header, or one too long.
    Invalid,
}

pub fn parse(buf: &[u8]) -> Parsed {
    let parsed = HeaderResult::parse(buf);
    if parsed.is_incomplete() {
        // `ppp` calls a v1 line with missing fields incomplete even once its CRLF is here.
        let v1_line_ended = buf.starts_with(b"PROXY") && buf.windows(2).any(|w| w == b"\r\n");
        return if buf.len() >= MAX_HEADER || v1_line_ended {
            Parsed::Invalid
        } else {
            Parsed::Partial
        };
    }
    match parsed {
        HeaderResult::V1(Ok(h)) => Parsed::Done {
            len: h.header.len(),
            client: match h.addresses {
                v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) if h.len() <= MAX_HEADER => Parsed::Done {
            len: h.len(),
            client: match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                _ => None,
            },
        },
        _ => Parsed::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(client: &str) -> Vec<u8> {
        let src: SocketAddr = client.parse().unwrap();
        let dst: SocketAddr = if src.is_ipv4() {
            "10.0.0.1:9501".parse().unwrap()
        } else {
            "[fd00::1]:9501".parse().unwrap()
        };
        v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn v1_gives_the_client_and_its_length() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 9501\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parsed::Done {
                len: 44,
                client: Some("203.0.113.7:51234".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Done {
                len: 15,
                client: None
            }
        );
    }

    #[test]
    fn v2_gives_the_client_and_its_length() {
        for client in ["198.51.100.9:4000", "[2001:db8::5]:4001"] {
            let mut h = v2(client);
            let len = h.len();
            h.extend_from_slice(b"\x16\x03\x01");
            assert_eq!(
                parse(&h),
                Parsed::Done {
                    len,
                    client: Some(client.parse().unwrap())
                }
            );
        }
    }

    #[test]
    fn pieces_wait_and_garbage_is_refused() {
        let h = v2("198.51.100.9:4000");
        for cut in [1, 5, 12, 15, h.len() - 1] {
            assert_eq!(parse(&h[..cut]), Parsed::Partial, "cut at {cut}");
        }
        assert_eq!(parse(b"PROXY TCP4 1.2"), Parsed::Partial);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Parsed::Invalid);
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), Parsed::Invalid);
        assert_eq!(parse(&[b'P'; MAX_HEADER]), Parsed::Invalid);
    }
}
