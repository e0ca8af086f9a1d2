//! `InRelease`: the cleartext signature framework and OpenPGP packets (rPGP), kiln's key checks,
//! then the Release fields and SHA256 list. The keyring is [`kiln_fuzz::fuzz_key`]; the seeds in
//! `seeds/inrelease` are texts it signed (see fuzz/README.md).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgp::composed::SignedPublicKey;
use std::path::Path;

fn keyring() -> &'static [SignedPublicKey] {
    static KEYS: std::sync::OnceLock<Vec<SignedPublicKey>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| vec![SignedPublicKey::from(kiln_fuzz::fuzz_key())])
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = keyring();
    let _ = kiln::packages::release::verify(text, keys, "u", Path::new("k"), Some(1_700_000_000));
    if let Ok(r) = kiln::packages::release::parse(text) {
        let _ = kiln::packages::release::check(&r, "bookworm", Some(1_700_000_000), "u");
    }
});
