//! registries.conf comparison: never panic; a config compared with itself is always safe.
#![no_main]
use libfuzzer_sys::fuzz_target;
use machine_config_core::plan::registries;

fuzz_target!(|data: &[u8]| {
    let mid = data.len() / 2;
    let _ = registries::classify(&data[..mid], &data[mid..]);
    if let Ok(v) = registries::classify(data, data) {
        assert!(v.safe, "identical configs must be safe: {}", v.reason);
    }
});
