//! `kiln verify SNAPSHOT_ID IMAGE`: exit 0 only if the snapshot equals the image byte for byte.

use super::aws_common::{self, AwsArgs};
use kiln::aws::retry::Retrier;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub snapshot_id: String,
    /// The raw disk image to compare with.
    pub image: PathBuf,
    /// Blocks read at once.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let rt = aws_common::runtime()?;
    let clients = a.aws.connect(rt)?;
    let retrier = Retrier::default();
    let diff = rt.block_on(kiln::aws::verify::verify(
        &clients,
        &retrier,
        &a.snapshot_id,
        &a.image,
        a.workers,
    ))?;
    match diff {
        None => {
            println!(
                "snapshot {} is identical to {}",
                a.snapshot_id,
                a.image.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(d) => {
            println!(
                "snapshot {} differs from {} at block {} (512 KiB blocks): {}",
                a.snapshot_id,
                a.image.display(),
                d.block,
                d.why
            );
            Ok(ExitCode::from(1))
        }
    }
}
