//! A UDP push datagram (or HTTP push body), signed or not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wspush::protocol::push::parse_push;
use wspush::protocol::signature::{split_datagram, Verifier};

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
    if let Ok(push) = parse_push(body, Some("k"), Some("k")) {
        // The frame a recipient gets must be JSON whatever the pusher wrote.
        let frame = push.data.frame(wspush::model::MessageId(1), 2);
        let json = wspush::protocol::frames::payload(&frame.frame);
        assert!(serde_json::from_slice::<serde_json::Value>(json).is_ok());
        if let Some(r) = frame.content {
            assert!(r.end <= frame.frame.len());
        }
    }
});
