//! Finding a kernel's modules as depmod does: every `*.ko`, `*.ko.xz` and `*.ko.zst` under
//! the module directory and the `external` directories, one per module name (the `search` and
//! `override` rules pick between namesakes), then put in depmod's order.

use std::collections::{BTreeMap, BTreeSet};

use crate::boot::tree_io;
use crate::tree::{Kind, NodeId, Tree};

use super::config::{Config, Search};
use super::hash;

/// The endings bookworm's kmod 30 takes for modules (built with xz and zstd, without zlib).
const EXTENSIONS: [&[u8]; 3] = [b".ko", b".ko.xz", b".ko.zst"];

/// One module file.
#[derive(Debug, Clone)]
pub struct Found {
    /// The file, e.g. `/lib/modules/6.1.0-56-cloud-amd64/kernel/fs/fat/vfat.ko`.
    pub path: Vec<u8>,
    /// Its node in the tree (a symlink already followed).
    pub node: NodeId,
    /// `vfat`: the file name up to its first dot, `-` made `_`.
    pub name: Vec<u8>,
    /// Bytes of `path` before the file name (with the slash).
    base_len: usize,
}

impl Found {
    /// The path relative to the module directory `dir`, or `None` (an external module).
    pub fn relpath(&self, dir: &[u8]) -> Option<&[u8]> {
        let rest = self.path.strip_prefix(dir)?;
        rest.strip_prefix(b"/")
    }

    /// The relative path ending in `.ko` as `modules.order` names it (kmod cuts the relative
    /// path after the name's length plus three bytes).
    pub fn uncompressed_relpath(&self, dir: &[u8]) -> Option<Vec<u8>> {
        let rel = self.relpath(dir)?;
        let base = self.base_len - (self.path.len() - rel.len());
        let end = (base + self.name.len() + 3).min(rel.len());
        Some(rel[..end].to_vec())
    }
}

/// `path_to_modname`: the base name up to its first dot, dashes made underscores.
pub fn module_name(file_name: &[u8]) -> Vec<u8> {
    file_name
        .iter()
        .take_while(|&&b| b != b'.')
        .map(|&b| if b == b'-' { b'_' } else { b })
        .collect()
}

/// What the walk passed over, with the reason (a symlink loop, for one).
pub type Skipped = Vec<(String, String)>;

/// Every module of the kernel whose directory is `dir` (named in the image as `dir_name`,
/// `/lib/modules/<version>`), one per name.
pub fn find(
    tree: &mut Tree,
    dir: NodeId,
    dir_name: &[u8],
    cfg: &Config,
    skipped: &mut Skipped,
) -> Vec<Found> {
    let mut by_name: BTreeMap<Vec<u8>, Found> = BTreeMap::new();
    let mut roots = vec![(dir, dir_name.to_vec())];
    for ext in &cfg.externals {
        let path = String::from_utf8_lossy(ext).into_owned();
        if let Some(id) = tree_io::lookup(tree, &path).filter(|id| tree.node(*id).is_dir()) {
            roots.push((id, ext.clone()));
        }
    }
    for (root, root_name) in roots {
        let mut on_path = BTreeSet::from([root]);
        walk(
            tree,
            root,
            &root_name,
            dir_name,
            cfg,
            &mut on_path,
            &mut by_name,
            skipped,
        );
    }
    by_name.into_values().collect()
}

/// depmod reads directories in `readdir` order; kiln walks them sorted by name, which only
/// matters when two files give one module name and the `search` rules rank them the same.
#[allow(clippy::too_many_arguments)]
fn walk(
    tree: &mut Tree,
    dir: NodeId,
    path: &[u8],
    dir_name: &[u8],
    cfg: &Config,
    on_path: &mut BTreeSet<NodeId>,
    by_name: &mut BTreeMap<Vec<u8>, Found>,
    skipped: &mut Skipped,
) {
    let Some(children) = tree.children(dir) else {
        return;
    };
    let children: Vec<(Vec<u8>, NodeId)> = children.iter().map(|(n, &i)| (n.clone(), i)).collect();
    for (name, mut id) in children {
        if name == b"build" || name == b"source" || cfg.excludes.contains(&name) {
            continue;
        }
        let mut full = path.to_vec();
        full.push(b'/');
        full.extend_from_slice(&name);
        if let Kind::Symlink(_) = tree.node(id).kind {
            match tree_io::lookup(tree, &String::from_utf8_lossy(&full)) {
                Some(t) => id = t,
                None => continue,
            }
        }
        match &tree.node(id).kind {
            Kind::Dir(_) => {
                if !on_path.insert(id) {
                    skipped.push((
                        String::from_utf8_lossy(&full).into_owned(),
                        "a symlink back to a directory above it".into(),
                    ));
                    continue;
                }
                walk(tree, id, &full, dir_name, cfg, on_path, by_name, skipped);
                on_path.remove(&id);
            }
            Kind::File(_) => {
                let is_module = EXTENSIONS
                    .iter()
                    .any(|e| name.len() > e.len() && name.ends_with(e));
                if !is_module {
                    continue;
                }
                let found = Found {
                    name: module_name(&name),
                    base_len: path.len() + 1,
                    path: full,
                    node: id,
                };
                if found.name.is_empty() {
                    continue;
                }
                match by_name.get(&found.name) {
                    Some(old) if keeps(cfg, dir_name, old, &found) => {}
                    _ => {
                        by_name.insert(found.name.clone(), found);
                    }
                }
            }
            _ => {}
        }
    }
}

/// depmod's `depmod_module_is_higher_priority`: whether the module already found beats the
/// new one. Overrides first, then the position in the `search` list (later in kmod's list is
/// stronger; modules nowhere in it rank as `built-in`, or lowest when that is not listed); on
/// a tie the new one is passed over. The relative paths compared run to the end of the module
/// name, without the extension, as kmod's do.
fn keeps(cfg: &Config, dir: &[u8], old: &Found, new: &Found) -> bool {
    let stem = |f: &Found| -> Option<Vec<u8>> {
        let rel = f.path.strip_prefix(dir)?;
        // kmod checks only the prefix here, and skips the byte after it.
        let rel = rel.get(1..)?;
        let base = f.base_len - (f.path.len() - rel.len());
        Some(rel[..(base + f.name.len()).min(rel.len())].to_vec())
    };
    let (rel_new, rel_old) = (stem(new), stem(old));
    let abs = |f: &Found| f.path[..(f.base_len + f.name.len()).min(f.path.len())].to_vec();
    let (abs_new, abs_old) = (abs(new), abs(old));
    for ov in &cfg.overrides {
        if rel_new.as_deref() == Some(&ov[..]) {
            return false;
        }
        if rel_old.as_deref() == Some(&ov[..]) {
            return true;
        }
    }
    let under = |p: &[u8], prefix: &[u8]| {
        p.len() > prefix.len() && p[prefix.len()] == b'/' && p.starts_with(prefix)
    };
    let (mut builtin, mut old_prio, mut new_prio) = (-1i64, -1i64, -1i64);
    let mut i = 0i64;
    for s in &cfg.searches {
        match s {
            Search::BuiltIn => builtin = i,
            Search::External => {
                for ext in &cfg.externals {
                    if under(&abs_new, ext) {
                        new_prio = i;
                    }
                    if under(&abs_old, ext) {
                        old_prio = i;
                    }
                    i += 1;
                }
            }
            Search::Path(p) => {
                if rel_new.as_deref().is_some_and(|r| under(r, p)) {
                    new_prio = i;
                } else if rel_old.as_deref().is_some_and(|r| under(r, p)) {
                    old_prio = i;
                }
            }
        }
        i += 1;
    }
    if new_prio < 0 {
        new_prio = builtin;
    }
    if old_prio < 0 {
        old_prio = builtin;
    }
    new_prio <= old_prio
}

/// `modules.order` as depmod reads it: each line a relative `.ko` path. `None` when depmod
/// would not use it: a line without its newline (the file cut short) or longer than its
/// 4095-byte line buffer.
pub fn parse_order(text: &[u8]) -> Option<BTreeMap<Vec<u8>, i64>> {
    let lines = fgets_lines(text);
    if lines.iter().any(|l| l.last() != Some(&b'\n')) {
        return None;
    }
    let total = lines.len() as i64 + 1;
    let mut at = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        // A path listed twice takes its last place.
        at.insert(l[..l.len() - 1].to_vec(), i as i64 + 1 - total);
    }
    Some(at)
}

/// C `fgets` into a `PATH_MAX` buffer: pieces ending at a newline or after 4095 bytes.
pub fn fgets_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .take(4095)
            .position(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(rest.len().min(4095));
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// depmod's module order: kmod's hash order of the names, then (when `modules.order` is
/// usable) a stable sort putting the listed modules first, in the file's order.
pub fn sort(found: &mut [Found], dir: &[u8], order: Option<&BTreeMap<Vec<u8>, i64>>) {
    found.sort_by(|a, b| {
        hash::order_key(&a.name, hash::MODULE_BUCKETS)
            .cmp(&hash::order_key(&b.name, hash::MODULE_BUCKETS))
    });
    if let Some(order) = order {
        // Unlisted modules all keep depmod's initial index, 1 (glibc's qsort is a merge
        // sort for arrays this size, so they stay in hash order).
        found.sort_by_key(|f| {
            f.uncompressed_relpath(dir)
                .and_then(|p| order.get(&p).copied())
                .unwrap_or(1)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(path: &str) -> Found {
        let base_len = path.rfind('/').unwrap() + 1;
        Found {
            path: path.as_bytes().to_vec(),
            node: NodeId(0),
            name: module_name(&path.as_bytes()[base_len..]),
            base_len,
        }
    }

    const DIR: &[u8] = b"/lib/modules/6.1";

    #[test]
    fn names_and_relative_paths() {
        let f = found("/lib/modules/6.1/kernel/drivers/net/virtio-net.ko.xz");
        assert_eq!(f.name, b"virtio_net");
        assert_eq!(
            f.relpath(DIR).unwrap(),
            b"kernel/drivers/net/virtio-net.ko.xz"
        );
        assert_eq!(
            f.uncompressed_relpath(DIR).unwrap(),
            b"kernel/drivers/net/virtio-net.ko"
        );
        // kmod's cut: name length + 3 bytes, whatever they are.
        let odd = found("/lib/modules/6.1/extra/foo.bar.ko");
        assert_eq!(odd.name, b"foo");
        assert_eq!(odd.uncompressed_relpath(DIR).unwrap(), b"extra/foo.ba");
        assert!(found("/opt/ext/x.ko").relpath(DIR).is_none());
    }

    #[test]
    fn updates_beat_the_kernel_tree_by_default() {
        let mut cfg = Config::default();
        cfg.searches.push(Search::Path(b"updates".to_vec()));
        let k = found("/lib/modules/6.1/kernel/fs/foo.ko");
        let u = found("/lib/modules/6.1/updates/foo.ko");
        assert!(!keeps(&cfg, DIR, &k, &u));
        assert!(keeps(&cfg, DIR, &u, &k));
        // Two namesakes both in kernel/: the first found stays.
        let k2 = found("/lib/modules/6.1/kernel/other/foo.ko");
        assert!(keeps(&cfg, DIR, &k, &k2));
    }

    #[test]
    fn search_order_and_overrides() {
        let mut cfg = Config::default();
        cfg.parse(
            b"search extra built-in updates\noverride foo * weak\n",
            "x.conf",
            "6.1",
        )
        .unwrap();
        let k = found("/lib/modules/6.1/kernel/foo.ko");
        let e = found("/lib/modules/6.1/extra/foo.ko");
        let u = found("/lib/modules/6.1/updates/foo.ko");
        let w = found("/lib/modules/6.1/weak/foo.ko");
        assert!(keeps(&cfg, DIR, &e, &k));
        assert!(!keeps(&cfg, DIR, &k, &e));
        assert!(keeps(&cfg, DIR, &k, &u));
        assert!(!keeps(&cfg, DIR, &e, &w));
        assert!(keeps(&cfg, DIR, &w, &e));
    }

    #[test]
    fn order_file_and_hash_order() {
        let o = parse_order(b"kernel/b.ko\nkernel/a.ko\nkernel/b.ko\n").unwrap();
        assert_eq!(o[&b"kernel/a.ko".to_vec()], -2);
        assert_eq!(o[&b"kernel/b.ko".to_vec()], -1);
        assert!(parse_order(b"kernel/a.ko\nkernel/b.ko").is_none());
        assert_eq!(parse_order(b"").unwrap().len(), 0);
        let mut v: Vec<Found> = ["z", "a", "b", "c", "q"]
            .iter()
            .map(|n| found(&format!("/lib/modules/6.1/kernel/{n}.ko")))
            .collect();
        sort(&mut v, DIR, None);
        let hashed: Vec<Vec<u8>> = v.iter().map(|f| f.name.clone()).collect();
        sort(&mut v, DIR, Some(&o));
        let names: Vec<&[u8]> = v.iter().map(|f| &f.name[..]).collect();
        assert_eq!(&names[..2], [b"a", b"b"]);
        // The rest keep the hash order.
        let rest: Vec<Vec<u8>> = hashed
            .into_iter()
            .filter(|n| n != b"a" && n != b"b")
            .collect();
        assert_eq!(
            names[2..],
            rest.iter().map(|n| &n[..]).collect::<Vec<_>>()[..]
        );
    }
}
