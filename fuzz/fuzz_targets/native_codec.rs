#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessiond_fuzz::native_codec::check(data));
