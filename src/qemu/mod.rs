//! Boot-testing an image under QEMU with UEFI firmware, the way EC2 boots it.
//!
//! [`test_image`] boots the image (never modified: `snapshot=on`) with OVMF or AAVMF and a fresh
//! variable store, the disk on NVMe (or virtio-blk), KVM when it works and TCG otherwise, and
//! reads the serial console as it streams: it passes when the expected text appears, and fails
//! on the timeout, a kernel panic, the firmware finding no bootloader, or the machine stopping
//! first. [`boot_interactive`] gives the same machine the terminal.
//!
//! - `arch`: the image's architecture (manifest, else GPT root type).
//! - `firmware`: locating the firmware, the per-run variable store.
//! - `machine`: the command line (pure) and the KVM/TCG choice.
//! - `console`: the verdict (pure).
//! - `process`: the child process, stopped on every path.

pub mod arch;
pub mod console;
pub mod firmware;
pub mod machine;
mod process;
mod run;

pub use crate::recipe::Arch;
pub use console::{FailReason, TAIL_LINES};
pub use firmware::FirmwarePaths;
pub use machine::Accel;
pub use run::{boot_interactive, test_image};

use std::path::PathBuf;
use std::time::Duration;

/// What the boot test waits for by default: the line kiln's recipes' init prints once userspace
/// runs (`echo KILN-BOOT-OK`).
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

/// The machine, shared by [`test_image`] and [`boot_interactive`].
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

#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The text whose appearance on the serial console makes the test pass (one line).
    pub expect: String,
    pub timeout: Duration,
    /// Where to save the whole console output (written to a temp file, renamed at the end).
    pub log: Option<PathBuf>,
    /// Echo the console to stderr as it streams.
    pub stream: bool,
    pub machine: MachineOptions,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            expect: DEFAULT_EXPECT.into(),
            timeout: DEFAULT_TIMEOUT,
            log: None,
            stream: false,
            machine: MachineOptions::default(),
        }
    }
}

/// The verdict of a boot test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The expected text appeared, `elapsed` after QEMU started.
    Pass {
        elapsed: Duration,
        log: Option<PathBuf>,
    },
    Fail {
        reason: FailReason,
        /// The console's last [`TAIL_LINES`] lines, terminal escapes removed.
        tail_lines: Vec<String>,
        elapsed: Duration,
        log: Option<PathBuf>,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass { .. })
    }

    pub fn log(&self) -> Option<&std::path::Path> {
        match self {
            Outcome::Pass { log, .. } | Outcome::Fail { log, .. } => log.as_deref(),
        }
    }
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
    #[error("the expected text must be one non-empty line, not {0:?}")]
    BadExpect(String),
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
