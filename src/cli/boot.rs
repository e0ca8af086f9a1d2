//! `kiln boot IMAGE`: the same machine as `kiln test`, with its serial console on this terminal.

use super::test::{MachineArgs, EXIT_ERROR};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The raw disk image (never modified: QEMU writes to a throw-away overlay).
    pub image: PathBuf,
    #[command(flatten)]
    pub machine: MachineArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let on_start = |cmd: &str| {
        eprintln!("kiln boot: {cmd}");
        eprintln!(
            "kiln boot: serial console follows; Ctrl-A X quits QEMU, Ctrl-A H lists the keys"
        );
    };
    match kiln::qemu::boot_interactive(&a.image, &a.machine.options(), &on_start) {
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
