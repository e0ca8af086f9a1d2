//! `kiln test IMAGE`: EC2 Image Builder's test stage, locally. Boots the image as an instance of
//! its AMI would boot (NIC, metadata service, a volume of the AMI's size, the run's key pair)
//! and runs the recipe's `[[test]]`s. Exit 0 all pass, 1 one fails, 2 the image could not be
//! tested.

use kiln::checks::{self, Report, RunOptions};
use kiln::qemu::{self, Accel, Arch, DiskBus, FirmwarePaths, MachineOptions, VmOptions};
use kiln::recipe::{Recipe, Test, TestKind, TestPlan};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The disk image: raw, qcow2, fixed VHD or streamOptimized VMDK, told by its own marker
    /// (never modified: the guest writes to an overlay).
    pub image: PathBuf,
    /// Take the tests (and [ami] volume_size, imds_support) from this recipe instead of the
    /// image's manifest.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Also check that this text appears on the serial console. Without any test, kiln waits
    /// for "KILN-BOOT-OK".
    #[arg(long)]
    pub expect: Option<String>,
    /// Seconds the --expect check (or the default one) waits.
    #[arg(long, default_value_t = qemu::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Where to save the console output; default `<image stem>.console.log` beside the image.
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub machine: MachineArgs,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
}

/// What the instance is launched with, shared with `kiln publish`.
#[derive(Debug, clap::Args)]
pub struct InstanceArgs {
    /// User data served by the metadata service (a cloud-init script or #cloud-config).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// The key pair's public key (the private key beside it, or in the SSH agent); default a
    /// throw-away ed25519 pair made for the run and deleted after it.
    #[arg(long, value_name = "FILE.pub")]
    pub ssh_key: Option<PathBuf>,
    /// The root volume's size (bytes, or with KiB/MiB/GiB/TiB); default the recipe's
    /// [ami] volume_size, else the image rounded up to whole GiB.
    #[arg(long, value_parser = parse_volume)]
    pub volume_size: Option<u64>,
}

fn parse_volume(s: &str) -> Result<u64, String> {
    kiln::recipe::parse_size(s).map_err(|e| e.to_string())
}

impl InstanceArgs {
    /// The run's options for `plan`'s machine; Err is a one-line reason (exit 2).
    pub fn run_options(&self, plan: &TestPlan, vm: VmOptions) -> Result<RunOptions, String> {
        let mut o = RunOptions::new(vm);
        o.vm.volume_size = self.volume_size.or(plan.volume_size);
        o.ssh_key = self.ssh_key.clone();
        o.user_data = match &self.user_data {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| format!("cannot read the user data {}: {e}", p.display()))?,
            ),
            None => None,
        };
        o.require_imdsv2 = plan.imdsv2_required;
        if let Some(r) = &plan.region {
            o.region = r.clone();
        }
        if let Some(d) = &plan.root_device_name {
            o.root_device_name = d.clone();
        }
        Ok(o)
    }
}

/// The tests to run: the plan's, then `--expect`'s console check; the default console check
/// when there are none.
pub fn tests_for(plan: &TestPlan, expect: Option<&str>, timeout: u64) -> Vec<Test> {
    let mut tests = plan.tests.clone();
    if let Some(e) = expect {
        tests.push(Test {
            name: format!("console shows {e:?}"),
            timeout,
            kind: TestKind::Console(e.to_string()),
        });
    }
    if tests.is_empty() {
        tests.push(Test {
            name: format!("console shows {:?}", qemu::DEFAULT_EXPECT),
            timeout,
            kind: TestKind::Console(qemu::DEFAULT_EXPECT.into()),
        });
    }
    tests
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

/// The plan of the recipe named, else the one the image's manifest records (else none).
fn plan(a: &Args) -> Result<TestPlan, String> {
    if let Some(r) = &a.recipe {
        let recipe = Recipe::load_with(r, &a.trust.trust()).map_err(|e| e.to_string())?;
        return Ok(recipe.test_plan().unwrap_or_default());
    }
    let m = kiln::manifest::manifest_path(&a.image);
    if !m.exists() {
        return Ok(TestPlan::default());
    }
    let manifest = kiln::manifest::read(&m).map_err(|e| e.to_string())?;
    Ok(manifest.test.unwrap_or_default())
}

pub fn run(a: Args, verbose: u8) -> anyhow::Result<ExitCode> {
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        Ok(ExitCode::from(EXIT_ERROR))
    };
    if a.expect
        .as_deref()
        .is_some_and(|e| e.is_empty() || e.contains(['\n', '\r']))
    {
        return fail("the expected text must be one non-empty line".into());
    }
    let plan = match plan(&a) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let tests = tests_for(&plan, a.expect.as_deref(), a.timeout);
    let vm = VmOptions {
        machine: a.machine.options(),
        log: Some(a.log.clone().unwrap_or_else(|| default_log(&a.image))),
        stream: verbose > 0,
        ..Default::default()
    };
    let opts = match a.instance.run_options(&plan, vm) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let result = checks::run(&a.image, &tests, &opts);
    if kiln::cleanup::interrupted() {
        // Ctrl-C ended QEMU; the signal thread reports and exits (130).
        return Ok(ExitCode::from(130));
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    print_report(&report, a.json);
    if let Some(j) = &a.junit {
        if let Err(e) = kiln::util::write_atomic(j, report.junit().as_bytes()) {
            return fail(format!("cannot write {}: {e}", j.display()));
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report on stdout: the JSON with `--json`, else the table (plain text, so it reads the
/// same in a terminal and in a CI log).
pub fn print_report(report: &Report, json: bool) {
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
}

/// `out/x.raw` → `out/x.console.log`.
pub fn default_log(image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    image.with_file_name(format!("{stem}.console.log"))
}
