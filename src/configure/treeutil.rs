//! Read-only tools scripts use that answer from the tree rather than from their input: find,
//! ls, stat, getcap, dpkg -L / dpkg-query -S, dpkg-realpath. `None` means the form is not
//! handled (the answer is then unknown). The text tools are in [`super::textutil`].

use super::accounts::Accounts;
use super::fsops;
use super::textutil::Answer;
use crate::tree::{Kind, Tree};

/// `find START... [-type f|d|l] [-name GLOB] [-print]`, listed in sorted order under each start
/// as written (`./x` for `.`).
pub fn find(tree: &Tree, cwd: &str, args: &[&str]) -> Answer {
    let mut starts = Vec::new();
    let mut i = 0;
    while i < args.len() && !args[i].starts_with('-') {
        starts.push(args[i]);
        i += 1;
    }
    let (mut kind, mut name) = (None, None);
    while i < args.len() {
        match args[i] {
            "-type" => {
                kind = Some(*args.get(i + 1)?);
                i += 2;
            }
            "-name" => {
                name = Some(*args.get(i + 1)?);
                i += 2;
            }
            "-print" => i += 1,
            _ => return None,
        }
    }
    if starts.is_empty() {
        starts.push(".");
    }
    let mut out = String::new();
    for st in starts {
        let abs = if st.starts_with('/') {
            st.to_owned()
        } else {
            fsops::join(cwd, st)
        };
        let Some(root) = fsops::lookup(tree, &abs, true) else {
            return Some((1, out));
        };
        let mut todo = vec![(st.trim_end_matches('/').to_owned(), root)];
        while let Some((shown, id)) = todo.pop() {
            let node = tree.node(id);
            let k = match node.kind {
                Kind::Dir(_) => "d",
                Kind::File(_) => "f",
                Kind::Symlink(_) => "l",
                _ => "o",
            };
            let base = shown.rsplit('/').next().unwrap_or(&shown);
            if kind.is_none_or(|t| t == k)
                && name.is_none_or(|n| super::script::glob_match(n, base))
            {
                out.push_str(&shown);
                out.push('\n');
            }
            if let Some(e) = tree.children(id) {
                for (n, c) in e.iter().rev() {
                    todo.push((format!("{shown}/{}", String::from_utf8_lossy(n)), *c));
                }
            }
        }
    }
    Some((0, out))
}

/// `ls [-L|-d|-1] PATH...`: whether they exist (the listing itself only for plain files).
pub fn ls(tree: &Tree, args: &[&str]) -> Answer {
    let paths: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with('-'))
        .collect();
    if paths.is_empty() {
        return None;
    }
    let mut out = String::new();
    for p in &paths {
        let id = fsops::lookup(tree, p, true)?;
        if tree.node(id).is_dir() {
            return None;
        }
        out.push_str(p);
        out.push('\n');
    }
    Some((0, out))
}

/// `stat [-L] -c FORMAT PATH`: %a %u %g %U %G %s %n %F.
pub fn stat(tree: &Tree, accounts: &Accounts, args: &[&str]) -> Answer {
    let mut follow = false;
    let mut format = None;
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-L" | "--dereference" => follow = true,
            "-c" | "--format" => format = Some((*it.next()?).to_owned()),
            a if a.starts_with("--format=") => format = Some(a["--format=".len()..].to_owned()),
            a if a.starts_with('-') => return None,
            a => paths.push(a),
        }
    }
    let format = format?;
    let mut out = String::new();
    for p in paths {
        let Some(id) = fsops::lookup(tree, p, follow) else {
            return Some((1, String::new()));
        };
        let n = tree.node(id);
        let m = &n.meta;
        let mut cs = format.chars();
        while let Some(c) = cs.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match cs.next()? {
                'a' => out.push_str(&format!("{:o}", m.mode & 0o7777)),
                'u' => out.push_str(&m.uid.to_string()),
                'g' => out.push_str(&m.gid.to_string()),
                'U' => out.push_str(
                    &accounts
                        .user_by_id(m.uid)
                        .map_or("UNKNOWN".into(), |u| u.name.clone()),
                ),
                'G' => out.push_str(
                    &accounts
                        .group_by_id(m.gid)
                        .map_or("UNKNOWN".into(), |g| g.name.clone()),
                ),
                's' => out.push_str(&match &n.kind {
                    Kind::File(c) => c.len().to_string(),
                    Kind::Symlink(t) => t.len().to_string(),
                    _ => "4096".into(),
                }),
                'n' => out.push_str(p),
                'F' => out.push_str(match n.kind {
                    Kind::Dir(_) => "directory",
                    Kind::File(ref c) if c.is_empty() => "regular empty file",
                    Kind::File(_) => "regular file",
                    Kind::Symlink(_) => "symbolic link",
                    _ => return None,
                }),
                '%' => out.push('%'),
                _ => return None,
            }
        }
        out.push('\n');
    }
    Some((0, out))
}

/// `getcap FILE`: the file and its capabilities when it has any (none here means no
/// `security.capability` attribute).
pub fn getcap(tree: &Tree, args: &[&str]) -> Answer {
    let [p] = args else { return None };
    let id = fsops::lookup(tree, p, true)?;
    if tree
        .node(id)
        .meta
        .xattrs
        .contains_key(b"security.capability".as_slice())
    {
        return None;
    }
    Some((0, String::new()))
}

/// The package whose `.list` holds `path` (`dpkg-query -S`), or a package's files (`-L`).
pub fn dpkg_lists(tree: &Tree, keys: &[String], flag: &str, arg: &str) -> Answer {
    match flag {
        "-L" | "--listfiles" => {
            let name = arg.split(':').next().unwrap_or(arg);
            let key = keys.iter().find(|k| k.split(':').next() == Some(name))?;
            let l = fsops::read_text(tree, &format!("{}/{key}.list", super::INFO_DIR))?;
            Some((0, l))
        }
        "-S" | "--search" => {
            let mut owners = Vec::new();
            for k in keys {
                let Some(l) = fsops::read_text(tree, &format!("{}/{k}.list", super::INFO_DIR))
                else {
                    continue;
                };
                if l.lines().any(|f| f == arg) {
                    owners.push(k.split(':').next().unwrap_or(k).to_owned());
                }
            }
            if owners.is_empty() {
                Some((1, String::new()))
            } else {
                Some((0, format!("{}: {arg}\n", owners.join(", "))))
            }
        }
        _ => None,
    }
}

/// `dpkg-realpath [--root DIR] PATH`: the path without symlinks, inside the tree.
pub fn realpath(tree: &Tree, args: &[&str]) -> Answer {
    let paths: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with('-'))
        .collect();
    let [p] = paths[..] else { return None };
    if args.contains(&"--root") {
        return None;
    }
    let f = fsops::find(tree, p, true)?;
    Some((0, f.path() + "\n"))
}
