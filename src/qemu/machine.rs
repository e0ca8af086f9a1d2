//! The QEMU command line (pure), and the choice between KVM and TCG.
//!
//! The machine is the one known to boot Debian's cloud kernels from a kiln disk: q35 (x86_64) or
//! virt with a Cortex-A57 (aarch64), UEFI from two pflash drives, no reboot (a reboot or a
//! `panic=-1` ends QEMU instead of looping; the reboot check allows one through QMP), and the
//! disk on NVMe as on EC2 Nitro. The image is never written: it is the backing file of a qcow2
//! overlay of the volume's size. With an EC2 identity the machine also has EC2's SMBIOS strings
//! and a NIC on the user network (`network`).

use super::network::{self, Network};
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
    /// The disk: kiln's qcow2 overlay, backed by the image.
    pub overlay: &'a Path,
    pub disk: DiskBus,
    /// None: no NIC at all (`-net none`).
    pub network: Option<Network<'a>>,
    /// EC2's SMBIOS identity: the system UUID (also the serial) and the instance type.
    pub smbios: Option<(&'a str, &'a str)>,
    /// The QMP socket QEMU listens on.
    pub qmp: Option<&'a Path>,
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
    for s in ["-m", &m.memory_mib.to_string(), "-nographic", "-no-reboot"] {
        a.push(s.into());
    }
    match &m.network {
        Some(n) => a.extend(network::args(n)),
        None => a.extend(["-net".into(), "none".into()]),
    }
    if let Some((uuid, product)) = m.smbios {
        // cloud-init's ds-identify: system UUID and serial equal and starting with "ec2".
        a.push("-smbios".into());
        a.push(
            format!(
                "type=1,manufacturer=Amazon EC2,product={},serial={uuid},uuid={uuid}",
                product.replace(',', ",,")
            )
            .into(),
        );
        a.push("-smbios".into());
        a.push("type=3,manufacturer=Amazon EC2,asset=Amazon EC2".into());
    }
    if let Some(q) = m.qmp {
        a.push("-qmp".into());
        let mut v = opt("unix:", q);
        v.push(",server=on,wait=off");
        a.push(v);
    }
    a.push("-drive".into());
    a.push(opt(
        "if=pflash,format=raw,unit=0,readonly=on,file=",
        m.firmware_code,
    ));
    a.push("-drive".into());
    a.push(opt("if=pflash,format=raw,unit=1,file=", m.firmware_vars));
    a.push("-drive".into());
    let mut drive = opt("file=", m.overlay);
    drive.push(",if=none,id=disk0,format=qcow2,discard=unmap");
    a.push(drive);
    a.push("-device".into());
    // bootindex: the firmware boots the disk first, whatever else the machine has.
    a.push(
        match m.disk {
            DiskBus::Nvme => "nvme,serial=kiln-disk0,drive=disk0,bootindex=1",
            DiskBus::Virtio => "virtio-blk-pci,drive=disk0,bootindex=1",
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

    fn plain(arch: Arch, disk: DiskBus) -> Machine<'static> {
        Machine {
            arch,
            kvm: false,
            memory_mib: 1024,
            firmware_code: Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            firmware_vars: Path::new("/tmp/k/vars.fd"),
            overlay: Path::new("/tmp/k/disk.qcow2"),
            disk,
            network: None,
            smbios: None,
            qmp: None,
        }
    }

    #[test]
    fn x86_64_under_tcg_is_the_known_good_command_line() {
        let m = plain(Arch::X86_64, DiskBus::Nvme);
        assert_eq!(
            display(program(m.arch), &argv(&m)),
            "qemu-system-x86_64 -machine q35 -m 1024 -nographic -no-reboot -net none \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,unit=1,file=/tmp/k/vars.fd \
             -drive file=/tmp/k/disk.qcow2,if=none,id=disk0,format=qcow2,discard=unmap \
             -device nvme,serial=kiln-disk0,drive=disk0,bootindex=1"
        );
    }

    #[test]
    fn the_ec2_machine_has_a_nic_ec2s_smbios_and_a_monitor() {
        let m = Machine {
            network: Some(Network {
                forward: &[22],
                imds_relay: Some((Path::new("/bin/kiln"), Path::new("/tmp/k/imds.sock"))),
                mac: "0e:00:00:00:00:01",
            }),
            smbios: Some(("ec2abcde-0123-4567-89ab-0123456789ab", "t3.micro")),
            qmp: Some(Path::new("/tmp/k/qmp.sock")),
            ..plain(Arch::X86_64, DiskBus::Nvme)
        };
        let s = display(program(m.arch), &argv(&m));
        assert!(!s.contains("-net none"), "{s}");
        assert!(
            s.contains(" -netdev user,id=net0,net=169.254.0.0/16,"),
            "{s}"
        );
        assert!(
            s.contains(" -device virtio-net-pci,netdev=net0,mac=0e:00:00:00:00:01,romfile= "),
            "{s}"
        );
        assert!(s.contains(
            " -smbios type=1,manufacturer=Amazon EC2,product=t3.micro,serial=ec2abcde-0123-4567-89ab-0123456789ab,uuid=ec2abcde-0123-4567-89ab-0123456789ab "
        ), "{s}");
        assert!(
            s.contains(" -qmp unix:/tmp/k/qmp.sock,server=on,wait=off "),
            "{s}"
        );
    }

    #[test]
    fn aarch64_virtio_kvm_and_commas() {
        let m = Machine {
            memory_mib: 2048,
            overlay: Path::new("/tmp/a,b/disk.qcow2"),
            ..plain(Arch::Aarch64, DiskBus::Virtio)
        };
        let a = strings(&argv(&m));
        assert_eq!(a[..4], ["-machine", "virt", "-cpu", "cortex-a57"]);
        assert!(a.contains(
            &"file=/tmp/a,,b/disk.qcow2,if=none,id=disk0,format=qcow2,discard=unmap".into()
        ));
        assert_eq!(a.last().unwrap(), "virtio-blk-pci,drive=disk0,bootindex=1");
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
}
