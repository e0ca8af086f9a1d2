//! Small helpers shared across layers.

use sha2::{Digest, Sha256};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A 16-byte identifier derived from the recipe seed and a purpose string, shaped as an RFC 4122
/// version-4 UUID so that tools accept it. Same seed and purpose, same UUID: never random.
pub fn derive_uuid(seed: &str, purpose: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"kiln-uuid\0");
    h.update(seed.as_bytes());
    h.update(b"\0");
    h.update(purpose.as_bytes());
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Formats a UUID's bytes (big-endian, RFC 4122 order) as `xxxxxxxx-xxxx-...`.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// SHA-256 (hex) of a file's bytes.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_distinct() {
        let a = derive_uuid("s", "disk");
        assert_eq!(a, derive_uuid("s", "disk"));
        assert_ne!(a, derive_uuid("s", "root"));
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(uuid_string(&a).len(), 36);
    }
}
