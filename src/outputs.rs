//! What a build writes, by format: where each file goes, the disk formats written in the disk's
//! one pass (see [`crate::sink::formats`]), the OCI image written from the tree beside it (see
//! [`crate::oci`]), and their records for the manifest. Every output is complete under a
//! temporary name before any is renamed into place, so a failure leaves none of them.
//!
//! Each file's sha256 is recorded when it costs the file's own size, not the disk's: the qcow2
//! (read back once written: its header is written last) and the VMDK (hashed as it is written)
//! hold the disk's data only. The raw image and the fixed VHD hold every byte of the disk, so
//! their sha256 is the whole-disk hash, computed only with `--sha256` (the VHD's is that hash
//! continued over its 512-byte footer); their identity is otherwise the blocks digest of
//! `image.blocks`, and `kiln hash FILE` computes their sha256 later, reading data regions only.

use crate::disk::assemble::Contents;
use crate::disk::layout::{DiskPlan, ESP_TYPE};
use crate::manifest::{file_name, Manifest, OutputRecord};
use crate::oci::layer::RootTrees;
use crate::oci::{ImageWritten, OciWriter, StagedImage};
use crate::pipeline::{
    disk_error, prepare_tree, step, write_disk_mapped, write_records_at, BuildError, BuildOptions,
    BuildOutput, Prepared, Progress,
};
use crate::recipe::{OutputFormat, Recipe};
use crate::sink::{DiskDigest, DiskFormat, DiskOutputs, FormatIdentity, Written};
use std::io;
use std::path::{Path, PathBuf};

/// Where each requested format goes. `-o` (default `out/<name>.raw`) names the raw image; the
/// others sit beside it with their own extension (`.qcow2`, `.vhd`, `.vmdk`, `.oci` or
/// `.oci.tar`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// The raw image's path (`-o`, default `out/<name>.raw`), whether or not raw is written: the
    /// manifest and the other formats are named after it.
    pub image: PathBuf,
    pub disks: Vec<(DiskFormat, PathBuf)>,
    pub oci: Option<PathBuf>,
    pub oci_archive: bool,
}

pub fn targets(image: &Path, formats: &[OutputFormat], oci_archive: bool) -> io::Result<Targets> {
    let mut disks = Vec::new();
    let mut oci = None;
    for f in formats {
        let d = match f {
            OutputFormat::Raw => DiskFormat::Raw,
            OutputFormat::Qcow2 => DiskFormat::Qcow2,
            OutputFormat::Vhd => DiskFormat::Vhd,
            OutputFormat::Vmdk => DiskFormat::Vmdk,
            OutputFormat::Oci => {
                oci = Some(image.with_extension(match oci_archive {
                    true => "oci.tar",
                    false => "oci",
                }));
                continue;
            }
        };
        let path = match d {
            DiskFormat::Raw => image.to_path_buf(),
            _ => image.with_extension(d.extension()),
        };
        disks.push((d, path));
    }
    let mut all: Vec<&PathBuf> = disks.iter().map(|(_, p)| p).chain(oci.as_ref()).collect();
    all.sort();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "two formats would both be written to {}: -o names the raw image, the other \
                 formats go beside it with their own extension",
                w[0].display()
            ),
        ));
    }
    Ok(Targets {
        image: image.to_path_buf(),
        disks,
        oci,
        oci_archive,
    })
}

/// The root filesystem as the OCI layer holds it: `/` and the filesystems mounted below it. The
/// ESP and anything under `/boot` stay out unless `[container] include_boot = true`.
pub fn root_trees<'a>(recipe: &Recipe, plan: &DiskPlan, contents: &'a [Contents]) -> RootTrees<'a> {
    let include_boot = recipe.container.as_ref().is_some_and(|c| c.include_boot);
    let esp = crate::recipe::parse_guid(ESP_TYPE);
    let mut parts = Vec::new();
    for (p, c) in plan.partitions.iter().zip(contents) {
        let tree = match c {
            Contents::Fat(t) | Contents::Ext4(t) => t,
            Contents::Empty => continue,
        };
        let Some(mount) = &p.mount else { continue };
        let mount = format!(
            "/{}",
            mount
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect::<Vec<_>>()
                .join("/")
        );
        let boot = Some(p.type_guid) == esp || mount == "/boot" || mount.starts_with("/boot/");
        if boot && !include_boot {
            continue;
        }
        parts.push((mount, tree));
    }
    RootTrees {
        parts,
        skip_boot: !include_boot,
    }
}

/// One recipe's OCI image as its own layout.
pub fn write_oci(
    recipe: &Recipe,
    plan: &DiskPlan,
    contents: &[Contents],
    target: &Path,
    archive: bool,
) -> io::Result<(StagedImage, ImageWritten)> {
    let mut w = OciWriter::create(target, archive, recipe.image.source_date_epoch)?;
    let image = w.add_image(recipe, &root_trees(recipe, plan, contents))?;
    Ok((w.finish()?, image))
}

/// A disk format's record.
pub fn disk_record(w: &Written) -> OutputRecord {
    OutputRecord {
        format: w.format.name().into(),
        file: file_name(w.target()),
        size: Some(w.size),
        sha256: w.sha256.clone(),
        digest: None,
        manifest_digest: None,
        tag: None,
    }
}

/// An OCI layout's record, for the recipe whose image is `image`.
pub fn oci_record(target: &Path, staged: &StagedImage, image: &ImageWritten) -> OutputRecord {
    let (size, sha256) = match &staged.staged {
        crate::oci::layout::Staged::Archive { sha256, size, .. } => {
            (Some(*size), Some(sha256.clone()))
        }
        crate::oci::layout::Staged::Dir { .. } => (None, None),
    };
    OutputRecord {
        format: "oci".into(),
        file: file_name(target),
        size,
        sha256,
        digest: Some(staged.digest.clone()),
        manifest_digest: Some(image.manifest.digest.clone()),
        tag: Some(staged.tag.clone()),
    }
}

/// `plan_outputs`: the targets of the formats `opts` (or else the recipe's `[output]`) asks for.
/// An OCI target is checked before anything is built (only an OCI layout may be replaced).
pub fn plan(recipe: &Recipe, opts: &BuildOptions) -> Result<Targets, BuildError> {
    let image = opts
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(format!("{}.raw", recipe.image.name)));
    let formats = opts.formats.as_ref().unwrap_or(&recipe.output.formats);
    let archive = opts.oci_archive.unwrap_or(recipe.output.oci_archive);
    let t = targets(&image, formats, archive).map_err(out_err(&image))?;
    if opts.sha256 && t.disks.is_empty() {
        return Err(BuildError::Sha256WithoutDisk {
            formats: formats
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if let Some(oci) = &t.oci {
        crate::oci::layout::check_target(oci, archive).map_err(out_err(oci))?;
    }
    Ok(t)
}

fn out_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Output { path, source }
}

/// A build's files, complete under their temporary names.
pub struct Outputs {
    /// The streamed disk's digests and its formats' files (absent for an OCI-only build).
    disk: Option<(DiskDigest, Vec<Written>)>,
    oci: Option<(PathBuf, StagedImage, ImageWritten)>,
}

impl Outputs {
    /// `finalize_outputs`: renames every file into place; returns the disk's digests and the
    /// manifest's records.
    pub fn persist(self) -> Result<(Option<DiskDigest>, Vec<OutputRecord>), BuildError> {
        let mut records = Vec::new();
        let digest = match self.disk {
            Some((digest, written)) => {
                records.extend(written.iter().map(disk_record));
                for w in written {
                    let target = w.target().to_path_buf();
                    w.output.persist().map_err(out_err(&target))?;
                }
                Some(digest)
            }
            None => None,
        };
        if let Some((target, staged, image)) = self.oci {
            records.push(oci_record(&target, &staged, &image));
            staged.staged.persist().map_err(out_err(&target))?;
        }
        Ok((digest, records))
    }
}

/// `write_disk | write_oci`: the disk streamed once into every disk format while the OCI image
/// is written from the tree on another thread.
pub fn write(
    p: &Prepared,
    t: &Targets,
    progress: Option<&dyn Progress>,
    sha256: bool,
) -> Result<Outputs, BuildError> {
    let (recipe, plan, contents) = (&p.recipe, &p.plan, &p.contents);
    let (disk, oci) = std::thread::scope(|s| {
        let oci = t.oci.as_ref().map(|target| {
            s.spawn(move || {
                step("write_oci", || {
                    write_oci(recipe, plan, contents, target, t.oci_archive)
                        .map(|(staged, image)| (target.clone(), staged, image))
                        .map_err(out_err(target))
                })
            })
        });
        let disk = match t.disks.is_empty() {
            true => Ok(None),
            false => step("write_disk", || {
                write_formats(p, &t.disks, progress, sha256).map(Some)
            }),
        };
        let oci = oci.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(disk_error(io::Error::other(
                    "writing the OCI image panicked",
                )))
            })
        });
        (disk, oci.transpose())
    });
    Ok(Outputs {
        disk: disk?,
        oci: oci?,
    })
}

/// Streams the disk once into every requested disk format; returns the disk's digests and the
/// files, complete but not yet renamed into place.
fn write_formats(
    p: &Prepared,
    targets: &[(DiskFormat, PathBuf)],
    progress: Option<&dyn Progress>,
    sha256: bool,
) -> Result<(DiskDigest, Vec<Written>), BuildError> {
    let id = FormatIdentity {
        seed: p.recipe.image.seed.clone(),
        source_date_epoch: p.recipe.image.source_date_epoch,
    };
    let size = p.plan.size;
    let mut formats = DiskOutputs::create(targets, size, &id).map_err(disk_error)?;
    let pending = write_disk_mapped(p, &mut formats, progress, sha256)?;
    let finished = formats.finish(size).map_err(disk_error)?;
    let r = crate::sink::formats::hash_outputs(finished, pending).map_err(disk_error)?;
    if let Some(pr) = progress {
        pr.finish();
    }
    Ok(r)
}

/// `kiln build A.toml B.toml --format oci`: one multi-arch OCI image, one recipe per
/// architecture; each recipe gets its own manifest, `<stem>-<arch>.manifest.json`.
pub fn build_multiarch_oci(
    recipe_paths: &[PathBuf],
    opts: BuildOptions,
) -> Result<Vec<BuildOutput>, BuildError> {
    let popts = opts.packages.clone().unwrap_or_default();
    let prepared = recipe_paths
        .iter()
        .map(|r| prepare_tree(r, opts.locked, &popts, &opts.trust))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = prepared.first().map(|p| &p.recipe) else {
        return Ok(Vec::new());
    };
    let opts = BuildOptions {
        formats: Some(vec![OutputFormat::Oci]),
        ..opts
    };
    let t = step("plan_outputs", || plan(first, &opts))?;
    let (image, target) = match &t.oci {
        Some(o) => (t.image.clone(), o.clone()),
        None => return Err(out_err(&t.image)(io::Error::other("no OCI target"))),
    };
    let mut w =
        crate::oci::OciWriter::create(&target, t.oci_archive, first.image.source_date_epoch)
            .map_err(out_err(&target))?;
    let mut images = Vec::new();
    for p in &prepared {
        let trees = root_trees(&p.recipe, &p.plan, &p.contents);
        images
            .push(step("write_oci", || w.add_image(&p.recipe, &trees)).map_err(out_err(&target))?);
    }
    let staged = w.finish().map_err(out_err(&target))?;
    let records: Vec<_> = images
        .iter()
        .map(|i| oci_record(&target, &staged, i))
        .collect();
    step("finalize_outputs", || staged.staged.persist()).map_err(out_err(&target))?;
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (p, record) in prepared.iter().zip(records) {
        let arch = p.recipe.image.arch.as_str();
        let path = image.with_file_name(format!("{stem}-{arch}.manifest.json"));
        let (manifest_path, manifest) =
            write_records_at(p, &path, None, None, vec![record], &image)?;
        out.push(BuildOutput {
            image: image.clone(),
            manifest_path,
            manifest,
        });
    }
    Ok(out)
}

/// What the SBOM describes: the disk, or else the build's first output (an OCI image).
pub struct SbomSubject {
    pub file: String,
    /// The blocks digest of the disk, or the OCI image's digest.
    pub identity: String,
    pub sha256: Option<String>,
}

pub fn sbom_subject(m: &Manifest) -> Option<SbomSubject> {
    if let Some(i) = &m.image {
        return Some(SbomSubject {
            file: i.file.clone(),
            identity: i.blocks_sha256().unwrap_or_default().to_string(),
            sha256: i.sha256.clone(),
        });
    }
    let o = m.outputs.first()?;
    Some(SbomSubject {
        file: o.file.clone(),
        identity: o
            .manifest_digest
            .clone()
            .or(o.digest.clone())
            .unwrap_or_default(),
        sha256: o.sha256.clone(),
    })
}

/// `out/x.manifest.json` → `out/x.spdx.json`.
pub fn sbom_path(manifest_path: &Path) -> PathBuf {
    let name = file_name(manifest_path);
    let stem = name.strip_suffix(".manifest.json").unwrap_or(&name);
    manifest_path.with_file_name(format!("{stem}.spdx.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_sit_beside_the_raw_image() {
        let t = targets(
            Path::new("out/a.raw"),
            &[OutputFormat::Raw, OutputFormat::Qcow2, OutputFormat::Oci],
            true,
        )
        .unwrap();
        assert_eq!(t.image, PathBuf::from("out/a.raw"));
        assert_eq!(
            t.disks,
            [
                (DiskFormat::Raw, PathBuf::from("out/a.raw")),
                (DiskFormat::Qcow2, PathBuf::from("out/a.qcow2"))
            ]
        );
        assert_eq!(t.oci, Some(PathBuf::from("out/a.oci.tar")));
        let clash = targets(
            Path::new("out/a.vmdk"),
            &[OutputFormat::Raw, OutputFormat::Vmdk],
            false,
        );
        assert!(clash.unwrap_err().to_string().contains("out/a.vmdk"));
    }

    #[test]
    fn the_sbom_sits_beside_its_manifest() {
        let image = Path::new("out/a.raw");
        let m = crate::manifest::manifest_path(image);
        assert_eq!(sbom_path(&m), crate::packages::sbom::sbom_path(image));
        assert_eq!(
            sbom_path(Path::new("out/a-arm64.manifest.json")),
            PathBuf::from("out/a-arm64.spdx.json")
        );
    }
}
