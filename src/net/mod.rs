//! Network plumbing shared by the doors: address ranges, the client's real address behind a
//! proxy, the PROXY protocol, and TLS.

pub mod ranges;

pub use ranges::IpRanges;
