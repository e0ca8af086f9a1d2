//! What kiln did not apply of the maintainer scripts, per package, for the manifest
//! (`maintainer_scripts`) and the build's one warning line.

use serde::{Deserialize, Serialize};

/// One command of a maintainer script that kiln did not run as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub package: String,
    /// `preinst`, `postinst`, or `postinst triggered`.
    pub script: String,
    pub line: usize,
    /// The command as kiln read it (`…` where a word was unknown).
    pub command: String,
    pub reason: String,
}

/// `not_applied`: commands whose effect is missing from the image (`--strict-scripts` makes
/// them errors). `deferred`: commands whose effect happens anyway, named in the reason (a unit
/// on first boot, kiln's own handling, another build step), or that act on a running system
/// an image does not have.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    pub not_applied: Vec<Entry>,
    pub deferred: Vec<Entry>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.not_applied.is_empty() && self.deferred.is_empty()
    }

    /// The one warning line a build prints, or `None` when everything was applied.
    pub fn summary(&self) -> Option<String> {
        if self.not_applied.is_empty() {
            return None;
        }
        let mut pkgs: Vec<&str> = self
            .not_applied
            .iter()
            .map(|e| e.package.as_str())
            .collect();
        pkgs.sort();
        pkgs.dedup();
        let shown: Vec<&str> = pkgs.iter().take(5).copied().collect();
        let more = if pkgs.len() > shown.len() {
            format!(" and {} more", pkgs.len() - shown.len())
        } else {
            String::new()
        };
        Some(format!(
            "{} maintainer-script command(s) of {} package(s) were not applied ({}{more}); the manifest lists each under maintainer_scripts.not_applied, and --strict-scripts makes them errors",
            self.not_applied.len(),
            pkgs.len(),
            shown.join(", "),
        ))
    }

    pub fn sort(&mut self) {
        self.not_applied.sort();
        self.not_applied.dedup();
        self.deferred.sort();
        self.deferred.dedup();
    }
}
