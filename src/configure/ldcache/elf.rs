//! `process_file` of glibc's `elf/readlib.c` and `elf/readelflib.c`: whether a file is a
//! shared library `ldconfig` takes, its `DT_SONAME`, its flag (libc6, and the architecture
//! bits) and, on x86, its ISA level (`GNU_PROPERTY_X86_ISA_1_NEEDED`).
//!
//! Fields are read little-endian, as both `ldconfig` builds kiln knows read them (natively).
//! Where glibc would read past the end of a malformed file, kiln calls it truncated and passes
//! the file over.

use super::target::{Arch, Target, FLAG_ELF, FLAG_ELF_LIBC6, FLAG_LIBC4};

/// What `process_file` learns of a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    pub flag: i32,
    pub soname: Option<Vec<u8>>,
    pub isa_level: u32,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_GNU_PROPERTY: u32 = 0x6474_e553;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
const ET_DYN: u16 = 3;
const NT_GNU_PROPERTY_TYPE_0: u32 = 5;
const GNU_PROPERTY_X86_ISA_1_NEEDED: u32 = 0xc000_8002;
/// `ZMAGIC` and `QMAGIC`: a.out libraries.
const AOUT_MAGICS: [u32; 2] = [0o413, 0o314];

fn le(d: &[u8], off: usize, size: usize) -> Option<u64> {
    let b = d.get(off..off.checked_add(size)?)?;
    Some(b.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x)))
}

fn cstr(d: &[u8], off: usize) -> Option<&[u8]> {
    let s = d.get(off..)?;
    Some(&s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())])
}

/// The a.out rule: no soname, the file name up to its major version.
fn aout_soname(name: &[u8]) -> Vec<u8> {
    let mut s = name.to_vec();
    if let Some(major) = find(&s, b".so.") {
        if let Some(dot) = s[major + 4..].iter().position(|&b| b == b'.') {
            s.truncate(major + 4 + dot);
        }
    }
    s
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// `implicit_soname`: the name itself, or for a.out the name up to its major version.
pub fn implicit_soname(name: &[u8], flag: i32) -> Vec<u8> {
    if flag & 0xff != FLAG_LIBC4 {
        return name.to_vec();
    }
    aout_soname(name)
}

/// Reads one file (`name` is its directory entry). `None`: not a library for ldconfig.
pub fn process_file(t: &Target, name: &[u8], data: &[u8]) -> Option<Library> {
    // sizeof (struct exec) is 32 and sizeof (ElfW(Ehdr)) 64 in both 64-bit ldconfigs.
    if data.len() < 64 {
        return None;
    }
    let a_info = le(data, 0, 4)? as u32;
    if AOUT_MAGICS.contains(&(a_info & 0xffff)) {
        return Some(Library {
            flag: FLAG_LIBC4,
            soname: Some(aout_soname(name)),
            isa_level: 0,
        });
    }
    if !data.starts_with(b"\x7fELF") || le(data, 16, 2)? as u16 != ET_DYN {
        return None;
    }
    let is64 = match data[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let machine = le(data, 18, 2)? as u16;
    let e_flags = le(data, if is64 { 48 } else { 36 }, 4)? as u32;
    let forced = t.machine_flag(is64, machine, e_flags).ok()?;
    let mut lib = read_elf(t, data, is64)?;
    if let Some(f) = forced {
        lib.flag = f;
    }
    Some(lib)
}

/// The generic, per-class `process_elf_file`.
fn read_elf(t: &Target, d: &[u8], is64: bool) -> Option<Library> {
    let word = if is64 { 8 } else { 4 };
    let (phoff, phentsize, phnum) = if is64 {
        (le(d, 32, 8)?, 56, le(d, 56, 2)?)
    } else {
        (le(d, 28, 4)?, 32, le(d, 44, 2)?)
    };
    let mut lib = Library {
        flag: FLAG_ELF,
        soname: None,
        isa_level: 0,
    };
    let mut dynamic: Option<(u64, u64)> = None;
    let mut loads = Vec::new();
    for i in 0..phnum {
        let p = usize::try_from(phoff.checked_add(i * phentsize)?).ok()?;
        let (p_type, off, vaddr, filesz, align) = if is64 {
            (
                le(d, p, 4)? as u32,
                le(d, p + 8, 8)?,
                le(d, p + 16, 8)?,
                le(d, p + 32, 8)?,
                le(d, p + 48, 8)?,
            )
        } else {
            (
                le(d, p, 4)? as u32,
                le(d, p + 4, 4)?,
                le(d, p + 8, 4)?,
                le(d, p + 16, 4)?,
                le(d, p + 28, 4)?,
            )
        };
        match p_type {
            PT_LOAD => loads.push((vaddr, off, filesz)),
            // With more than one, glibc warns and keeps the last.
            PT_DYNAMIC => dynamic = Some((off, filesz)),
            PT_INTERP => {
                let interp = cstr(d, usize::try_from(off).ok()?)?;
                if t.interpreters.iter().any(|k| k.as_bytes() == interp) {
                    lib.flag = FLAG_ELF_LIBC6;
                }
            }
            PT_GNU_PROPERTY if t.arch == Arch::X86_64 && align == word as u64 => {
                if let Some(level) = x86_isa_level(d, off, filesz, word) {
                    lib.isa_level = level;
                }
            }
            _ => {}
        }
    }
    let (dyn_off, dyn_size) = dynamic?;
    if dyn_size == 0 {
        return None;
    }
    let dyn_off = usize::try_from(dyn_off).ok()?;
    let entry = 2 * word;
    let entries = (0..)
        .map(|k| dyn_off + k * entry)
        .map(|at| Some((le(d, at, word)?, le(d, at + word, word)?)));
    // The string table's file offset: through the first PT_LOAD holding its address.
    let mut strtab = None;
    for e in entries.clone() {
        let (tag, val) = e?;
        if tag == 0 {
            break;
        }
        if tag == DT_STRTAB {
            let loadoff = loads
                .iter()
                .find(|(vaddr, _, filesz)| val >= *vaddr && val - vaddr < *filesz)
                .map_or(0, |(vaddr, off, _)| vaddr.wrapping_sub(*off));
            strtab = Some(val.wrapping_sub(loadoff));
            break;
        }
    }
    let strtab = usize::try_from(strtab?).ok()?;
    if strtab > d.len() {
        return None;
    }
    for e in entries {
        let (tag, val) = e?;
        if tag == 0 {
            break;
        }
        if tag != DT_NEEDED && tag != DT_SONAME {
            continue;
        }
        let name = cstr(d, strtab.checked_add(usize::try_from(val).ok()?)?)?;
        if tag == DT_NEEDED {
            if lib.flag == FLAG_ELF && (name == b"libc.so.6" || name == b"libm.so.6") {
                lib.flag = FLAG_ELF_LIBC6;
            }
        } else {
            lib.soname = Some(name.to_vec());
        }
        if lib.soname.is_some() && lib.flag != FLAG_ELF {
            break;
        }
    }
    Some(lib)
}

/// The highest ISA level bit of `GNU_PROPERTY_X86_ISA_1_NEEDED` in a PT_GNU_PROPERTY segment.
fn x86_isa_level(d: &[u8], off: u64, size: u64, align: usize) -> Option<u32> {
    let start = usize::try_from(off).ok()?;
    let size = usize::try_from(size).ok()?;
    let mut note = start;
    // While a whole note header fits in the segment.
    while note + 12 - start < size {
        let namesz = le(d, note, 4)? as usize;
        let descsz = le(d, note + 4, 4)? as usize;
        let ntype = le(d, note + 8, 4)? as u32;
        if namesz == 4
            && ntype == NT_GNU_PROPERTY_TYPE_0
            && d.get(note + 12..note + 16)? == b"GNU\0"
        {
            if descsz < 8 || descsz % align != 0 {
                return None;
            }
            let mut p = note + 16;
            let end = p + descsz;
            let mut last = 0u32;
            loop {
                let ptype = le(d, p, 4)? as u32;
                let datasz = le(d, p + 4, 4)? as usize;
                if ptype < last {
                    return None;
                }
                p += 8;
                if p + datasz > end {
                    return None;
                }
                last = ptype;
                if ptype > GNU_PROPERTY_X86_ISA_1_NEEDED {
                    return None;
                }
                if ptype == GNU_PROPERTY_X86_ISA_1_NEEDED {
                    if datasz != 4 {
                        return None;
                    }
                    let needed = le(d, p, 4)? as u32;
                    return (needed != 0).then(|| 31 - needed.leading_zeros());
                }
                p += datasz.div_ceil(align) * align;
                if end.saturating_sub(p) < 8 {
                    return None;
                }
            }
        }
        // ELF_NOTE_NEXT_OFFSET: header and name aligned, then the descriptor, aligned.
        let up = |x: usize| x.div_ceil(align) * align;
        note += up(up(12 + namesz) + descsz);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aout_names() {
        assert_eq!(aout_soname(b"libc.so.4.7.6"), b"libc.so.4");
        assert_eq!(implicit_soname(b"libx.so.1.2", FLAG_ELF), b"libx.so.1.2");
        assert_eq!(implicit_soname(b"libx.so.1.2", FLAG_LIBC4), b"libx.so.1");
    }

    #[test]
    fn odd_files_are_not_libraries() {
        let t = Target::for_machine(62).unwrap();
        assert!(process_file(t, b"libc.so", b"/* GNU ld script */ GROUP ( ... )").is_none());
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[16] = 3;
        elf[18] = 62;
        // No program header and no dynamic segment: not a library.
        assert!(process_file(t, b"libx.so", &elf).is_none());
        for cut in 0..elf.len() {
            let _ = process_file(t, b"libx.so", &elf[..cut]);
        }
    }
}
