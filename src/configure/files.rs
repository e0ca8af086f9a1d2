//! Small file operations on the image's tree by absolute path, as the maintainer scripts' shell
//! commands do them (`ln -sf`, `rm -f`, `mkdir`, `test -L`), inside the tree: symlinks in
//! parent directories are followed within it (a merged-/usr `/lib` leads to `/usr/lib`).

use std::io::Read;

use crate::boot::tree_io;
use crate::tree::path::{components, resolve, Last, Resolved};
use crate::tree::{Content, Kind, Meta, Node, NodeId, Time, Tree};

/// The directory holding `path` and the last name, without following that last name; `create`
/// makes missing parents (0755 root).
pub fn parent(
    tree: &mut Tree,
    path: &str,
    create: Option<Time>,
) -> Result<(NodeId, Vec<u8>), String> {
    let comps = components(path.as_bytes()).map_err(|e| format!("{e:?}"))?;
    let meta = create.map(|t| Meta::new(0o755, 0, 0, t));
    match resolve(tree, &comps, Last::Parent, meta.as_ref()).map_err(|e| format!("{e:?}"))? {
        Resolved::Parent(dir, name) => Ok((dir, name)),
        Resolved::Dir(_) => Err("it names the root directory".into()),
    }
}

/// The entry at `path` itself (`lstat`): a symlink is not followed.
pub fn entry(tree: &mut Tree, path: &str) -> Option<NodeId> {
    let (dir, name) = parent(tree, path, None).ok()?;
    tree.child(dir, &name)
}

/// Replaces whatever is at `path` with `node` (`ln -sf`, writing a new file).
pub fn put(tree: &mut Tree, path: &str, node: Node, time: Time) -> Result<(), String> {
    let (dir, name) = parent(tree, path, Some(time))?;
    tree.add(dir, &name, node);
    Ok(())
}

/// A symlink node, as root makes it.
pub fn symlink(target: &[u8], time: Time) -> Node {
    Node {
        meta: Meta::new(0o777, 0, 0, time),
        kind: Kind::Symlink(target.to_vec()),
    }
}

/// A regular file node owned by root.
pub fn file(data: Vec<u8>, mode: u32, time: Time) -> Node {
    Node {
        meta: Meta::new(mode, 0, 0, time),
        kind: Kind::File(Content::bytes(data)),
    }
}

/// Removes the entry at `path` (not following a final symlink), like `rm -f`.
pub fn remove(tree: &mut Tree, path: &str) -> bool {
    match parent(tree, path, None) {
        Ok((dir, name)) => tree.unlink(dir, &name).is_some(),
        Err(_) => false,
    }
}

/// The bytes of the regular file at `path` (symlinks followed), `None` when there is none.
pub fn read(tree: &mut Tree, path: &str) -> std::io::Result<Option<Vec<u8>>> {
    let Some(c) = tree_io::content(tree, path) else {
        return Ok(None);
    };
    let mut buf = Vec::with_capacity(c.len() as usize);
    c.open()?.read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// `test -f`: a regular file, symlinks followed.
pub fn is_file(tree: &mut Tree, path: &str) -> bool {
    tree_io::content(tree, path).is_some()
}

/// `test -e`: anything, symlinks followed (a dangling or looping one is nothing).
pub fn exists(tree: &mut Tree, path: &str) -> bool {
    tree_io::lookup(tree, path).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_replace_and_remove() {
        let t0 = Time::from_secs(0);
        let mut t = Tree::new(Meta::new(0o755, 0, 0, t0));
        put(&mut t, "/etc/a", file(b"x".to_vec(), 0o644, t0), t0).unwrap();
        put(&mut t, "/etc/l", symlink(b"a", t0), t0).unwrap();
        assert!(is_file(&mut t, "/etc/l") && exists(&mut t, "/etc/l"));
        put(&mut t, "/etc/l", symlink(b"/nowhere", t0), t0).unwrap();
        assert!(!exists(&mut t, "/etc/l"));
        let l = entry(&mut t, "/etc/l").unwrap();
        assert!(matches!(t.node(l).kind, Kind::Symlink(_)));
        assert!(remove(&mut t, "/etc/l"));
        assert!(!remove(&mut t, "/etc/l"));
        assert_eq!(read(&mut t, "/etc/a").unwrap().unwrap(), b"x");
        assert!(read(&mut t, "/etc/none").unwrap().is_none());
    }
}
