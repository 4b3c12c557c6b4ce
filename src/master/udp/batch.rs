//! Datagrams in and replies out, many per system call (`recvmmsg`, `sendmmsg`): under load one
//! wakeup reads a burst of pushes and one call answers them all, instead of two system calls
//! (and often two wakeups of the pusher) per push.

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::RawFd;

/// Datagrams read per call. A reply batch is never larger.
pub const BATCH: usize = 64;

/// One datagram of the last batch read.
#[derive(Clone, Copy)]
pub struct Datagram {
    slot: usize,
    len: usize,
    pub from: SocketAddr,
    /// Longer than a slot (`max_message_size`): only its beginning was kept.
    pub truncated: bool,
}

pub struct UdpBatch {
    /// `BATCH` slots of `slot` bytes; a datagram lands in its own slot.
    slot: usize,
    buf: Vec<u8>,
    received: Vec<Datagram>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    /// Separate: `sendmmsg` points its headers at our addresses, `recvmmsg` needs them
    /// pointing at the storage `preallocate` made.
    send_headers: MultiHeaders<SockaddrStorage>,
    reply_bytes: Vec<u8>,
    replies: Vec<(Range<usize>, SockaddrStorage)>,
}

impl UdpBatch {
    /// `max_datagram`: the longest datagram accepted; a longer one is marked truncated.
    pub fn new(max_datagram: usize) -> UdpBatch {
        // One byte more than accepted, so that "exactly at the limit" is not truncation.
        let slot = (max_datagram + 1).min(65_536);
        UdpBatch {
            slot,
            buf: vec![0; slot * BATCH],
            received: Vec::with_capacity(BATCH),
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            reply_bytes: Vec::new(),
            replies: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what is waiting, up to `BATCH` datagrams, and says how many that was: fewer than
    /// `BATCH` means the socket was drained (0: it had nothing).
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received.clear();
        let mut slots: Vec<[IoSliceMut<'_>; 1]> = self
            .buf
            .chunks_mut(self.slot)
            .map(|s| [IoSliceMut::new(s)])
            .collect();
        // EINTR comes back as `Interrupted`: the caller calls again.
        let results = match recvmmsg(
            fd,
            &mut self.recv_headers,
            slots.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut read = 0;
        for msg in results {
            read += 1;
            // A datagram from an address family we cannot answer is skipped.
            let Some(from) = msg.address.as_ref().and_then(socket_addr) else {
                continue;
            };
            self.received.push(Datagram {
                slot: read - 1,
                len: msg.bytes,
                from,
                truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
            });
        }
        Ok(read)
    }

    /// The datagrams of the last `receive`.
    pub fn datagrams(&self) -> &[Datagram] {
        &self.received
    }

    /// The bytes of the `i`-th datagram of the last `receive`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let d = &self.received[i];
        let start = d.slot * self.slot;
        &self.buf[start..start + d.len.min(self.slot)]
    }

    /// Queues a reply datagram; `send_replies` sends the queue.
    pub fn queue_reply(&mut self, to: SocketAddr, body: &[u8]) {
        let start = self.reply_bytes.len();
        self.reply_bytes.extend_from_slice(body);
        self.replies
            .push((start..self.reply_bytes.len(), SockaddrStorage::from(to)));
    }

    /// Sends every queued reply, `BATCH` per call. A full socket buffer drops the rest: the
    /// loop never waits for a pusher that does not read its replies.
    pub fn send_replies(&mut self, fd: RawFd) {
        let no_control: [ControlMessage<'_>; 0] = [];
        let mut start = 0;
        while start < self.replies.len() {
            let end = (start + BATCH).min(self.replies.len());
            let slices: Vec<[IoSlice<'_>; 1]> = self.replies[start..end]
                .iter()
                .map(|(r, _)| [IoSlice::new(&self.reply_bytes[r.clone()])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = self.replies[start..end]
                .iter()
                .map(|(_, a)| Some(*a))
                .collect();
            match sendmmsg(
                fd,
                &mut self.send_headers,
                slices.iter(),
                &addrs,
                no_control,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(sent) => start += sent.count().max(1),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                // This one reply cannot go (say, an unreachable address): skip it.
                Err(_) => start += 1,
            }
        }
        self.replies.clear();
        self.reply_bytes.clear();
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_burst_is_read_and_answered_in_batches() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = server.local_addr().expect("addr");
        for i in 0..100u32 {
            client.send_to(&i.to_le_bytes(), to).expect("send");
        }
        client.send_to(&[7u8; 20], to).expect("send");
        let mut batch = UdpBatch::new(16);
        let mut seen = Vec::new();
        let mut truncated = 0;
        while batch.receive(server.as_raw_fd()).expect("receive") > 0 {
            for i in 0..batch.datagrams().len() {
                let d = batch.datagrams()[i];
                assert_eq!(d.from, client.local_addr().expect("addr"));
                if d.truncated {
                    truncated += 1;
                    assert_eq!(batch.payload(i).len(), 17);
                    continue;
                }
                let p = batch.payload(i);
                seen.push(u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
                let reply = [p, b"!"].concat();
                batch.queue_reply(d.from, &reply);
            }
            batch.send_replies(server.as_raw_fd());
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(truncated, 1);
        let mut buf = [0u8; 16];
        for i in 0..100u32 {
            let (n, _) = client.recv_from(&mut buf).expect("reply");
            assert_eq!(&buf[..n], [&i.to_le_bytes()[..], b"!"].concat());
        }
    }
}
