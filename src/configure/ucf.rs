//! Configuration files that postinst scripts install from a template: ucf(1) and ucfr(1)
//! (ucf 3.0043), and the ownership rules of dpkg-statoverride(1).
//!
//! On a first install `ucf NEW DEST` copies NEW to DEST as `cp -p` does, records its md5sum in
//! `/var/lib/ucf/hashfile` (rotating the old file to `hashfile.0`, ...), and keeps a copy under
//! `/var/lib/ucf/cache/` (always with `--three-way`, else for files under 25600 bytes); `ucfr
//! PKG DEST` records `PKG \t DEST` in `/var/lib/ucf/registry`.

use md5::{Digest, Md5};

use super::fsops;
use crate::tree::{Kind, Meta, Time, Tree};

const STATE: &str = "/var/lib/ucf";

/// `cp -p SRC DEST`: the same bytes, mode and owner.
pub fn copy_preserving(tree: &mut Tree, src: &str, dest: &str, sde: Time) -> Result<(), String> {
    let id = fsops::lookup(tree, src, true).ok_or_else(|| format!("{src} does not exist"))?;
    let node = tree.node(id).clone();
    if !matches!(node.kind, Kind::File(_)) {
        return Err(format!("{src} is not a regular file"));
    }
    let mut node = node;
    node.meta.mtime = node.meta.mtime.clamp_to(sde);
    fsops::put(tree, dest, node, sde)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// savelog-style rotation as ucf does it: NAME.6 → NAME.7, ..., NAME → NAME.0.
fn rotate(tree: &mut Tree, name: &str, sde: Time) -> Result<(), String> {
    for i in (0..=6).rev() {
        let from = format!("{STATE}/{name}.{i}");
        if fsops::lookup(tree, &from, false).is_some() {
            copy_preserving(tree, &from, &format!("{STATE}/{name}.{}", i + 1), sde)?;
        }
    }
    let cur = format!("{STATE}/{name}");
    if fsops::lookup(tree, &cur, false).is_some() {
        copy_preserving(tree, &cur, &format!("{STATE}/{name}.0"), sde)?;
    }
    Ok(())
}

/// The lines of a state file without the ones ending in whitespace + `dest`, plus `line`.
fn replace_line(tree: &Tree, path: &str, dest: &str, line: &str) -> String {
    let mut out = String::new();
    for l in fsops::read_text(tree, path).unwrap_or_default().lines() {
        let ends = l
            .strip_suffix(dest)
            .is_some_and(|p| p.ends_with([' ', '\t']));
        if !ends {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str(line);
    out.push('\n');
    out
}

fn write_state(tree: &mut Tree, path: &str, text: String, sde: Time) -> Result<(), String> {
    // Kept with the mode the file has (ucf writes through a temp file and `mv -f`).
    let mode = fsops::lookup(tree, path, true).map_or(0o644, |id| tree.node(id).meta.mode);
    fsops::write_file(tree, path, text.into_bytes(), mode, 0, 0, sde).map_err(|e| e.to_string())
}

/// Runs `ucf ARGS...`.
pub fn ucf(tree: &mut Tree, args: &[&str], sde: Time) -> Result<(), String> {
    let mut three_way = false;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--three-way" | "-3" => three_way = true,
            "--debconf-ok" | "-v" | "--verbose" => {}
            "--sum-file" | "--src-dir" | "-s" | "--debconf-template" => {
                it.next();
            }
            "--purge" | "-p" | "-n" | "--no-action" | "--state-dir" => {
                return Err(format!("ucf {a} is not handled"))
            }
            a if a.starts_with('-') => return Err(format!("ucf option {a} is not handled")),
            a => files.push(a),
        }
    }
    let [new, dest] = files[..] else {
        return Err("ucf needs NEW and DEST".into());
    };
    let data = fsops::read(tree, new).ok_or_else(|| format!("{new} does not exist"))?;
    if fsops::lookup(tree, dest, false).is_some() {
        // An existing file would make ucf compare and perhaps ask; on a first install there is
        // none.
        if fsops::read(tree, dest).as_deref() != Some(data.as_slice()) {
            return Err(format!("{dest} exists and differs from {new}"));
        }
    } else {
        copy_preserving(tree, new, dest, sde)?;
    }
    let dir = Meta::new(0o755, 0, 0, sde);
    fsops::mkdir_p(tree, &format!("{STATE}/cache"), &dir).map_err(|e| e.to_string())?;
    let sum = crate::util::hex(&Md5::digest(&data));
    let hashfile = format!("{STATE}/hashfile");
    let text = replace_line(tree, &hashfile, dest, &format!("{sum}  {dest}"));
    if fsops::lookup(tree, &hashfile, false).is_some() {
        rotate(tree, "hashfile", sde)?;
    }
    write_state(tree, &hashfile, text, sde)?;
    if three_way || data.len() < 25600 {
        let cached = dest.replace('/', ":");
        copy_preserving(tree, new, &format!("{STATE}/cache/{cached}"), sde)?;
    }
    Ok(())
}

/// Runs `ucfr PKG DEST`.
pub fn ucfr(tree: &mut Tree, args: &[&str], sde: Time) -> Result<(), String> {
    let files: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with('-'))
        .collect();
    if args
        .iter()
        .any(|a| a.starts_with('-') && !matches!(*a, "-v" | "--verbose" | "-f" | "--force"))
    {
        return Err("ucfr options other than --verbose and --force are not handled".into());
    }
    let [pkg, dest] = files[..] else {
        return Err("ucfr needs PKG and DEST".into());
    };
    let registry = format!("{STATE}/registry");
    let line = format!("{pkg} \t {dest}");
    let current = fsops::read_text(tree, &registry).unwrap_or_default();
    if current.lines().any(|l| l == line) {
        return Ok(());
    }
    if let Some(other) = current.lines().find(|l| {
        l.strip_suffix(dest)
            .is_some_and(|p| p.ends_with([' ', '\t']))
    }) {
        return Err(format!("{dest} is registered to another package: {other}"));
    }
    let text = replace_line(tree, &registry, dest, &line);
    if fsops::lookup(tree, &registry, false).is_some() {
        rotate(tree, "registry", sde)?;
    }
    write_state(tree, &registry, text, sde)
}

/// One `/var/lib/dpkg/statoverride` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub user: String,
    pub group: String,
    pub mode: String,
    pub path: String,
}

pub const STATOVERRIDE: &str = "/var/lib/dpkg/statoverride";

pub fn read_overrides(tree: &Tree) -> Vec<Override> {
    fsops::read_text(tree, STATOVERRIDE)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Override {
                user: w.next()?.into(),
                group: w.next()?.into(),
                mode: w.next()?.into(),
                path: w.next()?.into(),
            })
        })
        .collect()
}

/// Runs `dpkg-statoverride ARGS...`: (status, stdout). `ids` resolves a user or group name
/// (`#N` is a number) to its id.
pub fn statoverride(
    tree: &mut Tree,
    args: &[&str],
    ids: &dyn Fn(&str, bool) -> Option<u32>,
    sde: Time,
) -> Result<(i32, String), String> {
    let mut update = false;
    let mut rest = Vec::new();
    for a in args {
        match *a {
            "--update" => update = true,
            "--quiet" | "--force" | "--force-all" | "--force-statoverride-add" => {}
            a => rest.push(a),
        }
    }
    let mut all = read_overrides(tree);
    match rest[..] {
        ["--list"] => {
            let out: String = all
                .iter()
                .map(|o| format!("{} {} {} {}\n", o.user, o.group, o.mode, o.path))
                .collect();
            Ok((if all.is_empty() { 1 } else { 0 }, out))
        }
        ["--list", pat] => {
            let out: String = all
                .iter()
                .filter(|o| super::script::glob_match(pat, &o.path))
                .map(|o| format!("{} {} {} {}\n", o.user, o.group, o.mode, o.path))
                .collect();
            Ok((if out.is_empty() { 1 } else { 0 }, out))
        }
        ["--add", user, group, mode, path] => {
            if all.iter().any(|o| o.path == path) {
                return Err(format!("an override for {path} already exists"));
            }
            let uid = ids(user, true).ok_or_else(|| format!("user {user} does not exist"))?;
            let gid = ids(group, false).ok_or_else(|| format!("group {group} does not exist"))?;
            let m =
                u32::from_str_radix(mode, 8).map_err(|_| format!("mode {mode} is not octal"))?;
            all.push(Override {
                user: user.into(),
                group: group.into(),
                mode: mode.into(),
                path: path.into(),
            });
            if update {
                if let Some(id) = fsops::lookup(tree, path, false) {
                    let meta = &mut tree.node_mut(id).meta;
                    meta.uid = uid;
                    meta.gid = gid;
                    meta.mode = m & 0o7777;
                }
            }
            write_overrides(tree, &all, sde)?;
            Ok((0, String::new()))
        }
        ["--remove", path] => {
            let before = all.len();
            all.retain(|o| o.path != path);
            if all.len() != before {
                write_overrides(tree, &all, sde)?;
            }
            Ok((0, String::new()))
        }
        _ => Err("this dpkg-statoverride call is not handled".into()),
    }
}

fn write_overrides(tree: &mut Tree, all: &[Override], sde: Time) -> Result<(), String> {
    let mut v: Vec<&Override> = all.iter().collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    let text: String = v
        .iter()
        .map(|o| format!("{} {} {} {}\n", o.user, o.group, o.mode, o.path))
        .collect();
    fsops::write_file(tree, STATOVERRIDE, text.into_bytes(), 0o644, 0, 0, sde)
        .map_err(|e| e.to_string())
}
