//! The value of `login{uid}` in Redis: JSON or think_serialize PHP, written by someone else.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wspush::store::login_record::{parse, source_record, to_think_serialize};

fuzz_target!(|data: &[u8]| {
    if let Ok(all) = parse(data) {
        let _ = source_record(&all, "app");
        // What we write back must read back.
        let again = to_think_serialize(&all);
        let _ = parse(again.as_bytes());
    }
});
