#![no_main]
// The decoder compiled alone (it needs no service, no AWS SDK: a fast fuzz
// build), with its property check (decode::fuzz::check); each event is then
// read by the rules engine's JSON scanner and matchers. The test suite runs
// the same check plus the whole evaluator over the corpus
// (trailwatch_processor::fuzz_targets::decode_input).
#[allow(dead_code, unused_imports)]
#[path = "../../processor/src/decode/mod.rs"]
mod decode;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    decode::fuzz::check(data, &mut |item| {
        if let decode::Decoded::Event(ev) = item {
            trailwatch_rules::fuzz::eval_event(ev.class, ev.json);
        }
    })
});
