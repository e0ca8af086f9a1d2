//! Kiln's own content store for archive members.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::node::HOLE_GRANULE;

/// A temporary directory where archive members are extracted as plain files, so that the tree
/// can point at them like any host file. Files are created with the process's default
/// permissions and owner: modes and owners live in the [`super::Tree`], never on disk here.
/// All-zero [`HOLE_GRANULE`] blocks are seeked over, so the files are sparse and
/// [`super::Content::data_ranges`] reports those blocks as holes. Removed when dropped.
pub struct ContentStore {
    dir: tempfile::TempDir,
    next: Cell<u64>,
}

impl ContentStore {
    pub fn new() -> io::Result<Self> {
        // Removed on Ctrl-C too, not only on drop.
        let dir = crate::cleanup::create_registered(
            || tempfile::Builder::new().prefix("kiln-content-").tempdir(),
            |d| d.path().to_path_buf(),
        )?;
        Ok(ContentStore {
            dir,
            next: Cell::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `r` into a new sparse file; returns its path and length.
    pub fn write(&self, r: &mut dyn Read) -> io::Result<(PathBuf, u64)> {
        let n = self.next.get();
        self.next.set(n + 1);
        let path = self.dir.path().join(format!("{n:08}"));
        let mut f = File::create_new(&path)?;
        let mut buf = vec![0u8; HOLE_GRANULE as usize];
        let mut len: u64 = 0;
        loop {
            let got = read_full(r, &mut buf)?;
            if got == 0 {
                break;
            }
            let block = &buf[..got];
            if block.iter().all(|&b| b == 0) {
                f.seek(SeekFrom::Current(got as i64))?;
            } else {
                f.write_all(block)?;
            }
            len += got as u64;
        }
        // A trailing hole needs the length set explicitly.
        f.set_len(len)?;
        Ok((path, len))
    }
}

impl Drop for ContentStore {
    fn drop(&mut self) {
        crate::cleanup::unregister(self.dir.path());
    }
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Content;

    #[test]
    fn zero_blocks_become_holes() {
        let s = ContentStore::new().unwrap();
        let mut data = vec![0u8; 5 * 4096 + 10];
        data[4096] = 7;
        data[3 * 4096 + 1] = 9;
        let (p, len) = s.write(&mut &data[..]).unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(std::fs::read(&p).unwrap(), data);
        let ranges = Content::Host { path: p, len }.data_ranges().unwrap();
        // Filesystems may report data at a coarser granularity, but never miss data.
        assert!(ranges.iter().any(|r| r.contains(&4096)));
        assert!(ranges.iter().any(|r| r.contains(&(3 * 4096 + 1))));
        assert!(
            !ranges.iter().any(|r| r.contains(&(2 * 4096))),
            "{ranges:?}"
        );
    }
}
