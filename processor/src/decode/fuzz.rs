//! The decoder's fuzzing property, shared by the `decode` cargo-fuzz target
//! (which compiles this module alone, without the service) and the test that
//! replays the corpus (through `crate::fuzz_targets`).

use super::{decode, decode_reader, DecodeOptions, Decoded, GZIP_MAGIC};

/// Small limits, so that a bomb the fuzzer builds costs 1 MiB, not 128.
pub fn options() -> DecodeOptions {
    DecodeOptions { max_decompressed_bytes: 1 << 20, max_nesting: 4 }
}

/// Decodes arbitrary bytes as one unit, both forms (in memory and
/// streaming); `on_item` sees the in-memory form's items. Property: nothing
/// is lost silently — a non-blank plain unit yields at least one item
/// (event, error, skip or object reference) in both forms.
pub fn check(data: &[u8], on_item: &mut dyn FnMut(Decoded<'_>)) {
    let opts = options();
    let mut items = 0u64;
    decode(data, "fuzz", &opts, &mut |item| {
        items += 1;
        on_item(item);
    });
    let mut streamed = 0u64;
    decode_reader(data, "fuzz", &opts, &mut |_| streamed += 1).expect("reading a slice cannot fail");
    let plain_non_blank = !data.starts_with(&GZIP_MAGIC) && data.iter().any(|c| !c.is_ascii_whitespace());
    if plain_non_blank {
        assert!(items > 0, "decode: non-blank input yielded nothing");
        assert!(streamed > 0, "decode_reader: non-blank input yielded nothing");
    }
}
