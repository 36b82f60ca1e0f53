#![no_main]
// See trailwatch_rules::fuzz::condition_text for what is fed and checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| trailwatch_rules::fuzz::condition_text(data));
