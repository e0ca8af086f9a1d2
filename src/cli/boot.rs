//! `kiln boot IMAGE`: the same machine as `kiln test`, with its serial console on this terminal.

use super::test::{InstanceArgs, MachineArgs, EXIT_ERROR};
use kiln::qemu::{Ec2Options, VmOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The raw disk image (never modified: the guest writes to an overlay).
    pub image: PathBuf,
    #[command(flatten)]
    pub instance: InstanceArgs,
    #[command(flatten)]
    pub machine: MachineArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let plan = kiln::manifest::read(&kiln::manifest::manifest_path(&a.image))
        .ok()
        .and_then(|m| m.test)
        .unwrap_or_default();
    let vm = VmOptions {
        machine: a.machine.options(),
        ..Default::default()
    };
    let opts = match a.instance.run_options(&plan, vm) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let public_key = match &opts.ssh_key {
        Some(p) => match kiln::checks::keys::given(p) {
            Ok(k) => k.public,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        },
        None => String::new(),
    };
    let mut vm = opts.vm.clone();
    vm.ec2 = Some(Ec2Options {
        region: opts.region.clone(),
        public_key,
        user_data: opts.user_data.clone(),
        require_token: opts.require_imdsv2,
        root_device_name: opts.root_device_name.clone(),
        forward: vec![22],
        relay_program: opts.relay_program.clone(),
    });
    let on_start = |cmd: &str, ports: &[(u16, u16)]| {
        eprintln!("kiln boot: {cmd}");
        if let Some((_, p)) = ports.iter().find(|(g, _)| *g == 22) {
            eprintln!(
                "kiln boot: the guest's SSH port is 127.0.0.1:{p} (ssh -p {p} admin@127.0.0.1)"
            );
        }
        eprintln!(
            "kiln boot: serial console follows; Ctrl-A X quits QEMU, Ctrl-A H lists the keys"
        );
    };
    match kiln::qemu::boot_interactive(&a.image, &vm, &on_start) {
        Ok(status) if status.success() => Ok(ExitCode::SUCCESS),
        Ok(status) => {
            eprintln!("qemu ended with {status}");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}
