//! Making the image bootable through UEFI: the kernel command line, systemd-boot with a Boot
//! Loader Specification entry or a Unified Kernel Image, and a generated initramfs.
//!
//! ```text
//! kernel (find in the tree) → cmdline → initrd (modules, busybox, /init → cpio)
//!   → systemd_boot (loader.conf + entry + kernel on the ESP) | uki (pe: stub + sections)
//! ```
//! [`install`] runs as one pipeline step after the tree is complete and before it is split into
//! filesystems, and adds everything to the tree under the ESP's mount.

pub mod cmdline;
pub mod cpio;
pub mod initrd;
pub mod kernel;
pub mod modules;
pub mod pe;
pub mod systemd_boot;
pub mod tree_io;
pub mod uki;

use crate::disk::layout::DiskPlan;
use crate::recipe::{Arch, Boot, Loader, PartType, Pos, Recipe};
use crate::tree::{Content, ContentStore, Time, Tree};
use crate::util::uuid_string;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{pos}: [boot] kernel = \"auto\" found no /boot/vmlinuz-* in the tree; install a kernel package (such as linux-image-cloud-amd64) or name the kernel with kernel = \"/boot/vmlinuz-…\"")]
    NoKernel { pos: Pos },
    #[error("{pos}: [boot] kernel = \"auto\" found several kernels in /boot ({found}); name one with kernel = \"/boot/vmlinuz-…\"")]
    ManyKernels { pos: Pos, found: String },
    #[error("{pos}: [boot] kernel {path} is not a regular file in the tree; name an installed kernel or use kernel = \"auto\"")]
    KernelMissing { pos: Pos, path: String },
    #[error("{pos}: cannot tell the version of kernel {path}: it is not named vmlinuz-<version> and /lib/modules holds no single version; rename it vmlinuz-<version>")]
    KernelVersion { pos: Pos, path: String },
    #[error("kernel {path}: {problem}")]
    KernelImage { path: String, problem: String },
    #[error("{pos}: loader = \"{loader}\" needs {path} in the tree; add the systemd-boot-efi package (or a file at that path)")]
    NoEfiBinary {
        pos: Pos,
        loader: &'static str,
        path: String,
    },
    #[error("{pos}: cannot assemble the unified kernel image: {problem}")]
    Uki { pos: Pos, problem: String },
    #[error("{pos}: [boot].initrd needs busybox in the tree (/bin/busybox); add the busybox-static package")]
    NoBusybox { pos: Pos },
    #[error("{pos}: [boot].initrd needs a statically linked busybox, but the tree's /bin/busybox is dynamic; install busybox-static instead of busybox")]
    DynamicBusybox { pos: Pos },
    #[error("{pos}: [boot].initrd names modules, but the tree has no /lib/modules/{version}; install the kernel's modules (its linux-image package)")]
    NoModulesDir { pos: Pos, version: String },
    #[error("{pos}: kernel module {name}{} is neither in {dir} nor built into the kernel; check [boot].initrd.modules", if chain.is_empty() { String::new() } else { format!(" (needed by {chain})") })]
    NoModule {
        pos: Pos,
        name: String,
        chain: String,
        dir: String,
    },
    #[error("{path}: not an ELF64 little-endian kernel module with a .modinfo section")]
    BadModule { path: String },
    #[error("{pos}: kernel {version} cannot unpack this initrd compression ({option} is not =y in /boot/config-{version}); choose another [boot].initrd.compression or \"auto\"")]
    Compression {
        pos: Pos,
        option: String,
        version: String,
    },
    #[error("{path} in the tree: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path} into the tree: {problem}")]
    Place { path: String, problem: String },
}

/// What [`install`] did, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub loader: Loader,
    pub kernel_version: String,
    pub cmdline: String,
}

impl Installed {
    /// EC2's `BootMode` for this image, when a UEFI loader is on the ESP.
    pub fn boot_mode(&self) -> Option<&'static str> {
        (self.loader != Loader::None).then_some("uefi")
    }
}

/// The architecture's part of EFI file names (`BOOTX64.EFI`, `systemd-bootaa64.efi`).
fn efi_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x64",
        Arch::Aarch64 => "aa64",
    }
}

fn machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => pe::MACHINE_AMD64,
        Arch::Aarch64 => pe::MACHINE_ARM64,
    }
}

/// `/etc/fstab` naming the root and every other mounted filesystem by PARTUUID.
pub fn fstab(plan: &DiskPlan) -> String {
    crate::packages::etc::fstab(plan)
}

/// Writes `/etc/fstab` into `tree` (called before the recipe's own entries, which may replace it).
pub fn install_fstab(tree: &mut Tree, plan: &DiskPlan, time: Time) -> Result<(), BootError> {
    tree_io::put_file(tree, "/etc/fstab", Content::bytes(fstab(plan)), 0o644, time)
}

/// Adds the loader, kernel, initrd and loader configuration to `tree` as `[boot]` asks.
pub fn install(
    tree: &mut Tree,
    recipe: &Recipe,
    boot: &Boot,
    plan: &DiskPlan,
    store: &ContentStore,
) -> Result<Installed, BootError> {
    let time = Time::from_secs(recipe.image.source_date_epoch);
    let arch = recipe.image.arch;
    let root = plan
        .partitions
        .iter()
        .find(|p| p.mount.as_deref() == Some("/"))
        .ok_or_else(|| BootError::Place {
            path: "/".into(),
            problem: "no partition mounts /".into(),
        })?;
    let partuuid = uuid_string(&root.unique_guid);
    let kernel = kernel::find(tree, boot)?;
    let cmdline = cmdline::build(arch, &partuuid, &boot.cmdline);
    let initrd = match &boot.initrd {
        Some(spec) => Some(initrd::build(
            tree,
            &kernel,
            spec,
            &partuuid,
            &root.unique_guid,
            recipe.image.source_date_epoch,
        )?),
        None => None,
    };
    let esp = recipe
        .partitions
        .iter()
        .find(|p| p.ptype == PartType::Esp)
        .and_then(|p| p.mount.clone())
        .unwrap_or_else(|| "/boot/efi".into());
    let esp = esp.trim_end_matches('/').to_string();
    let stored = |data: &[u8]| -> Result<Content, BootError> {
        store
            .write(&mut &data[..])
            .map_err(|source| BootError::Read {
                path: "<content store>".into(),
                source,
            })
    };
    let removable = format!("{esp}/EFI/BOOT/BOOT{}.EFI", efi_arch(arch).to_uppercase());
    let efi_dir = "/usr/lib/systemd/boot/efi";
    let need = |tree: &mut Tree, path: String, loader: &'static str| {
        tree_io::read(tree, &path)?.ok_or(BootError::NoEfiBinary {
            pos: boot.pos.clone(),
            loader,
            path,
        })
    };
    match boot.loader {
        Loader::SystemdBoot => {
            let sdboot = need(
                tree,
                format!("{efi_dir}/systemd-boot{}.efi", efi_arch(arch)),
                "systemd-boot",
            )?;
            let title = os_release(tree)?
                .as_deref()
                .and_then(|t| os_release_field(t, "PRETTY_NAME"))
                .unwrap_or_else(|| recipe.image.name.clone());
            let f = systemd_boot::layout(
                &recipe.image.name,
                &kernel.version,
                &title,
                &cmdline,
                initrd.is_some(),
            );
            tree_io::put_file(tree, &removable, stored(&sdboot)?, 0o755, time)?;
            let at = |p: &str| format!("{esp}/{p}");
            tree_io::put_file(
                tree,
                &at("loader/loader.conf"),
                Content::bytes(f.loader_conf),
                0o644,
                time,
            )?;
            tree_io::put_file(
                tree,
                &at(&f.entry_path),
                Content::bytes(f.entry),
                0o644,
                time,
            )?;
            tree_io::put_file(
                tree,
                &at(&f.kernel_path),
                stored(&kernel.image)?,
                0o644,
                time,
            )?;
            if let (Some(p), Some(i)) = (&f.initrd_path, &initrd) {
                tree_io::put_file(tree, &at(p), stored(i)?, 0o644, time)?;
            }
        }
        Loader::Uki => {
            let stub = need(
                tree,
                format!("{efi_dir}/linux{}.efi.stub", efi_arch(arch)),
                "uki",
            )?;
            let osrel = os_release(tree)?.unwrap_or_else(|| {
                format!(
                    "NAME={n}\nID={n}\nVERSION_ID={v}\nPRETTY_NAME=\"{n} {v}\"\n",
                    n = recipe.image.name,
                    v = recipe.image.version
                )
            });
            let cmdline_nul = format!("{cmdline}\0");
            let uname = format!("{}\0", kernel.version);
            let mut sections = vec![
                uki::Section {
                    name: ".osrel",
                    data: osrel.as_bytes(),
                },
                uki::Section {
                    name: ".cmdline",
                    data: cmdline_nul.as_bytes(),
                },
                uki::Section {
                    name: ".uname",
                    data: uname.as_bytes(),
                },
            ];
            if let Some(i) = &initrd {
                sections.push(uki::Section {
                    name: ".initrd",
                    data: i,
                });
            }
            sections.push(uki::Section {
                name: ".linux",
                data: &kernel.image,
            });
            let image = uki::assemble(&stub, machine(arch), &sections).map_err(|problem| {
                BootError::Uki {
                    pos: boot.pos.clone(),
                    problem,
                }
            })?;
            tree_io::put_file(tree, &removable, stored(&image)?, 0o755, time)?;
        }
        Loader::None => {
            if let Some(i) = &initrd {
                let path = format!("/boot/initrd.img-{}", kernel.version);
                tree_io::put_file(tree, &path, stored(i)?, 0o644, time)?;
            }
        }
    }
    Ok(Installed {
        loader: boot.loader,
        kernel_version: kernel.version,
        cmdline,
    })
}

/// The tree's os-release(5): `/etc/os-release`, else `/usr/lib/os-release`.
fn os_release(tree: &mut Tree) -> Result<Option<String>, BootError> {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(b) = tree_io::read(tree, p)? {
            return Ok(Some(String::from_utf8_lossy(&b).into_owned()));
        }
    }
    Ok(None)
}

fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_string())
}
