//! The root tree as one OCI layer: a tar of every entry, in a fixed order, with the tree's own
//! owners, modes, extended attributes and hard links, mtimes clamped to `source_date_epoch`,
//! compressed with gzip (on every core, [`super::pgzip`]) or zstd. Built from the tree, not from
//! the disk.

use super::tar::{Entry, EntryKind, TarWriter};
use crate::recipe::LayerCompression;
use crate::tree::{Kind, NodeId, Tree};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Write};

/// The trees that make up the root filesystem: `/` and the filesystems mounted below it, each
/// with its mount point.
pub struct RootTrees<'a> {
    pub parts: Vec<(String, &'a Tree)>,
    /// Leave `/boot` out (the kernel, the initrd, the loader's files).
    pub skip_boot: bool,
}

/// What a written layer is: the digest of the tar (the config's `diff_id`) and of the
/// compressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub diff_id: String,
    pub entries: u64,
}

/// The gzip level of layers (see [`write_layer`]).
pub const GZIP_LEVEL: u32 = 2;

/// Writes the layer's compressed bytes into `out`; the caller hashes what it receives.
pub fn write_layer(
    trees: &RootTrees,
    sde: i64,
    compression: LayerCompression,
    out: &mut dyn Write,
) -> io::Result<LayerInfo> {
    let enc = match compression {
        // On every core (see pgzip), at a fast level: go-containerregistry (crane, ko, apko)
        // writes gzip layers at BestSpeed; zlib-rs's level 2 is that classic fast deflate (its
        // level 1 is a static-Huffman mode, a quarter bigger on real trees). The measurement is
        // the VMDK's (sink::vmdk::LEVEL): about 5% bigger than level 6 for half the CPU.
        LayerCompression::Gzip => Encoder::Gzip(super::pgzip::ParallelGzip::new(
            out,
            flate2::Compression::new(GZIP_LEVEL),
        )?),
        LayerCompression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
    };
    let mut tar = TarWriter::new(Hashing {
        inner: enc,
        sha: Sha256::new(),
    });
    let root = trees
        .parts
        .iter()
        .position(|(m, _)| m == "/")
        .ok_or_else(|| io::Error::other("an OCI image needs a root filesystem (mount = \"/\")"))?;
    let mut w = Walker {
        trees,
        sde,
        links: HashMap::new(),
        counts: trees.parts.iter().map(|(_, t)| t.link_counts()).collect(),
        entries: 0,
    };
    w.dir(&mut tar, root, Tree::ROOT, b"")?;
    let entries = w.entries;
    let hashing = tar.finish()?;
    let diff_id = format!("sha256:{}", crate::util::hex(&hashing.sha.finalize()));
    hashing.inner.finish()?;
    Ok(LayerInfo { diff_id, entries })
}

enum Encoder<'a> {
    Gzip(super::pgzip::ParallelGzip<&'a mut dyn Write>),
    Zstd(zstd::stream::write::Encoder<'static, &'a mut dyn Write>),
}

impl Encoder<'_> {
    fn finish(self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.finish().map(drop),
            Encoder::Zstd(z) => z.finish().map(drop),
        }
    }
}

impl Write for Encoder<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(g) => g.write(b),
            Encoder::Zstd(z) => z.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
        }
    }
}

/// Hashes what passes through.
pub struct Hashing<W> {
    pub inner: W,
    pub sha: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.sha.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Walker<'a> {
    trees: &'a RootTrees<'a>,
    sde: i64,
    /// The first path of each multiply-linked file, by (tree, node).
    links: HashMap<(usize, NodeId), Vec<u8>>,
    counts: Vec<Vec<u32>>,
    entries: u64,
}

impl Walker<'_> {
    /// The entries below directory `id` of tree `t`, whose path is `prefix` (empty for `/`,
    /// else `a/b/`), in byte order of their names.
    fn dir<W: Write>(
        &mut self,
        tar: &mut TarWriter<W>,
        t: usize,
        id: NodeId,
        prefix: &[u8],
    ) -> io::Result<()> {
        let tree = self.trees.parts[t].1;
        let Some(children) = tree.children(id) else {
            return Ok(());
        };
        for (name, &child) in children {
            let mut path = prefix.to_vec();
            path.extend_from_slice(name);
            if self.trees.skip_boot && path == b"boot" {
                continue;
            }
            // A filesystem mounted here replaces the (empty) mount point.
            let abs = format!("/{}", String::from_utf8_lossy(&path));
            let (t2, node) = match self.trees.parts.iter().position(|(m, _)| *m == abs) {
                Some(p) if tree.node(child).is_dir() => (p, Tree::ROOT),
                _ => (t, child),
            };
            self.entry(tar, t2, node, path)?;
        }
        Ok(())
    }

    fn entry<W: Write>(
        &mut self,
        tar: &mut TarWriter<W>,
        t: usize,
        id: NodeId,
        mut path: Vec<u8>,
    ) -> io::Result<()> {
        let tree = self.trees.parts[t].1;
        let node = tree.node(id);
        let m = &node.meta;
        let mut e = Entry {
            path: Vec::new(),
            kind: EntryKind::Dir,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime.secs.min(self.sde).max(0) as u64,
            xattrs: m
                .xattrs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let linked = !node.is_dir() && self.counts[t][id.0 as usize] > 1;
        if linked {
            if let Some(first) = self.links.get(&(t, id)) {
                e.path = path;
                e.kind = EntryKind::HardLink {
                    target: first.clone(),
                };
                self.entries += 1;
                return tar.append(&e, None);
            }
            self.links.insert((t, id), path.clone());
        }
        let mut reader = None;
        e.kind = match &node.kind {
            Kind::Dir(_) => EntryKind::Dir,
            Kind::File(c) => {
                reader = Some(c.open()?);
                EntryKind::File { size: c.len() }
            }
            Kind::Symlink(target) => EntryKind::Symlink {
                target: target.clone(),
            },
            Kind::CharDev { major, minor } => EntryKind::CharDev {
                major: *major,
                minor: *minor,
            },
            Kind::BlockDev { major, minor } => EntryKind::BlockDev {
                major: *major,
                minor: *minor,
            },
            Kind::Fifo => EntryKind::Fifo,
            Kind::Socket => {
                // tar has no socket entries; a socket is made by whatever listens on it.
                tracing::debug!(
                    "{}: a socket, left out of the layer",
                    String::from_utf8_lossy(&path)
                );
                return Ok(());
            }
        };
        let is_dir = node.is_dir();
        if is_dir {
            path.push(b'/');
        }
        e.path = path;
        self.entries += 1;
        tar.append(&e, reader.as_mut().map(|r| r as &mut dyn io::Read))
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("/{}: {err}", String::from_utf8_lossy(&e.path)),
                )
            })?;
        if is_dir {
            let prefix = e.path;
            self.dir(tar, t, id, &prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, Meta, Node, Time};
    use std::io::Read;

    fn tree() -> Tree {
        let m = |mode| Meta::new(mode, 0, 0, Time::from_secs(5));
        let mut t = Tree::new(m(0o755));
        let etc = t.add(Tree::ROOT, b"etc", Node::dir(m(0o755)));
        let mut fm = Meta::new(0o4750, 7, 8, Time::from_secs(9_999_999_999));
        fm.xattrs.insert(b"user.a".to_vec(), b"1".to_vec());
        let f = t.add(
            etc,
            b"f",
            Node {
                meta: fm,
                kind: Kind::File(Content::bytes("data")),
            },
        );
        t.link(Tree::ROOT, b"zlink", f);
        let boot = t.add(Tree::ROOT, b"boot", Node::dir(m(0o755)));
        t.add(
            boot,
            b"vmlinuz",
            Node {
                meta: m(0o644),
                kind: Kind::File(Content::bytes("k")),
            },
        );
        t.add(Tree::ROOT, b"srv", Node::dir(m(0o755)));
        t
    }

    fn list(trees: &RootTrees, c: LayerCompression) -> (Vec<(String, u8, u64, u32)>, LayerInfo) {
        let mut blob = Vec::new();
        let info = write_layer(trees, 1000, c, &mut blob).unwrap();
        let plain: Box<dyn Read> = match c {
            LayerCompression::Gzip => Box::new(flate2::read::GzDecoder::new(&blob[..])),
            LayerCompression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(&blob[..]).unwrap())
            }
        };
        let mut a = tar::Archive::new(plain);
        let out = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.entry_type().as_byte(),
                    h.mtime().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        (out, info)
    }

    #[test]
    fn entries_are_ordered_clamped_linked_and_boot_is_left_out() {
        let root = tree();
        let mut srv = Tree::new(Meta::new(0o700, 0, 0, Time::from_secs(1)));
        srv.add(
            Tree::ROOT,
            b"s",
            Node {
                meta: Meta::new(0o600, 0, 0, Time::from_secs(1)),
                kind: Kind::File(Content::bytes("s")),
            },
        );
        let trees = RootTrees {
            parts: vec![("/".into(), &root), ("/srv".into(), &srv)],
            skip_boot: true,
        };
        let (got, info) = list(&trees, LayerCompression::Gzip);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["etc/", "etc/f", "srv/", "srv/s", "zlink"]);
        assert_eq!(
            got[1],
            ("etc/f".into(), b'0', 1000, 0o4750),
            "mtime clamped"
        );
        assert_eq!(
            got[2].3, 0o700,
            "the mounted tree's root is the mount point"
        );
        assert_eq!(got[4].1, b'1', "a hard link to etc/f");
        assert_eq!(info.entries, 5);
        let (again, info2) = list(&trees, LayerCompression::Gzip);
        assert_eq!((again, info2), (got, info), "reproducible");
        let with_boot = RootTrees {
            parts: vec![("/".into(), &root)],
            skip_boot: false,
        };
        let (got, _) = list(&with_boot, LayerCompression::Zstd);
        assert!(got.iter().any(|e| e.0 == "boot/vmlinuz"));
    }
}
