//! kmod's binary index (`modules.*.bin`): a compressed trie from a key (module name, alias
//! pattern, `symbol:NAME`) to values with priorities, which libkmod walks without parsing the
//! text files.
//!
//! The format (described in kmod's `libkmod/libkmod-index.c`, written by `tools/depmod.c`):
//! all integers are 32-bit big-endian.
//!
//! ```text
//! header: magic 0xB007F457, version 0x00020001, offset of the root node
//! node:   [prefix bytes, NUL]                        if flag 0x80000000 (PREFIX)
//!         [first, last: u8; (last-first+1) offsets]  if flag 0x20000000 (CHILDS)
//!         [count; count × (priority, value, NUL)]    if flag 0x40000000 (VALUES)
//! ```
//!
//! A node's offset carries its flags in the high nibble; a missing child is offset 0. Nodes are
//! written children first (post-order), so the root comes last. Values of one key are kept
//! sorted by priority, a new value going before older ones of the same priority. kmod only
//! takes 7-bit ASCII keys and values (a child table has 128 slots).

use std::collections::btree_map::{BTreeMap, Entry};

const MAGIC: u32 = 0xB007_F457;
const VERSION: u32 = 0x0002_0001;
const FLAG_PREFIX: u32 = 0x8000_0000;
const FLAG_VALUES: u32 = 0x4000_0000;
const FLAG_CHILDS: u32 = 0x2000_0000;
/// Offsets share their word with the flags.
const OFFSET_MASK: u32 = 0x0FFF_FFFF;

#[derive(Debug, Default)]
struct Node {
    prefix: Vec<u8>,
    values: Vec<(u32, Vec<u8>)>,
    children: BTreeMap<u8, Node>,
}

/// An index being built; [`Index::write`] gives the file's bytes.
#[derive(Debug, Default)]
pub struct Index {
    root: Node,
}

/// Why a key or value cannot go into an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("\"{}\" holds a byte that is not 7-bit ASCII (or a NUL), which kmod's index cannot hold", String::from_utf8_lossy(.0))]
    NotAscii(Vec<u8>),
    #[error("the index would exceed 256 MiB, the most its 28-bit node offsets can address")]
    TooLarge,
}

fn check(s: &[u8]) -> Result<(), IndexError> {
    match s.iter().all(|&b| b != 0 && b < 0x80) {
        true => Ok(()),
        false => Err(IndexError::NotAscii(s.to_vec())),
    }
}

impl Index {
    pub fn new() -> Self {
        Index::default()
    }

    /// Adds `value` under `key` (a key may hold several values, even equal ones).
    pub fn insert(&mut self, key: &[u8], value: &[u8], priority: u32) -> Result<(), IndexError> {
        check(key)?;
        check(value)?;
        let mut node = &mut self.root;
        let mut rest = key;
        loop {
            // Make the node's prefix a prefix of the rest of the key, splitting it where they
            // part: the node keeps the common part, a new child takes the node's remainder.
            let common = node
                .prefix
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if common < node.prefix.len() {
                let split_at = node.prefix[common];
                let tail = node.prefix[common + 1..].to_vec();
                node.prefix.truncate(common);
                let child = Node {
                    prefix: tail,
                    values: std::mem::take(&mut node.values),
                    children: std::mem::take(&mut node.children),
                };
                node.children.insert(split_at, child);
            }
            rest = &rest[common..];
            let Some((&ch, after)) = rest.split_first() else {
                add_value(&mut node.values, value, priority);
                return Ok(());
            };
            match node.children.entry(ch) {
                Entry::Vacant(slot) => {
                    let mut child = Node {
                        prefix: after.to_vec(),
                        ..Node::default()
                    };
                    add_value(&mut child.values, value, priority);
                    slot.insert(child);
                    return Ok(());
                }
                Entry::Occupied(next) => node = next.into_mut(),
            }
            rest = after;
        }
    }

    /// The index file.
    pub fn write(&self) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::with_capacity(64 << 10);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let root = write_node(&self.root, &mut out)?;
        out[8..12].copy_from_slice(&root.to_be_bytes());
        Ok(out)
    }
}

fn add_value(values: &mut Vec<(u32, Vec<u8>)>, value: &[u8], priority: u32) {
    let at = values
        .iter()
        .position(|(p, _)| *p >= priority)
        .unwrap_or(values.len());
    values.insert(at, (priority, value.to_vec()));
}

fn write_node(node: &Node, out: &mut Vec<u8>) -> Result<u32, IndexError> {
    let mut child_offsets = Vec::new();
    let range = node
        .children
        .keys()
        .next()
        .zip(node.children.keys().next_back());
    if let Some((&first, &last)) = range {
        for ch in first..=last {
            child_offsets.push(match node.children.get(&ch) {
                Some(c) => write_node(c, out)?,
                None => 0,
            });
        }
    }
    let offset = u32::try_from(out.len())
        .ok()
        .filter(|&o| o <= OFFSET_MASK)
        .ok_or(IndexError::TooLarge)?;
    let mut flags = 0;
    if !node.prefix.is_empty() {
        out.extend_from_slice(&node.prefix);
        out.push(0);
        flags |= FLAG_PREFIX;
    }
    if let Some((&first, &last)) = range {
        out.push(first);
        out.push(last);
        for o in child_offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        flags |= FLAG_CHILDS;
    }
    if !node.values.is_empty() {
        out.extend_from_slice(&(node.values.len() as u32).to_be_bytes());
        for (priority, v) in &node.values {
            out.extend_from_slice(&priority.to_be_bytes());
            out.extend_from_slice(v);
            out.push(0);
        }
        flags |= FLAG_VALUES;
    }
    Ok(offset | flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Looks `key` up the way libkmod's index reader does, from the file's bytes.
    fn lookup(file: &[u8], key: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let cstr = |at: usize| {
            let end = at + file[at..].iter().position(|&b| b == 0).unwrap();
            (file[at..end].to_vec(), end + 1)
        };
        let mut off = be(file, 8);
        let mut rest = key;
        loop {
            let mut at = (off & OFFSET_MASK) as usize;
            if off & FLAG_PREFIX != 0 {
                let (p, next) = cstr(at);
                at = next;
                if !rest.starts_with(&p) {
                    return vec![];
                }
                rest = &rest[p.len()..];
            }
            let (mut first, mut last) = (1u8, 0u8);
            let children_at = at;
            if off & FLAG_CHILDS != 0 {
                first = file[at];
                last = file[at + 1];
                at += 2 + 4 * (last as usize - first as usize + 1);
            }
            if rest.is_empty() {
                if off & FLAG_VALUES == 0 {
                    return vec![];
                }
                let n = be(file, at) as usize;
                at += 4;
                let mut v = Vec::new();
                for _ in 0..n {
                    let p = be(file, at);
                    let (s, next) = cstr(at + 4);
                    at = next;
                    v.push((p, s));
                }
                return v;
            }
            let ch = rest[0];
            if off & FLAG_CHILDS == 0 || ch < first || ch > last {
                return vec![];
            }
            off = be(file, children_at + 2 + 4 * (ch - first) as usize);
            if off == 0 {
                return vec![];
            }
            rest = &rest[1..];
        }
    }

    #[test]
    fn keys_split_and_read_back() {
        let mut i = Index::new();
        let keys: &[&[u8]] = &[b"virtio_net", b"virtio", b"virtio_blk", b"vfat", b"", b"v"];
        for (n, k) in keys.iter().enumerate() {
            i.insert(k, format!("value{n}").as_bytes(), n as u32)
                .unwrap();
        }
        // Priorities sort a key's values; equal ones put the newest first.
        i.insert(b"virtio", b"low", 0).unwrap();
        i.insert(b"virtio", b"high", 9).unwrap();
        i.insert(b"virtio", b"low2", 0).unwrap();
        let f = i.write().unwrap();
        assert_eq!(be(&f, 0), MAGIC);
        assert_eq!(be(&f, 4), VERSION);
        for (n, k) in keys.iter().enumerate() {
            if *k == b"virtio" {
                continue;
            }
            assert_eq!(
                lookup(&f, k),
                vec![(n as u32, format!("value{n}").into_bytes())]
            );
        }
        let v: Vec<_> = lookup(&f, b"virtio").into_iter().map(|x| x.1).collect();
        assert_eq!(v, [&b"low2"[..], b"low", b"value1", b"high"]);
        assert!(lookup(&f, b"virt").is_empty());
        assert!(lookup(&f, b"virtio_netx").is_empty());
        assert!(lookup(&f, b"x").is_empty());
    }

    #[test]
    fn an_empty_index_is_a_bare_root() {
        let f = Index::new().write().unwrap();
        // Header, then the root: no prefix, no children, no values, at offset 12 with no flag.
        assert_eq!(f.len(), 12);
        assert_eq!(be(&f, 8), 12);
    }

    #[test]
    fn non_ascii_is_refused() {
        let mut i = Index::new();
        assert!(matches!(
            i.insert("caf\u{e9}".as_bytes(), b"x", 0),
            Err(IndexError::NotAscii(_))
        ));
        assert!(i.insert(b"ok", b"a\0b", 0).is_err());
    }
}
