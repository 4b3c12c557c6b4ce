//! Push requests from application back ends (a UDP datagram or the body of `POST /api/push`):
//! parsed and authenticated here, borrowed from the request's own bytes. The frame a recipient
//! gets is the pusher's `data` text with `id` (and `time`) spliced in, written straight into
//! its WebSocket framing; the kept fields are ranges of that frame.

use super::frames::{digits, FrameBuilder};
use super::uid_from_raw;
use crate::model::{ConnId, GroupName, MessageId, Uid};
use crate::secret::same_secret;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

#[derive(Debug, PartialEq)]
pub enum Means {
    ToUid(Uid),
    /// No uid twice, in the pusher's order. Empty: every online user.
    ToUids(Vec<Uid>),
    Broadcast,
    /// No connection twice, in the pusher's order. Empty: every connection of this node.
    ToFds(Vec<ConnId>),
    Online(Uid),
    Kick(Uid),
    /// Adds uids to a group (created by its first member).
    JoinGroup(GroupName, Vec<Uid>),
    LeaveGroup(GroupName, Vec<Uid>),
    /// A message to every member of a group, but `exclude`.
    ToGroup {
        group: GroupName,
        exclude: Option<Uid>,
    },
    GroupMembers(GroupName),
    Ungroup(GroupName),
}

impl Means {
    /// Whether this means changes or reads a group's membership (answered once the store has).
    pub fn is_membership(&self) -> bool {
        matches!(
            self,
            Means::JoinGroup(..) | Means::LeaveGroup(..) | Means::Ungroup(_)
        )
    }
}

#[derive(Debug)]
pub struct PushRequest<'a> {
    pub means: Means,
    pub data: PushData<'a>,
}

/// The `data` object of a push, kept as the pusher wrote it.
#[derive(Debug)]
pub struct PushData<'a> {
    /// The object's JSON text, `{` to `}`.
    raw: Cow<'a, str>,
    content: Option<Range<usize>>,
    /// `data.uid`: who the message is from (0, the system, when absent).
    pub sender: Uid,
    /// `data.type` as text, when it is a string.
    kind: Option<Cow<'a, str>>,
    /// `data.time` when it reads as a number of seconds.
    time: Option<u64>,
    has_time: bool,
    /// A pusher's own `id` value: replaced by ours.
    id_value: Option<Range<usize>>,
}

/// A refused push: `code` 400, 401 or 413 and what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct PushError {
    pub code: u16,
    pub msg: Cow<'static, str>,
}

fn bad(msg: impl Into<Cow<'static, str>>) -> PushError {
    PushError {
        code: 400,
        msg: msg.into(),
    }
}

fn unauthorized(msg: &'static str) -> PushError {
    PushError {
        code: 401,
        msg: msg.into(),
    }
}

/// The request as the pusher sends it; other fields are ignored. Raw, so that a field of the
/// wrong type gets the answer for that field (a non-string `sk` is a wrong secret: 401).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    sk: Option<&'a RawValue>,
    #[serde(borrow)]
    means: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// A JSON string's text, borrowed when it has no escapes.
fn json_str(v: Option<&RawValue>) -> Option<Cow<'_, str>> {
    super::str_from_raw(v?)
}

/// The fields of `data` the server reads (borrowed, not parsed until needed).
#[derive(Deserialize, Default)]
struct DataFields<'a> {
    #[serde(borrow)]
    to_uid: Option<&'a RawValue>,
    #[serde(borrow)]
    uid: Option<&'a RawValue>,
    #[serde(borrow)]
    to_uids: Option<&'a RawValue>,
    #[serde(borrow)]
    uid_all: Option<&'a RawValue>,
    #[serde(borrow)]
    to_fd: Option<&'a RawValue>,
    #[serde(borrow)]
    fd_all: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    group: Option<&'a RawValue>,
    #[serde(borrow)]
    uids: Option<&'a RawValue>,
    #[serde(borrow)]
    exclude_uid: Option<&'a RawValue>,
}

/// `text` is a JSON object (serde would also read a struct from an array).
fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Parses and authenticates a push. `secret` is the one configured for the sender's address
/// (None: that address may not push at all); `presented` a secret proved another way (a
/// signature, an HTTP header), used when the body has no `sk`.
pub fn parse_push<'a>(
    body: &'a [u8],
    secret: Option<&str>,
    presented: Option<&str>,
) -> Result<PushRequest<'a>, PushError> {
    let Some(secret) = secret else {
        return Err(unauthorized("address not allowed"));
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?;
    let text = text.trim_end();
    if !is_object(text) {
        return Err(match serde_json::from_str::<&RawValue>(text) {
            Ok(_) => bad("body must be a JSON object"),
            Err(e) => bad(format!("invalid JSON: {e}")),
        });
    }
    let root: Envelope =
        serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let sk = json_str(root.sk);
    let sk = sk.as_deref().or(presented);
    if !sk.is_some_and(|sk| same_secret(sk, secret)) {
        return Err(unauthorized("wrong sk"));
    }
    let means = json_str(root.means).ok_or_else(|| bad("missing means"))?;
    let raw_data = match root.data {
        Some(d) if is_object(d.get()) => d.get(),
        None if means == "broadcast" => "{}",
        _ => return Err(bad("data must be a JSON object")),
    };
    let fields: DataFields =
        serde_json::from_str(raw_data).map_err(|e| bad(format!("invalid data: {e}")))?;
    let means = read_means(&means, &fields)?;
    Ok(PushRequest {
        means,
        data: PushData::new(Cow::Borrowed(raw_data), &fields),
    })
}

fn read_means(means: &str, fields: &DataFields) -> Result<Means, PushError> {
    let uid_field = |name: &'static str, values: &[Option<&RawValue>]| {
        values
            .iter()
            .find_map(|v| v.and_then(uid_from_raw))
            .ok_or_else(|| bad(format!("data.{name} must be a uid")))
    };
    Ok(match means {
        "to_uid" => Means::ToUid(uid_field("to_uid", &[fields.to_uid])?),
        "to_uids" => Means::ToUids(
            list(fields.to_uids, "to_uids")?
                .into_iter()
                .map(Uid)
                .collect(),
        ),
        "to_uid_all" => Means::ToUids(
            list(fields.uid_all, "uid_all")?
                .into_iter()
                .map(Uid)
                .collect(),
        ),
        "broadcast" => Means::Broadcast,
        "to_fd" => Means::ToFds(vec![fields
            .to_fd
            .and_then(uid_from_raw)
            .map(|id| ConnId(id.0))
            .ok_or_else(|| bad("data.to_fd must be a connection id"))?]),
        "to_fd_all" => Means::ToFds(
            list(fields.fd_all, "fd_all")?
                .into_iter()
                .map(ConnId)
                .collect(),
        ),
        "online" | "is_on_line" => Means::Online(uid_field("uid", &[fields.uid, fields.to_uid])?),
        "kick" => Means::Kick(uid_field("uid", &[fields.uid, fields.to_uid])?),
        "join_group" => Means::JoinGroup(group(fields)?, members(fields.uids)?),
        "leave_group" => Means::LeaveGroup(group(fields)?, members(fields.uids)?),
        "to_group" => Means::ToGroup {
            group: group(fields)?,
            exclude: match fields.exclude_uid.filter(|v| v.get() != "null") {
                None => None,
                Some(v) => {
                    Some(uid_from_raw(v).ok_or_else(|| bad("data.exclude_uid must be a uid"))?)
                }
            },
        },
        "group_members" => Means::GroupMembers(group(fields)?),
        "ungroup" => Means::Ungroup(group(fields)?),
        other => return Err(bad(format!("unknown means `{other}`"))),
    })
}

/// `data.group`: a group's name.
fn group(fields: &DataFields) -> Result<GroupName, PushError> {
    let raw = fields.group.ok_or_else(|| bad("missing data.group"))?;
    json_str(Some(raw))
        .and_then(|g| GroupName::new(&g))
        .ok_or_else(|| bad("data.group must be a name of 1 to 64 of A-Z a-z 0-9 _ : . -"))
}

/// `data.uids` of a membership change: a list (possibly empty) of uids, each once.
fn members(value: Option<&RawValue>) -> Result<Vec<Uid>, PushError> {
    if value.is_none_or(|v| v.get() == "null") {
        return Err(bad("missing data.uids: a list of uids"));
    }
    Ok(list(value, "uids")?.into_iter().map(Uid).collect())
}

/// A list of uids or connection ids, each once, in the pusher's order. Empty means "everyone";
/// absent or null is refused, so that a pusher who forgot the list reaches nobody, not all.
fn list(value: Option<&RawValue>, key: &str) -> Result<Vec<u64>, PushError> {
    let Some(value) = value.filter(|v| v.get() != "null") else {
        return Err(bad(format!(
            "missing data.{key}: list the recipients, or send [] for everyone"
        )));
    };
    let items: Vec<&RawValue> =
        serde_json::from_str(value.get()).map_err(|_| bad(format!("data.{key} must be a list")))?;
    let mut seen = HashSet::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    for v in items {
        let id = uid_from_raw(v)
            .map(|u| u.0)
            .ok_or_else(|| bad(format!("data.{key} holds a bad entry: {v}")))?;
        // Listed twice is one recipient: one frame, one count, one stored copy.
        if seen.insert(id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// A push's frame for one recipient, and where its kept fields are in it.
pub struct PushFrame {
    pub frame: Bytes,
    /// `data.content` (None: absent, kept as `null`).
    pub content: Option<Range<usize>>,
}

impl<'a> PushData<'a> {
    fn new(raw: Cow<'a, str>, fields: &DataFields<'a>) -> PushData<'a> {
        let offset = |v: &RawValue| {
            // `v` was borrowed from `raw`: its place in `raw` is its address minus raw's.
            let start = v.get().as_ptr() as usize - raw.as_ptr() as usize;
            start..start + v.get().len()
        };
        PushData {
            content: fields.content.map(offset),
            sender: fields.uid.and_then(uid_from_raw).unwrap_or_default(),
            kind: fields.kind.and_then(|k| json_str(Some(k))),
            time: fields.time.and_then(uid_from_raw).map(|t| t.0),
            has_time: fields.time.is_some(),
            id_value: fields.id.map(offset),
            raw,
        }
    }

    /// Built by the server itself (`/chat/send`): a chat from the system to `to`.
    pub fn chat_from_system(to: Uid, text: &str) -> PushData<'static> {
        let raw = serde_json::json!({"type": "chat", "to_uid": to.to_string(), "uid": "0",
            "content": {"type": "text", "value": text}})
        .to_string();
        let fields: DataFields = serde_json::from_str(&raw).unwrap_or_default();
        let data = PushData::new(Cow::Borrowed(raw.as_str()), &fields);
        PushData {
            content: data.content,
            sender: data.sender,
            kind: Some(Cow::Borrowed("chat")),
            time: None,
            has_time: false,
            id_value: None,
            raw: Cow::Owned(raw),
        }
    }

    /// The frame to deliver: the pusher's object with `id` set (a pusher's own `id` value is
    /// replaced in place) and `time` added when absent.
    pub fn frame(&self, id: MessageId, now: u64) -> PushFrame {
        self.frame_with(id, now, None)
    }

    /// The frame to deliver to a group's members: as `frame`, with `"to_group":"g"` added.
    pub fn group_frame(&self, id: MessageId, now: u64, group: &GroupName) -> PushFrame {
        self.frame_with(id, now, Some(group))
    }

    fn frame_with(&self, id: MessageId, now: u64, group: Option<&GroupName>) -> PushFrame {
        let raw = self.raw.as_ref();
        // Everything up to the closing brace, with our id in place of the pusher's.
        let body = &raw[..raw.len() - 1];
        let empty = body[1..].trim().is_empty();
        // Sized exactly: a buffer with no spare room becomes a frame without another allocation.
        let id_len = 2 + digits(id.0);
        let size = match &self.id_value {
            Some(r) => body.len() - r.len() + id_len,
            None => body.len() + usize::from(!empty) + 5 + id_len,
        } + if self.has_time { 0 } else { 8 + digits(now) }
            + group.map_or(0, |g| 14 + g.as_str().len())
            + 1;
        let mut b = FrameBuilder::with_capacity(size);
        let mut shift = 0isize;
        match &self.id_value {
            Some(r) => {
                b.push_str(&body[..r.start]);
                let before = b.position();
                b.push(b"\"");
                b.push_u64(id.0);
                b.push(b"\"");
                shift = (b.position() - before) as isize - r.len() as isize;
                b.push_str(&body[r.end..]);
            }
            None => b.push_str(body),
        }
        if self.id_value.is_none() {
            if !empty {
                b.push(b",");
            }
            b.push(b"\"id\":\"");
            b.push_u64(id.0);
            b.push(b"\"");
        }
        if !self.has_time {
            b.push(b",\"time\":");
            b.push_u64(now);
        }
        if let Some(g) = group {
            // A group's name needs no escapes.
            b.push(b",\"to_group\":\"");
            b.push_str(g.as_str());
            b.push(b"\"");
        }
        b.push(b"}");
        debug_assert_eq!(b.payload_len(), size);
        let (frame, header) = b.finish();
        let content = self.content.clone().map(|r| {
            let moved = match &self.id_value {
                Some(id) if r.start > id.start => shift,
                _ => 0,
            };
            let start = (r.start as isize + moved) as usize + header;
            start..start + r.len()
        });
        PushFrame { frame, content }
    }

    /// `data.content` as JSON text (`null` when absent).
    pub fn content(&self) -> &str {
        self.content.clone().map_or("null", |r| &self.raw[r])
    }

    /// `data.type`, `push` when absent.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("push")
    }

    /// `data.time` when given as seconds, else `now`.
    pub fn time(&self, now: u64) -> u64 {
        self.time.unwrap_or(now)
    }
}

#[cfg(test)]
mod tests;
