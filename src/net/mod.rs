//! Network plumbing shared by the doors: address ranges, the client's real address behind a
//! proxy (HTTP headers or the PROXY protocol), TLS, and the stream that layers them.

pub mod forwarded;
pub mod proxy_header;
pub mod ranges;
pub mod stream;
pub mod tls;
mod tls_conn;

pub use ranges::IpRanges;
