//! The in-memory root filesystem tree: an arena of nodes (inodes) and sorted directories.
//!
//! Hard links are several directory entries naming the same [`NodeId`]. Nodes that become
//! unreachable (a later recipe entry replaced them) stay in the arena; writers walk from the
//! root and only ever see reachable nodes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Index of a node in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

/// A point in time, seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub const fn from_secs(secs: i64) -> Self {
        Time { secs, nanos: 0 }
    }
    /// The earlier of `self` and `limit` (used to clamp every timestamp to `source_date_epoch`).
    pub fn clamp_to(self, limit: Time) -> Time {
        self.min(limit)
    }
}

/// Ownership, permissions, time and extended attributes of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including suid/sgid/sticky (`0o7777`); the file type lives in [`Kind`].
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
    /// Extended attributes by full name (`user.foo`, `security.capability`, ...), sorted by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    pub fn new(mode: u32, uid: u32, gid: u32, mtime: Time) -> Self {
        Meta {
            mode: mode & 0o7777,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Where a regular file's bytes come from. Contents are streamed, never held whole in memory,
/// except small inline contents given in the recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Bytes given inline (recipe `content = ...`, generated files such as `/etc/passwd`).
    Bytes(Arc<[u8]>),
    /// A file on the host, `len` bytes long when the tree was built.
    Host { path: PathBuf, len: u64 },
    /// A member of kiln's own content store ([`super::ContentStore`]).
    Stored(Stored),
}

/// `len` bytes at `offset` of the content store's pack file, whose data ranges (relative to
/// the member) were recorded as it was written.
#[derive(Debug, Clone)]
pub struct Stored {
    pub(super) file: Arc<File>,
    pub path: Arc<std::path::Path>,
    pub offset: u64,
    pub len: u64,
    pub(super) ranges: Arc<[Range<u64>]>,
}

impl PartialEq for Stored {
    fn eq(&self, o: &Self) -> bool {
        (&self.path, self.offset, self.len) == (&o.path, o.offset, o.len)
    }
}

impl Eq for Stored {}

/// Granularity at which holes are reported: ext4's block size.
pub const HOLE_GRANULE: u64 = 4096;

impl Content {
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        Content::Bytes(Arc::from(data.into().into_boxed_slice()))
    }

    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Host { len, .. } => *len,
            Content::Stored(s) => s.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The byte ranges that hold data, sorted and disjoint; everything else is a hole.
    ///
    /// For host files this is what `SEEK_DATA`/`SEEK_HOLE` report, so sparse inputs stay sparse.
    /// For inline bytes, a [`HOLE_GRANULE`]-aligned block of zeros is a hole. Ranges are not
    /// rounded; callers round them outward to their block size.
    pub fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        match self {
            Content::Bytes(b) => Ok(zero_block_holes(b)),
            Content::Host { path, len } => {
                let f = File::open(path)?;
                seek_data_ranges(&f, *len)
            }
            Content::Stored(s) => Ok(s.ranges.to_vec()),
        }
    }

    /// A reader over the whole content.
    pub fn open(&self) -> io::Result<ContentReader> {
        match self {
            Content::Bytes(b) => Ok(ContentReader::Bytes(io::Cursor::new(b.clone()))),
            Content::Host { path, len } => {
                let f = File::open(path)?;
                let actual = f.metadata()?.len();
                if actual != *len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} changed during the build: it was {len} bytes, now {actual}",
                            path.display()
                        ),
                    ));
                }
                Ok(ContentReader::File(f))
            }
            Content::Stored(s) => Ok(ContentReader::Stored {
                member: s.clone(),
                pos: 0,
            }),
        }
    }
}

/// Reader returned by [`Content::open`].
pub enum ContentReader {
    Bytes(io::Cursor<Arc<[u8]>>),
    File(File),
    /// Positional reads within the member; `pos` is relative to its start.
    Stored {
        member: Stored,
        pos: u64,
    },
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ContentReader::Bytes(c) => c.read(buf),
            ContentReader::File(f) => f.read(buf),
            ContentReader::Stored { member, pos } => {
                use std::os::unix::fs::FileExt;
                let left = member.len.saturating_sub(*pos);
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                if want == 0 {
                    return Ok(0);
                }
                let n = member
                    .file
                    .read_at(&mut buf[..want], member.offset + *pos)?;
                // The pack always extends to the member's end (the store sets its length), so
                // an early end of file means it was cut short behind kiln's back.
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} was truncated during the build", member.path.display()),
                    ));
                }
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

impl Seek for ContentReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            ContentReader::Bytes(c) => c.seek(pos),
            ContentReader::File(f) => f.seek(pos),
            ContentReader::Stored { member, pos: at } => {
                let new = match pos {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::Current(d) => at.checked_add_signed(d),
                    SeekFrom::End(d) => member.len.checked_add_signed(d),
                };
                *at = new.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "seek before the start")
                })?;
                Ok(*at)
            }
        }
    }
}

fn zero_block_holes(b: &[u8]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for (i, chunk) in b.chunks(HOLE_GRANULE as usize).enumerate() {
        if chunk.iter().all(|&x| x == 0) {
            continue;
        }
        let start = i as u64 * HOLE_GRANULE;
        let end = start + chunk.len() as u64;
        match out.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => out.push(start..end),
        }
    }
    out
}

/// Data ranges of an open file by `SEEK_DATA`/`SEEK_HOLE`; the whole file where unsupported.
#[allow(clippy::single_range_in_vec_init)] // one range: the whole file is data
pub fn seek_data_ranges(f: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < len {
        // SAFETY: lseek on a valid, owned descriptor; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(out), // no data after pos: the rest is a hole
                Some(libc::EINVAL) if out.is_empty() && pos == 0 => {
                    Ok(std::iter::once(0..len).collect())
                }
                _ => Err(err),
            };
        }
        let data = data as u64;
        if data >= len {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            len
        } else {
            (hole as u64).min(len)
        };
        out.push(data..hole);
        pos = hole;
    }
    Ok(out)
}

/// What a node is, with its type-specific payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Entries by name (raw bytes, no `/` or NUL), sorted.
    Dir(BTreeMap<Vec<u8>, NodeId>),
    File(Content),
    Symlink(Vec<u8>),
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub meta: Meta,
    pub kind: Kind,
}

impl Node {
    pub fn dir(meta: Meta) -> Self {
        Node {
            meta,
            kind: Kind::Dir(BTreeMap::new()),
        }
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
    /// The POSIX file-type bits (`S_IFREG`, ...) for this node.
    pub fn type_bits(&self) -> u32 {
        match self.kind {
            Kind::Dir(_) => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }
}

/// The whole tree. Node 0 is the root directory.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    pub const ROOT: NodeId = NodeId(0);

    pub fn new(root_meta: Meta) -> Self {
        Tree {
            nodes: vec![Node::dir(root_meta)],
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.0 as usize]
    }

    /// Adds a node to the arena without linking it anywhere.
    pub fn alloc(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        NodeId((self.nodes.len() - 1) as u32)
    }

    /// Entries of a directory node; `None` if `id` is not a directory.
    pub fn children(&self, id: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.node(id).kind {
            Kind::Dir(e) => Some(e),
            _ => None,
        }
    }

    /// Links `child` into directory `parent` under `name`, replacing any entry of that name.
    /// Returns the replaced node, if any. Panics only on misuse (parent not a directory), which
    /// callers rule out first.
    pub fn link(&mut self, parent: NodeId, name: &[u8], child: NodeId) -> Option<NodeId> {
        match &mut self.node_mut(parent).kind {
            Kind::Dir(e) => e.insert(name.to_vec(), child),
            _ => panic!("link into a non-directory node"),
        }
    }

    /// Removes the entry `name` from directory `parent`.
    pub fn unlink(&mut self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        match &mut self.node_mut(parent).kind {
            Kind::Dir(e) => e.remove(name),
            _ => None,
        }
    }

    /// Creates `node` and links it as `parent/name`.
    pub fn add(&mut self, parent: NodeId, name: &[u8], node: Node) -> NodeId {
        let id = self.alloc(node);
        self.link(parent, name, id);
        id
    }

    /// Looks up a child by name, without following symlinks.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        self.children(parent).and_then(|e| e.get(name).copied())
    }

    /// Every reachable node, each once, in a deterministic depth-first pre-order walk
    /// (entries sorted by name bytes). Hard-linked nodes appear at their first path.
    pub fn walk(&self) -> Vec<(Vec<u8>, NodeId)> {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        let mut stack = vec![(b"/".to_vec(), Self::ROOT)];
        while let Some((path, id)) = stack.pop() {
            if std::mem::replace(&mut seen[id.0 as usize], true) {
                continue;
            }
            if let Some(entries) = self.children(id) {
                for (name, &child) in entries.iter().rev() {
                    let mut p = path.clone();
                    if p.len() > 1 {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    stack.push((p, child));
                }
            }
            out.push((path, id));
        }
        out
    }

    /// Number of directory entries naming each node (the hard-link count of non-directories),
    /// counted over reachable directories only. Indexed by `NodeId.0`.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes.len()];
        counts[0] = 1;
        for (_, id) in self.walk() {
            if let Some(entries) = self.children(id) {
                for &c in entries.values() {
                    counts[c.0 as usize] += 1;
                }
            }
        }
        counts
    }

    /// Detaches the subtree at directory `at` (a mount point such as `/boot/efi`) into a tree of
    /// its own, leaving an empty directory with the same metadata in its place.
    pub fn split_off(&mut self, at: NodeId) -> Tree {
        let meta = self.node(at).meta.clone();
        let mut out = Tree::new(meta);
        let mut map = std::collections::HashMap::new();
        map.insert(at, Tree::ROOT);
        let mut stack = vec![at];
        while let Some(src) = stack.pop() {
            let dst = map[&src];
            let entries: Vec<(Vec<u8>, NodeId)> = self
                .children(src)
                .map(|e| e.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            for (name, child) in entries {
                let new_id = match map.get(&child) {
                    Some(&id) => id,
                    None => {
                        let mut n = self.node(child).clone();
                        if let Kind::Dir(e) = &mut n.kind {
                            e.clear();
                            stack.push(child);
                        }
                        let id = out.alloc(n);
                        map.insert(child, id);
                        id
                    }
                };
                out.link(dst, &name, new_id);
            }
        }
        if let Kind::Dir(e) = &mut self.node_mut(at).kind {
            e.clear();
        }
        out
    }

    /// Total number of nodes in the arena (reachable or not).
    pub fn arena_len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mode: u32) -> Meta {
        Meta::new(mode, 0, 0, Time::from_secs(1))
    }

    #[test]
    fn walk_is_sorted_and_visits_hard_links_once() {
        let mut t = Tree::new(m(0o755));
        let etc = t.add(Tree::ROOT, b"etc", Node::dir(m(0o755)));
        let f = t.add(
            etc,
            b"b",
            Node {
                meta: m(0o644),
                kind: Kind::File(Content::bytes("x")),
            },
        );
        t.link(etc, b"a", f);
        t.add(Tree::ROOT, b"bin", Node::dir(m(0o755)));
        let paths: Vec<_> = t
            .walk()
            .into_iter()
            .map(|(p, _)| String::from_utf8(p).unwrap())
            .collect();
        assert_eq!(paths, ["/", "/bin", "/etc", "/etc/a"]);
        assert_eq!(t.link_counts()[f.0 as usize], 2);
    }

    #[test]
    fn split_off_leaves_an_empty_mount_point() {
        let mut t = Tree::new(m(0o755));
        let boot = t.add(Tree::ROOT, b"boot", Node::dir(m(0o755)));
        let efi = t.add(boot, b"efi", Node::dir(m(0o700)));
        t.add(
            efi,
            b"k",
            Node {
                meta: m(0o644),
                kind: Kind::File(Content::bytes("k")),
            },
        );
        let esp = t.split_off(efi);
        assert!(t.children(efi).unwrap().is_empty());
        assert_eq!(esp.node(Tree::ROOT).meta.mode, 0o700);
        assert!(esp.child(Tree::ROOT, b"k").is_some());
    }

    #[test]
    fn inline_zero_blocks_are_holes() {
        let mut v = vec![0u8; 3 * 4096];
        v[4096 + 5] = 1;
        assert_eq!(Content::bytes(v).data_ranges().unwrap(), vec![4096..8192]);
    }
}
