//! A message on its way through the master: its frame, written once and shared by every
//! connection it goes to, and what the store needs to keep it, as ranges of that frame.

use crate::model::{Delivery, GroupName, MessageId, StoredGroupMessage, StoredMessage, Uid};
use bytes::Bytes;
use std::ops::Range;

/// The message's `type`, where it can be read without a copy.
#[derive(Debug, Clone)]
pub enum Kind {
    /// One of the protocol's own names (a client's chat types, `push`).
    Named(&'static str),
    /// Written in the frame as it is (no escapes in it).
    InFrame(Range<usize>),
    /// A name the frame holds escaped, kept unescaped.
    Owned(Box<str>),
}

/// One message for one recipient uid (each recipient of a multi-uid push gets its own).
#[derive(Debug)]
pub struct Message {
    pub id: MessageId,
    pub from: Uid,
    pub to: Uid,
    pub time: u64,
    /// The whole WebSocket frame a recipient gets (`state` 1 in it).
    pub frame: Bytes,
    pub kind: Kind,
    /// `content`'s raw JSON in `frame`; None for a push without one (kept as `null`).
    pub content: Option<Range<usize>>,
}

impl Kind {
    /// A message's `type` by name: the protocol's own names (a client's chat types, `push`)
    /// need no copy.
    pub fn from_name(name: &str) -> Kind {
        let named = crate::protocol::client::CHAT_TYPES.iter().chain(&["push"]);
        match named.into_iter().find(|k| **k == name) {
            Some(k) => Kind::Named(k),
            None => Kind::Owned(name.into()),
        }
    }
}

impl Kind {
    /// The name, read from `frame` where it is written there.
    fn text<'a>(&'a self, frame: &'a [u8]) -> &'a str {
        match self {
            Kind::Named(k) => k,
            Kind::InFrame(r) => std::str::from_utf8(&frame[r.clone()]).unwrap_or("push"),
            Kind::Owned(k) => k,
        }
    }

    /// One of a client's chat types (not `push`, nor a pusher's own name): how the metrics tell
    /// chats from pushes, for the price of one comparison.
    pub fn is_chat(&self) -> bool {
        matches!(self, Kind::Named(k) if *k != "push")
    }
}

impl Message {
    pub fn kind(&self) -> &str {
        self.kind.text(&self.frame)
    }

    pub fn content(&self) -> &str {
        content_in(&self.frame, self.content.clone())
    }

    /// The frame's JSON text, without the WebSocket header.
    pub fn json(&self) -> &[u8] {
        crate::protocol::frames::payload(&self.frame)
    }

    /// The record a store keeps, borrowed from this message.
    pub fn stored(&self, delivery: Delivery) -> StoredMessage<'_> {
        StoredMessage {
            id: self.id,
            from: self.from,
            to: self.to,
            kind: self.kind(),
            delivery,
            content: self.content(),
            time: self.time,
        }
    }
}

/// One message to a group: one frame for every member connection, kept once.
#[derive(Debug)]
pub struct GroupMessage {
    pub id: MessageId,
    pub from: Uid,
    pub group: GroupName,
    pub time: u64,
    /// The whole WebSocket frame every member gets.
    pub frame: Bytes,
    pub kind: Kind,
    /// `content`'s raw JSON in `frame`; None: kept as `null`.
    pub content: Option<Range<usize>>,
    /// The member who does not get it (`exclude_uid`).
    pub exclude: Option<Uid>,
}

impl GroupMessage {
    pub fn kind(&self) -> &str {
        self.kind.text(&self.frame)
    }

    pub fn content(&self) -> &str {
        content_in(&self.frame, self.content.clone())
    }

    /// The record a store keeps, borrowed from this message.
    pub fn stored(&self) -> StoredGroupMessage<'_> {
        StoredGroupMessage {
            id: self.id,
            from: self.from,
            group: self.group.as_str(),
            kind: self.kind(),
            content: self.content(),
            time: self.time,
            exclude: self.exclude,
        }
    }
}

/// The raw JSON of a content in `frame` (`null` when there is none).
fn content_in(frame: &[u8], content: Option<Range<usize>>) -> &str {
    content
        .and_then(|r| std::str::from_utf8(&frame[r]).ok())
        .unwrap_or("null")
}
