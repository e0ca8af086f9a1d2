//! What depmod reads from one kernel module file: its `.modinfo` strings, the symbols it
//! exports and the symbols it needs, read as libkmod reads them (`libkmod/libkmod-elf.c`), so
//! that the same odd file gives the same answer.
//!
//! - `.modinfo`: NUL-separated `key=value` strings (empty strings skipped).
//! - Exports: the `.symtab` entries named `__crc_NAME` (kernels with CONFIG_MODVERSIONS), else
//!   the strings of `__ksymtab_strings`.
//! - Needs: every undefined `.symtab` entry with a name, in table order, then the `__versions`
//!   entries no undefined symbol matched (`module_layout`).
//!
//! ELF32 and ELF64 of either byte order are read (the header says which), so any target
//! architecture's modules are read on any host.

use std::io::Read;

/// The parts of a module that depmod uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleElf {
    /// `alias=` values of `.modinfo`, in order.
    pub aliases: Vec<Vec<u8>>,
    /// `softdep=` values of `.modinfo`, in order.
    pub softdeps: Vec<Vec<u8>>,
    /// Exported symbol names, in table order.
    pub exports: Vec<Vec<u8>>,
    /// Symbols it needs from elsewhere, in table order.
    pub needs: Vec<Vec<u8>>,
}

const SHN_UNDEF: u16 = 0;
const STT_REGISTER: u8 = 13;
const EM_SPARC: u16 = 2;
const EM_SPARCV9: u16 = 43;
/// `struct modversion_info`: a CRC word then the name, 64 bytes in all on 32- and 64-bit.
const MODVERSION_SIZE: u64 = 64;

/// The file's bytes, decompressed when they start with the xz or zstd magic (what bookworm's
/// kmod 30 reads: it is built without zlib, so a `.ko.gz` is no module to it). The inner `Err`
/// says why the data does not decompress; the outer one is a read error.
pub fn decompress(
    mut raw: impl Read,
    size_hint: usize,
) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut data = Vec::with_capacity(size_hint);
    raw.read_to_end(&mut data)?;
    const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
    const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    if data.starts_with(XZ) {
        let mut out = Vec::new();
        return Ok(
            match xz2::read::XzDecoder::new(&data[..]).read_to_end(&mut out) {
                Ok(_) => Ok(out),
                Err(e) => Err(format!("it does not decompress as xz: {e}")),
            },
        );
    }
    if data.starts_with(ZSTD) {
        return Ok(
            zstd::decode_all(&data[..]).map_err(|e| format!("it does not decompress as zstd: {e}"))
        );
    }
    Ok(Ok(data))
}

struct Elf<'a> {
    data: &'a [u8],
    is64: bool,
    big: bool,
    machine: u16,
    shoff: u64,
    shnum: u16,
    /// The section-name string table.
    names: &'a [u8],
}

struct Section<'a> {
    /// Where the section starts in the file.
    off: usize,
    data: &'a [u8],
}

impl<'a> Elf<'a> {
    fn uint(&self, off: u64, size: u64) -> Option<u64> {
        let end = off.checked_add(size)?;
        let b = self
            .data
            .get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)?;
        Some(if self.big {
            b.iter().fold(0, |v, &x| (v << 8) | u64::from(x))
        } else {
            b.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x))
        })
    }

    /// Checks the header as `kmod_elf_new` does.
    fn parse(data: &'a [u8]) -> Result<Elf<'a>, String> {
        if data.len() <= 16 || !data.starts_with(b"\x7fELF") {
            return Err("it is not an ELF file".into());
        }
        let is64 = match data[4] {
            1 => false,
            2 => true,
            c => return Err(format!("unknown ELF class {c}")),
        };
        if data.len() <= if is64 { 64 } else { 52 } {
            return Err("the ELF header is cut short".into());
        }
        let big = match data[5] {
            1 => false,
            2 => true,
            d => return Err(format!("unknown ELF byte order {d}")),
        };
        let mut elf = Elf {
            data,
            is64,
            big,
            machine: 0,
            shoff: 0,
            shnum: 0,
            names: &[],
        };
        let short = || "the ELF header is cut short".to_string();
        let (shoff, shentsize, shnum, shstrndx) = if is64 {
            (
                elf.uint(0x28, 8).ok_or_else(short)?,
                elf.uint(0x3a, 2).ok_or_else(short)?,
                elf.uint(0x3c, 2).ok_or_else(short)?,
                elf.uint(0x3e, 2).ok_or_else(short)?,
            )
        } else {
            (
                elf.uint(0x20, 4).ok_or_else(short)?,
                elf.uint(0x2e, 2).ok_or_else(short)?,
                elf.uint(0x30, 2).ok_or_else(short)?,
                elf.uint(0x32, 2).ok_or_else(short)?,
            )
        };
        elf.machine = elf.uint(0x12, 2).ok_or_else(short)? as u16;
        elf.shoff = shoff;
        elf.shnum = shnum as u16;
        let want = if is64 { 64 } else { 40 };
        if shentsize != want {
            return Err(format!("section headers of {shentsize} bytes, not {want}"));
        }
        let fits = (want * shnum)
            .checked_add(shoff)
            .is_some_and(|end| end <= data.len() as u64);
        if !fits {
            return Err("the file is too short to hold its section headers".into());
        }
        let names = elf
            .section_at(shstrndx as u16)
            .ok_or("the section-name table is missing or out of bounds")?;
        if names.data.last() != Some(&0) {
            return Err("the section-name table does not end with a NUL".into());
        }
        elf.names = names.data;
        Ok(elf)
    }

    /// Section `idx`, when its header and its bytes lie inside the file.
    fn section_at(&self, idx: u16) -> Option<Section<'a>> {
        if idx == 0 || idx >= self.shnum {
            return None;
        }
        let h = self.shoff + u64::from(idx) * if self.is64 { 64 } else { 40 };
        let (offset, size) = if self.is64 {
            (self.uint(h + 0x18, 8)?, self.uint(h + 0x20, 8)?)
        } else {
            (self.uint(h + 0x10, 4)?, self.uint(h + 0x14, 4)?)
        };
        let end = offset.checked_add(size)?;
        let off = usize::try_from(offset).ok()?;
        let data = self.data.get(off..usize::try_from(end).ok()?)?;
        Some(Section { off, data })
    }

    fn name_offset(&self, idx: u16) -> Option<u64> {
        let h = self.shoff + u64::from(idx) * if self.is64 { 64 } else { 40 };
        self.uint(h, 4)
    }

    /// The first section called `name` (sections out of bounds are passed over, as kmod does).
    fn section(&self, name: &[u8]) -> Option<Section<'a>> {
        (1..self.shnum).find_map(|i| {
            let s = self.section_at(i)?;
            let off = usize::try_from(self.name_offset(i)?).ok()?;
            (cstr(self.names, off)? == name).then_some(s)
        })
    }

    /// The symbol table and its strings, with the entry size.
    fn symtab(&self) -> Option<(Section<'a>, Section<'a>, u64)> {
        let strtab = self.section(b".strtab")?;
        let symtab = self.section(b".symtab")?;
        let entry = if self.is64 { 24 } else { 16 };
        (symtab.data.len() as u64 % entry == 0).then_some((symtab, strtab, entry))
    }
}

/// The NUL-terminated string at `off` of `data` (to its end when unterminated).
fn cstr(data: &[u8], off: usize) -> Option<&[u8]> {
    let s = data.get(off..)?;
    Some(&s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())])
}

/// `kmod_elf_get_strings`: the non-empty NUL-separated strings of a section.
fn strings(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == 0).filter(|s| !s.is_empty())
}

/// One `.symtab` entry: name offset, info, section index.
struct Sym {
    name: u32,
    info: u8,
    shndx: u16,
}

fn sym(elf: &Elf, symtab: &Section, entry: u64, i: u64) -> Sym {
    let base = symtab.off as u64 + i * entry;
    // Inside the section, which lies inside the file (checked when it was found).
    let u = |off: u64, size: u64| elf.uint(base + off, size).unwrap_or(0);
    if elf.is64 {
        Sym {
            name: u(0, 4) as u32,
            info: u(4, 1) as u8,
            shndx: u(6, 2) as u16,
        }
    } else {
        Sym {
            name: u(0, 4) as u32,
            info: u(12, 1) as u8,
            shndx: u(14, 2) as u16,
        }
    }
}

/// The symbol name at `off` of `.strtab`. Like libkmod's C string it may run past the table,
/// to the end of the file at most.
fn sym_name<'a>(elf: &Elf<'a>, strtab: &Section<'a>, off: u32) -> &'a [u8] {
    cstr(elf.data, strtab.off + off as usize).unwrap_or_default()
}

fn exports(elf: &Elf) -> Vec<Vec<u8>> {
    const CRC: &[u8] = b"__crc_";
    if let Some((symtab, strtab, entry)) = elf.symtab() {
        let n = symtab.data.len() as u64 / entry;
        let syms: Option<Vec<Sym>> = (1..n)
            .map(|i| sym(elf, &symtab, entry, i))
            .map(|s| ((s.name as usize) < strtab.data.len()).then_some(s))
            .collect();
        // A name outside .strtab sends kmod to the fallback for the whole module.
        if let Some(syms) = syms {
            let crcs: Vec<Vec<u8>> = syms
                .iter()
                .filter_map(|s| sym_name(elf, &strtab, s.name).strip_prefix(CRC))
                .map(<[u8]>::to_vec)
                .collect();
            if !crcs.is_empty() {
                return crcs;
            }
        }
    }
    match elf.section(b"__ksymtab_strings") {
        Some(s) => strings(s.data).map(<[u8]>::to_vec).collect(),
        None => Vec::new(),
    }
}

fn needs(elf: &Elf) -> Vec<Vec<u8>> {
    let Some((symtab, strtab, entry)) = elf.symtab() else {
        return Vec::new();
    };
    let versions: &[u8] = match elf.section(b"__versions") {
        Some(v) if v.data.len() as u64 % MODVERSION_SIZE == 0 => v.data,
        _ => &[],
    };
    let crc_len = if elf.is64 { 8 } else { 4 };
    let version_names: Vec<&[u8]> = versions
        .chunks_exact(MODVERSION_SIZE as usize)
        .map(|v| cstr(v, crc_len).unwrap_or_default())
        .collect();
    // The first entry of each name, as libkmod's linear search finds it.
    let mut first: std::collections::HashMap<&[u8], usize> =
        std::collections::HashMap::with_capacity(version_names.len());
    for (i, n) in version_names.iter().enumerate().rev() {
        first.insert(n, i);
    }
    let mut visited = vec![false; version_names.len()];
    let registers = elf.machine == EM_SPARC || elf.machine == EM_SPARCV9;
    let mut out = Vec::new();
    for i in 1..symtab.data.len() as u64 / entry {
        let s = sym(elf, &symtab, entry, i);
        if s.shndx != SHN_UNDEF || (registers && s.info & 0xf == STT_REGISTER) {
            continue;
        }
        // One bad name and libkmod returns no dependency at all for the module.
        if s.name as usize >= strtab.data.len() {
            return Vec::new();
        }
        let name = sym_name(elf, &strtab, s.name);
        if name.is_empty() {
            continue;
        }
        if let Some(&v) = first.get(name) {
            visited[v] = true;
        }
        out.push(name.to_vec());
    }
    for (v, seen) in version_names.iter().zip(visited) {
        if !seen {
            out.push(v.to_vec());
        }
    }
    out
}

/// Reads a (decompressed) module; `Err` says why depmod would get nothing from it.
pub fn read(data: &[u8]) -> Result<ModuleElf, String> {
    let elf = Elf::parse(data)?;
    let mut m = ModuleElf {
        exports: exports(&elf),
        needs: needs(&elf),
        ..ModuleElf::default()
    };
    if let Some(info) = elf.section(b".modinfo") {
        for s in strings(info.data) {
            let (key, value) = match s.iter().position(|&b| b == b'=') {
                Some(eq) => (&s[..eq], &s[eq + 1..]),
                None => (s, &[][..]),
            };
            match key {
                b"alias" => m.aliases.push(value.to_vec()),
                b"softdep" => m.softdeps.push(value.to_vec()),
                _ => {}
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A relocatable ELF built section by section, for tests.
    pub struct Builder {
        pub is64: bool,
        pub big: bool,
        sections: Vec<(String, Vec<u8>)>,
    }

    impl Builder {
        pub fn new(is64: bool, big: bool) -> Self {
            Builder {
                is64,
                big,
                sections: Vec::new(),
            }
        }

        pub fn section(mut self, name: &str, data: Vec<u8>) -> Self {
            self.sections.push((name.into(), data));
            self
        }

        fn put(&self, v: &mut Vec<u8>, x: u64, size: usize) {
            let b = x.to_le_bytes();
            if self.big {
                v.extend(b[..size].iter().rev());
            } else {
                v.extend_from_slice(&b[..size]);
            }
        }

        /// `.symtab` + `.strtab` from (name, info, shndx); entry 0 is the null symbol.
        pub fn symbols(self, syms: &[(&str, u8, u16)]) -> Self {
            let mut strtab = vec![0u8];
            let mut tab = vec![0u8; if self.is64 { 24 } else { 16 }];
            for (name, info, shndx) in syms {
                let off = strtab.len() as u64;
                strtab.extend_from_slice(name.as_bytes());
                strtab.push(0);
                if self.is64 {
                    self.put(&mut tab, off, 4);
                    tab.push(*info);
                    tab.push(0);
                    self.put(&mut tab, u64::from(*shndx), 2);
                    tab.extend_from_slice(&[0; 16]);
                } else {
                    self.put(&mut tab, off, 4);
                    tab.extend_from_slice(&[0; 8]);
                    tab.push(*info);
                    tab.push(0);
                    self.put(&mut tab, u64::from(*shndx), 2);
                }
            }
            self.section(".symtab", tab).section(".strtab", strtab)
        }

        pub fn build(&self) -> Vec<u8> {
            let ehsize = if self.is64 { 64 } else { 52 };
            let shentsize = if self.is64 { 64 } else { 40 };
            let mut names = vec![0u8];
            let mut name_offs = Vec::new();
            for (n, _) in self
                .sections
                .iter()
                .chain([(".shstrtab".to_string(), vec![])].iter())
            {
                name_offs.push(names.len() as u64);
                names.extend_from_slice(n.as_bytes());
                names.push(0);
            }
            let mut f = vec![0u8; ehsize];
            let mut placed = Vec::new();
            for (_, d) in &self.sections {
                placed.push((f.len() as u64, d.len() as u64));
                f.extend_from_slice(d);
            }
            placed.push((f.len() as u64, names.len() as u64));
            f.extend_from_slice(&names);
            let shoff = f.len() as u64;
            f.extend(vec![0u8; shentsize]);
            for (i, (off, size)) in placed.iter().enumerate() {
                let mut h = Vec::new();
                self.put(&mut h, name_offs[i], 4);
                if self.is64 {
                    h.extend_from_slice(&[0; 20]);
                    self.put(&mut h, *off, 8);
                    self.put(&mut h, *size, 8);
                    h.extend_from_slice(&[0; 24]);
                } else {
                    h.extend_from_slice(&[0; 12]);
                    self.put(&mut h, *off, 4);
                    self.put(&mut h, *size, 4);
                    h.extend_from_slice(&[0; 16]);
                }
                f.extend_from_slice(&h);
            }
            let mut hdr = Vec::new();
            hdr.extend_from_slice(b"\x7fELF");
            hdr.push(if self.is64 { 2 } else { 1 });
            hdr.push(if self.big { 2 } else { 1 });
            hdr.extend_from_slice(&[1; 1]);
            hdr.resize(16, 0);
            self.put(&mut hdr, 1, 2); // e_type: ET_REL
            self.put(&mut hdr, 62, 2); // e_machine
            let shnum = placed.len() as u64 + 1;
            if self.is64 {
                hdr.resize(0x28, 0);
                self.put(&mut hdr, shoff, 8);
                hdr.resize(0x3a, 0);
            } else {
                hdr.resize(0x20, 0);
                self.put(&mut hdr, shoff, 4);
                hdr.resize(0x2e, 0);
            }
            self.put(&mut hdr, shentsize as u64, 2);
            self.put(&mut hdr, shnum, 2);
            self.put(&mut hdr, shnum - 1, 2);
            f[..hdr.len()].copy_from_slice(&hdr);
            f
        }
    }

    fn versions(is64: bool, names: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in names {
            let mut e = vec![0u8; 64];
            let at = if is64 { 8 } else { 4 };
            e[at..at + n.len()].copy_from_slice(n.as_bytes());
            v.extend_from_slice(&e);
        }
        v
    }

    #[test]
    fn modinfo_exports_and_needs_in_every_class_and_byte_order() {
        const GLOBAL: u8 = 0x10;
        for (is64, big) in [(true, false), (true, true), (false, false), (false, true)] {
            let f = Builder::new(is64, big)
                .section(
                    ".modinfo",
                    b"\0\0alias=pci:v00001AF4d00001000sv*sd*bc*sc*i*\0\0softdep=pre: crc32c\0license=GPL\0alias=virtio:d00000001v*\0flag\0".to_vec(),
                )
                .section("__versions", versions(is64, &["module_layout", "virtqueue_add"]))
                .symbols(&[
                    ("virtio_net.c", 4, 0xfff1),
                    ("__crc_virtnet_export", GLOBAL, 0xfff1),
                    ("virtqueue_add", GLOBAL, 0),
                    ("", GLOBAL, 0),
                    ("register_netdev", GLOBAL, 0),
                    ("local_fn", 2, 1),
                ])
                .build();
            let m = read(&f).unwrap();
            assert_eq!(
                m.aliases,
                [
                    &b"pci:v00001AF4d00001000sv*sd*bc*sc*i*"[..],
                    b"virtio:d00000001v*"
                ]
            );
            assert_eq!(m.softdeps, [b"pre: crc32c"]);
            assert_eq!(m.exports, [b"virtnet_export"]);
            // Undefined symbols in table order, then the unmatched __versions entry.
            assert_eq!(
                m.needs,
                [&b"virtqueue_add"[..], b"register_netdev", b"module_layout"]
            );
        }
    }

    #[test]
    fn exports_fall_back_to_ksymtab_strings() {
        let f = Builder::new(true, false)
            .section("__ksymtab_strings", b"\0a_sym\0b_sym\0".to_vec())
            .symbols(&[("plain", 0x10, 1)])
            .build();
        assert_eq!(read(&f).unwrap().exports, [b"a_sym", b"b_sym"]);
    }

    #[test]
    fn odd_files_give_reasons_not_panics() {
        let good = Builder::new(true, false)
            .section(".modinfo", b"alias=x\0".to_vec())
            .symbols(&[("y", 0x10, 0)])
            .build();
        assert!(read(&good).is_ok());
        for cut in 0..good.len() {
            let _ = read(&good[..cut]);
        }
        assert!(read(b"not an elf at all")
            .unwrap_err()
            .contains("not an ELF"));
        let mut bad = good.clone();
        bad[4] = 7;
        assert!(read(&bad).is_err());
        // Every byte flipped in turn: any answer, never a panic.
        for i in 0..good.len() {
            let mut f = good.clone();
            f[i] ^= 0xff;
            let _ = read(&f);
        }
    }

    #[test]
    fn compressed_modules_are_read_through() {
        let raw = b"\x7fELF-not-really".to_vec();
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            std::io::Write::write_all(&mut e, &raw).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&raw[..], 1).unwrap();
        for c in [&raw, &xz, &zst] {
            assert_eq!(decompress(&c[..], 0).unwrap().unwrap(), raw);
        }
        let mut broken = zst.clone();
        broken.truncate(6);
        assert!(decompress(&broken[..], 0).unwrap().is_err());
    }
}
