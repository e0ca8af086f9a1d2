//! File operations on the image's tree with the kernel's path semantics inside a chroot:
//! symlinks are followed (an absolute target starts again at the tree's root), `..` at the root
//! stays at the root, and nothing ever leaves the tree.

use std::collections::VecDeque;
use std::io::Read;

use super::error::ConfigureError;
use crate::tree::{Content, Kind, Meta, Node, NodeId, Time, Tree};

/// Linux's MAXSYMLINKS.
const MAX_HOPS: usize = 40;

/// Where a path leads: the directory holding its last component, that component, and the node
/// named there (if any).
#[derive(Debug, Clone)]
pub struct Found {
    pub dir: NodeId,
    /// The directory's path without symlinks (`/usr/lib`), for relative symlink targets.
    pub dir_path: String,
    pub name: Vec<u8>,
    pub node: Option<NodeId>,
}

impl Found {
    pub fn path(&self) -> String {
        join(&self.dir_path, &String::from_utf8_lossy(&self.name))
    }
}

pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn dir_path(stack: &[(NodeId, String)]) -> String {
    let mut s = String::new();
    for (_, n) in &stack[1..] {
        s.push('/');
        s.push_str(n);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Resolves `path`; `follow`: also follow a symlink in the last component. `None` if an
/// intermediate directory is missing or not a directory, or the symlinks loop.
pub fn find(tree: &Tree, path: &str, follow: bool) -> Option<Found> {
    resolve_ro(tree, path, follow)
}

fn resolve_ro(tree: &Tree, path: &str, follow: bool) -> Option<Found> {
    let mut pending: VecDeque<String> = path.split('/').map(str::to_owned).collect();
    let mut stack: Vec<(NodeId, String)> = vec![(Tree::ROOT, String::new())];
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let is_last = pending.iter().all(|p| p.is_empty() || p == ".");
        let cur = stack.last().map_or(Tree::ROOT, |s| s.0);
        let child = tree.child(cur, c.as_bytes());
        let follow_here = !is_last || follow;
        match child.map(|id| (id, &tree.node(id).kind)) {
            Some((_, Kind::Symlink(t))) if follow_here => {
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                let t = String::from_utf8_lossy(t).into_owned();
                if t.starts_with('/') {
                    stack.truncate(1);
                }
                for p in t.split('/').rev() {
                    pending.push_front(p.to_owned());
                }
            }
            _ if is_last => {
                return Some(Found {
                    dir: cur,
                    dir_path: dir_path(&stack),
                    name: c.into_bytes(),
                    node: child,
                })
            }
            Some((id, Kind::Dir(_))) => stack.push((id, c)),
            _ => return None,
        }
    }
    let (id, name) = stack.pop()?;
    if stack.is_empty() {
        return Some(Found {
            dir: Tree::ROOT,
            dir_path: "/".into(),
            name: Vec::new(),
            node: Some(id),
        });
    }
    Some(Found {
        dir: stack.last().map_or(Tree::ROOT, |s| s.0),
        dir_path: dir_path(&stack),
        name: name.into_bytes(),
        node: Some(id),
    })
}

/// The node at `path`, following symlinks (also in the last component when `follow`).
pub fn lookup(tree: &Tree, path: &str, follow: bool) -> Option<NodeId> {
    find(tree, path, follow)?.node
}

/// The bytes of the regular file at `path`.
pub fn read(tree: &Tree, path: &str) -> Option<Vec<u8>> {
    let id = lookup(tree, path, true)?;
    match &tree.node(id).kind {
        Kind::File(c) => {
            let mut r = c.open().ok()?;
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).ok()?;
            Some(buf)
        }
        _ => None,
    }
}

pub fn read_text(tree: &Tree, path: &str) -> Option<String> {
    read(tree, path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

pub fn is_dir(tree: &Tree, path: &str) -> bool {
    lookup(tree, path, true).is_some_and(|id| tree.node(id).is_dir())
}

pub fn is_file(tree: &Tree, path: &str) -> bool {
    lookup(tree, path, true).is_some_and(|id| matches!(tree.node(id).kind, Kind::File(_)))
}

fn fail(path: &str, why: &str) -> ConfigureError {
    ConfigureError::Tree {
        path: path.to_owned(),
        problem: why.to_owned(),
    }
}

/// `path` without its last component.
pub fn parent(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// Places `node` at `path` (replacing what is there, not following a symlink there), creating
/// missing parents 0755 root.
pub fn put(tree: &mut Tree, path: &str, node: Node, sde: Time) -> Result<NodeId, ConfigureError> {
    mkdir_p(tree, parent(path), &Meta::new(0o755, 0, 0, sde))?;
    let f = find(tree, path, false).ok_or_else(|| fail(path, "a parent is not a directory"))?;
    if f.name.is_empty() || f.name == b"." || f.name == b".." {
        return Err(fail(path, "does not name a file"));
    }
    Ok(tree.add(f.dir, &f.name, node))
}

pub fn write_file(
    tree: &mut Tree,
    path: &str,
    data: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    sde: Time,
) -> Result<(), ConfigureError> {
    let node = Node {
        meta: Meta::new(mode, uid, gid, sde),
        kind: Kind::File(Content::bytes(data)),
    };
    put(tree, path, node, sde).map(|_| ())
}

pub fn symlink(tree: &mut Tree, path: &str, target: &str, sde: Time) -> Result<(), ConfigureError> {
    let node = Node {
        meta: Meta::new(0o777, 0, 0, sde),
        kind: Kind::Symlink(target.as_bytes().to_vec()),
    };
    put(tree, path, node, sde).map(|_| ())
}

/// `mkdir -p`: every missing directory is made with `meta`; an existing one is kept as it is.
pub fn mkdir_p(tree: &mut Tree, path: &str, meta: &Meta) -> Result<NodeId, ConfigureError> {
    let mut prefix = String::new();
    let mut at = Tree::ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(c);
        let f =
            find(tree, &prefix, true).ok_or_else(|| fail(path, "a parent is not a directory"))?;
        at = match f.node {
            Some(id) if tree.node(id).is_dir() => id,
            Some(_) => return Err(fail(path, "a component exists and is not a directory")),
            None if f.name.is_empty() => Tree::ROOT,
            None => tree.add(f.dir, &f.name, Node::dir(meta.clone())),
        };
    }
    Ok(at)
}

/// Removes the entry at `path` (a symlink itself, not its target); `true` if there was one.
pub fn remove(tree: &mut Tree, path: &str) -> bool {
    let Some(f) = find(tree, path, false) else {
        return false;
    };
    if f.node.is_none() || f.name.is_empty() {
        return false;
    }
    tree.unlink(f.dir, &f.name).is_some()
}

/// Pathname expansion: `*`, `?` and `[...]` in any component, matches sorted.
pub fn glob(tree: &Tree, pattern: &str) -> Vec<String> {
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let mut found: Vec<String> = vec![String::new()];
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for base in &found {
            let dir = if base.is_empty() { "/" } else { base.as_str() };
            if !c.contains(['*', '?', '[']) {
                let p = join(dir, c);
                if last && lookup(tree, &p, false).is_some() || !last && is_dir(tree, &p) {
                    next.push(p);
                }
                continue;
            }
            let Some(id) = lookup(tree, dir, true) else {
                continue;
            };
            let Some(entries) = tree.children(id) else {
                continue;
            };
            for name in entries.keys() {
                let n = String::from_utf8_lossy(name);
                // A leading dot matches only a pattern's leading dot (XCU §2.13.3).
                if n.starts_with('.') && !c.starts_with('.') {
                    continue;
                }
                if super::script::glob_match(c, &n) {
                    let p = join(dir, &n);
                    if last || is_dir(tree, &p) {
                        next.push(p);
                    }
                }
            }
        }
        found = next;
    }
    found.sort();
    found.retain(|p| !p.is_empty());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        let sde = Time::from_secs(1);
        let mut t = Tree::new(Meta::new(0o755, 0, 0, sde));
        mkdir_p(
            &mut t,
            "/usr/lib/systemd/system",
            &Meta::new(0o755, 0, 0, sde),
        )
        .unwrap();
        symlink(&mut t, "/lib", "usr/lib", sde).unwrap();
        write_file(
            &mut t,
            "/usr/lib/systemd/system/a.service",
            b"x".to_vec(),
            0o644,
            0,
            0,
            sde,
        )
        .unwrap();
        symlink(&mut t, "/etc/alternatives/awk", "/usr/bin/mawk", sde).unwrap();
        symlink(&mut t, "/etc/rc2.d/S01x", "../init.d/x", sde).unwrap();
        write_file(
            &mut t,
            "/etc/init.d/x",
            b"#!/bin/sh".to_vec(),
            0o755,
            0,
            0,
            sde,
        )
        .unwrap();
        t
    }

    #[test]
    fn paths_follow_symlinks_inside_the_tree() {
        let t = tree();
        assert_eq!(read(&t, "/lib/systemd/system/a.service").unwrap(), b"x");
        assert!(read(&t, "/lib/systemd/../systemd/system/a.service").is_some());
        assert_eq!(read(&t, "/etc/rc2.d/S01x").unwrap(), b"#!/bin/sh");
        assert!(lookup(&t, "/etc/alternatives/awk", false).is_some());
        assert!(lookup(&t, "/etc/alternatives/awk", true).is_none());
        // `..` at the root stays there.
        assert!(is_dir(&t, "/../../usr/lib"));
        assert_eq!(
            find(&t, "/lib/systemd/system/b", false).unwrap().dir_path,
            "/usr/lib/systemd/system"
        );
        assert_eq!(
            glob(&t, "/lib/systemd/system/*.service"),
            ["/lib/systemd/system/a.service"]
        );
        assert_eq!(glob(&t, "/etc/rc?.d/S*"), ["/etc/rc2.d/S01x"]);
    }

    #[test]
    fn writes_land_inside_the_tree() {
        let mut t = tree();
        let sde = Time::from_secs(1);
        symlink(&mut t, "/etc/escape", "../../../../usr", sde).unwrap();
        write_file(&mut t, "/etc/escape/x", b"y".to_vec(), 0o644, 0, 0, sde).unwrap();
        assert_eq!(read(&t, "/usr/x").unwrap(), b"y");
        assert!(remove(&mut t, "/etc/alternatives/awk"));
        assert!(!remove(&mut t, "/etc/alternatives/awk"));
        assert!(write_file(&mut t, "/etc/init.d/x/y", vec![], 0o644, 0, 0, sde).is_err());
    }
}
