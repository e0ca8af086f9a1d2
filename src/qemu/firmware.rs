//! UEFI firmware for the test machine: Debian's OVMF (x86_64) and AAVMF (aarch64), or files the
//! user names, and a fresh copy of the variable store for every run.
//!
//! The code image is attached read-only; the variable store is writable (the firmware records
//! boot entries in it), so each run gets its own copy in its private directory, removed when the
//! run ends or the process is interrupted. A run never sees what an earlier one stored.

use super::{Arch, QemuError};
use std::path::{Path, PathBuf};

/// The firmware code and the variable store template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwarePaths {
    pub code: PathBuf,
    pub vars: PathBuf,
}

impl FirmwarePaths {
    /// Where Debian installs them: `ovmf` for x86_64 (the 4 MiB flash layout that QEMU's q35
    /// machine takes as two pflash drives), `qemu-efi-aarch64` for aarch64.
    pub fn debian(arch: Arch) -> FirmwarePaths {
        match arch {
            Arch::X86_64 => FirmwarePaths {
                code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                vars: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
            },
            Arch::Aarch64 => FirmwarePaths {
                code: "/usr/share/AAVMF/AAVMF_CODE.fd".into(),
                vars: "/usr/share/AAVMF/AAVMF_VARS.fd".into(),
            },
        }
    }
}

/// The Debian package that ships an architecture's firmware.
pub fn debian_package(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "ovmf",
        Arch::Aarch64 => "qemu-efi-aarch64",
    }
}

/// The firmware to use: `given`, else Debian's; both files must be readable.
pub fn locate(arch: Arch, given: Option<&FirmwarePaths>) -> Result<FirmwarePaths, QemuError> {
    let fw = given
        .cloned()
        .unwrap_or_else(|| FirmwarePaths::debian(arch));
    for p in [&fw.code, &fw.vars] {
        if let Err(source) = std::fs::File::open(p) {
            return Err(QemuError::Firmware {
                path: p.clone(),
                package: if given.is_some() {
                    None
                } else {
                    Some(debian_package(arch))
                },
                source,
            });
        }
    }
    Ok(fw)
}

/// A fresh copy of the variable store in the run's private directory `dir`; returns its path.
pub fn copy_vars(template: &Path, dir: &Path) -> Result<PathBuf, QemuError> {
    let path = dir.join("vars.fd");
    std::fs::copy(template, &path).map_err(|source| QemuError::Io {
        what: "copy the firmware variable store",
        path: template.to_path_buf(),
        source,
    })?;
    // The template is installed read-only; the firmware writes its copy.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        QemuError::Io {
            what: "make the firmware variable store writable",
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vars_copy_is_fresh_and_writable() {
        let src = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(src.path(), b"template").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o444)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = copy_vars(src.path(), dir.path()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"template");
        std::fs::write(&p, b"changed by firmware").unwrap();
        assert_eq!(std::fs::read(src.path()).unwrap(), b"template");
    }

    #[test]
    fn missing_firmware_names_the_package_unless_given() {
        let fw = FirmwarePaths {
            code: "/nonexistent/CODE.fd".into(),
            vars: "/nonexistent/VARS.fd".into(),
        };
        let e = locate(Arch::X86_64, Some(&fw)).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/CODE.fd"), "{e}");
        assert!(!e.contains("apt-get"), "{e}");
        let d = FirmwarePaths::debian(Arch::Aarch64);
        assert!(d.code.ends_with("AAVMF_CODE.fd") && d.vars.ends_with("AAVMF_VARS.fd"));
    }
}
