//! RFC 6455 frames from a client, decoded from whatever the socket gave so far. A session keeps
//! a `Decoder` only while it holds an unfinished frame or message, so an idle connection holds
//! no read buffer at all; a finished message's payload is a slice of the bytes read (unmasked
//! in place), never copied.
//!
//! We decode here rather than through tungstenite's `WebSocketContext`, which keeps a read
//! buffer allocated for each connection's whole life (1 KiB or more per idle connection).
//! tungstenite still checks close codes and encodes what the server sends.

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::CloseCode;

/// Bounds from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_frame: usize,
    pub max_message: usize,
}

/// A complete message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message, valid UTF-8.
    Text(Bytes),
    Binary,
    Ping(Bytes),
    Pong,
    /// The peer's close frame (its code, if it gave one).
    Close(Option<u16>),
}

/// How a client broke the protocol; the connection closes with the RFC's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Protocol(&'static str),
    InvalidUtf8,
    TooBig(&'static str),
}

impl Violation {
    pub fn close_code(self) -> u16 {
        use crate::protocol::close_code::{INVALID_DATA, PROTOCOL_ERROR, TOO_BIG};
        match self {
            Violation::Protocol(_) => PROTOCOL_ERROR,
            Violation::InvalidUtf8 => INVALID_DATA,
            Violation::TooBig(_) => TOO_BIG,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Violation::Protocol(why) | Violation::TooBig(why) => why,
            Violation::InvalidUtf8 => "invalid UTF-8",
        }
    }
}

/// The most room reserved ahead of bytes actually received.
const RESERVE_AHEAD: usize = 16 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

/// Parses a frame header, if `buf` holds all of it.
fn parse_header(buf: &[u8], limits: FrameLimits) -> Result<Option<Header>, Violation> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(Violation::Protocol(
            "reserved bits set without an extension",
        ));
    }
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(Violation::Protocol("unknown opcode"));
    }
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(Violation::Protocol("client frames must be masked"));
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE {
        if !fin {
            return Err(Violation::Protocol("fragmented control frame"));
        }
        if len > 125 {
            return Err(Violation::Protocol("control frame over 125 bytes"));
        }
    }
    if len > limits.max_frame as u64 {
        return Err(Violation::TooBig("frame too big"));
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [m[0], m[1], m[2], m[3]];
    at += 4;
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len: at,
        payload_len: len as usize,
    }))
}

/// XORs `payload` with the 4-byte mask; word at a time where it can.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// What an unfinished frame or message keeps between reads.
#[derive(Default)]
pub struct Decoder {
    /// Bytes read and not yet decoded: the start of a frame.
    buf: BytesMut,
    /// A fragmented message being put together: text or binary, and its data so far.
    fragments: Option<(bool, Vec<u8>)>,
}

impl Decoder {
    /// True when nothing is kept: the session can let the decoder go.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.fragments.is_none()
    }

    /// Lets go of the read buffer once nothing in it is waiting (an idle connection holds
    /// none).
    pub fn release_if_idle(&mut self) {
        if self.is_idle() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Adds bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message or control frame, if the bytes so far hold one.
    pub fn next(&mut self, limits: FrameLimits) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some(h) = parse_header(&self.buf, limits)? else {
                return Ok(None);
            };
            let total = h.header_len + h.payload_len;
            if self.buf.len() < total {
                // Room for more of the frame, but never much more than has arrived: a header
                // alone must not make us hold the whole announced length.
                self.buf
                    .reserve((total - self.buf.len()).min(RESERVE_AHEAD));
                return Ok(None);
            }
            self.buf.advance(h.header_len);
            // A read that holds exactly one frame (the common case) gives its whole buffer
            // away, which saves splitting it into shared halves.
            let mut payload = if self.buf.len() == h.payload_len {
                std::mem::take(&mut self.buf)
            } else {
                self.buf.split_to(h.payload_len)
            };
            unmask(&mut payload, h.mask);
            if let Some(message) = self.frame(h.fin, h.opcode, payload, limits)? {
                return Ok(Some(message));
            }
        }
    }

    /// One whole frame; a message when it completes one.
    fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: BytesMut,
        limits: FrameLimits,
    ) -> Result<Option<Incoming>, Violation> {
        match opcode {
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => close_frame(&payload).map(|code| Some(Incoming::Close(code))),
            OP_TEXT | OP_BINARY if self.fragments.is_some() => Err(Violation::Protocol(
                "a new message before the fragmented one ended",
            )),
            OP_TEXT | OP_BINARY if fin => {
                if payload.len() > limits.max_message {
                    return Err(Violation::TooBig("message too big"));
                }
                finished(opcode == OP_TEXT, payload.freeze()).map(Some)
            }
            OP_TEXT | OP_BINARY => {
                if payload.len() > limits.max_message {
                    return Err(Violation::TooBig("message too big"));
                }
                self.fragments = Some((opcode == OP_TEXT, payload.to_vec()));
                Ok(None)
            }
            _ => {
                let Some((text, data)) = self.fragments.as_mut() else {
                    return Err(Violation::Protocol("continuation without a message"));
                };
                if data.len() + payload.len() > limits.max_message {
                    return Err(Violation::TooBig("message too big"));
                }
                data.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let text = *text;
                let data = self.fragments.take().map(|(_, d)| d).unwrap_or_default();
                finished(text, Bytes::from(data)).map(Some)
            }
        }
    }
}

fn finished(text: bool, payload: Bytes) -> Result<Incoming, Violation> {
    if !text {
        return Ok(Incoming::Binary);
    }
    if std::str::from_utf8(&payload).is_err() {
        return Err(Violation::InvalidUtf8);
    }
    Ok(Incoming::Text(payload))
}

/// A close frame's code, checked as RFC 6455 section 7.4 asks.
fn close_frame(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("close frame with a one-byte body")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !CloseCode::from(code).is_allowed() {
                return Err(Violation::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// A close frame from the server (unmasked), with `code` and `reason` (cut to fit 125 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut frame = Vec::with_capacity(4 + end);
    frame.extend_from_slice(&[0x88, (2 + end) as u8]);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&reason.as_bytes()[..end]);
    Bytes::from(frame)
}

/// The pong for a ping with `payload` (at most 125 bytes: checked when the ping was read).
pub fn pong(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(2 + payload.len());
    frame.extend_from_slice(&[0x8A, payload.len() as u8]);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

#[cfg(test)]
mod tests;
