//! Errors of the package layer: each names the repository, file or package to look at.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("no APT source on this machine serves suite \"{suite}\" (looked in {looked}); set KILN_DEBIAN_MIRROR or give the repository's uri")]
    NoHostSource { suite: String, looked: String },
    #[error("{url}: cannot fetch: {problem}")]
    Fetch { url: String, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keyring {path}: {problem}; expected an OpenPGP keyring such as /usr/share/keyrings/debian-archive-keyring.gpg")]
    Keyring { path: PathBuf, problem: String },
    #[error("{url}: the signature does not verify against any key in {keyring}; the repository or the keyring is wrong, or the file was tampered with")]
    BadSignature { url: String, keyring: PathBuf },
    #[error("{url}: no signature counts: {why}; gpgv and APT refuse such keys too (update the keyring {keyring}, or the repository must sign with a valid key)")]
    UnusableKey {
        url: String,
        keyring: PathBuf,
        why: String,
    },
    #[error("{url}: {problem}")]
    Release { url: String, problem: String },
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual} ({what})")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
        what: &'static str,
    },
    #[error("{url}: {problem}")]
    Index { url: String, problem: String },
    #[error("{url}: the download is larger than the {size} bytes the signed index names; stopped there (the mirror serves another file)")]
    TooLarge { url: String, size: u64 },
    #[error("cannot install {package}: {problem}\n  needed by: {chain}")]
    Unsatisfiable {
        package: String,
        problem: String,
        chain: String,
    },
    #[error("{a} and {b} cannot be installed together: {a} {relation} {rel_text}")]
    Conflict {
        a: String,
        b: String,
        relation: &'static str,
        rel_text: String,
    },
    #[error("package {package}: {problem}")]
    Deb { package: String, problem: String },
    #[error("package {package}: member {member:?} {problem}; the .deb is hostile or broken")]
    DebMember {
        package: String,
        member: String,
        problem: String,
    },
    #[error("lock file {path}: {problem}")]
    Lock { path: PathBuf, problem: String },
    #[error("{0}")]
    Etc(String),
}

pub type Result<T, E = PackageError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PackageError {
    let path = path.into();
    move |source| PackageError::Io { path, source }
}
