//! The channel between the master and its child processes (task workers, the cluster
//! subscriber): frames of a u32 little-endian length, then a postcard body. Binary, so that a
//! message's content travels as its own bytes (never escaped inside JSON), and a worker reads
//! it borrowed from its frame. The declared length is checked against `MAX_FRAME` before
//! anything is allocated. This module knows the vocabulary of tasks and answers; the records
//! they carry are `model`'s. Each side's first frame is a `hello` with its build id.

pub mod hello;

use crate::config::Config;
use crate::model::{
    ConnId, Credentials, MessageId, NodeSeen, PresenceChange, Source, StoredGroupMessage,
    StoredMessage, TokenRecord, Uid,
};
use crate::protocol::uid_from_raw;
use bytes::{Bytes, BytesMut};
use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read};

mod head;
pub use head::{task_head, TaskHead};

pub const MAX_FRAME: usize = 64 * 1024 * 1024;
const LEN_BYTES: usize = 4;

/// A task's number, unique for the master's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

/// What the master sends a child. The first frame on a new channel, after the hello, is always
/// `Config`.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker<'a> {
    Config(Box<Config>),
    /// A task, encoded once by the master (`encode_task`) and carried here as bytes.
    Task {
        id: TaskId,
        #[serde(borrow)]
        body: &'a [u8],
    },
    ReopenLog,
}

/// A unit of work for a task worker. Borrowed: the master encodes it from its own records, a
/// worker decodes it in place from the frame it read.
#[derive(Debug, Serialize, Deserialize)]
pub enum Task<'a> {
    /// Check a login and take the messages kept for that uid while it was away.
    Login(Credentials),
    SaveToken(TokenRecord),
    Store(#[serde(borrow)] Vec<StoredMessage<'a>>),
    /// Messages taken for `uid` that it did not get: undelivered (or owed) again.
    Requeue {
        uid: Uid,
        ids: Vec<MessageId>,
    },
    /// Take the messages kept for a uid and not yet delivered (answered with `Pending`).
    FetchPending(Uid),
    /// Cluster: connections that came and went on this node, for the Redis presence hashes.
    Presence(Vec<PresenceChange>),
    /// Cluster: publish to every live node holding `uid` (this one only if `include_self`);
    /// answered with `Routed`.
    Route {
        uid: Uid,
        include_self: bool,
        #[serde(borrow)]
        message: ClusterMessage<'a>,
    },
    /// Cluster: publish to every node.
    Broadcast(#[serde(borrow)] ClusterMessage<'a>),
    /// Cluster: the sources `uid` is online with on other live nodes; answered with `Sources`.
    Online(Uid),
    /// Cluster: this node is alive (and its node id is its own); purge nodes that are not.
    Heartbeat,
    /// Cluster: remove what an earlier run of this node left in the presence hashes.
    PurgeSelf,
    /// Cluster: after Redis came back, rewrite this node's presence from scratch (purge, then
    /// these connections), in one task so that no other change interleaves.
    Resync(Vec<PresenceChange>),
    /// Readiness: answer once the token store answers (`Ok`, or the store's failure).
    Ping,
    /// A group message, kept once.
    GroupStore(#[serde(borrow)] StoredGroupMessage<'a>),
    /// `uids` join `group` from message `at` on; answered with `Members`.
    GroupJoin {
        group: &'a str,
        uids: Vec<Uid>,
        at: MessageId,
    },
    /// Members leave `group` (`Some(seen)`: online, had everything up to it); answered with
    /// `Members`.
    GroupLeave {
        group: &'a str,
        leaving: Vec<(Uid, Option<MessageId>)>,
    },
    /// `uid` went offline having had its groups' messages up to these ids.
    GroupSeen {
        uid: Uid,
        #[serde(borrow)]
        seen: Vec<(&'a str, MessageId)>,
    },
    /// Group messages sent to `uid` that never reached it.
    GroupOwed {
        uid: Uid,
        ids: Vec<MessageId>,
    },
    /// Every group and its members; answered with `Groups`.
    GroupLoad,
    /// Forget group messages older than `before`.
    GroupPurge {
        before: MessageId,
    },
    /// Cluster: which of these uids have a connection on a live node; answered with `Online`.
    GroupOnline(Vec<Uid>),
    /// Cluster: a group message this node could not publish to the others: owed to every
    /// member of the group (who joined before it) but `except`, those who had it here.
    GroupUndelivered {
        group: &'a str,
        id: MessageId,
        except: Vec<Uid>,
        /// Only to members whose place already passed it (it came to this node after newer
        /// ones: those online here had it, others' places may have been recorded past it).
        passed_only: bool,
    },
    /// Cluster: this node has a member of each group online (true), or none any more.
    GroupNodes(#[serde(borrow)] Vec<(&'a str, bool)>),
    /// How many messages wait for `uid` (the dashboard's look-up); answered with `Waiting`.
    CountPending(Uid),
    /// Cluster: publish a group message to the other nodes with a member online; answered
    /// with `Routed`.
    GroupRoute {
        group: &'a str,
        #[serde(borrow)]
        message: ClusterMessage<'a>,
    },
}

/// What one node tells another through Redis. On the Redis wire it is JSON (`to_json`), with
/// the frame embedded as raw JSON, so that applications and Lua scripts can read it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClusterMessage<'a> {
    /// Deliver this frame's JSON to every connection of `uid` on the receiving node; `meta`
    /// lets that node keep it if the connection cannot take it.
    Deliver {
        uid: Uid,
        #[serde(borrow)]
        meta: MessageMeta<'a>,
        #[serde(borrow)]
        frame: &'a [u8],
    },
    /// Deliver to every connection of the receiving node, unless it is `origin` itself.
    Broadcast {
        #[serde(borrow)]
        origin: &'a str,
        #[serde(borrow)]
        frame: &'a [u8],
    },
    Kick {
        uid: Uid,
    },
    /// A message was kept for `uid` while it was logging in: take it now.
    Fetch {
        uid: Uid,
    },
    /// A group message sent on node `origin`: every other node delivers it to the members
    /// online there (but `exclude`).
    Group {
        #[serde(borrow)]
        origin: &'a str,
        #[serde(borrow)]
        group: &'a str,
        exclude: Option<Uid>,
        #[serde(borrow)]
        meta: MessageMeta<'a>,
        #[serde(borrow)]
        frame: &'a [u8],
    },
    /// A group's membership changed on node `origin` (`join` true: `uids` joined; false:
    /// they left). `origin` has it in its table already.
    Members {
        #[serde(borrow)]
        origin: &'a str,
        #[serde(borrow)]
        group: &'a str,
        join: bool,
        uids: Vec<Uid>,
    },
    /// `uid` logged in with `source` on another node: close this node's connection `conn`.
    Displace {
        uid: Uid,
        source: Source,
        conn: ConnId,
        same_device: bool,
    },
}

/// What a node needs, beside the frame, to keep a relayed message: `content` is the place of
/// the content's raw JSON in the frame's JSON text (offset, length).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageMeta<'a> {
    pub id: MessageId,
    pub from: Uid,
    pub time: u64,
    #[serde(borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    pub content: Option<(u32, u32)>,
}

/// The JSON form of a `ClusterMessage` (what the Lua scripts publish too), as read.
#[derive(Deserialize)]
struct ClusterWire<'a> {
    t: &'a str,
    /// A string of digits (or a number, from a script).
    #[serde(default, borrow)]
    uid: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    frame: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    origin: Option<&'a str>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default, borrow)]
    fd: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    same_device: Option<bool>,
    #[serde(default, borrow)]
    meta: Option<MessageMeta<'a>>,
    #[serde(default, borrow)]
    group: Option<&'a str>,
    #[serde(default, borrow)]
    exclude: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    op: Option<&'a str>,
    #[serde(default, borrow)]
    uids: Option<Vec<&'a serde_json::value::RawValue>>,
}

/// A cluster message that could not be read.
#[derive(Debug)]
pub struct BadClusterMessage(pub String);

impl<'a> ClusterMessage<'a> {
    /// The JSON published to Redis. The frame's bytes are copied in as they are: they are
    /// JSON already.
    pub fn to_json(&self) -> Vec<u8> {
        let (t, uid, frame, origin) = match self {
            ClusterMessage::Deliver { uid, meta, frame } => {
                let mut out = Vec::with_capacity(160 + frame.len());
                out.extend_from_slice(b"{\"t\":\"deliver\",\"uid\":\"");
                out.extend_from_slice(itoa::Buffer::new().format(uid.0).as_bytes());
                out.extend_from_slice(b"\",\"meta\":");
                // A struct of numbers and one string: writing it cannot fail.
                let _ = serde_json::to_writer(&mut out, meta);
                out.extend_from_slice(b",\"frame\":");
                out.extend_from_slice(frame);
                out.push(b'}');
                return out;
            }
            ClusterMessage::Broadcast { origin, frame } => {
                ("broadcast", None, Some(*frame), Some(*origin))
            }
            ClusterMessage::Group {
                origin,
                group,
                exclude,
                meta,
                frame,
            } => {
                let mut out = Vec::with_capacity(200 + frame.len());
                out.extend_from_slice(b"{\"t\":\"group\",\"origin\":");
                let _ = serde_json::to_writer(&mut out, origin);
                out.extend_from_slice(b",\"group\":");
                let _ = serde_json::to_writer(&mut out, group);
                if let Some(uid) = exclude {
                    out.extend_from_slice(b",\"exclude\":\"");
                    out.extend_from_slice(itoa::Buffer::new().format(uid.0).as_bytes());
                    out.push(b'"');
                }
                out.extend_from_slice(b",\"meta\":");
                let _ = serde_json::to_writer(&mut out, meta);
                out.extend_from_slice(b",\"frame\":");
                out.extend_from_slice(frame);
                out.push(b'}');
                return out;
            }
            ClusterMessage::Members {
                origin,
                group,
                join,
                uids,
            } => {
                let uids: Vec<String> = uids.iter().map(Uid::to_string).collect();
                let op = if *join { "join" } else { "leave" };
                return serde_json::json!({"t": "members", "origin": origin, "op": op, "group": group, "uids": uids})
                    .to_string()
                    .into_bytes();
            }
            ClusterMessage::Kick { uid } => ("kick", Some(*uid), None, None),
            ClusterMessage::Fetch { uid } => ("fetch", Some(*uid), None, None),
            ClusterMessage::Displace {
                uid,
                source,
                conn,
                same_device,
            } => {
                // As the login script of another node publishes it.
                return format!(
                    r#"{{"t":"displace","uid":"{uid}","source":"{source}","fd":{conn},"same_device":{same_device}}}"#
                )
                .into_bytes();
            }
        };
        let mut out = Vec::with_capacity(48 + frame.map_or(0, <[u8]>::len));
        out.extend_from_slice(b"{\"t\":\"");
        out.extend_from_slice(t.as_bytes());
        out.push(b'"');
        if let Some(uid) = uid {
            out.extend_from_slice(b",\"uid\":\"");
            out.extend_from_slice(itoa::Buffer::new().format(uid.0).as_bytes());
            out.push(b'"');
        }
        if let Some(origin) = origin {
            out.extend_from_slice(b",\"origin\":");
            // Node names are `ip:port`; written as a JSON string all the same.
            let _ = serde_json::to_writer(&mut out, origin);
        }
        if let Some(frame) = frame {
            out.extend_from_slice(b",\"frame\":");
            out.extend_from_slice(frame);
        }
        out.push(b'}');
        out
    }

    /// Reads what another node (or a Lua script) published.
    pub fn from_json(bytes: &'a [u8]) -> Result<ClusterMessage<'a>, BadClusterMessage> {
        let bad = |why: &str| BadClusterMessage(why.to_owned());
        let w: ClusterWire<'a> =
            serde_json::from_slice(bytes).map_err(|e| BadClusterMessage(e.to_string()))?;
        let uid = || w.uid.and_then(uid_from_raw).ok_or_else(|| bad("no uid"));
        let frame = || {
            w.frame
                .map(|f| f.get().as_bytes())
                .ok_or_else(|| bad("no frame"))
        };
        Ok(match w.t {
            "deliver" => ClusterMessage::Deliver {
                uid: uid()?,
                meta: w.meta.ok_or_else(|| bad("no meta"))?,
                frame: frame()?,
            },
            "broadcast" => ClusterMessage::Broadcast {
                origin: w.origin.ok_or_else(|| bad("no origin"))?,
                frame: frame()?,
            },
            "kick" => ClusterMessage::Kick { uid: uid()? },
            "group" => ClusterMessage::Group {
                origin: w.origin.ok_or_else(|| bad("no origin"))?,
                group: w.group.ok_or_else(|| bad("no group"))?,
                exclude: w.exclude.and_then(uid_from_raw),
                meta: w.meta.ok_or_else(|| bad("no meta"))?,
                frame: frame()?,
            },
            "members" => ClusterMessage::Members {
                origin: w.origin.ok_or_else(|| bad("no origin"))?,
                group: w.group.ok_or_else(|| bad("no group"))?,
                join: w.op == Some("join"),
                uids: w
                    .uids
                    .unwrap_or_default()
                    .into_iter()
                    .map(|u| uid_from_raw(u).ok_or_else(|| bad("bad uid")))
                    .collect::<Result<_, _>>()?,
            },
            "fetch" => ClusterMessage::Fetch { uid: uid()? },
            "displace" => ClusterMessage::Displace {
                uid: uid()?,
                source: w.source.ok_or_else(|| bad("no source"))?,
                conn: w
                    .fd
                    .and_then(uid_from_raw)
                    .map(|n| ConnId(n.0))
                    .ok_or_else(|| bad("no fd"))?,
                same_device: w.same_device.unwrap_or(false),
            },
            other => return Err(BadClusterMessage(format!("unknown type `{other}`"))),
        })
    }
}

/// The most kept messages handed over at once; the rest follow in further batches.
pub const PENDING_PER_LOGIN: usize = 1000;
/// The most content bytes handed over at once (after the message that reaches it): about what
/// a connection's send queue takes.
pub const PENDING_BYTES: usize = 512 * 1024;

/// A kept message on its way to its recipient, as a whole WebSocket frame (built by the
/// worker that read it, so that the master only queues it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFrame {
    pub id: MessageId,
    pub frame: Vec<u8>,
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginRefusal {
    /// No record for this uid and source, or another token.
    Unauthorized,
    Expired,
}

/// Why a task did not do its work. The doors turn each into an HTTP status or a close code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskFailure {
    /// The store (SQLite, Redis or MySQL) could not be reached or did not answer in time.
    StoreUnavailable,
    /// The store refused the request itself; retrying the same request will not help.
    StoreRefused,
    /// Another live node holds this node's `node_id`.
    NodeIdInUse { node_id: u16, holder: String },
    /// A cluster task reached a worker with no Redis configured.
    NotClustered,
    /// The task's deadline passed before it was answered.
    TimedOut,
    /// Its worker died on every attempt.
    WorkerLost,
    /// The task could not be encoded (over the channel's frame cap).
    TooLarge,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskFailure::StoreUnavailable => f.write_str("store unavailable"),
            TaskFailure::StoreRefused => f.write_str("store refused the request"),
            TaskFailure::NodeIdInUse { node_id, holder } => write!(
                f,
                "node_id {node_id} is in use by the live node {holder}: give each node its own server.node_id"
            ),
            TaskFailure::NotClustered => f.write_str("a cluster task, but Redis is not configured"),
            TaskFailure::TimedOut => f.write_str("task timed out"),
            TaskFailure::WorkerLost => f.write_str("its task worker died on every attempt"),
            TaskFailure::TooLarge => f.write_str("task too large for the channel"),
        }
    }
}

/// What a worker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The login is good (or, for `FetchPending`, the fetch is done). `frames` were taken from
    /// the store (marked delivered); `store_down` says the message store could not be read, so
    /// kept messages may still wait.
    Pending {
        frames: Vec<PendingFrame>,
        store_down: bool,
        /// The take stopped at its limit: more may wait.
        more: bool,
    },
    Refused(LoginRefusal),
    Ok,
    /// A `Store` that the store refused for some rows only: the others were kept.
    PartlyStored {
        refused: u32,
    },
    Failed(TaskFailure),
    /// How many nodes a `Route` reached.
    Routed {
        nodes: u32,
    },
    Sources(Vec<String>),
    /// A group's member count after a change.
    Members(u64),
    /// Every group and its members.
    Groups(Vec<(String, Vec<Uid>)>),
    /// The uids of a `GroupOnline` that are online.
    Online(Vec<Uid>),
    /// Messages waiting for a uid's next login: one-to-one, and group ones.
    Waiting {
        chats: u64,
        groups: u64,
    },
    /// A `Heartbeat`'s view of the live nodes.
    Nodes(Vec<NodeSeen>),
}

/// What a child sends the master.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToMaster<'a> {
    Ready {
        pid: u32,
    },
    /// The child cannot serve (for example its store will not open); it exits after this.
    Fatal {
        message: String,
    },
    Done {
        id: TaskId,
        reply: Reply,
    },
    /// From the cluster subscriber: a message published to this node (or to all), as JSON.
    Cluster(#[serde(borrow)] &'a [u8]),
    /// From the cluster subscriber: the subscription was lost (Redis is away); it retries.
    Unsubscribed,
}

#[derive(Debug)]
pub enum IpcError {
    Io(io::Error),
    TooLarge(usize),
    Decode(postcard::Error),
    Encode(postcard::Error),
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

/// Appends postcard output to a Vec the caller keeps (postcard's own flavors take theirs).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends one frame to `out`. On error `out` is left as it was.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), IpcError> {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    if let Err(e) = postcard::serialize_with_flavor::<T, _, _>(msg, AppendTo(out)) {
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

/// A task's body, encoded once; the pool keeps it (not the records it came from) until the
/// task is answered, and sends the same bytes again if its worker dies.
pub fn encode_task(task: &Task<'_>) -> Result<Bytes, IpcError> {
    encode_task_sized(task, 0)
}

/// As `encode_task`, with room for `size_hint` bytes from the start (a batch of messages:
/// one allocation instead of a string of doublings).
pub fn encode_task_sized(task: &Task<'_>, size_hint: usize) -> Result<Bytes, IpcError> {
    let mut body = Vec::with_capacity(size_hint);
    postcard::serialize_with_flavor::<_, _, _>(task, AppendTo(&mut body))
        .map_err(IpcError::Encode)?;
    if body.len() > MAX_FRAME - 64 {
        return Err(IpcError::TooLarge(body.len()));
    }
    Ok(Bytes::from(body))
}

pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, IpcError> {
    postcard::from_bytes(body).map_err(IpcError::Decode)
}

/// Accumulates bytes from a non-blocking channel and yields whole frames' bodies, which the
/// caller decodes (borrowed) when it is ready for them.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
    /// Kept for the channel's life: `Read` needs initialised memory, and zeroing a fresh
    /// 64 KiB for every read cost more than decoding a small answer.
    scratch: Vec<u8>,
}

/// Bytes read from a channel per system call.
const READ_CHUNK: usize = 64 * 1024;

impl FrameReader {
    /// Reads what the channel holds now. Ok(false) on end of file.
    pub fn fill(&mut self, src: &mut impl Read) -> Result<bool, IpcError> {
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
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

    /// The next whole frame's body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, IpcError> {
        if self.buf.len() < LEN_BYTES {
            self.shrink_when_idle();
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(IpcError::TooLarge(len));
        }
        if self.buf.len() < LEN_BYTES + len {
            return Ok(None);
        }
        let _ = self.buf.split_to(LEN_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// A burst can leave a large buffer behind; an idle channel gives it back.
    fn shrink_when_idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = BytesMut::new();
        }
    }
}

/// What the master sends every new child: its hello, then the resolved configuration.
pub fn child_greeting(config: &Config) -> Result<Vec<u8>, IpcError> {
    let mut out = Vec::new();
    hello::encode(&mut out);
    encode(&ToWorker::Config(Box::new(config.clone())), &mut out)?;
    Ok(out)
}

/// Blocking read of one frame into `body` (for a child process). Ok(false) on a clean end of
/// file.
pub fn read_frame_blocking(src: &mut impl Read, body: &mut Vec<u8>) -> Result<bool, IpcError> {
    let mut len = [0u8; LEN_BYTES];
    match src.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(IpcError::TooLarge(len));
    }
    body.clear();
    body.resize(len, 0);
    src.read_exact(body)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
