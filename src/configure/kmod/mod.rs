//! What `depmod` writes for every kernel in the tree, so that udev and `modprobe` can load
//! modules by alias (`ena`, `nvme`, `virtio_net` on an EC2 instance): Debian's kernel packages
//! ship no `modules.dep`; their postinst runs `depmod VERSION`, which kiln never runs.
//!
//! ```text
//! kernels (/lib/modules/<version>, /usr/lib/modules/<version>)
//!   → config (depmod.d) → scan (module files, depmod's order) → elf (.modinfo, symbols)
//!   → graph (dependencies, topological order) → output (text files, index: the .bin trie)
//! ```
//!
//! The output is byte-identical to bookworm's kmod 30 `depmod` on the same files
//! (tests/kmod_depmod.rs compares them for Debian's cloud kernels, amd64 and arm64). Where
//! depmod depends on its host rather than on the files, kiln picks a fixed rule:
//! - two module files with one name and equal `search` rank: depmod keeps the first in
//!   `readdir` order, kiln the first in name order;
//! - a `.ko.gz` is not a module (bookworm's kmod is built without zlib).
//!
//! A module file that is not a readable ELF (truncated, not decompressible) is listed with no
//! dependencies, aliases or symbols, as depmod lists it, and named in the [`Summary`]. A
//! dependency cycle is an error, as it is for depmod (its postinst then fails).

mod config;
mod elf;
mod graph;
mod hash;
pub mod index;
mod output;
mod scan;

use std::collections::BTreeSet;
use std::io::Read;

use crate::boot::tree_io;
use crate::tree::{Content, Kind, NodeId, Time, Tree};

pub use config::kernel_matches;

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Config {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("kernel {version}: modules that need each other in a cycle, which depmod refuses (the kernel package's postinst would fail): {modules}")]
    Cycle { version: String, modules: String },
    #[error("kernel {version}: cannot write {file}: {source}")]
    Index {
        version: String,
        file: &'static str,
        source: index::IndexError,
    },
    #[error("kernel {version}: cannot place {path} in the tree: {problem}")]
    Place {
        version: String,
        path: String,
        problem: String,
    },
}

/// What was done, for the manifest and the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub kernels: Vec<KernelSummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelSummary {
    pub version: String,
    /// Where its modules are, e.g. `/lib/modules/6.1.0-56-cloud-amd64`.
    pub dir: String,
    pub modules: usize,
    pub aliases: usize,
    pub symbols: usize,
    /// Module files depmod (and so kiln) gets nothing from, with the reason.
    pub unreadable: Vec<Unreadable>,
    /// What depmod would warn about (passed over, as depmod does).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unreadable {
    pub path: String,
    pub reason: String,
}

/// A kernel's module directory.
struct KernelDir {
    version: String,
    /// Where it is in the tree.
    path: String,
    node: NodeId,
}

/// depmod's `is_version_number`: `sscanf("%u.%u")` succeeds.
fn is_version(name: &str) -> bool {
    output::scan_u(name.as_bytes())
        .and_then(|(_, rest)| rest.strip_prefix(b"."))
        .and_then(output::scan_u)
        .is_some()
}

fn kernels(tree: &mut Tree) -> Vec<KernelDir> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for root in ["/lib/modules", "/usr/lib/modules"] {
        for name in tree_io::list(tree, root) {
            let path = format!("{root}/{name}");
            let Some(id) = tree_io::lookup(tree, &path) else {
                continue;
            };
            if is_version(&name) && tree.node(id).is_dir() && seen.insert(id) {
                out.push(KernelDir {
                    version: name,
                    path,
                    node: id,
                });
            }
        }
    }
    out
}

/// Writes depmod's files for every kernel in the tree (0644 root:root, dated `time`).
pub fn apply(tree: &mut Tree, time: Time) -> Result<Summary, KmodError> {
    let mut summary = Summary::default();
    for k in kernels(tree) {
        summary.kernels.push(apply_one(tree, &k, time)?);
    }
    Ok(summary)
}

fn read_content(c: &Content, path: &str) -> Result<Result<Vec<u8>, String>, KmodError> {
    let io = |source| KmodError::Read {
        path: path.to_string(),
        source,
    };
    elf::decompress(c.open().map_err(io)?, c.len() as usize).map_err(io)
}

fn read_small(tree: &mut Tree, path: &str) -> Result<Option<Vec<u8>>, KmodError> {
    let Some(c) = tree_io::content(tree, path) else {
        return Ok(None);
    };
    let io = |source| KmodError::Read {
        path: path.to_string(),
        source,
    };
    let mut buf = Vec::new();
    c.open().map_err(io)?.read_to_end(&mut buf).map_err(io)?;
    Ok(Some(buf))
}

fn apply_one(tree: &mut Tree, k: &KernelDir, time: Time) -> Result<KernelSummary, KmodError> {
    // Module paths are named as depmod names them inside the image, wherever /lib points.
    let dir_name = format!("/lib/modules/{}", k.version);
    let cfg = config::Config::load(tree, &k.version)?;
    let mut walk_skipped = Vec::new();
    let mut found = scan::find(tree, k.node, dir_name.as_bytes(), &cfg, &mut walk_skipped);
    let order = read_small(tree, &format!("{}/modules.order", k.path))?;
    let order = order.as_deref().and_then(scan::parse_order);
    scan::sort(&mut found, dir_name.as_bytes(), order.as_ref());

    let mut summary = KernelSummary {
        version: k.version.clone(),
        dir: k.path.clone(),
        modules: found.len(),
        ..KernelSummary::default()
    };
    for (path, reason) in walk_skipped {
        summary.warnings.push(format!("{path}: {reason}"));
    }
    let mut elves = Vec::with_capacity(found.len());
    for f in &found {
        let path = String::from_utf8_lossy(&f.path).into_owned();
        let Kind::File(c) = &tree.node(f.node).kind else {
            unreachable!("scan only returns regular files")
        };
        let parsed = read_content(c, &path)?.and_then(|data| elf::read(&data));
        elves.push(parsed.unwrap_or_else(|reason| {
            summary.unreadable.push(Unreadable {
                path: path.clone(),
                reason,
            });
            elf::ModuleElf::default()
        }));
    }
    let refs: Vec<&elf::ModuleElf> = elves.iter().collect();
    let graph = graph::Graph::build(&refs).map_err(|c| {
        let mut names: Vec<String> =
            c.0.iter()
                .map(|&i| String::from_utf8_lossy(&found[i].name).into_owned())
                .collect();
        names.sort();
        KmodError::Cycle {
            version: k.version.clone(),
            modules: names.join(", "),
        }
    })?;
    let modules: Vec<output::Module> = found
        .iter()
        .zip(&elves)
        .map(|(f, e)| output::Module {
            name: &f.name,
            path: f.relpath(dir_name.as_bytes()).unwrap_or(&f.path),
            elf: e,
        })
        .collect();
    let builtin = read_small(tree, &format!("{}/modules.builtin", k.path))?;
    let builtin_modinfo = read_small(tree, &format!("{}/modules.builtin.modinfo", k.path))?;
    let out = output::all(&output::Inputs {
        modules: &modules,
        graph: &graph,
        builtin: builtin.as_deref(),
        builtin_modinfo: builtin_modinfo.as_deref(),
    })
    .map_err(|(file, source)| KmodError::Index {
        version: k.version.clone(),
        file,
        source,
    })?;
    summary.aliases = elves.iter().map(|e| e.aliases.len()).sum();
    summary.symbols = graph.owners.len();
    summary.warnings.extend(out.warnings);
    for (name, data) in out.files {
        let path = format!("{}/{name}", k.path);
        tree_io::put_file(tree, &path, Content::bytes(data), 0o644, time).map_err(|e| {
            KmodError::Place {
                version: k.version.clone(),
                path: path.clone(),
                problem: e.to_string(),
            }
        })?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(exports: &[&str], needs: &[&str]) -> Vec<u8> {
        let mut syms: Vec<(String, u8, u16)> = Vec::new();
        for e in exports {
            syms.push((format!("__crc_{e}"), 0x10, 0xfff1));
        }
        for n in needs {
            syms.push((n.to_string(), 0x10, 0));
        }
        let refs: Vec<(&str, u8, u16)> = syms.iter().map(|(n, i, s)| (&n[..], *i, *s)).collect();
        elf::tests::Builder::new(true, false)
            .section(".modinfo", b"license=GPL\0".to_vec())
            .symbols(&refs)
            .build()
    }

    fn tree_with(modules: &[(&str, Vec<u8>)]) -> Tree {
        let t0 = Time::from_secs(0);
        let mut t = Tree::new(crate::tree::Meta::new(0o755, 0, 0, t0));
        for (path, data) in modules {
            tree_io::put_file(&mut t, path, Content::bytes(data.clone()), 0o644, t0).unwrap();
        }
        t
    }

    #[test]
    fn a_dependency_cycle_is_an_error_and_writes_nothing() {
        let d = "/lib/modules/6.1.0-1-test/kernel";
        let mut t = tree_with(&[
            (&format!("{d}/a.ko"), module(&["a_fn"], &["b_fn"])),
            (&format!("{d}/b.ko"), module(&["b_fn"], &["a_fn"])),
            (&format!("{d}/c.ko"), module(&[], &["a_fn"])),
        ]);
        let e = apply(&mut t, Time::from_secs(0)).unwrap_err();
        assert!(
            e.to_string().contains("6.1.0-1-test") && e.to_string().ends_with(": a, b"),
            "{e}"
        );
        assert!(tree_io::lookup(&mut t, "/lib/modules/6.1.0-1-test/modules.dep").is_none());
    }

    #[test]
    fn a_small_kernel_end_to_end() {
        let d = "/lib/modules/6.1.0-1-test";
        let mut t = tree_with(&[
            (
                &format!("{d}/kernel/net/core.ko"),
                module(&["core_fn"], &["printk"]),
            ),
            (
                &format!("{d}/kernel/net/drv-a.ko"),
                module(&[], &["core_fn", "mid_fn"]),
            ),
            (
                &format!("{d}/kernel/net/mid.ko"),
                module(&["mid_fn"], &["core_fn"]),
            ),
            (&format!("{d}/kernel/bad.ko"), b"\x7fELF truncated".to_vec()),
            (
                &format!("{d}/modules.order"),
                b"kernel/net/drv-a.ko\nkernel/net/mid.ko\nkernel/net/core.ko\n".to_vec(),
            ),
        ]);
        let s = apply(&mut t, Time::from_secs(7)).unwrap();
        let k = &s.kernels[0];
        assert_eq!((k.modules, k.symbols), (4, 2));
        assert_eq!(k.unreadable.len(), 1);
        let dep = tree_io::read(&mut t, &format!("{d}/modules.dep"))
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(dep).unwrap(),
            "kernel/net/drv-a.ko: kernel/net/mid.ko kernel/net/core.ko\n\
             kernel/net/mid.ko: kernel/net/core.ko\n\
             kernel/net/core.ko:\n\
             kernel/bad.ko:\n"
        );
    }

    #[test]
    fn version_names() {
        for (n, ok) in [
            ("6.1.0-56-cloud-amd64", true),
            ("5.10", true),
            ("6", false),
            ("extra", false),
            ("6.x", false),
        ] {
            assert_eq!(is_version(n), ok, "{n}");
        }
    }
}
