//! What a build writes, by format: where each file goes, the disk formats written in the disk's
//! one pass (see [`crate::sink::formats`]), the OCI image written from the tree (see
//! [`crate::oci`]), and their records for the manifest. Every output is complete under a
//! temporary name before any is renamed into place, so a failure leaves none of them.

use crate::disk::assemble::Contents;
use crate::disk::layout::{DiskPlan, ESP_TYPE};
use crate::manifest::{file_name, OutputRecord};
use crate::oci::layer::RootTrees;
use crate::oci::{ImageWritten, OciWriter, StagedImage};
use crate::recipe::{OutputFormat, Recipe};
use crate::sink::{DiskFormat, Written};
use std::io;
use std::path::{Path, PathBuf};

/// Where each requested format goes. `-o` (default `out/<name>.raw`) names the raw image; the
/// others sit beside it with their own extension (`.qcow2`, `.vhd`, `.vmdk`, `.oci` or
/// `.oci.tar`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
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
pub fn disk_record(w: &Written, disk_sha256: &str) -> OutputRecord {
    OutputRecord {
        format: w.format.name().into(),
        file: file_name(w.target()),
        size: Some(w.size),
        sha256: Some(w.sha256.clone()),
        disk_sha256: (w.format != DiskFormat::Raw).then(|| disk_sha256.to_string()),
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
        disk_sha256: None,
        digest: Some(staged.digest.clone()),
        manifest_digest: Some(image.manifest.digest.clone()),
        tag: Some(staged.tag.clone()),
    }
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
}
