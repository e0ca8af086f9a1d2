//! An output file written under a hidden temporary name beside its target, renamed into place
//! only once it is whole: a failed or interrupted build leaves neither a partial file nor a
//! stray temporary one (the temporary path is registered with [`crate::cleanup`] for Ctrl-C).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub struct TempOutput {
    /// `None` only after `persist` has taken it.
    tmp: Option<tempfile::NamedTempFile>,
    target: PathBuf,
}

impl TempOutput {
    /// Creates `.<name>.XXXXXX.tmp` in the target's directory (created if missing).
    pub fn create(target: &Path) -> io::Result<Self> {
        refuse_special(target)?;
        let tmp = temp_beside(
            target,
            |b, dir| b.tempfile_in(dir),
            |t| t.path().to_path_buf(),
        )?;
        Ok(TempOutput {
            tmp: Some(tmp),
            target: target.to_path_buf(),
        })
    }

    /// The temporary path being written.
    pub fn temp_path(&self) -> &Path {
        self.tmp.as_ref().map(|t| t.path()).unwrap_or(&self.target)
    }

    /// Where it will be renamed to.
    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn file(&self) -> io::Result<&File> {
        match &self.tmp {
            Some(t) => Ok(t.as_file()),
            None => Err(io::Error::other("output already persisted")),
        }
    }

    /// Syncs the file, makes it an ordinary 0644 output (temp files are created 0600) and renames
    /// it into place; returns the final path.
    pub fn persist(mut self) -> io::Result<PathBuf> {
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| io::Error::other("output already persisted"))?;
        crate::cleanup::unregister(tmp.path());
        tmp.as_file().sync_all()?;
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.persist(&self.target).map_err(|e| e.error)?;
        Ok(self.target.clone())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        // The temp file itself is removed by `NamedTempFile`'s own drop.
        if let Some(t) = &self.tmp {
            crate::cleanup::unregister(t.path());
        }
    }
}

/// A temporary file or directory (`make`) beside `target`, named `.<target name>.*.tmp`, and
/// registered for removal on Ctrl-C until it is renamed into place: every output kiln writes
/// starts as one.
pub fn temp_beside<T>(
    target: &Path,
    make: impl FnOnce(&mut tempfile::Builder, &Path) -> io::Result<T>,
    path: impl FnOnce(&T) -> PathBuf,
) -> io::Result<T> {
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
    crate::cleanup::create_registered(
        || {
            make(
                tempfile::Builder::new().prefix(&prefix).suffix(".tmp"),
                &dir,
            )
        },
        path,
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn persist_renames_and_drop_removes() {
        let dir = tempfile::tempdir().unwrap();
        let o = TempOutput::create(&dir.path().join("sub/a.bin")).unwrap();
        o.file().unwrap().write_all(b"x").unwrap();
        let p = o.persist().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        let o = TempOutput::create(&dir.path().join("sub/b.bin")).unwrap();
        drop(o);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.bin"]);
    }
}
