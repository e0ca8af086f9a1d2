//! Building the [`Tree`] from a recipe's entries, in recipe order (later entries win).

use std::fs::File;
use std::io;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::TreeError;
use super::node::{Content, Kind, Meta, Node, NodeId, Time, Tree};
use super::path::{components, resolve, show, Last, ResolveError, Resolved};
use super::{archive, host, ContentStore};
use crate::recipe::{EntryKind, FileSource, Pos, Recipe};

/// One input that went into the tree, for the build's provenance record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDigest {
    /// `"file"`, `"tree"` or `"archive"`.
    pub kind: &'static str,
    pub source: PathBuf,
    /// Hex SHA-256: of the file's bytes, of the archive file's bytes, or of a canonical listing
    /// of a host tree (see [`super::host`]).
    pub sha256: String,
}

/// The tree and the digests of every host input it was built from.
#[derive(Debug, Clone)]
pub struct Built {
    pub tree: Tree,
    pub inputs: Vec<InputDigest>,
}

/// Builds the tree that `recipe` describes. Archive members are extracted into `store`, which
/// must outlive every use of the tree.
pub fn build_tree(recipe: &Recipe, store: &ContentStore) -> Result<Built, TreeError> {
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    build_tree_on(Tree::new(Meta::new(0o755, 0, 0, sde)), recipe, store)
}

/// [`build_tree`] on top of an existing tree (installed packages): the recipe's entries win.
pub fn build_tree_on(
    tree: Tree,
    recipe: &Recipe,
    store: &ContentStore,
) -> Result<Built, TreeError> {
    let (mut built, pending) = build_tree_on_deferred(tree, recipe, store)?;
    pending.finish(|i, sha| built.inputs[i].sha256 = sha)?;
    Ok(built)
}

/// Digests of `[[tree]]` inputs still being computed on their own threads, by index into
/// [`Built::inputs`].
#[derive(Default)]
pub struct PendingDigests(Vec<(usize, super::host::PendingDigest)>);

impl PendingDigests {
    /// Waits for each digest and hands it to `set` with its input's index.
    pub fn finish(self, mut set: impl FnMut(usize, String)) -> Result<(), TreeError> {
        for (i, p) in self.0 {
            set(i, p.wait()?);
        }
        Ok(())
    }
}

/// [`build_tree_on`], returning before the `[[tree]]` inputs' content digests are done: the
/// pipeline collects them when it writes the manifest, so hashing overlaps with writing the disk.
pub fn build_tree_on_deferred(
    tree: Tree,
    recipe: &Recipe,
    store: &ContentStore,
) -> Result<(Built, PendingDigests), TreeError> {
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    let mut b = Builder {
        tree,
        sde,
        inputs: Vec::new(),
        pending: Vec::new(),
    };
    for entry in &recipe.entries {
        let pos = &entry.pos;
        match &entry.kind {
            EntryKind::File {
                path,
                source,
                mode,
                owner,
                group,
            } => {
                let content = match source {
                    FileSource::Inline(s) => Content::bytes(s.as_bytes()),
                    FileSource::Path(p) => {
                        let (len, sha256) = digest_file(p).map_err(|e| io_err(pos, path, p, e))?;
                        b.inputs.push(InputDigest {
                            kind: "file",
                            source: p.clone(),
                            sha256,
                        });
                        Content::Host {
                            path: p.clone(),
                            len,
                        }
                    }
                };
                let node = Node {
                    meta: Meta::new(*mode, *owner, *group, sde),
                    kind: Kind::File(content),
                };
                b.put_at(pos, path, node)?;
            }
            EntryKind::Directory {
                path,
                mode,
                owner,
                group,
            } => {
                b.put_at(pos, path, Node::dir(Meta::new(*mode, *owner, *group, sde)))?;
            }
            EntryKind::Symlink { path, target } => {
                let node = Node {
                    meta: Meta::new(0o777, 0, 0, sde),
                    kind: Kind::Symlink(target.as_bytes().to_vec()),
                };
                b.put_at(pos, path, node)?;
            }
            EntryKind::Tree {
                source,
                dest,
                owner,
                group,
            } => {
                let (d, pending) = host::import(&mut b, pos, source, dest, *owner, *group)?;
                b.pending.push((b.inputs.len(), pending));
                b.inputs.push(d);
            }
            EntryKind::Archive { source, dest } => {
                let d = archive::import(&mut b, store, pos, source, dest)?;
                b.inputs.push(d);
            }
        }
    }
    Ok((
        Built {
            tree: b.tree,
            inputs: b.inputs,
        },
        PendingDigests(b.pending),
    ))
}

/// Length and hex SHA-256 of a host file, streamed.
/// The SHA-256 of a file's bytes (what `sha256sum` prints), and its length.
pub(super) fn digest_file(p: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, crate::util::hex(&h.finalize())))
}

/// A digest of a file's data and hole map, reading only its data (holes cost nothing): SHA-256
/// over `offset+length LF data` for each data range, then `length LF`. Used for files inside a
/// `[[tree]]`, where a 1 GiB sparse file would otherwise mean hashing 1 GiB of zeros. `buf` is
/// the caller's, reused from file to file: a zeroed 1 MiB buffer for each file of a 10,000-file
/// tree was a third of the hasher's CPU (bench-upload, perf).
pub(super) fn digest_sparse(p: &Path, buf: &mut Vec<u8>) -> io::Result<(u64, String)> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(p)?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    buf.resize(1 << 20, 0);
    for r in crate::tree::seek_data_ranges(&f, len)? {
        h.update(format!("{}+{}\n", r.start, r.end - r.start).as_bytes());
        f.seek(SeekFrom::Start(r.start))?;
        let mut left = r.end - r.start;
        while left > 0 {
            let n = f.read(&mut buf[..left.min(1 << 20) as usize])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while hashing",
                ));
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
    }
    h.update(format!("{len}\n").as_bytes());
    Ok((len, crate::util::hex(&h.finalize())))
}

pub(super) fn io_err(pos: &Pos, path: &str, host: &Path, source: io::Error) -> TreeError {
    TreeError::Io {
        pos: pos.clone(),
        path: path.to_owned(),
        host: host.to_owned(),
        source,
    }
}

pub(super) fn path_err(pos: &Pos, path: &str, e: &ResolveError) -> TreeError {
    let (problem, fix) = e.describe();
    TreeError::Path {
        pos: pos.clone(),
        path: path.to_owned(),
        problem,
        fix,
    }
}

/// The tree under construction.
pub(super) struct Builder {
    pub tree: Tree,
    /// Every time is clamped to this, and created parents get it.
    pub sde: Time,
    pub inputs: Vec<InputDigest>,
    /// `[[tree]]` digests being computed, by index into `inputs`.
    pub pending: Vec<(usize, super::host::PendingDigest)>,
}

impl Builder {
    /// Metadata of directories created because something below them was written.
    pub fn parent_meta(&self) -> Meta {
        Meta::new(0o755, 0, 0, self.sde)
    }

    fn put_at(&mut self, pos: &Pos, path: &str, node: Node) -> Result<NodeId, TreeError> {
        let comps = components(path.as_bytes()).map_err(|e| path_err(pos, path, &e))?;
        self.put(&comps, node, false)
            .map_err(|e| path_err(pos, path, &e))
    }

    /// Places `node` at `comps`, replacing what was there, except that a directory over a
    /// directory only updates its metadata and keeps its children. With `keep_dir_symlink`, a
    /// directory over a symlink that leads to a directory keeps the symlink (like GNU tar's
    /// `--keep-directory-symlink`), so merged-usr trees survive archives that ship `/bin/`.
    pub fn put(
        &mut self,
        comps: &[Vec<u8>],
        node: Node,
        keep_dir_symlink: bool,
    ) -> Result<NodeId, ResolveError> {
        if comps.is_empty() {
            if !node.is_dir() {
                return Err(ResolveError::Root);
            }
            self.tree.node_mut(Tree::ROOT).meta = node.meta;
            return Ok(Tree::ROOT);
        }
        let create = self.parent_meta();
        let Resolved::Parent(parent, name) =
            resolve(&mut self.tree, comps, Last::Parent, Some(&create))?
        else {
            return Err(ResolveError::Root);
        };
        if let (true, Some(old)) = (node.is_dir(), self.tree.child(parent, &name)) {
            match self.tree.node(old).kind {
                Kind::Dir(_) => {
                    self.tree.node_mut(old).meta = node.meta;
                    return Ok(old);
                }
                Kind::Symlink(_) if keep_dir_symlink => {
                    if let Ok(Resolved::Dir(id)) = resolve(&mut self.tree, comps, Last::Dir, None) {
                        return Ok(id);
                    }
                }
                _ => {}
            }
        }
        Ok(self.tree.add(parent, &name, node))
    }

    /// Links the existing node `id` at `comps` too (a hard link), replacing what was there.
    pub fn put_link(&mut self, comps: &[Vec<u8>], id: NodeId) -> Result<(), ResolveError> {
        let create = self.parent_meta();
        match resolve(&mut self.tree, comps, Last::Parent, Some(&create))? {
            Resolved::Parent(parent, name) => {
                self.tree.link(parent, &name, id);
                Ok(())
            }
            Resolved::Dir(_) => Err(ResolveError::Root),
        }
    }

    /// The node at `comps` (last component not followed), if it exists.
    pub fn lookup(&mut self, comps: &[Vec<u8>]) -> Result<NodeId, ResolveError> {
        match resolve(&mut self.tree, comps, Last::Parent, None)? {
            Resolved::Parent(parent, name) => self
                .tree
                .child(parent, &name)
                .ok_or(ResolveError::NotFound { at: show(comps) }),
            Resolved::Dir(id) => Ok(id),
        }
    }

    /// The directory at `dest` (following symlinks), created with parents if missing.
    pub fn dest_dir(&mut self, pos: &Pos, dest: &str) -> Result<Vec<Vec<u8>>, TreeError> {
        let comps = components(dest.as_bytes()).map_err(|e| path_err(pos, dest, &e))?;
        let create = self.parent_meta();
        resolve(&mut self.tree, &comps, Last::Dir, Some(&create))
            .map_err(|e| path_err(pos, dest, &e))?;
        Ok(comps)
    }
}
