//! write_block_map → write_manifest → write_sbom: the records of a finished build.

use super::{step, BuildError, Prepared};
use crate::manifest::{self, Manifest, OutputRecord};
use crate::outputs;
use crate::packages;
use crate::sink::DiskDigest;
use std::path::{Path, PathBuf};

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
