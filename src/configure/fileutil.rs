//! The file commands maintainer scripts use (coreutils' ln, mkdir, cp, mv, rm, rmdir, touch,
//! chmod, chown, chgrp, install, mktemp, cat, readlink), applied to the tree. Each returns an
//! exit status and stdout, or `Err` when a form is not handled (the command is then reported).

use super::fsops::{self, join};
use crate::tree::{Kind, Meta, Node, Time, Tree};

pub type Ids<'a> = &'a dyn Fn(&str, bool) -> Option<u32>;

/// Flags, (option, value) pairs and operands of a command line.
type Split<'a> = (Vec<String>, Vec<(String, String)>, Vec<&'a str>);

/// Short and long flags before the operands (`-sf`, `--force`); stops at `--`.
fn split_flags<'a>(args: &[&'a str], with_value: &[&str]) -> Result<Split<'a>, String> {
    let mut flags = Vec::new();
    let mut values = Vec::new();
    let mut ops = Vec::new();
    let mut i = 0;
    let mut done = false;
    while i < args.len() {
        let a = args[i];
        i += 1;
        if done || !a.starts_with('-') || a == "-" {
            ops.push(a);
            continue;
        }
        if a == "--" {
            done = true;
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((k, v)) => values.push((format!("--{k}"), v.to_owned())),
                None if with_value.contains(&a) => {
                    let v = args.get(i).ok_or_else(|| format!("{a} needs a value"))?;
                    i += 1;
                    values.push((a.to_owned(), (*v).to_owned()));
                }
                None => flags.push(a.to_owned()),
            }
            continue;
        }
        let cs: Vec<char> = a[1..].chars().collect();
        for (k, c) in cs.iter().enumerate() {
            let f = format!("-{c}");
            if with_value.contains(&f.as_str()) {
                let rest: String = cs[k + 1..].iter().collect();
                let v = if rest.is_empty() {
                    let v = args.get(i).ok_or_else(|| format!("{f} needs a value"))?;
                    i += 1;
                    (*v).to_owned()
                } else {
                    rest
                };
                values.push((f, v));
                break;
            }
            flags.push(f);
        }
    }
    Ok((flags, values, ops))
}

fn has(flags: &[String], names: &[&str]) -> bool {
    flags.iter().any(|f| names.contains(&f.as_str()))
}

fn value<'a>(values: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    values
        .iter()
        .rev()
        .find(|(k, _)| names.contains(&k.as_str()))
        .map(|(_, v)| v.as_str())
}

fn kind_of(tree: &Tree, p: &str, follow: bool) -> Option<&'static str> {
    let id = fsops::lookup(tree, p, follow)?;
    Some(match tree.node(id).kind {
        Kind::Dir(_) => "dir",
        Kind::Symlink(_) => "link",
        _ => "file",
    })
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

fn terr(e: super::error::ConfigureError) -> String {
    e.to_string()
}

/// A mode: octal, or symbolic clauses (`u+x,go-w,a=r`, `+X`) applied to `old`.
pub fn parse_mode(spec: &str, old: u32, is_dir: bool) -> Option<u32> {
    if let Ok(m) = u32::from_str_radix(spec, 8) {
        return (m <= 0o7777).then_some(m);
    }
    let mut mode = old & 0o7777;
    for clause in spec.split(',') {
        let who_end = clause.find(['+', '-', '=']).unwrap_or(clause.len());
        let (who, rest) = clause.split_at(who_end);
        let mut mask = 0;
        for c in who.chars() {
            mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return None,
            };
        }
        if who.is_empty() {
            // No who: like `a`, limited by the umask (022).
            mask = 0o7777 & !0o022;
        }
        let mut cs = rest.chars().peekable();
        while let Some(op) = cs.next() {
            if !"+-=".contains(op) {
                return None;
            }
            let mut bits = 0;
            while let Some(&c) = cs.peek() {
                if "+-=".contains(c) {
                    break;
                }
                cs.next();
                bits |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || old & 0o111 != 0 => 0o111,
                    'X' => 0,
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => return None,
                };
            }
            let bits = bits & mask;
            mode = match op {
                '+' => mode | bits,
                '-' => mode & !bits,
                _ => (mode & !(mask & 0o7777)) | bits,
            };
        }
    }
    Some(mode)
}

pub fn ln(tree: &mut Tree, args: &[&str], sde: Time) -> Result<i32, String> {
    let (flags, _, ops) = split_flags(args, &[])?;
    let symbolic = has(&flags, &["-s", "--symbolic"]);
    let force = has(&flags, &["-f", "--force"]);
    let no_deref = has(
        &flags,
        &["-n", "--no-dereference", "-T", "--no-target-directory"],
    );
    let relative = has(&flags, &["-r", "--relative"]);
    if relative {
        return Err("ln -r is not handled".into());
    }
    let (target, link) = match ops[..] {
        [t] => (t, basename(t).to_owned()),
        [t, l] => (t, l.to_owned()),
        _ => return Err("ln with more than two operands is not handled".into()),
    };
    let mut link = link;
    if kind_of(tree, &link, !no_deref) == Some("dir") && ops.len() == 2 {
        link = join(link.trim_end_matches('/'), basename(target));
    }
    if fsops::lookup(tree, &link, false).is_some() {
        if !force {
            return Ok(1);
        }
        fsops::remove(tree, &link);
    }
    if symbolic {
        fsops::symlink(tree, &link, target, sde).map_err(terr)?;
    } else {
        let Some(id) = fsops::lookup(tree, target, false) else {
            return Ok(1);
        };
        if tree.node(id).is_dir() {
            return Ok(1);
        }
        fsops::mkdir_p(tree, fsops::parent(&link), &Meta::new(0o755, 0, 0, sde)).map_err(terr)?;
        let f = fsops::find(tree, &link, false).ok_or("cannot resolve the link's directory")?;
        tree.link(f.dir, &f.name, id);
    }
    Ok(0)
}

pub fn mkdir(tree: &mut Tree, args: &[&str], sde: Time) -> Result<i32, String> {
    let (flags, values, ops) = split_flags(args, &["-m", "--mode"])?;
    let parents = has(&flags, &["-p", "--parents"]);
    let mode = match value(&values, &["-m", "--mode"]) {
        Some(m) => {
            parse_mode(m, 0o777 & !0o022, true).ok_or_else(|| format!("mode {m} is not handled"))?
        }
        None => 0o755,
    };
    let mut rc = 0;
    for d in ops {
        if !parents
            && (fsops::lookup(tree, d, false).is_some() || !fsops::is_dir(tree, fsops::parent(d)))
        {
            rc = 1;
            continue;
        }
        let existed = fsops::is_dir(tree, d);
        let id = fsops::mkdir_p(tree, d, &Meta::new(0o755, 0, 0, sde)).map_err(terr)?;
        if !existed {
            tree.node_mut(id).meta.mode = mode;
        }
    }
    Ok(rc)
}

/// Copies the node at `src` to `dest` (a directory recursively); `preserve`: mode and owner
/// as the source's, else root-owned with the source's mode under the 022 umask (an existing
/// destination file keeps its own).
fn copy_node(
    tree: &mut Tree,
    src: &str,
    dest: &str,
    preserve: bool,
    recursive: bool,
    sde: Time,
) -> Result<(), String> {
    let id = fsops::lookup(tree, src, !preserve).ok_or_else(|| format!("{src} does not exist"))?;
    let node = tree.node(id).clone();
    match &node.kind {
        Kind::Dir(entries) => {
            if !recursive {
                return Err(format!("{src} is a directory"));
            }
            let names: Vec<String> = entries
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let meta = if preserve {
                node.meta.clone()
            } else {
                Meta::new(node.meta.mode & !0o022, 0, 0, sde)
            };
            if !fsops::is_dir(tree, dest) {
                fsops::put(tree, dest, Node::dir(meta), sde).map_err(terr)?;
            }
            for n in names {
                copy_node(
                    tree,
                    &join(src, &n),
                    &join(dest, &n),
                    preserve,
                    recursive,
                    sde,
                )?;
            }
        }
        _ => {
            let mut new = node.clone();
            if !preserve {
                let existing = fsops::lookup(tree, dest, true).map(|d| tree.node(d).meta.clone());
                new.meta = match existing {
                    Some(m) => Meta::new(m.mode, m.uid, m.gid, sde),
                    None => Meta::new(node.meta.mode & !0o022, 0, 0, sde),
                };
            }
            new.meta.mtime = new.meta.mtime.clamp_to(sde);
            // Writing to an existing symlink writes through it, as cp does.
            let target = match fsops::find(tree, dest, true) {
                Some(f) if !preserve => f.path(),
                _ => dest.to_owned(),
            };
            fsops::put(tree, &target, new, sde).map_err(terr)?;
        }
    }
    Ok(())
}

pub fn cp(tree: &mut Tree, args: &[&str], sde: Time) -> Result<i32, String> {
    let (flags, values, ops) = split_flags(args, &["-t", "--target-directory", "-S", "--suffix"])?;
    if value(&values, &["-t", "--target-directory", "-S", "--suffix"]).is_some()
        || has(&flags, &["-b", "-u", "-l", "-s", "--backup"])
    {
        return Err("this cp form is not handled".into());
    }
    let archive = has(&flags, &["-a", "--archive"]);
    let preserve = archive
        || has(&flags, &["-p", "--preserve"])
        || values.iter().any(|(k, _)| k == "--preserve");
    let recursive = archive || has(&flags, &["-r", "-R", "--recursive"]);
    let [srcs @ .., dest] = &ops[..] else {
        return Err("cp needs a source and a destination".into());
    };
    if srcs.is_empty() {
        return Err("cp needs a source and a destination".into());
    }
    let into_dir = fsops::is_dir(tree, dest);
    if srcs.len() > 1 && !into_dir {
        return Ok(1);
    }
    for s in srcs {
        let d = if into_dir {
            join(dest.trim_end_matches('/'), basename(s))
        } else {
            (*dest).to_owned()
        };
        // cp makes no parent directories.
        if fsops::lookup(tree, s, !preserve).is_none() || !fsops::is_dir(tree, fsops::parent(&d)) {
            return Ok(1);
        }
        copy_node(tree, s, &d, preserve, recursive, sde)?;
    }
    Ok(0)
}

pub fn mv(tree: &mut Tree, args: &[&str], sde: Time) -> Result<i32, String> {
    let (_, _, ops) = split_flags(args, &[])?;
    let [src, dest] = ops[..] else {
        return Err("mv with other than two operands is not handled".into());
    };
    let Some(f) = fsops::find(tree, src, false).filter(|f| f.node.is_some()) else {
        return Ok(1);
    };
    let id = f.node.ok_or("no source")?;
    let dest = if fsops::is_dir(tree, dest) {
        join(dest.trim_end_matches('/'), basename(src))
    } else {
        dest.to_owned()
    };
    if !fsops::is_dir(tree, fsops::parent(&dest)) {
        return Ok(1);
    }
    let _ = sde;
    let to = fsops::find(tree, &dest, false).ok_or("cannot resolve the destination")?;
    tree.unlink(f.dir, &f.name);
    tree.link(to.dir, &to.name, id);
    Ok(0)
}

pub fn rm(tree: &mut Tree, args: &[&str]) -> Result<i32, String> {
    let (flags, _, ops) = split_flags(args, &[])?;
    let force = has(&flags, &["-f", "--force"]);
    let recursive = has(&flags, &["-r", "-R", "--recursive"]);
    let mut rc = 0;
    for p in ops {
        match kind_of(tree, p, false) {
            None => {
                if !force {
                    rc = 1;
                }
            }
            Some("dir") if !recursive => rc = 1,
            Some(_) => {
                fsops::remove(tree, p);
            }
        }
    }
    Ok(rc)
}

pub fn rmdir(tree: &mut Tree, args: &[&str]) -> Result<i32, String> {
    let (flags, _, ops) = split_flags(args, &[])?;
    let ignore = has(&flags, &["--ignore-fail-on-non-empty"]);
    if has(&flags, &["-p", "--parents"]) {
        return Err("rmdir -p is not handled".into());
    }
    let mut rc = 0;
    for p in ops {
        let Some(id) = fsops::lookup(tree, p, false) else {
            rc = 1;
            continue;
        };
        match tree.children(id) {
            Some(e) if e.is_empty() => {
                fsops::remove(tree, p);
            }
            Some(_) if ignore => {}
            _ => rc = 1,
        }
    }
    Ok(rc)
}

pub fn touch(tree: &mut Tree, args: &[&str], sde: Time) -> Result<i32, String> {
    let (flags, values, ops) = split_flags(args, &["-d", "-t", "-r", "--date", "--reference"])?;
    let _ = (flags, values);
    for p in ops {
        if fsops::lookup(tree, p, true).is_none() {
            if !fsops::is_dir(tree, fsops::parent(p)) {
                return Ok(1);
            }
            // A new file: 0666 under the 022 umask. Times stay at source_date_epoch.
            let target = fsops::find(tree, p, true)
                .map(|f| f.path())
                .unwrap_or_else(|| p.to_owned());
            fsops::write_file(tree, &target, Vec::new(), 0o644, 0, 0, sde).map_err(terr)?;
        }
    }
    Ok(0)
}

fn for_each_path(
    tree: &mut Tree,
    paths: &[&str],
    recursive: bool,
    follow: bool,
    f: &mut dyn FnMut(&mut Meta, bool),
) -> i32 {
    let mut rc = 0;
    for p in paths {
        let Some(id) = fsops::lookup(tree, p, follow) else {
            rc = 1;
            continue;
        };
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            let is_dir = tree.node(id).is_dir();
            if recursive {
                if let Some(e) = tree.children(id) {
                    todo.extend(e.values().copied());
                }
            }
            f(&mut tree.node_mut(id).meta, is_dir);
        }
    }
    rc
}

pub fn chmod(tree: &mut Tree, args: &[&str]) -> Result<i32, String> {
    let (flags, _, ops) = split_flags(args, &[])?;
    // Symbolic modes such as `-w` look like flags: take the first operand-or-flag as the mode.
    let recursive = has(&flags, &["-R", "--recursive"]);
    let (spec, paths): (String, Vec<&str>) = match ops.split_first() {
        Some((m, rest))
            if flags
                .iter()
                .all(|f| f == "-R" || f == "--recursive" || f == "-f" || f == "-v") =>
        {
            ((*m).to_owned(), rest.to_vec())
        }
        _ => return Err("this chmod form is not handled".into()),
    };
    parse_mode(&spec, 0, false).ok_or_else(|| format!("mode {spec} is not handled"))?;
    let mut bad = false;
    let rc = for_each_path(
        tree,
        &paths,
        recursive,
        true,
        &mut |m, dir| match parse_mode(&spec, m.mode, dir) {
            Some(new) => m.mode = new,
            None => bad = true,
        },
    );
    if bad {
        return Err(format!("mode {spec} is not handled"));
    }
    Ok(rc)
}

pub fn chown(tree: &mut Tree, args: &[&str], ids: Ids, group_only: bool) -> Result<i32, String> {
    let (flags, _, ops) = split_flags(args, &[])?;
    let recursive = has(&flags, &["-R", "--recursive"]);
    let no_deref = has(&flags, &["-h", "--no-dereference"]);
    let Some((spec, paths)) = ops.split_first() else {
        return Err("chown needs an owner".into());
    };
    let (user, group) = if group_only {
        (None, Some(*spec))
    } else {
        match spec.split_once([':', '.']) {
            Some((u, g)) => ((!u.is_empty()).then_some(u), (!g.is_empty()).then_some(g)),
            None => (Some(*spec), None),
        }
    };
    let uid = match user {
        Some(u) => Some(ids(u, true).ok_or_else(|| format!("user {u} does not exist"))?),
        None => None,
    };
    let gid = match group {
        Some(g) => Some(ids(g, false).ok_or_else(|| format!("group {g} does not exist"))?),
        None => None,
    };
    Ok(for_each_path(
        tree,
        paths,
        recursive,
        !no_deref,
        &mut |m, _| {
            if let Some(u) = uid {
                m.uid = u;
            }
            if let Some(g) = gid {
                m.gid = g;
            }
        },
    ))
}

pub fn install(tree: &mut Tree, args: &[&str], ids: Ids, sde: Time) -> Result<i32, String> {
    let (flags, values, ops) = split_flags(
        args,
        &[
            "-m",
            "--mode",
            "-o",
            "--owner",
            "-g",
            "--group",
            "-t",
            "--target-directory",
        ],
    )?;
    let mode = match value(&values, &["-m", "--mode"]) {
        Some(m) => {
            Some(parse_mode(m, 0o755, true).ok_or_else(|| format!("mode {m} is not handled"))?)
        }
        None => None,
    };
    let uid = match value(&values, &["-o", "--owner"]) {
        Some(u) => ids(u, true).ok_or_else(|| format!("user {u} does not exist"))?,
        None => 0,
    };
    let gid = match value(&values, &["-g", "--group"]) {
        Some(g) => ids(g, false).ok_or_else(|| format!("group {g} does not exist"))?,
        None => 0,
    };
    if has(&flags, &["-d", "--directory"]) {
        for d in ops {
            let id = fsops::mkdir_p(tree, d, &Meta::new(0o755, 0, 0, sde)).map_err(terr)?;
            let m = &mut tree.node_mut(id).meta;
            m.mode = mode.unwrap_or(0o755);
            m.uid = uid;
            m.gid = gid;
        }
        return Ok(0);
    }
    let [src, dest] = ops[..] else {
        return Err("this install form is not handled".into());
    };
    // `install /dev/null FILE`: an empty file.
    let data = if src == "/dev/null" {
        Vec::new()
    } else {
        fsops::read(tree, src).ok_or_else(|| format!("{src} is not a regular file"))?
    };
    let dest = if fsops::is_dir(tree, dest) {
        join(dest, basename(src))
    } else {
        dest.to_owned()
    };
    fsops::write_file(tree, &dest, data, mode.unwrap_or(0o755), uid, gid, sde).map_err(terr)?;
    Ok(0)
}

pub fn readlink(tree: &Tree, args: &[&str]) -> Result<(i32, String), String> {
    let (flags, _, ops) = split_flags(args, &[])?;
    let canon = has(
        &flags,
        &[
            "-f",
            "-e",
            "-m",
            "--canonicalize",
            "--canonicalize-existing",
            "--canonicalize-missing",
        ],
    );
    let nl = !has(&flags, &["-n", "--no-newline"]);
    let [p] = ops[..] else {
        return Err("readlink with several paths is not handled".into());
    };
    let out = if canon {
        match fsops::find(tree, p, true) {
            Some(f) if f.node.is_some() || !has(&flags, &["-e", "--canonicalize-existing"]) => {
                Some(f.path())
            }
            _ => None,
        }
    } else {
        fsops::lookup(tree, p, false).and_then(|id| match &tree.node(id).kind {
            Kind::Symlink(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        })
    };
    Ok(match out {
        Some(s) => (0, if nl { s + "\n" } else { s }),
        None => (1, String::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640", 0, false), Some(0o640));
        assert_eq!(parse_mode("u+x,go-w", 0o666, false), Some(0o744));
        assert_eq!(parse_mode("a=r", 0o777, false), Some(0o444));
        assert_eq!(parse_mode("+X", 0o644, true), Some(0o755));
        assert_eq!(parse_mode("g+s", 0o755, true), Some(0o2755));
        assert_eq!(parse_mode("q+x", 0, false), None);
        assert_eq!(parse_mode("99999", 0, false), None);
    }

    #[test]
    fn coreutils_on_the_tree() {
        let sde = Time::from_secs(5);
        let mut t = Tree::new(Meta::new(0o755, 0, 0, sde));
        let ids = |n: &str, _user: bool| match n {
            "root" => Some(0),
            "www-data" => Some(33),
            "adm" => Some(4),
            _ => n.parse().ok(),
        };
        assert_eq!(
            mkdir(
                &mut t,
                &[
                    "-p",
                    "/etc/nginx/sites-available",
                    "/etc/nginx/sites-enabled"
                ],
                sde
            ),
            Ok(0)
        );
        assert_eq!(
            touch(&mut t, &["/etc/nginx/sites-available/default"], sde),
            Ok(0)
        );
        assert_eq!(
            ln(
                &mut t,
                &[
                    "-s",
                    "/etc/nginx/sites-available/default",
                    "/etc/nginx/sites-enabled/default"
                ],
                sde
            ),
            Ok(0)
        );
        assert_eq!(
            ln(
                &mut t,
                &["-s", "x", "/etc/nginx/sites-enabled/default"],
                sde
            ),
            Ok(1)
        );
        assert_eq!(
            readlink(&t, &["/etc/nginx/sites-enabled/default"])
                .unwrap()
                .1,
            "/etc/nginx/sites-available/default\n"
        );
        assert_eq!(
            chown(
                &mut t,
                &["www-data:adm", "/etc/nginx/sites-available/default"],
                &ids,
                false
            ),
            Ok(0)
        );
        assert_eq!(
            chmod(&mut t, &["640", "/etc/nginx/sites-available/default"]),
            Ok(0)
        );
        let id = fsops::lookup(&t, "/etc/nginx/sites-enabled/default", true).unwrap();
        assert_eq!(
            (
                t.node(id).meta.uid,
                t.node(id).meta.gid,
                t.node(id).meta.mode
            ),
            (33, 4, 0o640)
        );
        assert_eq!(
            cp(
                &mut t,
                &["/etc/nginx/sites-available/default", "/tmp/x"],
                sde
            ),
            Ok(1)
        );
        assert_eq!(
            cp(
                &mut t,
                &["/etc/nginx/sites-available/default", "/etc/copy"],
                sde
            ),
            Ok(0)
        );
        let id = fsops::lookup(&t, "/etc/copy", true).unwrap();
        assert_eq!((t.node(id).meta.uid, t.node(id).meta.mode), (0, 0o640));
        assert_eq!(mv(&mut t, &["/etc/copy", "/etc/nginx/"], sde), Ok(0));
        assert!(fsops::lookup(&t, "/etc/nginx/copy", false).is_some());
        assert_eq!(rm(&mut t, &["-f", "/etc/nginx/copy", "/nothing"]), Ok(0));
        assert_eq!(rm(&mut t, &["/nothing"]), Ok(1));
        assert_eq!(
            rmdir(&mut t, &["--ignore-fail-on-non-empty", "/etc/nginx"]),
            Ok(0)
        );
        assert!(fsops::is_dir(&t, "/etc/nginx"));
        assert_eq!(
            install(
                &mut t,
                &["-d", "-m", "0750", "-o", "www-data", "/var/lib/x"],
                &ids,
                sde
            ),
            Ok(0)
        );
        let id = fsops::lookup(&t, "/var/lib/x", true).unwrap();
        assert_eq!((t.node(id).meta.uid, t.node(id).meta.mode), (33, 0o750));
        assert!(ln(&mut t, &["-r", "a", "b"], sde).is_err());
    }
}
