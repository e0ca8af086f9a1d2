//! What a build takes, gives back and fails with, and the recipe made ready to stream
//! ([`Prepared`]).

use crate::boot::{self, BootError};
use crate::configure::{self, ConfigureError};
use crate::disk::assemble::{Contents, DiskError};
use crate::disk::layout::{DiskPlan, LayoutError};
use crate::manifest::{InputInfo, Manifest, PackageInfo};
use crate::packages::{self, PackageError};
use crate::recipe::{OutputFormat, Recipe, RecipeError, Trust};
use crate::tree::{ContentStore, PendingDigests, TreeError};
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use super::step;

/// Reports how far the disk has been written (the CLI draws a bar with it).
pub trait Progress {
    fn start(&self, total_bytes: u64);
    fn update(&self, written_up_to: u64);
    fn finish(&self);
}

#[derive(Default)]
pub struct BuildOptions {
    /// Image path; default `out/<name>.raw`.
    pub output: Option<PathBuf>,
    pub progress: Option<Box<dyn Progress>>,
    /// Install exactly the packages of `<recipe stem>.lock` (no index is read).
    pub locked: bool,
    /// Cache, APT configuration and clock for packages; `None`: the defaults.
    pub packages: Option<packages::Options>,
    /// `--strict-scripts`: a maintainer-script command kiln did not apply fails the build.
    pub strict_scripts: bool,
    /// What the recipe may read from the host (`--allow-host-paths`, `--allow-env`).
    pub trust: Trust,
    /// Also compute the SHA-256 of the whole disk (`--sha256`): it hashes every zero byte, so it
    /// costs the disk's size, where the blocks digest costs only its data.
    pub sha256: bool,
    /// The formats to write; `None`: the recipe's `[output] formats` (default raw).
    pub formats: Option<Vec<OutputFormat>>,
    /// The OCI image as one `.tar`; `None`: the recipe's `[output] oci_archive`.
    pub oci_archive: Option<bool>,
}

#[derive(Debug)]
pub struct BuildOutput {
    /// The raw image's path (`-o`); the other formats sit beside it (see `manifest.outputs`).
    pub image: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(
        "{pos}: partition \"{label}\" mounts {mount}, but {path} in the tree is not a directory"
    )]
    MountNotDir {
        pos: crate::recipe::Pos,
        label: String,
        mount: String,
        path: String,
    },
    #[error("the tree has files outside every partition's mount (for example {example}); add a partition with mount = \"/\"")]
    Unmounted { example: String },
    #[error("partition \"{label}\": the files need {needed} bytes but the {size}-byte FAT32 partition holds at most {available}; grow the partition")]
    FatFull {
        label: String,
        needed: u64,
        available: u64,
        size: u64,
    },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("--sha256 hashes the whole disk, and this build writes no disk image (formats: {formats}); an OCI image's digests are always computed: drop --sha256, or add a disk format (--format raw)")]
    Sha256WithoutDisk { formats: String },
    #[error(transparent)]
    Packages(#[from] PackageError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Configure(#[from] ConfigureError),
}

/// A recipe turned into filesystems' trees and a disk plan: everything needed to stream the disk.
pub struct Prepared {
    pub recipe: Recipe,
    pub plan: DiskPlan,
    pub contents: Vec<Contents>,
    /// The ext4 plans check_fit made from `contents` (`None` for other partitions): write_disk
    /// writes from them rather than planning each filesystem again.
    pub(super) ext4_plans: Vec<Option<crate::fs::ext4::Plan>>,
    /// The recipe's inputs; `[[tree]]` digests are filled in by [`Prepared::inputs`].
    pub(super) inputs: Mutex<Vec<InputInfo>>,
    pub(super) pending: Mutex<Option<PendingDigests>>,
    /// Installed Debian packages, sorted by name.
    pub packages: Vec<PackageInfo>,
    /// What `[boot]` installed (loader, kernel, command line).
    pub boot: Option<boot::Installed>,
    /// The maintainer-script commands kiln did not apply (the manifest's `maintainer_scripts`).
    pub scripts: configure::Report,
    /// Holds extracted archive members until the disk is written.
    pub(super) _store: ContentStore,
}

impl Prepared {
    /// The inputs with their digests, waiting for the `[[tree]]` digests still being hashed
    /// (they run on their own threads while the disk is written).
    pub fn inputs(&self) -> Result<Vec<InputInfo>, BuildError> {
        let lock_err = || BuildError::Output {
            path: PathBuf::from("<inputs>"),
            source: io::Error::other("input digest state poisoned"),
        };
        let mut inputs = self.inputs.lock().map_err(|_| lock_err())?;
        let pending = self.pending.lock().map_err(|_| lock_err())?.take();
        if let Some(p) = pending {
            step("collect_input_digests", || {
                p.finish(|i, sha| inputs[i].sha256 = sha)
            })?;
        }
        Ok(inputs.clone())
    }
}

/// `--strict-scripts`: fails when a maintainer-script command was not applied.
pub fn check_scripts(p: &Prepared, strict: bool) -> Result<(), BuildError> {
    match p.scripts.not_applied.first() {
        Some(first) if strict => Err(BuildError::Configure(ConfigureError::Strict {
            count: p.scripts.not_applied.len(),
            first: format!(
                "{} {} line {}: {} ({})",
                first.package, first.script, first.line, first.command, first.reason
            ),
        })),
        _ => Ok(()),
    }
}

/// A `[[tree]]` input as the manifest records it: its source relative to the recipe.
pub(super) fn input_info(i: &crate::tree::InputDigest, recipe: &Recipe) -> InputInfo {
    let base = recipe.path.parent().unwrap_or(std::path::Path::new(""));
    InputInfo {
        kind: i.kind.to_string(),
        source: crate::manifest::relative_to(&i.source, base),
        sha256: i.sha256.clone(),
    }
}
