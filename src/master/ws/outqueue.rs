//! A connection's outbound queue. Entries are frames shared with other connections (one buffer
//! for every recipient) and remember which message they carry, so that what a slow consumer
//! never got is kept without reading the frames back. Writes gather queued frames into one
//! `writev`. An idle connection's queue holds no allocation.

use crate::master::message::{GroupMessage, Message};
use crate::model::MessageId;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// How many queued frames one `writev` may carry.
const MAX_IOVECS: usize = 64;

/// One frame to write, and what it carries.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Bytes nobody needs to keep (acks, errors, pongs, broadcasts, the upgrade answer).
    Frame(Bytes),
    /// A message that must be kept if it never reaches the socket.
    Message(Rc<Message>),
    /// A kept message handed out again: made undelivered again if it never reaches the socket.
    Kept { id: MessageId, frame: Bytes },
    /// A group message: owed to its recipient (kept for its next login) if it never reaches
    /// the socket.
    Group(Rc<GroupMessage>),
}

impl Outgoing {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Outgoing::Frame(b) | Outgoing::Kept { frame: b, .. } => b,
            Outgoing::Message(m) => &m.frame,
            Outgoing::Group(m) => &m.frame,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Default)]
pub struct OutQueue {
    /// The front entry, kept inline: a single frame in flight needs no allocation.
    head: Option<Outgoing>,
    /// Entries behind the head (empty whenever `head` is None).
    rest: VecDeque<Outgoing>,
    /// Bytes of the head already written.
    head_written: usize,
    /// Bytes of every entry, the written part of the head included.
    queued: usize,
}

impl OutQueue {
    pub fn push(&mut self, entry: Outgoing) {
        self.queued += entry.len();
        if self.head.is_none() {
            self.head = Some(entry);
        } else {
            self.rest.push_back(entry);
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.queued - self.head_written
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Takes every entry not yet started; a frame half written stays, or the stream would
    /// break. Returns them oldest first.
    pub fn take_unstarted(&mut self) -> Vec<Outgoing> {
        let mut taken = Vec::with_capacity(self.rest.len() + 1);
        if self.head_written == 0 {
            taken.extend(self.head.take());
        }
        taken.extend(std::mem::take(&mut self.rest));
        if self.head.is_none() {
            // The head went too: the queue is empty.
            self.queued = 0;
            self.head_written = 0;
        } else {
            self.queued = self.head.as_ref().map_or(0, Outgoing::len);
        }
        taken
    }

    /// Writes until the queue is empty (Ok(true)) or the socket would block (Ok(false)).
    pub fn write_to(&mut self, sink: &mut impl Write) -> io::Result<bool> {
        while let Some(head) = self.head.as_ref() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            slices[0] = IoSlice::new(&head.bytes()[self.head_written..]);
            let mut n = 1;
            for (slot, entry) in slices[1..].iter_mut().zip(self.rest.iter()) {
                *slot = IoSlice::new(entry.bytes());
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
        // An idle connection keeps no ring: the room behind the head is given back.
        if self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
        Ok(true)
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(head) = self.head.as_ref() else {
                return;
            };
            let left = head.len() - self.head_written;
            if written < left {
                self.head_written += written;
                return;
            }
            written -= left;
            self.queued -= head.len();
            self.head_written = 0;
            self.head = self.rest.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frames::text;

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

    fn frame(s: &str) -> Outgoing {
        Outgoing::Frame(text(s.as_bytes()))
    }

    #[test]
    fn partial_writes_resume_in_order() {
        let mut q = OutQueue::default();
        q.push(frame("shared"));
        q.push(frame("two"));
        q.push(frame("shared"));
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
        for f in ["shared", "two", "shared"] {
            expect.extend_from_slice(&text(f.as_bytes()));
        }
        assert_eq!(sink.got, expect);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_half_written_frame_is_never_taken_back() {
        let mut q = OutQueue::default();
        for s in ["aaaa", "bbbb", "cccc"] {
            q.push(frame(s));
        }
        let mut sink = Trickle {
            got: Vec::new(),
            limit: 100,
            cap: 3,
        };
        assert!(!q.write_to(&mut sink).expect("write"));
        let taken = q.take_unstarted();
        assert_eq!(taken.len(), 2, "the two not started");
        assert_eq!(q.len(), text(b"aaaa").len() - 3);
        sink.cap = usize::MAX;
        assert!(q.write_to(&mut sink).expect("write"));
        assert_eq!(sink.got, text(b"aaaa").to_vec());
        // Nothing started: everything is taken.
        q.push(frame("x"));
        q.push(frame("y"));
        assert_eq!(q.take_unstarted().len(), 2);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0, "no bytes counted");
    }

    #[test]
    fn one_frame_in_flight_allocates_nothing_for_the_queue() {
        let mut q = OutQueue::default();
        q.push(frame("only"));
        assert_eq!(q.rest.capacity(), 0);
    }
}
