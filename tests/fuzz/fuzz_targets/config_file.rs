//! A configuration file: parsed and validated, or refused with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wspush::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Config::parse(text, std::path::Path::new("fuzz.toml")) {
            let _ = e.to_string();
        }
    }
});
