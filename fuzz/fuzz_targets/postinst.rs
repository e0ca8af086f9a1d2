//! See `kiln::fuzzing::postinst` (the body, shared with tests/fuzz_corpus.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln::fuzzing::run("postinst", data, std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
});
