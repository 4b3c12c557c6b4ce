//! Text frames from a logged-in client, parsed once and borrowed from the frame's own bytes:
//! `content` stays raw JSON text all the way to the recipients' frames and the store.

use super::{str_from_raw as json_str, uid_from_raw};
use crate::model::{GroupName, Uid};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A validated client request.
#[derive(Debug)]
pub enum ClientRequest<'a> {
    Ping,
    Chat {
        to: Uid,
        kind: &'static str,
        content: &'a RawValue,
    },
    /// A chat to every member of a group (the sender must be one).
    GroupChat {
        group: GroupName,
        kind: &'static str,
        content: &'a RawValue,
    },
}

/// Why a client frame was refused; the text goes into the error frame.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame(pub String);

#[derive(Deserialize)]
struct RawClientFrame<'a> {
    #[serde(borrow)]
    to_uid: Option<&'a RawValue>,
    #[serde(borrow)]
    to_group: Option<&'a RawValue>,
    /// Raw: serde would copy an `Option<Cow<str>>` even when it could borrow.
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// Frame `type`s a client may send besides ping.
pub const CHAT_TYPES: &[&str] = &["chat", "text", "image", "voice", "video", "file", "notice"];

pub fn parse_client_frame(text: &str) -> Result<ClientRequest<'_>, BadFrame> {
    if text.trim() == "ping" {
        return Ok(ClientRequest::Ping);
    }
    let frame: RawClientFrame =
        serde_json::from_str(text).map_err(|e| BadFrame(format!("invalid JSON: {e}")))?;
    let kind = match frame.kind {
        Some(raw) => json_str(raw).ok_or_else(|| BadFrame("type must be a string".into()))?,
        None => Cow::Borrowed("chat"),
    };
    let kind = kind.as_ref();
    if kind == "ping" {
        return Ok(ClientRequest::Ping);
    }
    let Some(kind) = CHAT_TYPES.iter().copied().find(|k| *k == kind) else {
        return Err(BadFrame(format!("unknown type `{kind}`")));
    };
    let content = frame
        .content
        .ok_or_else(|| BadFrame("missing content".into()))?;
    if let (Some(group), None) = (frame.to_group, frame.to_uid) {
        let group = json_str(group)
            .and_then(|g| GroupName::new(&g))
            .ok_or_else(|| {
                BadFrame("to_group must be a name of 1 to 64 of A-Z a-z 0-9 _ : . -".into())
            })?;
        return Ok(ClientRequest::GroupChat {
            group,
            kind,
            content,
        });
    }
    let to = frame
        .to_uid
        .ok_or_else(|| BadFrame("missing to_uid".into()))?;
    let to = uid_from_raw(to).ok_or_else(|| BadFrame("to_uid must be a uid".into()))?;
    Ok(ClientRequest::Chat { to, kind, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames() {
        assert!(matches!(
            parse_client_frame("ping"),
            Ok(ClientRequest::Ping)
        ));
        assert!(matches!(
            parse_client_frame(r#"{"type":"ping"}"#),
            Ok(ClientRequest::Ping)
        ));
        let f = parse_client_frame(r#"{"to_uid":"5","type":"chat","content":{"v":1}}"#);
        match f {
            Ok(ClientRequest::Chat { to, kind, content }) => {
                assert_eq!((to, kind, content.get()), (Uid(5), "chat", r#"{"v":1}"#));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_client_frame(r#"{"to_uid":5,"content":1}"#).is_ok());
        assert!(parse_client_frame(r#"{"to_uid":5,"type":"te\u0078t","content":1}"#).is_ok());
        assert!(parse_client_frame("nope").is_err());
        assert!(parse_client_frame(r#"{"type":"chat","content":1}"#).is_err());
        assert!(parse_client_frame(r#"{"to_uid":"x","content":1}"#).is_err());
        assert!(parse_client_frame(r#"{"to_uid":1,"type":"bogus","content":1}"#).is_err());
        match parse_client_frame(r#"{"to_group":"team:1","type":"chat","content":"hi"}"#) {
            Ok(ClientRequest::GroupChat { group, content, .. }) => {
                assert_eq!((group.as_str(), content.get()), ("team:1", r#""hi""#));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_client_frame(r#"{"to_group":"a b","content":1}"#).is_err());
        assert!(parse_client_frame(r#"{"to_group":7,"content":1}"#).is_err());
    }
}
