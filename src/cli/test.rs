//! `kiln test IMAGE`: boot the image under QEMU and wait for a marker on the serial console.
//! Exit 0 pass, 1 fail (the reason and the console's last lines are printed), 2 error.

use kiln::qemu::{self, Accel, Arch, DiskBus, FirmwarePaths, MachineOptions, Outcome, TestOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The raw disk image (never modified: QEMU writes to a throw-away overlay).
    pub image: PathBuf,
    /// The text on the serial console that means the image booted.
    #[arg(long, default_value = qemu::DEFAULT_EXPECT)]
    pub expect: String,
    /// Seconds to wait for it.
    #[arg(long, default_value_t = qemu::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Where to save the console output; default `<image stem>.console.log` beside the image.
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// The machine's options, shared with `kiln boot`.
#[derive(Debug, clap::Args)]
pub struct MachineArgs {
    /// How the disk is attached: nvme (as on EC2 Nitro) or virtio.
    #[arg(long, value_enum, default_value_t = DiskArg::Nvme)]
    pub disk: DiskArg,
    /// The image's architecture; default from its manifest, else its GPT root partition type.
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
    /// UEFI firmware code (default Debian's OVMF_CODE_4M.fd or AAVMF_CODE.fd).
    #[arg(long, requires = "firmware_vars")]
    pub firmware_code: Option<PathBuf>,
    /// UEFI variable store template, copied afresh for every run.
    #[arg(long, requires = "firmware_code")]
    pub firmware_vars: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = qemu::DEFAULT_MEMORY_MIB, value_parser = clap::value_parser!(u32).range(64..))]
    pub memory: u32,
    /// auto: KVM when /dev/kvm works for this architecture, else TCG.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DiskArg {
    Nvme,
    Virtio,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

impl MachineArgs {
    pub fn options(&self) -> MachineOptions {
        MachineOptions {
            arch: self.arch.map(|a| match a {
                ArchArg::X86_64 => Arch::X86_64,
                ArchArg::Aarch64 => Arch::Aarch64,
            }),
            disk: match self.disk {
                DiskArg::Nvme => DiskBus::Nvme,
                DiskArg::Virtio => DiskBus::Virtio,
            },
            firmware: match (&self.firmware_code, &self.firmware_vars) {
                (Some(code), Some(vars)) => Some(FirmwarePaths {
                    code: code.clone(),
                    vars: vars.clone(),
                }),
                _ => None,
            },
            memory_mib: self.memory,
            accel: match self.accel {
                AccelArg::Auto => Accel::Auto,
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            },
        }
    }
}

/// Exit code for "could not test" (no QEMU, no firmware, unreadable image).
pub const EXIT_ERROR: u8 = 2;

pub fn run(a: Args, verbose: u8) -> anyhow::Result<ExitCode> {
    let log = a.log.clone().unwrap_or_else(|| default_log(&a.image));
    let opts = TestOptions {
        expect: a.expect.clone(),
        timeout: Duration::from_secs(a.timeout),
        log: Some(log),
        stream: verbose > 0,
        machine: a.machine.options(),
    };
    let result = qemu::test_image(&a.image, &opts);
    if kiln::cleanup::interrupted() {
        // Ctrl-C ended QEMU; the signal thread reports and exits (130).
        return Ok(ExitCode::from(130));
    }
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let log_note = |log: Option<&std::path::Path>| {
        log.map(|l| format!("; console log: {}", l.display()))
            .unwrap_or_default()
    };
    match &outcome {
        Outcome::Pass { elapsed, log } => {
            println!(
                "PASS {}: {:?} appeared after {:.1} s{}",
                a.image.display(),
                a.expect,
                elapsed.as_secs_f64(),
                log_note(log.as_deref())
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Fail {
            reason,
            tail_lines,
            elapsed,
            log,
        } => {
            println!(
                "FAIL {}: {reason} (after {:.1} s, waiting for {:?})",
                a.image.display(),
                elapsed.as_secs_f64(),
                a.expect
            );
            println!("last {} console lines:", tail_lines.len());
            for l in tail_lines {
                println!("  | {l}");
            }
            if let Some(l) = log {
                println!("console log: {}", l.display());
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// `out/x.raw` → `out/x.console.log`.
pub fn default_log(image: &std::path::Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    image.with_file_name(format!("{stem}.console.log"))
}
