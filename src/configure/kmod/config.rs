//! depmod's configuration, `depmod.d(5)`: which of two modules with the same name wins
//! (`search`, `override`), extra module directories (`external`) and directories to skip
//! (`exclude`). Read from the image's `/etc/depmod.d`, `/run/depmod.d`,
//! `/usr/local/lib/depmod.d` and `/lib/depmod.d`, as depmod does when the kernel package's
//! postinst runs it inside the system.

use std::collections::BTreeMap;

use crate::boot::tree_io;
use crate::tree::{Kind, Tree};

use super::KmodError;

const DIRS: [&str; 4] = [
    "/etc/depmod.d",
    "/run/depmod.d",
    "/usr/local/lib/depmod.d",
    "/lib/depmod.d",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    /// A subdirectory of the kernel's module directory.
    Path(Vec<u8>),
    /// `built-in`: the kernel's own `kernel/` tree (whatever no other entry names).
    BuiltIn,
    /// `external`: the `external` directories.
    External,
}

/// The parsed configuration. kmod builds each list by prepending, so each is kept here in
/// kmod's order: the last entry read comes first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub searches: Vec<Search>,
    /// `subdir/modname`, relative to the module directory.
    pub overrides: Vec<Vec<u8>>,
    /// Absolute directories in the image.
    pub externals: Vec<Vec<u8>>,
    /// Directory names skipped wherever they are.
    pub excludes: Vec<Vec<u8>>,
}

impl Config {
    /// Reads the image's configuration files for kernel `version`.
    pub fn load(tree: &mut Tree, version: &str) -> Result<Config, KmodError> {
        // By file name across the directories, the first directory's file winning a name.
        let mut files: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for dir in DIRS {
            let Some(id) = tree_io::lookup(tree, dir) else {
                continue;
            };
            match &tree.node(id).kind {
                Kind::Dir(_) => {
                    for name in tree_io::list(tree, dir) {
                        let conf = name.len() >= 6 && name.ends_with(".conf");
                        if name.starts_with('.') || !conf {
                            continue;
                        }
                        files
                            .entry(name.clone().into_bytes())
                            .or_insert(format!("{dir}/{name}"));
                    }
                }
                _ => {
                    let base = dir.rsplit('/').next().unwrap_or(dir);
                    files
                        .entry(base.as_bytes().to_vec())
                        .or_insert(dir.to_string());
                }
            }
        }
        let mut cfg = Config::default();
        for path in files.values() {
            // Directories among the files are passed over, as depmod does.
            let Some(text) = read_file(tree, path)? else {
                continue;
            };
            cfg.parse(&text, path, version)?;
        }
        // Without any `search` line, depmod searches `updates` first.
        if cfg.searches.is_empty() {
            cfg.searches.push(Search::Path(b"updates".to_vec()));
        }
        Ok(cfg)
    }

    /// One file's lines (`path` for messages).
    pub fn parse(&mut self, text: &[u8], path: &str, version: &str) -> Result<(), KmodError> {
        for (lineno, line) in logical_lines(text) {
            if line.first() == Some(&b'#') {
                continue;
            }
            let mut words = line
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|w| !w.is_empty());
            let Some(cmd) = words.next() else {
                continue;
            };
            let bad = |problem: String| KmodError::Config {
                path: path.to_string(),
                line: lineno,
                problem,
            };
            match cmd {
                b"search" => {
                    for w in words {
                        let s = match w {
                            b"built-in" => Search::BuiltIn,
                            b"external" => Search::External,
                            p => Search::Path(p.to_vec()),
                        };
                        self.searches.insert(0, s);
                    }
                }
                b"override" => {
                    let (Some(module), Some(kver), Some(subdir)) =
                        (words.next(), words.next(), words.next())
                    else {
                        continue;
                    };
                    if kernel_matches(kver, version).map_err(bad)? {
                        let mut p = subdir.to_vec();
                        p.push(b'/');
                        p.extend_from_slice(module);
                        self.overrides.insert(0, p);
                    }
                }
                b"external" => {
                    let (Some(kver), Some(dir)) = (words.next(), words.next()) else {
                        continue;
                    };
                    if kernel_matches(kver, version).map_err(bad)? {
                        self.externals.insert(0, dir.to_vec());
                    }
                }
                b"exclude" => {
                    for w in words {
                        self.excludes.insert(0, w.to_vec());
                    }
                }
                // depmod ignores what it does not know (`include`, `make_map_files`, typos),
                // with a message; so does kiln.
                _ => {}
            }
        }
        Ok(())
    }
}

fn read_file(tree: &mut Tree, path: &str) -> Result<Option<Vec<u8>>, KmodError> {
    let Some(c) = tree_io::content(tree, path) else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    let io = |source| KmodError::Read {
        path: path.to_string(),
        source,
    };
    std::io::Read::read_to_end(&mut c.open().map_err(io)?, &mut buf).map_err(io)?;
    Ok(Some(buf))
}

/// kmod's `freadline_wrapped`: a backslash before a newline joins two lines, a backslash before
/// anything else is dropped. Gives each line with its first line number.
fn logical_lines(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut start = 1;
    let mut lineno = 1;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\n' => {
                out.push((start, std::mem::take(&mut line)));
                lineno += 1;
                start = lineno;
            }
            b'\\' if text.get(i + 1) == Some(&b'\n') => {
                lineno += 1;
                i += 1;
            }
            b'\\' => {
                if let Some(&c) = text.get(i + 1) {
                    line.push(c);
                    i += 1;
                }
            }
            c => line.push(c),
        }
        i += 1;
    }
    if !line.is_empty() {
        out.push((start, line));
    }
    out
}

/// Whether a kernel-version pattern (`*` or a POSIX extended regular expression, searched
/// anywhere in the version as `regexec` does) matches. kiln evaluates the common subset of
/// ERE: literals, `.`, bracket expressions, `\` escapes, `*` `+` `?`, `^` and `$`. A pattern
/// with groups, alternation or braces is refused rather than guessed.
pub fn kernel_matches(pattern: &[u8], version: &str) -> Result<bool, String> {
    if pattern == b"*" {
        return Ok(true);
    }
    let atoms = compile(pattern)?;
    let v = version.as_bytes();
    Ok((0..=v.len()).any(|start| match_here(&atoms, v, start, start == 0)))
}

#[derive(Debug, Clone)]
enum Atom {
    Byte(u8),
    Any,
    Class { negated: bool, items: Vec<(u8, u8)> },
    Start,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rep {
    One,
    Star,
    Plus,
    Opt,
}

fn compile(p: &[u8]) -> Result<Vec<(Atom, Rep)>, String> {
    let unsupported = |c: u8| {
        format!(
            "the kernel pattern \"{}\" uses '{}', which kiln does not evaluate (it takes \
             literals, '.', [...], '*', '+', '?', '^' and '$'); write the version out",
            String::from_utf8_lossy(p),
            c as char
        )
    };
    let mut out: Vec<(Atom, Rep)> = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        let atom = match c {
            b'(' | b')' | b'|' | b'{' | b'}' => return Err(unsupported(c)),
            b'*' | b'+' | b'?' => {
                let rep = match c {
                    b'*' => Rep::Star,
                    b'+' => Rep::Plus,
                    _ => Rep::Opt,
                };
                match out.last_mut() {
                    Some((a, r @ Rep::One)) if !matches!(a, Atom::Start | Atom::End) => *r = rep,
                    _ => return Err(unsupported(c)),
                }
                i += 1;
                continue;
            }
            b'.' => Atom::Any,
            b'^' => Atom::Start,
            b'$' => Atom::End,
            b'\\' => {
                i += 1;
                Atom::Byte(*p.get(i).ok_or_else(|| unsupported(c))?)
            }
            b'[' => {
                let mut j = i + 1;
                let negated = p.get(j) == Some(&b'^');
                if negated {
                    j += 1;
                }
                let mut items = Vec::new();
                let mut first = true;
                loop {
                    let &b = p.get(j).ok_or_else(|| unsupported(b'['))?;
                    if b == b']' && !first {
                        break;
                    }
                    first = false;
                    if p.get(j + 1) == Some(&b'-') && p.get(j + 2).is_some_and(|&e| e != b']') {
                        items.push((b, p[j + 2]));
                        j += 3;
                    } else {
                        items.push((b, b));
                        j += 1;
                    }
                }
                i = j;
                Atom::Class { negated, items }
            }
            b => Atom::Byte(b),
        };
        out.push((atom, Rep::One));
        i += 1;
    }
    Ok(out)
}

fn atom_matches(a: &Atom, b: u8) -> bool {
    match a {
        Atom::Byte(x) => *x == b,
        Atom::Any => b != b'\n',
        Atom::Class { negated, items } => {
            items.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
        }
        Atom::Start | Atom::End => false,
    }
}

/// Backtracking match of `atoms` at `at` of `v`.
fn match_here(atoms: &[(Atom, Rep)], v: &[u8], at: usize, at_start: bool) -> bool {
    let Some(((atom, rep), rest)) = atoms.split_first() else {
        return true;
    };
    match atom {
        Atom::Start => return at == 0 && at_start && match_here(rest, v, at, at_start),
        Atom::End => return at == v.len() && match_here(rest, v, at, at_start),
        _ => {}
    }
    let (min, max) = match rep {
        Rep::One => (1, 1),
        Rep::Opt => (0, 1),
        Rep::Star => (0, usize::MAX),
        Rep::Plus => (1, usize::MAX),
    };
    let mut n = 0;
    while n < max && at + n < v.len() && atom_matches(atom, v[at + n]) {
        n += 1;
    }
    (min..=n)
        .rev()
        .any(|k| match_here(rest, v, at + k, at_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_join_and_escape() {
        let l = logical_lines(b"a \\\nb\n# c\nx\\yz\nlast");
        assert_eq!(
            l,
            vec![
                (1, b"a b".to_vec()),
                (3, b"# c".to_vec()),
                (4, b"xyz".to_vec()),
                (5, b"last".to_vec())
            ]
        );
    }

    #[test]
    fn lists_are_in_kmods_order() {
        let mut c = Config::default();
        let text = b"search updates extra built-in\n\
                     override e1000 * weak\n\
                     override skipped 5.10.* weak\n\
                     external 6.1.* /opt/ext\n\
                     exclude debug\n\
                     include other.conf\n";
        c.parse(text, "/etc/depmod.d/x.conf", "6.1.0-56-cloud-amd64")
            .unwrap();
        assert_eq!(
            c.searches,
            [
                Search::BuiltIn,
                Search::Path(b"extra".to_vec()),
                Search::Path(b"updates".to_vec())
            ]
        );
        assert_eq!(c.overrides, [b"weak/e1000".to_vec()]);
        assert_eq!(c.externals, [b"/opt/ext".to_vec()]);
        assert_eq!(c.excludes, [b"debug".to_vec()]);
    }

    #[test]
    fn kernel_patterns_agree_with_posix_ere() {
        // depmod evaluates them with regexec(REG_EXTENDED); grep -E is the same engine.
        let v = "6.1.0-56-cloud-amd64";
        for (p, want) in [
            ("*", true),
            ("6.1", true),
            ("^6\\.1\\.", true),
            ("^6\\.2", false),
            ("cloud-amd64$", true),
            ("cloud$", false),
            ("6\\.[0-9]+\\.0-[0-9]*-cloud", true),
            ("[^0-9]6", true),
            ("[^0-9]5[^0-9]", false),
            ("arm64", false),
            ("x?6.1", true),
            ("^.*-cloud-a[l-n]d", true),
        ] {
            assert_eq!(kernel_matches(p.as_bytes(), v), Ok(want), "{p}");
            if p != "*" {
                let grep = std::process::Command::new("grep")
                    .args(["-Eq", p])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .and_then(|mut c| {
                        use std::io::Write;
                        c.stdin.take().unwrap().write_all(v.as_bytes())?;
                        c.wait()
                    })
                    .unwrap();
                assert_eq!(grep.success(), want, "grep -E {p}");
            }
        }
        let e = kernel_matches(b"(6|5)\\.1", v).unwrap_err();
        assert!(e.contains("'('"), "{e}");
        assert!(kernel_matches(b"[6", v).is_err());
    }

    #[test]
    fn an_unevaluated_pattern_names_its_file_and_line() {
        let mut c = Config::default();
        let e = c
            .parse(
                b"\n\nexternal 6.(1|2) /x\n",
                "/etc/depmod.d/e.conf",
                "6.1.0",
            )
            .unwrap_err();
        assert!(e.to_string().starts_with("/etc/depmod.d/e.conf:3: "), "{e}");
    }
}
