//! Push requests from application back ends (a UDP datagram or the body of `POST /api/push`):
//! parsed and authenticated here, carried out by the master.

use crate::ids::unix_now;
use crate::master::registry::ConnId;
use crate::protocol::{uid_from_raw, Uid};
use crate::store::same_secret;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt::Write;
use std::ops::Range;

#[derive(Debug, PartialEq)]
pub enum Means {
    ToUid(Uid),
    /// Empty: every online user.
    ToUids(Vec<Uid>),
    Broadcast,
    /// Empty: every connection of this node.
    ToFds(Vec<ConnId>),
    Online(Uid),
    Kick(Uid),
}

#[derive(Debug)]
pub struct PushRequest {
    pub means: Means,
    /// The frame to deliver, before `id` and `time` are added.
    pub data: PushData,
}

/// The `data` object of a push, kept as the pusher wrote it: the frame to deliver is that text
/// with `id` (and `time`) added, so the master never rebuilds it as a map.
#[derive(Debug)]
pub struct PushData {
    /// The object's JSON text, `{` to `}`.
    raw: String,
    content: Option<Range<usize>>,
    /// `data.uid`: who the message is from (0, the system, when absent).
    pub sender: Uid,
    kind: Option<String>,
    /// `data.time` when it reads as a number of seconds.
    time: Option<u64>,
    has_time: bool,
    /// A pusher's own `id` is replaced, which needs the slow path.
    has_id: bool,
}

/// A refused push: `code` 400, 401 or 413 and what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct PushError {
    pub code: u16,
    pub msg: String,
}

fn bad(msg: impl Into<String>) -> PushError {
    PushError {
        code: 400,
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
    let text = v?.get();
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
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
}

/// `text` is a JSON object (serde would also read a struct from an array).
fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Parses and authenticates a push. `secret` is the one configured for the sender's address
/// (None: that address may not push at all).
pub fn parse_push(
    body: &[u8],
    secret: Option<&str>,
    presented: Option<&str>,
) -> Result<PushRequest, PushError> {
    let Some(secret) = secret else {
        return Err(PushError {
            code: 401,
            msg: "address not allowed".into(),
        });
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
        return Err(PushError {
            code: 401,
            msg: "wrong sk".into(),
        });
    }
    let means = json_str(root.means).ok_or_else(|| bad("missing means"))?;
    let raw_data = match root.data {
        Some(d) if is_object(d.get()) => d.get(),
        None if means == "broadcast" => "{}",
        _ => return Err(bad("data must be a JSON object")),
    };
    let fields: DataFields =
        serde_json::from_str(raw_data).map_err(|e| bad(format!("invalid data: {e}")))?;
    let uid_field = |names: &[&str], values: &[Option<&RawValue>]| {
        values
            .iter()
            .find_map(|v| v.and_then(uid_from_raw))
            .ok_or_else(|| bad(format!("data.{} must be a uid", names[0])))
    };
    let means = match &*means {
        "to_uid" => Means::ToUid(uid_field(&["to_uid"], &[fields.to_uid])?),
        "to_uids" => Means::ToUids(list(fields.to_uids, "to_uids")?),
        "to_uid_all" => Means::ToUids(list(fields.uid_all, "uid_all")?),
        "broadcast" => Means::Broadcast,
        "to_fd" => Means::ToFds(vec![fields
            .to_fd
            .and_then(uid_from_raw)
            .ok_or_else(|| bad("data.to_fd must be a connection id"))?]),
        "to_fd_all" => Means::ToFds(list(fields.fd_all, "fd_all")?),
        "online" | "is_on_line" => {
            Means::Online(uid_field(&["uid", "to_uid"], &[fields.uid, fields.to_uid])?)
        }
        "kick" => Means::Kick(uid_field(&["uid", "to_uid"], &[fields.uid, fields.to_uid])?),
        other => return Err(bad(format!("unknown means `{other}`"))),
    };
    Ok(PushRequest {
        means,
        data: PushData::new(raw_data, &fields),
    })
}

/// A list of uids or connection ids; absent, null or empty means "everyone".
fn list(value: Option<&RawValue>, key: &str) -> Result<Vec<u64>, PushError> {
    let Some(value) = value.filter(|v| v.get() != "null") else {
        return Ok(Vec::new());
    };
    let items: Vec<&RawValue> =
        serde_json::from_str(value.get()).map_err(|_| bad(format!("data.{key} must be a list")))?;
    items
        .iter()
        .map(|v| uid_from_raw(v).ok_or_else(|| bad(format!("data.{key} holds a bad entry: {v}"))))
        .collect()
}

impl PushData {
    fn new(raw: &str, fields: &DataFields) -> PushData {
        let offset = |v: &RawValue| {
            // `v` was borrowed from `raw`: its place in `raw` is its address minus raw's.
            let start = v.get().as_ptr() as usize - raw.as_ptr() as usize;
            start..start + v.get().len()
        };
        let string = |v: &RawValue| serde_json::from_str::<String>(v.get()).ok();
        PushData {
            raw: raw.to_owned(),
            content: fields.content.map(offset),
            sender: fields.uid.and_then(uid_from_raw).unwrap_or(0),
            kind: fields.kind.and_then(string),
            time: fields.time.and_then(uid_from_raw),
            has_time: fields.time.is_some(),
            has_id: fields.id.is_some(),
        }
    }

    /// Built by the server itself (`/chat/send`).
    pub fn from_map(map: Map<String, Value>) -> PushData {
        let raw = Value::Object(map).to_string();
        let fields: DataFields = serde_json::from_str(&raw).unwrap_or_default();
        PushData::new(&raw, &fields)
    }

    /// The frame to deliver: the pusher's object with `id` set and `time` added when absent.
    pub fn stamped(&self, id: u64) -> String {
        if self.has_id {
            let mut map: Map<String, Value> = serde_json::from_str(&self.raw).unwrap_or_default();
            map.insert("id".into(), Value::String(id.to_string()));
            map.entry("time").or_insert_with(|| Value::from(unix_now()));
            return Value::Object(map).to_string();
        }
        // `raw` is an object: `{`, members, `}`, with no space around.
        let open = &self.raw[..self.raw.len() - 1];
        let mut out = String::with_capacity(self.raw.len() + 40);
        out.push_str(open);
        if !open[1..].trim().is_empty() {
            out.push(',');
        }
        let _ = write!(out, "\"id\":\"{id}\"");
        if !self.has_time {
            let _ = write!(out, ",\"time\":{}", unix_now());
        }
        out.push('}');
        out
    }

    /// `data.content` as JSON text (`null` when absent).
    pub fn content(&self) -> &str {
        self.content.clone().map_or("null", |r| &self.raw[r])
    }

    /// `data.type`, `push` when absent.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("push")
    }

    /// `data.time` when given as seconds, else now.
    pub fn time(&self) -> u64 {
        self.time.unwrap_or_else(unix_now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(body: &str) -> Result<PushRequest, PushError> {
        parse_push(body.as_bytes(), Some("k"), None)
    }

    #[test]
    fn every_means_parses() {
        let m = |b: &str| push(b).map(|p| p.means);
        assert_eq!(
            m(r#"{"sk":"k","means":"to_uid","data":{"to_uid":"5"}}"#),
            Ok(Means::ToUid(5))
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"to_uids","data":{"to_uids":[1,"2"]}}"#),
            Ok(Means::ToUids(vec![1, 2]))
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"to_uid_all","data":{"uid_all":[]}}"#),
            Ok(Means::ToUids(vec![]))
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"broadcast","data":{}}"#),
            Ok(Means::Broadcast)
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"to_fd","data":{"to_fd":3}}"#),
            Ok(Means::ToFds(vec![3]))
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"to_fd_all","data":{"fd_all":[]}}"#),
            Ok(Means::ToFds(vec![]))
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"online","data":{"uid":"9"}}"#),
            Ok(Means::Online(9))
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"is_on_line","data":{"to_uid":9}}"#),
            Ok(Means::Online(9))
        );
        assert_eq!(
            m(r#"{"sk":"k","means":"kick","data":{"uid":9}}"#),
            Ok(Means::Kick(9))
        );
        assert!(push("{\"sk\":\"k\",\"means\":\"broadcast\",\"data\":{}}\n").is_ok());
    }

    fn stamped(body: &str) -> Value {
        let p = push(body).expect("a push");
        serde_json::from_str(&p.data.stamped(42)).expect("the frame is JSON")
    }

    #[test]
    fn the_frame_is_the_data_with_id_and_time() {
        let v = stamped(r#"{"sk":"k","means":"to_uid","data":{"to_uid":"5","x":[1,{"y":"}"}]}}"#);
        assert_eq!(v["id"], "42");
        assert!(v["time"].as_u64().is_some_and(|t| t > 1_700_000_000));
        assert_eq!(v["x"][1]["y"], "}");
        assert_eq!(v["to_uid"], "5");
        let v = stamped(r#"{"sk":"k","means":"broadcast","data":{ }}"#);
        assert_eq!(v.as_object().map(|m| m.len()), Some(2), "{v}");
        let v = stamped(r#"{"sk":"k","means":"broadcast"}"#);
        assert_eq!(v["id"], "42");
        // A pusher's own id is replaced, its time kept as given.
        let v = stamped(r#"{"sk":"k","means":"broadcast","data":{"id":"x","time":"soon"}}"#);
        assert_eq!(v["id"], "42");
        assert_eq!(v["time"], "soon");
        assert_eq!(v.as_object().map(|m| m.len()), Some(2), "{v}");
    }

    #[test]
    fn the_kept_fields_are_read_from_data() {
        let p = push(r#"{"sk":"k","means":"to_uid","data":{"to_uid":5,"uid":"7","type":"notice","time":123,"content":{"a" : 1}}}"#)
            .expect("a push");
        assert_eq!(p.data.sender, 7);
        assert_eq!(p.data.kind(), "notice");
        assert_eq!(p.data.time(), 123);
        assert_eq!(p.data.content(), r#"{"a" : 1}"#);
        let p = push(r#"{"sk":"k","means":"to_uid","data":{"to_uid":"5"}}"#).expect("a push");
        assert_eq!(
            (p.data.sender, p.data.kind(), p.data.content()),
            (0, "push", "null")
        );
    }

    #[test]
    fn refusals_have_codes() {
        let code = |r: Result<PushRequest, PushError>| r.map(|_| 0).unwrap_or_else(|e| e.code);
        assert_eq!(code(parse_push(b"{}", None, None)), 401);
        assert_eq!(
            code(push(r#"{"sk":"x","means":"broadcast","data":{}}"#)),
            401
        );
        assert_eq!(code(push(r#"{"means":"broadcast","data":{}}"#)), 401);
        assert_eq!(
            code(parse_push(
                br#"{"means":"broadcast"}"#,
                Some("k"),
                Some("k")
            )),
            0
        );
        assert_eq!(code(push("not json")), 400);
        assert_eq!(code(push(r#"{"sk":"k","means":"nope","data":{}}"#)), 400);
        assert_eq!(code(push(r#"{"sk":"k","means":"to_uid","data":{}}"#)), 400);
        assert_eq!(
            code(push(
                r#"{"sk":"k","means":"to_uids","data":{"to_uids":"1"}}"#
            )),
            400
        );
        assert_eq!(code(push("[1]")), 400);
        assert_eq!(code(push(r#"["k","broadcast",{}]"#)), 400);
        assert_eq!(code(push(r#"{"sk":"k","means":"to_uid","data":"x"}"#)), 400);
        assert_eq!(
            code(push(r#"{"sk":"k","means":"to_uid","data":{"to_uid":[5]}}"#)),
            400
        );
    }
}
