//! The QEMU command line (pure), and the choice between KVM and TCG.
//!
//! The machine is the one known to boot Debian's cloud kernels from a kiln disk: q35 (x86_64) or
//! virt with a Cortex-A57 (aarch64), UEFI from two pflash drives, no network, no reboot (a
//! reboot or a `panic=-1` ends QEMU instead of looping), and the disk on NVMe as on EC2 Nitro.
//! The image is attached with `snapshot=on`: writes go to a throw-away overlay, never to it.

use super::{Arch, DiskBus};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Acceleration as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when /dev/kvm is usable for this architecture, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// What one QEMU run is made of.
#[derive(Debug, Clone)]
pub struct Machine<'a> {
    pub arch: Arch,
    pub kvm: bool,
    pub memory_mib: u32,
    pub firmware_code: &'a Path,
    pub firmware_vars: &'a Path,
    pub image: &'a Path,
    pub format: ImageFormat,
    pub disk: DiskBus,
}

/// How QEMU opens the image: a kiln build writes raw and qcow2 images that `kiln test` boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    #[default]
    Raw,
    Qcow2,
}

impl ImageFormat {
    /// qcow2 when the file starts with qcow2's magic (`QFI\xfb`), else raw. Never QEMU's own
    /// probing: a raw guest disk could start with any bytes.
    pub fn from_magic(first: &[u8]) -> ImageFormat {
        match first.starts_with(b"QFI\xfb") {
            true => ImageFormat::Qcow2,
            false => ImageFormat::Raw,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// The emulator binary for an architecture.
pub fn program(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-system-x86_64",
        Arch::Aarch64 => "qemu-system-aarch64",
    }
}

/// The Debian package that ships [`program`].
pub fn debian_package(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-system-x86",
        Arch::Aarch64 => "qemu-system-arm",
    }
}

/// `-machine` and `-cpu`: under KVM the guest gets the host's CPU; under TCG aarch64 needs a
/// named model (virt has none by default), and Cortex-A57 is the one Debian's arm64 kernel and
/// AAVMF are known to run on.
fn machine_args(arch: Arch, kvm: bool) -> Vec<&'static str> {
    match (arch, kvm) {
        (Arch::X86_64, false) => vec!["-machine", "q35"],
        (Arch::X86_64, true) => vec!["-machine", "q35", "-accel", "kvm", "-cpu", "host"],
        (Arch::Aarch64, false) => vec!["-machine", "virt", "-cpu", "cortex-a57"],
        (Arch::Aarch64, true) => vec!["-machine", "virt", "-accel", "kvm", "-cpu", "max"],
    }
}

/// The arguments after the program name. The serial console is on stdio (`-nographic`).
pub fn argv(m: &Machine) -> Vec<OsString> {
    let mut a: Vec<OsString> = machine_args(m.arch, m.kvm)
        .into_iter()
        .map(OsString::from)
        .collect();
    for s in [
        "-m",
        &m.memory_mib.to_string(),
        "-nographic",
        "-no-reboot",
        "-net",
        "none",
    ] {
        a.push(s.into());
    }
    a.push("-drive".into());
    a.push(opt(
        "if=pflash,format=raw,unit=0,readonly=on,file=",
        m.firmware_code,
    ));
    a.push("-drive".into());
    a.push(opt("if=pflash,format=raw,unit=1,file=", m.firmware_vars));
    a.push("-drive".into());
    let mut drive = opt("file=", m.image);
    drive.push(format!(
        ",if=none,id=disk0,format={},snapshot=on",
        m.format.as_str()
    ));
    a.push(drive);
    a.push("-device".into());
    a.push(
        match m.disk {
            DiskBus::Nvme => "nvme,serial=kiln-disk0,drive=disk0",
            DiskBus::Virtio => "virtio-blk-pci,drive=disk0",
        }
        .into(),
    );
    a
}

/// `prefix` + `path`, with the path's commas doubled as QEMU's option syntax requires.
fn opt(prefix: &str, path: &Path) -> OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        bytes.push(b);
        if b == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

/// Whether the host can run this architecture under KVM: same architecture, and /dev/kvm opens
/// for reading and writing (what QEMU needs).
pub fn kvm_possible(arch: Arch) -> bool {
    let host = match std::env::consts::ARCH {
        "x86_64" => Arch::X86_64,
        "aarch64" => Arch::Aarch64,
        _ => return false,
    };
    host == arch
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// Starts QEMU paused with KVM and asks it to quit at once. Some hosts (nested or sandboxed
/// virtualisation) hand out a /dev/kvm whose vCPUs QEMU cannot set up: it aborts on its first
/// register write. That shows here within a fraction of a second, before a real run is spent.
pub fn kvm_works(arch: Arch) -> bool {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(program(arch));
    cmd.args(machine_args(arch, true))
        .args(["-nodefaults", "-display", "none", "-S", "-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n");
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            tracing::info!(
                "KVM is not usable here ({}); using TCG: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(_) => false,
    }
}

/// The command line as one printable string (for logs and error messages).
pub fn display(program: &str, args: &[OsString]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&OsStr::new(a).to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn x86_64_under_tcg_is_the_known_good_command_line() {
        let m = Machine {
            arch: Arch::X86_64,
            kvm: false,
            memory_mib: 1024,
            firmware_code: Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            firmware_vars: Path::new("/tmp/k/vars.fd"),
            image: Path::new("/img/a.raw"),
            format: ImageFormat::Raw,
            disk: DiskBus::Nvme,
        };
        assert_eq!(
            display(program(m.arch), &argv(&m)),
            "qemu-system-x86_64 -machine q35 -m 1024 -nographic -no-reboot -net none \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,unit=1,file=/tmp/k/vars.fd \
             -drive file=/img/a.raw,if=none,id=disk0,format=raw,snapshot=on \
             -device nvme,serial=kiln-disk0,drive=disk0"
        );
    }

    #[test]
    fn aarch64_virtio_kvm_and_commas() {
        let m = Machine {
            arch: Arch::Aarch64,
            kvm: false,
            memory_mib: 2048,
            firmware_code: Path::new("/fw/CODE.fd"),
            firmware_vars: Path::new("/fw/VARS.fd"),
            image: Path::new("/img/a,b.raw"),
            format: ImageFormat::Raw,
            disk: DiskBus::Virtio,
        };
        let a = strings(&argv(&m));
        assert_eq!(a[..4], ["-machine", "virt", "-cpu", "cortex-a57"]);
        assert!(a.contains(&"file=/img/a,,b.raw,if=none,id=disk0,format=raw,snapshot=on".into()));
        assert_eq!(a.last().unwrap(), "virtio-blk-pci,drive=disk0");
        assert!(a.contains(&"2048".into()));
        assert_eq!(program(m.arch), "qemu-system-aarch64");

        let kvm = strings(&argv(&Machine {
            kvm: true,
            ..m.clone()
        }));
        assert_eq!(
            kvm[..6],
            ["-machine", "virt", "-accel", "kvm", "-cpu", "max"]
        );
        let x86 = strings(&argv(&Machine {
            kvm: true,
            arch: Arch::X86_64,
            ..m
        }));
        assert_eq!(
            x86[..6],
            ["-machine", "q35", "-accel", "kvm", "-cpu", "host"]
        );
    }

    #[test]
    fn every_run_attaches_the_image_in_snapshot_mode() {
        for disk in [DiskBus::Nvme, DiskBus::Virtio] {
            for arch in [Arch::X86_64, Arch::Aarch64] {
                let m = Machine {
                    arch,
                    kvm: false,
                    memory_mib: 512,
                    firmware_code: Path::new("c"),
                    firmware_vars: Path::new("v"),
                    image: Path::new("i"),
                    format: ImageFormat::Raw,
                    disk,
                };
                let a = strings(&argv(&m));
                let drives: Vec<_> = a.iter().filter(|s| s.starts_with("file=")).collect();
                assert_eq!(drives.len(), 1);
                assert!(drives[0].ends_with(",snapshot=on"));
                assert!(a.windows(2).any(|w| w == ["-net", "none"]));
                assert!(a.contains(&"-no-reboot".into()));
            }
        }
    }

    #[test]
    fn a_qcow2_image_is_attached_as_qcow2() {
        assert_eq!(
            ImageFormat::from_magic(b"QFI\xfb\0\0\0\x03"),
            ImageFormat::Qcow2
        );
        assert_eq!(ImageFormat::from_magic(b"\0\0\0\0"), ImageFormat::Raw);
        assert_eq!(ImageFormat::from_magic(b""), ImageFormat::Raw);
        let m = Machine {
            arch: Arch::X86_64,
            kvm: false,
            memory_mib: 512,
            firmware_code: Path::new("/c.fd"),
            firmware_vars: Path::new("/v.fd"),
            image: Path::new("/img/a.qcow2"),
            format: ImageFormat::Qcow2,
            disk: DiskBus::Nvme,
        };
        let a = strings(&argv(&m));
        assert!(a.contains(&"file=/img/a.qcow2,if=none,id=disk0,format=qcow2,snapshot=on".into()));
    }
}
