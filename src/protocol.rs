//! The JSON shapes of PROTOCOL.md: access_token decoding, client frames, and the frames the
//! server sends. Pure functions, no I/O.

use crate::config::TokenLayout;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

pub type Uid = u64;

/// Standard alphabet, padding optional: the URL-safe form is mapped onto it before decoding.
const TOKEN_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const MAX_ACCESS_TOKEN_LEN: usize = 1024;
const MAX_SOURCE_LEN: usize = 16;

/// What a decoded `access_token` claims: checked against the token store by a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: Uid,
    pub token: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    TooLong,
    NotBase64,
    NotUtf8,
    MissingPart,
    BadUid,
    BadSource,
    EmptyToken,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::TooLong => "access_token too long",
            TokenError::NotBase64 => "access_token is not base64",
            TokenError::NotUtf8 => "access_token is not UTF-8",
            TokenError::MissingPart => "access_token needs three dot-separated parts",
            TokenError::BadUid => "uid must be a positive decimal number",
            TokenError::BadSource => "source must match [a-z0-9_]{1,16}",
            TokenError::EmptyToken => "token is empty",
        })
    }
}

impl std::error::Error for TokenError {}

/// Decodes `base64(token.uid.source)` (or `uid.token.source`) with `+/=` written as `-_,`.
pub fn decode_access_token(raw: &str, layout: TokenLayout) -> Result<Credentials, TokenError> {
    if raw.len() > MAX_ACCESS_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mapped: String = raw
        .chars()
        .map(|c| match c {
            // A `+` sent unescaped in a query string arrives as a space.
            '-' | ' ' => '+',
            '_' => '/',
            ',' => '=',
            c => c,
        })
        .collect();
    let bytes = TOKEN_B64
        .decode(mapped.trim_end_matches('='))
        .map_err(|_| TokenError::NotBase64)?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::NotUtf8)?;
    // The token itself may contain dots; uid and source never do.
    let (uid, token, source) = match layout {
        TokenLayout::TokenUidSource => {
            let mut parts = text.rsplitn(3, '.');
            let source = parts.next();
            let uid = parts.next();
            let token = parts.next();
            (uid, token, source)
        }
        TokenLayout::UidTokenSource => {
            let (uid, rest) = text.split_once('.').ok_or(TokenError::MissingPart)?;
            let (token, source) = rest.rsplit_once('.').ok_or(TokenError::MissingPart)?;
            (Some(uid), Some(token), Some(source))
        }
    };
    let (Some(uid), Some(token), Some(source)) = (uid, token, source) else {
        return Err(TokenError::MissingPart);
    };
    let uid = parse_uid(uid).ok_or(TokenError::BadUid)?;
    if !valid_source(source) {
        return Err(TokenError::BadSource);
    }
    if token.is_empty() {
        return Err(TokenError::EmptyToken);
    }
    Ok(Credentials {
        uid,
        token: token.to_string(),
        source: source.to_string(),
    })
}

/// The inverse of `decode_access_token` in the default layout, for clients and tests.
pub fn encode_access_token(token: &str, uid: Uid, source: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{token}.{uid}.{source}"))
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            '=' => ',',
            c => c,
        })
        .collect()
}

pub fn parse_uid(s: &str) -> Option<Uid> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn valid_source(s: &str) -> bool {
    (1..=MAX_SOURCE_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A uid as JSON gives it: a number or a string of digits.
pub fn uid_from_json(v: &serde_json::Value) -> Option<Uid> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => parse_uid(s),
        _ => None,
    }
}

/// A uid written as a JSON number or string, read without building a `Value` in the common
/// cases (plain digits, with or without quotes).
pub fn uid_from_raw(raw: &RawValue) -> Option<Uid> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' if !text.contains('\\') => parse_uid(text.get(1..text.len() - 1)?),
        b'0'..=b'9' => text.parse().ok(),
        _ => uid_from_json(&serde_json::from_str(text).ok()?),
    }
}

/// A text frame from a logged-in client, validated.
#[derive(Debug)]
pub enum ClientRequest<'a> {
    Ping,
    Chat {
        to_uid: Uid,
        kind: String,
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
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// Frame `type`s a client may send besides ping.
const CLIENT_CHAT_TYPES: &[&str] = &["chat", "text", "image", "voice", "video", "file", "notice"];

pub fn parse_client_frame(text: &str) -> Result<ClientRequest<'_>, BadFrame> {
    if text.trim() == "ping" {
        return Ok(ClientRequest::Ping);
    }
    let frame: RawClientFrame =
        serde_json::from_str(text).map_err(|e| BadFrame(format!("invalid JSON: {e}")))?;
    let kind = frame.kind.unwrap_or_else(|| "chat".into());
    if kind == "ping" {
        return Ok(ClientRequest::Ping);
    }
    if !CLIENT_CHAT_TYPES.contains(&kind.as_str()) {
        return Err(BadFrame(format!("unknown type `{kind}`")));
    }
    let to_uid = frame
        .to_uid
        .ok_or_else(|| BadFrame("missing to_uid".into()))?;
    let to_uid = uid_from_raw(to_uid).ok_or_else(|| BadFrame("to_uid must be a uid".into()))?;
    let content = frame
        .content
        .ok_or_else(|| BadFrame("missing content".into()))?;
    Ok(ClientRequest::Chat {
        to_uid,
        kind,
        content,
    })
}

/// One routed message: what is stored, and what the recipient receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: u64,
    pub uid: Uid,
    pub to_uid: Uid,
    pub kind: String,
    /// 1 when delivered to at least one connection, 0 when stored for later.
    pub state: u8,
    /// The JSON text of `content`.
    pub content: String,
    pub time: u64,
}

#[derive(Serialize)]
struct ChatOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    uid: String,
    to_uid: String,
    time: u64,
    state: u8,
    content: &'a RawValue,
}

impl MessageRecord {
    /// The frame a recipient gets; `state` as given (1 live, 0 for a stored message).
    pub fn to_frame_json(&self, state: u8) -> String {
        let content = RawValue::from_string(self.content.clone())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        serde_json::to_string(&ChatOut {
            id: self.id.to_string(),
            kind: &self.kind,
            uid: self.uid.to_string(),
            to_uid: self.to_uid.to_string(),
            time: self.time,
            state,
            content: &content,
        })
        .unwrap_or_default()
    }
}

pub fn login_ok(uid: Uid, source: &str, fd: u64) -> String {
    serde_json::json!({"type":"login","code":200,"message":"ok",
        "data":{"uid":uid.to_string(),"source":source,"fd":fd}})
    .to_string()
}

pub fn login_refused(code: u16, message: &str) -> String {
    serde_json::json!({"type":"login","code":code,"message":message,"data":[]}).to_string()
}

pub fn error_frame(code: u16, message: &str) -> String {
    serde_json::json!({"type":"error","code":code,"message":message}).to_string()
}

pub fn ack_frame(id: u64, to_uid: Uid, state: u8) -> String {
    format!(r#"{{"type":"ack","id":"{id}","to_uid":"{to_uid}","state":{state}}}"#)
}

pub const PONG_FRAME: &str = r#"{"type":"pong"}"#;

/// WebSocket close codes of the protocol.
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const REPLACED: u16 = 4002;
    pub const KICKED: u16 = 4003;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_url_safe_padded_token() {
        let raw = encode_access_token("fe24NDU2341N", 123456, "app");
        let c = decode_access_token(&raw, TokenLayout::TokenUidSource).expect("decodes");
        assert_eq!(
            c,
            Credentials {
                uid: 123456,
                token: "fe24NDU2341N".into(),
                source: "app".into()
            }
        );
    }

    #[test]
    fn decodes_plain_unpadded_base64url() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let raw = URL_SAFE_NO_PAD.encode("a?b>c.77.pc");
        assert!(raw.contains('_') || raw.contains('-') || !raw.ends_with('='));
        let c = decode_access_token(&raw, TokenLayout::TokenUidSource).expect("decodes");
        assert_eq!(
            (c.uid, c.token.as_str(), c.source.as_str()),
            (77, "a?b>c", "pc")
        );
    }

    #[test]
    fn token_may_contain_dots() {
        let raw = encode_access_token("a.b.c", 9, "app");
        let c = decode_access_token(&raw, TokenLayout::TokenUidSource).expect("decodes");
        assert_eq!(c.token, "a.b.c");
    }

    #[test]
    fn original_layout_is_selectable() {
        let raw = encode_access_token("5", 0, "x"); // "5.0.x" read as uid.token.source
        let c = decode_access_token(&raw, TokenLayout::UidTokenSource).expect("decodes");
        assert_eq!((c.uid, c.token.as_str(), c.source.as_str()), (5, "0", "x"));
    }

    #[test]
    fn refuses_garbage() {
        let l = TokenLayout::TokenUidSource;
        assert_eq!(decode_access_token("!!!", l), Err(TokenError::NotBase64));
        let two = encode_access_token("t", 1, "app").replace(',', "");
        assert!(decode_access_token(&two, l).is_ok());
        use base64::engine::general_purpose::STANDARD;
        assert_eq!(
            decode_access_token(&STANDARD.encode("t.1"), l),
            Err(TokenError::MissingPart)
        );
        assert_eq!(
            decode_access_token(&STANDARD.encode("t.x1.app"), l),
            Err(TokenError::BadUid)
        );
        assert_eq!(
            decode_access_token(&STANDARD.encode("t.1.APP"), l),
            Err(TokenError::BadSource)
        );
        assert_eq!(
            decode_access_token(&STANDARD.encode(".1.app"), l),
            Err(TokenError::EmptyToken)
        );
        assert_eq!(
            decode_access_token(&"A".repeat(2000), l),
            Err(TokenError::TooLong)
        );
    }

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
            Ok(ClientRequest::Chat {
                to_uid,
                kind,
                content,
            }) => {
                assert_eq!(
                    (to_uid, kind.as_str(), content.get()),
                    (5, "chat", r#"{"v":1}"#)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_client_frame(r#"{"to_uid":5,"content":1}"#).is_ok());
        assert!(parse_client_frame("nope").is_err());
        assert!(parse_client_frame(r#"{"type":"chat","content":1}"#).is_err());
        assert!(parse_client_frame(r#"{"to_uid":"x","content":1}"#).is_err());
        assert!(parse_client_frame(r#"{"to_uid":1,"type":"bogus","content":1}"#).is_err());
    }

    #[test]
    fn message_frame_shape() {
        let m = MessageRecord {
            id: 1234,
            uid: 1,
            to_uid: 2,
            kind: "chat".into(),
            state: 1,
            content: r#"{"type":"text","value":"hi"}"#.into(),
            time: 99,
        };
        let v: serde_json::Value = serde_json::from_str(&m.to_frame_json(1)).expect("json");
        assert_eq!(v["id"], "1234");
        assert_eq!(v["uid"], "1");
        assert_eq!(v["to_uid"], "2");
        assert_eq!(v["state"], 1);
        assert_eq!(v["content"]["value"], "hi");
        let ack: serde_json::Value = serde_json::from_str(&ack_frame(1234, 2, 0)).expect("json");
        assert_eq!(
            ack,
            serde_json::json!({"type":"ack","id":"1234","to_uid":"2","state":0})
        );
    }
}
