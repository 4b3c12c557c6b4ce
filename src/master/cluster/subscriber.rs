//! The cluster subscriber process, seen from the master: started in cluster mode, its channel
//! read for what other nodes publish to this one, respawned if it dies.

use crate::ipc::{self, ToMaster};
use crate::master::child::{ChildLink, Link, LinkError};
use crate::master::token::Token;
use bytes::Bytes;
use log::{error, info, warn};
use mio::Registry;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RESPAWN_AFTER: Duration = Duration::from_millis(500);

/// What the subscriber reported since the last read.
#[derive(Default)]
pub struct Inbound {
    /// Messages published to this node, as the JSON Redis carried (each a frame body of ours).
    pub messages: Vec<Bytes>,
    /// The subscription was re-established after a loss: presence must be rewritten.
    pub resubscribed: bool,
    /// The subscription was lost: what is published until it is back is not heard here.
    pub lost: bool,
}

pub struct Subscriber {
    exe: PathBuf,
    config_frame: Vec<u8>,
    link: Option<ChildLink>,
    subscribed: bool,
    /// Set when the subscription broke; the next `Ready` asks for a presence rewrite.
    lost_subscription: bool,
    /// How often a subscription was lost (for the metrics).
    losses: u64,
    respawn_at: Option<Instant>,
    /// A subscriber let go, reaped without blocking on later turns.
    zombie: Option<ChildLink>,
}

impl Subscriber {
    pub fn new(exe: PathBuf, config_frame: Vec<u8>) -> Subscriber {
        Subscriber {
            exe,
            config_frame,
            link: None,
            subscribed: false,
            lost_subscription: false,
            losses: 0,
            respawn_at: Some(Instant::now()),
            zombie: None,
        }
    }

    pub fn subscribed(&self) -> bool {
        self.subscribed
    }

    pub fn losses(&self) -> u64 {
        self.losses
    }

    /// Starts (or restarts) the process when due; reaps a dead one.
    pub fn tick(&mut self, reg: &Registry, now: Instant) {
        if self.zombie.as_mut().is_some_and(|z| z.exited().is_some()) {
            self.zombie = None;
        }
        if self.link.is_some() || self.respawn_at.is_none_or(|t| t > now) {
            return;
        }
        self.respawn_at = None;
        match ChildLink::spawn(
            &self.exe,
            &["cluster-subscriber"],
            reg,
            Token::Subscriber.into(),
        ) {
            Ok(mut link) => {
                link.out().extend_from_slice(&self.config_frame);
                if let Err(e) = link.flush() {
                    warn!("cluster subscriber: {e}");
                }
                self.link = Some(link);
            }
            Err(e) => {
                error!("cannot start the cluster subscriber: {e}");
                self.respawn_at = Some(now + RESPAWN_AFTER);
            }
        }
    }

    /// Reads what the subscriber sent; on its death, schedules a new one.
    pub fn on_event(&mut self, now: Instant) -> Inbound {
        let mut inbound = Inbound::default();
        let Some(link) = self.link.as_mut() else {
            return inbound;
        };
        let mut frames = Vec::new();
        let outcome = link.flush().and_then(|()| link.read(&mut frames));
        let mut other_build = None;
        for frame in frames {
            if ipc::hello::is_hello(&frame) {
                other_build = other_build.or(ipc::hello::check(&frame).err());
                continue;
            }
            match ipc::decode::<ToMaster>(&frame) {
                Ok(ToMaster::Cluster(payload)) => {
                    inbound.messages.push(frame.slice_ref(payload));
                }
                Ok(ToMaster::Ready { .. }) => {
                    inbound.resubscribed |= self.lost_subscription;
                    self.lost_subscription = false;
                    self.subscribed = true;
                    info!("cluster subscriber ready");
                }
                Ok(ToMaster::Unsubscribed) => {
                    self.losses += u64::from(self.subscribed);
                    self.subscribed = false;
                    self.lost_subscription = true;
                    inbound.lost = true;
                }
                Ok(_) => {}
                Err(e) => warn!("cluster subscriber sent an unreadable frame: {e}"),
            }
        }
        if let Some(e) = other_build {
            // Its binary was replaced by an incompatible build: tried again later, as a death.
            error!("cluster subscriber refused: {e}; restart the server to run the new build");
            self.let_go();
            self.lost_subscription = true;
            inbound.lost = true;
            self.respawn_at = Some(now + RESPAWN_AFTER);
        } else if let Err(e) = outcome {
            match e {
                LinkError::Closed => warn!("cluster subscriber exited; starting another"),
                e => warn!("cluster subscriber: {e}; starting another"),
            }
            self.let_go();
            self.lost_subscription = true;
            inbound.lost = true;
            self.respawn_at = Some(now + RESPAWN_AFTER);
        }
        inbound
    }

    /// Kills the subscriber without waiting for it (the loop must not block): `tick` reaps it.
    fn let_go(&mut self) {
        self.losses += u64::from(self.subscribed);
        if let Some(mut link) = self.link.take() {
            link.kill();
            self.zombie = Some(link);
        }
        self.subscribed = false;
    }

    /// At shutdown, after the loop: kills the subscriber and waits for it.
    pub fn stop(&mut self) {
        self.let_go();
        if let Some(mut z) = self.zombie.take() {
            z.wait();
        }
    }
}
