//! `kiln hash IMAGE…`: an image file's digests, as `sha256sum` prints them. Only the file's data
//! regions are read (SEEK_DATA / SEEK_HOLE); its holes are zeros, which the whole-file sha256 still
//! hashes (it must) but never reads.

use kiln::sink::blocks::BlockMapper;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Raw disk images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Print the blocks digest (the image's identity: its manifest's `image.blocks.sha256`)
    /// instead of the whole file's sha256. It costs the image's data, not its size.
    #[arg(long)]
    pub blocks: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    for image in &a.images {
        let digest = match a.blocks {
            true => BlockMapper::of_file(image).map(|m| m.sha256),
            false => kiln::util::sha256_file(image),
        }
        .map_err(|e| anyhow::anyhow!("{}: {e}", image.display()))?;
        println!("{digest}  {}", image.display());
    }
    Ok(ExitCode::SUCCESS)
}
