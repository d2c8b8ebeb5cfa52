#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessiond_fuzz::resp_decode::check(data));
