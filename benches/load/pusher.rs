//! The back end's side: UDP pushes from the coordinator, each answered by one reply datagram,
//! with a bound on how many are in flight so neither side's socket buffer overflows.

use crate::common::SECRET;
use crate::control::now_ns;
use nix::sys::socket::{recv, setsockopt, sockopt, MsgFlags};
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How long a push may wait for its reply before it counts as unanswered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Pusher {
    sock: UdpSocket,
    target: SocketAddr,
    /// The datagram being built; reused.
    buf: String,
    reply: [u8; 2048],
    pub in_flight: usize,
    pub sent: u64,
    /// Replies with `"code":0`.
    pub ok: u64,
    /// Replies that were errors.
    pub refused: u64,
    /// Pushes whose reply did not come within `REPLY_TIMEOUT`.
    pub unanswered: u64,
}

impl Pusher {
    pub fn new(udp_port: u16) -> Pusher {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        sock.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("UDP read timeout");
        // Replies come in bursts; the default buffer would drop some.
        let _ = setsockopt(&sock, sockopt::RcvBuf, &(4 << 20));
        Pusher {
            sock,
            target: SocketAddr::from(([127, 0, 0, 1], udp_port)),
            buf: String::with_capacity(256),
            reply: [0; 2048],
            in_flight: 0,
            sent: 0,
            ok: 0,
            refused: 0,
            unanswered: 0,
        }
    }

    /// A `to_uid` push carrying `seq` and its send time, sent once fewer than `window` are in
    /// flight.
    pub fn push_to_uid(&mut self, uid: u64, seq: u64, window: usize) {
        self.wait_window(window);
        let t = now_ns();
        self.buf.clear();
        let _ = write!(
            self.buf,
            "{{\"sk\":\"{SECRET}\",\"means\":\"to_uid\",\"data\":{{\"to_uid\":\"{uid}\",\"type\":\"chat\",\
             \"uid\":\"0\",\"content\":{{\"seq\":{seq},\"t\":{t}}}}}}}"
        );
        self.send();
    }

    /// A broadcast to every connection carrying `seq` and its send time, which it returns.
    pub fn broadcast(&mut self, seq: u64, window: usize) -> u64 {
        self.wait_window(window);
        let t = now_ns();
        self.buf.clear();
        let _ = write!(
            self.buf,
            "{{\"sk\":\"{SECRET}\",\"means\":\"broadcast\",\"data\":{{\"type\":\"notice\",\
             \"content\":{{\"seq\":{seq},\"t\":{t}}}}}}}"
        );
        self.send();
        t
    }

    /// A push to group `group`, with the broadcast's content.
    pub fn push_to_group(&mut self, group: &str, seq: u64, window: usize) -> u64 {
        self.wait_window(window);
        let t = now_ns();
        self.buf.clear();
        let _ = write!(
            self.buf,
            "{{\"sk\":\"{SECRET}\",\"means\":\"to_group\",\"data\":{{\"group\":\"{group}\",\
             \"type\":\"notice\",\"content\":{{\"seq\":{seq},\"t\":{t}}}}}}}"
        );
        self.send();
        t
    }

    /// Puts `uids` in `group` (in datagrams of 2,000 uids) and waits for the answers.
    pub fn join_group(&mut self, group: &str, uids: std::ops::RangeInclusive<u64>) {
        let uids: Vec<u64> = uids.collect();
        for chunk in uids.chunks(2000) {
            self.buf.clear();
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let _ = write!(
                self.buf,
                "{{\"sk\":\"{SECRET}\",\"means\":\"join_group\",\"data\":{{\"group\":\"{group}\",\
                 \"uids\":[{}]}}}}",
                list.join(",")
            );
            self.send();
            self.drain();
        }
    }

    fn wait_window(&mut self, window: usize) {
        if self.in_flight >= window.max(1) {
            // Block for one reply, then take every other one already there: the window refills
            // in bursts instead of one sleep and wake-up per push.
            self.wait_reply();
            self.take_replies();
        }
        while self.in_flight >= window.max(1) {
            self.wait_reply();
        }
    }

    fn send(&mut self) {
        self.sock
            .send_to(self.buf.as_bytes(), self.target)
            .expect("send a push");
        self.sent += 1;
        self.in_flight += 1;
    }

    /// Takes the replies that have already arrived, without waiting.
    pub fn take_replies(&mut self) {
        while self.in_flight > 0 {
            match recv(
                self.sock.as_raw_fd(),
                &mut self.reply,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => self.count(n),
                Err(_) => return,
            }
        }
    }

    /// Waits for every push in flight to be answered (or to time out).
    pub fn drain(&mut self) {
        while self.in_flight > 0 {
            self.wait_reply();
        }
    }

    fn wait_reply(&mut self) {
        match self.sock.recv(&mut self.reply) {
            Ok(n) => self.count(n),
            Err(_) => {
                // Nothing for REPLY_TIMEOUT: whatever is in flight is not going to be answered.
                self.unanswered += self.in_flight as u64;
                self.in_flight = 0;
            }
        }
    }

    fn count(&mut self, n: usize) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.reply[..n].starts_with(b"{\"code\":0") {
            self.ok += 1;
        } else {
            self.refused += 1;
            if self.refused <= 5 {
                eprintln!(
                    "load: push refused: {}",
                    String::from_utf8_lossy(&self.reply[..n])
                );
            }
        }
    }
}
