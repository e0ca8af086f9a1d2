//! `<recipe stem>.lock`: the exact packages a recipe resolved to, so that `kiln build --locked`
//! installs them again without reading any index (and, with a warm cache, without a network).
//!
//! The file is TOML, sorted by package name, and holds no mirror host name: a package names the
//! suite of the recipe's repository it came from, and the recipe says where that suite lives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{PackageError, Result};
use super::names;
use super::resolve::Request;
use super::Chosen;

/// The lock file's contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub request: LockedRequest,
    #[serde(default, rename = "package")]
    pub packages: Vec<Chosen>,
}

/// What the recipe asked for when the lock was made; `--locked` refuses a recipe that changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedRequest {
    pub architecture: String,
    pub suites: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub required: bool,
}

impl LockedRequest {
    pub fn new(req: &Request, arch: &str, suites: &[String]) -> Self {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        LockedRequest {
            architecture: arch.to_owned(),
            suites: suites.to_vec(),
            include: sorted(&req.include),
            exclude: sorted(&req.exclude),
            required: req.required,
        }
    }
}

const HEADER: &str = "# kiln lock file: the packages `kiln build --locked` installs.\n\
                      # Written by `kiln lock`; do not edit by hand.\n\n";

/// `dir/x.toml` → `dir/x.lock`.
pub fn lock_path(recipe: &Path) -> PathBuf {
    recipe.with_extension("lock")
}

/// Writes `lock` (packages sorted) to `path`; the same lock always gives the same bytes.
pub fn write(path: &Path, lock: &Lock) -> Result<()> {
    let mut lock = lock.clone();
    lock.packages
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
    let body = toml::to_string(&lock).map_err(|e| PackageError::Lock {
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    crate::util::write_atomic(path, format!("{HEADER}{body}").as_bytes()).map_err(|e| {
        PackageError::Lock {
            path: path.to_owned(),
            problem: format!("cannot be written: {e}"),
        }
    })
}

/// Reads a lock file.
pub fn read(path: &Path) -> Result<Lock> {
    let text = std::fs::read_to_string(path).map_err(|e| PackageError::Lock {
        path: path.to_owned(),
        problem: format!("cannot be read ({e}); run `kiln lock` on the recipe first"),
    })?;
    let lock: Lock = toml::from_str(&text).map_err(|e| PackageError::Lock {
        path: path.to_owned(),
        problem: format!("is not a valid lock file: {}", e.message()),
    })?;
    // A lock file is input like any other: its digests name cache files and its file names
    // become URLs, so both must have Debian's shape before anything uses them.
    for p in &lock.packages {
        names::check_sha256(&p.sha256)
            .and_then(|()| names::check_repo_path(&p.filename))
            .map_err(|problem| PackageError::Lock {
                path: path.to_owned(),
                problem: format!(
                    "package {:?}: {problem}; run `kiln lock` again rather than editing the lock",
                    p.name
                ),
            })?;
    }
    Ok(lock)
}

/// Checks that the recipe still asks for what the lock was made from; the error lists every
/// difference.
pub fn check(path: &Path, lock: &Lock, now: &LockedRequest) -> Result<()> {
    let was = &lock.request;
    let mut diffs = Vec::new();
    let list = |what: &str, a: &[String], b: &[String], diffs: &mut Vec<String>| {
        for x in b.iter().filter(|x| !a.contains(x)) {
            diffs.push(format!("the recipe's {what} has {x}, the lock's does not"));
        }
        for x in a.iter().filter(|x| !b.contains(x)) {
            diffs.push(format!("the lock's {what} has {x}, the recipe's does not"));
        }
    };
    list("packages.include", &was.include, &now.include, &mut diffs);
    list("packages.exclude", &was.exclude, &now.exclude, &mut diffs);
    list("repository suites", &was.suites, &now.suites, &mut diffs);
    if was.required != now.required {
        diffs.push(format!(
            "packages.required is {} in the recipe, {} in the lock",
            now.required, was.required
        ));
    }
    if was.architecture != now.architecture {
        diffs.push(format!(
            "the architecture is {} in the recipe, {} in the lock",
            now.architecture, was.architecture
        ));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(PackageError::Lock {
        path: path.to_owned(),
        problem: format!(
            "no longer matches the recipe: {}; run `kiln lock` again, or build without --locked",
            diffs.join("; ")
        ),
    })
}
