#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chronicle_fuzz_harness::visibility_query::run(data));
