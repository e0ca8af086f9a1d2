//! Reading an OCI image layout to push it: a directory, or a tar of one (`.oci.tar`), whose blobs
//! are read in place at the offsets an index of the archive's entries records.

use crate::oci::spec::Index;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub enum Source {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        /// Entry name → (data offset, size).
        entries: HashMap<String, (u64, u64)>,
    },
}

impl Source {
    pub fn open(path: &Path) -> io::Result<Source> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            if !path.join("oci-layout").is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not an OCI image layout (no oci-layout file)",
                        path.display()
                    ),
                ));
            }
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let mut a = tar::Archive::new(File::open(path)?);
        let mut entries = HashMap::new();
        for e in a.entries()? {
            let e = e?;
            if !e.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&e.path_bytes())
                .trim_start_matches("./")
                .to_string();
            entries.insert(name, (e.raw_file_position(), e.size()));
        }
        if !entries.contains_key("oci-layout") || !entries.contains_key("index.json") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not an OCI image layout archive (no oci-layout or index.json)",
                    path.display()
                ),
            ));
        }
        Ok(Source::Archive {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn index(&self) -> io::Result<Index> {
        let b = self.read_entry("index.json")?;
        serde_json::from_slice(&b)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("index.json: {e}")))
    }

    fn blob_name(digest: &str) -> io::Result<String> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unsupported digest {digest:?}"),
                )
            })?;
        Ok(format!("blobs/sha256/{hex}"))
    }

    /// A blob's bytes in full (manifests, configs, indexes), checked against its digest.
    pub fn read_blob(&self, digest: &str) -> io::Result<Vec<u8>> {
        let b = self.read_entry(&Self::blob_name(digest)?)?;
        let got = format!(
            "sha256:{}",
            crate::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(&b))
        );
        if got != digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {digest} is damaged: its content hashes to {got}"),
            ));
        }
        Ok(b)
    }

    /// A reader over a blob and its length.
    pub fn open_blob(&self, digest: &str) -> io::Result<(Box<dyn Read + Send>, u64)> {
        self.open_entry(&Self::blob_name(digest)?)
    }

    fn read_entry(&self, name: &str) -> io::Result<Vec<u8>> {
        let (mut r, len) = self.open_entry(name)?;
        let mut b = Vec::with_capacity(len as usize);
        r.read_to_end(&mut b)?;
        Ok(b)
    }

    fn open_entry(&self, name: &str) -> io::Result<(Box<dyn Read + Send>, u64)> {
        let missing = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} is missing from the layout"),
            )
        };
        match self {
            Source::Dir(d) => {
                let f = File::open(d.join(name)).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => e,
                })?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            Source::Archive { path, entries } => {
                let &(offset, len) = entries.get(name).ok_or_else(missing)?;
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                Ok((Box::new(f.take(len)), len))
            }
        }
    }
}
