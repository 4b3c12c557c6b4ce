//! Records shared by every process (master, task workers, subscriber) and every store: ids with
//! names, login records, messages as the stores keep them, and presence changes. No I/O, and
//! nothing here knows how the records travel (that is `ipc`) or where they are kept (`store`).

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A user: a decimal number of up to 19 digits.
    Uid
);
id_type!(
    /// A client connection on this node (the protocol's `fd`): never reused while it runs.
    ConnId
);
id_type!(
    /// A message: time-ordered, unique across the cluster (see `ids`).
    MessageId
);

/// The kind of terminal a login is for (`app`, `pc`, `weixin`, ...): `[a-z0-9_]{1,16}`, kept
/// inline so that a connection's registration allocates nothing for it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    len: u8,
    bytes: [u8; Source::MAX],
}

impl Source {
    pub const MAX: usize = 16;

    /// None unless `s` matches `[a-z0-9_]{1,16}`.
    pub fn new(s: &str) -> Option<Source> {
        let valid = (1..=Self::MAX).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Source {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Source::new(&s).ok_or_else(|| serde::de::Error::custom("source must match [a-z0-9_]{1,16}"))
    }
}

/// What a decoded `access_token` claims; a task worker checks it against the token store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: Uid,
    pub token: String,
    pub source: Source,
}

/// One login record, as the application's login server writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub uid: Uid,
    pub source: Source,
    pub token: String,
    pub expires: u64,
}

/// Whether a kept message reached its recipient (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// Kept for the recipient's next login.
    Undelivered,
    /// Reached at least one connection; kept as a backup copy.
    Delivered,
}

impl Delivery {
    pub fn state(self) -> u8 {
        match self {
            Delivery::Undelivered => 0,
            Delivery::Delivered => 1,
        }
    }

    pub fn from_reached(reached: bool) -> Delivery {
        if reached {
            Delivery::Delivered
        } else {
            Delivery::Undelivered
        }
    }
}

/// A message as the stores keep it, borrowed from wherever it already is (the frame the master
/// built, or the channel buffer a worker read): `content` is raw JSON text, never escaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage<'a> {
    pub id: MessageId,
    /// The sender (`uid` in the frame; 0 for the system).
    pub from: Uid,
    pub to: Uid,
    pub kind: &'a str,
    pub delivery: Delivery,
    pub content: &'a str,
    pub time: u64,
}

/// A message read back from a store for its recipient (owned: it outlives the store's row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    pub id: MessageId,
    pub from: Uid,
    pub to: Uid,
    /// A group message: the group it was sent to (`to_group` in its frame).
    pub group: Option<String>,
    pub kind: String,
    pub content: String,
    pub time: u64,
}

/// A group's name: `[A-Za-z0-9_:.-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GroupName(Box<str>);

impl GroupName {
    pub const MAX: usize = 64;

    /// None unless `s` matches `[A-Za-z0-9_:.-]{1,64}`.
    pub fn new(s: &str) -> Option<GroupName> {
        let valid = (1..=Self::MAX).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'));
        valid.then(|| GroupName(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        GroupName::new(&s)
            .ok_or_else(|| serde::de::Error::custom("group must match [A-Za-z0-9_:.-]{1,64}"))
    }
}

/// A group message as the stores keep it: once, whatever the number of members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGroupMessage<'a> {
    pub id: MessageId,
    pub from: Uid,
    #[serde(borrow)]
    pub group: &'a str,
    pub kind: &'a str,
    pub content: &'a str,
    pub time: u64,
    /// A member who does not get it (`exclude_uid`), not even later.
    pub exclude: Option<Uid>,
}

/// A live node of the cluster as its heartbeat saw it in Redis (for the dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSeen {
    /// `ip:port`, as the node names itself.
    pub node: String,
    /// Its entries in `ws_fdInfo:{ip}{port}`: its logged-in connections.
    pub connections: u64,
    /// Milliseconds its heartbeat key had left (`redis.node_ttl` after its last heartbeat).
    pub heartbeat_ttl_ms: i64,
}

/// A connection registered (online) or gone (offline) on this node, for the cluster's presence
/// hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub uid: Uid,
    pub source: Source,
    pub conn: ConnId,
    pub online: bool,
    pub time: u64,
    pub device: Option<String>,
    /// The client's address (behind a trusted proxy, the one it named), for those who read
    /// presence; online changes only.
    pub client: Option<std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_checked_and_kept_inline() {
        assert_eq!(
            Source::new("weixin").map(|s| s.to_string()).as_deref(),
            Some("weixin")
        );
        assert_eq!(Source::new("a_1").map(|s| s.as_str().len()), Some(3));
        for bad in ["", "APP", "a-b", "x".repeat(17).as_str(), "é"] {
            assert!(Source::new(bad).is_none(), "{bad:?}");
        }
        assert_eq!(std::mem::size_of::<Source>(), 17);
    }

    #[test]
    fn group_names_are_checked() {
        for good in ["g", "team:42", "a.b-c_D", &"x".repeat(64)] {
            assert_eq!(
                GroupName::new(good).map(|g| g.to_string()).as_deref(),
                Some(good)
            );
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65), "\"\""] {
            assert!(GroupName::new(bad).is_none(), "{bad:?}");
        }
    }
}
