//! `dists/<suite>/InRelease`: the OpenPGP cleartext-signed Release file (Debian wiki
//! "DebianRepository/Format"). Its signature is checked against the recipe's keyring, its
//! `Suite` or `Codename` must be the suite asked for, and its `SHA256` list pins every index.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;

use pgp::composed::{CleartextSignedMessage, Deserializable, PublicOrSecret, SignedPublicKey};
use pgp::types::KeyDetails;

use super::error::{PackageError, Result};
use super::index::{field, paragraphs};
use super::keys::{self, Which};
use super::names;

/// What kiln uses from a Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    /// Seconds since 1970, if the file has `Valid-Until`.
    pub valid_until: Option<i64>,
    /// Path below `dists/<suite>/` → (size, hex SHA-256).
    pub sha256: BTreeMap<String, (u64, String)>,
}

/// The most a keyring file may hold.
const MAX_KEYRING: u64 = 16 << 20;

/// Every public key in an OpenPGP keyring file (binary or ASCII-armoured).
pub fn load_keyring(path: &Path) -> Result<Vec<SignedPublicKey>> {
    let fail = |problem: String| PackageError::Keyring {
        path: path.to_owned(),
        problem,
    };
    // Debian's keyring is about 100 KiB; the cap keeps a wrong path (a huge file, /proc/kcore)
    // from being read whole.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_KEYRING + 1), &mut bytes)
        })
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > MAX_KEYRING {
        return Err(fail(format!("is larger than {MAX_KEYRING} bytes")));
    }
    let parsed: Vec<_> = if bytes.starts_with(b"-----BEGIN") {
        SignedPublicKey::from_armor_many(&bytes[..])
            .map_err(|e| fail(e.to_string()))?
            .0
            .collect()
    } else {
        SignedPublicKey::from_bytes_many(BufReader::new(&bytes[..]))
            .map_err(|e| fail(e.to_string()))?
            .collect()
    };
    let mut keys = Vec::new();
    for k in parsed {
        match k {
            Ok(k) => keys.push(k),
            // One unreadable key should not hide the others (APT skips them too).
            Err(e) => tracing::debug!("{}: skipping a key: {e}", path.display()),
        }
    }
    if keys.is_empty() {
        return Err(fail("holds no usable public key".into()));
    }
    Ok(keys)
}

/// Keys parsed with `PublicOrSecret` (test keyrings may hold secret keys) become public keys.
pub fn public_of(k: PublicOrSecret) -> SignedPublicKey {
    match k {
        PublicOrSecret::Public(p) => p,
        PublicOrSecret::Secret(s) => s.to_public_key(),
    }
}

/// Checks the cleartext signature of `text` against every primary key and subkey of `keys`;
/// returns the signed text (with `\n` line ends).
///
/// A signature counts only when it verifies and its key is one gpgv would accept at `now`
/// (see [`keys::usable`]: not expired, not revoked, allowed to sign); signatures by keys the
/// keyring lacks are ignored, as APT ignores them.
pub fn verify(
    text: &str,
    keyring_keys: &[SignedPublicKey],
    url: &str,
    keyring: &Path,
    now: Option<i64>,
) -> Result<String> {
    let bad = || PackageError::BadSignature {
        url: url.to_owned(),
        keyring: keyring.to_owned(),
    };
    let (msg, _) = CleartextSignedMessage::from_string(text).map_err(|_| bad())?;
    let signed = msg.signed_text();
    let mut refused = Vec::new();
    for sig in msg.signatures() {
        // RFC 9580 §5.2.3.11: a signature without a creation time is not valid.
        let Some(created) = sig.created().map(|t| i64::from(t.as_secs())) else {
            continue;
        };
        let expired = sig
            .signature_expiration_time()
            .filter(|d| d.as_secs() > 0)
            .map(|d| created + i64::from(d.as_secs()))
            .filter(|end| now.is_some_and(|n| *end <= n));
        for k in keyring_keys {
            let subkeys = k.public_subkeys.iter().enumerate();
            let made_by = if sig.verify(&k.primary_key, signed.as_bytes()).is_ok() {
                Some((Which::Primary, k.primary_key.fingerprint()))
            } else {
                subkeys
                    .filter(|(_, s)| sig.verify(&s.key, signed.as_bytes()).is_ok())
                    .map(|(i, s)| (Which::Subkey(i), s.key.fingerprint()))
                    .next()
            };
            let Some((which, fpr)) = made_by else {
                continue;
            };
            if let Some(end) = expired {
                refused.push(format!(
                    "the signature by key {fpr} expired at {}",
                    crate::recipe::format_utc(end)
                ));
                continue;
            }
            match keys::usable(k, which, created, now) {
                Ok(()) => return Ok(signed.replace("\r\n", "\n")),
                Err(why) => refused.push(format!("key {fpr} {why}")),
            }
        }
    }
    if refused.is_empty() {
        return Err(bad());
    }
    Err(PackageError::UnusableKey {
        url: url.to_owned(),
        keyring: keyring.to_owned(),
        why: refused.join("; "),
    })
}

/// Parses the (already verified) Release text. Every `SHA256` line must be `digest size name`
/// with a 64-hex digest and a relative name: the digest names a cache file and the name a URL.
pub fn parse(text: &str) -> std::result::Result<Release, String> {
    let ps = paragraphs(text);
    let empty = Vec::new();
    let p = ps.first().unwrap_or(&empty);
    let mut sha256 = BTreeMap::new();
    for line in field(p, "SHA256").unwrap_or("").lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let entry = match w[..] {
            [] => continue,
            [hash, size, name] => {
                let hash = hash.to_ascii_lowercase();
                names::check_sha256(&hash)
                    .and_then(|()| names::check_repo_path(name))
                    .and_then(|()| {
                        size.parse::<u64>()
                            .map_err(|_| format!("size {size:?} is not a number"))
                    })
                    .map(|size| (name, size, hash))
            }
            _ => Err("is not \"digest size name\"".to_owned()),
        };
        let (name, size, hash) =
            entry.map_err(|e| format!("SHA256 line {:?}: {e}", line.trim()))?;
        sha256.insert(name.to_owned(), (size, hash));
    }
    Ok(Release {
        suite: field(p, "Suite").unwrap_or("").to_owned(),
        codename: field(p, "Codename").unwrap_or("").to_owned(),
        valid_until: field(p, "Valid-Until").and_then(parse_rfc2822),
        sha256,
    })
}

/// Checks that `rel` is the suite asked for (by `Suite` or `Codename`: bookworm's file says
/// `Suite: oldstable`, `Codename: bookworm`) and that it has not expired at `now`.
///
/// `now` is the one legitimate read of the wall clock in kiln: `Valid-Until` is about the
/// freshness of what a mirror serves today, not about the image. Callers inject it.
pub fn check(rel: &Release, suite: &str, now: Option<i64>, url: &str) -> Result<()> {
    if rel.suite != suite && rel.codename != suite {
        return Err(PackageError::Release {
            url: url.to_owned(),
            problem: format!(
                "is for suite {:?} (codename {:?}), not {suite:?}; the mirror serves another suite under this name",
                rel.suite, rel.codename
            ),
        });
    }
    if let (Some(until), Some(now)) = (rel.valid_until, now) {
        if now > until {
            return Err(PackageError::Release {
                url: url.to_owned(),
                problem: format!(
                    "expired (Valid-Until is {until} seconds since 1970, now is {now}); the mirror is stale, use a fresher one"
                ),
            });
        }
    }
    Ok(())
}

/// `Sat, 10 Jun 2023 08:54:47 UTC` → seconds since 1970.
pub fn parse_rfc2822(s: &str) -> Option<i64> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let w = if w.first()?.ends_with(',') {
        &w[1..]
    } else {
        &w[..]
    };
    let [day, mon, year, hms, ..] = w else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x.eq_ignore_ascii_case(mon))? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = t[..] else { return None };
    Some(crate::util::days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_rfc2822("Sat, 10 Jun 2023 08:54:47 UTC"),
            Some(1_686_387_287)
        );
        assert_eq!(parse_rfc2822("garbage"), None);
    }

    #[test]
    fn suite_or_codename_and_expiry() {
        let r = parse(&format!(
            "Suite: oldstable\nCodename: bookworm\nValid-Until: Thu, 01 Jan 1970 00:01:40 UTC\n\
             SHA256:\n {} 10 main/binary-amd64/Packages.xz\n",
            "0123".repeat(16)
        ))
        .unwrap();
        assert_eq!(r.sha256["main/binary-amd64/Packages.xz"].0, 10);
        assert!(check(&r, "bookworm", Some(50), "u").is_ok());
        assert!(check(&r, "oldstable", None, "u").is_ok());
        assert!(check(&r, "trixie", None, "u").is_err());
        assert!(check(&r, "bookworm", Some(101), "u")
            .unwrap_err()
            .to_string()
            .contains("expired"));
    }

    #[test]
    fn sha256_lines_are_digests_and_relative_names() {
        let with = |line: &str| parse(&format!("Suite: s\nSHA256:\n {line}\n"));
        let d = "ab".repeat(32);
        assert!(with(&format!("{d} 10 main/binary-amd64/Packages.xz")).is_ok());
        let e = with("../../victim 10 main/binary-amd64/Packages.xz").unwrap_err();
        assert!(e.contains("64 lower-case hex"), "{e}");
        let e = with(&format!("{d} 10 ../../../etc/passwd")).unwrap_err();
        assert!(e.contains("\"..\""), "{e}");
        assert!(with(&format!("{d} ten main/x")).is_err());
        assert!(with(&format!("{d} 10")).is_err());
    }
}
