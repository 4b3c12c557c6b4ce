//! The plain HTTP answers of the WebSocket port: the browser library (`assets`), the demo page
//! (`GET /`) and its helpers: `/demo/online`, `/demo/login` and `/demo/join` (a uid joins a
//! group named `demo:...`, so that the page can show a group room). The demo login makes a token for any uid; that token lives only in the
//! router's demo table (`router::demo`), never in a token store, so it cannot replace a real
//! user's token. Both helpers answer only a browser that reaches this port itself, without a
//! proxy or TLS, while the demo is on (`refusal`); the page says exactly these rules.

use super::assets;
use crate::config::Config;
use crate::master::http::{self, json_response, Request};
use crate::master::router::{PushOutcome, ReplyTo};
use crate::master::Master;
use crate::model::{ConnId, GroupName, Source, Uid};
use crate::protocol::{encode_access_token_as, parse_uid};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Instant;

const PAGE: &str = include_str!("demo.html");
/// Users listed by `/demo/online` at most.
const ONLINE_LISTED: usize = 200;
/// The only groups the demo page may join: the demo must not change an application's groups.
const DEMO_GROUP_PREFIX: &str = "demo:";
/// Headers a proxy adds: a request that carries one did not come from the browser itself.
const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Why a demo helper answers 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoRefusal {
    /// A proxy's header, or a `server.trusted_proxies` peer: whoever is behind it may be
    /// anyone on the network, even when the server listens on loopback.
    Proxied,
    /// A TLS server is meant for the internet.
    Tls,
    /// Not on loopback, and `demo = false`.
    Off,
}

impl DemoRefusal {
    pub fn message(self) -> &'static str {
        match self {
            DemoRefusal::Proxied => {
                "the demo login is refused through a proxy (a Forwarded, X-Forwarded-For or \
                 X-Real-IP header, or a server.trusted_proxies address)"
            }
            DemoRefusal::Tls => "the demo login is off while TLS is on",
            DemoRefusal::Off => {
                "the demo login is off: the server does not listen on loopback and demo = false"
            }
        }
    }
}

/// The first rule that refuses the demo helpers to this request from `peer`, if any.
pub fn refusal(config: &Config, peer: IpAddr, req: &Request) -> Option<DemoRefusal> {
    let forwarded = PROXY_HEADERS.iter().any(|h| req.header(h).is_some());
    if forwarded || config.trusted_proxies().contains(peer) {
        Some(DemoRefusal::Proxied)
    } else if config.tls_enabled() {
        Some(DemoRefusal::Tls)
    } else if !config.demo_enabled() {
        Some(DemoRefusal::Off)
    } else {
        None
    }
}

impl Master {
    /// A plain HTTP request on the WebSocket port, answered at once.
    pub(crate) fn serve_page(&mut self, conn: ConnId, req: Request, now: Instant) {
        let Some((peer, via_proxy)) = self.ws.client(conn) else {
            return; // gone: nobody to answer
        };
        if let ("GET", Some(library)) = (req.method.as_str(), assets::library(&req.path)) {
            return self
                .ws
                .respond(conn, &assets::library_response(library), now);
        }
        let answer = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => http::response(200, "text/html; charset=utf-8", PAGE.as_bytes(), false),
            ("GET" | "POST", path @ ("/demo/login" | "/demo/online" | "/demo/join"))
                if (req.method == "POST") == (path == "/demo/join") =>
            {
                // Through a trusted proxy (a PROXY header names the client, who is not the
                // proxy): refused whatever the client's address.
                let why = match via_proxy {
                    true => Some(DemoRefusal::Proxied),
                    false => refusal(&self.config, peer.ip(), &req),
                };
                match why {
                    Some(why) => json_response(403, &http::error_body(403, why.message()), false),
                    None if path == "/demo/online" => self.demo_online(),
                    None if path == "/demo/join" => match self.demo_join(conn, &req) {
                        Some(answer) => answer,
                        // Answered once the store has the member (`ReplyTo::Page`).
                        None => return,
                    },
                    None => self.demo_login(&req, now),
                }
            }
            _ => json_response(
                404,
                &http::error_body(
                    404,
                    "not found; WebSocket clients connect to /?access_token=...",
                ),
                false,
            ),
        };
        self.ws.respond(conn, &answer, now);
    }

    fn demo_online(&self) -> Vec<u8> {
        let online: Vec<Value> = self
            .router
            .registry()
            .users()
            .take(ONLINE_LISTED)
            .map(|(uid, e)| json!({"uid": uid.to_string(), "sources": e.iter().map(|e| e.source.to_string()).collect::<Vec<_>>()}))
            .collect();
        json_response(
            200,
            &json!({"code": 0, "online": online}).to_string(),
            false,
        )
    }

    /// `uid` joins the group `demo:...` asked for; None: the answer comes later.
    fn demo_join(&mut self, conn: ConnId, req: &Request) -> Option<Vec<u8>> {
        let uid = req.param("uid").as_deref().and_then(parse_uid);
        let group = req
            .param("group")
            .as_deref()
            .filter(|g| g.starts_with(DEMO_GROUP_PREFIX))
            .and_then(GroupName::new);
        let (Some(uid), Some(group)) = (uid, group) else {
            let why = "uid must be a number and group a name starting with demo:";
            return Some(json_response(400, &http::error_body(400, why), false));
        };
        match self.router.demo_join(group, uid, ReplyTo::Page(conn)) {
            PushOutcome::Now { status, body } => Some(json_response(status, &body, false)),
            PushOutcome::Later => None,
        }
    }

    /// A demo token for the uid and source asked for, kept by the router alone.
    fn demo_login(&mut self, req: &Request, now: Instant) -> Vec<u8> {
        let (uid, source) = match demo_login_params(req) {
            Ok(p) => p,
            Err(why) => return json_response(400, &http::error_body(400, why), false),
        };
        match self.router.mint_demo_token(uid, source, now) {
            Ok(token) => {
                let layout = self.config.server.access_token_layout;
                let access_token = encode_access_token_as(layout, &token, uid.0, source.as_str());
                let expires_in = crate::master::router::demo::TTL.as_secs();
                let body = json!({"code": 0, "uid": uid.to_string(), "source": source.as_str(),
                    "access_token": access_token, "expires_in": expires_in});
                json_response(200, &body.to_string(), false)
            }
            Err(e) => {
                log::error!("{e}");
                json_response(503, &http::error_body(503, "no demo token now"), false)
            }
        }
    }
}

fn demo_login_params(req: &Request) -> Result<(Uid, Source), &'static str> {
    let uid = req
        .param("uid")
        .as_deref()
        .and_then(parse_uid)
        .ok_or("uid must be a number")?;
    let source = req.param("source").unwrap_or_else(|| "pc".into());
    let source = Source::new(&source).ok_or("source must match [a-z0-9_]{1,16}")?;
    Ok((uid, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(server: &str) -> Config {
        Config::parse(&format!("[server]\n{server}"), Path::new("t.toml")).expect("config")
    }

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/demo/login".into(),
            query: "uid=5".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            keep_alive: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn on_loopback_without_a_proxy_or_tls_the_demo_answers() {
        let c = config("");
        assert_eq!(refusal(&c, ip("127.0.0.1"), &request(&[])), None);
        let c = config("host = \"0.0.0.0\"\ndemo = true");
        assert_eq!(refusal(&c, ip("10.0.0.7"), &request(&[])), None);
    }

    #[test]
    fn a_proxys_header_or_address_refuses_the_demo_even_on_loopback() {
        let c = config("trusted_proxies = [\"127.0.0.2\", \"10.1.0.0/16\"]\ndemo = true");
        for header in ["forwarded", "x-forwarded-for", "x-real-ip"] {
            let req = request(&[(header, "203.0.113.9")]);
            let got = refusal(&c, ip("127.0.0.1"), &req);
            assert_eq!(got, Some(DemoRefusal::Proxied), "{header}");
        }
        for peer in ["127.0.0.2", "10.1.2.3", "::ffff:10.1.2.3"] {
            let got = refusal(&c, ip(peer), &request(&[]));
            assert_eq!(got, Some(DemoRefusal::Proxied), "{peer}");
        }
        assert_eq!(refusal(&c, ip("127.0.0.1"), &request(&[])), None);
    }

    #[test]
    fn tls_refuses_the_demo_and_so_does_demo_false_off_loopback() {
        let tls = config("ssl_cert_file = \"c.pem\"\nssl_key_file = \"k.pem\"\ndemo = true");
        let got = refusal(&tls, ip("127.0.0.1"), &request(&[]));
        assert_eq!(got, Some(DemoRefusal::Tls));
        let off = config("host = \"0.0.0.0\"");
        let got = refusal(&off, ip("127.0.0.1"), &request(&[]));
        assert_eq!(got, Some(DemoRefusal::Off));
        for why in [DemoRefusal::Proxied, DemoRefusal::Tls, DemoRefusal::Off] {
            assert!(why.message().starts_with("the demo login is"), "{why:?}");
        }
    }
}
