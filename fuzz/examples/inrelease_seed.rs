//! Writes `keyring.asc` (the public half of [`kiln_fuzz::fuzz_key`]) and `corpus/inrelease/signed-*`:
//! Release texts that key signed, so that the `inrelease` target starts from signatures that
//! verify and mutates from there.
//! `cargo +nightly run --example inrelease_seed` (from fuzz/).

use pgp::composed::{ArmorOptions, CleartextSignedMessage};
use pgp::types::Password;
use rand::SeedableRng;

fn main() {
    let key = kiln_fuzz::fuzz_key();
    let digest = "0f3a9c1e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    let texts = [
        format!(
            "Origin: Debian\nLabel: Debian\nSuite: oldstable\nCodename: bookworm\n\
             Date: Sat, 10 Jun 2023 08:54:47 UTC\nValid-Until: Sat, 17 Jun 2023 08:54:47 UTC\n\
             Architectures: amd64 arm64\nComponents: main contrib\nDescription: seed\n\
             SHA256:\n {digest} 1234 main/binary-amd64/Packages.xz\n {digest}   99 main/binary-amd64/Packages.gz\n"
        ),
        "Suite: bookworm\nCodename: bookworm\nSHA256:\n".to_string(),
        "- dash-escaped\nSuite: x\n".to_string(),
    ];
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let public = pgp::composed::SignedPublicKey::from(key.clone());
    let armored = public.to_armored_string(ArmorOptions::default()).unwrap();
    std::fs::write(fuzz.join("keyring.asc"), armored).unwrap();
    let dir = fuzz.join("corpus/inrelease");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let rng = rand::rngs::StdRng::seed_from_u64(i as u64);
        let msg =
            CleartextSignedMessage::sign(rng, t, &key.primary_key, &Password::empty()).unwrap();
        let armored = msg.to_armored_string(ArmorOptions::default()).unwrap();
        std::fs::write(dir.join(format!("signed-{i}")), armored).unwrap();
    }
}
