//! TLS on one server connection, through rustls's unbuffered API. The connection keeps bytes
//! only while they are in flight: an unfinished record in, records the socket has not taken
//! out, plaintext the reader had no room for. Reads and encryption go through scratch buffers
//! that the thread shares. An idle connection then holds rustls's state and keys alone; the
//! buffered `ServerConnection` keeps a 4 KiB receive buffer for the connection's whole life.

use super::stream::Wire;
use super::tls::{HandshakeFailure, TlsAcceptor, TlsCounters};
use log::debug;
use mio::net::TcpStream;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus, WriteTraffic,
};
use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

/// TLS record type of a handshake: the first byte a TLS client sends.
const TLS_HANDSHAKE: u8 = 0x16;
/// What a plain HTTP request on a TLS port is told, in plain HTTP.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json\r\nContent-Length: 66\r\nConnection: close\r\n\r\n\
{\"code\":400,\"msg\":\"this port speaks TLS: use https:// or wss://\"}\n";

/// Plaintext encrypted per write call at most; the door's queue keeps the rest.
const WRITE_CHUNK: usize = 64 * 1024;
/// The shared receive buffer: an unfinished handshake message (rustls allows 64 KiB) plus a
/// read of at least a full record.
const WIRE_SCRATCH: usize = 96 * 1024;

/// The thread's scratch: TLS bytes read from a socket or encrypted for one, and the plaintext
/// of a vectored write gathered for encryption.
#[derive(Default)]
struct Scratch {
    wire: Vec<u8>,
    plain: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

pub(super) struct Tls {
    conn: UnbufferedServerConnection,
    /// TLS bytes read but not processed: an unfinished record, or records behind a full read.
    incoming: Vec<u8>,
    /// TLS bytes the socket has not taken yet.
    outgoing: Vec<u8>,
    /// Plaintext the reader had no room for, handed on from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    counters: Rc<TlsCounters>,
    /// For the debug log of a failed handshake (the PROXY header's client once read).
    pub(super) peer: SocketAddr,
    /// The first byte was checked to be TLS.
    sniffed: bool,
    /// A failure was counted (so that dropping it does not count it again as abandoned).
    failed: bool,
    /// The client's close_notify came: every read from now on is the end of the stream.
    peer_closed: bool,
}

/// Where one round of record processing left the reader.
enum Next {
    /// Something was done; go on processing.
    Again,
    /// The reader's buffer is full.
    Full,
    /// rustls needs more bytes from the socket.
    NeedInput,
    /// The client sent close_notify.
    Closed,
}

impl Tls {
    pub(super) fn new(acceptor: &TlsAcceptor, peer: SocketAddr) -> io::Result<Tls> {
        Ok(Tls {
            conn: UnbufferedServerConnection::new(acceptor.config.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            counters: acceptor.counters.clone(),
            peer,
            sniffed: false,
            failed: false,
            peer_closed: false,
        })
    }

    pub(super) fn has_pending_output(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Decrypts until there is plaintext for `buf`, the socket is drained, or the peer is gone.
    pub(super) fn read(&mut self, wire: &mut Wire<'_>, buf: &mut [u8]) -> io::Result<usize> {
        if self.plain_at < self.plain.len() {
            return Ok(self.take_plain(buf));
        }
        if self.peer_closed {
            return Ok(0);
        }
        if !self.sniffed {
            self.sniff(wire)?;
        }
        SCRATCH.with_borrow_mut(|s| {
            if s.wire.len() < WIRE_SCRATCH {
                s.wire.resize(WIRE_SCRATCH, 0);
            }
            let scratch = &mut s.wire;
            let mut end = self.incoming.len();
            scratch[..end].copy_from_slice(&self.incoming);
            self.incoming = Vec::new();
            let (mut start, mut out) = (0, 0);
            let result = loop {
                let (discard, plain, next) =
                    self.process(&mut scratch[start..end], &mut buf[out..], wire.tcp);
                start += discard;
                out += plain;
                match next {
                    Err(e) => break Err(e),
                    Ok(Next::Again) => {}
                    Ok(Next::Full | Next::Closed) => break Ok(out),
                    // What there is goes up first; the caller reads again until WouldBlock.
                    Ok(Next::NeedInput) if out > 0 => break Ok(out),
                    Ok(Next::NeedInput) => {
                        scratch.copy_within(start..end, 0);
                        end -= start;
                        start = 0;
                        if end == scratch.len() {
                            break Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "TLS message too large",
                            ));
                        }
                        match wire.read(&mut scratch[end..]) {
                            // The peer closed without close_notify: the end of the stream.
                            Ok(0) => break Ok(0),
                            Ok(n) => end += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    }
                }
            };
            if start < end {
                self.incoming = scratch[start..end].to_vec();
            }
            result
        })
    }

    /// One round of rustls's record processing over `incoming`: (bytes of `incoming` done
    /// with, plaintext bytes put in `out`, what next).
    fn process(
        &mut self,
        incoming: &mut [u8],
        out: &mut [u8],
        tcp: &mut TcpStream,
    ) -> (usize, usize, io::Result<Next>) {
        let was_handshaking = self.conn.is_handshaking();
        let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(incoming);
        let mut plain = 0;
        let next = match state {
            Err(error) => {
                if was_handshaking {
                    self.counters.failed(HandshakeFailure::of(&error));
                    self.failed = true;
                    debug!("TLS handshake with {} failed: {error}", self.peer);
                }
                // The alert rustls prepared tells the client why.
                self.send_alert(&mut incoming[discard..], tcp);
                return (
                    discard,
                    0,
                    Err(io::Error::new(io::ErrorKind::InvalidData, error)),
                );
            }
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                let mut next = Ok(Next::Again);
                while let Some(record) = records.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            let n = record.payload.len().min(out.len() - plain);
                            out[plain..plain + n].copy_from_slice(&record.payload[..n]);
                            plain += n;
                            self.plain.extend_from_slice(&record.payload[n..]);
                        }
                        Err(e) => {
                            next = Err(io::Error::new(io::ErrorKind::InvalidData, e));
                            break;
                        }
                    }
                }
                match next {
                    Ok(_) if plain == out.len() => Ok(Next::Full),
                    other => other,
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                encode(&mut data, &mut self.outgoing).map(|()| Next::Again)
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                // The bytes are ours now: what the socket does not take goes at the next flush.
                data.done();
                match push(&mut self.outgoing, tcp) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                    _ => Ok(Next::Again),
                }
            }
            Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                Ok(Next::NeedInput)
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                self.peer_closed = true;
                Ok(Next::Closed)
            }
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected TLS state (early data is not accepted)",
            )),
        };
        if was_handshaking && !self.conn.is_handshaking() {
            self.counters.completed();
        }
        (discard, plain, next)
    }

    fn take_plain(&mut self, buf: &mut [u8]) -> usize {
        let left = &self.plain[self.plain_at..];
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        n
    }

    /// Encrypts up to `WRITE_CHUNK` bytes of `bufs` as records and writes them. Records made
    /// earlier go first: the connection then holds at most one call's worth, and the door's
    /// own queue (with its bound) keeps the rest.
    pub(super) fn write_vectored(
        &mut self,
        tcp: &mut TcpStream,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        push(&mut self.outgoing, tcp)?;
        loop {
            // rustls is handed the bytes it has not processed yet: its handshake reassembly
            // keeps positions in them.
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let done = match state {
                Err(e) => Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    Some(encrypt(&mut traffic, bufs, &mut self.outgoing, tcp))
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, &mut self.outgoing).err().map(Err)
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    push(&mut self.outgoing, tcp).err().map(Err)
                }
                // Plaintext the reader has not taken: it waits with the rest.
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(Ok(record)) = records.next_record() {
                        discard += record.discard;
                        self.plain.extend_from_slice(record.payload);
                    }
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    None
                }
                // Still handshaking: the flush after the next read comes back.
                Ok(ConnectionState::BlockedHandshake) => {
                    Some(Err(io::ErrorKind::WouldBlock.into()))
                }
                Ok(_) => Some(Err(io::ErrorKind::BrokenPipe.into())),
            };
            self.discard_incoming(discard);
            if let Some(result) = done {
                return result;
            }
        }
    }

    fn discard_incoming(&mut self, n: usize) {
        if n >= self.incoming.len() {
            self.incoming = Vec::new();
        } else if n > 0 {
            self.incoming.drain(..n);
        }
    }

    pub(super) fn flush(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        push(&mut self.outgoing, tcp)
    }

    /// Says goodbye with close_notify, if the handshake was done.
    pub(super) fn finish(&mut self, tcp: &mut TcpStream) {
        if self.conn.is_handshaking() {
            return;
        }
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
            let mut alert = [0u8; 64];
            if let Ok(n) = traffic.queue_close_notify(&mut alert) {
                self.outgoing.extend_from_slice(&alert[..n]);
            }
        }
        let _ = push(&mut self.outgoing, tcp);
    }

    /// After a failure: writes the alert rustls queued, if the socket takes it. `incoming`:
    /// what rustls had not processed.
    fn send_alert(&mut self, incoming: &mut [u8], tcp: &mut TcpStream) {
        for _ in 0..4 {
            match self.conn.process_tls_records(incoming).state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    if encode(&mut data, &mut self.outgoing).is_err() {
                        break;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    break;
                }
                _ => break,
            }
        }
        let _ = push(&mut self.outgoing, tcp);
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
}

impl Drop for Tls {
    fn drop(&mut self) {
        if self.conn.is_handshaking() && !self.failed {
            self.counters.failed(HandshakeFailure::Abandoned);
            debug!("TLS handshake with {} abandoned", self.peer);
        }
    }
}

/// Appends a handshake record (or alert) to `outgoing`.
fn encode(
    data: &mut EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) -> io::Result<()> {
    let at = outgoing.len();
    let needed = match data.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    outgoing.resize(at + needed, 0);
    match data.encode(&mut outgoing[at..]) {
        Ok(n) => {
            outgoing.truncate(at + n);
            Ok(())
        }
        Err(e) => {
            outgoing.truncate(at);
            Err(io::Error::other(e))
        }
    }
}

/// Encrypts up to `WRITE_CHUNK` bytes of `bufs` into the thread's scratch and writes the
/// records; what the socket does not take waits in `outgoing`. Ok(plaintext bytes taken).
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    bufs: &[IoSlice<'_>],
    outgoing: &mut Vec<u8>,
    tcp: &mut TcpStream,
) -> io::Result<usize> {
    SCRATCH.with_borrow_mut(|s| {
        let Scratch { wire, plain } = s;
        // One slice is encrypted from where it is; several are gathered, so that small frames
        // share records.
        let data: &[u8] = match bufs.iter().filter(|b| !b.is_empty()).count() {
            0 => return Ok(0),
            1 => {
                let b = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                &b[..b.len().min(WRITE_CHUNK)]
            }
            _ => {
                plain.clear();
                for b in bufs {
                    let room = WRITE_CHUNK - plain.len();
                    plain.extend_from_slice(&b[..b.len().min(room)]);
                    if room <= b.len() {
                        break;
                    }
                }
                plain
            }
        };
        let len = match traffic.encrypt(data, wire) {
            Ok(n) => n,
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                wire.resize(required_size, 0);
                traffic.encrypt(data, wire).map_err(io::Error::other)?
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        let mut sent = 0;
        while sent < len {
            match tcp.write(&wire[sent..len]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        outgoing.extend_from_slice(&wire[sent..len]);
        Ok(data.len())
    })
}

/// Writes `outgoing`. Ok when all of it went (its room is given back), WouldBlock when the
/// socket is full.
fn push(outgoing: &mut Vec<u8>, tcp: &mut TcpStream) -> io::Result<()> {
    let mut sent = 0;
    let result = loop {
        if sent == outgoing.len() {
            break Ok(());
        }
        match tcp.write(&outgoing[sent..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if sent == outgoing.len() {
        *outgoing = Vec::new();
    } else {
        outgoing.drain(..sent);
    }
    result
}
