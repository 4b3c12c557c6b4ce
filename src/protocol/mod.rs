//! The wire protocol of `docs/PROTOCOL.md`, as pure functions and types (no I/O): access tokens
//! (here), client frames (`client`), the frames the server sends (`frames`), push requests
//! (`push`) and their signatures (`signature`).

pub mod client;
pub mod frames;
pub mod push;
pub mod signature;

use crate::config::TokenLayout;
use crate::model::{Credentials, Source, Uid};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Standard alphabet, padding optional: the URL-safe form is mapped onto it before decoding.
const TOKEN_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const MAX_ACCESS_TOKEN_LEN: usize = 1024;

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
    let source = Source::new(source).ok_or(TokenError::BadSource)?;
    if token.is_empty() {
        return Err(TokenError::EmptyToken);
    }
    Ok(Credentials {
        uid,
        token: token.to_string(),
        source,
    })
}

/// The inverse of `decode_access_token` in the default layout, for clients and tests.
pub fn encode_access_token(token: &str, uid: u64, source: &str) -> String {
    encode_access_token_as(TokenLayout::TokenUidSource, token, uid, source)
}

/// The inverse of `decode_access_token` in `layout`.
pub fn encode_access_token_as(layout: TokenLayout, token: &str, uid: u64, source: &str) -> String {
    let text = match layout {
        TokenLayout::TokenUidSource => format!("{token}.{uid}.{source}"),
        TokenLayout::UidTokenSource => format!("{uid}.{token}.{source}"),
    };
    base64::engine::general_purpose::STANDARD
        .encode(text)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            '=' => ',',
            c => c,
        })
        .collect()
}

/// A uid as text: decimal digits only, at most 19.
pub fn parse_uid(s: &str) -> Option<Uid> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().map(Uid)
}

/// A uid as JSON gives it: a number or a string of digits.
pub fn uid_from_json(v: &serde_json::Value) -> Option<Uid> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(Uid),
        serde_json::Value::String(s) => parse_uid(s),
        _ => None,
    }
}

/// A JSON string's text, borrowed unless it has escapes; None for anything else.
pub fn str_from_raw(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// A uid (or any id) written as a JSON number or string, read without building a `Value` in the
/// common cases (plain digits, with or without quotes).
pub fn uid_from_raw(raw: &RawValue) -> Option<Uid> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' if !text.contains('\\') => parse_uid(text.get(1..text.len() - 1)?),
        b'0'..=b'9' => text.parse().ok().map(Uid),
        _ => uid_from_json(&serde_json::from_str(text).ok()?),
    }
}

/// WebSocket close codes of the protocol.
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const REPLACED: u16 = 4002;
    pub const KICKED: u16 = 4003;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u64, token: &str, source: &str) -> Credentials {
        Credentials {
            uid: Uid(uid),
            token: token.into(),
            source: Source::new(source).expect("a source"),
        }
    }

    #[test]
    fn decodes_url_safe_padded_token() {
        let raw = encode_access_token("fe24NDU2341N", 123456, "app");
        let c = decode_access_token(&raw, TokenLayout::TokenUidSource).expect("decodes");
        assert_eq!(c, creds(123456, "fe24NDU2341N", "app"));
    }

    #[test]
    fn decodes_plain_unpadded_base64url() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let raw = URL_SAFE_NO_PAD.encode("a?b>c.77.pc");
        assert!(raw.contains('_') || raw.contains('-') || !raw.ends_with('='));
        let c = decode_access_token(&raw, TokenLayout::TokenUidSource).expect("decodes");
        assert_eq!(c, creds(77, "a?b>c", "pc"));
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
        assert_eq!(c, creds(5, "0", "x"));
        let raw = encode_access_token_as(TokenLayout::UidTokenSource, "t.k", 7, "app");
        let c = decode_access_token(&raw, TokenLayout::UidTokenSource).expect("decodes");
        assert_eq!(c, creds(7, "t.k", "app"));
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
    fn uids_from_json_text() {
        fn raw(s: &str) -> &RawValue {
            serde_json::from_str(s).expect("json")
        }
        assert_eq!(uid_from_raw(raw("\"42\"")), Some(Uid(42)));
        assert_eq!(uid_from_raw(raw("42")), Some(Uid(42)));
        assert_eq!(uid_from_raw(raw("\"4\\u0032\"")), Some(Uid(42)));
        assert_eq!(uid_from_raw(raw("-1")), None);
        assert_eq!(uid_from_raw(raw("\"x\"")), None);
        assert_eq!(uid_from_raw(raw("[1]")), None);
    }
}
