//! Data URL decoding and bounded gzip: never panic, never exceed the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use machine_config_core::config::dataurl;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(bytes) = dataurl::decode(s) {
            let _ = dataurl::decompress(bytes, Some("gzip"), 1 << 20);
        }
    }
    if let Ok(out) = dataurl::decompress(data.to_vec(), Some("gzip"), 1 << 16) {
        assert!(out.len() <= 1 << 16);
    }
});
