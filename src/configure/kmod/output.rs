//! The files depmod writes into `/lib/modules/<version>/`, byte for byte as kmod 30's
//! `depmod_output` writes them, in its order.

use super::elf::ModuleElf;
use super::graph::Graph;
use super::hash;
use super::index::{Index, IndexError};
use super::scan::fgets_lines;

/// One module as the outputs see it, in depmod's module order.
pub struct Module<'a> {
    pub name: &'a [u8],
    /// As `modules.dep` names it: relative to the module directory, or absolute (external).
    pub path: &'a [u8],
    pub elf: &'a ModuleElf,
}

/// What the outputs are made from.
pub struct Inputs<'a> {
    pub modules: &'a [Module<'a>],
    pub graph: &'a Graph,
    /// `modules.builtin` and `modules.builtin.modinfo`, when the kernel ships them.
    pub builtin: Option<&'a [u8]>,
    pub builtin_modinfo: Option<&'a [u8]>,
}

/// A file's name and bytes, plus depmod's warnings about what it passed over.
pub struct Output {
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub warnings: Vec<String>,
}

/// Every file, in the order depmod writes them.
pub fn all(inp: &Inputs) -> Result<Output, (&'static str, IndexError)> {
    let mut warnings = Vec::new();
    let mut files = vec![("modules.dep", deps(inp))];
    files.push((
        "modules.dep.bin",
        deps_bin(inp).map_err(|e| ("modules.dep.bin", e))?,
    ));
    files.push(("modules.alias", aliases(inp)));
    files.push((
        "modules.alias.bin",
        aliases_bin(inp, &mut warnings).map_err(|e| ("modules.alias.bin", e))?,
    ));
    files.push(("modules.softdep", softdeps(inp)));
    files.push(("modules.symbols", symbols(inp)));
    files.push((
        "modules.symbols.bin",
        symbols_bin(inp).map_err(|e| ("modules.symbols.bin", e))?,
    ));
    files.push((
        "modules.builtin.bin",
        builtin_bin(inp, &mut warnings).map_err(|e| ("modules.builtin.bin", e))?,
    ));
    files.push((
        "modules.builtin.alias.bin",
        builtin_alias_bin(inp, &mut warnings).map_err(|e| ("modules.builtin.alias.bin", e))?,
    ));
    files.push(("modules.devname", devname(inp, &mut warnings)));
    Ok(Output { files, warnings })
}

/// `path: dep dep ...`, the dependencies in topological order.
fn dep_line(inp: &Inputs, i: usize) -> Vec<u8> {
    let mut line = inp.modules[i].path.to_vec();
    line.push(b':');
    for d in inp.graph.closure(i) {
        line.push(b' ');
        line.extend_from_slice(inp.modules[d].path);
    }
    line
}

fn deps(inp: &Inputs) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..inp.modules.len() {
        out.extend_from_slice(&dep_line(inp, i));
        out.push(b'\n');
    }
    out
}

fn deps_bin(inp: &Inputs) -> Result<Vec<u8>, IndexError> {
    let mut idx = Index::new();
    for (i, m) in inp.modules.iter().enumerate() {
        idx.insert(m.name, &dep_line(inp, i), i as u32)?;
    }
    idx.write()
}

fn aliases(inp: &Inputs) -> Vec<u8> {
    let mut out = b"# Aliases extracted from modules themselves.\n".to_vec();
    for m in inp.modules {
        for a in &m.elf.aliases {
            out.extend_from_slice(b"alias ");
            out.extend_from_slice(a);
            out.push(b' ');
            out.extend_from_slice(m.name);
            out.push(b'\n');
        }
    }
    out
}

/// kmod's `alias_normalize`: `-` becomes `_` outside bracket expressions; an unbalanced
/// bracket makes the alias unusable. Like kmod's 4096-byte buffer, it stops at 4095 bytes.
pub fn normalize_alias(alias: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(alias.len());
    let mut i = 0;
    while i < 4095 && i < alias.len() {
        match alias[i] {
            b'-' => out.push(b'_'),
            b']' => return None,
            b'[' => {
                while i < alias.len() && alias[i] != b']' {
                    out.push(alias[i]);
                    i += 1;
                }
                if i == alias.len() {
                    return None;
                }
                out.push(b']');
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

fn aliases_bin(inp: &Inputs, warnings: &mut Vec<String>) -> Result<Vec<u8>, IndexError> {
    let mut idx = Index::new();
    for (i, m) in inp.modules.iter().enumerate() {
        for a in &m.elf.aliases {
            match normalize_alias(a) {
                Some(n) => idx.insert(&n, m.name, i as u32)?,
                None => warnings.push(format!(
                    "module {}: alias \"{}\" has an unmatched bracket; depmod leaves it out of modules.alias.bin",
                    String::from_utf8_lossy(m.name),
                    String::from_utf8_lossy(a)
                )),
            }
        }
    }
    idx.write()
}

fn softdeps(inp: &Inputs) -> Vec<u8> {
    let mut out = b"# Soft dependencies extracted from modules themselves.\n".to_vec();
    for m in inp.modules {
        for s in &m.elf.softdeps {
            out.extend_from_slice(b"softdep ");
            out.extend_from_slice(m.name);
            out.push(b' ');
            out.extend_from_slice(s);
            out.push(b'\n');
        }
    }
    out
}

/// The exported symbols in the order depmod's symbol table hands them out.
fn symbols_in_hash_order<'a>(inp: &'a Inputs) -> Vec<(&'a [u8], usize)> {
    let mut v: Vec<(&[u8], usize)> = inp.graph.owners.iter().map(|(s, &o)| (&s[..], o)).collect();
    v.sort_by(|a, b| {
        hash::order_key(a.0, hash::SYMBOL_BUCKETS).cmp(&hash::order_key(b.0, hash::SYMBOL_BUCKETS))
    });
    v
}

fn symbols(inp: &Inputs) -> Vec<u8> {
    let mut out = b"# Aliases for symbols, used by symbol_request().\n".to_vec();
    for (s, owner) in symbols_in_hash_order(inp) {
        out.extend_from_slice(b"alias symbol:");
        out.extend_from_slice(s);
        out.push(b' ');
        out.extend_from_slice(inp.modules[owner].name);
        out.push(b'\n');
    }
    out
}

fn symbols_bin(inp: &Inputs) -> Result<Vec<u8>, IndexError> {
    let mut idx = Index::new();
    for (s, owner) in symbols_in_hash_order(inp) {
        let mut key = b"symbol:".to_vec();
        key.extend_from_slice(s);
        idx.insert(&key, inp.modules[owner].name, owner as u32)?;
    }
    idx.write()
}

/// `modules.builtin.bin` from `modules.builtin` (one `kernel/.../name.ko` a line); an empty
/// file when the kernel has no `modules.builtin`, as depmod leaves it.
fn builtin_bin(inp: &Inputs, warnings: &mut Vec<String>) -> Result<Vec<u8>, IndexError> {
    let Some(text) = inp.builtin else {
        return Ok(Vec::new());
    };
    let mut idx = Index::new();
    for line in fgets_lines(text) {
        if !line[0].is_ascii_alphabetic() {
            warnings.push(format!(
                "modules.builtin: line \"{}\" does not start with a letter; depmod skips it",
                String::from_utf8_lossy(line).trim_end()
            ));
            continue;
        }
        // kmod's path_to_modname: the base name up to its first dot.
        let base = line.rsplit(|&b| b == b'/').next().unwrap_or(line);
        if base.is_empty() {
            continue;
        }
        idx.insert(&super::scan::module_name(base), b"", 0)?;
    }
    idx.write()
}

/// A byte reader with C stdio's end-of-file flag, to follow depmod's `flush_stream_to` loop
/// over `modules.builtin.modinfo` exactly (its records are `module.key=value\0`).
struct Stream<'a> {
    data: &'a [u8],
    at: usize,
    eof: bool,
}

impl Stream<'_> {
    fn getc(&mut self) -> Option<u8> {
        let c = self.data.get(self.at).copied();
        match c {
            Some(_) => self.at += 1,
            None => self.eof = true,
        }
        c
    }

    /// Reads up to `end` (or a NUL, or the end); the bytes only when it stopped at `end`.
    fn read_to(&mut self, end: u8) -> Vec<u8> {
        // PATH_MAX: at that length depmod warns and keeps one byte less.
        const MAX: usize = 4096;
        let mut buf = Vec::new();
        let mut c = self.getc();
        while let Some(b) = c {
            if b == end || b == 0 || buf.len() >= MAX {
                break;
            }
            buf.push(b);
            c = self.getc();
        }
        if buf.len() == MAX {
            buf.pop();
        }
        if c == Some(end) {
            buf
        } else {
            Vec::new()
        }
    }

    fn skip_to(&mut self, end: u8) {
        while let Some(b) = self.getc() {
            if b == end || b == 0 {
                break;
            }
        }
    }
}

fn builtin_alias_bin(inp: &Inputs, warnings: &mut Vec<String>) -> Result<Vec<u8>, IndexError> {
    let Some(data) = inp.builtin_modinfo else {
        return Ok(Vec::new());
    };
    let mut idx = Index::new();
    let mut s = Stream {
        data,
        at: 0,
        eof: false,
    };
    while !s.eof {
        let module = s.read_to(b'.');
        if module.is_empty() {
            continue;
        }
        let key = s.read_to(b'=');
        if key != b"alias" {
            s.skip_to(0);
            continue;
        }
        let value = s.read_to(0);
        if value.is_empty() {
            continue;
        }
        match normalize_alias(&value) {
            Some(a) => idx.insert(&a, &module, 0)?,
            None => warnings.push(format!(
                "modules.builtin.modinfo: alias \"{}\" has an unmatched bracket; depmod leaves it out",
                String::from_utf8_lossy(&value)
            )),
        }
    }
    idx.write()
}

/// C `sscanf(s, "<prefix>%u-%u")`: two unsigned numbers (each after optional spaces and a
/// sign, wrapping as `strtoul` does) around a dash.
fn scan_numbers(s: &[u8], prefix: &[u8]) -> Option<(u32, u32)> {
    let rest = s.strip_prefix(prefix)?;
    let (a, rest) = scan_u(rest)?;
    let rest = rest.strip_prefix(b"-")?;
    let (b, _) = scan_u(rest)?;
    Some((a, b))
}

/// One `%u`: the value and the rest.
pub fn scan_u(s: &[u8]) -> Option<(u32, &[u8])> {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut v: u64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add(u64::from(s[i] - b'0'));
        i += 1;
    }
    if i == start {
        return None;
    }
    let v = if neg { v.wrapping_neg() } else { v };
    Some((v as u32, &s[i..]))
}

/// `name devname c|bMAJOR:MINOR` for modules that declare a device node (`devname:` plus a
/// `char-major-` or `block-major-` alias); no header when there is none, as depmod does.
fn devname(inp: &Inputs, warnings: &mut Vec<String>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in inp.modules {
        let mut dev: Option<&[u8]> = None;
        let mut kind = None;
        for a in &m.elf.aliases {
            if let Some(d) = a.strip_prefix(b"devname:") {
                dev = Some(d);
            } else if let Some(n) = scan_numbers(a, b"char-major-") {
                kind = Some((b'c', n));
            } else if let Some(n) = scan_numbers(a, b"block-major-") {
                kind = Some((b'b', n));
            }
            if kind.is_some() && dev.is_some() {
                break;
            }
        }
        let Some(dev) = dev else {
            continue;
        };
        let Some((t, (major, minor))) = kind else {
            warnings.push(format!(
                "module {} has a devname ({}) but no major and minor; depmod ignores it",
                String::from_utf8_lossy(m.name),
                String::from_utf8_lossy(dev)
            ));
            continue;
        };
        if out.is_empty() {
            out.extend_from_slice(b"# Device nodes to trigger on-demand module loading.\n");
        }
        out.extend_from_slice(m.name);
        out.push(b' ');
        out.extend_from_slice(dev);
        out.extend_from_slice(format!(" {}{major}:{minor}\n", t as char).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_normalize_outside_brackets() {
        assert_eq!(
            normalize_alias(b"pci:v-x[a-z]-y").unwrap(),
            b"pci:v_x[a-z]_y"
        );
        assert!(normalize_alias(b"a]b").is_none());
        assert!(normalize_alias(b"a[bc").is_none());
        assert_eq!(normalize_alias(&[b'a'; 5000]).unwrap().len(), 4095);
    }

    #[test]
    fn scanf_numbers() {
        assert_eq!(
            scan_numbers(b"char-major-10-229", b"char-major-"),
            Some((10, 229))
        );
        assert_eq!(
            scan_numbers(b"char-major-10-229-x", b"char-major-"),
            Some((10, 229))
        );
        assert_eq!(
            scan_numbers(b"char-major- 10- 2", b"char-major-"),
            Some((10, 2))
        );
        assert_eq!(scan_numbers(b"char-major-10-*", b"char-major-"), None);
        assert_eq!(scan_numbers(b"char-major-10", b"char-major-"), None);
        assert_eq!(
            scan_numbers(b"block-major--1-0", b"block-major-"),
            Some((u32::MAX, 0))
        );
    }

    fn elf(aliases: &[&str]) -> ModuleElf {
        ModuleElf {
            aliases: aliases.iter().map(|a| a.as_bytes().to_vec()).collect(),
            ..ModuleElf::default()
        }
    }

    #[test]
    fn devnames_as_depmod_writes_them() {
        let fuse = elf(&["fs-fuse", "devname:fuse", "char-major-10-229"]);
        let loop_ = elf(&[
            "block-major-7-*",
            "char-major-10-237",
            "devname:loop-control",
        ]);
        let half = elf(&["devname:half"]);
        let none = elf(&["pci:*"]);
        let g = Graph::build(&[&fuse, &loop_, &half, &none]).unwrap();
        let modules = [
            Module {
                name: b"fuse",
                path: b"kernel/fuse.ko",
                elf: &fuse,
            },
            Module {
                name: b"loop",
                path: b"kernel/loop.ko",
                elf: &loop_,
            },
            Module {
                name: b"half",
                path: b"kernel/half.ko",
                elf: &half,
            },
            Module {
                name: b"none",
                path: b"kernel/none.ko",
                elf: &none,
            },
        ];
        let inp = Inputs {
            modules: &modules,
            graph: &g,
            builtin: None,
            builtin_modinfo: None,
        };
        let mut w = Vec::new();
        assert_eq!(
            String::from_utf8(devname(&inp, &mut w)).unwrap(),
            "# Device nodes to trigger on-demand module loading.\n\
             fuse fuse c10:229\nloop loop-control c10:237\n"
        );
        assert_eq!(w.len(), 1);
        let out = all(&inp).unwrap();
        let names: Vec<&str> = out.files.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), 10);
        // Without modules.builtin*, depmod leaves those two indexes empty.
        assert!(out.files[7].1.is_empty() && out.files[8].1.is_empty());
        assert_eq!(
            String::from_utf8(out.files[0].1.clone()).unwrap(),
            "kernel/fuse.ko:\nkernel/loop.ko:\nkernel/half.ko:\nkernel/none.ko:\n"
        );
    }

    #[test]
    fn builtin_modinfo_stream_quirks() {
        let data = b"ext4.alias=fs-ext4\0ext4.license=GPL\0crc32c_generic.alias=crypto-crc32c\0nodot\0x.alias=\0";
        let g = Graph::build(&[]).unwrap();
        let inp = Inputs {
            modules: &[],
            graph: &g,
            builtin: Some(b"kernel/fs/ext4/ext4.ko\n#bad\nkernel/crypto/crc32c_generic.ko\n"),
            builtin_modinfo: Some(data),
        };
        let mut w = Vec::new();
        let bin = builtin_alias_bin(&inp, &mut w).unwrap();
        let text = String::from_utf8_lossy(&bin);
        assert!(
            text.contains("ext4") && text.contains("crc32c_generic"),
            "{text}"
        );
        builtin_bin(&inp, &mut w).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
    }
}
