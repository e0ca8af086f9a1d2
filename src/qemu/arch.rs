//! Which architecture an image is for: its manifest says so, else its GPT root partition's type
//! GUID (the Discoverable Partitions Specification gives each architecture its own root type),
//! else the name of the removable-media loader on its ESP. A qcow2 is read through its tables
//! ([`super::disk_view`]), so `kiln test` needs no `--arch` for a qcow2 without its manifest.

use super::disk_view::DiskView;
use super::{Arch, QemuError};
use crate::disk::layout::ESP_TYPE;
use std::path::Path;

/// DPS "Root Partition (x86-64)".
pub const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// DPS "Root Partition (64-bit ARM/AArch64)".
pub const ROOT_AARCH64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

pub fn detect(image: &Path) -> Result<Arch, QemuError> {
    if let Some(arch) = from_manifest(image) {
        return Ok(arch);
    }
    from_disk(image)
}

/// The manifest beside the image, when it describes this very file (the raw image, or one of
/// the build's other formats, such as a qcow2).
fn from_manifest(image: &Path) -> Option<Arch> {
    let path = crate::manifest::manifest_path(image);
    let m = crate::manifest::read(&path).ok()?;
    let name = image.file_name().and_then(|n| n.to_str())?;
    let described = m.image.as_ref().is_some_and(|i| i.file == name)
        || m.outputs
            .iter()
            .any(|o| o.file == name && o.format != "oci");
    if !described {
        tracing::debug!("{} does not describe {name}", path.display());
        return None;
    }
    parse_arch(&m.arch)
}

pub fn parse_arch(s: &str) -> Option<Arch> {
    match s {
        "x86_64" | "amd64" => Some(Arch::X86_64),
        "aarch64" | "arm64" => Some(Arch::Aarch64),
        _ => None,
    }
}

/// The disk itself (a raw file, or a qcow2 through its tables): its GPT root partition's type,
/// else the removable-media loader on its ESP (`EFI/BOOT/BOOTX64.EFI`, `BOOTAA64.EFI`: UEFI
/// 2.10 §3.5.1.1 names it after the architecture).
fn from_disk(image: &Path) -> Result<Arch, QemuError> {
    let unknown = |why: String| QemuError::UnknownArch {
        image: image.to_path_buf(),
        why,
    };
    let view = DiskView::open(image).map_err(|e| {
        unknown(format!(
            "no manifest beside it, and its disk cannot be read ({e})"
        ))
    })?;
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(
            view.window(0, view.len())
                .map_err(|e| unknown(e.to_string()))?,
        )
        .map_err(|e| unknown(format!("no manifest beside it and no readable GPT ({e})")))?;
    let mut found = None;
    let mut esps = Vec::new();
    for p in disk.partitions().values() {
        let t = p.part_type_guid.guid.to_string().to_uppercase();
        let arch = match t.as_str() {
            ROOT_X86_64 => Arch::X86_64,
            ROOT_AARCH64 => Arch::Aarch64,
            ESP_TYPE => {
                esps.push((p.first_lba, p.last_lba));
                continue;
            }
            _ => continue,
        };
        match found {
            Some(a) if a != arch => {
                return Err(unknown(
                    "its GPT holds root partitions of two architectures".into(),
                ))
            }
            _ => found = Some(arch),
        }
    }
    if let Some(arch) = found {
        return Ok(arch);
    }
    let mut loaders = Vec::new();
    for (first, last) in esps {
        let part = last
            .checked_sub(first)
            .and_then(|n| (n + 1).checked_mul(512))
            .and_then(|len| Some((first.checked_mul(512)?, len)))
            .and_then(|(at, len)| view.window(at, len).ok());
        let Some(part) = part else { continue };
        // fatfs on a corrupt filesystem: an unreadable ESP, never a panic of kiln's.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || esp_loaders(part)));
        match r {
            Ok(Ok(l)) => loaders.extend(l),
            Ok(Err(e)) => tracing::debug!("{}: an ESP kiln cannot read: {e}", image.display()),
            Err(_) => tracing::debug!("{}: an ESP kiln cannot read", image.display()),
        }
    }
    loaders.sort_by(|a, b| a.0.cmp(&b.0));
    loaders.dedup_by(|a, b| a.0 == b.0);
    match loaders.as_slice() {
        [(_, arch)] => Ok(*arch),
        [] => Err(unknown(
            "no manifest beside it, no x86-64 or aarch64 root partition type in its GPT and no \
             EFI/BOOT/BOOTX64.EFI or BOOTAA64.EFI on an ESP"
                .into(),
        )),
        many => Err(unknown(format!(
            "its ESP holds loaders for two architectures ({})",
            many.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The removable-media loaders in the FAT filesystem `part` holds, with their architecture.
fn esp_loaders(part: DiskView) -> std::io::Result<Vec<(String, Arch)>> {
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new())?;
    let Ok(dir) = fs.root_dir().open_dir("EFI/BOOT") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in dir.iter() {
        let name = e?.file_name().to_ascii_uppercase();
        let arch = match name.as_str() {
            "BOOTX64.EFI" => Arch::X86_64,
            "BOOTAA64.EFI" => Arch::Aarch64,
            _ => continue,
        };
        out.push((format!("EFI/BOOT/{name}"), arch));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 MiB disk with one partition of type `ty`, written with the `gpt` crate.
    fn disk_with(ty: &str, path: &Path) {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(4 << 20).unwrap();
        drop(f);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(((4 << 20) / 512 - 1) as u32);
        mbr.overwrite_lba0(&mut f).unwrap();
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .create_from_device(f, None)
            .unwrap();
        let t = gpt::partition_types::Type {
            guid: ty.parse().unwrap(),
            os: gpt::partition_types::OperatingSystem::None,
        };
        disk.add_partition("root", 1 << 20, t, 0, Some(2048))
            .unwrap();
        disk.write().unwrap();
    }

    #[test]
    fn the_gpt_root_type_names_the_architecture() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.raw");
        disk_with(ROOT_AARCH64, &img);
        assert_eq!(detect(&img).unwrap(), Arch::Aarch64);
        disk_with(ROOT_X86_64, &img);
        assert_eq!(detect(&img).unwrap(), Arch::X86_64);
        disk_with("0FC63DAF-8483-4772-8E79-3D69D8477DE4", &img);
        let e = detect(&img).unwrap_err().to_string();
        assert!(e.contains("--arch"), "{e}");
    }

    #[test]
    fn the_manifest_wins_when_it_describes_the_image() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.raw");
        disk_with(ROOT_X86_64, &img);
        let m = serde_json::json!({"kiln_version":"0","name":"a","version":"1","arch":"aarch64",
            "image":{"file":"a.raw","size":4194304,"sha256":""},"disk_guid":"","source_date_epoch":0,
            "partitions":[],"recipe":{"kind":"recipe","source":"a.toml","sha256":""},"inputs":[]});
        std::fs::write(d.path().join("a.manifest.json"), m.to_string()).unwrap();
        assert_eq!(detect(&img).unwrap(), Arch::Aarch64);
        // A manifest for another file is not this image's.
        std::fs::rename(&img, d.path().join("b.raw")).unwrap();
        std::fs::copy(
            d.path().join("a.manifest.json"),
            d.path().join("b.manifest.json"),
        )
        .unwrap();
        assert_eq!(detect(&d.path().join("b.raw")).unwrap(), Arch::X86_64);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("junk.raw");
        std::fs::write(&img, vec![0x5a; 70_000]).unwrap();
        assert!(matches!(detect(&img), Err(QemuError::UnknownArch { .. })));
        assert!(detect(&d.path().join("missing.raw")).is_err());
    }
}
