//! Push requests from application back ends (a UDP datagram or the body of `POST /api/push`):
//! parsed and authenticated here, carried out by the master.

use crate::master::registry::ConnId;
use crate::protocol::{uid_from_json, Uid};
use crate::store::same_secret;
use serde_json::{Map, Value};

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
    pub data: Map<String, Value>,
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
    let mut root = match serde_json::from_str::<Value>(text.trim_end()) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("body must be a JSON object")),
        Err(e) => return Err(bad(format!("invalid JSON: {e}"))),
    };
    let sk = root.get("sk").and_then(Value::as_str).or(presented);
    if !sk.is_some_and(|sk| same_secret(sk, secret)) {
        return Err(PushError {
            code: 401,
            msg: "wrong sk".into(),
        });
    }
    let means = root
        .get("means")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing means"))?
        .to_string();
    let data = match root.remove("data") {
        Some(Value::Object(m)) => m,
        None if matches!(means.as_str(), "broadcast") => Map::new(),
        _ => return Err(bad("data must be a JSON object")),
    };
    let uid_field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| data.get(*n).and_then(uid_from_json))
            .ok_or_else(|| bad(format!("data.{} must be a uid", names[0])))
    };
    let means = match means.as_str() {
        "to_uid" => Means::ToUid(uid_field(&["to_uid"])?),
        "to_uids" => Means::ToUids(list(&data, "to_uids", uid_from_json)?),
        "to_uid_all" => Means::ToUids(list(&data, "uid_all", uid_from_json)?),
        "broadcast" => Means::Broadcast,
        "to_fd" => Means::ToFds(vec![data
            .get("to_fd")
            .and_then(conn_id)
            .ok_or_else(|| bad("data.to_fd must be a connection id"))?]),
        "to_fd_all" => Means::ToFds(list(&data, "fd_all", conn_id)?),
        "online" | "is_on_line" => Means::Online(uid_field(&["uid", "to_uid"])?),
        "kick" => Means::Kick(uid_field(&["uid", "to_uid"])?),
        other => return Err(bad(format!("unknown means `{other}`"))),
    };
    Ok(PushRequest { means, data })
}

fn conn_id(v: &Value) -> Option<ConnId> {
    uid_from_json(v)
}

/// A list field; absent or empty means "everyone".
fn list<T>(
    data: &Map<String, Value>,
    key: &str,
    item: fn(&Value) -> Option<T>,
) -> Result<Vec<T>, PushError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| item(v).ok_or_else(|| bad(format!("data.{key} holds a bad entry: {v}"))))
            .collect(),
        Some(_) => Err(bad(format!("data.{key} must be a list"))),
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
    }
}
