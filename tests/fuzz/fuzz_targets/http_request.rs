//! Bytes on the HTTP API port (or the WebSocket port before the upgrade), pipelined.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wspush::master::http::{parse_request, presented_secret, Parsed};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Every request in the buffer, as a keep-alive connection would take them.
    while let Parsed::Complete(req, used) = parse_request(rest, 65_536) {
        assert!(used > 0 && used <= rest.len());
        let _ = presented_secret(&req);
        let _ = req.param("to_uid");
        rest = &rest[used..];
    }
});
