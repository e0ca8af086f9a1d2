//! Path resolution inside a [`Tree`], with chroot semantics.
//!
//! Paths are absolute byte strings. Empty and `.` components are dropped; a `..` written in a
//! path is refused (recipes and archives must not climb). Intermediate symlinks ARE followed, an
//! absolute target starting again at the tree's root (so merged-usr `/bin -> usr/bin` makes
//! `/bin/sh` land in `/usr/bin/sh`); `..` inside a symlink target is followed physically, and
//! climbing above the root through one is refused rather than clamped. At most
//! [`MAX_SYMLINK_HOPS`] symlinks are followed per lookup.

use std::collections::VecDeque;

use super::node::{Kind, Meta, Node, NodeId, Tree};

/// The same limit as Linux's `MAXSYMLINKS`.
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Why a path could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The path itself contains `..`.
    DotDot,
    /// The path names the root directory where a name was needed.
    Root,
    /// Following the symlink at `link` would leave the tree.
    Escape { link: String },
    /// More than [`MAX_SYMLINK_HOPS`] symlinks.
    Loop { link: String },
    /// `at` exists but is neither a directory nor a symlink to one.
    NotDir { at: String },
    /// `at` does not exist (only when not creating missing directories).
    NotFound { at: String },
}

impl ResolveError {
    /// (what is wrong, what to change), for a [`super::TreeError`].
    pub fn describe(&self) -> (String, String) {
        match self {
            ResolveError::DotDot => (
                "the path contains a \"..\" component".into(),
                "write the path without \"..\"".into(),
            ),
            ResolveError::Root => (
                "the path names the root directory".into(),
                "name a path below \"/\"".into(),
            ),
            ResolveError::Escape { link } => (
                format!("following the symlink {link} would leave the image's tree"),
                "make the symlink's target stay inside the tree".into(),
            ),
            ResolveError::Loop { link } => (
                format!("more than {MAX_SYMLINK_HOPS} symlinks are followed at {link} (a loop?)"),
                "break the symlink loop".into(),
            ),
            ResolveError::NotDir { at } => (
                format!("{at} is not a directory"),
                format!("make {at} a directory first"),
            ),
            ResolveError::NotFound { at } => (
                format!("{at} does not exist"),
                format!("create {at} before this entry"),
            ),
        }
    }
}

/// Components of `p`, dropping empty and `.` ones; `..` is refused.
pub fn components(p: &[u8]) -> Result<Vec<Vec<u8>>, ResolveError> {
    let mut out = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(ResolveError::DotDot),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Display form of a path given by components.
pub fn show(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// What a lookup should do with the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// Stop before it: the result is its parent directory and its name (the name is not
    /// followed, so writing there replaces a symlink rather than writing through it).
    Parent,
    /// Resolve it too, following a symlink; the result must be a directory.
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Parent(NodeId, Vec<u8>),
    Dir(NodeId),
}

/// Resolves `comps` (from [`components`]) from the root. Missing intermediate directories are
/// created with `create` when it is given, else reported as [`ResolveError::NotFound`].
pub fn resolve(
    tree: &mut Tree,
    comps: &[Vec<u8>],
    last: Last,
    create: Option<&Meta>,
) -> Result<Resolved, ResolveError> {
    if comps.iter().any(|c| c == b"..") {
        return Err(ResolveError::DotDot);
    }
    if comps.is_empty() && last == Last::Parent {
        return Err(ResolveError::Root);
    }
    let mut pending: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
    // The directories walked so far (for `..`) and their names (for messages).
    let mut stack = vec![Tree::ROOT];
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    let mut via: Option<String> = None;
    while let Some(c) = pending.pop_front() {
        if c.is_empty() || c == b"." {
            continue;
        }
        if c == b".." {
            if stack.len() == 1 {
                return Err(ResolveError::Escape {
                    link: via.unwrap_or_else(|| "/".into()),
                });
            }
            stack.pop();
            names.pop();
            continue;
        }
        if pending.is_empty() && last == Last::Parent {
            return Ok(Resolved::Parent(*stack.last().unwrap_or(&Tree::ROOT), c));
        }
        let cur = *stack.last().unwrap_or(&Tree::ROOT);
        let mut here = names.clone();
        here.push(c.clone());
        match tree.child(cur, &c) {
            None => match create {
                Some(meta) => {
                    let id = tree.add(cur, &c, Node::dir(meta.clone()));
                    stack.push(id);
                    names.push(c);
                }
                None => return Err(ResolveError::NotFound { at: show(&here) }),
            },
            Some(id) => match &tree.node(id).kind {
                Kind::Dir(_) => {
                    stack.push(id);
                    names.push(c);
                }
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(ResolveError::Loop { link: show(&here) });
                    }
                    via = Some(show(&here));
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                        names.clear();
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        pending.push_front(t.to_vec());
                    }
                }
                _ => return Err(ResolveError::NotDir { at: show(&here) }),
            },
        }
    }
    Ok(Resolved::Dir(*stack.last().unwrap_or(&Tree::ROOT)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, Time};

    fn meta() -> Meta {
        Meta::new(0o755, 0, 0, Time::from_secs(1))
    }

    fn link(t: &mut Tree, parent: NodeId, name: &str, target: &str) {
        let n = Node {
            meta: Meta::new(0o777, 0, 0, Time::default()),
            kind: Kind::Symlink(target.into()),
        };
        t.add(parent, name.as_bytes(), n);
    }

    fn comps(p: &str) -> Vec<Vec<u8>> {
        components(p.as_bytes()).unwrap()
    }

    #[test]
    fn merged_usr_and_escapes() {
        let mut t = Tree::new(meta());
        let usr = t.add(Tree::ROOT, b"usr", Node::dir(meta()));
        let bin = t.add(usr, b"bin", Node::dir(meta()));
        link(&mut t, Tree::ROOT, "bin", "usr/bin");
        link(&mut t, Tree::ROOT, "abs", "/usr/./bin/");
        link(&mut t, usr, "up", "../..");
        link(&mut t, Tree::ROOT, "loop", "loop");
        let m = meta();
        let r = resolve(&mut t, &comps("/bin/sh"), Last::Parent, Some(&m)).unwrap();
        assert_eq!(r, Resolved::Parent(bin, b"sh".to_vec()));
        assert_eq!(
            resolve(&mut t, &comps("/abs"), Last::Dir, None).unwrap(),
            Resolved::Dir(bin)
        );
        // The last component is not followed in Parent mode.
        let r = resolve(&mut t, &comps("/bin"), Last::Parent, None).unwrap();
        assert_eq!(r, Resolved::Parent(Tree::ROOT, b"bin".to_vec()));
        let e = resolve(&mut t, &comps("/usr/up/x"), Last::Parent, Some(&m)).unwrap_err();
        assert_eq!(
            e,
            ResolveError::Escape {
                link: "/usr/up".into()
            }
        );
        let e = resolve(&mut t, &comps("/loop/x"), Last::Parent, Some(&m)).unwrap_err();
        assert_eq!(
            e,
            ResolveError::Loop {
                link: "/loop".into()
            }
        );
        assert_eq!(components(b"/a/../b"), Err(ResolveError::DotDot));
        let f = Node {
            meta: meta(),
            kind: Kind::File(Content::bytes("")),
        };
        t.add(Tree::ROOT, b"f", f);
        let e = resolve(&mut t, &comps("/f/x"), Last::Parent, Some(&m)).unwrap_err();
        assert_eq!(e, ResolveError::NotDir { at: "/f".into() });
        // Missing parents are created.
        let r = resolve(&mut t, &comps("/a/b/c"), Last::Parent, Some(&m)).unwrap();
        let Resolved::Parent(b, _) = r else { panic!() };
        assert_eq!(t.child(t.child(Tree::ROOT, b"a").unwrap(), b"b"), Some(b));
    }
}
