//! One child process (a task worker or the cluster subscriber) and the channel to it: started by
//! fork + exec of our own binary with the channel on its stdin/stdout, written without blocking
//! (frames queue until the pipe takes them), read in whole frames, and every failure reported
//! as a `LinkError` for the owner to act on.

use crate::ipc::{FrameReader, IpcError};
use bytes::Bytes;
use mio::net::UnixStream;
use mio::{Interest, Registry};
use std::fmt;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Why a channel to a child stopped working.
#[derive(Debug)]
pub enum LinkError {
    /// Writing to the channel failed (the child is gone or its end is closed).
    Write(io::Error),
    /// Reading failed, or a frame was unreadable (over the cap).
    Read(IpcError),
    /// The child closed its end.
    Closed,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Write(e) => write!(f, "channel write failed: {e}"),
            LinkError::Read(e) => write!(f, "channel read failed: {e}"),
            LinkError::Closed => f.write_str("channel closed"),
        }
    }
}

/// What the worker pool needs of a worker process. The real one is `ChildLink`; the pool's
/// tests use a scripted one.
pub trait Link {
    fn pid(&self) -> u32;
    /// The buffer of frames waiting to be written (encode into it, then `flush`).
    fn out(&mut self) -> &mut Vec<u8>;
    /// Writes what the channel takes now.
    fn flush(&mut self) -> Result<(), LinkError>;
    /// Reads what arrived; whole frames' bodies are appended to `frames`. Err(Closed) once the
    /// child closed its end (after the frames before it).
    fn read(&mut self, frames: &mut Vec<Bytes>) -> Result<(), LinkError>;
    /// How the child ended, once it has (never blocks).
    fn exited(&mut self) -> Option<String>;
    /// Closes our end: a child reading it sees end of file and exits.
    fn close_channel(&mut self);
    fn kill(&mut self);
}

pub struct ChildLink {
    child: Child,
    chan: Option<UnixStream>,
    out: Vec<u8>,
    written: usize,
    reader: FrameReader,
}

impl ChildLink {
    /// Fork + exec of `exe` with `args`; its stdin and stdout are one end of a socket pair, the
    /// other end (non-blocking, registered under `token`) is ours. Every other descriptor of
    /// ours is close-on-exec: the child holds no client socket.
    pub fn spawn(
        exe: &Path,
        args: &[&str],
        reg: &Registry,
        token: mio::Token,
    ) -> io::Result<ChildLink> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let child_in: OwnedFd = theirs.try_clone()?.into();
        let child_out: OwnedFd = theirs.into();
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::from(child_in))
            .stdout(Stdio::from(child_out))
            .stderr(Stdio::inherit())
            .spawn()?;
        ours.set_nonblocking(true)?;
        let mut chan = UnixStream::from_std(ours);
        reg.register(&mut chan, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(ChildLink {
            child,
            chan: Some(chan),
            out: Vec::new(),
            written: 0,
            reader: FrameReader::default(),
        })
    }

    /// Waits for the child to exit (at shutdown only: this blocks).
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }
}

impl Link for ChildLink {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        let Some(chan) = self.chan.as_mut() else {
            return Err(LinkError::Closed);
        };
        while self.written < self.out.len() {
            match chan.write(&self.out[self.written..]) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Write(e)),
            }
        }
        self.out.clear();
        self.written = 0;
        // A burst can leave a large buffer behind; an idle channel gives it back.
        if self.out.capacity() > 4 * 1024 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    fn read(&mut self, frames: &mut Vec<Bytes>) -> Result<(), LinkError> {
        let Some(chan) = self.chan.as_mut() else {
            return Err(LinkError::Closed);
        };
        let open = self.reader.fill(chan).map_err(LinkError::Read);
        loop {
            match self.reader.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return Err(LinkError::Read(e)),
            }
        }
        match open? {
            true => Ok(()),
            false => Err(LinkError::Closed),
        }
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot be waited for: {e}")),
        }
    }

    fn close_channel(&mut self) {
        // Dropping the stream closes it, which also takes it out of the poll.
        self.chan = None;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        self.close_channel();
    }
}
