//! `[[archive]]`: unpacking a tar archive into the tree, never onto the host.
//!
//! Owners, modes (with suid/sgid/sticky), mtimes (clamped), symlinks, hard links, device nodes,
//! fifos, directories and PAX `SCHILY.xattr.*` attributes go into the tree; regular file data
//! goes into the [`ContentStore`]. Members are hostile until proven otherwise: absolute paths,
//! `..`, writing through a symlink that leaves the tree, hard links to nothing, and absurd sizes
//! are refused with the member named.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::build::{Builder, InputDigest};
use super::error::{ArchiveError, TreeError};
use super::node::{Kind, Meta, Node, Time, Tree};
use super::path::{components, ResolveError};
use super::ContentStore;
use crate::recipe::Pos;

/// Larger members are refused: no image needs them, and a lying header should not fill the disk.
pub const MAX_MEMBER_SIZE: u64 = 64 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn from_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
            Some(Compression::Gzip)
        } else if n.ends_with(".tar.zst") || n.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if n.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Compression::None => "an uncompressed tar archive",
            Compression::Gzip => "a gzip-compressed tar archive",
            Compression::Zstd => "a zstd-compressed tar archive",
        }
    }

    /// Whether `head` (the file's first bytes) starts like this kind of archive.
    fn magic_ok(self, head: &[u8]) -> bool {
        match self {
            Compression::Gzip => head.starts_with(&[0x1f, 0x8b]),
            Compression::Zstd => head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::None => head.get(257..262) == Some(b"ustar"),
        }
    }
}

/// Hashes everything read through it, so the archive is read from disk exactly once.
struct Hashing {
    inner: File,
    hash: Sha256,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

pub(super) fn import(
    b: &mut Builder,
    store: &ContentStore,
    pos: &Pos,
    source: &Path,
    dest: &str,
) -> Result<InputDigest, TreeError> {
    let fail = |member: &str, problem: String, fix: &str| {
        TreeError::Archive(Box::new(ArchiveError {
            pos: pos.clone(),
            path: dest.to_owned(),
            archive: source.to_owned(),
            member: member.to_owned(),
            problem,
            fix: fix.to_owned(),
        }))
    };
    let ioe = |e: io::Error| {
        fail(
            "",
            format!("cannot be read: {e}"),
            "check that the archive is a readable, complete tar file",
        )
    };
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comp = Compression::from_name(&name).ok_or_else(|| {
        fail(
            "",
            "has no known archive extension".into(),
            "name it .tar, .tar.gz, .tgz, .tar.zst or .tar.zstd",
        )
    })?;
    let base = b.dest_dir(pos, dest)?;
    let mut src = Hashing {
        inner: File::open(source).map_err(ioe)?,
        hash: Sha256::new(),
    };
    let mut head = Vec::with_capacity(512);
    (&mut src).take(512).read_to_end(&mut head).map_err(ioe)?;
    if !comp.magic_ok(&head) {
        return Err(fail(
            "",
            format!("is not {} (its extension says so)", comp.describe()),
            "rename the file to match its contents, or recompress it",
        ));
    }
    {
        let stream = io::Cursor::new(&head[..]).chain(&mut src);
        let reader: Box<dyn Read + '_> = match comp {
            Compression::None => Box::new(stream),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream).map_err(ioe)?),
        };
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries().map_err(ioe)? {
            let mut entry = entry.map_err(ioe)?;
            let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let fail = |problem: String, fix: &str| fail(&member, problem, fix);
            member_into(b, store, &base, &mut entry).map_err(|e| match e {
                MemberError::Io(e) => fail(
                    format!("cannot be read: {e}"),
                    "check that the archive is complete",
                ),
                MemberError::Refused(p, f) => fail(p, f),
                MemberError::Path(e) => {
                    let (p, f) = e.describe();
                    fail(p, &format!("fix the archive: {f}"))
                }
            })?;
        }
    }
    // Whatever follows the end-of-archive blocks still belongs to the file's digest.
    io::copy(&mut src, &mut io::sink()).map_err(ioe)?;
    Ok(InputDigest {
        kind: "archive",
        source: source.to_owned(),
        sha256: crate::util::hex(&src.hash.finalize()),
    })
}

/// Why one member of a tar stream was refused, for callers outside the recipe (packages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFailure {
    pub member: String,
    pub problem: String,
    pub fix: String,
}

/// Unpacks a tar stream into `tree` at `/` with the same rules as `[[archive]]` (hostile members
/// refused, times clamped to `sde`, merged-usr symlinks kept). Returns the members' paths in
/// archive order, as written in the archive.
pub fn unpack_tar(
    tree: &mut Tree,
    sde: Time,
    store: &ContentStore,
    reader: &mut dyn Read,
) -> Result<Vec<Vec<u8>>, MemberFailure> {
    let placeholder = Tree::new(Meta::new(0o755, 0, 0, sde));
    let mut b = Builder {
        tree: std::mem::replace(tree, placeholder),
        sde,
        inputs: Vec::new(),
        pending: Vec::new(),
    };
    let r = unpack_members(&mut b, store, reader);
    *tree = b.tree;
    r
}

fn unpack_members(
    b: &mut Builder,
    store: &ContentStore,
    reader: &mut dyn Read,
) -> Result<Vec<Vec<u8>>, MemberFailure> {
    let fail = |member: &str, problem: String, fix: &str| MemberFailure {
        member: member.to_owned(),
        problem,
        fix: fix.to_owned(),
    };
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(reader);
    let entries = ar
        .entries()
        .map_err(|e| fail("", format!("cannot be read: {e}"), "check the archive"))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| fail("", format!("cannot be read: {e}"), "check the archive"))?;
        let raw = entry.path_bytes().into_owned();
        let member = String::from_utf8_lossy(&raw).into_owned();
        member_into(b, store, &[], &mut entry).map_err(|e| match e {
            MemberError::Io(e) => {
                fail(&member, format!("cannot be read: {e}"), "check the archive")
            }
            MemberError::Refused(p, f) => fail(&member, p, f),
            MemberError::Path(e) => {
                let (p, f) = e.describe();
                fail(&member, p, &f)
            }
        })?;
        names.push(raw);
    }
    Ok(names)
}

enum MemberError {
    Io(io::Error),
    Refused(String, &'static str),
    Path(ResolveError),
}

impl From<io::Error> for MemberError {
    fn from(e: io::Error) -> Self {
        MemberError::Io(e)
    }
}

impl From<ResolveError> for MemberError {
    fn from(e: ResolveError) -> Self {
        MemberError::Path(e)
    }
}

/// The member's path below `base`, refusing absolute paths and `..`.
fn member_path(base: &[Vec<u8>], raw: &[u8]) -> Result<Vec<Vec<u8>>, MemberError> {
    if raw.first() == Some(&b'/') {
        return Err(MemberError::Refused(
            "has an absolute path".into(),
            "make the archive's paths relative",
        ));
    }
    let rel = components(raw).map_err(|_| {
        MemberError::Refused(
            "has a \"..\" component".into(),
            "remove \"..\" from the archive's paths",
        )
    })?;
    let mut comps = base.to_vec();
    comps.extend(rel);
    Ok(comps)
}

fn member_into<R: Read>(
    b: &mut Builder,
    store: &ContentStore,
    base: &[Vec<u8>],
    e: &mut tar::Entry<'_, R>,
) -> Result<(), MemberError> {
    let comps = member_path(base, &e.path_bytes())?;
    let h = e.header();
    let et = h.entry_type();
    let size = e.size();
    if size > MAX_MEMBER_SIZE {
        return Err(MemberError::Refused(
            format!("claims to be {size} bytes, more than the {MAX_MEMBER_SIZE}-byte limit"),
            "leave such large files out of the archive",
        ));
    }
    let (mut uid, mut gid, mode) = (h.uid()?, h.gid()?, h.mode()?);
    let mut mtime = Time::from_secs(i64::try_from(h.mtime()?).unwrap_or(i64::MAX));
    let link = e.link_name_bytes().map(|l| l.into_owned());
    // Only device members fill in the device fields; others may leave them blank.
    let dev = if matches!(et, tar::EntryType::Char | tar::EntryType::Block) {
        (
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    let mut xattrs = BTreeMap::new();
    if let Some(pax) = e.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            let v = ext.value_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.insert(name.to_vec(), v.to_vec());
            } else if key == b"uid" {
                uid = parse_num(v).unwrap_or(uid);
            } else if key == b"gid" {
                gid = parse_num(v).unwrap_or(gid);
            } else if key == b"mtime" {
                mtime = parse_pax_time(v).unwrap_or(mtime);
            }
        }
    }
    let owner = |n: u64| {
        u32::try_from(n).map_err(|_| {
            MemberError::Refused(
                format!("has owner id {n}, above 2^32"),
                "use 32-bit user and group ids",
            )
        })
    };
    let mut meta = Meta::new(mode, owner(uid)?, owner(gid)?, mtime.clamp_to(b.sde));
    meta.xattrs = xattrs;
    let kind = match et {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            Kind::File(store.write(e)?)
        }
        tar::EntryType::Directory => Kind::Dir(BTreeMap::new()),
        tar::EntryType::Symlink => {
            Kind::Symlink(link.filter(|l| !l.is_empty()).ok_or_else(|| {
                MemberError::Refused(
                    "is a symlink without a target".into(),
                    "give the symlink a target",
                )
            })?)
        }
        tar::EntryType::Link => {
            let target = link.unwrap_or_default();
            let tcomps = member_path(base, &target)?;
            let id = b.lookup(&tcomps).map_err(|_| {
                MemberError::Refused(
                    format!(
                        "is a hard link to {:?}, which is not earlier in the archive",
                        String::from_utf8_lossy(&target)
                    ),
                    "put the link's target before the link in the archive",
                )
            })?;
            if b.tree.node(id).is_dir() {
                return Err(MemberError::Refused(
                    "is a hard link to a directory".into(),
                    "remove the hard link",
                ));
            }
            b.put_link(&comps, id)?;
            return Ok(());
        }
        tar::EntryType::Char => Kind::CharDev {
            major: dev.0,
            minor: dev.1,
        },
        tar::EntryType::Block => Kind::BlockDev {
            major: dev.0,
            minor: dev.1,
        },
        tar::EntryType::Fifo => Kind::Fifo,
        // Global PAX headers and other metadata-only members carry nothing for the tree.
        tar::EntryType::XGlobalHeader => return Ok(()),
        other => {
            return Err(MemberError::Refused(
                format!(
                    "has an unsupported tar entry type {:?}",
                    other.as_byte() as char
                ),
                "repack the archive with GNU tar or bsdtar",
            ))
        }
    };
    b.put(&comps, Node { meta, kind }, true)?;
    Ok(())
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// A PAX time: decimal seconds with an optional fraction (`1600000000.123456789`).
fn parse_pax_time(v: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    // A negative time with a fraction counts down from the whole second; keep it simple and
    // drop the fraction there (clamping makes pre-1970 archives rare anyway).
    Some(if secs < 0 {
        Time::from_secs(secs)
    } else {
        Time { secs, nanos }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_and_magic() {
        assert_eq!(Compression::from_name("a.TGZ"), Some(Compression::Gzip));
        assert_eq!(
            Compression::from_name("a.tar.zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::from_name("a.zip"), None);
        assert!(Compression::Zstd.magic_ok(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(!Compression::None.magic_ok(&[0; 100]));
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(Time {
                secs: 12,
                nanos: 500_000_000
            })
        );
        assert_eq!(parse_pax_time(b"12"), Some(Time::from_secs(12)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
