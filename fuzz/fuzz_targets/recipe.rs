//! The recipe loader: TOML, spans, `${NAME}` expansion, every table's validation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |n: &str| match n {
        "KILN_X" => Some("x".to_string()),
        "SOURCE_DATE_EPOCH" => Some("1700000000".to_string()),
        _ => None,
    };
    // A directory that does not exist: sources are looked up, never found, never read.
    let path = Path::new("/nonexistent-kiln-fuzz/r.toml");
    let _ = kiln::recipe::Recipe::from_str_with_env(text, path, &env);
    let _ = kiln::recipe::Recipe::from_str_with(text, path, &env, &kiln::recipe::Trust::all());
});
