//! The frames the server sends, written once, straight into their WebSocket framing: a frame is
//! one buffer (`Bytes`) that any number of connections share, and a kept message's `type` and
//! `content` are ranges of it, never copies.

use crate::model::{ConnId, MessageId, Uid};
use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Range;

/// Room for the longest header (opcode byte, 127, 8 length bytes).
const HEADER_ROOM: usize = 10;
/// FIN + text opcode.
const TEXT: u8 = 0x81;

/// A text frame being written: the payload goes after `HEADER_ROOM` bytes, and `finish` puts
/// the header, now that the length is known, right before it.
pub struct FrameBuilder {
    buf: BytesMut,
}

impl FrameBuilder {
    pub fn with_capacity(payload: usize) -> FrameBuilder {
        let mut buf = BytesMut::with_capacity(HEADER_ROOM + payload);
        buf.put_bytes(0, HEADER_ROOM);
        FrameBuilder { buf }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn push_str(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn push_u64(&mut self, n: u64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// The payload written so far, for checking an exact size.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_ROOM
    }

    /// `s` as a JSON string, quotes and escapes included.
    pub fn push_json_str(&mut self, s: &str) {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.buf.put_u8(b'"');
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.put_u8(b'"');
        } else {
            // Writing a string into a growable buffer cannot fail.
            let _ = serde_json::to_writer((&mut self.buf).writer(), s);
        }
    }

    /// Where the next payload byte goes, counted from the payload's start.
    pub fn position(&self) -> usize {
        self.buf.len() - HEADER_ROOM
    }

    /// The whole frame, and how long its header is (payload offset `n` is frame offset
    /// `header + n`).
    pub fn finish(mut self) -> (Bytes, usize) {
        let len = self.buf.len() - HEADER_ROOM;
        let mut header = [0u8; HEADER_ROOM];
        header[0] = TEXT;
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if len <= usize::from(u16::MAX) {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        let start = HEADER_ROOM - header_len;
        self.buf[start..HEADER_ROOM].copy_from_slice(&header[..header_len]);
        // Moves the start past the unused room: no split, so no shared half to allocate.
        bytes::Buf::advance(&mut self.buf, start);
        (self.buf.freeze(), header_len)
    }

    /// The whole frame, for frames whose layout nobody asks about.
    pub fn into_frame(self) -> Bytes {
        self.finish().0
    }
}

/// Decimal digits of `n`.
pub fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Bytes of `s` written as a JSON string.
pub fn json_str_len(s: &str) -> usize {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        s.len() + 2
    } else {
        serde_json::to_string(s).map_or(s.len() + 2, |j| j.len())
    }
}

/// A text frame of `payload`.
pub fn text(payload: &[u8]) -> Bytes {
    let mut b = FrameBuilder::with_capacity(payload.len());
    b.push(payload);
    b.into_frame()
}

/// Where a message's fields sit in its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub kind: Range<usize>,
    pub content: Range<usize>,
}

/// A chat message as a recipient gets it (`state` 1 live, 0 kept for later):
/// `{"id","type","uid","to_uid","time","state","content"}`, `content` copied as raw JSON.
pub fn message(
    id: MessageId,
    kind: &str,
    from: Uid,
    to: Uid,
    time: u64,
    state: u8,
    content: &str,
) -> (Bytes, Layout) {
    addressed(id, kind, from, To::Uid(to), time, state, content)
}

/// A message to a group, as every member gets it: `to_group` in place of `to_uid`.
pub fn group_message(
    id: MessageId,
    kind: &str,
    from: Uid,
    group: &str,
    time: u64,
    state: u8,
    content: &str,
) -> (Bytes, Layout) {
    addressed(id, kind, from, To::Group(group), time, state, content)
}

/// Whom a message frame names as its recipient.
enum To<'a> {
    Uid(Uid),
    /// A group's name (no escapes needed: `[A-Za-z0-9_:.-]`).
    Group(&'a str),
}

fn addressed(
    id: MessageId,
    kind: &str,
    from: Uid,
    to: To<'_>,
    time: u64,
    state: u8,
    content: &str,
) -> (Bytes, Layout) {
    // Sized exactly: a buffer with no spare room becomes a frame without another allocation.
    let to_len = match &to {
        To::Uid(to) => digits(to.0),
        To::Group(g) => g.len() + 2,
    };
    let size = 66
        + digits(id.0)
        + json_str_len(kind)
        + digits(from.0)
        + to_len
        + digits(time)
        + digits(u64::from(state))
        + content.len();
    let mut b = FrameBuilder::with_capacity(size);
    b.push(b"{\"id\":\"");
    b.push_u64(id.0);
    b.push(b"\",\"type\":");
    let kind_start = b.position() + 1;
    b.push_json_str(kind);
    let kind_end = b.position() - 1;
    b.push(b",\"uid\":\"");
    b.push_u64(from.0);
    match to {
        To::Uid(to) => {
            b.push(b"\",\"to_uid\":\"");
            b.push_u64(to.0);
        }
        To::Group(g) => {
            b.push(b"\",\"to_group\":\"");
            b.push_str(g);
        }
    }
    b.push(b"\",\"time\":");
    b.push_u64(time);
    b.push(b",\"state\":");
    b.push_u64(u64::from(state));
    b.push(b",\"content\":");
    let content_start = b.position();
    b.push_str(content);
    let content_end = b.position();
    b.push(b"}");
    debug_assert_eq!(b.payload_len(), size);
    let (frame, header) = b.finish();
    (
        frame,
        Layout {
            kind: header + kind_start..header + kind_end,
            content: header + content_start..header + content_end,
        },
    )
}

/// `{"type":"login","code":200,"message":"ok","data":{"uid":..,"source":..,"fd":..}}`
pub fn login_ok(uid: Uid, source: &str, conn: ConnId) -> Bytes {
    let mut b = FrameBuilder::with_capacity(96);
    b.push(b"{\"type\":\"login\",\"code\":200,\"message\":\"ok\",\"data\":{\"uid\":\"");
    b.push_u64(uid.0);
    b.push(b"\",\"source\":");
    b.push_json_str(source);
    b.push(b",\"fd\":");
    b.push_u64(conn.0);
    b.push(b"}}");
    b.into_frame()
}

/// `{"type":"login","code":..,"message":..,"data":[]}`
pub fn login_refused(code: u16, message: &str) -> Bytes {
    let mut b = FrameBuilder::with_capacity(64 + message.len());
    b.push(b"{\"type\":\"login\",\"code\":");
    b.push_u64(u64::from(code));
    b.push(b",\"message\":");
    b.push_json_str(message);
    b.push(b",\"data\":[]}");
    b.into_frame()
}

/// The answer to a login that cannot be checked now (the token store is down, or the check
/// was not answered before the handshake deadline): this frame, then the close
/// `LOGIN_UNAVAILABLE_CLOSE`.
pub fn login_unavailable() -> Bytes {
    login_refused(503, "service unavailable")
}

pub const LOGIN_UNAVAILABLE_CLOSE: (u16, &str) =
    (super::close_code::TRY_AGAIN_LATER, "service unavailable");

/// `{"type":"error","code":..,"message":..}`
pub fn error(code: u16, message: &str) -> Bytes {
    let mut b = FrameBuilder::with_capacity(40 + message.len());
    b.push(b"{\"type\":\"error\",\"code\":");
    b.push_u64(u64::from(code));
    b.push(b",\"message\":");
    b.push_json_str(message);
    b.push(b"}");
    b.into_frame()
}

/// `{"type":"ack","id":..,"to_uid":..,"state":..}`
pub fn ack(id: MessageId, to: Uid, state: u8) -> Bytes {
    let size = 43 + digits(id.0) + digits(to.0) + digits(u64::from(state));
    let mut b = FrameBuilder::with_capacity(size);
    b.push(b"{\"type\":\"ack\",\"id\":\"");
    b.push_u64(id.0);
    b.push(b"\",\"to_uid\":\"");
    b.push_u64(to.0);
    b.push(b"\",\"state\":");
    b.push_u64(u64::from(state));
    b.push(b"}");
    debug_assert_eq!(b.payload_len(), size);
    b.into_frame()
}

/// `{"type":"ack","id":"..","to_group":"g","state":1}`: a group chat was taken.
pub fn group_ack(id: MessageId, group: &str) -> Bytes {
    let size = 46 + digits(id.0) + group.len();
    let mut b = FrameBuilder::with_capacity(size);
    b.push(b"{\"type\":\"ack\",\"id\":\"");
    b.push_u64(id.0);
    b.push(b"\",\"to_group\":\"");
    b.push_str(group);
    b.push(b"\",\"state\":1}");
    debug_assert_eq!(b.payload_len(), size);
    b.into_frame()
}

/// `{"type":"pong"}`, one static frame for every connection.
pub fn pong() -> Bytes {
    const PONG: &[u8] = b"\x81\x0f{\"type\":\"pong\"}";
    Bytes::from_static(PONG)
}

/// The payload of a frame made here (the header skipped).
pub fn payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn json(frame: &Bytes) -> Value {
        serde_json::from_slice(payload(frame)).expect("the payload is JSON")
    }

    #[test]
    fn headers_follow_rfc6455_lengths() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = text(&[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = text(&vec![b'x'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(big.len(), 10 + 70_000);
        assert_eq!(payload(&big).len(), 70_000);
        assert_eq!(pong(), text(br#"{"type":"pong"}"#));
    }

    #[test]
    fn message_fields_are_ranges_of_the_frame() {
        let content = r#"{"type":"text","value":"hi \"there\""}"#;
        let (frame, layout) = message(MessageId(1234), "chat", Uid(1), Uid(2), 99, 1, content);
        let v = json(&frame);
        assert_eq!(v["id"], "1234");
        assert_eq!(v["uid"], "1");
        assert_eq!(v["to_uid"], "2");
        assert_eq!(v["time"], 99);
        assert_eq!(v["state"], 1);
        assert_eq!(v["content"]["value"], "hi \"there\"");
        assert_eq!(&frame[layout.content], content.as_bytes());
        assert_eq!(&frame[layout.kind], b"chat");
        // A long message moves the payload behind a longer header: the ranges follow.
        let long = format!("\"{}\"", "y".repeat(1000));
        let (frame, layout) = message(MessageId(1), "a\"b", Uid(1), Uid(2), 3, 0, &long);
        assert_eq!(&frame[layout.content], long.as_bytes());
        assert_eq!(&frame[layout.kind], br#"a\"b"#);
        assert_eq!(json(&frame)["type"], "a\"b");
    }

    #[test]
    fn sizes_are_exact() {
        assert_eq!(
            (digits(0), digits(9), digits(10), digits(u64::MAX)),
            (1, 1, 2, 20)
        );
        assert_eq!(json_str_len("chat"), 6);
        assert_eq!(json_str_len("a\"b"), 6);
        // The debug assertions in the builders check the rest.
        message(
            MessageId(u64::MAX),
            "é\n",
            Uid(0),
            Uid(u64::MAX),
            0,
            0,
            "{}",
        );
        ack(MessageId(7), Uid(123), 1);
    }

    #[test]
    fn small_frames() {
        assert_eq!(
            json(&ack(MessageId(1234), Uid(2), 0)),
            serde_json::json!({"type":"ack","id":"1234","to_uid":"2","state":0})
        );
        assert_eq!(
            json(&login_ok(Uid(7), "app", ConnId(17))),
            serde_json::json!({"type":"login","code":200,"message":"ok","data":{"uid":"7","source":"app","fd":17}})
        );
        assert_eq!(
            json(&login_refused(401, "unauthorized")),
            serde_json::json!({"type":"login","code":401,"message":"unauthorized","data":[]})
        );
        assert_eq!(
            json(&error(400, "bad \"x\"\n")),
            serde_json::json!({"type":"error","code":400,"message":"bad \"x\"\n"})
        );
    }
}
