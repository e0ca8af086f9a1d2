//! `kiln verify SNAPSHOT_ID IMAGE`: exit 0 only if the snapshot equals the image byte for byte.
//! The image is named by its blocks digest (its identity, as its manifest records it).

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
    let blocks = kiln::sink::blocks::BlockMapper::of_file(&a.image)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?
        .sha256;
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
                "snapshot {} is identical to {} (blocks sha256 {blocks})",
                a.snapshot_id,
                a.image.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(d) => {
            println!(
                "snapshot {} differs from {} (blocks sha256 {blocks}) at block {} (512 KiB \
                 blocks): {}",
                a.snapshot_id,
                a.image.display(),
                d.block,
                d.why
            );
            Ok(ExitCode::from(1))
        }
    }
}
