//! A client's byte stream: the TCP socket itself, or TLS over it (a rustls client connection
//! driven by the agent's mio loop). Every call goes as far as the socket allows and says
//! `WouldBlock` past it; TLS records that the socket did not take wait in rustls until
//! `push` is called again.

use mio::net::TcpStream;
use rustls::{ClientConfig, ClientConnection};
use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

pub struct Link {
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
}

impl Link {
    pub fn plain(tcp: TcpStream) -> Link {
        Link { tcp, tls: None }
    }

    /// TLS over `tcp`; the ClientHello goes with the first `push` (or write).
    pub fn tls(tcp: TcpStream, config: &Arc<ClientConfig>) -> io::Result<Link> {
        let conn = ClientConnection::new(config.clone(), crate::common::tls::server_name())
            .map_err(io::Error::other)?;
        Ok(Link {
            tcp,
            tls: Some(Box::new(conn)),
        })
    }

    /// What TLS negotiated (version, cipher suite, key exchange), once the handshake is done.
    pub fn tls_summary(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(format!(
            "{:?}, {:?}, key exchange {:?}",
            tls.protocol_version()?,
            tls.negotiated_cipher_suite()?.suite(),
            tls.negotiated_key_exchange_group()?.name()
        ))
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Writes what TLS has ready (handshake messages, records, alerts). Ok when all of it
    /// went, WouldBlock when the socket is full.
    pub fn push(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => push(tls, &mut self.tcp),
            None => Ok(()),
        }
    }

    /// Reads into `buf`. `drained` is set once a read from the socket came back short: with
    /// edge-triggered readiness the socket is then empty until the next event, and a read
    /// says WouldBlock without asking the kernel.
    pub fn read_drained(&mut self, buf: &mut [u8], drained: &mut bool) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            if *drained {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = self.tcp.read(buf)?;
            *drained = n < buf.len();
            return Ok(n);
        };
        loop {
            match tls.reader().read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Ok(0): the server's close_notify; UnexpectedEof: it closed without one.
                other => return other,
            }
            if *drained {
                return Err(ErrorKind::WouldBlock.into());
            }
            tls.read_tls(&mut Short {
                tcp: &mut self.tcp,
                short: drained,
            })?;
            tls.process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            // The handshake's answers go at once; a full socket keeps them for the next push.
            pushed(push(tls, &mut self.tcp))?;
        }
    }
}

fn push(tls: &mut ClientConnection, tcp: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(tcp) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A push that stopped at a full socket is not an error: the rest goes at the next one.
fn pushed(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}

/// The socket under rustls's reads, noting a short one.
struct Short<'a> {
    tcp: &'a mut TcpStream,
    short: &'a mut bool,
}

impl Read for Short<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        *self.short = n < buf.len();
        Ok(n)
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_drained(buf, &mut false)
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.tcp.write(buf);
        };
        // Records made earlier go first; rustls refuses more only while the socket is full.
        pushed(push(tls, &mut self.tcp))?;
        let n = tls.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        pushed(push(tls, &mut self.tcp))?;
        Ok(n)
    }

    /// Ok once everything written has reached the socket; WouldBlock while TLS still holds
    /// some of it.
    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}
