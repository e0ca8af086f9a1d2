//! `[boot]`: how the image boots through UEFI firmware.
//!
//! ```toml
//! [boot]
//! loader = "systemd-boot"   # or "uki" or "none"
//! cmdline = "panic=-1"      # extra kernel arguments, after the ones kiln always adds
//! kernel = "auto"           # the single /boot/vmlinuz-* in the tree, or a path in the tree
//! initrd = { modules = ["virtio_blk", "virtio_pci"], compression = "auto" }
//! ```
//! The raw (serde) shapes live here rather than in `raw.rs`, so that `[boot]` stays one module.

use serde::Deserialize;
use toml::Spanned;

use super::error::{RecipeError, RecipeErrorKind as K};
use super::parse::Ctx;
use super::raw::S;
use super::{Filesystem, PartType, Partition, Pos};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoot {
    pub loader: S,
    pub cmdline: Option<S>,
    pub kernel: Option<S>,
    pub initrd: Option<Spanned<RawInitrd>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInitrd {
    #[serde(default)]
    pub modules: Vec<S>,
    pub compression: Option<S>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// systemd-boot as `\EFI\BOOT\BOOT<ARCH>.EFI`, with a Boot Loader Specification entry.
    SystemdBoot,
    /// A Unified Kernel Image (systemd-stub + kernel + initrd + cmdline) as the removable-media
    /// path itself.
    Uki,
    /// Nothing on the ESP (the recipe brings its own loader, or the image is booted directly).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// The single `/boot/vmlinuz-*` in the tree.
    Auto,
    /// An absolute path in the tree.
    Path(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd when the kernel's config has `CONFIG_RD_ZSTD=y`, else gzip, else none.
    Auto,
    Zstd,
    Gzip,
    None,
}

/// `[boot].initrd`: kiln generates an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initrd {
    /// Module names as `modprobe` takes them (`-` and `_` are the same).
    pub modules: Vec<String>,
    pub compression: Compression,
    pub pos: Pos,
}

/// `[boot]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub loader: Loader,
    /// Extra kernel arguments (may be empty).
    pub cmdline: String,
    pub kernel: KernelChoice,
    pub initrd: Option<Initrd>,
    pub pos: Pos,
}

fn module_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 56 // MODULE_NAME_LEN - 1 on 64-bit kernels
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Ctx<'_> {
    pub(super) fn boot(
        &self,
        raw: &Spanned<RawBoot>,
        partitions: &[Partition],
    ) -> Result<Boot, RecipeError> {
        let r = raw.get_ref();
        let pos = self.pos(raw.span().start);
        let loader = match self.s(&r.loader)?.as_str() {
            "systemd-boot" => Loader::SystemdBoot,
            "uki" => Loader::Uki,
            "none" => Loader::None,
            other => {
                return Err(self.err(
                    &r.loader,
                    K::Value,
                    format!("unknown boot loader {other:?}"),
                    "\"systemd-boot\", \"uki\" or \"none\"",
                ))
            }
        };
        let cmdline = match &r.cmdline {
            Some(c) => {
                let s = self.s(c)?;
                if s.chars().any(|ch| ch.is_control()) {
                    return Err(self.err(
                        c,
                        K::Value,
                        "the kernel command line contains a control character (a newline?)",
                        "kernel arguments on one line, separated by spaces",
                    ));
                }
                s.split_whitespace().collect::<Vec<_>>().join(" ")
            }
            None => String::new(),
        };
        let kernel = match &r.kernel {
            None => KernelChoice::Auto,
            Some(k) if self.s(k)? == "auto" => KernelChoice::Auto,
            Some(k) => KernelChoice::Path(self.tree_path(k, "kernel").map_err(|mut e| {
                e.expected = format!("\"auto\" or {}", e.expected);
                e
            })?),
        };
        let initrd = match &r.initrd {
            None => None,
            Some(i) => Some(self.initrd(i)?),
        };
        if !partitions
            .iter()
            .any(|p| p.mount.as_deref() == Some("/") && p.filesystem == Filesystem::Ext4)
        {
            return Err(self.err(
                raw,
                K::Layout,
                "[boot] needs a root filesystem, but no ext4 partition has mount = \"/\"",
                "a [[partition]] with filesystem = \"ext4\" and mount = \"/\"",
            ));
        }
        let esp = partitions.iter().find(|p| p.ptype == PartType::Esp);
        let esp_ok = esp.is_some_and(|p| p.filesystem == Filesystem::Vfat && p.mount.is_some());
        if loader != Loader::None && !esp_ok {
            return Err(self.err(
                &r.loader,
                K::Layout,
                "a boot loader needs an EFI System Partition, but no partition has type = \"esp\", \
                 filesystem = \"vfat\" and a mount",
                "an ESP partition such as { type = \"esp\", filesystem = \"vfat\", mount = \"/boot/efi\" }, \
                 or loader = \"none\"",
            ));
        }
        Ok(Boot {
            loader,
            cmdline,
            kernel,
            initrd,
            pos,
        })
    }

    fn initrd(&self, raw: &Spanned<RawInitrd>) -> Result<Initrd, RecipeError> {
        let r = raw.get_ref();
        let mut modules = Vec::new();
        for m in &r.modules {
            let name = self.s(m)?;
            if !module_name_ok(&name) {
                return Err(self.err(
                    m,
                    K::Value,
                    format!("module name {name:?} is not allowed"),
                    "a kernel module name such as \"virtio_blk\" (letters, digits, '_' and '-')",
                ));
            }
            let norm = name.replace('-', "_");
            if !modules.contains(&norm) {
                modules.push(norm);
            }
        }
        let compression = match &r.compression {
            None => Compression::Auto,
            Some(c) => match self.s(c)?.as_str() {
                "auto" => Compression::Auto,
                "zstd" => Compression::Zstd,
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                other => {
                    return Err(self.err(
                        c,
                        K::Value,
                        format!("unknown initrd compression {other:?}"),
                        "\"auto\", \"zstd\", \"gzip\" or \"none\"",
                    ))
                }
            },
        };
        Ok(Initrd {
            modules,
            compression,
            pos: self.pos(raw.span().start),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert!(module_name_ok("virtio_blk"));
        assert!(module_name_ok("virtio-rng"));
        assert!(!module_name_ok(""));
        assert!(!module_name_ok("../ena"));
        assert!(!module_name_ok("ena.ko"));
        assert!(!module_name_ok(&"x".repeat(57)));
    }
}
