#![no_main]
// See trailwatch_processor::fuzz_targets::config_text. Needs the whole
// processor (AWS SDK included): built only with `--features service`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| trailwatch_processor::fuzz_targets::config_text(data));
