//! What the fuzz targets and the seed generator share.

use pgp::composed::{KeyType, SecretKeyParamsBuilder, SignedSecretKey};
use pgp::types::Timestamp;
use rand::SeedableRng;

/// The `inrelease` target's signing key: the same every run (fixed seed and creation time), so
/// that the seeds signed by `examples/inrelease_seed.rs` verify against it.
pub fn fuzz_key() -> SignedSecretKey {
    let mut p = SecretKeyParamsBuilder::default();
    p.key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .created_at(Timestamp::from_secs(1_600_000_000))
        .primary_user_id("kiln fuzz <fuzz@kiln.invalid>".into());
    let rng = rand::rngs::StdRng::seed_from_u64(7);
    p.build().unwrap().generate(rng).unwrap()
}
