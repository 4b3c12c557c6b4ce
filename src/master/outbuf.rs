//! A connection's outbound queue of encoded frames. A frame for many recipients is encoded
//! once and shared (`Rc`); writes gather several queued frames into one `writev`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// How many queued frames one `writev` may carry.
const MAX_IOVECS: usize = 64;

pub type SharedFrame = Rc<[u8]>;

/// Encodes `payload` once as an unmasked, final server frame of the given kind.
pub fn encode_frame(payload: &[u8], opcode: OpCode) -> SharedFrame {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(header.len(payload.len() as u64) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out.into()
}

/// The payload of an unmasked server frame made by `encode_frame`.
pub fn frame_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or(&[])
}

pub fn text_frame(payload: &str) -> SharedFrame {
    encode_frame(payload.as_bytes(), OpCode::Data(Data::Text))
}

#[derive(Default)]
pub struct OutQueue {
    chunks: VecDeque<SharedFrame>,
    /// Bytes of the first chunk already written.
    head_written: usize,
    queued: usize,
}

impl OutQueue {
    pub fn push(&mut self, chunk: SharedFrame) {
        self.queued += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.queued - self.head_written
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Drops everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.head_written = 0;
        self.queued = 0;
    }

    /// Drops every frame not yet started; a frame half written stays, or the stream would break.
    /// Returns what was dropped, oldest first.
    pub fn clear_unstarted(&mut self) -> Vec<SharedFrame> {
        let keep = if self.head_written > 0 { 1 } else { 0 };
        let dropped: Vec<SharedFrame> = self.chunks.drain(keep..).collect();
        self.queued -= dropped.iter().map(|c| c.len()).sum::<usize>();
        dropped
    }

    /// Writes until the queue is empty (Ok(true)) or the socket would block (Ok(false)).
    pub fn write_to(&mut self, sink: &mut impl Write) -> io::Result<bool> {
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                slices[i] = IoSlice::new(if i == 0 {
                    &chunk[self.head_written..]
                } else {
                    chunk
                });
                n += 1;
            }
            match sink.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Give back a large ring after a burst, so that idle connections stay small.
        if self.chunks.capacity() > 64 {
            self.chunks = VecDeque::new();
        }
        Ok(true)
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(head) = self.chunks.front() else {
                return;
            };
            let left = head.len() - self.head_written;
            if written >= left {
                written -= left;
                self.queued -= head.len();
                self.head_written = 0;
                self.chunks.pop_front();
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `limit` bytes per call, then blocks once it has taken `cap`.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
        cap: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.got.len() >= self.cap {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.limit).min(self.cap - self.got.len());
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn frame_headers_follow_rfc6455_lengths() {
        assert_eq!(&text_frame("hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = text_frame(&"x".repeat(300));
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        let big = text_frame(&"x".repeat(70_000));
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(big.len(), 10 + 70_000);
    }

    #[test]
    fn partial_writes_resume_in_order() {
        let mut q = OutQueue::default();
        let shared = text_frame("shared");
        q.push(shared.clone());
        q.push(text_frame("two"));
        q.push(shared);
        let total = q.len();
        let mut sink = Trickle {
            got: Vec::new(),
            limit: 3,
            cap: 7,
        };
        assert!(!q.write_to(&mut sink).expect("write"));
        assert_eq!(q.len(), total - 7);
        sink.cap = usize::MAX;
        assert!(q.write_to(&mut sink).expect("write"));
        let mut expect = Vec::new();
        for f in [
            text_frame("shared"),
            text_frame("two"),
            text_frame("shared"),
        ] {
            expect.extend_from_slice(&f);
        }
        assert_eq!(sink.got, expect);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }
}
