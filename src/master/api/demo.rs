//! The demo page on the WebSocket port (`GET /`) and its two helpers: `/demo/online` and
//! `/demo/login`, which makes a token for any uid, so both work only while the server listens
//! on loopback or `demo = true`.

use crate::master::http::{self, json_response, Request};
use crate::master::router::Origin;
use crate::master::Master;
use crate::model::{ConnId, Source, TokenRecord};
use crate::protocol::{encode_access_token, parse_uid};
use serde_json::{json, Value};
use std::time::Instant;

const PAGE: &str = include_str!("demo.html");
/// How long a demo login token lives.
const DEMO_TOKEN_TTL: u64 = 24 * 3600;
/// Users listed by `/demo/online` at most.
const ONLINE_LISTED: usize = 200;

impl Master {
    /// A plain HTTP request on the WebSocket port: answered now, or once its token is saved.
    pub(crate) fn serve_page(&mut self, conn: ConnId, req: Request, now: Instant) {
        let demo = self.config.demo_enabled();
        let answer = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => Some(http::response(
                200,
                "text/html; charset=utf-8",
                PAGE.as_bytes(),
                false,
            )),
            ("GET", "/demo/online") if demo => {
                let online: Vec<Value> = self
                    .router
                    .registry()
                    .users()
                    .take(ONLINE_LISTED)
                    .map(|(uid, e)| json!({"uid": uid.to_string(), "sources": e.iter().map(|e| e.source.to_string()).collect::<Vec<_>>()}))
                    .collect();
                Some(json_response(
                    200,
                    &json!({"code": 0, "online": online}).to_string(),
                    false,
                ))
            }
            ("GET", "/demo/login") if demo => {
                let nonce = self.router.next_id().0;
                match demo_login(&req, nonce) {
                    Ok((record, body)) => {
                        self.router
                            .save_token(record, Origin::DemoLogin { conn, body });
                        None
                    }
                    Err(why) => Some(json_response(400, &http::error_body(400, why), false)),
                }
            }
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
            self.ws.respond(conn, &bytes, now);
        }
    }
}

fn demo_login(req: &Request, nonce: u64) -> Result<(TokenRecord, String), &'static str> {
    let uid = req
        .param("uid")
        .as_deref()
        .and_then(parse_uid)
        .ok_or("uid must be a number")?;
    let source = req.param("source").unwrap_or_else(|| "pc".into());
    let source = Source::new(&source).ok_or("source must match [a-z0-9_]{1,16}")?;
    let token = format!("demo{nonce:x}");
    let expires = crate::ids::unix_now() + DEMO_TOKEN_TTL;
    let access_token = encode_access_token(&token, uid.0, source.as_str());
    let body = json!({"code": 0, "uid": uid.to_string(), "source": source.as_str(), "access_token": access_token})
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
