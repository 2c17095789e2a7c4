//! MachineConfig parsing (YAML/JSON, Ignition 2.2/3.x, data URLs, image refs, kargs): errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use machine_config_core::config::MachineConfig;
use machine_config_core::config::ignition;

fuzz_target!(|data: &[u8]| {
    let _ = MachineConfig::from_slice(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = ignition::parse(&v, "spec.config", &mut Vec::new());
    }
});
