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

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

/// Feeds `n` zero bytes to `h` (a disk's holes, which are hashed but never read).
pub fn sha256_zeros(h: &mut sha2::Sha256, mut n: u64) {
    use sha2::Digest;
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// SHA-256 (hex) of a file's bytes.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
    // Holes are hashed as the zeros they read as, without reading them (a sparse 4 GiB image
    // holding 400 MiB is 400 MiB of reads).
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let ranges = crate::tree::seek_data_ranges(&f, len)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    for r in ranges {
        sha256_zeros(&mut h, r.start - at);
        let mut pos = r.start;
        while pos < r.end {
            let k = (r.end - pos).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..k], pos)?;
            h.update(&buf[..k]);
            pos += k as u64;
        }
        at = r.end;
    }
    sha256_zeros(&mut h, len - at);
    Ok(hex(&h.finalize()))
}

/// A UTC calendar time: year, month, day, hour, minute, second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// the inverse of [`civil`]'s date part).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since 1970 as a UTC calendar time (Howard Hinnant's `civil_from_days`, proleptic
/// Gregorian). Every date kiln prints (SBOM, AMI names, FAT timestamps) goes through here.
pub fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month: month as u32,
        day: day as u32,
        hour: (rem / 3600) as u32,
        min: (rem / 60 % 60) as u32,
        sec: (rem % 60) as u32,
    }
}

/// Writes `bytes` to `path` atomically: a temp file beside it (removed on Ctrl-C), mode 0644,
/// renamed over `path` only once everything is written.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = crate::cleanup::create_registered(
        || {
            tempfile::Builder::new()
                .prefix(".kiln-tmp.")
                .tempfile_in(dir)
        },
        |t| t.path().to_path_buf(),
    )?;
    let tmp_path = tmp.path().to_path_buf();
    let done = tmp
        .write_all(bytes)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| tmp.persist(path).map(drop).map_err(|e| e.error));
    crate::cleanup::unregister(&tmp_path);
    done
}

#[cfg(test)]
mod sha_tests {
    #[test]
    fn sparse_file_hash_equals_the_plain_hash() {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(9 << 20).unwrap();
        f.write_all_at(b"middle", 3 << 20).unwrap();
        f.write_all_at(&[7u8; 70_000], (5 << 20) - 100).unwrap();
        let want = super::hex(&Sha256::digest(std::fs::read(&p).unwrap()));
        assert_eq!(super::sha256_file(&p).unwrap(), want);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(
            super::sha256_file(&p).unwrap(),
            super::hex(&Sha256::digest(b""))
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        let c = super::civil(1_700_000_000);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.min, c.sec),
            (2023, 11, 14, 22, 13, 20)
        );
        assert_eq!(super::civil(0).year, 1970);
        assert_eq!(super::civil(951_782_400).day, 29, "2000-02-29");
    }

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

/// Reads until `buf` is full or the input ends; returns how many bytes came (fewer only at the
/// end). Unlike `read_exact`, a short input is not an error: the caller says what it means.
pub fn read_full(r: &mut (impl std::io::Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
