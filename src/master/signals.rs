//! Signals only set flags and wake the loop through a pipe; the loop acts on them at the top
//! of its next turn, in a fixed order (reap, stop, reload, reopen logs).

use mio::net::UnixStream;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Signals {
    pub wakeup: UnixStream,
    child: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub child: bool,
    pub stop: bool,
    pub reload: bool,
    pub reopen_logs: bool,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let s = Signals {
            wakeup: UnixStream::from_std(reader),
            child: Arc::default(),
            stop: Arc::default(),
            reload: Arc::default(),
            reopen: Arc::default(),
        };
        for (sig, flag) in [
            (SIGCHLD, &s.child),
            (SIGTERM, &s.stop),
            (SIGINT, &s.stop),
            (SIGUSR1, &s.reload),
            (SIGHUP, &s.reopen),
            (SIGUSR2, &s.reopen),
        ] {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, writer.try_clone()?)?;
        }
        Ok(s)
    }

    /// Drains the wake-up pipe and takes the flags that were raised.
    pub fn take(&mut self) -> Pending {
        let mut sink = [0u8; 64];
        while matches!(self.wakeup.read(&mut sink), Ok(n) if n > 0) {}
        Pending {
            child: self.child.swap(false, Ordering::SeqCst),
            stop: self.stop.swap(false, Ordering::SeqCst),
            reload: self.reload.swap(false, Ordering::SeqCst),
            reopen_logs: self.reopen.swap(false, Ordering::SeqCst),
        }
    }
}
