//! Master <-> task worker channel: frames of a u32 little-endian length then a JSON body.
//! The declared length is checked against `MAX_FRAME` before anything is allocated.

use crate::config::Config;
use crate::protocol::{Credentials, MessageRecord, Uid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read};

pub const MAX_FRAME: usize = 64 * 1024 * 1024;
const LEN_BYTES: usize = 4;

pub type TaskId = u64;

/// What the master sends a worker. The first frame on a new channel is always `Config`.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Config(Box<Config>),
    Task { id: TaskId, task: Task },
    ReopenLog,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Task {
    /// Check a login and collect the messages stored for that uid while it was away.
    Login(Credentials),
    SaveToken(TokenRecord),
    Store(Vec<MessageRecord>),
    /// Messages taken for a recipient who left before they were sent: undelivered again.
    Requeue(Vec<u64>),
    /// Takes the messages stored for a uid and not yet delivered (answered with `LoginOk`).
    FetchPending(Uid),
    /// Cluster: connections that came and went on this node, for the Redis presence hashes.
    Presence(Vec<PresenceChange>),
    /// Cluster: publish `payload` to every live node holding `uid` (this one only if
    /// `include_self`); answered with `Routed`.
    Route {
        uid: Uid,
        payload: String,
        include_self: bool,
    },
    /// Cluster: publish `payload` to every node.
    Broadcast(String),
    /// Cluster: the sources `uid` is online with on other live nodes; answered with `Sources`.
    Online(Uid),
    /// Cluster: this node is alive (and its node id is its own); purge nodes that are not.
    Heartbeat,
    /// Cluster: remove what an earlier run of this node left in the presence hashes.
    PurgeSelf,
    /// Cluster: after Redis came back, rewrite this node's presence from scratch (purge, then
    /// these connections), in one task so that no other change interleaves.
    Resync(Vec<PresenceChange>),
}

/// A connection registered (online) or gone (offline) on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceChange {
    pub uid: Uid,
    pub source: String,
    pub fd: u64,
    pub online: bool,
    pub time: u64,
    pub device: Option<String>,
}

/// The most stored messages handed over at once; the rest follow in further batches.
pub const PENDING_PER_LOGIN: usize = 1000;

/// One login record, as the application's login server writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub uid: Uid,
    pub source: String,
    pub token: String,
    pub expires: u64,
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToMaster {
    Ready {
        pid: u32,
    },
    /// The worker cannot serve (for example its store will not open); it exits after this.
    Fatal {
        message: String,
    },
    Done {
        id: TaskId,
        reply: Reply,
    },
    /// From the cluster subscriber: a message published to this node (or to all).
    Cluster(String),
    /// From the cluster subscriber: the subscription was lost (Redis is away); it retries.
    Unsubscribed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The login is good (or, for `FetchPending`, the fetch is done). `pending` were taken
    /// from the store (marked delivered); `store_down` says the message store could not be
    /// read, so stored messages may still wait.
    LoginOk {
        pending: Vec<MessageRecord>,
        store_down: bool,
    },
    LoginRefused {
        code: u16,
        message: String,
    },
    Ok,
    Failed {
        code: u16,
        message: String,
    },
    /// How many nodes a `Route` reached.
    Routed {
        nodes: u32,
    },
    Sources(Vec<String>),
}

#[derive(Debug)]
pub enum IpcError {
    Io(io::Error),
    TooLarge(usize),
    Decode(serde_json::Error),
    Encode(serde_json::Error),
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Io(e) => write!(f, "channel I/O: {e}"),
            IpcError::TooLarge(n) => write!(f, "frame of {n} bytes is over the {MAX_FRAME} cap"),
            IpcError::Decode(e) => write!(f, "undecodable frame: {e}"),
            IpcError::Encode(e) => write!(f, "unencodable frame: {e}"),
        }
    }
}

impl std::error::Error for IpcError {}

impl From<io::Error> for IpcError {
    fn from(e: io::Error) -> Self {
        IpcError::Io(e)
    }
}

/// Appends one frame to `out`. On error `out` is left as it was.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), IpcError> {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    if let Err(e) = serde_json::to_writer(&mut *out, msg) {
        out.truncate(start);
        return Err(IpcError::Encode(e));
    }
    let len = out.len() - start - LEN_BYTES;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(IpcError::TooLarge(len));
    }
    out[start..start + LEN_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Accumulates bytes from a non-blocking channel and yields whole frames.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    scratch: Vec<u8>,
}

/// Bytes read from a channel per system call.
const READ_CHUNK: usize = 64 * 1024;

impl FrameReader {
    /// Reads what the channel holds now. Ok(false) on end of file.
    pub fn fill(&mut self, src: &mut impl Read) -> Result<bool, IpcError> {
        // One scratch buffer per channel, kept: zeroing 64 KiB per call cost more than the
        // JSON of a small answer.
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; READ_CHUNK];
        }
        loop {
            match src.read(&mut self.scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => self.buf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next whole frame, decoded, if one is buffered.
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, IpcError> {
        let avail = &self.buf[self.start..];
        if avail.len() < LEN_BYTES {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > MAX_FRAME {
            return Err(IpcError::TooLarge(len));
        }
        if avail.len() < LEN_BYTES + len {
            self.compact();
            return Ok(None);
        }
        let body = &avail[LEN_BYTES..LEN_BYTES + len];
        let msg = serde_json::from_slice(body).map_err(IpcError::Decode);
        self.start += LEN_BYTES + len;
        msg.map(Some)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.is_empty() && self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::new();
        }
    }
}

/// Blocking read of one frame, for the worker side. Ok(None) on a clean end of file.
pub fn read_frame_blocking<T: for<'de> Deserialize<'de>>(
    src: &mut impl Read,
) -> Result<Option<T>, IpcError> {
    let mut len = [0u8; LEN_BYTES];
    match src.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(IpcError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    src.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(IpcError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut wire = Vec::new();
        for id in 0..3 {
            encode(
                &ToMaster::Done {
                    id,
                    reply: Reply::Ok,
                },
                &mut wire,
            )
            .expect("encode");
        }
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        for piece in wire.chunks(5) {
            reader
                .fill(&mut io::Cursor::new(piece.to_vec()))
                .expect("fill");
            while let Some(ToMaster::Done { id, .. }) = reader.next_frame().expect("frame") {
                got.push(id);
            }
        }
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut reader = FrameReader::default();
        let wire = u32::MAX.to_le_bytes().to_vec();
        reader
            .fill(&mut io::Cursor::new(wire.clone()))
            .expect("fill");
        assert!(matches!(
            reader.next_frame::<ToMaster>(),
            Err(IpcError::TooLarge(_))
        ));
        let r = read_frame_blocking::<ToMaster>(&mut io::Cursor::new(wire));
        assert!(matches!(r, Err(IpcError::TooLarge(_))));
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        let mut wire = 3u32.to_le_bytes().to_vec();
        wire.extend_from_slice(b"{{{");
        let r = read_frame_blocking::<ToMaster>(&mut io::Cursor::new(wire));
        assert!(matches!(r, Err(IpcError::Decode(_))));
    }
}
