//! What a repository, an index or a lock file may name: checked before anything is used in a
//! path or a URL. A digest names a cache file (`sha256/<digest>`, `data-tar/<digest>.tar.zst`),
//! and a `Filename` is joined to the repository's base URL, so both are refused unless they
//! have exactly the shape Debian gives them.

/// `Ok` if `s` is a SHA-256 as indexes and kiln's cache write it: 64 lower-case hex digits.
/// Anything else could name another file (`../../x`) when joined to a cache directory.
pub fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(());
    }
    Err(format!(
        "sha256 {:?} is not 64 lower-case hex digits",
        shorten(s)
    ))
}

/// `Ok` if `s` is a path inside a repository, as a `Packages` index's `Filename` or a Release
/// file's entry: relative, no `.`/`..`/empty components, and no characters that would change a
/// URL's meaning (`?`, `#`, `%`, `\`) or a line's (control characters).
pub fn check_repo_path(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("file name {:?} {why}", shorten(s)));
    if s.is_empty() {
        return bad("is empty");
    }
    if s.starts_with('/') {
        return bad("is absolute; a repository's file names are relative to its base URL");
    }
    if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("has an empty, \".\" or \"..\" component");
    }
    if s.chars()
        .any(|c| c.is_control() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return bad("has a control character or one of ? # % \\");
    }
    Ok(())
}

/// At most 80 characters of hostile input in a message.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let good = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(check_sha256(good).is_ok());
        assert!(check_sha256(&good.to_ascii_uppercase()).is_err());
        assert!(check_sha256(&good[1..]).is_err());
        assert!(check_sha256(&format!("{good}0")).is_err());
        assert!(check_sha256("../../victim").is_err());
        assert!(check_sha256(&format!("../{}", &good[3..])).is_err());
        assert!(check_sha256("").is_err());
    }

    #[test]
    fn repo_paths() {
        assert!(check_repo_path("pool/main/b/busybox/busybox_1.35.0-4+b3_amd64.deb").is_ok());
        assert!(check_repo_path("main/binary-amd64/Packages.xz").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "pool/../../etc/passwd",
            "pool//x.deb",
            "./x.deb",
            "x.deb?y",
            "x.deb#y",
            "x%2e%2e/y",
            "a\\b",
            "a\nb",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(500);
        assert!(check_sha256(&long).unwrap_err().len() < 150);
    }
}
