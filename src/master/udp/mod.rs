//! The UDP push door: datagrams read and their replies sent in batches (`recvmmsg` /
//! `sendmmsg`, see `batch`), at most a few batches per loop turn so that a pusher that keeps
//! the socket full never holds back the loop's writes to clients. What a datagram means is the
//! caller's: it hands `serve` the function that answers one.

mod batch;

use batch::{UdpBatch, BATCH};
use log::debug;
use mio::net::UdpSocket;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Datagram batches handled per loop turn before the loop writes to its clients.
const BATCHES_PER_TURN: usize = 4;

/// One datagram as the door read it.
pub struct Datagram<'a> {
    pub from: SocketAddr,
    pub payload: &'a [u8],
    /// Longer than the largest accepted: only its beginning was kept.
    pub truncated: bool,
}

pub struct UdpDoor {
    socket: UdpSocket,
    /// Taken while a batch is served (the answers need the socket too).
    batch: UdpBatch,
}

impl UdpDoor {
    pub fn new(socket: UdpSocket, max_datagram: usize) -> UdpDoor {
        UdpDoor {
            socket,
            batch: UdpBatch::new(max_datagram),
        }
    }

    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// Reads and answers datagrams, at most `BATCHES_PER_TURN` batches; `answer` gives the reply
    /// to one (None: it comes later, through `send_to`). True when the socket may still hold
    /// datagrams: the next loop turn must not sleep.
    pub fn serve(&mut self, mut answer: impl FnMut(Datagram<'_>) -> Option<String>) -> bool {
        let fd = self.socket.as_raw_fd();
        let mut batches = 0;
        loop {
            let read = match self.batch.receive(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("UDP receive failed: {e}");
                    return false;
                }
            };
            for i in 0..self.batch.datagrams().len() {
                let d = self.batch.datagrams()[i];
                let reply = answer(Datagram {
                    from: d.from,
                    payload: self.batch.payload(i),
                    truncated: d.truncated,
                });
                if let Some(reply) = reply {
                    self.batch.queue_reply(d.from, fit(&reply).as_bytes());
                }
            }
            self.batch.send_replies(fd);
            // Fewer than a full batch: the socket is drained.
            if read < BATCH {
                return false;
            }
            batches += 1;
            if batches == BATCHES_PER_TURN {
                return true;
            }
        }
    }

    /// A reply that was not ready when its datagram was served.
    pub fn send_to(&self, to: SocketAddr, body: &str) {
        if let Err(e) = self.socket.send_to(fit(body).as_bytes(), to) {
            debug!("UDP reply to {to} failed: {e}");
        }
    }
}

/// The longest reply one datagram carries (an IPv4 UDP payload is at most 65,507 bytes).
const MAX_REPLY: usize = 65_000;

/// A reply that fits in a datagram: a longer one (the members of a large group) is replaced
/// by a 413 that says where the whole answer can be had.
fn fit(reply: &str) -> std::borrow::Cow<'_, str> {
    if reply.len() <= MAX_REPLY {
        return std::borrow::Cow::Borrowed(reply);
    }
    std::borrow::Cow::Owned(crate::master::http::error_body(
        413,
        "the reply does not fit in a datagram: ask with POST /api/push",
    ))
}
