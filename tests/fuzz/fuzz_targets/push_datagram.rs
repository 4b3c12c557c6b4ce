//! A UDP push datagram (or HTTP push body), signed or not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wspush::master::push::parse_push;
use wspush::master::signature::{split_datagram, Verifier};

fuzz_target!(|data: &[u8]| {
    let body = match split_datagram(data) {
        Some(Ok(signed)) => {
            let mut v = Verifier::new(30);
            let _ = v.verify("k", signed.timestamp, &signed.signature, signed.body, signed.timestamp);
            signed.body
        }
        Some(Err(_)) => return,
        None => data,
    };
    let _ = parse_push(body, Some("k"), None);
    let _ = parse_push(body, Some("k"), Some("k"));
});
