//! The UDP push port: one datagram in, one reply datagram out (read and answered in batches,
//! see `udp_batch`). The source address is checked before any parsing, so a flood of foreign
//! datagrams costs a lookup each.

use super::cluster::ReplyTo;
use super::http::error_body;
use super::push::{parse_push, PushError};
use super::routing::PushOutcome;
use super::signature;
use super::udp_batch::{Datagram, BATCH};
use super::Master;
use crate::ids::unix_now;
use log::debug;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Datagram batches handled per loop turn before the loop writes to its clients.
const BATCHES_PER_TURN: usize = 4;

impl Master {
    /// The push body of a datagram, and the secret it proved it knows (a valid signature), or
    /// None when it relies on the `sk` inside. Refused: a bad or replayed signature, or an
    /// unsigned datagram when signatures are required.
    fn authenticate_datagram<'a>(
        &mut self,
        datagram: &'a [u8],
        secret: Option<&'a str>,
    ) -> Result<(&'a [u8], Option<&'a str>), PushError> {
        let refused = |msg: &str| PushError {
            code: 401,
            msg: msg.into(),
        };
        match signature::split_datagram(datagram) {
            Some(Ok(signed)) => {
                let secret = secret.ok_or_else(|| refused("address not allowed"))?;
                self.verifier
                    .verify(
                        secret,
                        signed.timestamp,
                        &signed.signature,
                        signed.body,
                        unix_now(),
                    )
                    .map_err(|e| refused(e.message()))?;
                Ok((signed.body, Some(secret)))
            }
            Some(Err(e)) => Err(refused(e.message())),
            None if self.config.push.require_signature && secret.is_some() => {
                Err(refused("signature required"))
            }
            None => Ok((datagram, None)),
        }
    }

    /// Reads and answers datagrams, at most `BATCHES_PER_TURN` batches: a pusher that keeps
    /// the socket full must not hold back the loop's writes to clients (their latency). What
    /// is left waits for the next turn, which then does not sleep (`udp_backlog`).
    pub(super) fn on_udp_readable(&mut self, now: Instant) {
        self.udp_backlog = false;
        let Some(mut batch) = self.udp_batch.take() else {
            return;
        };
        let mut batches = 0;
        while let Some(fd) = self.sockets.as_ref().map(|s| s.udp.as_raw_fd()) {
            let read = match batch.receive(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("UDP receive failed: {e}");
                    break;
                }
            };
            for i in 0..batch.datagrams().len() {
                let datagram = batch.datagrams()[i];
                if let Some(reply) = self.answer_datagram(batch.payload(i), &datagram, now) {
                    batch.queue_reply(datagram.from, reply.as_bytes());
                }
            }
            batch.send_replies(fd);
            // Fewer than a full batch: the socket is drained.
            if read < BATCH {
                break;
            }
            batches += 1;
            if batches == BATCHES_PER_TURN {
                self.udp_backlog = true;
                break;
            }
        }
        self.udp_batch = Some(batch);
    }

    /// The reply to one datagram, or None when it comes later (a cluster-wide push).
    fn answer_datagram(
        &mut self,
        payload: &[u8],
        datagram: &Datagram,
        now: Instant,
    ) -> Option<String> {
        let from = datagram.from;
        if !self.push_limit.allow(from.ip(), now) {
            self.stats.refused_push_rate += 1;
            return Some(error_body(429, "too many pushes from this address"));
        }
        if datagram.truncated || payload.len() > self.config.server.max_message_size {
            return Some(error_body(413, "datagram too large"));
        }
        let secret = self.config.push_secret(from.ip()).map(str::to_owned);
        let parsed = match self.authenticate_datagram(payload, secret.as_deref()) {
            Ok((body, presented)) => parse_push(body, secret.as_deref(), presented),
            Err(e) => Err(e),
        };
        match parsed {
            Ok(push) => match self.execute_push(push, ReplyTo::Udp(from), now) {
                PushOutcome::Now { body, .. } => Some(body),
                PushOutcome::Later => None,
            },
            Err(e) => Some(error_body(e.code, &e.msg)),
        }
    }
}
