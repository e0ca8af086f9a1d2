//! Reading files from and placing files into the image's tree by path, through the tree's own
//! resolver (so `/lib/modules` follows a merged-/usr `/lib -> usr/lib` and nothing leaves the
//! tree).

use std::io::Read;

use crate::tree::path::{components, resolve, Last, Resolved};
use crate::tree::{Content, Kind, Meta, Node, NodeId, Time, Tree};

use super::BootError;

/// The node at `path`, following symlinks (also a final one, up to 40 hops).
pub fn lookup(tree: &mut Tree, path: &str) -> Option<NodeId> {
    let mut path = path.to_string();
    for _ in 0..40 {
        let comps = components(path.as_bytes()).ok()?;
        if comps.is_empty() {
            return Some(Tree::ROOT);
        }
        let Resolved::Parent(parent, name) = resolve(tree, &comps, Last::Parent, None).ok()? else {
            return None;
        };
        let id = tree.child(parent, &name)?;
        match &tree.node(id).kind {
            Kind::Symlink(t) => {
                let t = String::from_utf8_lossy(t).into_owned();
                path = if t.starts_with('/') {
                    t
                } else {
                    let dir = &path[..path.rfind('/').unwrap_or(0)];
                    normalize(&format!("{dir}/{t}"))?
                };
            }
            _ => return Some(id),
        }
    }
    None
}

/// `a/b/../c` → `a/c`; `None` when `..` climbs above the root.
fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// The content of the regular file at `path`.
pub fn content(tree: &mut Tree, path: &str) -> Option<Content> {
    let id = lookup(tree, path)?;
    match &tree.node(id).kind {
        Kind::File(c) => Some(c.clone()),
        _ => None,
    }
}

/// The bytes of the regular file at `path`.
pub fn read(tree: &mut Tree, path: &str) -> Result<Option<Vec<u8>>, BootError> {
    let Some(c) = content(tree, path) else {
        return Ok(None);
    };
    let io = |source| BootError::Read {
        path: path.to_string(),
        source,
    };
    let mut buf = Vec::with_capacity(c.len() as usize);
    c.open().map_err(io)?.read_to_end(&mut buf).map_err(io)?;
    Ok(Some(buf))
}

/// Names in the directory at `path` (sorted), or empty when it is not a directory.
pub fn list(tree: &mut Tree, path: &str) -> Vec<String> {
    let Some(id) = lookup(tree, path) else {
        return Vec::new();
    };
    tree.children(id)
        .map(|c| {
            c.keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Places a regular file at `path` (parents made 0755 root), replacing what was there.
pub fn put_file(
    tree: &mut Tree,
    path: &str,
    content: Content,
    mode: u32,
    time: Time,
) -> Result<(), BootError> {
    let fail = |e| BootError::Place {
        path: path.to_string(),
        problem: format!("{e:?}"),
    };
    let comps = components(path.as_bytes()).map_err(fail)?;
    let create = Meta::new(0o755, 0, 0, time);
    match resolve(tree, &comps, Last::Parent, Some(&create)).map_err(fail)? {
        Resolved::Parent(parent, name) => {
            let node = Node {
                meta: Meta::new(mode, 0, 0, time),
                kind: Kind::File(content),
            };
            tree.add(parent, &name, node);
            Ok(())
        }
        Resolved::Dir(_) => Err(BootError::Place {
            path: path.to_string(),
            problem: "it names a directory".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_followed_inside_the_tree() {
        let t0 = Time::from_secs(0);
        let mut t = Tree::new(Meta::new(0o755, 0, 0, t0));
        put_file(&mut t, "/usr/lib/x/f", Content::bytes(*b"hi"), 0o644, t0).unwrap();
        let usr = t.child(Tree::ROOT, b"usr").unwrap();
        let link = |target: &[u8]| Node {
            meta: Meta::new(0o777, 0, 0, t0),
            kind: Kind::Symlink(target.to_vec()),
        };
        t.add(Tree::ROOT, b"lib", link(b"usr/lib"));
        t.add(usr, b"g", link(b"../lib/x/f"));
        assert_eq!(read(&mut t, "/lib/x/f").unwrap().unwrap(), b"hi");
        assert_eq!(read(&mut t, "/usr/g").unwrap().unwrap(), b"hi");
        assert_eq!(list(&mut t, "/lib"), vec!["x".to_string()]);
        assert!(lookup(&mut t, "/lib/nope").is_none());
        assert_eq!(normalize("/a/../../b"), None);
    }
}
