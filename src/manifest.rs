//! `<image stem>.manifest.json`: what was built, from what, and where everything sits on the disk.
//!
//! Paths in the manifest are relative (the image's file name, the recipe's file name, inputs
//! relative to the recipe's directory), so the manifest, like the image, does not depend on the
//! working directory.

use crate::disk::layout::DiskPlan;
use crate::recipe::{Filesystem, Recipe};
use crate::util::uuid_string;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub kiln_version: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub image: ImageInfo,
    pub disk_guid: String,
    pub source_date_epoch: i64,
    pub partitions: Vec<PartitionInfo>,
    pub recipe: InputInfo,
    pub inputs: Vec<InputInfo>,
    /// Every installed Debian package, sorted by name (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageInfo>,
    /// `"uefi"` when `[boot]` installed a UEFI loader (EC2's RegisterImage BootMode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    /// The EBS snapshot the disk was streamed into (`kiln build --upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    /// The recipe's `[[test]]`s and the AMI's machine (volume size, IMDSv2), which
    /// `kiln test IMAGE` runs (absent when the recipe has neither tests nor `[ami]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<crate::recipe::TestPlan>,
}

/// One installed Debian package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Of the `.deb` file.
    pub sha256: String,
    /// The source package's name.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    pub region: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image's file name (it sits beside the manifest).
    pub file: String,
    pub size: u64,
    /// The block map: `sha256` is the blocks digest, the image's identity (see `sink::blocks`).
    /// `kiln upload` checks the blocks it sends against it. Always written; absent only in
    /// manifests of the first kiln versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<crate::sink::blocks::BlockMapInfo>,
    /// SHA-256 of every byte of the disk: only with `kiln build --sha256` (and for a publish,
    /// whose `kiln:image-sha256` tag names it), since it costs the disk's size, not its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl ImageInfo {
    /// The blocks digest, if this manifest has one this kiln computes the same way.
    pub fn blocks_sha256(&self) -> Option<&str> {
        self.blocks
            .as_ref()
            .filter(|b| b.is_current())
            .map(|b| b.sha256.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionInfo {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub unique_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub filesystem: String,
    /// ext4: the filesystem UUID; vfat: the volume id as `XXXX-XXXX`; none: null.
    pub filesystem_uuid: Option<String>,
    pub mount: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputInfo {
    pub kind: String,
    pub source: String,
    pub sha256: String,
}

/// The manifest path for an image: `out/x.raw` → `out/x.manifest.json`.
pub fn manifest_path(image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    image.with_file_name(format!("{stem}.manifest.json"))
}

/// `path` relative to `base` when it lies under it, else as given.
pub fn relative_to(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

pub fn partitions(plan: &DiskPlan) -> Vec<PartitionInfo> {
    plan.partitions
        .iter()
        .map(|p| PartitionInfo {
            number: p.number,
            label: p.label.clone(),
            type_guid: uuid_string(&p.type_guid).to_uppercase(),
            unique_guid: uuid_string(&p.unique_guid).to_uppercase(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            filesystem: match p.filesystem {
                Filesystem::Vfat => "vfat",
                Filesystem::Ext4 => "ext4",
                Filesystem::None => "none",
            }
            .into(),
            filesystem_uuid: match p.filesystem {
                Filesystem::Ext4 => Some(uuid_string(&p.fs_uuid)),
                Filesystem::Vfat => {
                    let id = p.fs_uuid;
                    Some(crate::disk::assemble::fat_volume_id_string(
                        u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
                    ))
                }
                Filesystem::None => None,
            },
            mount: p.mount.clone(),
        })
        .collect()
}

/// Fills in everything but the inputs, which the caller appends.
pub fn new(
    recipe: &Recipe,
    plan: &DiskPlan,
    image: &Path,
    digest: crate::sink::DiskDigest,
) -> Manifest {
    Manifest {
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        name: recipe.image.name.clone(),
        version: recipe.image.version.clone(),
        arch: recipe.image.arch.as_str().into(),
        image: ImageInfo {
            file: image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: plan.size,
            blocks: digest.blocks,
            sha256: digest.sha256,
        },
        disk_guid: uuid_string(&plan.disk_guid).to_uppercase(),
        source_date_epoch: recipe.image.source_date_epoch,
        partitions: partitions(plan),
        recipe: InputInfo {
            kind: "recipe".into(),
            source: recipe
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: recipe.sha256.clone(),
        },
        inputs: Vec::new(),
        packages: Vec::new(),
        boot_mode: None,
        snapshot: None,
        test: recipe.test_plan(),
    }
}

/// Writes the manifest atomically (temp file + rename) as pretty JSON.
pub fn write(manifest: &Manifest, path: &Path) -> io::Result<()> {
    write_json(manifest, path)
}

/// Writes any value atomically (temp file + rename) as pretty JSON.
pub fn write_json<T: Serialize>(value: &T, path: &Path) -> io::Result<()> {
    let mut body = serde_json::to_vec_pretty(value)?;
    body.push(b'\n');
    crate::util::write_atomic(path, &body)
}

pub fn read(path: &Path) -> io::Result<Manifest> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_path_is_beside_the_image() {
        assert_eq!(
            manifest_path(Path::new("out/a.raw")),
            Path::new("out/a.manifest.json")
        );
        assert_eq!(manifest_path(Path::new("b")), Path::new("b.manifest.json"));
    }
}
