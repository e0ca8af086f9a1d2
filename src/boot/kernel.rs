//! The kernel in the tree: its image, version, build configuration and modules directory.

use std::collections::BTreeMap;
use std::io::Read;

use crate::recipe::{Boot, KernelChoice};
use crate::tree::Tree;

use super::{tree_io, BootError};

/// A kernel found in the tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Where it is in the tree, e.g. `/boot/vmlinuz-6.1.0-56-cloud-amd64`.
    pub path: String,
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// The EFI-stub image the firmware (or systemd-stub) runs; gzip-compressed kernels (Debian's
    /// arm64 `vmlinuz`) are decompressed, since UEFI's LoadImage only takes PE images.
    pub image: Vec<u8>,
    /// `/boot/config-<version>`, when the tree has it.
    pub config: Option<KernelConfig>,
    /// `/lib/modules/<version>`, when the tree has it.
    pub modules_dir: Option<String>,
}

/// A kernel's `.config`: `CONFIG_X=y|m|"..."` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig(BTreeMap<String, String>);

impl KernelConfig {
    pub fn parse(text: &str) -> KernelConfig {
        KernelConfig(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    /// Whether `CONFIG_<name>=y` (built in).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.0.get(&format!("CONFIG_{name}")).map(String::as_str) == Some("y")
    }
}

/// The version in a kernel file name (`vmlinuz-<version>` or `vmlinux-<version>`).
fn version_from_name(name: &str) -> Option<&str> {
    name.strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("vmlinux-"))
        .filter(|v| !v.is_empty())
}

/// Finds the kernel `[boot].kernel` names.
pub fn find(tree: &mut Tree, boot: &Boot) -> Result<Kernel, BootError> {
    let path = match &boot.kernel {
        KernelChoice::Path(p) => p.clone(),
        KernelChoice::Auto => {
            let found: Vec<String> = tree_io::list(tree, "/boot")
                .into_iter()
                .filter(|n| version_from_name(n).is_some())
                .filter(|n| tree_io::content(tree, &format!("/boot/{n}")).is_some())
                .collect();
            match found.as_slice() {
                [one] => format!("/boot/{one}"),
                [] => {
                    return Err(BootError::NoKernel {
                        pos: boot.pos.clone(),
                    })
                }
                many => {
                    return Err(BootError::ManyKernels {
                        pos: boot.pos.clone(),
                        found: many.join(", "),
                    })
                }
            }
        }
    };
    let raw = tree_io::read(tree, &path)?.ok_or_else(|| BootError::KernelMissing {
        pos: boot.pos.clone(),
        path: path.clone(),
    })?;
    let name = path.rsplit('/').next().unwrap_or_default();
    let version = match version_from_name(name) {
        Some(v) => v.to_string(),
        None => {
            // A kernel under another name: the one modules directory tells its version.
            match tree_io::list(tree, "/lib/modules").as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(BootError::KernelVersion {
                        pos: boot.pos.clone(),
                        path: path.clone(),
                    })
                }
            }
        }
    };
    let image = efi_image(raw).map_err(|problem| BootError::KernelImage {
        path: path.clone(),
        problem,
    })?;
    let config = tree_io::read(tree, &format!("/boot/config-{version}"))?
        .map(|b| KernelConfig::parse(&String::from_utf8_lossy(&b)));
    let moddir = format!("/lib/modules/{version}");
    let modules_dir = tree_io::lookup(tree, &moddir)
        .filter(|id| tree.node(*id).is_dir())
        .map(|_| moddir);
    Ok(Kernel {
        path,
        version,
        image,
        config,
        modules_dir,
    })
}

/// The kernel as a PE image: as given when it is one, decompressed when it is gzip.
fn efi_image(raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let image = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("it looks gzip-compressed but does not decompress: {e}"))?;
        out
    } else {
        raw
    };
    if super::pe::Pe::parse(&image).is_err() {
        return Err(
            "it is not a PE/COFF image, so UEFI cannot start it (a kernel built without \
             CONFIG_EFI_STUB?)"
                .into(),
        );
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines() {
        let c = KernelConfig::parse("# CONFIG_RD_LZ4 is not set\nCONFIG_RD_ZSTD=y\nCONFIG_X=m\n");
        assert!(c.is_builtin("RD_ZSTD"));
        assert!(!c.is_builtin("X"));
        assert!(!c.is_builtin("RD_LZ4"));
    }

    #[test]
    fn versions_from_names() {
        assert_eq!(
            version_from_name("vmlinuz-6.1.0-56-cloud-amd64"),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(version_from_name("vmlinuz"), None);
        assert_eq!(version_from_name("vmlinuz-"), None);
        assert_eq!(version_from_name("config-6.1"), None);
    }
}
