//! How a recipe becomes a disk, as one flat list of steps (after mkosi's `build_image`).
//!
//! ```text
//! load_recipe → plan_disk → resolve_packages → fetch_packages → install_packages
//!             → configure_packages → configure_etc | configure_fstab → install_tree
//!             → configure_services → prepare_first_boot → install_bootloader
//!             → split_filesystems → check_fit
//!             → plan_outputs
//!             → write_disk (GPT head, each filesystem, GPT tail; block-mapped, and with
//!               `--sha256` hashed whole, as it streams into every disk format at once)
//!               | write_oci (the tree as an OCI layer, beside it)
//!             → finalize_outputs → write_block_map → write_manifest → write_sbom
//! ```
//!
//! Each step is logged and timed through `tracing`. The disk is streamed into a
//! [`BlockSink`], so the same steps write image files or feed an uploader. What each format
//! needs (its target, its writer, its manifest record) is in [`crate::outputs`].

use crate::boot::{self, BootError};
use crate::configure::{self, ConfigureError};
use crate::disk::assemble::{self, Contents, DiskError};
use crate::disk::layout::{self, DiskPlan, LayoutError};
use crate::fs::{ext4, fat};
use crate::manifest::{self, InputInfo, Manifest, OutputRecord, PackageInfo};
use crate::outputs;
use crate::packages::{self, PackageError};
use crate::recipe::{Filesystem, OutputFormat, Recipe, RecipeError, Trust};
use crate::sink::{BlockSink, DiskDigest, HashSink, PendingDigest, Want};
use crate::tree::{
    self, ContentStore, Kind, Meta, Node, NodeId, PendingDigests, Time, Tree, TreeError,
};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

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
    /// The recipe's inputs; `[[tree]]` digests are filled in by [`Prepared::inputs`].
    inputs: Mutex<Vec<InputInfo>>,
    pending: Mutex<Option<PendingDigests>>,
    /// Installed Debian packages, sorted by name.
    pub packages: Vec<PackageInfo>,
    /// What `[boot]` installed (loader, kernel, command line).
    pub boot: Option<boot::Installed>,
    /// The maintainer-script commands kiln did not apply (the manifest's `maintainer_scripts`).
    pub scripts: configure::Report,
    /// Holds extracted archive members until the disk is written.
    _store: ContentStore,
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

pub(crate) fn step<T, E>(name: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let t = Instant::now();
    tracing::info!("{name}");
    let r = f();
    tracing::debug!("{name} took {:.3}s", t.elapsed().as_secs_f64());
    r
}

/// Everything up to the first byte of the disk.
pub fn prepare(recipe_path: &Path) -> Result<Prepared, BuildError> {
    prepare_with(recipe_path, false, &packages::Options::default())
}

/// [`prepare`], with `--locked` and the package options.
pub fn prepare_with(
    recipe_path: &Path,
    locked: bool,
    popts: &packages::Options,
) -> Result<Prepared, BuildError> {
    prepare_trusted(recipe_path, locked, popts, &Trust::default())
}

/// [`prepare_with`], with what the user allowed the recipe to read from the host.
pub fn prepare_trusted(
    recipe_path: &Path,
    locked: bool,
    popts: &packages::Options,
    trust: &Trust,
) -> Result<Prepared, BuildError> {
    let recipe = step("load_recipe", || Recipe::load_with(recipe_path, trust))?;
    let store =
        step("create_content_store", ContentStore::new).map_err(|source| BuildError::Output {
            path: std::env::temp_dir(),
            source,
        })?;
    let plan = step("plan_disk", || layout::plan(&recipe))?;
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    let mut base = Tree::new(Meta::new(0o755, 0, 0, sde));
    let mut installed_packages = Vec::new();
    let mut scripts = configure::Report::default();
    if recipe.packages.is_some() {
        let fetcher = packages::Fetcher::new(popts.cache.clone());
        let chosen = step("resolve_packages", || match locked {
            true => packages::resolve_locked(&recipe),
            false => packages::resolve_fresh(&recipe, &fetcher, popts),
        })?;
        let debs = step("fetch_packages", || {
            packages::fetch_packages(&recipe, &chosen, &fetcher, popts)
        })?;
        base = step("install_packages", || {
            let keep = fetcher.cache_dir().join("data-tar");
            packages::install_packages(&recipe, &chosen, &debs, Some(&keep), &store)
        })?;
        installed_packages = packages::package_infos(&chosen);
        scripts = step("configure_packages", || {
            configure::configure_packages(&mut base, &recipe)
        })?;
        if let Some(w) = scripts.summary() {
            tracing::warn!("{w}");
        }
    }
    if recipe.packages.is_some() || !recipe.users.is_empty() || !recipe.groups.is_empty() {
        step("configure_etc", || {
            packages::etc::configure(&mut base, &recipe, &plan)
        })?;
    } else if recipe.boot.is_some() {
        // Before install_tree, so that a recipe's own /etc/fstab replaces it.
        step("configure_fstab", || {
            boot::install_fstab(&mut base, &plan, sde)
        })?;
    }
    let (mut built, pending) = step("install_tree", || {
        tree::build_tree_on_deferred(base, &recipe, &store)
    })?;
    if recipe.services.is_some() {
        step("configure_services", || {
            configure::services::apply(&mut built.tree, &recipe)
        })?;
    }
    if recipe.packages.is_some() {
        step("prepare_first_boot", || {
            configure::firstboot::apply(&mut built.tree, sde)
        })?;
    }
    let installed = match &recipe.boot {
        Some(b) => Some(step("install_bootloader", || {
            boot::install(&mut built.tree, &recipe, b, &plan, &store)
        })?),
        None => None,
    };
    let contents = step("split_filesystems", || {
        split_filesystems(built.tree, &recipe, &plan)
    })?;
    step("check_fit", || check_fit(&plan, &contents, &recipe))?;
    let base = recipe.path.parent().unwrap_or(Path::new(""));
    let inputs = built
        .inputs
        .iter()
        .map(|i| InputInfo {
            kind: i.kind.to_string(),
            source: manifest::relative_to(&i.source, base),
            sha256: i.sha256.clone(),
        })
        .collect();
    Ok(Prepared {
        recipe,
        plan,
        contents,
        inputs: Mutex::new(inputs),
        pending: Mutex::new(Some(pending)),
        packages: installed_packages,
        boot: installed,
        scripts,
        _store: store,
    })
}

/// Streams the whole disk into `sink` (an EBS sink, which computes the block map from the blocks
/// it sends) and returns once the last byte is written; the disk's SHA-256, if `sha256` asks for
/// it, is still being finished on its own thread: the zeros after the last write, most of a
/// sparse disk.
pub fn write_disk(
    p: &Prepared,
    sink: &mut dyn BlockSink,
    sha256: bool,
) -> Result<PendingDigest, BuildError> {
    let want = Want {
        sha256,
        blocks: false,
    };
    let hashed = write_hashed(p, sink, None, want)?;
    hashed.finish_later().map(|(_, d)| d).map_err(disk_error)
}

/// [`write_disk`] into a build's disk formats (see [`crate::outputs`]): with the block map, and
/// the whole-disk SHA-256 only if `sha256`. The digests are still being finished on their
/// threads when it returns, while the formats complete their files.
pub fn write_disk_mapped(
    p: &Prepared,
    sink: &mut dyn BlockSink,
    progress: Option<&dyn Progress>,
    sha256: bool,
) -> Result<PendingDigest, BuildError> {
    let want = Want {
        sha256,
        blocks: true,
    };
    let hashed = write_hashed(p, sink, progress, want)?;
    hashed.finish_later().map(|(_, d)| d).map_err(disk_error)
}

pub(crate) fn disk_error(source: io::Error) -> BuildError {
    BuildError::Output {
        path: PathBuf::from("<disk>"),
        source,
    }
}

/// Writes every byte of the disk through a [`HashSink`] and returns it, unfinished.
fn write_hashed<'a>(
    p: &Prepared,
    sink: &'a mut dyn BlockSink,
    progress: Option<&'a dyn Progress>,
    want: Want,
) -> Result<HashSink<ProgressSink<'a>>, BuildError> {
    let time = Time::from_secs(p.recipe.image.source_date_epoch);
    let mut hashed = HashSink::new(
        ProgressSink {
            inner: sink,
            progress,
        },
        p.plan.size,
        want,
    );
    if let Some(pr) = progress {
        pr.start(p.plan.size);
    }
    assemble::write_disk(
        &p.plan,
        &p.contents,
        &p.recipe.image.seed,
        time,
        &mut hashed,
    )?;
    Ok(hashed)
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

/// `kiln build`: the recipe to its image files (one per format) and its manifest.
pub fn build(recipe_path: &Path, opts: BuildOptions) -> Result<BuildOutput, BuildError> {
    let popts = opts.packages.clone().unwrap_or_default();
    let prepared = prepare_trusted(recipe_path, opts.locked, &popts, &opts.trust)?;
    check_scripts(&prepared, opts.strict_scripts)?;
    let targets = step("plan_outputs", || outputs::plan(&prepared.recipe, &opts))?;
    // write_disk | write_oci, side by side; every file complete under a temporary name.
    let written = outputs::write(&prepared, &targets, opts.progress.as_deref(), opts.sha256)?;
    let (digest, records) = step("finalize_outputs", || written.persist())?;
    let (manifest_path, m) = write_records(&prepared, &targets.image, digest, None, records)?;
    Ok(BuildOutput {
        image: targets.image,
        manifest_path,
        manifest: m,
    })
}

/// `kiln build A.toml B.toml --format oci`: one multi-arch OCI image (see [`crate::outputs`]).
pub use crate::outputs::build_multiarch_oci;

/// Writes the manifest (and the SBOM when packages are installed) for a build whose disk (if it
/// streamed one) has `digest` and whose files are `outputs`, named as if it were the raw image
/// `image`; shared by file builds and `--upload`.
pub fn write_records(
    prepared: &Prepared,
    image: &Path,
    digest: Option<DiskDigest>,
    snapshot: Option<manifest::SnapshotInfo>,
    outputs: Vec<OutputRecord>,
) -> Result<(PathBuf, Manifest), BuildError> {
    let manifest_path = manifest::manifest_path(image);
    write_records_at(prepared, &manifest_path, digest, snapshot, outputs, image)
}

/// [`write_records`] with the manifest's path given (a multi-arch OCI build writes one per
/// recipe).
pub fn write_records_at(
    prepared: &Prepared,
    manifest_path: &Path,
    digest: Option<DiskDigest>,
    snapshot: Option<manifest::SnapshotInfo>,
    outputs: Vec<OutputRecord>,
    image: &Path,
) -> Result<(PathBuf, Manifest), BuildError> {
    let manifest_path = manifest_path.to_path_buf();
    let map = digest.as_ref().and_then(|d| d.map.clone());
    let mut m = manifest::new(&prepared.recipe, &prepared.plan, digest.map(|d| (image, d)));
    m.outputs = outputs;
    m.inputs = prepared.inputs()?;
    m.packages = prepared.packages.clone();
    m.snapshot = snapshot;
    m.maintainer_scripts = (!prepared.scripts.is_empty()).then(|| prepared.scripts.clone());
    m.boot_mode = prepared
        .boot
        .as_ref()
        .and_then(|b| b.boot_mode())
        .map(str::to_string);
    let out_err = |path: &Path, source| BuildError::Output {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = manifest_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| out_err(dir, e))?;
    }
    if let Some(map) = map {
        // Before the manifest, which names its digest: a manifest never names a missing map.
        let path = crate::sink::mapfile::blocks_path(image);
        step("write_block_map", || map.write(&path)).map_err(|e| out_err(&path, e))?;
    }
    step("write_manifest", || manifest::write(&m, &manifest_path))
        .map_err(|e| out_err(&manifest_path, e))?;
    if let (false, Some(subject)) = (m.packages.is_empty(), outputs::sbom_subject(&m)) {
        let path = outputs::sbom_path(&manifest_path);
        let doc = packages::sbom::document(
            &m.name,
            &m.version,
            &subject.file,
            &subject.identity,
            subject.sha256.as_deref(),
            m.source_date_epoch,
            &m.packages,
        );
        step("write_sbom", || manifest::write_json(&doc, &path)).map_err(|e| out_err(&path, e))?;
    }
    Ok((manifest_path, m))
}

struct ProgressSink<'a> {
    inner: &'a mut dyn BlockSink,
    progress: Option<&'a dyn Progress>,
}

impl BlockSink for ProgressSink<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)?;
        if let Some(p) = self.progress {
            p.update(offset + data.len() as u64);
        }
        Ok(())
    }
}

/// Cuts the tree at each partition's mount point, deepest first; `/` keeps what is left.
fn split_filesystems(
    mut tree: Tree,
    recipe: &Recipe,
    plan: &DiskPlan,
) -> Result<Vec<Contents>, BuildError> {
    let time = Time::from_secs(recipe.image.source_date_epoch);
    let mut order: Vec<usize> = (0..plan.partitions.len()).collect();
    let depth = |i: &usize| {
        plan.partitions[*i]
            .mount
            .as_deref()
            .map(|m| m.split('/').filter(|c| !c.is_empty()).count())
    };
    order.sort_by_key(|i| std::cmp::Reverse(depth(i)));
    let mut trees: Vec<Option<Tree>> = (0..plan.partitions.len()).map(|_| None).collect();
    let mut root_index = None;
    for i in order {
        let p = &plan.partitions[i];
        if p.filesystem == Filesystem::None {
            continue;
        }
        match p.mount.as_deref() {
            Some("/") => root_index = Some(i),
            Some(m) => {
                let at =
                    mount_point(&mut tree, m, time).ok_or_else(|| BuildError::MountNotDir {
                        pos: p.pos.clone(),
                        label: p.label.clone(),
                        mount: m.to_string(),
                        path: m.to_string(),
                    })?;
                trees[i] = Some(tree.split_off(at));
            }
            None => trees[i] = Some(Tree::new(Meta::new(0o755, 0, 0, time))),
        }
    }
    match root_index {
        Some(i) => trees[i] = Some(tree),
        None => {
            // Without a root filesystem only directories (mount points) may be left over.
            let walk = tree.walk();
            if let Some((path, _)) = walk.iter().find(|(_, id)| !tree.node(*id).is_dir()) {
                let example = String::from_utf8_lossy(path).into_owned();
                return Err(BuildError::Unmounted { example });
            }
        }
    }
    Ok(plan
        .partitions
        .iter()
        .zip(trees)
        .map(|(p, t)| match (p.filesystem, t) {
            (Filesystem::Vfat, Some(t)) => Contents::Fat(t),
            (Filesystem::Ext4, Some(t)) => Contents::Ext4(t),
            _ => Contents::Empty,
        })
        .collect())
}

/// The directory at `path`, created (0755, root) where missing; `None` if a component exists
/// and is not a directory.
fn mount_point(tree: &mut Tree, path: &str, time: Time) -> Option<NodeId> {
    let mut at = Tree::ROOT;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        at = match tree.child(at, comp.as_bytes()) {
            Some(id) if tree.node(id).is_dir() => id,
            Some(_) => return None,
            None => tree.add(at, comp.as_bytes(), Node::dir(Meta::new(0o755, 0, 0, time))),
        };
    }
    Some(at)
}

fn check_fit(plan: &DiskPlan, contents: &[Contents], recipe: &Recipe) -> Result<(), BuildError> {
    let time = Time::from_secs(recipe.image.source_date_epoch);
    for (i, (p, c)) in plan.partitions.iter().zip(contents).enumerate() {
        match c {
            Contents::Ext4(t) => {
                let opts = assemble::ext4_options(plan, i, &recipe.image.seed, time);
                ext4::plan(t, &opts).map_err(|source| {
                    BuildError::Disk(DiskError::Ext4 {
                        label: p.label.clone(),
                        size: p.size(),
                        source,
                    })
                })?;
            }
            Contents::Fat(t) => {
                let fat_err = |source| {
                    BuildError::Disk(DiskError::Fat {
                        label: p.label.clone(),
                        size: p.size(),
                        source,
                    })
                };
                let mount = p.mount.as_deref().unwrap_or("");
                fat::check(t, mount).map_err(fat_err)?;
                fat::check_size(p.size()).map_err(fat_err)?;
                // FAT32 spends about 1/128 of the volume on its two FATs at 4 KiB clusters;
                // check_size made sure the volume is larger than that and the reserved MiB.
                let available = p.size().saturating_sub(p.size() / 128 + (1 << 20));
                let needed: u64 = t
                    .walk()
                    .iter()
                    .map(|(_, id)| match &t.node(*id).kind {
                        Kind::File(c) => c.len().div_ceil(4096) * 4096,
                        _ => 4096,
                    })
                    .sum();
                if needed > available {
                    return Err(BuildError::FatFull {
                        label: p.label.clone(),
                        needed,
                        available,
                        size: p.size(),
                    });
                }
            }
            Contents::Empty => {}
        }
    }
    Ok(())
}
