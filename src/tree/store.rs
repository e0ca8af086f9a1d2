//! Kiln's own content store for archive members.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::node::{Content, Stored, HOLE_GRANULE};

/// Kiln's store for archive members (package contents, generated boot files): one sparse pack
/// file in a temporary directory, each member appended at a [`HOLE_GRANULE`]-aligned offset, so
/// the tree can point into it like into a host file ([`Content::Stored`]). One file rather than
/// one per member: a kernel package has thousands of modules, and creating (and later deleting)
/// that many files cost more than unpacking them. All-zero granules are skipped, so the pack is
/// sparse and their ranges are recorded as holes. Modes and owners live in the
/// [`super::Tree`], never on disk here. Removed when dropped, and on Ctrl-C.
pub struct ContentStore {
    dir: tempfile::TempDir,
    pack: RefCell<Option<Pack>>,
}

struct Pack {
    file: Arc<File>,
    path: Arc<Path>,
    /// Where the next member starts (granule-aligned).
    end: u64,
    /// The file's length as last set.
    len: u64,
}

/// How much is read (and at most written) at a time.
const CHUNK: usize = 256 << 10;

impl ContentStore {
    pub fn new() -> io::Result<Self> {
        // Removed on Ctrl-C too, not only on drop.
        let dir = crate::cleanup::create_registered(
            || tempfile::Builder::new().prefix("kiln-content-").tempdir(),
            |d| d.path().to_path_buf(),
        )?;
        Ok(ContentStore {
            dir,
            pack: RefCell::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `r` into the pack; returns the content that reads it back.
    pub fn write(&self, r: &mut dyn Read) -> io::Result<Content> {
        let mut slot = self.pack.borrow_mut();
        if slot.is_none() {
            let path: Arc<Path> = Arc::from(self.dir.path().join("pack"));
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            *slot = Some(Pack {
                file: Arc::new(file),
                path,
                end: 0,
                len: 0,
            });
        }
        let Some(pack) = slot.as_mut() else {
            unreachable!("the pack was created above")
        };
        let offset = pack.end;
        let mut buf = vec![0u8; CHUNK];
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut len: u64 = 0;
        loop {
            let got = crate::util::read_full(r, &mut buf)?;
            if got == 0 {
                break;
            }
            // Each run of non-zero granules is one write; zero granules stay holes.
            let g = HOLE_GRANULE as usize;
            let mut i = 0;
            while i < got {
                let nonzero = |at: usize| buf[at..(at + g).min(got)].iter().any(|&b| b != 0);
                if !nonzero(i) {
                    i += g;
                    continue;
                }
                let start = i;
                while i < got && nonzero(i) {
                    i += g;
                }
                let end = i.min(got);
                pack.file
                    .write_all_at(&buf[start..end], offset + len + start as u64)?;
                let (rs, re) = (len + start as u64, len + end as u64);
                match ranges.last_mut() {
                    Some(last) if last.end == rs => last.end = re,
                    _ => ranges.push(rs..re),
                }
            }
            len += got as u64;
        }
        // A trailing hole needs the length set explicitly.
        if pack.len < offset + len {
            pack.len = offset + len;
            pack.file.set_len(pack.len)?;
        }
        pack.end = (offset + len).div_ceil(HOLE_GRANULE) * HOLE_GRANULE;
        Ok(Content::Stored(Stored {
            file: pack.file.clone(),
            path: pack.path.clone(),
            offset,
            len,
            ranges: ranges.into(),
        }))
    }
}

impl Drop for ContentStore {
    fn drop(&mut self) {
        crate::cleanup::unregister(self.dir.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_and_members_read_back() {
        let s = ContentStore::new().unwrap();
        let mut data = vec![0u8; 5 * 4096 + 10];
        data[4096] = 7;
        data[3 * 4096 + 1] = 9;
        let big: Vec<u8> = (0..CHUNK * 2 + 4097).map(|i| (i % 253) as u8 + 1).collect();
        let a = s.write(&mut &data[..]).unwrap();
        let b = s.write(&mut &big[..]).unwrap();
        let empty = s.write(&mut &[][..]).unwrap();
        let tail = s.write(&mut &[5u8, 0, 0, 0, 0][..]).unwrap();
        let zeros = s.write(&mut &vec![0u8; 3 * 4096 + 3][..]).unwrap();
        for (c, want) in [
            (&a, &data[..]),
            (&b, &big[..]),
            (&empty, &[][..]),
            (&tail, &[5u8, 0, 0, 0, 0][..]),
            (&zeros, &vec![0u8; 3 * 4096 + 3][..]),
        ] {
            assert_eq!(c.len(), want.len() as u64);
            let mut got = Vec::new();
            c.open().unwrap().read_to_end(&mut got).unwrap();
            assert_eq!(got, want);
        }
        assert_eq!(
            a.data_ranges().unwrap(),
            vec![4096..2 * 4096, 3 * 4096..4 * 4096]
        );
        assert_eq!(b.data_ranges().unwrap(), vec![0..big.len() as u64]);
        assert!(zeros.data_ranges().unwrap().is_empty());
        // Seeking inside a member stays inside it.
        use std::io::{Seek, SeekFrom};
        let mut r = b.open().unwrap();
        r.seek(SeekFrom::Start(CHUNK as u64 + 3)).unwrap();
        let mut x = [0u8; 4];
        r.read_exact(&mut x).unwrap();
        assert_eq!(x, big[CHUNK + 3..CHUNK + 7]);
        r.seek(SeekFrom::End(-2)).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, big[big.len() - 2..]);
        // The pack holds no zero granule on disk: it is sparse.
        let Content::Stored(st) = &zeros else {
            panic!()
        };
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&*st.path).unwrap();
        assert!(
            m.blocks() * 512 < m.len(),
            "{} < {}",
            m.blocks() * 512,
            m.len()
        );
    }
}
