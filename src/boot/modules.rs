//! Kernel modules: finding them by name and resolving what each needs.
//!
//! Dependencies come from `modules.dep` when the tree has one (depmod's output). Debian's kernel
//! packages do not ship it (their postinst runs depmod, and kiln runs no maintainer script), so
//! otherwise they come from each module's own `.modinfo` section: its `depends=` field lists the
//! modules whose symbols it uses, which is what depmod itself records.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use crate::tree::{Kind, Tree};

use super::{tree_io, BootError};

/// The modules of one kernel, by normalized name (`-` → `_`).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// `/lib/modules/<version>`.
    pub dir: String,
    /// name → path relative to `dir` (e.g. `kernel/drivers/block/virtio_blk.ko`).
    pub by_name: BTreeMap<String, String>,
    /// Built into the kernel image (`modules.builtin`): nothing to load.
    pub builtin: BTreeSet<String>,
    /// `modules.dep`, relative path → relative paths, when the tree has it.
    pub dep_file: Option<BTreeMap<String, Vec<String>>>,
}

/// `kernel/drivers/x/foo-bar.ko.xz` → `foo_bar`.
pub fn name_of(rel: &str) -> Option<String> {
    let base = rel.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| base.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

/// Parses `modules.dep`: `kernel/a.ko: kernel/b.ko kernel/c.ko`.
pub fn parse_dep_file(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| {
            (
                m.trim().to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

impl ModuleIndex {
    /// Walks `dir` in the tree (sorted) for module files.
    pub fn load(tree: &mut Tree, dir: &str) -> Result<ModuleIndex, BootError> {
        let mut idx = ModuleIndex {
            dir: dir.to_string(),
            ..Default::default()
        };
        let Some(root) = tree_io::lookup(tree, dir) else {
            return Ok(idx);
        };
        let mut stack = vec![(root, String::new())];
        while let Some((id, rel)) = stack.pop() {
            let Some(children) = tree.children(id) else {
                continue;
            };
            for (name, &child) in children.iter().rev() {
                let name = String::from_utf8_lossy(name);
                let path = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                match &tree.node(child).kind {
                    Kind::Dir(_) => stack.push((child, path)),
                    Kind::File(_) => {
                        if let Some(n) = name_of(&path) {
                            idx.by_name.entry(n).or_insert(path);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(b) = tree_io::read(tree, &format!("{dir}/modules.builtin"))? {
            idx.builtin = String::from_utf8_lossy(&b)
                .lines()
                .filter_map(name_of)
                .collect();
        }
        if let Some(b) = tree_io::read(tree, &format!("{dir}/modules.dep"))? {
            idx.dep_file = Some(parse_dep_file(&String::from_utf8_lossy(&b)));
        }
        Ok(idx)
    }
}

/// The `.modinfo` section of an ELF64 little-endian module (x86_64 and arm64 both are).
pub fn modinfo(elf: &[u8]) -> Option<Vec<(String, String)>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    // ELF64 header: e_ident[EI_CLASS] = 2 (64-bit), e_ident[EI_DATA] = 1 (little-endian).
    if elf.get(..4)? != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return None;
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let sh = |i: usize| -> Option<(u32, usize, usize)> {
        let o = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(o)?,
            u64_at(o + 0x18)? as usize,
            u64_at(o + 0x20)? as usize,
        ))
    };
    let (_, stroff, strsize) = sh(shstrndx)?;
    let strtab = elf.get(stroff..stroff.checked_add(strsize)?)?;
    for i in 0..shnum {
        let (name, off, size) = sh(i)?;
        let n = strtab.get(name as usize..)?;
        let n = &n[..n.iter().position(|&b| b == 0)?];
        if n == b".modinfo" {
            let data = elf.get(off..off.checked_add(size)?)?;
            return Some(
                data.split(|&b| b == 0)
                    .filter_map(|kv| {
                        let s = std::str::from_utf8(kv).ok()?;
                        let (k, v) = s.split_once('=')?;
                        Some((k.to_string(), v.to_string()))
                    })
                    .collect(),
            );
        }
    }
    None
}

/// A module file's bytes, decompressed (`.ko.xz`, `.ko.zst`, `.ko.gz`), so that busybox
/// `insmod` loads it whatever the kernel's CONFIG_MODULE_DECOMPRESS says.
pub fn decompress(rel: &str, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if rel.ends_with(".xz") {
        xz2::read::XzDecoder::new(&data[..]).read_to_end(&mut out)?;
    } else if rel.ends_with(".zst") {
        out = zstd::decode_all(&data[..])?;
    } else if rel.ends_with(".gz") {
        flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut out)?;
    } else {
        return Ok(data);
    }
    Ok(out)
}

/// Load order for `wanted`: every module after the modules it depends on (a depth-first
/// post-order walk, in the order asked), each once. Built-in modules are skipped. `deps` gives a
/// module's direct dependencies by name.
pub fn load_order(
    wanted: &[String],
    idx: &ModuleIndex,
    pos: &crate::recipe::Pos,
    deps: &mut dyn FnMut(&str) -> Result<Vec<String>, BootError>,
) -> Result<Vec<String>, BootError> {
    #[allow(clippy::too_many_arguments)]
    fn visit(
        name: &str,
        idx: &ModuleIndex,
        pos: &crate::recipe::Pos,
        deps: &mut dyn FnMut(&str) -> Result<Vec<String>, BootError>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
        chain: &mut Vec<String>,
    ) -> Result<(), BootError> {
        if idx.builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        if !idx.by_name.contains_key(name) {
            return Err(BootError::NoModule {
                pos: pos.clone(),
                name: name.to_string(),
                chain: chain.join(" → "),
                dir: idx.dir.clone(),
            });
        }
        chain.push(name.to_string());
        for d in deps(name)? {
            visit(&d.replace('-', "_"), idx, pos, deps, seen, out, chain)?;
        }
        chain.pop();
        out.push(name.to_string());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(w, idx, pos, deps, &mut seen, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(mods: &[&str], builtin: &[&str]) -> ModuleIndex {
        ModuleIndex {
            dir: "/lib/modules/6.1".into(),
            by_name: mods
                .iter()
                .map(|m| (m.to_string(), format!("kernel/{m}.ko")))
                .collect(),
            builtin: builtin.iter().map(|s| s.to_string()).collect(),
            dep_file: None,
        }
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let i = idx(
            &[
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "virtio_pci",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
            ],
            &["nvme"],
        );
        let graph: BTreeMap<&str, Vec<&str>> = [
            ("virtio_blk", vec!["virtio", "virtio_ring"]),
            (
                "virtio_pci",
                vec![
                    "virtio_ring",
                    "virtio_pci_modern_dev",
                    "virtio_pci_legacy_dev",
                    "virtio",
                ],
            ),
            ("virtio", vec!["virtio_ring"]),
        ]
        .into_iter()
        .collect();
        let mut deps = |n: &str| {
            Ok(graph
                .get(n)
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default())
        };
        let want: Vec<String> = ["virtio_blk", "virtio_pci", "nvme"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pos = crate::recipe::Pos::default();
        let order = load_order(&want, &i, &pos, &mut deps).unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci"
            ]
        );
        let err = load_order(&["virtio_x".into()], &i, &pos, &mut deps).unwrap_err();
        assert!(err.to_string().contains("virtio_x"), "{err}");
    }

    #[test]
    fn names_and_dep_files() {
        assert_eq!(
            name_of("kernel/drivers/char/hw_random/virtio-rng.ko.xz").as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(name_of("modules.dep"), None);
        let d = parse_dep_file("kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko:\n");
        assert_eq!(d["kernel/a.ko"], ["kernel/b.ko", "kernel/c.ko"]);
        assert!(d["kernel/b.ko"].is_empty());
    }

    #[test]
    fn modinfo_of_a_minimal_elf() {
        // One ELF64 LE file: header, then .shstrtab and .modinfo data, then 3 section headers.
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let info = b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_blk\0";
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let shstr_off = f.len();
        f.extend_from_slice(shstr);
        let info_off = f.len();
        f.extend_from_slice(info);
        let shoff = f.len();
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        for (name, off, size) in [
            (0u32, 0usize, 0usize),
            (1, shstr_off, shstr.len()),
            (11, info_off, info.len()),
        ] {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&h);
        }
        let mi = modinfo(&f).unwrap();
        assert!(mi.contains(&("depends".into(), "virtio,virtio_ring".into())));
        assert!(modinfo(&f[..40]).is_none());
    }
}
