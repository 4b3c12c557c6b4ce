//! The browser client library, built into the binary and served on the WebSocket port:
//! `/wspush.js` (an ES module) and `/wspush.classic.js` (a classic script that sets
//! `window.WsPush`). Both are the one source, `wspush.js`, wrapped at compile time, so the two
//! can never differ.

use crate::master::http;

/// The ES module: the source, then its exports.
pub const MODULE: &str = concat!(
    include_str!("wspush.js"),
    "\nexport { WsPush, WsPushError };\nexport default WsPush;\n"
);

/// The classic script: the source in a function scope, then the one global it sets.
pub const CLASSIC: &str = concat!(
    "(function () {\n\"use strict\";\n",
    include_str!("wspush.js"),
    "\nglobalThis.WsPush = WsPush;\n})();\n"
);

/// The library at `path`, if that is one of its two addresses.
pub fn library(path: &str) -> Option<&'static str> {
    match path {
        "/wspush.js" => Some(MODULE),
        "/wspush.classic.js" => Some(CLASSIC),
        _ => None,
    }
}

/// The library's answer. Any origin may load it (a module script from another origin needs
/// CORS); `no-cache` makes a browser ask again, so a server upgrade brings the new library.
pub fn library_response(source: &str) -> Vec<u8> {
    let headers = [
        ("Access-Control-Allow-Origin", "*"),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
    ];
    http::response_with(
        200,
        "text/javascript; charset=utf-8",
        &headers,
        source.as_bytes(),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_builds_wrap_the_one_source() {
        let source = include_str!("wspush.js");
        assert!(MODULE.starts_with(source) && MODULE.contains("export { WsPush, WsPushError };"));
        assert!(CLASSIC.contains(source) && CLASSIC.contains("globalThis.WsPush = WsPush;"));
        // The source itself exports nothing: a classic script cannot contain `export`.
        assert!(!source
            .lines()
            .any(|l| l.trim_start().starts_with("export ")));
        assert_eq!(library("/wspush.js"), Some(MODULE));
        assert_eq!(library("/wspush.classic.js"), Some(CLASSIC));
        assert_eq!(library("/wspush"), None);
    }

    #[test]
    fn the_library_is_served_as_javascript_to_any_origin() {
        let r = String::from_utf8(library_response(MODULE)).expect("text");
        let (head, body) = r.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/javascript; charset=utf-8"));
        assert!(head.contains("Access-Control-Allow-Origin: *"));
        assert!(head.contains(&format!("Content-Length: {}", MODULE.len())));
        assert_eq!(body, MODULE);
    }
}
