//! What a recipe may reach on the build host beyond its own directory.
//!
//! A recipe is code-like input: it chooses what goes into an image that may then be published,
//! so a recipe from elsewhere must not be able to copy the builder's files (`source =
//! "/home/ci/.aws/credentials"`) or environment (`content = "${AWS_SECRET_ACCESS_KEY}"`) into
//! it. By default a `source` must resolve (symlinks followed) inside the recipe's directory, and
//! `${NAME}` may read only kiln's own `KILN_*` variables (such as `KILN_DEBIAN_MIRROR`, the
//! documented mirror switch). `--allow-host-paths` and `--allow-env NAME` lift each rule for a
//! recipe the user trusts. `SOURCE_DATE_EPOCH` is read as the reproducible-builds convention
//! says, never into a string.

use std::path::{Path, PathBuf};

/// Variables every recipe may read: kiln's own namespace, which holds no secret.
pub const ALWAYS_ALLOWED_PREFIX: &str = "KILN_";

/// What the user allowed this recipe beyond its directory and `KILN_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// `--allow-host-paths`: `source`s may name files anywhere on the host.
    pub host_paths: bool,
    /// `--allow-env NAME`: more variables `${NAME}` may read; `*` allows every one.
    pub env: Vec<String>,
}

impl Trust {
    /// Everything allowed: for recipes the caller wrote itself (tests, tools built on kiln).
    pub fn all() -> Trust {
        Trust {
            host_paths: true,
            env: vec!["*".into()],
        }
    }

    pub fn allows_env(&self, name: &str) -> bool {
        name.starts_with(ALWAYS_ALLOWED_PREFIX) || self.env.iter().any(|n| n == "*" || n == name)
    }

    /// `None` if `path` (which exists) may be read from a recipe in `base`; else the real paths
    /// of both, for the message.
    pub fn outside(&self, path: &Path, base: &Path) -> Option<(PathBuf, PathBuf)> {
        if self.host_paths {
            return None;
        }
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let base_dir = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let (p, b) = (real(path), real(base_dir));
        (!p.starts_with(&b)).then_some((p, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        let t = Trust::default();
        assert!(t.allows_env("KILN_DEBIAN_MIRROR"));
        assert!(!t.allows_env("HOME"));
        assert!(!t.allows_env("KILN"));
        let t = Trust {
            env: vec!["HOME".into()],
            ..Default::default()
        };
        assert!(t.allows_env("HOME") && !t.allows_env("USER"));
        assert!(Trust::all().allows_env("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn paths_inside_the_recipe_directory() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("recipes");
        std::fs::create_dir_all(base.join("files")).unwrap();
        std::fs::write(base.join("files/a"), "a").unwrap();
        std::fs::write(d.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("../../secret", base.join("files/link")).unwrap();
        let t = Trust::default();
        assert_eq!(t.outside(&base.join("files/a"), &base), None);
        assert_eq!(t.outside(&base.join("files/../files/a"), &base), None);
        assert!(t.outside(&base.join("../secret"), &base).is_some());
        assert!(t.outside(&base.join("files/link"), &base).is_some());
        assert!(t.outside(Path::new("/etc/hostname"), &base).is_some());
        assert_eq!(Trust::all().outside(&base.join("files/link"), &base), None);
    }
}
