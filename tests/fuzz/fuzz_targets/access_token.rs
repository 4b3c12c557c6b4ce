//! `access_token` from a WebSocket URL: decoded in both layouts, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wspush::config::TokenLayout;
use wspush::protocol::decode_access_token;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for layout in [TokenLayout::TokenUidSource, TokenLayout::UidTokenSource] {
        if let Ok(c) = decode_access_token(&text, layout) {
            assert!(!c.token.is_empty() && !c.source.as_str().is_empty());
        }
    }
});
