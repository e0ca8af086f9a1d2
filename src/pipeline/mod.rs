//! How a recipe becomes a disk, as one flat list of steps (after mkosi's `build_image`).
//!
//! ```text
//! load_recipe → plan_disk → resolve_packages → fetch_packages → install_packages
//!             → configure_packages → configure_etc | configure_fstab → install_tree
//!             → configure_services → prepare_first_boot → install_bootloader
//!             → split_filesystems → plan_outputs → check_fit (when a disk format is written)
//!             → write_disk (GPT head, each filesystem, GPT tail; block-mapped, and with
//!               `--sha256` hashed whole, as it streams into every disk format at once)
//!               | write_oci (the tree as an OCI layer, beside it)
//!             → finalize_outputs → write_block_map → write_manifest → write_sbom
//! ```
//!
//! Each step is logged and timed through `tracing`. The disk is streamed into a
//! [`BlockSink`](crate::sink::BlockSink), so the same steps write image files or feed an uploader. What each format
//! needs (its target, its writer, its manifest record) is in [`crate::outputs`].

mod debian;
mod fit;
mod records;
mod split;
mod stream;
mod types;

pub use records::{write_records, write_records_at};
pub(crate) use stream::disk_error;
pub use stream::{write_disk, write_disk_mapped};
use types::input_info;
pub use types::{check_scripts, BuildError, BuildOptions, BuildOutput, Prepared, Progress};

use crate::boot;
use crate::configure;
use crate::disk::layout;
use crate::outputs;
use crate::packages;
use crate::recipe::{Recipe, Trust};
use crate::tree::{self, ContentStore, Meta, Time, Tree};

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

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
    let mut prepared = prepare_tree(recipe_path, locked, popts, trust)?;
    prepared.check_fit()?;
    Ok(prepared)
}

/// [`prepare_trusted`] without `check_fit`: the root tree split into its filesystems, for
/// outputs that are no disk (an OCI image has no partition for its tree to fit).
pub fn prepare_tree(
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
    let (mut base, packages, scripts) = match recipe.packages {
        Some(_) => debian::install(&recipe, locked, popts, &store)?,
        None => (
            Tree::new(Meta::new(0o755, 0, 0, sde)),
            Vec::new(),
            Default::default(),
        ),
    };
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
        split::split_filesystems(built.tree, &recipe, &plan)
    })?;
    let inputs = built
        .inputs
        .iter()
        .map(|i| input_info(i, &recipe))
        .collect();
    Ok(Prepared {
        recipe,
        plan,
        contents,
        ext4_plans: Vec::new(),
        inputs: Mutex::new(inputs),
        pending: Mutex::new(Some(pending)),
        packages,
        boot: installed,
        scripts,
        _store: store,
    })
}

/// `kiln build`: the recipe to its image files (one per format) and its manifest.
pub fn build(recipe_path: &Path, opts: BuildOptions) -> Result<BuildOutput, BuildError> {
    let popts = opts.packages.clone().unwrap_or_default();
    let mut prepared = prepare_tree(recipe_path, opts.locked, &popts, &opts.trust)?;
    check_scripts(&prepared, opts.strict_scripts)?;
    let targets = step("plan_outputs", || outputs::plan(&prepared.recipe, &opts))?;
    if !targets.disks.is_empty() {
        prepared.check_fit()?;
    }
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
