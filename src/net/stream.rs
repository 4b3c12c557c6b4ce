//! A client connection's byte stream as the doors see it: a TCP socket, optionally behind a
//! PROXY protocol header, optionally TLS. Every layer stays non-blocking and resumable: a read
//! or write that cannot go on returns `WouldBlock`, and what TLS still has to send waits in
//! rustls until the socket is writable again.

use super::proxy_header::{self, Parsed};
use super::tls::{HandshakeFailure, TlsAcceptor, TlsCounters};
use log::debug;
use mio::net::TcpStream;
use rustls::ServerConnection;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

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

/// TLS record type of a handshake: the first byte a TLS client sends.
const TLS_HANDSHAKE: u8 = 0x16;
/// What a plain HTTP request on a TLS port is told, in plain HTTP.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json\r\nContent-Length: 66\r\nConnection: close\r\n\r\n\
{\"code\":400,\"msg\":\"this port speaks TLS: use https:// or wss://\"}\n";

/// Read size while looking for the PROXY header.
const HEADER_CHUNK: usize = 256;

pub struct Conn {
    tcp: TcpStream,
    /// Before anything else: the PROXY header being read, then what came after it.
    prelude: Option<Box<Prelude>>,
    tls: Option<Box<Tls>>,
}

struct Prelude {
    buf: Vec<u8>,
    /// The header is read; `buf` holds what followed it, handed on before the socket's bytes.
    parsed: bool,
    client: Option<SocketAddr>,
}

struct Tls {
    conn: ServerConnection,
    counters: Rc<TlsCounters>,
    /// For the debug log of a failed handshake.
    peer: SocketAddr,
    /// The first byte was checked to be TLS.
    sniffed: bool,
    /// A failure was counted (so that dropping it does not count it again as abandoned).
    failed: bool,
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
            Some(acceptor) => Some(Box::new(Tls {
                conn: ServerConnection::new(acceptor.config.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                counters: acceptor.counters.clone(),
                peer,
                sniffed: false,
                failed: false,
            })),
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

    /// TLS: decrypts until there is plaintext for `buf`, the socket is drained, or the peer
    /// is gone.
    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Conn {
            tcp, prelude, tls, ..
        } = self;
        let Some(tls) = tls.as_mut() else {
            return Ok(0);
        };
        let mut wire = Wire { prelude, tcp };
        loop {
            match tls.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !tls.sniffed {
                tls.sniff(&mut wire)?;
            }
            match tls.conn.read_tls(&mut wire) {
                // The peer closed without close_notify: the reader says so next turn.
                Ok(0) => {
                    return match tls.conn.reader().read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        other => other,
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let was_handshaking = tls.conn.is_handshaking();
            if let Err(error) = tls.conn.process_new_packets() {
                // The alert rustls prepared tells the client why.
                let _ = tls.conn.write_tls(wire.tcp);
                if was_handshaking {
                    tls.fail(HandshakeFailure::of(&error), &error);
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            if was_handshaking && !tls.conn.is_handshaking() {
                tls.counters.completed();
            }
            // Handshake answers (and key updates) go at once.
            match tls.push(wire.tcp) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl Tls {
    /// Writes what rustls has ready. Ok when all of it went, WouldBlock when the socket is full.
    fn push(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A plain HTTP request on the TLS port gets a plain answer saying so, not a TLS alert
    /// it could not read.
    fn sniff(&mut self, wire: &mut Wire<'_>) -> io::Result<()> {
        let first = match wire.prelude.as_ref().filter(|p| !p.buf.is_empty()) {
            Some(p) => p.buf[0],
            None => {
                let mut b = [0u8; 1];
                match wire.tcp.peek(&mut b) {
                    Ok(0) => return Ok(()),
                    Ok(_) => b[0],
                    Err(e) => return Err(e),
                }
            }
        };
        self.sniffed = true;
        if first == TLS_HANDSHAKE {
            return Ok(());
        }
        // Read the request first: closing with unread input would reset the connection and
        // could destroy the answer before the client reads it.
        let mut sink = [0u8; 4096];
        while matches!(wire.tcp.read(&mut sink), Ok(n) if n > 0) {}
        let _ = wire.tcp.write_all(PLAIN_HTTP_ANSWER);
        let _ = wire.tcp.shutdown(Shutdown::Write);
        self.counters.failed(HandshakeFailure::PlainHttp);
        self.failed = true;
        debug!("plain HTTP on the TLS port from {}", self.peer);
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plain HTTP on a TLS port",
        ))
    }

    fn fail(&mut self, why: HandshakeFailure, error: &rustls::Error) {
        self.counters.failed(why);
        self.failed = true;
        debug!("TLS handshake with {} failed: {error}", self.peer);
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        if self.conn.is_handshaking() && !self.failed {
            self.counters.failed(HandshakeFailure::Abandoned);
            debug!("TLS handshake with {} abandoned", self.peer);
        }
    }
}

/// The bytes under TLS: what followed the PROXY header first, then the socket.
struct Wire<'a> {
    prelude: &'a mut Option<Box<Prelude>>,
    tcp: &'a mut TcpStream,
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
        if self.tls.is_some() {
            return self.read_tls(buf);
        }
        Wire {
            prelude: &mut self.prelude,
            tcp: &mut self.tcp,
        }
        .read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.tcp.write_vectored(bufs);
        };
        // Records already made go first: rustls then holds at most one call's worth, and the
        // door's own queue (with its bound) keeps the rest.
        tls.push(&mut self.tcp)?;
        let n = tls.conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // rustls is full (still handshaking): come back when the socket has drained.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match tls.push(&mut self.tcp) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => tls.push(&mut self.tcp),
            None => Ok(()),
        }
    }
}

impl Transport for Conn {
    fn has_pending_output(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.conn.wants_write())
    }

    fn finish(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            if !tls.conn.is_handshaking() {
                tls.conn.send_close_notify();
                let _ = tls.push(&mut self.tcp);
            }
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
