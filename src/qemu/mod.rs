//! The test machine: an image booted under QEMU with UEFI firmware, as EC2 would launch it.
//!
//! [`Vm::start`] boots the image (never modified: the backing file of a qcow2 overlay with the
//! AMI's volume size) with OVMF or AAVMF and a fresh variable store, the disk on NVMe (or
//! virtio-blk), KVM when it works and TCG otherwise. With [`Ec2Options`] the machine also gets
//! EC2's SMBIOS identity, a virtio-net NIC on QEMU's user network, and kiln's stand-in for the
//! instance metadata service at 169.254.169.254 ([`crate::imds`]); the guest ports the checks need
//! are forwarded from 127.0.0.1. The serial console streams into a shared [`Console`].
//! [`boot_interactive`] gives the same machine the terminal. The checks themselves live in
//! [`crate::checks`].
//!
//! - `arch`: the image's architecture (manifest, else GPT root type, else the ESP's loader);
//!   `disk_view`: the virtual disk of a raw or qcow2 file, read-only.
//! - `firmware`: locating the firmware, the per-run variable store.
//! - `machine`: the command line (pure) and the KVM/TCG choice; `network`: the NIC (pure).
//! - `overlay`: the qcow2 overlay; `rundir`: the run's private directory.
//! - `console`: the console's lines and the signs of a failed boot.
//! - `qmp`: QEMU's monitor; `process`: the child process, stopped on every path.
//! - `vm`: a running machine; `run`: what every run shares.

pub mod arch;
pub mod console;
pub mod disk_view;
pub mod firmware;
pub mod image_file;
pub mod machine;
pub mod network;
pub mod overlay;
mod process;
mod qmp;
mod run;
pub mod rundir;
mod vm;

pub use crate::recipe::Arch;
pub use console::{Console, FailReason, Wait, TAIL_LINES};
pub use firmware::FirmwarePaths;
pub use machine::Accel;
pub use run::boot_interactive;
pub use rundir::RunDir;
pub use vm::Vm;

use std::path::PathBuf;
use std::time::Duration;

/// What `kiln test` waits for on the console when neither the recipe nor `--expect` names a
/// check: the line kiln's minimal recipes' init prints once userspace runs.
pub const DEFAULT_EXPECT: &str = "KILN-BOOT-OK";
/// Generous for TCG: Debian's cloud kernel reaches a busybox init in about 20 s (x86_64) on an
/// idle core, several times that on a loaded one. Failures usually end a run much sooner.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(240);
pub const DEFAULT_MEMORY_MIB: u32 = 1024;

/// How the disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// `-device nvme`, as on EC2 Nitro.
    #[default]
    Nvme,
    /// `-device virtio-blk-pci`.
    Virtio,
}

/// The machine, shared by `kiln test` and `kiln boot`.
#[derive(Debug, Clone)]
pub struct MachineOptions {
    /// None: from the manifest beside the image, else from its GPT root partition type.
    pub arch: Option<Arch>,
    pub disk: DiskBus,
    /// None: Debian's OVMF/AAVMF.
    pub firmware: Option<FirmwarePaths>,
    pub memory_mib: u32,
    pub accel: Accel,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            arch: None,
            disk: DiskBus::Nvme,
            firmware: None,
            memory_mib: DEFAULT_MEMORY_MIB,
            accel: Accel::Auto,
        }
    }
}

/// One run of the machine.
#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    pub machine: MachineOptions,
    /// The EBS volume's size in bytes; None: the image's size rounded up to whole GiB (the
    /// smallest volume EC2 gives an AMI's snapshot).
    pub volume_size: Option<u64>,
    /// EC2's identity, network and metadata service; None: a machine without a NIC.
    pub ec2: Option<Ec2Options>,
    /// Where to save the whole console output (written to a temp file, renamed at the end).
    pub log: Option<PathBuf>,
    /// Echo the console to stderr as it streams.
    pub stream: bool,
}

/// What makes the machine look like an EC2 instance to the guest.
#[derive(Debug, Clone)]
pub struct Ec2Options {
    pub region: String,
    /// The key pair's public key (OpenSSH format), served at `public-keys/0/openssh-key`.
    pub public_key: String,
    pub user_data: Option<Vec<u8>>,
    /// `[ami] imds_support = "v2.0"`: token-less metadata requests get 401.
    pub require_token: bool,
    /// The AMI's root device name (`block-device-mapping/root`).
    pub root_device_name: String,
    /// Guest TCP ports to reach from 127.0.0.1.
    pub forward: Vec<u16>,
    /// kiln's own binary: QEMU runs `PROGRAM imds-relay SOCKET` for each metadata connection.
    pub relay_program: PathBuf,
}

/// Why a boot test could not be run at all (as opposed to a boot that failed).
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot read the image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot tell the architecture of {}: {why}; pass --arch x86_64 or --arch aarch64", image.display())]
    UnknownArch { image: PathBuf, why: String },
    #[error("{program} is not installed; install the Debian package {package} (apt-get install {package})")]
    QemuMissing {
        program: &'static str,
        package: &'static str,
    },
    #[error("cannot read the UEFI firmware {}: {source}{}", path.display(), install_hint(*.package))]
    Firmware {
        path: PathBuf,
        package: Option<&'static str>,
        source: std::io::Error,
    },
    #[error("KVM was asked for, but this host cannot run {arch} guests under KVM (/dev/kvm missing, not writable, another architecture, or refused by QEMU); use --accel tcg")]
    KvmUnavailable { arch: &'static str },
    #[error("the volume ({volume} bytes) is smaller than the image ({image} bytes); EC2 refuses a volume smaller than the AMI's snapshot")]
    VolumeTooSmall { volume: u64, image: u64 },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{program} stopped ({status}) before the machine started: {stderr}")]
    QemuFailed {
        program: &'static str,
        status: String,
        stderr: String,
    },
    #[error("cannot {what} ({}): {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn install_hint(package: Option<&str>) -> String {
    match package {
        Some(p) => format!("; install the Debian package {p} (apt-get install {p}) or name the files with --firmware-code and --firmware-vars"),
        None => String::new(),
    }
}
