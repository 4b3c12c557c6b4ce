//! A text frame from a logged-in client.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wspush::protocol::client::parse_client_frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_client_frame(text);
    }
});
