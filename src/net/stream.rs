//! A client connection's byte stream as the doors see it: a TCP socket, optionally behind a
//! PROXY protocol header, optionally TLS. Every layer stays non-blocking and resumable: a read
//! or write that cannot go on returns `WouldBlock`, and what TLS still has to send waits in
//! the connection (`tls_conn`) until the socket is writable again.

use super::proxy_header::{self, Parsed};
use super::tls::TlsAcceptor;
use super::tls_conn::Tls;
use mio::net::TcpStream;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

/// What the doors need of a stream beyond `Read + Write`. The defaults fit a plain socket (and
/// the tests' scripted streams).
pub trait Transport: Read + Write {
    /// Bytes accepted by `write` that have not reached the socket yet (TLS records).
    fn has_pending_output(&self) -> bool {
        false
    }

    /// The connection is about to be dropped: say goodbye at this layer (TLS close_notify).
    fn finish(&mut self) {}

    /// The client's address from a PROXY protocol header, once, when it has been read.
    fn take_proxied_peer(&mut self) -> Option<SocketAddr> {
        None
    }
}

impl Transport for TcpStream {}

/// Read size while looking for the PROXY header.
const HEADER_CHUNK: usize = 256;

pub struct Conn {
    tcp: TcpStream,
    /// Before anything else: the PROXY header being read, then what came after it.
    prelude: Option<Box<Prelude>>,
    tls: Option<Box<Tls>>,
}

pub(super) struct Prelude {
    pub(super) buf: Vec<u8>,
    /// The header is read; `buf` holds what followed it, handed on before the socket's bytes.
    parsed: bool,
    client: Option<SocketAddr>,
}

impl Conn {
    pub fn plain(tcp: TcpStream) -> Conn {
        Conn {
            tcp,
            prelude: None,
            tls: None,
        }
    }

    /// `proxy_header`: the peer is a trusted proxy that starts with a PROXY header. `tls`: the
    /// port speaks TLS.
    pub fn new(
        tcp: TcpStream,
        peer: SocketAddr,
        proxy_header: bool,
        tls: Option<&TlsAcceptor>,
    ) -> io::Result<Conn> {
        let tls = match tls {
            None => None,
            Some(acceptor) => Some(Box::new(Tls::new(acceptor, peer)?)),
        };
        Ok(Conn {
            tcp,
            prelude: proxy_header.then(|| {
                Box::new(Prelude {
                    buf: Vec::new(),
                    parsed: false,
                    client: None,
                })
            }),
            tls,
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Reads the PROXY header. Ok once it is read; WouldBlock while it is incomplete.
    fn read_prelude(&mut self) -> io::Result<()> {
        let Some(p) = self.prelude.as_mut() else {
            return Ok(());
        };
        while !p.parsed {
            let mut chunk = [0u8; HEADER_CHUNK];
            let n = match self.tcp.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            p.buf.extend_from_slice(&chunk[..n]);
            match proxy_header::parse(&p.buf) {
                Parsed::Partial => {}
                Parsed::Invalid => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "expected a PROXY protocol header",
                    ))
                }
                Parsed::Done { len, client } => {
                    p.buf.drain(..len);
                    p.parsed = true;
                    p.client = client;
                    if let (Some(tls), Some(client)) = (self.tls.as_mut(), client) {
                        tls.peer = client;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The bytes under TLS: what followed the PROXY header first, then the socket.
pub(super) struct Wire<'a> {
    pub(super) prelude: &'a mut Option<Box<Prelude>>,
    pub(super) tcp: &'a mut TcpStream,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(p) = self.prelude.as_mut() {
            if !p.buf.is_empty() {
                let n = p.buf.len().min(buf.len());
                buf[..n].copy_from_slice(&p.buf[..n]);
                p.buf.drain(..n);
                return Ok(n);
            }
        }
        self.tcp.read(buf)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_prelude()?;
        let mut wire = Wire {
            prelude: &mut self.prelude,
            tcp: &mut self.tcp,
        };
        match self.tls.as_mut() {
            Some(tls) => tls.read(&mut wire, buf),
            None => wire.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.tls.as_mut() {
            Some(tls) => tls.write_vectored(&mut self.tcp, bufs),
            None => self.tcp.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => tls.flush(&mut self.tcp),
            None => Ok(()),
        }
    }
}

impl Transport for Conn {
    fn has_pending_output(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.has_pending_output())
    }

    fn finish(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.finish(&mut self.tcp);
        }
    }

    fn take_proxied_peer(&mut self) -> Option<SocketAddr> {
        let p = self.prelude.as_mut()?;
        let client = p.client.take();
        if p.parsed && p.buf.is_empty() {
            // Nothing left to hand on: the header's memory goes.
            self.prelude = None;
        }
        client
    }
}
