//! The value of Redis key `login{uid}` as the application's login server writes it: a JSON
//! object keyed by source, or `think_serialize:` + PHP `serialize()` of the same array.

use serde::de::{self, Deserializer, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

const THINK_PREFIX: &str = "think_serialize:";

/// A PHP scalar (int, float, bool, or a string, which PHP stores as bytes), kept as text.
struct Scalar(String);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a PHP scalar")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(u8::from(v).to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Scalar, E> {
                std::str::from_utf8(v)
                    .map(|s| Scalar(s.to_owned()))
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

/// One source's record, as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub uid: u64,
    pub token: String,
    pub expires: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BadRecord(pub String);

pub fn is_think_serialize(raw: &[u8]) -> bool {
    raw.starts_with(THINK_PREFIX.as_bytes())
}

/// `think_serialize:` + PHP `serialize()` of a record keyed by source, for a record that was
/// in that format already. Only this shape is written: sources mapping to flat records whose
/// values are integers (when they look like one) or strings (lengths in bytes, as PHP counts).
pub fn to_think_serialize(all: &Map<String, Value>) -> String {
    fn string(out: &mut String, s: &str) {
        out.push_str(&format!("s:{}:\"{s}\";", s.len()));
    }
    fn scalar(out: &mut String, v: &Value) {
        match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => out.push_str(&format!("i:{n};")),
            Value::String(s)
                if !s.is_empty() && s.len() < 19 && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                out.push_str(&format!("i:{s};"))
            }
            Value::String(s) => string(out, s),
            other => string(out, &other.to_string()),
        }
    }
    let mut out = format!("{THINK_PREFIX}a:{}:{{", all.len());
    for (source, record) in all {
        string(&mut out, source);
        let fields = record.as_object().cloned().unwrap_or_default();
        out.push_str(&format!("a:{}:{{", fields.len()));
        for (k, v) in &fields {
            string(&mut out, k);
            scalar(&mut out, v);
        }
        out.push('}');
    }
    out.push('}');
    out
}

/// Parses a whole `login{uid}` value into its sources.
pub fn parse(raw: &[u8]) -> Result<Map<String, Value>, BadRecord> {
    let value: Value = match raw.strip_prefix(THINK_PREFIX.as_bytes()) {
        Some(php) => {
            let mut de = phpserz::PhpDeserializer::new(php);
            let sources: BTreeMap<String, BTreeMap<String, Scalar>> =
                serde::Deserialize::deserialize(&mut de)
                    .map_err(|e| BadRecord(format!("PHP serialize: {e}")))?;
            let to_json = |fields: BTreeMap<String, Scalar>| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v.0)))
                        .collect(),
                )
            };
            Value::Object(sources.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        None => serde_json::from_slice(raw).map_err(|e| BadRecord(format!("JSON: {e}")))?,
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(BadRecord("not an object keyed by source".into())),
    }
}

/// The record of `source` inside a parsed value, if it is well formed.
pub fn source_record(all: &Map<String, Value>, source: &str) -> Option<SourceRecord> {
    let rec = all.get(source)?.as_object()?;
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    Some(SourceRecord {
        uid: rec.get("uid").and_then(number)?,
        token: match rec.get("token")? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        },
        expires: rec.get("expires").and_then(number)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json() {
        let raw = br#"{"app":{"uid":123456,"token":"fe24NDU2341N","expires":1799999999},
                       "pc":{"uid":"123456","token":"x9a8b7","expires":"1799999999"}}"#;
        let all = parse(raw).expect("parses");
        let app = source_record(&all, "app").expect("app");
        assert_eq!(
            app,
            SourceRecord {
                uid: 123456,
                token: "fe24NDU2341N".into(),
                expires: 1_799_999_999
            }
        );
        assert_eq!(source_record(&all, "pc").map(|r| r.uid), Some(123456));
        assert_eq!(source_record(&all, "weixin"), None);
    }

    #[test]
    fn reads_think_serialize() {
        let raw = br#"think_serialize:a:1:{s:3:"app";a:3:{s:3:"uid";i:123456;s:5:"token";s:12:"fe24NDU2341N";s:7:"expires";i:1799999999;}}"#;
        let all = parse(raw).expect("parses");
        let app = source_record(&all, "app").expect("app");
        assert_eq!(
            app,
            SourceRecord {
                uid: 123456,
                token: "fe24NDU2341N".into(),
                expires: 1_799_999_999
            }
        );
    }

    #[test]
    fn writes_php_records_that_read_back() {
        let raw = br#"think_serialize:a:1:{s:2:"pc";a:3:{s:3:"uid";i:7;s:5:"token";s:6:"x9a8b7";s:7:"expires";i:1799999999;}}"#;
        let mut all = parse(raw).expect("parses");
        all.insert(
            "app".into(),
            serde_json::json!({"uid": 7, "token": "t\u{e9}\"k", "expires": 1799999999}),
        );
        let written = to_think_serialize(&all);
        assert!(is_think_serialize(written.as_bytes()));
        let back = parse(written.as_bytes()).expect("reads back");
        let pc = source_record(&back, "pc").expect("pc kept");
        assert_eq!(
            (pc.uid, pc.token.as_str(), pc.expires),
            (7, "x9a8b7", 1_799_999_999)
        );
        let app = source_record(&back, "app").expect("app added");
        assert_eq!(app.token, "t\u{e9}\"k", "byte lengths, quotes kept");
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse(b"think_serialize:a:1:{s:3:").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(b"[1,2]").is_err());
        let all = parse(br#"{"app":{"uid":1,"token":[1],"expires":1}}"#).expect("parses");
        assert_eq!(source_record(&all, "app"), None);
    }
}
