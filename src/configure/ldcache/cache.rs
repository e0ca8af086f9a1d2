//! The `/etc/ld.so.cache` file, format `glibc-ld.so.cache1.1` as glibc 2.36's `save_cache`
//! writes it (`elf/cache.c`, `sysdeps/generic/dl-cache.h`, `elf/stringtable.c`), native
//! little-endian:
//!
//! ```text
//! header (48 bytes): "glibc-ld.so.cache" "1.1", nlibs, len_strings, flags (2: little-endian),
//!                    3 bytes padding, extension_offset, 3 unused words
//! nlibs entries (24 bytes): flags, key, value (string offsets from the file's start),
//!                           osversion (0), hwcap (u64)
//! string table: unique strings, tail-merged (a string that ends another shares its bytes)
//! zero padding to a multiple of 4, then the extension directory: magic, count, sections
//! (tag, flags, offset, size): the generator string ("ldconfig (Debian GLIBC ...) ...") and,
//! when glibc-hwcaps subdirectories hold libraries, their names' string offsets, sorted.
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::target::Target;

/// `DL_CACHE_HWCAP_EXTENSION`: the entry's hwcap names a glibc-hwcaps subdirectory.
const HWCAP_EXTENSION: u64 = 1 << 62;
const EXTENSION_MAGIC: u32 = (-358_342_284i32) as u32;
const HEADER: usize = 48;
const ENTRY: usize = 24;

/// One library of the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The soname.
    pub lib: Vec<u8>,
    /// `dir/file`.
    pub path: Vec<u8>,
    pub flags: i32,
    pub isa_level: u32,
    /// Legacy hwcap bits of its directory.
    pub hwcap: u64,
    /// The glibc-hwcaps subdirectory it is in.
    pub hwcaps: Option<Vec<u8>>,
}

/// `compare` of `elf/cache.c`: sonames in descending version order, then higher flags,
/// glibc-hwcaps entries first (by name), then more hwcap bits, then higher hwcaps.
fn compare(t: &Target, e1: &Entry, e2: &Entry) -> Ordering {
    let res = t.libcmp(&e2.lib, &e1.lib);
    if res != 0 {
        return res.cmp(&0);
    }
    e2.flags
        .cmp(&e1.flags)
        .then_with(|| match (&e1.hwcaps, &e2.hwcaps) {
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.cmp(b),
            (None, None) => Ordering::Equal,
        })
        .then_with(|| e2.hwcap.count_ones().cmp(&e1.hwcap.count_ones()))
        .then_with(|| e2.hwcap.cmp(&e1.hwcap))
}

/// `stringtable_finalize`: offsets of each string, and the table.
fn string_table(strings: &[&[u8]]) -> (BTreeMap<Vec<u8>, u32>, Vec<u8>) {
    let mut unique: Vec<&[u8]> = strings.to_vec();
    unique.sort();
    unique.dedup();
    // Reversed strings in reverse order: a string comes right after the longer ones it ends.
    unique.sort_by(|a, b| b.iter().rev().cmp(a.iter().rev()));
    let mut offsets = BTreeMap::new();
    let mut prev: Option<(&[u8], usize)> = None;
    for s in &unique {
        let off = match prev {
            None => 0,
            Some((p, poff)) if p.len() >= s.len() && p.ends_with(s) => poff + p.len() - s.len(),
            Some((p, poff)) => poff + p.len() + 1,
        };
        offsets.insert(s.to_vec(), off as u32);
        prev = Some((s, off));
    }
    let size = prev.map_or(0, |(p, off)| off + p.len() + 1);
    let mut table = vec![0u8; size];
    for (s, &off) in &offsets {
        let off = off as usize;
        table[off..off + s.len()].copy_from_slice(s);
    }
    (offsets, table)
}

/// The cache file for `entries` (in the order `ldconfig` added them), every glibc-hwcaps
/// subdirectory name seen (`hwcaps_seen`, used or not: their names are in the string table),
/// and the generator string of the image's `ldconfig`.
pub fn write(
    t: &Target,
    mut entries: Vec<Entry>,
    hwcaps_seen: &[Vec<u8>],
    generator: &[u8],
) -> Result<Vec<u8>, String> {
    // add_to_cache keeps its list sorted, a new entry after the equal ones: a stable sort.
    entries.sort_by(|a, b| compare(t, a, b));
    let mut used: Vec<&Vec<u8>> = entries.iter().filter_map(|e| e.hwcaps.as_ref()).collect();
    used.sort();
    used.dedup();
    let mut all: Vec<&[u8]> = Vec::new();
    for e in &entries {
        all.push(&e.path);
        all.push(&e.lib);
    }
    all.extend(hwcaps_seen.iter().map(Vec::as_slice));
    let (offsets, table) = string_table(&all);
    let n = entries.len();
    let str_offset = u32::try_from(HEADER + ENTRY * n).map_err(|_| "too many libraries")?;
    let at = |s: &[u8]| str_offset + offsets[s];
    let strings_end = HEADER + ENTRY * n + table.len();
    let ext_offset = strings_end.div_ceil(4) * 4;
    let ext_offset_u32 = u32::try_from(ext_offset).map_err(|_| "the cache is too large")?;

    let mut f = Vec::with_capacity(ext_offset + 128);
    f.extend_from_slice(b"glibc-ld.so.cache1.1");
    f.extend_from_slice(&(n as u32).to_le_bytes());
    f.extend_from_slice(&(table.len() as u32).to_le_bytes());
    f.push(2); // cache_file_new_flags_endian_little
    f.extend_from_slice(&[0; 3]);
    f.extend_from_slice(&ext_offset_u32.to_le_bytes());
    f.extend_from_slice(&[0; 12]);
    for e in &entries {
        let hwcap = match &e.hwcaps {
            None => e.hwcap,
            Some(name) => {
                if e.isa_level > 1023 {
                    return Err(format!(
                        "{}: ISA level is too high ({} > 1023)",
                        String::from_utf8_lossy(&e.path),
                        e.isa_level
                    ));
                }
                let index = used.iter().position(|u| *u == name).unwrap_or(0) as u64;
                HWCAP_EXTENSION | (u64::from(e.isa_level) << 32) | index
            }
        };
        f.extend_from_slice(&e.flags.to_le_bytes());
        f.extend_from_slice(&at(&e.lib).to_le_bytes());
        f.extend_from_slice(&at(&e.path).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&hwcap.to_le_bytes());
    }
    f.extend_from_slice(&table);
    f.resize(ext_offset, 0);

    // The directory is sized for every known section (2), whatever is written.
    let hwcaps_offset = ext_offset_u32 + 8 + 2 * 16;
    let hwcaps_size = 4 * used.len() as u32;
    let generator_offset = if used.is_empty() {
        hwcaps_offset - 16
    } else {
        hwcaps_offset + hwcaps_size
    };
    let count: u32 = if used.is_empty() { 1 } else { 2 };
    f.extend_from_slice(&EXTENSION_MAGIC.to_le_bytes());
    f.extend_from_slice(&count.to_le_bytes());
    let section = |f: &mut Vec<u8>, tag: u32, offset: u32, size: u32| {
        for v in [tag, 0, offset, size] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    };
    section(&mut f, 0, generator_offset, generator.len() as u32);
    if !used.is_empty() {
        section(&mut f, 1, hwcaps_offset, hwcaps_size);
    }
    for u in &used {
        f.extend_from_slice(&at(u).to_le_bytes());
    }
    f.extend_from_slice(generator);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_share_their_tails() {
        let (off, table) = string_table(&[
            b"libc.so.6",
            b"/lib/x86_64-linux-gnu/libc.so.6",
            b"libm.so.6",
            b"libc.so.6",
        ]);
        assert_eq!(off.len(), 3);
        let long = off[&b"/lib/x86_64-linux-gnu/libc.so.6".to_vec()] as usize;
        // libc.so.6 is the tail of the path: it shares its bytes.
        assert_eq!(off[&b"libc.so.6".to_vec()] as usize, long + 22);
        for (s, &o) in &off {
            let o = o as usize;
            assert_eq!(&table[o..o + s.len()], &s[..]);
            assert_eq!(table[o + s.len()], 0);
        }
        assert_eq!(table.len(), 32 + 10);
    }

    #[test]
    fn an_empty_cache_has_header_and_generator() {
        let t = Target::for_machine(62).unwrap();
        let f = write(t, vec![], &[], b"ldconfig test").unwrap();
        assert_eq!(&f[..20], b"glibc-ld.so.cache1.1");
        assert_eq!(u32::from_le_bytes(f[32..36].try_into().unwrap()), 48);
        assert_eq!(f.len(), 48 + 8 + 16 + b"ldconfig test".len());
        assert!(f.ends_with(b"ldconfig test"));
    }
}
