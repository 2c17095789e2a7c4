//! The gate's own test (`scripts/fuzz.sh --self-test`): a planted crash on the seed `PLANTED`, which the
//! gate must report as a failing run. Never part of the default target list.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"PLANTED") {
        panic!("planted crash: the fuzz gate must fail on this input");
    }
});
