//! The cluster subscriber process, seen from the master: started at launch in cluster mode,
//! its channel read for what other nodes publish to this one, respawned if it dies.

use super::pool::spawn_child;
use crate::ipc::{FrameReader, ToMaster};
use log::{error, info, warn};
use mio::net::UnixStream;
use mio::{Registry as MioRegistry, Token};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

pub const SUBSCRIBER_TOKEN: Token = Token(4);
const SUBSCRIBER_RESPAWN: Duration = Duration::from_millis(500);

/// The cluster subscriber process, respawned if it dies.
pub struct Subscriber {
    exe: PathBuf,
    config_frame: Vec<u8>,
    process: Option<(Child, UnixStream)>,
    out: Vec<u8>,
    reader: FrameReader,
    pub subscribed: bool,
    /// Set when the subscription broke; the next `Ready` triggers a presence resync.
    lost_subscription: bool,
    respawn_at: Option<Instant>,
    /// A subscriber let go while the loop runs, reaped without blocking on later turns.
    zombie: Option<Child>,
}

impl Subscriber {
    pub fn new(exe: PathBuf, config_frame: Vec<u8>) -> Subscriber {
        Subscriber {
            exe,
            config_frame,
            process: None,
            out: Vec::new(),
            reader: FrameReader::default(),
            subscribed: false,
            lost_subscription: false,
            respawn_at: Some(Instant::now()),
            zombie: None,
        }
    }

    pub fn tick(&mut self, reg: &MioRegistry, now: Instant) {
        if self
            .zombie
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
        {
            self.zombie = None;
        }
        if self.process.is_some() || self.respawn_at.is_none_or(|t| t > now) {
            return;
        }
        self.respawn_at = None;
        match spawn_child(&self.exe, &["cluster-subscriber"], reg, SUBSCRIBER_TOKEN) {
            Ok((child, chan)) => {
                self.out = self.config_frame.clone();
                self.reader = FrameReader::default();
                self.process = Some((child, chan));
                self.flush();
            }
            Err(e) => {
                error!("cannot start the cluster subscriber: {e}");
                self.respawn_at = Some(now + SUBSCRIBER_RESPAWN);
            }
        }
    }

    pub fn flush(&mut self) {
        let Some((_, chan)) = self.process.as_mut() else {
            return;
        };
        while !self.out.is_empty() {
            match chan.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    /// Reads what the subscriber sent; on its death, schedules a new one. The flag says the
    /// subscription was (re)established after a loss: presence must be rewritten.
    pub fn on_event(&mut self, reg: &MioRegistry, now: Instant) -> (Vec<String>, bool) {
        let mut payloads = Vec::new();
        let mut resubscribed = false;
        self.flush();
        let Some((_, chan)) = self.process.as_mut() else {
            return (payloads, false);
        };
        let open = self.reader.fill(chan).unwrap_or(false);
        loop {
            match self.reader.next_frame::<ToMaster>() {
                Ok(Some(ToMaster::Cluster(p))) => payloads.push(p),
                Ok(Some(ToMaster::Ready { .. })) => {
                    resubscribed = self.lost_subscription;
                    self.lost_subscription = false;
                    self.subscribed = true;
                    info!("cluster subscriber ready");
                }
                Ok(Some(ToMaster::Unsubscribed)) => {
                    self.subscribed = false;
                    self.lost_subscription = true;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    warn!("cluster subscriber channel: {e}");
                    break;
                }
            }
        }
        if !open {
            warn!("cluster subscriber exited; starting another");
            self.let_go(reg);
            self.lost_subscription = true;
            self.respawn_at = Some(now + SUBSCRIBER_RESPAWN);
        }
        (payloads, resubscribed)
    }

    /// Kills the subscriber without waiting for it (the loop must not block): `tick` reaps it.
    fn let_go(&mut self, reg: &MioRegistry) {
        if let Some((mut child, mut chan)) = self.process.take() {
            let _ = reg.deregister(&mut chan);
            let _ = child.kill();
            self.zombie = Some(child);
        }
        self.subscribed = false;
    }

    /// At shutdown, after the loop: kills the subscriber and waits for it.
    pub fn stop(&mut self, reg: &MioRegistry) {
        self.let_go(reg);
        if let Some(mut child) = self.zombie.take() {
            let _ = child.wait();
        }
    }
}
