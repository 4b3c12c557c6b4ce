//! The HTTP API port (8880): keep-alive connections whose requests, pipelined or not, are
//! answered one at a time and in order; and the demo routes of the WebSocket port.

use super::cluster::ReplyTo;
use super::http::{self, json_response, Parsed, Request};
use super::outbuf::OutQueue;
use super::pool::Origin;
use super::push::{parse_push, PushData, PushRequest};
use super::signature;
use super::Master;
use super::API_BASE;
use crate::ids::unix_now;
use crate::ipc::{Task, TokenRecord};
use crate::protocol::{self, parse_uid, valid_source};
use log::warn;
use mio::net::TcpStream;
use mio::{Interest, Token};
use serde_json::{json, Map, Value};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const DEMO_PAGE: &str = include_str!("demo.html");
/// How long a demo login token lives.
const DEMO_TOKEN_TTL: u64 = 24 * 3600;

pub struct ApiConn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    out: OutQueue,
    /// A request is with a task worker; the ones behind it wait their turn.
    waiting: bool,
    keep_alive: bool,
    peer_done: bool,
    last_active: Instant,
    /// When the first byte of the request being read arrived: a request must be complete
    /// within `http_request_timeout` of it, however slowly its bytes trickle in.
    request_started: Option<Instant>,
    queued_for_flush: bool,
}

impl Master {
    pub(super) fn accept_api(&mut self, now: Instant) {
        loop {
            let Some(sockets) = self.sockets.as_mut() else {
                return;
            };
            let (mut stream, peer) = match sockets.http.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("accept on the HTTP port failed: {e}");
                    return;
                }
            };
            let id = self.next_api;
            self.next_api += 1;
            let token = Token(API_BASE + id as usize);
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.api_conns.insert(
                id,
                ApiConn {
                    stream,
                    peer,
                    buf: Vec::new(),
                    out: OutQueue::default(),
                    waiting: false,
                    keep_alive: true,
                    peer_done: false,
                    last_active: now,
                    request_started: None,
                    queued_for_flush: false,
                },
            );
        }
    }

    /// Reads and answers until the socket is drained or a request waits for a task worker.
    pub(super) fn on_api_event(&mut self, id: u64, now: Instant) {
        let max_body = self.config.server.max_message_size;
        loop {
            let Some(c) = self.api_conns.get_mut(&id) else {
                return;
            };
            let mut chunk = [0u8; 16 * 1024];
            let mut drained = c.peer_done;
            // Read no further than one request ahead of what is being answered: the rest
            // stays in the kernel (which pushes back on the client) until this is answered.
            while !drained && c.buf.len() <= http::MAX_HEAD + max_body {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        c.peer_done = true;
                        drained = true;
                    }
                    Ok(n) => {
                        c.buf.extend_from_slice(&chunk[..n]);
                        c.last_active = now;
                        c.request_started.get_or_insert(now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.peer_done = true;
                        c.keep_alive = false;
                        drained = true;
                    }
                }
            }
            let before = c.buf.len();
            self.serve_api_requests(id, now);
            self.mark_api_flush(id);
            let Some(c) = self.api_conns.get_mut(&id) else {
                return;
            };
            // Edge-triggered readiness: if we stopped at the bound, nobody will tell us the
            // socket still holds data, so go on while answering makes room.
            if drained || c.waiting || !c.keep_alive || c.buf.len() >= before {
                return;
            }
        }
    }

    /// Answers buffered requests in order until one has to wait for a task worker.
    fn serve_api_requests(&mut self, id: u64, now: Instant) {
        let max_body = self.config.server.max_message_size;
        loop {
            let Some(c) = self.api_conns.get_mut(&id) else {
                return;
            };
            if c.waiting || !c.keep_alive {
                return;
            }
            match http::parse_request(&c.buf, max_body) {
                Parsed::Partial => return,
                Parsed::Invalid(status, why) => {
                    c.keep_alive = false;
                    c.buf = Vec::new();
                    c.out.push(Rc::from(json_response(
                        status,
                        &http::error_body(status, why),
                        false,
                    )));
                    return;
                }
                Parsed::Complete(req, used) => {
                    c.buf.drain(..used);
                    // A pipelined request behind this one starts its clock now.
                    c.request_started = (!c.buf.is_empty()).then_some(now);
                    c.keep_alive = req.keep_alive;
                    let peer = c.peer;
                    c.waiting = true;
                    if let Some((status, body)) = self.route_api(id, &req, peer, now) {
                        self.queue_api_answer(id, status, &body);
                    }
                }
            }
        }
    }

    /// Some(answer) now, or None when a task worker will answer through `answer_api`.
    fn route_api(
        &mut self,
        id: u64,
        req: &Request,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<(u16, String)> {
        if req.path == "/healthz" {
            return Some((200, json!({"code": 0, "status": "ok"}).to_string()));
        }
        if !self.push_limit.allow(peer.ip(), now) {
            self.stats.refused_push_rate += 1;
            return Some((
                429,
                http::error_body(429, "too many requests from this address"),
            ));
        }
        let secret = self.config.push_secret(peer.ip()).map(str::to_owned);
        let presented = self.presented_credentials(req, secret.as_deref());
        let authorized = match (&secret, &presented) {
            (Some(s), Ok(Some(p))) => crate::store::same_secret(s, p),
            _ => false,
        };
        let why = match (&secret, &presented) {
            (None, _) => "address not allowed",
            (_, Err(why)) => why,
            _ => "wrong sk",
        };
        let deny = || Some((401, http::error_body(401, why)));
        match (req.method.as_str(), req.path.as_str()) {
            ("GET" | "POST", "/chat/send") => {
                if !authorized {
                    return deny();
                }
                let form = form_params(req);
                let get = |k: &str| req.param(k).or_else(|| form.get(k).cloned());
                let Some(to_uid) = get("to_uid").as_deref().and_then(parse_uid) else {
                    return Some((400, http::error_body(400, "to_uid must be a uid")));
                };
                let content = get("content").unwrap_or_default();
                let mut data = Map::new();
                data.insert("type".into(), "chat".into());
                data.insert("to_uid".into(), to_uid.to_string().into());
                data.insert("uid".into(), "0".into());
                data.insert("content".into(), json!({"type": "text", "value": content}));
                let push = PushRequest {
                    means: super::push::Means::ToUid(to_uid),
                    data: PushData::from_map(data),
                };
                self.execute_push(push, ReplyTo::Http(id), now)
                    .into_answer()
            }
            ("POST", "/api/push") => {
                if req.body.len() > self.config.server.max_message_size {
                    return Some((413, http::error_body(413, "too large")));
                }
                let Ok(presented) = &presented else {
                    return deny();
                };
                match parse_push(&req.body, secret.as_deref(), presented.as_deref()) {
                    Ok(push) => self
                        .execute_push(push, ReplyTo::Http(id), now)
                        .into_answer(),
                    Err(e) => Some((e.code, http::error_body(e.code, &e.msg))),
                }
            }
            ("POST", "/api/login") => {
                if !authorized {
                    return deny();
                }
                match login_record(&req.body) {
                    Ok(record) => {
                        self.pool.submit(
                            record.uid,
                            Task::SaveToken(record),
                            Origin::HttpLogin { http: id },
                        );
                        None
                    }
                    Err(why) => Some((400, http::error_body(400, &why))),
                }
            }
            ("GET", "/api/online") => {
                if !authorized {
                    return deny();
                }
                let Some(uid) = req.param("uid").as_deref().and_then(parse_uid) else {
                    return Some((400, http::error_body(400, "uid must be a uid")));
                };
                let sources: Vec<&str> = self
                    .registry
                    .connections_of(uid)
                    .iter()
                    .map(|e| &*e.source)
                    .collect();
                Some((200, json!({"code": 0, "msg": "ok", "onLine": u8::from(!sources.is_empty()), "sources": sources}).to_string()))
            }
            ("GET", "/api/stats") => {
                if !authorized {
                    return deny();
                }
                Some((200, self.stats_json()))
            }
            (_, "/chat/send" | "/api/push" | "/api/login" | "/api/online" | "/api/stats") => {
                Some((405, http::error_body(405, "method not allowed")))
            }
            _ => Some((404, http::error_body(404, "no such endpoint"))),
        }
    }

    /// The secret a request proves it knows: by a valid signature (then it never travelled), or
    /// as a plain `sk` (header, query, body). Err(why) for a bad or replayed signature, or a
    /// plain `sk` when signatures are required.
    fn presented_credentials(
        &mut self,
        req: &Request,
        secret: Option<&str>,
    ) -> Result<Option<String>, &'static str> {
        let signed = (
            req.header("x-wspush-timestamp"),
            req.header("x-wspush-signature"),
        );
        if let (Some(ts), Some(sig)) = signed {
            let Some(secret) = secret else {
                return Err("address not allowed");
            };
            let (ts, sig) = signature::http_signature(ts, sig).map_err(|e| e.message())?;
            let target = if req.query.is_empty() {
                req.path.clone()
            } else {
                format!("{}?{}", req.path, req.query)
            };
            let content = signature::http_signed_content(&req.method, &target, &req.body);
            self.verifier
                .verify(secret, ts, &sig, &content, unix_now())
                .map_err(|e| e.message())?;
            return Ok(Some(secret.to_owned()));
        }
        if self.config.push.require_signature {
            return Err("signature required");
        }
        Ok(http::presented_secret(req).map(|s| s.into_owned()))
    }

    /// Queues the answer to the request `id` was waiting on, then serves the next ones.
    pub(super) fn answer_api(&mut self, id: u64, status: u16, body: &str) {
        self.queue_api_answer(id, status, body);
        // Requests behind this one may be buffered here or still in the socket.
        self.on_api_event(id, Instant::now());
    }

    fn queue_api_answer(&mut self, id: u64, status: u16, body: &str) {
        if let Some(c) = self.api_conns.get_mut(&id) {
            c.waiting = false;
            c.out
                .push(Rc::from(json_response(status, body, c.keep_alive)));
        }
    }

    fn mark_api_flush(&mut self, id: u64) {
        if let Some(c) = self.api_conns.get_mut(&id) {
            if !c.queued_for_flush {
                c.queued_for_flush = true;
                self.api_to_flush.push(id);
            }
        }
    }

    pub(super) fn flush_api(&mut self) {
        for id in std::mem::take(&mut self.api_to_flush) {
            let Some(c) = self.api_conns.get_mut(&id) else {
                continue;
            };
            c.queued_for_flush = false;
            let written = c.out.write_to(&mut c.stream);
            let finished = !c.waiting
                && c.out.is_empty()
                && (!c.keep_alive || (c.peer_done && c.buf.is_empty()));
            if written.is_err() || finished {
                self.drop_api(id);
            }
        }
    }

    fn drop_api(&mut self, id: u64) {
        if let Some(mut c) = self.api_conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    pub(super) fn sweep_api(&mut self, now: Instant, idle: Duration) {
        let limit = Duration::from_secs(self.config.server.http_request_timeout);
        let slow: Vec<u64> = self
            .api_conns
            .iter()
            .filter(|(_, c)| {
                !c.waiting
                    && c.keep_alive
                    && c.request_started
                        .is_some_and(|t| now.duration_since(t) >= limit)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in slow {
            if let Some(c) = self.api_conns.get_mut(&id) {
                c.keep_alive = false;
                c.buf = Vec::new();
                c.out.push(Rc::from(json_response(
                    408,
                    &http::error_body(408, "request not complete in time"),
                    false,
                )));
            }
            self.mark_api_flush(id);
        }
        let stale: Vec<u64> = self
            .api_conns
            .iter()
            .filter(|(_, c)| !c.waiting && now.duration_since(c.last_active) >= idle)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.drop_api(id);
        }
    }

    /// On stop: connections finish what they are answering, then close.
    pub(super) fn stop_api(&mut self) {
        let ids: Vec<u64> = self.api_conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.api_conns.get_mut(&id) {
                c.keep_alive = false;
            }
            self.mark_api_flush(id);
        }
    }

    /// A plain HTTP request on the WebSocket port: the demo page and its two helpers.
    pub(super) fn on_page_request(&mut self, conn: u64, req: Request) {
        let demo = self.config.demo_enabled();
        let answer = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => Some(http::response(
                200,
                "text/html; charset=utf-8",
                DEMO_PAGE.as_bytes(),
                false,
            )),
            ("GET", "/demo/online") if demo => {
                let online: Vec<Value> = self
                    .registry
                    .users()
                    .take(200)
                    .map(|(uid, e)| json!({"uid": uid.to_string(), "sources": e.iter().map(|e| &*e.source).collect::<Vec<_>>()}))
                    .collect();
                Some(json_response(
                    200,
                    &json!({"code": 0, "online": online}).to_string(),
                    false,
                ))
            }
            ("GET", "/demo/login") if demo => match demo_login(&req, self.ids.next_id()) {
                Ok((record, body)) => {
                    self.pool.submit(
                        record.uid,
                        Task::SaveToken(record),
                        Origin::DemoLogin { conn, body },
                    );
                    None
                }
                Err(why) => Some(json_response(400, &http::error_body(400, &why), false)),
            },
            ("GET", "/demo/login" | "/demo/online") => Some(json_response(
                403,
                &http::error_body(
                    403,
                    "the demo login is off: the server is not on loopback and demo = false",
                ),
                false,
            )),
            _ => Some(json_response(
                404,
                &http::error_body(
                    404,
                    "not found; WebSocket clients connect to /?access_token=...",
                ),
                false,
            )),
        };
        if let Some(bytes) = answer {
            if let Some(s) = self.sessions.get_mut(&conn) {
                s.respond(&bytes);
            }
        }
        self.mark_flush(conn);
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
fn login_record(body: &[u8]) -> Result<TokenRecord, String> {
    let fields: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect(),
    };
    let uid = fields
        .get("uid")
        .and_then(protocol::uid_from_json)
        .ok_or("uid must be a uid")?;
    let source = fields
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or("app");
    if !valid_source(source) {
        return Err("source must match [a-z0-9_]{1,16}".into());
    }
    let token = fields
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 256);
    let token = token.ok_or("token must be 1 to 256 characters")?;
    let expires = fields
        .get("expires")
        .and_then(protocol::uid_from_json)
        .ok_or("expires must be a Unix time")?;
    Ok(TokenRecord {
        uid,
        source: source.into(),
        token: token.into(),
        expires,
    })
}

fn demo_login(req: &Request, nonce: u64) -> Result<(TokenRecord, String), String> {
    let uid = req
        .param("uid")
        .as_deref()
        .and_then(parse_uid)
        .ok_or("uid must be a number")?;
    let source = req.param("source").unwrap_or_else(|| "pc".into());
    if !valid_source(&source) {
        return Err("source must match [a-z0-9_]{1,16}".into());
    }
    let token = format!("demo{nonce:x}");
    let expires = crate::ids::unix_now() + DEMO_TOKEN_TTL;
    let access_token = protocol::encode_access_token(&token, uid, &source);
    let body =
        json!({"code": 0, "uid": uid.to_string(), "source": source, "access_token": access_token})
            .to_string();
    Ok((
        TokenRecord {
            uid,
            source,
            token,
            expires,
        },
        body,
    ))
}
