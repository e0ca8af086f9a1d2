//! Writing generated files into the tree by path, through the tree's resolver (so `/lib` etc.
//! follow merged-/usr symlinks and nothing leaves the tree).

use crate::tree::path::{components, resolve, Last, Resolved};
use crate::tree::{Content, Kind, Meta, Node, NodeId, Time, Tree};

use super::error::{PackageError, Result};

fn fail(path: &str, e: impl std::fmt::Debug) -> PackageError {
    PackageError::Etc(format!("cannot write {path} into the tree: {e:?}"))
}

/// Places `node` at `path`, creating parents (0755 root), replacing what was there except that a
/// directory over a directory only updates its metadata.
pub fn put(tree: &mut Tree, path: &str, node: Node, sde: Time) -> Result<NodeId> {
    let comps = components(path.as_bytes()).map_err(|e| fail(path, e))?;
    let create = Meta::new(0o755, 0, 0, sde);
    match resolve(tree, &comps, Last::Parent, Some(&create)).map_err(|e| fail(path, e))? {
        Resolved::Parent(parent, name) => {
            if let (true, Some(old)) = (node.is_dir(), tree.child(parent, &name)) {
                if tree.node(old).is_dir() {
                    tree.node_mut(old).meta = node.meta;
                    return Ok(old);
                }
            }
            Ok(tree.add(parent, &name, node))
        }
        Resolved::Dir(id) => Ok(id),
    }
}

pub fn file(
    tree: &mut Tree,
    path: &str,
    data: impl Into<Vec<u8>>,
    mode: u32,
    sde: Time,
) -> Result<()> {
    file_owned(tree, path, data, mode, 0, 0, sde)
}

pub fn file_owned(
    tree: &mut Tree,
    path: &str,
    data: impl Into<Vec<u8>>,
    mode: u32,
    uid: u32,
    gid: u32,
    sde: Time,
) -> Result<()> {
    let node = Node {
        meta: Meta::new(mode, uid, gid, sde),
        kind: Kind::File(Content::bytes(data)),
    };
    put(tree, path, node, sde).map(|_| ())
}

pub fn dir(tree: &mut Tree, path: &str, mode: u32, uid: u32, gid: u32, sde: Time) -> Result<()> {
    put(tree, path, Node::dir(Meta::new(mode, uid, gid, sde)), sde).map(|_| ())
}

pub fn symlink(tree: &mut Tree, path: &str, target: &str, sde: Time) -> Result<()> {
    let node = Node {
        meta: Meta::new(0o777, 0, 0, sde),
        kind: Kind::Symlink(target.as_bytes().to_vec()),
    };
    put(tree, path, node, sde).map(|_| ())
}

/// The bytes of the regular file at `path` (following symlinks in parents), if there is one.
pub fn read(tree: &mut Tree, path: &str) -> Option<Vec<u8>> {
    let comps = components(path.as_bytes()).ok()?;
    let Resolved::Parent(parent, name) = resolve(tree, &comps, Last::Parent, None).ok()? else {
        return None;
    };
    let id = tree.child(parent, &name)?;
    match &tree.node(id).kind {
        Kind::File(c) => {
            let mut r = c.open().ok()?;
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut buf).ok()?;
            Some(buf)
        }
        _ => None,
    }
}
