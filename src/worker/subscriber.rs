//! The cluster subscriber process: holds a Redis pub/sub connection on this node's channel and
//! the broadcast channel, and forwards every message to the master over standard output. It
//! reconnects by itself while Redis is away; a `Ready` frame tells the master it is subscribed.

use super::WorkerError;
use crate::ipc::{self, IpcError, ToMaster};
use crate::store::cluster::{NodeName, BROADCAST_CHANNEL};
use std::io::{self, BufReader, Write};
use std::time::Duration;

const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub fn run() -> Result<(), WorkerError> {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let mut input = BufReader::new(io::stdin().lock());
    let mut out = io::stdout().lock();
    let config = super::handshake(&mut input, &mut out)?;
    let _ = crate::logging::redirect_to(&config.server.log_file);
    crate::logging::init("subscriber", &config.server.log_level);
    let client = redis::Client::open(config.redis.url.as_str())
        .map_err(|e| WorkerError::Store(crate::store::StoreError::Open(e.to_string())))?;
    let timeout = Duration::from_millis(config.redis.timeout_ms);
    let channels = [
        NodeName::from_config(&config).channel(),
        BROADCAST_CHANNEL.to_string(),
    ];
    let mut backoff = Duration::from_millis(50);
    loop {
        match subscribe(&client, timeout, &channels, &mut out) {
            // The master's end is gone: nothing left to serve.
            Err(Failure::Channel(e)) => return Err(WorkerError::Channel(e)),
            Err(Failure::Redis(e)) => {
                log::warn!("cluster subscription lost ({e}); retrying in {backoff:?}");
                if let Err(Failure::Channel(e)) = send(&mut out, &ToMaster::Unsubscribed) {
                    return Err(WorkerError::Channel(e));
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Ok(()) => backoff = Duration::from_millis(50),
        }
    }
}

enum Failure {
    Redis(redis::RedisError),
    Channel(IpcError),
}

fn send(out: &mut impl Write, msg: &ToMaster) -> Result<(), Failure> {
    let mut frame = Vec::new();
    ipc::encode(msg, &mut frame).map_err(Failure::Channel)?;
    out.write_all(&frame)
        .and_then(|_| out.flush())
        .map_err(|e| Failure::Channel(IpcError::Io(e)))
}

fn subscribe(
    client: &redis::Client,
    timeout: Duration,
    channels: &[String],
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut conn = client
        .get_connection_with_timeout(timeout)
        .map_err(Failure::Redis)?;
    let mut pubsub = conn.as_pubsub();
    for channel in channels {
        pubsub.subscribe(channel).map_err(Failure::Redis)?;
    }
    log::info!("subscribed to {}", channels.join(", "));
    send(
        out,
        &ToMaster::Ready {
            pid: std::process::id(),
        },
    )?;
    loop {
        let msg = pubsub.get_message().map_err(Failure::Redis)?;
        // Forwarded as the bytes Redis gave: the master reads them once.
        send(out, &ToMaster::Cluster(msg.get_payload_bytes()))?;
    }
}
