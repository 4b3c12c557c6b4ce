//! The admin dashboard on the HTTP API port: `GET /admin` (one self-contained page, `page.html`,
//! that draws its own plots), and what it polls and does, all under `/api/admin/`:
//!
//! - `GET history?since=<unix ms>`: the samples after `since` (`history`, taken once a second
//!   by `sampler`) and the node's current facts (in a cluster, the live nodes as this node's
//!   last heartbeat saw them in Redis);
//! - `GET user?uid=N`: the uid's connections on this node;
//! - `POST push`: a push shaped as `/api/push`'s (a kick, a test push; in a cluster the page
//!   asks `online` through it for the sources on every node).
//!
//! Who may use them is `access`'s.

mod access;
pub mod history;
mod sampler;

use crate::master::api::ApiRequest;
use crate::master::http::{self, Request};
use crate::master::metrics::Door;
use crate::master::router::{PushOutcome, ReplyTo};
use crate::master::security::security;
use crate::master::Master;
use crate::protocol::parse_uid;
use crate::protocol::push::parse_push;
use access::{AdminRefusal, Caller, Rules};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Instant;

pub use history::History;

const PAGE: &str = include_str!("page.html");

/// Every answer of the dashboard's data: nothing of it is worth keeping in a cache.
const DATA_HEADERS: [(&str, &str); 2] = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
];

/// Whether `path` is the dashboard's.
pub fn owns(path: &str) -> bool {
    path == "/admin" || path.starts_with("/api/admin/")
}

impl Master {
    pub(crate) fn serve_admin(&mut self, r: ApiRequest, now: Instant) {
        let ip = crate::config::canonical_ip(r.peer.ip());
        if !self.gate.admit(ip, now) {
            let body = http::error_body(429, "too many requests from this address");
            return self.api.answer(r.conn, 429, &body, now);
        }
        let caller = Caller {
            own_secret: self.gate.secret(ip),
            may_scrape: self.metrics.allows(ip),
            loopback: ip.is_loopback(),
        };
        let req = &r.request;
        if req.path == "/admin" {
            let answer = match (req.method.as_str(), access::page(&caller)) {
                (_, Err(why)) => Err(why),
                ("GET", Ok(())) => {
                    let headers = page_headers();
                    let page = PAGE.as_bytes();
                    let html = "text/html; charset=utf-8";
                    return self.api.answer_with(r.conn, 200, html, &headers, page, now);
                }
                (_, Ok(())) => Ok((405, http::error_body(405, "method not allowed"))),
            };
            return self.admin_answer(&r, answer, now);
        }
        let rules = Rules {
            tls: self.config.tls_enabled(),
            require_signature: self.config.push.require_signature,
        };
        let key = match access::data(&caller, &rules, req, |k| self.gate.is_any_secret(k)) {
            Ok(key) => key.to_owned(),
            Err(why) => {
                security!(
                    "{ip}: dashboard {} {} refused: {}",
                    req.method,
                    req.path,
                    why.message()
                );
                return self.admin_answer(&r, Err(why), now);
            }
        };
        let answer = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/api/admin/history") => Ok(self.admin_history(req, now)),
            ("GET", "/api/admin/user") => match self.admin_user(&r) {
                Some(answer) => Ok(answer),
                None => return, // answered with the store's count
            },
            ("POST", "/api/admin/push") => match self.admin_push(&r, &key, now) {
                Some(answer) => Ok(answer),
                None => return, // answered when the cluster has
            },
            (_, "/api/admin/history" | "/api/admin/user" | "/api/admin/push") => {
                Ok((405, http::error_body(405, "method not allowed")))
            }
            _ => Ok((404, http::error_body(404, "no such endpoint"))),
        };
        self.admin_answer(&r, answer, now);
    }

    fn admin_answer(
        &mut self,
        r: &ApiRequest,
        answer: Result<(u16, String), AdminRefusal>,
        now: Instant,
    ) {
        let (status, body) = answer.unwrap_or_else(|why| {
            let status = why.status();
            (status, http::error_body(status, why.message()))
        });
        let json = "application/json";
        self.api
            .answer_with(r.conn, status, json, &DATA_HEADERS, body.as_bytes(), now);
    }

    /// The samples after `since` (all ten minutes without it) and the node's facts now.
    fn admin_history(&self, req: &Request, now: Instant) -> (u16, String) {
        let since = req.param("since").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = self.history.columns(since);
        let slots: Vec<Value> = self
            .pool
            .stats()
            .iter()
            .map(
                |s| json!({"slot": s.slot, "pid": s.pid, "ready": s.ready, "restarts": s.restarts}),
            )
            .collect();
        let ttl_ms = self.config.redis.node_ttl.saturating_mul(1000) as i64;
        let cluster = self.cluster.as_ref().map(|c| {
            let heartbeat = self.metrics.last_heartbeat();
            // A node's last heartbeat was `node_ttl` minus its key's time left ago, when this
            // node's heartbeat read it.
            let nodes: Vec<Value> = c.nodes().map_or(Vec::new(), |(read_at, nodes)| {
                let since_read = now.saturating_duration_since(read_at).as_millis() as i64;
                nodes
                    .iter()
                    .map(|n| {
                        let age_ms = (ttl_ms - n.heartbeat_ttl_ms).max(0) + since_read;
                        json!({"node": n.node, "connections": n.connections, "heartbeat_age_s": age_ms / 1000})
                    })
                    .collect()
            });
            json!({
                "node": c.node(),
                "subscribed": c.subscribed(),
                "subscriptions_lost": c.subscriptions_lost(),
                "heartbeat_age_s": heartbeat.map(|(at, _)| now.saturating_duration_since(at).as_secs()),
                "heartbeat_ms": heartbeat.map(|(_, took)| took.as_secs_f64() * 1000.0),
                "nodes": nodes,
            })
        });
        let (ip, port) = self.config.node_address();
        let info = json!({
            "pid": std::process::id(),
            "node": format!("{ip}:{port}"),
            "uptime": now.saturating_duration_since(self.started).as_secs(),
            "now": sampler::unix_ms(),
            "every_ms": history::EVERY.as_millis() as u64,
            "capacity": history::CAPACITY,
            "max_connections": self.ws_listener.as_ref().map_or(0, |l| l.max_connections()),
            "store_limit_bytes": self.router.store().limit(),
            "workers": slots,
            "cluster": cluster,
        });
        body.insert("code".into(), json!(0));
        body.insert("info".into(), info);
        (200, Value::Object(body).to_string())
    }

    /// The uid's connections on this node: source, connection id, device, client address.
    /// A uid's connections here; the messages waiting for it come from the store (None: the
    /// answer goes once the store has counted).
    fn admin_user(&mut self, r: &ApiRequest) -> Option<(u16, String)> {
        let Some(uid) = r.request.param("uid").as_deref().and_then(parse_uid) else {
            return Some((400, http::error_body(400, "uid must be a uid")));
        };
        let connections: Vec<Value> = self
            .router
            .registry()
            .connections_of(uid)
            .iter()
            .map(|e| {
                let client = self.ws.client(e.conn).map(|(addr, _)| addr.to_string());
                json!({"source": e.source.as_str(), "fd": e.conn.0, "device": e.device.as_deref(), "client": client})
            })
            .collect();
        let (ip, port) = self.config.node_address();
        let found = json!({
            "code": 0,
            "uid": uid.to_string(),
            "node": format!("{ip}:{port}"),
            "online_here": !connections.is_empty(),
            "connections": connections,
        });
        match crate::ipc::encode_task(&crate::ipc::Task::CountPending(uid)) {
            Ok(body) => {
                let origin = crate::master::router::Origin::AdminUser {
                    conn: r.conn,
                    found,
                };
                self.pool.submit(uid.0, body, origin);
                None
            }
            Err(_) => Some((200, found.to_string())),
        }
    }

    /// The store counted what waits for the uid looked up (or could not: `waiting` is null).
    pub(crate) fn admin_user_answered(
        &mut self,
        conn: crate::master::api::ApiConnId,
        mut found: Value,
        reply: crate::ipc::Reply,
        now: Instant,
    ) {
        found["waiting"] = match reply {
            crate::ipc::Reply::Waiting { chats, groups } => {
                json!({"chats": chats, "groups": groups})
            }
            _ => Value::Null,
        };
        let body = found.to_string();
        self.api.answer_with(
            conn,
            200,
            "application/json",
            &DATA_HEADERS,
            body.as_bytes(),
            now,
        );
    }

    /// A push as `/api/push` takes it, the dashboard's key as its secret. None: the answer
    /// comes later (a cluster's).
    fn admin_push(&mut self, r: &ApiRequest, key: &str, now: Instant) -> Option<(u16, String)> {
        if r.request.body.len() > self.config.server.max_message_size {
            return Some((413, http::error_body(413, "too large")));
        }
        let answer = match parse_push(&r.request.body, Some(key), Some(key)) {
            Ok(push) => {
                self.metrics.push_received(Door::Http, &push.means);
                let in_flight = self.pool.backlog_bytes();
                let to = ReplyTo::Api(r.conn);
                match self.router.push(&mut self.ws, push, to, in_flight, now) {
                    PushOutcome::Now { status, body } => (status, body),
                    PushOutcome::Later => return None,
                }
            }
            Err(e) => (e.code, http::error_body(e.code, &e.msg)),
        };
        self.metrics.push_replied(Door::Http, answer.0);
        Some(answer)
    }
}

/// The page's headers: its inline script and style are allowed by their hashes and nothing
/// else runs or loads (it handles the secret key); it talks to this origin only.
fn page_headers() -> [(&'static str, &'static str); 5] {
    static CSP: OnceLock<String> = OnceLock::new();
    let csp = CSP.get_or_init(|| content_security_policy(PAGE));
    [
        ("Content-Security-Policy", csp.as_str()),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
    ]
}

/// A policy allowing exactly the page's `<script>` and `<style>` blocks, by their SHA-256.
fn content_security_policy(page: &str) -> String {
    let hash = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let body = page
            .split_once(open.as_str())
            .and_then(|(_, rest)| rest.split_once(close.as_str()))
            .map_or("", |(body, _)| body);
        use base64::Engine;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(body.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("script"),
        hash("style")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_pages_own_script_and_style() {
        let page = "<html><style>a{}</style><script>go()</script></html>";
        let csp = content_security_policy(page);
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        let other = content_security_policy("<style>a{}</style><script>evil()</script>");
        assert_ne!(csp, other, "another script, another hash");
        // The real page has exactly one of each, so that the policy covers all it runs.
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
        assert!(
            !PAGE.contains(" style=\""),
            "inline style attributes would be blocked"
        );
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "nothing from outside"
        );
    }

    #[test]
    fn the_dashboard_owns_its_paths_only() {
        assert!(owns("/admin"));
        assert!(owns("/api/admin/history"));
        assert!(!owns("/api/stats"));
        assert!(!owns("/administrator"));
    }
}
