//! HTTP/1.1 requests parsed incrementally with `httparse`, and responses. Bounded: a header
//! block over `MAX_HEAD` or a body over the caller's cap is an error, never a bigger buffer.

use std::borrow::Cow;

pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query-string parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        query_param(&self.query, name)
    }
}

pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole request, and how many bytes of the buffer it took.
    Complete(Request, usize),
    /// The request is unacceptable: answer with this status and close.
    Invalid(u16, &'static str),
}

/// How long a request's body may be, by its path.
pub trait BodyLimit {
    fn for_path(&self, path: &str) -> usize;
}

impl BodyLimit for usize {
    fn for_path(&self, _: &str) -> usize {
        *self
    }
}

pub fn parse_request(buf: &[u8], max_body: impl BodyLimit) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Invalid(431, "request header too large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid(431, "too many headers"),
        Err(_) => return Parsed::Invalid(400, "malformed request"),
    };
    if head_len > MAX_HEAD {
        return Parsed::Invalid(431, "request header too large");
    }
    let method = req.method.unwrap_or("GET").to_string();
    let target = origin_form(req.path.unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if find("transfer-encoding").is_some() {
        return Parsed::Invalid(411, "chunked bodies are not supported; send Content-Length");
    }
    let body_len = match content_length(&headers) {
        Ok(n) => n,
        Err(why) => return Parsed::Invalid(400, why),
    };
    if body_len > max_body.for_path(path) {
        return Parsed::Invalid(413, "request body too large");
    }
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }
    let connection = find("connection").map(str::to_ascii_lowercase);
    let keep_alive = match req.version {
        Some(0) => connection.as_deref() == Some("keep-alive"),
        _ => connection.as_deref() != Some("close"),
    };
    Parsed::Complete(
        Request {
            method,
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body: buf[head_len..head_len + body_len].to_vec(),
            keep_alive,
        },
        head_len + body_len,
    )
}

/// The body length the headers declare. RFC 9112 section 6.3: digits only, and several
/// Content-Length headers must agree, or the framing (and so the next request) is ambiguous.
fn content_length(headers: &[(String, String)]) -> Result<usize, &'static str> {
    let mut declared = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err("bad Content-Length");
        }
        let n: usize = value.parse().map_err(|_| "bad Content-Length")?;
        if declared.is_some_and(|d| d != n) {
            return Err("conflicting Content-Length headers");
        }
        declared = Some(n);
    }
    Ok(declared.unwrap_or(0))
}

/// `http://host/path?q` (absolute form, which servers must accept) becomes `/path?q`.
fn origin_form(target: &str) -> &str {
    let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    else {
        return target;
    };
    rest.find('/').map_or("/", |i| &rest[i..])
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub fn response(status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    response_with(status, content_type, &[], body, keep_alive)
}

/// As `response`, with more header lines (`name`, `value`).
pub fn response_with(
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn json_response(status: u16, body: &str, keep_alive: bool) -> Vec<u8> {
    response(status, "application/json", body.as_bytes(), keep_alive)
}

/// `{"code":N,"msg":"..."}`, the error shape of every push door.
pub fn error_body(code: u16, msg: &str) -> String {
    serde_json::json!({"code": code, "msg": msg}).to_string()
}

/// The secret a request presents: `Authorization: Bearer`, then `sk` in the query, then in a
/// JSON or form body.
pub fn presented_secret(req: &Request) -> Option<Cow<'_, str>> {
    if let Some(auth) = req.header("authorization") {
        // The scheme name is case-insensitive (RFC 9110 section 11.1).
        if let Some((scheme, sk)) = auth.trim().split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(Cow::Borrowed(sk.trim()));
            }
        }
    }
    if let Some(sk) = req.param("sk") {
        return Some(Cow::Owned(sk));
    }
    if let Ok(serde_json::Value::Object(map)) =
        serde_json::from_slice::<serde_json::Value>(&req.body)
    {
        return map
            .get("sk")
            .and_then(|v| v.as_str())
            .map(|s| Cow::Owned(s.to_string()));
    }
    query_param(std::str::from_utf8(&req.body).ok()?, "sk").map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_requests_one_at_a_time() {
        let two = b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\n";
        let Parsed::Complete(r, n) = parse_request(two, 100) else {
            panic!("first")
        };
        assert_eq!(
            (
                r.method.as_str(),
                r.path.as_str(),
                r.query.as_str(),
                &r.body[..]
            ),
            ("POST", "/a", "x=1", &b"hi"[..])
        );
        let Parsed::Complete(r, m) = parse_request(&two[n..], 100) else {
            panic!("second")
        };
        assert_eq!(r.path, "/b");
        assert_eq!(n + m, two.len());
    }

    #[test]
    fn absolute_form_targets_are_accepted() {
        let Parsed::Complete(r, _) =
            parse_request(b"GET http://x:1/healthz?a=1 HTTP/1.1\r\n\r\n", 0)
        else {
            panic!("parses")
        };
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/healthz", "a=1"));
    }

    #[test]
    fn waits_for_the_whole_body() {
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 100),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x", 100),
            Parsed::Partial
        ));
    }

    #[test]
    fn bounds_are_enforced() {
        let big = b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n";
        assert!(matches!(parse_request(big, 100), Parsed::Invalid(413, _)));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert!(matches!(parse_request(&long, 100), Parsed::Invalid(431, _)));
        assert!(matches!(
            parse_request(b"\x01\x02 / HTTP/1.1\r\n\r\n", 100),
            Parsed::Invalid(400, _)
        ));
        let signed = b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}";
        assert!(matches!(
            parse_request(signed, 100),
            Parsed::Invalid(400, _)
        ));
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 60\r\n\r\n{}";
        assert!(matches!(parse_request(twice, 100), Parsed::Invalid(400, _)));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_request(chunked, 100),
            Parsed::Invalid(411, _)
        ));
    }

    #[test]
    fn secret_from_header_query_or_body() {
        let p = |raw: &[u8]| match parse_request(raw, 1000) {
            Parsed::Complete(r, _) => r,
            other => panic!("{other:?}"),
        };
        let r = p(b"GET /?sk=a%20b HTTP/1.1\r\n\r\n");
        assert_eq!(presented_secret(&r).as_deref(), Some("a b"));
        let r = p(b"GET / HTTP/1.1\r\nAuthorization: bearer k1\r\n\r\n");
        assert_eq!(presented_secret(&r).as_deref(), Some("k1"));
        let r = p(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"sk\":\"k2\"}");
        assert_eq!(presented_secret(&r).as_deref(), Some("k2"));
        let r = p(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(presented_secret(&r), None);
    }
}
