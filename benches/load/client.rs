//! One WebSocket client of an agent: a non-blocking connect from a chosen loopback source
//! address, TLS over it if asked (`Link`), the HTTP upgrade written and parsed by hand, then
//! frames through tungstenite's `WebSocketContext` over the link. What the frames mean is the
//! agent's business.

use crate::chat::ChatSender;
use crate::link::Link;
use crate::tally::Stream;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Message, Utf8Bytes};

/// Bytes read per call once upgraded: the frames the bench receives are small, a buffer this
/// size is allocated up front for each of thousands of connections, and tungstenite zeroes it
/// before every read.
const READ_BUFFER: usize = 1024;
/// A 101 response longer than this is not one the server sends.
const MAX_RESPONSE: usize = 8192;

/// The upgrade request and what has come back of the response.
#[derive(Default)]
struct Upgrade {
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    /// The Sec-WebSocket-Accept the server must answer with.
    accept: String,
}

enum Phase {
    /// connect() is in progress.
    Connecting(Upgrade),
    /// Writing the upgrade request, then reading the 101 response.
    Upgrading(Upgrade),
    Open(Box<WebSocketContext>),
}

/// How a readiness event left the client.
pub enum Status {
    /// Still going (whatever text frames arrived are in the caller's vector).
    Alive,
    /// Never got as far as a WebSocket connection.
    Failed(String),
    /// The WebSocket connection ended.
    Closed(String),
}

pub struct Client {
    pub uid: u64,
    stream: Link,
    phase: Phase,
    /// Frames are waiting in tungstenite's buffer for the socket to take them.
    unsent: bool,
    pub logged_in: bool,
    /// CLOCK_MONOTONIC when connect() was called.
    pub started_ns: u64,
    /// What this client received, per sender.
    pub streams: Vec<Stream>,
    pub chat: Option<ChatSender>,
}

impl Client {
    /// Starts a non-blocking connect from `source` (port chosen by the kernel) to `server`,
    /// over TLS with `tls`.
    pub fn connect(
        uid: u64,
        source: Ipv4Addr,
        server: SocketAddrV4,
        access_token: &str,
        started_ns: u64,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> io::Result<Client> {
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // The port is picked at connect(), unique per (source, destination) rather than per
        // source: ports still in TIME_WAIT from a previous run to another server port are fine.
        socket::setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)?;
        socket::setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
        socket::bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(source, 0)),
        )?;
        match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(server)) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        let tcp = TcpStream::from_std(std::net::TcpStream::from(fd));
        let stream = match tls {
            None => Link::plain(tcp),
            Some(config) => Link::tls(tcp, config)?,
        };
        let key = tungstenite::handshake::client::generate_key();
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let request = format!(
            "GET /?access_token={access_token} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        Ok(Client {
            uid,
            stream,
            phase: Phase::Connecting(Upgrade {
                request: request.into_bytes(),
                written: 0,
                response: Vec::new(),
                accept,
            }),
            unsent: false,
            logged_in: false,
            started_ns,
            streams: Vec::new(),
            chat: None,
        })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        // Edge-triggered, both ways from the start: writable is how a connect completes.
        registry.register(
            self.stream.tcp_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Moves the client as far as the socket allows; text frames that arrived are appended to
    /// `texts`.
    pub fn on_ready(&mut self, texts: &mut Vec<Utf8Bytes>) -> Status {
        if !matches!(self.phase, Phase::Connecting(_)) {
            // TLS records the socket refused before may go now.
            match self.stream.push() {
                Err(e) if e.kind() != ErrorKind::WouldBlock => {
                    return Status::Closed(format!("writing: {e}"))
                }
                _ => {}
            }
        }
        loop {
            self.phase = match &mut self.phase {
                Phase::Connecting(up) => match connect_result(self.stream.tcp()) {
                    Ok(false) => return Status::Alive,
                    Ok(true) => Phase::Upgrading(std::mem::take(up)),
                    Err(e) => return Status::Failed(format!("connect: {e}")),
                },
                Phase::Upgrading(up) => match upgrade(&mut self.stream, up) {
                    Ok(Some(ctx)) => Phase::Open(ctx),
                    Ok(None) => return Status::Alive,
                    Err(e) => return Status::Failed(e),
                },
                Phase::Open(ctx) => {
                    if self.unsent {
                        // The socket may have room again for what it refused.
                        self.unsent = false;
                        match ctx.flush(&mut self.stream) {
                            Ok(()) => {}
                            Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                                self.unsent = true
                            }
                            Err(e) => return Status::Closed(format!("writing: {e}")),
                        }
                    }
                    return read_frames(&mut self.stream, ctx, texts);
                }
            };
        }
    }

    /// What TLS negotiated, on a TLS connection whose handshake is done.
    pub fn tls_summary(&self) -> Option<String> {
        self.stream.tls_summary()
    }

    /// Queues a text frame; `flush` sends what is queued.
    pub fn queue_text(&mut self, text: String) -> Result<(), String> {
        let Phase::Open(ctx) = &mut self.phase else {
            return Err("not connected".into());
        };
        match ctx.write(&mut self.stream, Message::text(text)) {
            Ok(()) => Ok(()),
            // The frame stays in tungstenite's buffer: it goes at the next flush.
            Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.unsent = true;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes what is queued, as far as the socket takes it (the rest at the next writable).
    pub fn flush(&mut self) -> Result<(), String> {
        let Phase::Open(ctx) = &mut self.phase else {
            return Ok(());
        };
        match ctx.flush(&mut self.stream) {
            Ok(()) => Ok(()),
            Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.unsent = true;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// True once a non-blocking connect has completed; events can be spurious.
fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes the request and reads the response; the WebSocket context once a 101 has come.
fn upgrade(stream: &mut Link, up: &mut Upgrade) -> Result<Option<Box<WebSocketContext>>, String> {
    while up.written < up.request.len() {
        match stream.write(&up.request[up.written..]) {
            Ok(0) => return Err("closed while sending the upgrade".into()),
            Ok(n) => up.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("sending the upgrade: {e}")),
        }
    }
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed during the upgrade: {}", head(&up.response))),
            Ok(n) => up.response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the upgrade response: {e}")),
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut headers);
        let len = match res.parse(&up.response) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if up.response.len() < MAX_RESPONSE => continue,
            Ok(httparse::Status::Partial) => return Err("upgrade response too long".into()),
            Err(e) => {
                return Err(format!(
                    "bad upgrade response ({e}): {}",
                    head(&up.response)
                ))
            }
        };
        if res.code != Some(101) {
            return Err(format!("upgrade refused: {}", head(&up.response)));
        }
        let accept = res
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value);
        if accept != Some(up.accept.as_bytes()) {
            return Err("wrong Sec-WebSocket-Accept".into());
        }
        // The login frame may have come in the same segment as the 101.
        let rest = up.response[len..].to_vec();
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        return Ok(Some(Box::new(WebSocketContext::from_partially_read(
            rest,
            Role::Client,
            Some(config),
        ))));
    }
}

/// The stream as tungstenite sees it while reading frames. Once a read comes back short the
/// socket is drained (edge-triggered epoll reports whatever arrives later), so the next read
/// says WouldBlock without the system call that would say so.
struct Drained<'a> {
    stream: &'a mut Link,
    empty: bool,
}

impl Read for Drained<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_drained(buf, &mut self.empty)
    }
}

impl Write for Drained<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Reads frames until the socket would block.
fn read_frames(
    stream: &mut Link,
    ctx: &mut WebSocketContext,
    texts: &mut Vec<Utf8Bytes>,
) -> Status {
    let mut stream = Drained {
        stream,
        empty: false,
    };
    loop {
        match ctx.read(&mut stream) {
            Ok(Message::Text(t)) => texts.push(t),
            Ok(Message::Close(frame)) => {
                return Status::Closed(match frame {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
                    None => "close".into(),
                })
            }
            // Pings are answered by tungstenite; nothing else is sent to the bench.
            Ok(_) => {}
            Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => return Status::Alive,
            Err(WsError::Io(e)) if e.kind() == ErrorKind::Interrupted => {}
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                return Status::Closed("connection closed".into())
            }
            Err(e) => return Status::Closed(e.to_string()),
        }
    }
}

/// The first line of a response, for messages.
fn head(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect()
}
