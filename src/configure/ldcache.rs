//! `/etc/ld.so.cache` as glibc 2.36's `ldconfig` (run by libc-bin's trigger on a real
//! install) writes it, byte for byte, and the soname symlinks it makes or removes on the way.
//!
//! ```text
//! /etc/ld.so.conf (+ include globs) + system directories (/lib/<triplet>, /usr/lib/<triplet>,
//!   /lib, /usr/lib) → directories, one per inode, each with its glibc-hwcaps subdirectories
//!   → each directory's libraries (elf: soname, flags), one per soname (a file beats a link,
//!     then the newer version), soname links made → cache (sorted entries, string table,
//!     extensions)
//! ```
//!
//! The architecture (flags, hwcap names, system directories) and the generator string come
//! from the image's own `ldconfig` binary: kiln knows the x86_64 and aarch64 builds; for
//! another, no cache is written (glibc works without one, only slower) and the summary says
//! why. The auxiliary cache (`/var/cache/ldconfig/aux-cache`) is not written: it holds the
//! build host's inode numbers and change times, and ldconfig rebuilds it when missing.
//! Directories are read in name order where `ldconfig` reads them in `readdir` order, which
//! matters only when two library names compare equal as versions (`libx.so.01`, `libx.so.1`).

mod cache;
mod elf;
mod target;

use std::collections::BTreeSet;

use crate::boot::tree_io;
use crate::tree::{Kind, NodeId, Time, Tree};

use super::files;
use target::{Target, FLAG_ANY, FLAG_ELF, FLAG_ELF_LIBC5, FLAG_ELF_LIBC6};

const LDCONFIG: &str = "/sbin/ldconfig";
const CONF: &str = "/etc/ld.so.conf";
const CACHE: &str = "/etc/ld.so.cache";
/// Include nesting kiln follows (ldconfig recurses without a limit until it crashes).
const MAX_INCLUDE_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum LdcacheError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Config { path: String, problem: String },
    #[error("cannot place {path} in the tree: {problem}")]
    Place { path: String, problem: String },
    #[error("ld.so.cache: {0}")]
    Cache(String),
}

/// What was done, for the manifest and the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Whether the image has `ldconfig` (libc-bin); else nothing was done.
    pub installed: bool,
    /// Why no cache was written although `ldconfig` is there.
    pub not_written: Option<String>,
    pub libraries: usize,
    pub directories: Vec<String>,
    /// Soname links made (`ldconfig` makes the ones packages did not ship).
    pub links_made: Vec<String>,
    /// Dangling `*.so.*` links removed, as `ldconfig` removes them.
    pub links_removed: Vec<String>,
    /// Names kiln passed over because they are not UTF-8.
    pub bad_names: Vec<String>,
}

struct Dir {
    path: String,
    node: NodeId,
    flag: i32,
    hwcaps: Option<Vec<u8>>,
}

struct Run<'a> {
    t: &'a Target,
    dirs: Vec<Dir>,
    hwcaps_seen: Vec<Vec<u8>>,
    time: Time,
}

fn read(tree: &mut Tree, path: &str) -> Result<Option<Vec<u8>>, LdcacheError> {
    files::read(tree, path).map_err(|source| LdcacheError::Read {
        path: path.to_string(),
        source,
    })
}

/// The generator string compiled into `ldconfig`: `ldconfig (Debian GLIBC ...) stable release
/// version 2.36`.
fn generator(binary: &[u8]) -> Option<Vec<u8>> {
    let mid = b" release version ";
    let at = binary.windows(mid.len()).position(|w| w == mid)?;
    let start = binary[..at]
        .iter()
        .rposition(|&b| b == 0)
        .map_or(0, |p| p + 1);
    let end = at + binary[at..].iter().position(|&b| b == 0)?;
    let s = &binary[start..end];
    s.starts_with(b"ldconfig ").then(|| s.to_vec())
}

/// `fnmatch` without flags but the leading-dot rule of `glob`: `*`, `?`, `[...]`, `\`.
fn fnmatch(p: &[u8], s: &[u8]) -> bool {
    if s.first() == Some(&b'.') && p.first() != Some(&b'.') {
        return false;
    }
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|k| go(rest, &s[k..])),
            Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((b'[', rest)) => {
                let Some((&c, srest)) = s.split_first() else {
                    return false;
                };
                let (neg, body) = match rest.first() {
                    Some(b'!' | b'^') => (true, &rest[1..]),
                    _ => (false, rest),
                };
                let Some(close) = body.iter().skip(1).position(|&b| b == b']').map(|i| i + 1)
                else {
                    return c == b'[' && go(rest, srest);
                };
                let class = &body[..close];
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&body[close + 1..], srest)
            }
            Some((b'\\', rest)) if !rest.is_empty() => {
                s.first() == Some(&rest[0]) && go(&rest[1..], &s[1..])
            }
            Some((&c, rest)) => s.first() == Some(&c) && go(rest, &s[1..]),
        }
    }
    go(p, s)
}

/// `glob` of an absolute pattern in the tree, sorted as glob sorts under the C locale.
fn glob(tree: &mut Tree, pattern: &str) -> Vec<String> {
    let mut found = vec![String::new()];
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let magic = c.bytes().any(|b| matches!(b, b'*' | b'?' | b'['));
        let mut next = Vec::new();
        for base in found {
            if magic {
                for name in tree_io::list(tree, if base.is_empty() { "/" } else { &base }) {
                    if fnmatch(c.as_bytes(), name.as_bytes()) {
                        next.push(format!("{base}/{name}"));
                    }
                }
            } else {
                let p = format!("{base}/{c}");
                let exists = if last {
                    files::entry(tree, &p).is_some()
                } else {
                    tree_io::lookup(tree, &p).is_some_and(|id| tree.node(id).is_dir())
                };
                if exists {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.sort();
    found
}

impl Run<'_> {
    /// `add_single_dir`: one entry per directory inode, the later flag winning.
    fn add_single(&mut self, d: Dir) -> bool {
        if let Some(old) = self.dirs.iter_mut().find(|o| o.node == d.node) {
            old.flag = d.flag;
            return false;
        }
        self.dirs.push(d);
        true
    }

    /// `add_dir_1`: a configuration line (`DIR` or `DIR=TYPE`).
    fn add_dir(&mut self, tree: &mut Tree, line: &str) {
        let (path, flag) = match line.split_once('=') {
            Some((p, ty)) => (
                p,
                match ty {
                    "libc4" => 0,
                    "libc5" => FLAG_ELF_LIBC5,
                    "libc6" | "glibc2" => FLAG_ELF_LIBC6,
                    _ => FLAG_ANY,
                },
            ),
            None => (line, FLAG_ANY),
        };
        let path = path.trim_end_matches(is_c_space).trim_end_matches('/');
        if path.is_empty() {
            return;
        }
        let Some(node) = tree_io::lookup(tree, path) else {
            return;
        };
        let dir = Dir {
            path: path.to_string(),
            node,
            flag,
            hwcaps: None,
        };
        if !self.add_single(dir) {
            return;
        }
        // glibc-hwcaps subdirectories: every directory in DIR/glibc-hwcaps.
        let hw = format!("{path}/glibc-hwcaps");
        let Some(hw_node) = tree_io::lookup(tree, &hw) else {
            return;
        };
        let Some(children) = tree.children(hw_node) else {
            return;
        };
        let children: Vec<(Vec<u8>, NodeId)> =
            children.iter().map(|(n, &i)| (n.clone(), i)).collect();
        for (name, child) in children {
            if name.first() == Some(&b'.')
                || matches!(tree.node(child).kind, Kind::File(_))
                || name.contains(&b':')
            {
                continue;
            }
            let Ok(name_s) = std::str::from_utf8(&name) else {
                continue;
            };
            let Some(target) = tree_io::lookup(tree, &format!("{hw}/{name_s}")) else {
                continue;
            };
            if !tree.node(target).is_dir() {
                continue;
            }
            if !self.hwcaps_seen.contains(&name) {
                self.hwcaps_seen.push(name.clone());
            }
            self.add_single(Dir {
                path: format!("{path}/glibc-hwcaps/{name_s}"),
                node: target,
                flag,
                hwcaps: Some(name),
            });
        }
    }

    /// `parse_conf`.
    fn parse_conf(
        &mut self,
        tree: &mut Tree,
        path: &str,
        depth: usize,
    ) -> Result<(), LdcacheError> {
        if depth > MAX_INCLUDE_DEPTH {
            return Err(LdcacheError::Config {
                path: path.to_string(),
                problem: format!("includes nest more than {MAX_INCLUDE_DEPTH} deep (a loop?)"),
            });
        }
        let Some(text) = read(tree, path)? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        for line in text.split('\n') {
            let line = line.split('#').next().unwrap_or("");
            let cp = line.trim_start_matches(is_c_space);
            if cp.is_empty() {
                continue;
            }
            let blank_at = |i: usize| matches!(cp.as_bytes().get(i), Some(b' ' | b'\t'));
            if cp.starts_with("include") && blank_at(7) {
                for pattern in cp[8..].split([' ', '\t']).filter(|p| !p.is_empty()) {
                    let full = if pattern.starts_with('/') {
                        pattern.to_string()
                    } else {
                        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                        format!("{dir}/{pattern}")
                    };
                    for f in glob(tree, &full) {
                        self.parse_conf(tree, &f, depth + 1)?;
                    }
                }
            } else if cp.len() >= 5 && cp[..5].eq_ignore_ascii_case("hwcap") && blank_at(5) {
                // "hwcap directive ignored".
            } else {
                self.add_dir(tree, cp);
            }
        }
        Ok(())
    }
}

/// One library of a directory (`struct dlib_entry`).
struct Dlib {
    name: Vec<u8>,
    soname: Vec<u8>,
    flag: i32,
    is_link: bool,
    isa_level: u32,
}

/// `search_dir`: the directory's libraries; links made and removed in the tree; new legacy
/// hwcap subdirectories queued.
fn search_dir(
    tree: &mut Tree,
    run: &mut Run,
    i: usize,
    summary: &mut Summary,
    entries: &mut Vec<cache::Entry>,
) -> Result<(), LdcacheError> {
    let t = run.t;
    let (path, node, dflag, hwcaps) = {
        let d = &run.dirs[i];
        (d.path.clone(), d.node, d.flag, d.hwcaps.clone())
    };
    let hwcap = if hwcaps.is_none() {
        t.path_hwcap(path.as_bytes())
    } else {
        0
    };
    let Some(children) = tree.children(node) else {
        return Ok(());
    };
    let children: Vec<(Vec<u8>, NodeId)> = children.iter().map(|(n, &i)| (n.clone(), i)).collect();
    let mut dlibs: Vec<Dlib> = Vec::new();
    for (name, child) in children {
        let kind_ok = matches!(
            tree.node(child).kind,
            Kind::File(_) | Kind::Dir(_) | Kind::Symlink(_)
        );
        if !kind_ok {
            continue;
        }
        let is_reg = matches!(tree.node(child).kind, Kind::File(_));
        let is_dso = (name.starts_with(b"lib") || name.starts_with(b"ld-"))
            && contains(&name, b".so")
            || name.starts_with(b"ld.so.")
            || name.starts_with(b"ld64.so.");
        if !is_dso && (is_reg || hwcaps.is_some() || !t.is_hwcap_platform(&name)) {
            continue;
        }
        if name.ends_with(b".#prelink#") || prelink_tmp(&name) {
            continue;
        }
        let Ok(name_s) = String::from_utf8(name.clone()) else {
            summary
                .bad_names
                .push(format!("{path}/<a name that is not UTF-8>"));
            continue;
        };
        let file = format!("{path}/{name_s}");
        let is_link = matches!(tree.node(child).kind, Kind::Symlink(_));
        let target = if is_link {
            match tree_io::lookup(tree, &file) {
                Some(t) => t,
                None => {
                    if contains(&name, b".so.") && files::remove(tree, &file) {
                        summary.links_removed.push(file);
                    }
                    continue;
                }
            }
        } else {
            child
        };
        let is_dir = tree.node(target).is_dir();
        if hwcaps.is_none() && is_dir && t.is_hwcap_platform(&name) {
            run.add_single(Dir {
                path: file,
                node: target,
                flag: dflag,
                hwcaps: None,
            });
            continue;
        }
        if !is_reg && !is_link {
            continue;
        }
        let Kind::File(content) = &tree.node(target).kind else {
            continue;
        };
        let content = content.clone();
        let data = {
            let mut v = Vec::with_capacity(content.len() as usize);
            let io = |source| LdcacheError::Read {
                path: file.clone(),
                source,
            };
            std::io::Read::read_to_end(&mut content.open().map_err(io)?, &mut v).map_err(io)?;
            v
        };
        let Some(lib) = elf::process_file(t, &name, &data) else {
            continue;
        };
        let mut flag = lib.flag;
        let mut soname = lib
            .soname
            .unwrap_or_else(|| elf::implicit_soname(&name, flag));
        let mut is_link = is_link;
        if is_link && name != soname && !(name.ends_with(b".so") && soname.starts_with(&name)) {
            is_link = false;
        }
        if is_link {
            soname = name.clone();
        }
        if flag == FLAG_ELF && (dflag == FLAG_ELF_LIBC5 || dflag == FLAG_ELF_LIBC6) {
            flag = dflag;
        }
        match dlibs.iter_mut().find(|d| d.soname == soname) {
            Some(d) => {
                let newer = (!is_link && d.is_link)
                    || (is_link == d.is_link && t.libcmp(&d.name, &name) < 0);
                if newer {
                    if d.flag != flag
                        && ((d.flag == FLAG_ELF
                            && (flag == FLAG_ELF_LIBC5 || flag == FLAG_ELF_LIBC6))
                            || ((d.flag == FLAG_ELF_LIBC5 || d.flag == FLAG_ELF_LIBC6)
                                && flag == FLAG_ELF))
                    {
                        d.flag = flag;
                    }
                    d.name = name.clone();
                    d.is_link = is_link;
                    d.isa_level = lib.isa_level;
                }
            }
            None => dlibs.push(Dlib {
                name: name.clone(),
                soname,
                flag,
                is_link,
                isa_level: lib.isa_level,
            }),
        }
    }
    // ldconfig keeps the list newest-first.
    for d in dlibs.into_iter().rev() {
        let filename = if hwcaps.is_none() {
            if !d.is_link {
                create_link(tree, run.time, &path, &d.name, &d.soname, summary)?;
            }
            d.soname.clone()
        } else {
            d.name.clone()
        };
        let mut full = path.as_bytes().to_vec();
        full.push(b'/');
        full.extend_from_slice(&filename);
        entries.push(cache::Entry {
            lib: d.soname,
            path: full,
            flags: d.flag,
            isa_level: d.isa_level,
            hwcap,
            hwcaps: hwcaps.clone(),
        });
    }
    Ok(())
}

/// C `isspace` (the C locale): also the vertical tab, which Rust's ASCII whitespace is not.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

/// A prelink temporary file: `NAME.#prelink#.XXXXXX`.
fn prelink_tmp(name: &[u8]) -> bool {
    const TMP: &[u8] = b".#prelink#.";
    name.len() >= TMP.len() + 6 && &name[name.len() - TMP.len() - 6..name.len() - 6] == TMP
}

/// `create_links`: `dir/soname` → `libname` unless it already leads to the same file or is
/// not a symlink.
fn create_link(
    tree: &mut Tree,
    time: Time,
    dir: &str,
    libname: &[u8],
    soname: &[u8],
    summary: &mut Summary,
) -> Result<(), LdcacheError> {
    let (Ok(lib), Ok(so)) = (std::str::from_utf8(libname), std::str::from_utf8(soname)) else {
        return Ok(());
    };
    let so_path = format!("{dir}/{so}");
    let lib_path = format!("{dir}/{lib}");
    if let Some(so_node) = tree_io::lookup(tree, &so_path) {
        let Some(lib_node) = tree_io::lookup(tree, &lib_path) else {
            return Ok(());
        };
        if so_node == lib_node {
            return Ok(());
        }
        let is_symlink = files::entry(tree, &so_path)
            .is_some_and(|id| matches!(tree.node(id).kind, Kind::Symlink(_)));
        if !is_symlink {
            return Ok(());
        }
    }
    files::put(tree, &so_path, files::symlink(libname, time), time).map_err(|problem| {
        LdcacheError::Place {
            path: so_path.clone(),
            problem,
        }
    })?;
    summary.links_made.push(format!("{so_path} -> {lib}"));
    Ok(())
}

/// Writes `/etc/ld.so.cache` (0644 root, dated `time`) as the image's `ldconfig` would.
pub fn apply(tree: &mut Tree, time: Time) -> Result<Summary, LdcacheError> {
    let mut summary = Summary::default();
    let Some(binary) = read(tree, LDCONFIG)? else {
        return Ok(summary);
    };
    summary.installed = true;
    let machine = (binary.len() > 20 && binary.starts_with(b"\x7fELF") && binary[5] == 1)
        .then(|| u16::from_le_bytes([binary[18], binary[19]]));
    let Some(t) = machine.and_then(Target::for_machine) else {
        summary.not_written = Some(format!(
            "{LDCONFIG} is not a little-endian x86_64 or aarch64 program (machine {machine:?}), \
             the ldconfig builds kiln knows; without a cache glibc searches the directories"
        ));
        return Ok(summary);
    };
    let Some(generator) = generator(&binary) else {
        summary.not_written = Some(format!(
            "{LDCONFIG} holds no \"ldconfig ... release version ...\" string to name the cache's \
             generator"
        ));
        return Ok(summary);
    };
    drop(binary);
    let mut run = Run {
        t,
        dirs: Vec::new(),
        hwcaps_seen: Vec::new(),
        time,
    };
    run.parse_conf(tree, CONF, 0)?;
    // Debian's system directories.
    for d in [
        format!("/lib/{}", t.triplet),
        format!("/usr/lib/{}", t.triplet),
        "/lib".to_string(),
        "/usr/lib".to_string(),
    ] {
        run.add_dir(tree, &d);
    }
    let mut entries = Vec::new();
    let mut i = 0;
    while i < run.dirs.len() {
        search_dir(tree, &mut run, i, &mut summary, &mut entries)?;
        i += 1;
    }
    summary.directories = run.dirs.iter().map(|d| d.path.clone()).collect();
    summary.libraries = entries.len();
    let seen: BTreeSet<Vec<u8>> = run.hwcaps_seen.iter().cloned().collect();
    let seen: Vec<Vec<u8>> = seen.into_iter().collect();
    let file = cache::write(t, entries, &seen, &generator).map_err(LdcacheError::Cache)?;
    files::put(tree, CACHE, files::file(file, 0o644, time), time).map_err(|problem| {
        LdcacheError::Place {
            path: CACHE.into(),
            problem,
        }
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(fnmatch(b"*.conf", b"libc.conf"));
        assert!(!fnmatch(b"*.conf", b".hidden.conf"));
        assert!(fnmatch(b"[a-c]x?", b"bxz"));
        assert!(!fnmatch(b"[!a-c]x", b"bx"));
        assert!(fnmatch(b"\\*", b"*"));
    }

    #[test]
    fn generator_strings() {
        let bin = b"\0junk\0ldconfig (Debian GLIBC 2.36-9) stable release version 2.36\0more";
        assert_eq!(
            generator(bin).unwrap(),
            b"ldconfig (Debian GLIBC 2.36-9) stable release version 2.36"
        );
        assert!(generator(b"nothing").is_none());
    }
}
