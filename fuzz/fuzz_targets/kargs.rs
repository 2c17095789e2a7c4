//! Kernel argument splitting and diffing: never panic; applying a diff reaches the new list.
#![no_main]
use libfuzzer_sys::fuzz_target;
use machine_config_core::config::kargs;
use machine_config_core::plan::kargs as kdiff;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (a, b) = s.split_at(s.char_indices().nth(s.chars().count() / 2).map_or(0, |(i, _)| i));
    let (Ok(old), Ok(new)) = (kargs::split(a), kargs::split(b)) else { return };
    let base = vec!["root=/dev/vda".to_string(), "rw".to_string()];
    let cmdline = [base.clone(), old.clone()].concat();
    assert_eq!(kdiff::apply(&cmdline, &kdiff::diff(&old, &new)), [base, new].concat());
});
