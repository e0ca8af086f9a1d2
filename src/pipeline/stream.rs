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

#[cfg(test)]
mod tests {
    use crate::disk::assemble::{self, Contents};
    use crate::fs::ext4;
    use crate::sink::VecSink;
    use crate::tree::Time;

    /// The root filesystem's volume label (`s_volume_name`, 0x78 into the superblock at byte
    /// 1024) on a disk written by [`super::write_disk`].
    fn root_label(p: &super::Prepared, root: usize) -> Vec<u8> {
        let mut sink = VecSink::default();
        super::write_disk(p, &mut sink, false)
            .unwrap()
            .wait()
            .unwrap();
        let at = p.plan.partitions[root].offset() as usize + 1024 + 0x78;
        let name = &sink.data[at..at + 16];
        name.iter().take_while(|&&b| b != 0).copied().collect()
    }

    /// write_disk writes each ext4 filesystem from the plan check_fit kept in `Prepared` and plans
    /// none again: a plan swapped in with another label is the label on the disk.
    #[test]
    fn write_disk_writes_from_the_fit_checks_plans() {
        let dir = tempfile::tempdir().unwrap();
        let recipe = dir.path().join("r.toml");
        std::fs::write(
            &recipe,
            "[image]\nname = \"p\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
             [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\n\
             filesystem = \"ext4\"\nmount = \"/\"\n\
             [[file]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n",
        )
        .unwrap();
        let mut p = super::super::prepare(&recipe).unwrap();
        let root = p
            .contents
            .iter()
            .position(|c| matches!(c, Contents::Ext4(_)))
            .unwrap();
        assert!(p.ext4_plans[root].is_some(), "check_fit kept its plan");
        assert_eq!(root_label(&p, root), b"root");

        let time = Time::from_secs(p.recipe.image.source_date_epoch);
        let mut opts = assemble::ext4_options(&p.plan, root, &p.recipe.image.seed, time);
        opts.label = "swapped".into();
        let Contents::Ext4(tree) = &p.contents[root] else {
            unreachable!()
        };
        p.ext4_plans[root] = Some(ext4::Plan::new(tree, &opts).unwrap());
        assert_eq!(root_label(&p, root), b"swapped");
    }
}
