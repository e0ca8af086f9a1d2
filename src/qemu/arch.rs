//! Which architecture an image is for: its manifest says so, else its GPT root partition's type
//! GUID (the Discoverable Partitions Specification gives each architecture its own root type).

use super::{Arch, QemuError};
use std::path::Path;

/// DPS "Root Partition (x86-64)".
pub const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// DPS "Root Partition (64-bit ARM/AArch64)".
pub const ROOT_AARCH64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

pub fn detect(image: &Path) -> Result<Arch, QemuError> {
    if let Some(arch) = from_manifest(image) {
        return Ok(arch);
    }
    from_gpt(image)
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

fn from_gpt(image: &Path) -> Result<Arch, QemuError> {
    let unknown = |why: String| QemuError::UnknownArch {
        image: image.to_path_buf(),
        why,
    };
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open(image)
        .map_err(|e| unknown(format!("no manifest beside it and no readable GPT ({e})")))?;
    let mut found = None;
    for p in disk.partitions().values() {
        let t = p.part_type_guid.guid.to_string().to_uppercase();
        let arch = match t.as_str() {
            ROOT_X86_64 => Arch::X86_64,
            ROOT_AARCH64 => Arch::Aarch64,
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
    found.ok_or_else(|| {
        unknown(
            "no manifest beside it and no x86-64 or aarch64 root partition type in its GPT".into(),
        )
    })
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
