//! Layout stability (issue 18 item 4): when one package's files change, every other file keeps
//! its inode number and its blocks, as debugfs reads them back from the two images, and the
//! 512 KiB blocks that differ (what a child snapshot uploads) stay a small share of the disk.

mod common;

use common::ext4_check::{build, fsck, opts, EPOCH};
use kiln::fs::ext4::Placement;
use kiln::tree::{Content, Kind, Meta, Node, NodeId, Tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const PACKAGES: usize = 60;

/// A small deterministic generator (no crate, no seed from the clock).
fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

/// The files of package `p` at `version`: path → content. Version 2 has other contents (and
/// sizes), and renames its library, as a Debian package update does.
fn package(p: usize, version: u32) -> BTreeMap<String, Vec<u8>> {
    let mut x = (p as u64 + 1) * 7919 + u64::from(version) * 104_729;
    let mut size = |max: u64| -> usize { (1 + lcg(&mut x) % max) as usize };
    let fill = |n: usize, salt: u32| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32 ^ (p as u32 * 31 + salt * 131 + version * 7)) as u8)
            .collect()
    };
    let mut files = BTreeMap::new();
    let name = format!("pkg{p:02}");
    files.insert(format!("usr/bin/{name}"), fill(size(200_000), 1));
    files.insert(format!("usr/bin/{name}-helper"), fill(size(30_000), 2));
    files.insert(
        format!("usr/lib/x86_64-linux-gnu/lib{name}.so.{version}"),
        fill(size(600_000), 3),
    );
    files.insert(
        format!("usr/share/doc/{name}/copyright"),
        fill(size(6_000), 4),
    );
    files.insert(
        format!("usr/share/doc/{name}/changelog.Debian.gz"),
        fill(size(20_000), 5),
    );
    files.insert(
        format!("usr/share/man/man1/{name}.1.gz"),
        fill(size(4_000), 6),
    );
    for i in 0..4 {
        files.insert(
            format!("usr/share/{name}/data{i}"),
            fill(size(100_000), 10 + i),
        );
    }
    files.insert(
        format!("var/lib/dpkg/info/{name}.list"),
        files
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
    );
    files
}

fn meta(mode: u32) -> Meta {
    Meta::new(mode, 0, 0, EPOCH)
}

fn dir(t: &mut Tree, parent: NodeId, name: &[u8]) -> NodeId {
    match t.child(parent, name) {
        Some(id) => id,
        None => t.add(parent, name, Node::dir(meta(0o755))),
    }
}

fn tree(files: &BTreeMap<String, Vec<u8>>) -> Tree {
    let mut t = Tree::new(meta(0o755));
    for (path, data) in files {
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap();
        let mut d = Tree::ROOT;
        for p in parts {
            d = dir(&mut t, d, p.as_bytes());
        }
        t.add(
            d,
            name.as_bytes(),
            Node {
                meta: meta(0o644),
                kind: Kind::File(Content::bytes(data.clone())),
            },
        );
    }
    t
}

/// All packages at version 1, except `updated` at version 2; /var/lib/dpkg/status names them.
fn system(updated: Option<usize>) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut status = String::new();
    for p in 0..PACKAGES {
        let v = if Some(p) == updated { 2 } else { 1 };
        files.extend(package(p, v));
        status.push_str(&format!("Package: pkg{p:02}\nVersion: {v}\n\n"));
    }
    files.insert("var/lib/dpkg/status".into(), status.into_bytes());
    files
}

/// debugfs's `stat` of each path: the inode number and the EXTENTS lines (the blocks).
fn placements(img: &Path, paths: &[&String]) -> BTreeMap<String, (String, String)> {
    let cmds: String = paths.iter().map(|p| format!("stat \"/{p}\"\n")).collect();
    let cmdfile = img.with_extension("cmds");
    std::fs::write(&cmdfile, cmds).unwrap();
    let out = Command::new("debugfs")
        .arg("-f")
        .arg(&cmdfile)
        .arg(img)
        .output()
        .expect("debugfs runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = BTreeMap::new();
    // With -f, debugfs echoes each request as "debugfs: stat ..." before its answer.
    for part in text.split("debugfs: stat \"/").skip(1) {
        let (path, rest) = part.split_once("\"\n").unwrap();
        let ino = rest
            .split("Inode: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no inode for {path}: {rest}"))
            .to_owned();
        let extents = rest
            .split("EXTENTS:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no extents for {path}: {rest}"))
            .trim()
            .to_owned();
        found.insert(path.to_owned(), (ino, extents));
    }
    assert_eq!(found.len(), paths.len(), "debugfs answered for every path");
    found
}

/// The 512 KiB blocks (EBS's) of `new` that differ from `old`'s, and `new`'s non-zero ones.
fn changed_ebs_blocks(old: &Path, new: &Path) -> (usize, usize) {
    let (a, b) = (std::fs::read(old).unwrap(), std::fs::read(new).unwrap());
    let mut changed = 0;
    let mut nonzero = 0;
    for (x, y) in a.chunks(512 << 10).zip(b.chunks(512 << 10)) {
        let y_zero = y.iter().all(|&c| c == 0);
        nonzero += usize::from(!y_zero);
        if x != y {
            changed += 1;
        }
    }
    (changed, nonzero)
}

struct Update {
    unchanged: usize,
    /// Unchanged files with another inode number.
    renumbered: Vec<String>,
    /// Unchanged files on other blocks.
    moved: Vec<String>,
    /// 512 KiB blocks that differ, and the new image's non-zero ones.
    changed: usize,
    nonzero: usize,
}

/// Builds both versions with `placement` and compares where the unchanged files are.
fn update(placement: Placement, dir: &Path) -> Update {
    let (v1, v2) = (system(None), system(Some(7)));
    let mut o = opts(256 << 20);
    o.placement = placement;
    let name = format!("{placement:?}");
    let (a, _) = build(dir, &format!("{name}-v1.img"), &tree(&v1), &o);
    let (b, _) = build(dir, &format!("{name}-v2.img"), &tree(&v2), &o);
    fsck(&a);
    fsck(&b);
    let unchanged: Vec<&String> = v1
        .iter()
        .filter(|(p, d)| v2.get(*p) == Some(d))
        .map(|(p, _)| p)
        .collect();
    assert!(unchanged.len() > PACKAGES * 10, "most files are unchanged");
    let (pa, pb) = (placements(&a, &unchanged), placements(&b, &unchanged));
    let differ = |f: fn(&(String, String)) -> &String| -> Vec<String> {
        unchanged
            .iter()
            .filter(|p| f(&pa[**p]) != f(&pb[**p]))
            .map(|p| p.to_string())
            .collect()
    };
    let (changed, nonzero) = changed_ebs_blocks(&a, &b);
    Update {
        unchanged: unchanged.len(),
        renumbered: differ(|p| &p.0),
        moved: differ(|p| &p.1),
        changed,
        nonzero,
    }
}

#[test]
fn an_update_of_one_package_leaves_every_other_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let u = update(Placement::Stable, dir.path());
    eprintln!(
        "stable: {} of {} unchanged files renumbered, {} moved; {} of {} blocks changed",
        u.renumbered.len(),
        u.unchanged,
        u.moved.len(),
        u.changed,
        u.nonzero
    );
    // Inode numbers come from the paths: none of the other files is renumbered.
    assert!(u.renumbered.is_empty(), "renumbered: {:?}", u.renumbered);
    // Only files that share a chunk (512 KiB-2 MiB of the walk) with a changed one, after it,
    // move: a few of the 600 unchanged ones.
    assert!(u.moved.len() * 10 <= u.unchanged, "moved: {:?}", u.moved);
    // A byte count, not a timing: the same trees give the same images. One package of 60
    // changed; its files, the dpkg status, their directories, bitmaps and inode tables.
    assert!(
        u.changed * 100 <= u.nonzero * 15,
        "{} of {} non-zero 512 KiB blocks changed",
        u.changed,
        u.nonzero
    );
    // The oracle sees moves where there are some: the packed layout moves most files.
    let p = update(Placement::Packed, dir.path());
    assert!(
        p.moved.len() * 2 > p.unchanged,
        "packed moved {}",
        p.moved.len()
    );
    assert!(p.changed > u.changed * 2);
}

#[test]
fn stable_placement_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let files = system(Some(3));
    let o = opts(256 << 20);
    let (a, _) = build(dir.path(), "a.img", &tree(&files), &o);
    let (b, _) = build(dir.path(), "b.img", &tree(&files), &o);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}
