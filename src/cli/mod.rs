//! Subcommands. Each module owns its arguments and its `run`.

mod aws_common;
mod boot;
mod build;
mod hash;
mod images;
mod lock;
mod publish;
mod push;
mod register;
mod test;
mod trust;
mod upload;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Build reproducible bootable disk images from a TOML recipe, without root.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a recipe's images: a raw GPT disk, and qcow2, VHD, VMDK or an OCI image (--format).
    Build(build::Args),
    /// Push an OCI image layout (from `kiln build --format oci`) to a registry.
    Push(push::Args),
    /// Print an image file's sha256 (or, with --blocks, its blocks digest), reading only its data.
    Hash(hash::Args),
    /// Resolve a recipe's packages and write `<recipe stem>.lock` beside it.
    Lock(lock::Args),
    /// Upload a raw image to an EBS snapshot (EBS direct APIs).
    Upload(upload::Args),
    /// Check that a snapshot equals an image byte for byte (exit 1 naming the first differing block).
    Verify(verify::Args),
    /// Register an AMI from a snapshot, as the recipe's [ami] says.
    Register(register::Args),
    /// Build, boot-test and publish an AMI into every region of [ami] regions: shared, tagged,
    /// deprecation scheduled; what exists already is reused.
    Publish(publish::Args),
    /// kiln's AMIs: list, copy, share, unshare, deprecate, deregister, prune.
    Images(images::Args),
    /// Boot an image as EC2 would (UEFI, NIC, metadata service, the AMI's volume size) and run
    /// its recipe's [[test]] checks (exit 0 all pass, 1 one fails, 2 could not test).
    Test(test::Args),
    /// Boot an image in the same machine with its serial console on this terminal.
    Boot(boot::Args),
    /// (internal) Joins one guest connection to the metadata service: QEMU runs this.
    #[command(hide = true)]
    ImdsRelay(ImdsRelayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImdsRelayArgs {
    /// The metadata server's Unix socket.
    pub socket: std::path::PathBuf,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build(a) => build::run(a),
        Command::Push(a) => push::run(a),
        Command::Hash(a) => hash::run(a),
        Command::Lock(a) => lock::run(a),
        Command::Upload(a) => upload::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Register(a) => register::run(a),
        Command::Publish(a) => publish::run(a),
        Command::Images(a) => images::run(a),
        Command::Test(a) => test::run(a, cli.verbose),
        Command::Boot(a) => boot::run(a),
        Command::ImdsRelay(a) => match kiln::imds::relay(&a.socket) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(_) => Ok(ExitCode::from(1)),
        },
    }
}

pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

/// On Ctrl-C or SIGTERM, remove every temporary output and exit 130.
pub fn install_interrupt_cleanup() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        tracing::warn!(
            "cannot install the Ctrl-C handler; an interrupted build may leave temp files"
        );
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            kiln::cleanup::set_interrupted();
            // Files first (instant), then the actions (AWS calls, bounded by their timeouts).
            let removed = kiln::cleanup::remove_all();
            eprintln!(
                "\ninterrupted (signal {sig}); removed {} temporary file(s)",
                removed.len()
            );
            for p in removed {
                eprintln!("  removed {}", p.display());
            }
            for r in kiln::cleanup::run_actions() {
                match r {
                    Ok(done) => eprintln!("  {done}"),
                    Err(e) => eprintln!("  {e}"),
                }
            }
            std::process::exit(130);
        }
    });
}
