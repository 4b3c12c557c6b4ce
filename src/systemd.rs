//! What systemd hears from the master under `Type=notify`: READY=1 once every socket and worker
//! is up, RELOADING=1 then READY=1 around a reload, STOPPING=1 when it stops. Nothing is sent
//! when `NOTIFY_SOCKET` is not set. Through the `sd-notify` crate: small, libc only, kept up.
//! A datagram to the notify socket is a local send of a few bytes, a handful per run.

use sd_notify::NotifyState;

pub fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

pub fn reloading(status: &str) {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status(status)];
    // Required with Type=notify-reload, harmless otherwise.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {e}");
    }
}
