//! A sparse image file, written to a temporary file beside the target and renamed on success.

use super::blocks::is_zero;
use super::output::TempOutput;
use super::{check_order, BlockSink};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Writes a disk image as a sparse file. All-zero 4 KiB blocks are skipped, so they stay holes.
///
/// The bytes go to a hidden temporary file in the target's directory; [`FileSink::persist`]
/// renames it into place. Dropping the sink without persisting removes the temporary file, so a
/// failed or interrupted build leaves nothing behind.
pub struct FileSink {
    out: TempOutput,
    len: u64,
    pos: u64,
    file_pos: u64,
}

const BLOCK: usize = 4096;

impl FileSink {
    /// Creates the temporary file for an image of `len` bytes that will become `target`.
    ///
    /// `target` must be a regular file or not exist. kiln never writes to a block device (or any
    /// other special file): the rename would replace the device node, and writing in place would
    /// skip the image's zero blocks, leaving the device's old data where the image promises
    /// zeros (unused inode tables, the journal; see the README's reliability section).
    pub fn create(target: &Path, len: u64) -> io::Result<Self> {
        let out = TempOutput::create(target)?;
        out.file()?
            .set_len(len)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EFBIG) => io::Error::new(
                    e.kind(),
                    format!(
                        "the filesystem holding {} cannot hold a {len}-byte file (ext4's limit is \
                     16 TiB - 4 KiB); write the image onto XFS, btrfs or tmpfs, or stream it \
                     with --upload",
                        out.temp_path().parent().unwrap_or(Path::new(".")).display()
                    ),
                ),
                _ => e,
            })?;
        Ok(FileSink {
            out,
            len,
            pos: 0,
            file_pos: 0,
        })
    }

    /// The temporary path being written (for tools that read the image before it is renamed).
    pub fn temp_path(&self) -> &Path {
        self.out.temp_path()
    }

    /// A second handle on the temporary file, to sync it from elsewhere while the sink is
    /// borrowed (the pipeline syncs while the disk's hash is being finished).
    pub fn sync_handle(&self) -> io::Result<File> {
        self.out.file()?.try_clone()
    }

    /// The written file, still under its temporary name, once the writes are checked.
    pub fn into_output(self) -> io::Result<TempOutput> {
        if self.pos > self.len {
            return Err(io::Error::other(format!(
                "image overran its size: {} > {}",
                self.pos, self.len
            )));
        }
        Ok(self.out)
    }

    /// Syncs and renames the file into place; returns the final path.
    pub fn persist(self) -> io::Result<PathBuf> {
        self.into_output()?.persist()
    }

    fn put(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut f = self.out.file()?;
        if self.file_pos != offset {
            f.seek(SeekFrom::Start(offset))?;
        }
        f.write_all(data)?;
        self.file_pos = offset + data.len() as u64;
        Ok(())
    }
}

impl BlockSink for FileSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = check_order(self.pos, offset, data.len())?;
        if end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write ending at {end} runs past the image's {} bytes",
                    self.len
                ),
            ));
        }
        self.pos = end;
        // Write runs of non-zero blocks in one call each; skip zero blocks to keep holes.
        let mut i = 0;
        while i < data.len() {
            let blk_end = |j: usize| ((offset as usize + j) / BLOCK + 1) * BLOCK - offset as usize;
            let mut j = i;
            while j < data.len() && is_zero(&data[j..blk_end(j).min(data.len())]) {
                j = blk_end(j).min(data.len());
            }
            let start = j;
            while j < data.len() && !is_zero(&data[j..blk_end(j).min(data.len())]) {
                j = blk_end(j).min(data.len());
            }
            if j > start {
                self.put(offset + start as u64, &data[start..j])?;
            }
            i = j;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_and_keeps_zero_blocks_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.raw");
        let mut s = FileSink::create(&target, 64 * 1024).unwrap();
        let mut data = vec![0u8; 12 * 1024];
        data[0] = 1;
        data[9000] = 2;
        s.write_at(4096, &data).unwrap();
        s.write_at(60 * 1024, b"end").unwrap();
        assert!(s.write_at(0, b"back").is_err());
        let p = s.persist().unwrap();
        let mut got = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut got).unwrap();
        let mut want = vec![0u8; 64 * 1024];
        want[4096..4096 + data.len()].copy_from_slice(&data);
        want[60 * 1024..60 * 1024 + 3].copy_from_slice(b"end");
        assert_eq!(got, want);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn dropping_without_persist_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSink::create(&dir.path().join("y.raw"), 4096).unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
