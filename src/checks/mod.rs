//! `kiln test`'s checks: EC2 Image Builder's test stage, run on the local machine.
//!
//! [`run`] boots the image in the EC2-like machine ([`crate::qemu::Vm`]: NIC, metadata service,
//! SMBIOS identity, a volume of the AMI's size), with the run's key pair served as the instance's
//! key, then runs the recipe's `[[test]]`s in order. Each waits, with its own timeout, for the
//! guest to come up and the check to pass; a kernel panic, the firmware finding no loader, or
//! the machine stopping ends every check at once. A `reboot` test then reboots the guest
//! (through SSH, as a user would), checks that it comes back with the same SSH host keys, and
//! runs every other test again. The [`Report`] says what passed, what failed and why (with the
//! console's last lines), and when the first SSH login came.
//!
//! - `keys`: the key pair; `ssh`: logins with the system's OpenSSH, host keys checked;
//! - `probe`: TCP through QEMU's forwards, and HTTP; `exec`: each kind of check;
//! - `report`: the table, JSON and JUnit XML; `command`: helper programs with a deadline.

mod command;
mod exec;
pub mod keys;
mod probe;
pub mod report;
pub mod ssh;

use crate::qemu::{Ec2Options, QemuError, RunDir, Vm, VmOptions};
use crate::recipe::{Test, TestKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use report::{CheckResult, Report};

/// Why the image could not be tested at all (`kiln test` exits 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error("{program} is not installed; install the Debian package {package} (apt-get install {package})")]
    Missing {
        program: &'static str,
        package: &'static str,
    },
    #[error("cannot use the SSH key {}: {why}", path.display())]
    Key { path: PathBuf, why: String },
    #[error("no test to run: the recipe has no [[test]] and no console text was given")]
    NoTests,
}

/// Everything about a run but the tests.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The machine, volume size, console log and streaming (the EC2 part is filled in here).
    pub vm: VmOptions,
    /// `--ssh-key FILE.pub`; None: a throw-away ed25519 pair for the run.
    pub ssh_key: Option<PathBuf>,
    pub user_data: Option<Vec<u8>>,
    pub require_imdsv2: bool,
    pub region: String,
    pub root_device_name: String,
    /// kiln's own binary (QEMU runs it as the metadata relay).
    pub relay_program: PathBuf,
    /// The OpenSSH client.
    pub ssh_program: PathBuf,
}

impl RunOptions {
    /// Defaults for `image`'s tests: the machine as given, us-east-1, /dev/xvda, this process's
    /// executable as the relay (right when it is kiln's binary), `ssh` from PATH.
    pub fn new(vm: VmOptions) -> RunOptions {
        RunOptions {
            vm,
            ssh_key: None,
            user_data: None,
            require_imdsv2: false,
            region: "us-east-1".into(),
            root_device_name: "/dev/xvda".into(),
            relay_program: std::env::current_exe().unwrap_or_else(|_| "kiln".into()),
            ssh_program: "ssh".into(),
        }
    }
}

/// Boots `image` and runs `tests` (in order; a `reboot` test runs after the others, then they
/// all run again). `Ok` is a verdict; `Err` means the image could not be tested.
pub fn run(image: &Path, tests: &[Test], opts: &RunOptions) -> Result<Report, Error> {
    if tests.is_empty() {
        return Err(Error::NoTests);
    }
    let needs_ssh = tests.iter().any(|t| t.kind.uses_ssh());
    if needs_ssh && find_in_path(&opts.ssh_program).is_none() {
        return Err(Error::Missing {
            program: "ssh",
            package: "openssh-client",
        });
    }
    let dir = RunDir::new()?;
    let key = match (&opts.ssh_key, needs_ssh) {
        (Some(p), _) => Some(keys::given(p)?),
        (None, true) => Some(keys::throwaway(dir.path())?),
        (None, false) => None,
    };
    let mut forward: Vec<u16> = tests.iter().filter_map(|t| t.kind.port()).collect();
    forward.sort_unstable();
    forward.dedup();
    let mut vm_opts = opts.vm.clone();
    vm_opts.ec2 = Some(Ec2Options {
        region: opts.region.clone(),
        public_key: key.as_ref().map(|k| k.public.clone()).unwrap_or_default(),
        user_data: opts.user_data.clone(),
        require_token: opts.require_imdsv2,
        root_device_name: opts.root_device_name.clone(),
        forward,
        relay_program: opts.relay_program.clone(),
    });
    let vm = Vm::start(image, &vm_opts, dir.path())?;
    let ssh = match (key, vm.host_port(22)) {
        (Some(k), Some(port)) => Some(ssh::Ssh::new(&opts.ssh_program, k, dir.path(), port)),
        _ => None,
    };
    let mut session = exec::Session::new(vm, ssh);
    let mut results = Vec::new();
    let (reboots, others): (Vec<&Test>, Vec<&Test>) = tests
        .iter()
        .partition(|t| matches!(t.kind, TestKind::Reboot { .. }));
    for t in &others {
        results.push(session.check(t, false));
    }
    let mut reboot_login = None;
    if let Some(r) = reboots.first() {
        let (result, login) = session.reboot(r);
        let ok = result.passed;
        results.push(result);
        reboot_login = login;
        if ok {
            for t in &others {
                results.push(session.check(t, true));
            }
        }
    }
    let done = session.vm().started().elapsed();
    let (vm, ssh) = session.into_parts();
    let first_login = ssh
        .as_ref()
        .and_then(|s| s.first_login)
        .map(|t| t.duration_since(vm.started()));
    let host_keys = ssh.as_ref().map(ssh::Ssh::host_keys);
    let imds = vm.imds_stats();
    let kvm = vm.kvm();
    let volume_size = vm.volume_size();
    let instance_id = vm.identity().map(|i| i.instance_id.clone());
    let ports = vm
        .ports()
        .iter()
        .map(|&(guest, host)| report::ForwardedPort { guest, host })
        .collect();
    let log = vm.finish()?;
    drop(dir);
    Ok(Report {
        image: image.to_path_buf(),
        passed: results.iter().all(|r| r.passed),
        results,
        first_ssh_login: first_login.map(secs),
        first_ssh_login_after_reboot: reboot_login.map(secs),
        seconds: secs(done),
        imds,
        imdsv2_required: opts.require_imdsv2,
        host_keys,
        accel: if kvm { "kvm" } else { "tcg" },
        volume_size,
        instance_id,
        ports,
        console_log: log,
    })
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn find_in_path(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
