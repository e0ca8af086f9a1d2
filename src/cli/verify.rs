//! `kiln verify SNAPSHOT_ID IMAGE`: exit 0 only if the snapshot equals the image byte for byte
//! and its kiln tags name this image: `kiln:image-blocks-sha256` its blocks digest, and
//! `kiln:image-sha256` (when the snapshot carries it) the whole disk's sha256.

use super::aws_common::{self, AwsArgs};
use kiln::aws::identity::{ImageIdentity, TAG_BLOCKS, TAG_SHA256};
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
    let file_err = |e: std::io::Error| anyhow::anyhow!("{}: {e}", a.image.display());
    let blocks = kiln::sink::blocks::BlockMapper::of_file(&a.image)
        .map_err(file_err)?
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
    if let Some(d) = diff {
        println!(
            "snapshot {} differs from {} (blocks sha256 {blocks}) at block {} (512 KiB blocks): \
             {}",
            a.snapshot_id,
            a.image.display(),
            d.block,
            d.why
        );
        return Ok(ExitCode::from(1));
    }
    // The bytes are the image's; the tags must say so too, or a later lookup by them would
    // find the wrong image (or miss this one).
    let tags = rt.block_on(kiln::aws::register::snapshot_tags(
        &clients,
        &retrier,
        &a.snapshot_id,
    ))?;
    let tagged = ImageIdentity::from_tags(&tags).unwrap_or_default();
    let mut agree = Vec::new();
    let mut wrong = Vec::new();
    if let Some(t) = &tagged.blocks {
        match *t == blocks {
            true => agree.push(TAG_BLOCKS),
            false => wrong.push(format!("{TAG_BLOCKS} is {t}, not the image's {blocks}")),
        }
    }
    if let Some(t) = &tagged.sha256 {
        let sha = kiln::util::sha256_file(&a.image).map_err(file_err)?;
        match *t == sha {
            true => agree.push(TAG_SHA256),
            false => wrong.push(format!("{TAG_SHA256} is {t}, not the image's {sha}")),
        }
    }
    if !wrong.is_empty() {
        println!(
            "snapshot {} holds the bytes of {} (blocks sha256 {blocks}), but its tags name \
             another image: {}",
            a.snapshot_id,
            a.image.display(),
            wrong.join("; ")
        );
        return Ok(ExitCode::from(1));
    }
    let tags = match agree.is_empty() {
        true => "it has no kiln digest tags".to_string(),
        false => format!("tagged so: {}", agree.join(", ")),
    };
    println!(
        "snapshot {} is identical to {} (blocks sha256 {blocks}; {tags})",
        a.snapshot_id,
        a.image.display()
    );
    Ok(ExitCode::SUCCESS)
}
