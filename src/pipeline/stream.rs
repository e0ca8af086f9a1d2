//! write_disk: the disk streamed, byte by byte, through the digests into a [`BlockSink`].

use super::{BuildError, Prepared, Progress};
use crate::disk::assemble;
use crate::sink::{BlockSink, HashSink, PendingDigest, Want};
use crate::tree::Time;
use std::io;
use std::path::PathBuf;

/// Streams the whole disk into `sink` (an EBS sink, which computes the block map from the blocks
/// it sends) and returns once the last byte is written; the disk's SHA-256, if `sha256` asks for
/// it, is still being finished on its own thread: the zeros after the last write, most of a
/// sparse disk.
pub fn write_disk(
    p: &Prepared,
    sink: &mut dyn BlockSink,
    sha256: bool,
) -> Result<PendingDigest, BuildError> {
    let want = Want {
        sha256,
        blocks: false,
    };
    let hashed = write_hashed(p, sink, None, want)?;
    hashed.finish_later().map(|(_, d)| d).map_err(disk_error)
}

/// [`write_disk`] into a build's disk formats (see [`crate::outputs`]): with the block map, and
/// the whole-disk SHA-256 only if `sha256`. The digests are still being finished on their
/// threads when it returns, while the formats complete their files.
pub fn write_disk_mapped(
    p: &Prepared,
    sink: &mut dyn BlockSink,
    progress: Option<&dyn Progress>,
    sha256: bool,
) -> Result<PendingDigest, BuildError> {
    let want = Want {
        sha256,
        blocks: true,
    };
    let hashed = write_hashed(p, sink, progress, want)?;
    hashed.finish_later().map(|(_, d)| d).map_err(disk_error)
}

pub(crate) fn disk_error(source: io::Error) -> BuildError {
    BuildError::Output {
        path: PathBuf::from("<disk>"),
        source,
    }
}

/// Writes every byte of the disk through a [`HashSink`] and returns it, unfinished.
fn write_hashed<'a>(
    p: &Prepared,
    sink: &'a mut dyn BlockSink,
    progress: Option<&'a dyn Progress>,
    want: Want,
) -> Result<HashSink<ProgressSink<'a>>, BuildError> {
    let time = Time::from_secs(p.recipe.image.source_date_epoch);
    let mut hashed = HashSink::new(
        ProgressSink {
            inner: sink,
            progress,
        },
        p.plan.size,
        want,
    );
    if let Some(pr) = progress {
        pr.start(p.plan.size);
    }
    assemble::write_disk_planned(
        &p.plan,
        &p.contents,
        &p.ext4_plans,
        &p.recipe.image.seed,
        time,
        &mut hashed,
    )?;
    Ok(hashed)
}

struct ProgressSink<'a> {
    inner: &'a mut dyn BlockSink,
    progress: Option<&'a dyn Progress>,
}

impl BlockSink for ProgressSink<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)?;
        if let Some(p) = self.progress {
            p.update(offset + data.len() as u64);
        }
        Ok(())
    }
}
