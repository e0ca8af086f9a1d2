//! `[[tree]]`: importing a host directory.
//!
//! The walk is sorted by name bytes (never readdir order) and keeps everything a filesystem
//! can hold: modes with suid/sgid/sticky, numeric owners, nanosecond mtimes (clamped to
//! `source_date_epoch`), xattrs, hard links (by `(dev, ino)`), symlinks as written, device
//! nodes, fifos and sockets. Regular files are referenced, not read into memory.
//!
//! The source directory's own metadata is not applied to `dest`: `dest` keeps its metadata if
//! it exists and is created 0755 0:0 otherwise, so an overlay at `/` cannot change `/`.
//!
//! The input digest is SHA-256 over one record per walked entry, in walk order:
//! `relpath NUL type NUL mode(octal) NUL uid NUL gid NUL size NUL secs.nanos NUL target NUL
//! sha256 LF`, where `target` is a symlink's target or a hard link's first path, and `sha256` is
//! the sparse-aware content digest of regular files (`build::digest_sparse`: data ranges and
//! their bytes, so holes are never read; empty for other types). Owners and times are the host's, before
//! overrides and clamping.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use super::build::{digest_sparse, io_err, path_err, Builder, InputDigest};
use super::error::TreeError;
use super::node::{Content, Kind, Meta, Node, NodeId, Time};
use crate::recipe::Pos;

struct Walk<'a> {
    pos: &'a Pos,
    dest: String,
    owner: Option<u32>,
    group: Option<u32>,
    links: HashMap<(u64, u64), (NodeId, Vec<u8>)>,
    /// Listing records for the hasher thread: the record's bytes up to its content digest, and
    /// the host file whose content digest completes it. Unbounded: the walk never waits for the
    /// hasher, which reads every file's bytes and so finishes long after the walk, while the
    /// disk is written (`build --upload` starts sending blocks only once the walk is done). The
    /// queue holds at most one short record per entry, as the tree itself does.
    records: Sender<(Vec<u8>, Option<PathBuf>)>,
}

/// Hashes the listing on its own thread, so reading file contents overlaps with the walk's
/// system calls. Returns the hex digest, or the file that could not be read.
fn spawn_hasher(
    rx: Receiver<(Vec<u8>, Option<PathBuf>)>,
) -> JoinHandle<Result<String, (PathBuf, io::Error)>> {
    std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut buf = Vec::new();
        for (prefix, file) in rx {
            h.update(&prefix);
            if let Some(path) = file {
                let (_, sha) = digest_sparse(&path, &mut buf).map_err(|e| (path.clone(), e))?;
                h.update(sha.as_bytes());
            }
            h.update(b"\n");
        }
        Ok(crate::util::hex(&h.finalize()))
    })
}

pub(super) fn import(
    b: &mut Builder,
    pos: &Pos,
    source: &Path,
    dest: &str,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(InputDigest, PendingDigest), TreeError> {
    let base = b.dest_dir(pos, dest)?;
    let (tx, rx) = channel();
    let hasher = spawn_hasher(rx);
    let mut w = Walk {
        pos,
        dest: dest.to_owned(),
        owner,
        group,
        links: HashMap::new(),
        records: tx,
    };
    // An explicit stack of directories still to list keeps deep trees off the call stack; it
    // is pushed in reverse so the walk stays a sorted pre-order.
    let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel_dir) = todo.pop() {
        let host_dir = source.join(std::ffi::OsStr::from_bytes(&rel_dir));
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(&host_dir)
            .and_then(|rd| rd.map(|e| e.map(|e| e.file_name().into_vec())).collect())
            .map_err(|e| io_err(pos, dest, &host_dir, e))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let mut rel = rel_dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            if w.entry(b, source, &base, &rel)? {
                subdirs.push(rel);
            }
        }
        todo.extend(subdirs.into_iter().rev());
    }
    // Closing the channel lets the hasher finish; it is joined only when the manifest needs the
    // digest, so hashing the inputs overlaps with writing the disk.
    drop(w);
    let pending = PendingDigest {
        handle: hasher,
        pos: pos.clone(),
        dest: dest.to_owned(),
        source: source.to_owned(),
    };
    Ok((
        InputDigest {
            kind: "tree",
            source: source.to_owned(),
            sha256: String::new(),
        },
        pending,
    ))
}

/// A `[[tree]]` digest still being computed on its own thread.
pub struct PendingDigest {
    handle: JoinHandle<Result<String, (PathBuf, io::Error)>>,
    pos: Pos,
    dest: String,
    source: PathBuf,
}

impl PendingDigest {
    /// Waits for the digest.
    pub fn wait(self) -> Result<String, TreeError> {
        match self.handle.join() {
            Ok(Ok(hex)) => Ok(hex),
            Ok(Err((path, e))) => Err(io_err(&self.pos, &self.dest, &path, e)),
            Err(_) => Err(io_err(
                &self.pos,
                &self.dest,
                &self.source,
                io::Error::other("the hasher panicked"),
            )),
        }
    }
}

impl Walk<'_> {
    /// Imports one host entry; returns whether it is a directory to descend into.
    fn entry(
        &mut self,
        b: &mut Builder,
        source: &Path,
        base: &[Vec<u8>],
        rel: &[u8],
    ) -> Result<bool, TreeError> {
        let host = source.join(std::ffi::OsStr::from_bytes(rel));
        let shown = format!(
            "{}/{}",
            self.dest.trim_end_matches('/'),
            String::from_utf8_lossy(rel)
        );
        let ioe = |e| io_err(self.pos, &shown, &host, e);
        let md = std::fs::symlink_metadata(&host).map_err(ioe)?;
        let mut comps = base.to_vec();
        comps.extend(rel.split(|&c| c == b'/').map(<[u8]>::to_vec));
        let ft = md.file_type();
        let hard = !ft.is_dir() && md.nlink() > 1;
        if let Some((id, first)) = hard
            .then(|| self.links.get(&(md.dev(), md.ino())))
            .flatten()
        {
            let (id, first) = (*id, first.clone());
            self.record(rel, "hardlink", &md, &first, None);
            b.put_link(&comps, id)
                .map_err(|e| path_err(self.pos, &shown, &e))?;
            return Ok(false);
        }
        let (kind, tname, target, content) = if ft.is_dir() {
            (Kind::Dir(BTreeMap::new()), "dir", Vec::new(), None)
        } else if ft.is_file() {
            (
                Kind::File(Content::Host {
                    path: host.clone(),
                    len: md.len(),
                }),
                "file",
                Vec::new(),
                Some(host.clone()),
            )
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&host)
                .map_err(ioe)?
                .into_os_string()
                .into_vec();
            (Kind::Symlink(t.clone()), "symlink", t, None)
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev() as libc::dev_t;
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if ft.is_char_device() {
                (Kind::CharDev { major, minor }, "char", Vec::new(), None)
            } else {
                (Kind::BlockDev { major, minor }, "block", Vec::new(), None)
            }
        } else if ft.is_fifo() {
            (Kind::Fifo, "fifo", Vec::new(), None)
        } else {
            (Kind::Socket, "socket", Vec::new(), None)
        };
        self.record(rel, tname, &md, &target, content);
        let mtime = Time {
            secs: md.mtime(),
            nanos: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        };
        let mut meta = Meta::new(
            md.mode(),
            self.owner.unwrap_or(md.uid()),
            self.group.unwrap_or(md.gid()),
            mtime.clamp_to(b.sde),
        );
        meta.xattrs = read_xattrs(&host).map_err(ioe)?;
        let is_dir = ft.is_dir();
        let id = b
            .put(&comps, Node { meta, kind }, true)
            .map_err(|e| path_err(self.pos, &shown, &e))?;
        if hard {
            self.links.insert((md.dev(), md.ino()), (id, rel.to_vec()));
        }
        Ok(is_dir)
    }

    fn record(
        &mut self,
        rel: &[u8],
        tname: &str,
        md: &std::fs::Metadata,
        target: &[u8],
        content: Option<PathBuf>,
    ) {
        let mut h = rel.to_vec();
        let size = if md.is_file() { md.len() } else { 0 };
        let fields = format!(
            "\0{tname}\0{:o}\0{}\0{}\0{size}\0{}.{:09}\0",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec()
        );
        h.extend_from_slice(fields.as_bytes());
        h.extend_from_slice(target);
        h.push(0);
        // A send fails only if the hasher stopped on an error, which `import` then reports.
        let _ = self.records.send((h, content));
    }
}

/// Every extended attribute of `path` (not following a symlink) that this process can read.
/// Filesystems without xattr support give none.
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let c = CString::new(path.as_os_str().as_bytes())?;
    let names = match xattr_call(|buf, len| {
        // SAFETY: `c` is a valid C string; `buf` is valid for `len` bytes (or null with len 0).
        unsafe { libc::llistxattr(c.as_ptr(), buf.cast(), len) }
    }) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS)) => {
            return Ok(out)
        }
        Err(e) => return Err(e),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name)?;
        let value = xattr_call(|buf, len| {
            // SAFETY: as above; `cn` is a valid C string.
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), buf.cast(), len) }
        });
        match value {
            Ok(v) => {
                out.insert(name.to_vec(), v);
            }
            // Namespaces this process may not read (trusted.* without CAP_SYS_ADMIN), or an
            // attribute removed meanwhile, are skipped.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EACCES | libc::ENODATA)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Runs a size-query-then-fill xattr call, retrying if the value grew in between.
fn xattr_call(mut f: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        let got = f(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
    Err(io::Error::other("extended attributes keep changing"))
}
