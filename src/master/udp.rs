//! The UDP push port: one datagram in, one reply datagram out. The source address is checked
//! before any parsing, so a flood of foreign datagrams costs a lookup each.

use super::cluster::ReplyTo;
use super::http::error_body;
use super::push::{parse_push, PushError};
use super::routing::PushOutcome;
use super::signature;
use super::Master;
use crate::ids::unix_now;
use log::debug;
use std::io;
use std::time::Instant;

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

    pub(super) fn on_udp_readable(&mut self, now: Instant) {
        loop {
            let Some(sockets) = self.sockets.as_ref() else {
                return;
            };
            let (len, from) = match sockets.udp.recv_from(&mut self.udp_buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("UDP receive failed: {e}");
                    return;
                }
            };
            let reply = if !self.push_limit.allow(from.ip(), now) {
                self.stats.refused_push_rate += 1;
                error_body(429, "too many pushes from this address")
            } else if len > self.config.server.max_message_size {
                error_body(413, "datagram too large")
            } else {
                let secret = self.config.push_secret(from.ip()).map(str::to_owned);
                let datagram = self.udp_buf[..len].to_vec();
                let parsed = match self.authenticate_datagram(&datagram, secret.as_deref()) {
                    Ok((body, presented)) => parse_push(body, secret.as_deref(), presented),
                    Err(e) => Err(e),
                };
                match parsed {
                    Ok(push) => match self.execute_push(push, ReplyTo::Udp(from), now) {
                        PushOutcome::Now { body, .. } => body,
                        // Answered once the other nodes have.
                        PushOutcome::Later => continue,
                    },
                    Err(e) => error_body(e.code, &e.msg),
                }
            };
            if let Some(sockets) = self.sockets.as_ref() {
                // A full send buffer drops the reply, never blocks the loop.
                let _ = sockets.udp.send_to(reply.as_bytes(), from);
            }
        }
    }
}
