//! A sparse image file, written to a temporary file beside the target and renamed on success.

use super::blocks::is_zero;
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
    /// `None` only after `persist` has taken it.
    tmp: Option<tempfile::NamedTempFile>,
    target: PathBuf,
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
        refuse_special(target)?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let tmp = crate::cleanup::create_registered(
            || {
                tempfile::Builder::new()
                    .prefix(&prefix)
                    .suffix(".tmp")
                    .tempfile_in(&dir)
            },
            |t| t.path().to_path_buf(),
        )?;
        tmp.as_file()
            .set_len(len)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EFBIG) => io::Error::new(
                    e.kind(),
                    format!(
                        "the filesystem holding {} cannot hold a {len}-byte file (ext4's limit is \
                     16 TiB - 4 KiB); write the image onto XFS, btrfs or tmpfs, or stream it \
                     with --upload",
                        dir.display()
                    ),
                ),
                _ => e,
            })?;
        Ok(FileSink {
            tmp: Some(tmp),
            target: target.to_path_buf(),
            len,
            pos: 0,
            file_pos: 0,
        })
    }

    /// The temporary path being written (for tools that read the image before it is renamed).
    pub fn temp_path(&self) -> &Path {
        self.tmp.as_ref().map(|t| t.path()).unwrap_or(&self.target)
    }

    /// A second handle on the temporary file, to sync it from elsewhere while the sink is
    /// borrowed (the pipeline syncs while the disk's hash is being finished).
    pub fn sync_handle(&self) -> io::Result<File> {
        match &self.tmp {
            Some(t) => t.as_file().try_clone(),
            None => Err(io::Error::other("image already persisted")),
        }
    }

    /// Syncs and renames the file into place; returns the final path.
    pub fn persist(mut self) -> io::Result<PathBuf> {
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| io::Error::other("image already persisted"))?;
        crate::cleanup::unregister(tmp.path());
        let (target, len, pos) = (self.target.clone(), self.len, self.pos);
        if pos > len {
            return Err(io::Error::other(format!(
                "image overran its size: {pos} > {len}"
            )));
        }
        tmp.as_file().sync_all()?;
        // The temp file is created 0600; an image is an ordinary output file.
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.persist(&target).map_err(|e| e.error)?;
        Ok(target)
    }

    fn file(&mut self) -> &mut File {
        self.tmp
            .as_mut()
            .expect("the temp file exists until persist")
            .as_file_mut()
    }

    fn put(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.file_pos != offset {
            self.file().seek(SeekFrom::Start(offset))?;
        }
        self.file().write_all(data)?;
        self.file_pos = offset + data.len() as u64;
        Ok(())
    }
}

/// An error unless `target` is absent or a regular file (not following a symlink: renaming
/// over one would replace the link, not what it points to).
fn refuse_special(target: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(target) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    let what = if ft.is_file() {
        return Ok(());
    } else if ft.is_block_device() {
        "a block device; kiln writes image files only (copy the image onto the device with a tool that writes every block, such as dd without conv=sparse)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink (give the path it points to)"
    } else {
        "a special file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("the output is {what}"),
    ))
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // The temp file itself is removed by `NamedTempFile`'s own drop.
        if let Some(t) = &self.tmp {
            crate::cleanup::unregister(t.path());
        }
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
