//! A scripted stream for the tests of the WebSocket door and the router: what a client sends
//! is queued in pieces (with `WouldBlock` between them where the script says so), and what the
//! server writes is kept, up to a limit past which writes block, as a full socket would.

use crate::master::ws::{Sessions, WsEvent};
use crate::model::{ConnId, Source, Uid};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Instant;

#[derive(Default)]
pub struct Script {
    /// What the next reads return, in order; empty means `WouldBlock`.
    pub input: VecDeque<Piece>,
    /// Everything written.
    pub written: Vec<u8>,
    /// Bytes a write may still take before it blocks (None: unlimited).
    pub room: Option<usize>,
    /// Writes fail as on a reset connection.
    pub broken: bool,
}

pub enum Piece {
    Data(Vec<u8>),
    /// The peer closed its side: reads return 0.
    Eof,
}

/// The test's handle and the session's stream are the same script.
#[derive(Clone, Default)]
pub struct MockStream(pub Rc<RefCell<Script>>);

impl MockStream {
    pub fn send(&self, bytes: &[u8]) {
        self.0
            .borrow_mut()
            .input
            .push_back(Piece::Data(bytes.to_vec()));
    }

    pub fn close(&self) {
        self.0.borrow_mut().input.push_back(Piece::Eof);
    }

    /// Takes what the server wrote so far.
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut().written)
    }

    pub fn set_room(&self, room: Option<usize>) {
        self.0.borrow_mut().room = room;
    }
}

impl Read for MockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        match s.input.pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Piece::Eof) => {
                s.input.push_front(Piece::Eof);
                Ok(0)
            }
            Some(Piece::Data(mut d)) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                if n < d.len() {
                    s.input.push_front(Piece::Data(d.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        if s.broken {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let n = match s.room {
            Some(0) => return Err(io::ErrorKind::WouldBlock.into()),
            Some(room) => room.min(buf.len()),
            None => buf.len(),
        };
        s.written.extend_from_slice(&buf[..n]);
        if let Some(room) = s.room.as_mut() {
            *room -= n;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client frame, masked as clients must: `first` is the FIN/opcode byte.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A client's text frame.
pub fn text(payload: &str) -> Vec<u8> {
    client_frame(0x81, payload.as_bytes())
}

/// The upgrade request of a client logging in as `uid` from `source` with token `t<uid>`.
pub fn upgrade_request(uid: u64, source: &str, device: Option<&str>) -> Vec<u8> {
    let token = crate::protocol::encode_access_token(&format!("t{uid}"), uid, source);
    let device = device.map(|d| format!("&token={d}")).unwrap_or_default();
    format!(
        "GET /?access_token={token}{device} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The frames in what the server wrote (after any HTTP head): (opcode, payload).
pub fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    if bytes.starts_with(b"HTTP/1.1") {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(bytes.len(), |p| p + 4);
        bytes = &bytes[end..];
    }
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (usize::from(n), 2),
        };
        if bytes.len() < header + len {
            break;
        }
        frames.push((opcode, bytes[header..header + len].to_vec()));
        bytes = &bytes[header + len..];
    }
    frames
}

/// The JSON of every text frame the server wrote on `stream` since the last look.
pub fn written_json(stream: &MockStream) -> Vec<serde_json::Value> {
    server_frames(&stream.take_written())
        .into_iter()
        .filter(|(op, _)| *op == 1)
        .filter_map(|(_, p)| serde_json::from_slice(&p).ok())
        .collect()
}

/// A session table with the default limits of the configuration.
pub fn sessions() -> Sessions<MockStream> {
    let config = crate::config::Config::default();
    Sessions::new(
        crate::master::session_config(&config),
        crate::master::admission(&config),
    )
}

/// A connection through its upgrade to the point where its login is being checked; returns its
/// id, its stream and the Login event.
pub fn connect(
    ws: &mut Sessions<MockStream>,
    uid: u64,
    source: &str,
    now: Instant,
) -> (ConnId, MockStream, WsEvent) {
    let stream = MockStream::default();
    stream.send(&upgrade_request(uid, source, None));
    let conn = ws.next_id();
    ws.insert(
        conn,
        stream.clone(),
        "127.0.0.1:40000".parse().expect("addr"),
        now,
    );
    ws.on_readable(conn, now);
    let mut events = ws.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    (conn, stream, events.remove(0))
}

/// A connection logged in as `uid` (opened without the router): its id and stream, with what
/// was written so far taken.
pub fn open(ws: &mut Sessions<MockStream>, uid: u64, now: Instant) -> (ConnId, MockStream) {
    let (conn, stream, _) = connect(ws, uid, "app", now);
    let source = Source::new("app").expect("source");
    assert!(ws.open(conn, Uid(uid), source, true, now));
    ws.flush();
    stream.take_written();
    (conn, stream)
}

impl crate::net::stream::Transport for MockStream {}
