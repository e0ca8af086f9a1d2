//! A run's private directory: the firmware variable store, the disk overlay, the QMP and
//! metadata sockets, the throw-away key pair and known_hosts. Mode 0700, under `$TMPDIR`,
//! registered with [`crate::cleanup`] so that Ctrl-C removes it, and removed on drop.

use super::QemuError;
use std::path::{Path, PathBuf};

/// sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug)]
pub struct RunDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl RunDir {
    pub fn new() -> Result<RunDir, QemuError> {
        let dir = crate::cleanup::create_registered(
            || tempfile::Builder::new().prefix("kiln-qemu-").tempdir(),
            |d| d.path().to_path_buf(),
        )
        .map_err(|source| QemuError::Io {
            what: "create a private temporary directory",
            path: std::env::temp_dir(),
            source,
        })?;
        let path = dir.path().to_path_buf();
        // It will hold the private key and the user data.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| QemuError::Io {
                what: "make the temporary directory private",
                path: path.clone(),
                source,
            },
        )?;
        // The longest socket name kiln puts here must fit a Unix socket address.
        let longest = path.join("imds.sock");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(QemuError::Io {
                what: "use the temporary directory (its path is too long for a Unix socket; set TMPDIR to a shorter one)",
                path,
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        Ok(RunDir {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            drop(dir);
            crate::cleanup::unregister(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_private_and_removed() {
        let d = RunDir::new().unwrap();
        let p = d.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(p.metadata().unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::write(d.join("vars.fd"), b"x").unwrap();
        drop(d);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}
