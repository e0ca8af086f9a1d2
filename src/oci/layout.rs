//! Writing an OCI image layout (image-spec `image-layout.md`): `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`, either as a directory or as one tar archive (`--oci-archive`, what
//! `skopeo`'s `oci-archive:` and `docker buildx --output type=oci` use). Either way it is built
//! under a temporary name beside the target and renamed into place once whole.

use super::tar::{Entry, EntryKind};
use crate::sink::TempOutput;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A blob as written: `sha256:<hex>` and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// The finished layout, still under its temporary name.
pub enum Staged {
    Dir {
        tmp: tempfile::TempDir,
        target: PathBuf,
    },
    Archive {
        out: TempOutput,
        sha256: String,
        size: u64,
    },
}

pub enum LayoutWriter {
    Dir(DirLayout),
    Archive(ArchiveLayout),
}

impl LayoutWriter {
    pub fn create(target: &Path, archive: bool, mtime: u64) -> io::Result<LayoutWriter> {
        Ok(match archive {
            true => LayoutWriter::Archive(ArchiveLayout::create(target, mtime)?),
            false => LayoutWriter::Dir(DirLayout::create(target)?),
        })
    }

    /// Streams a blob whose digest is known only once it is written.
    pub fn stream_blob<T>(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> io::Result<(Blob, T)> {
        match self {
            LayoutWriter::Dir(d) => d.stream_blob(write),
            LayoutWriter::Archive(a) => a.stream_blob(write),
        }
    }

    pub fn put_blob(&mut self, bytes: &[u8]) -> io::Result<Blob> {
        self.stream_blob(|w| w.write_all(bytes)).map(|(b, ())| b)
    }

    /// Writes `oci-layout` and `index.json`.
    pub fn finish(self, index_json: &[u8]) -> io::Result<Staged> {
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        match self {
            LayoutWriter::Dir(d) => {
                std::fs::write(d.tmp.path().join("oci-layout"), layout)?;
                std::fs::write(d.tmp.path().join("index.json"), index_json)?;
                Ok(Staged::Dir {
                    tmp: d.tmp,
                    target: d.target,
                })
            }
            LayoutWriter::Archive(mut a) => {
                a.file_entry(b"oci-layout", layout)?;
                a.file_entry(b"index.json", index_json)?;
                a.finish()
            }
        }
    }
}

impl Staged {
    /// Renames the layout into place; returns its path. An existing OCI layout directory at the
    /// target is swapped out atomically and removed; anything else there is refused.
    pub fn persist(self) -> io::Result<PathBuf> {
        match self {
            Staged::Archive { out, .. } => out.persist(),
            Staged::Dir { tmp, target } => {
                let tmp_path = tmp.keep();
                crate::cleanup::unregister(&tmp_path);
                let r = place_dir(&tmp_path, &target);
                if r.is_err() {
                    let _ = std::fs::remove_dir_all(&tmp_path);
                }
                r.map(|()| target)
            }
        }
    }
}

/// Refuses, before anything is built, a target that an OCI layout may not replace: anything but
/// an earlier OCI layout directory (for a directory) or a file (for an archive).
pub fn check_target(target: &Path, archive: bool) -> io::Result<()> {
    let Ok(m) = std::fs::symlink_metadata(target) else {
        return Ok(());
    };
    let ok = match archive {
        true => m.is_file(),
        false => m.is_dir() && target.join("oci-layout").is_file(),
    };
    match ok {
        true => Ok(()),
        false => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not an OCI image layout{}; move it away or choose another output",
                target.display(),
                if archive { " archive" } else { "" }
            ),
        )),
    }
}

fn place_dir(tmp: &Path, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))?;
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::rename(tmp, target),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() && target.join("oci-layout").is_file() => {
            exchange(tmp, target)?;
            // `tmp` now holds the previous layout.
            std::fs::remove_dir_all(tmp)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not an OCI image layout; move it away or choose another output",
                target.display()
            ),
        )),
    }
}

/// `renameat2(RENAME_EXCHANGE)`: both names stay valid at every instant.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; no memory is retained.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub struct DirLayout {
    tmp: tempfile::TempDir,
    target: PathBuf,
}

impl DirLayout {
    fn create(target: &Path) -> io::Result<Self> {
        let tmp = crate::sink::temp_beside(
            target,
            |b, dir| b.tempdir_in(dir),
            |t| t.path().to_path_buf(),
        )?;
        std::fs::create_dir_all(tmp.path().join("blobs/sha256"))?;
        Ok(DirLayout {
            tmp,
            target: target.to_path_buf(),
        })
    }

    fn stream_blob<T>(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> io::Result<(Blob, T)> {
        let dir = self.tmp.path().join("blobs/sha256");
        let f = tempfile::NamedTempFile::new_in(&dir)?;
        let mut w = Counted::new(BufWriter::with_capacity(1 << 20, f.as_file()));
        let t = write(&mut w)?;
        let (blob, inner) = w.finish();
        inner.into_inner().map_err(|e| e.into_error())?;
        use std::os::unix::fs::PermissionsExt;
        f.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        let hex = &blob.digest["sha256:".len()..];
        f.persist(dir.join(hex)).map_err(|e| e.error)?;
        Ok((blob, t))
    }
}

/// Counts and hashes a blob as it is written.
struct Counted<W> {
    inner: W,
    sha: Sha256,
    n: u64,
}

impl<W: Write> Counted<W> {
    fn new(inner: W) -> Self {
        Counted {
            inner,
            sha: Sha256::new(),
            n: 0,
        }
    }

    fn finish(self) -> (Blob, W) {
        let digest = format!("sha256:{}", crate::util::hex(&self.sha.finalize()));
        (
            Blob {
                digest,
                size: self.n,
            },
            self.inner,
        )
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.sha.update(&b[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The layout as one tar: each blob's header slot is reserved, the blob streamed after it, and
/// the header (whose name is the blob's digest) written into the slot once the digest is known.
/// Nothing is copied and every byte is written once; the archive is hashed by reading it back.
pub struct ArchiveLayout {
    out: TempOutput,
    w: BufWriter<File>,
    pos: u64,
    mtime: u64,
    written: BTreeSet<String>,
}

impl ArchiveLayout {
    fn create(target: &Path, mtime: u64) -> io::Result<Self> {
        let out = TempOutput::create(target)?;
        let f = out.file()?.try_clone()?;
        let mut a = ArchiveLayout {
            out,
            w: BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            mtime,
            written: BTreeSet::new(),
        };
        a.dir_entry(b"blobs/")?;
        a.dir_entry(b"blobs/sha256/")?;
        Ok(a)
    }

    fn entry(&self, path: &[u8], kind: EntryKind) -> Entry {
        let mode = match kind {
            EntryKind::Dir => 0o755,
            _ => 0o644,
        };
        Entry {
            path: path.to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: self.mtime,
            xattrs: Vec::new(),
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.pos % 512) as usize;
        if rem != 0 {
            self.put(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    fn dir_entry(&mut self, path: &[u8]) -> io::Result<()> {
        let h = self.entry(path, EntryKind::Dir).ustar();
        self.put(&h)
    }

    fn file_entry(&mut self, path: &[u8], data: &[u8]) -> io::Result<()> {
        let h = self
            .entry(
                path,
                EntryKind::File {
                    size: data.len() as u64,
                },
            )
            .ustar();
        self.put(&h)?;
        self.put(data)?;
        self.pad()
    }

    fn stream_blob<T>(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> io::Result<(Blob, T)> {
        let slot = self.pos;
        self.put(&[0u8; 512])?;
        let mut c = Counted::new(&mut self.w);
        let t = write(&mut c)?;
        let (blob, _) = c.finish();
        self.pos += blob.size;
        if !self.written.insert(blob.digest.clone()) {
            // Already in the archive: take this copy back out.
            self.w.flush()?;
            self.w.get_ref().set_len(slot)?;
            self.w.get_mut().seek(SeekFrom::Start(slot))?;
            self.pos = slot;
            return Ok((blob, t));
        }
        self.pad()?;
        let path = format!("blobs/sha256/{}", &blob.digest["sha256:".len()..]);
        let h = self
            .entry(path.as_bytes(), EntryKind::File { size: blob.size })
            .ustar();
        self.w.flush()?;
        self.w.get_ref().write_all_at(&h, slot)?;
        Ok((blob, t))
    }

    fn finish(mut self) -> io::Result<Staged> {
        self.put(&[0u8; 1024])?;
        self.w.flush()?;
        let sha256 = crate::util::sha256_file(self.out.temp_path())?;
        Ok(Staged::Archive {
            out: self.out,
            sha256,
            size: self.pos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_and_directory_hold_the_same_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = LayoutWriter::create(&dir.path().join("x.tar"), true, 7).unwrap();
        let mut d = LayoutWriter::create(&dir.path().join("x"), false, 7).unwrap();
        for w in [&mut a, &mut d] {
            let b1 = w.put_blob(b"config").unwrap();
            let (b2, n) = w
                .stream_blob(|o| o.write_all(&[5u8; 1000]).map(|()| 42))
                .unwrap();
            assert_eq!(n, 42);
            let again = w.put_blob(b"config").unwrap();
            assert_eq!(again, b1);
            assert_eq!(b2.size, 1000);
        }
        let a = a.finish(b"{}").unwrap().persist().unwrap();
        let d = d.finish(b"{}").unwrap().persist().unwrap();
        let mut tar = tar::Archive::new(File::open(&a).unwrap());
        let mut files = Vec::new();
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().into_owned();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            if e.header().entry_type().is_file() {
                assert_eq!(std::fs::read(d.join(&p)).unwrap(), body, "{}", p.display());
                files.push(p);
            }
        }
        assert_eq!(
            files.len(),
            4,
            "two blobs, oci-layout, index.json: {files:?}"
        );
        // A second layout replaces the first; nothing else is left beside it.
        let d2 = LayoutWriter::create(&d, false, 7).unwrap();
        d2.finish(b"{\"x\":1}").unwrap().persist().unwrap();
        assert_eq!(std::fs::read(d.join("index.json")).unwrap(), b"{\"x\":1}");
        assert!(!d.join("blobs/sha256").read_dir().unwrap().any(|_| true));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
