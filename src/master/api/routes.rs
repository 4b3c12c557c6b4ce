//! What each HTTP API request means: `/chat/send`, `/api/push`, `/api/login`, `/api/online`,
//! `/api/stats` (all authenticated by address and secret), `/healthz`, and `/readyz` and
//! `/metrics` (the master's `metrics`); the dashboard's (`/admin`, `/api/admin/`) are the
//! master's `admin`.

use super::{ApiConnId, ApiRequest};
use crate::master::http::{self, Request};
use crate::master::metrics::Door;
use crate::master::router::{Origin, PushOutcome, ReplyTo};
use crate::master::Master;
use crate::model::{Source, TokenRecord, Uid};
use crate::protocol::push::{parse_push, Means, PushData, PushRequest};
use crate::protocol::{parse_uid, uid_from_json};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Longest token `POST /api/login` accepts.
const MAX_TOKEN: usize = 256;

impl Master {
    /// Answers a request now, or leaves it waiting for a task worker or other nodes.
    pub(crate) fn serve_api(&mut self, r: ApiRequest, now: Instant) {
        if r.request.path == "/metrics" {
            return self.serve_metrics(r, now);
        }
        if crate::master::admin::owns(&r.request.path) {
            return self.serve_admin(r, now);
        }
        let push = matches!(r.request.path.as_str(), "/api/push" | "/chat/send");
        if let Some((status, body)) = self.route_api(r.conn, &r.request, r.peer.ip(), now) {
            if push {
                self.metrics.push_replied(Door::Http, status);
            }
            self.api.answer(r.conn, status, &body, now);
        }
    }

    fn route_api(
        &mut self,
        conn: ApiConnId,
        req: &Request,
        ip: std::net::IpAddr,
        now: Instant,
    ) -> Option<(u16, String)> {
        if req.path == "/healthz" {
            return Some((200, json!({"code": 0, "status": "ok"}).to_string()));
        }
        if req.path == "/readyz" {
            return Some(self.readyz(now));
        }
        if !self.gate.admit(ip, now) {
            let body = http::error_body(429, "too many requests from this address");
            return Some((429, body));
        }
        // Only a membership change may be longer than a message (see `MAX_MEMBERSHIP_BODY`).
        if req.path != "/api/push" && req.body.len() > self.config.server.max_message_size {
            return Some((413, http::error_body(413, "too large")));
        }
        let deny = |why: &str| Some((401, http::error_body(401, why)));
        let in_flight = self.pool.backlog_bytes();
        match (req.method.as_str(), req.path.as_str()) {
            ("GET" | "POST", "/chat/send") => {
                if let Err(why) = self.gate.authorize(req, ip) {
                    return deny(why);
                }
                let form = form_params(req);
                let get = |k: &str| req.param(k).or_else(|| form.get(k).cloned());
                let Some(to) = get("to_uid").as_deref().and_then(parse_uid) else {
                    return Some((400, http::error_body(400, "to_uid must be a uid")));
                };
                let content = get("content").unwrap_or_default();
                let push = PushRequest {
                    means: Means::ToUid(to),
                    data: PushData::chat_from_system(to, &content),
                };
                self.metrics.push_received(Door::Http, &push.means);
                let to = ReplyTo::Api(conn);
                outcome(self.router.push(&mut self.ws, push, to, in_flight, now))
            }
            ("POST", "/api/push") => {
                let presented = match self.gate.presented(req, ip) {
                    Ok(p) => p,
                    Err(why) => return deny(why),
                };
                let secret = self.gate.secret(ip).map(str::to_owned);
                let push = parse_push(&req.body, secret.as_deref(), presented.as_deref());
                // Past max_message_size only a membership change is taken.
                if req.body.len() > self.config.server.max_message_size
                    && !matches!(&push, Ok(p) if p.means.is_membership())
                {
                    return Some((413, http::error_body(413, "too large")));
                }
                match push {
                    Ok(push) => {
                        self.metrics.push_received(Door::Http, &push.means);
                        let to = ReplyTo::Api(conn);
                        outcome(self.router.push(&mut self.ws, push, to, in_flight, now))
                    }
                    Err(e) => Some((e.code, http::error_body(e.code, &e.msg))),
                }
            }
            ("POST", "/api/login") => {
                if let Err(why) = self.gate.authorize(req, ip) {
                    return deny(why);
                }
                match login_record(&req.body) {
                    Ok(record) => {
                        self.router.save_token(record, Origin::ApiLogin { conn });
                        None
                    }
                    Err(why) => Some((400, http::error_body(400, why))),
                }
            }
            ("GET", "/api/online") => {
                if let Err(why) = self.gate.authorize(req, ip) {
                    return deny(why);
                }
                let Some(uid) = req.param("uid").as_deref().and_then(parse_uid) else {
                    return Some((400, http::error_body(400, "uid must be a uid")));
                };
                let sources: Vec<String> = self
                    .router
                    .registry()
                    .connections_of(uid)
                    .iter()
                    .map(|e| e.source.to_string())
                    .collect();
                Some((200, crate::master::router::online_body(&sources)))
            }
            ("GET", "/api/stats") => {
                if let Err(why) = self.gate.authorize(req, ip) {
                    return deny(why);
                }
                Some((200, self.stats_json()))
            }
            (_, "/chat/send" | "/api/push" | "/api/login" | "/api/online" | "/api/stats") => {
                Some((405, http::error_body(405, "method not allowed")))
            }
            _ => Some((404, http::error_body(404, "no such endpoint"))),
        }
    }
}

fn outcome(o: PushOutcome) -> Option<(u16, String)> {
    match o {
        PushOutcome::Now { status, body } => Some((status, body)),
        PushOutcome::Later => None,
    }
}

/// Parameters of an `application/x-www-form-urlencoded` body.
fn form_params(req: &Request) -> std::collections::HashMap<String, String> {
    let is_form = req
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Default::default();
    }
    form_urlencoded::parse(&req.body).into_owned().collect()
}

/// `POST /api/login`: `{"uid":..,"source":..,"token":..,"expires":..}` as JSON or a form.
fn login_record(body: &[u8]) -> Result<TokenRecord, &'static str> {
    let fields: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect(),
    };
    let uid: Uid = fields
        .get("uid")
        .and_then(uid_from_json)
        .ok_or("uid must be a uid")?;
    let source = fields
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or("app");
    let source = Source::new(source).ok_or("source must match [a-z0-9_]{1,16}")?;
    let token = fields
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
        .ok_or("token must be 1 to 256 characters")?;
    let expires = fields
        .get("expires")
        .and_then(uid_from_json)
        .ok_or("expires must be a Unix time")?;
    Ok(TokenRecord {
        uid,
        source,
        token: token.into(),
        expires: expires.0,
    })
}
