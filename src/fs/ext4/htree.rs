//! Hashed directories: the half-MD4 name hash, and `dx_root`/`dx_node` index blocks with their
//! `dx_tail` checksums. Leaves are ordinary directory blocks sorted by hash.
//! <https://docs.kernel.org/filesystems/ext4/dynamic.html#hash-tree-directories>

use super::bytes::*;
use super::csum::crc32c_raw;
use super::dirent::{self, DirEntry, USABLE};
use super::layout::BLOCK_SIZE;

/// Entries a `dx_root` holds: after 32 bytes of fake `.`/`..` and root info, before the tail.
pub const ROOT_LIMIT: usize = (BLOCK_SIZE as usize - 32 - 8) / 8;
/// Entries a `dx_node` holds: after an 8-byte fake empty entry, before the tail.
pub const NODE_LIMIT: usize = (BLOCK_SIZE as usize - 8 - 8) / 8;

const K2: u32 = 0o13240474631;
const K3: u32 = 0o15666365641;

fn md4_f(x: u32, y: u32, z: u32) -> u32 {
    z ^ (x & (y ^ z))
}
fn md4_g(x: u32, y: u32, z: u32) -> u32 {
    (x & y).wrapping_add((x ^ y) & z)
}
fn md4_h(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}

/// The kernel's `half_md4_transform`: three rounds of eight steps; step i updates a, d, c, b in
/// turn with the other three rotated into place.
fn half_md4_transform(buf: &mut [u32; 4], inp: &[u32; 8]) {
    type Round = (fn(u32, u32, u32) -> u32, u32, [(usize, u32); 8]);
    const ROUNDS: [Round; 3] = [
        (
            md4_f,
            0,
            [
                (0, 3),
                (1, 7),
                (2, 11),
                (3, 19),
                (4, 3),
                (5, 7),
                (6, 11),
                (7, 19),
            ],
        ),
        (
            md4_g,
            K2,
            [
                (1, 3),
                (3, 5),
                (5, 9),
                (7, 13),
                (0, 3),
                (2, 5),
                (4, 9),
                (6, 13),
            ],
        ),
        (
            md4_h,
            K3,
            [
                (3, 3),
                (7, 9),
                (2, 11),
                (6, 15),
                (1, 3),
                (5, 9),
                (0, 11),
                (4, 15),
            ],
        ),
    ];
    let mut v = *buf;
    for (f, k, steps) in ROUNDS {
        for (i, (word, shift)) in steps.iter().enumerate() {
            let (a, b, c, d) = match i % 4 {
                0 => (0, 1, 2, 3),
                1 => (3, 0, 1, 2),
                2 => (2, 3, 0, 1),
                _ => (1, 2, 3, 0),
            };
            let x = inp[*word].wrapping_add(k);
            v[a] = v[a]
                .wrapping_add(f(v[b], v[c], v[d]))
                .wrapping_add(x)
                .rotate_left(*shift);
        }
    }
    for i in 0..4 {
        buf[i] = buf[i].wrapping_add(v[i]);
    }
}

/// `str2hashbuf_signed`: packs up to 32 name bytes, as signed chars, into 8 words.
fn str2hashbuf(msg: &[u8], out: &mut [u32; 8]) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let take = msg.len().min(32);
    let mut w = 0;
    for (i, &c) in msg[..take].iter().enumerate() {
        val = ((c as i8) as i32 as u32).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < 8 {
        out[w] = val;
        w += 1;
    }
    while w < 8 {
        out[w] = pad;
        w += 1;
    }
}

/// The ext4 half-MD4 directory hash of `name` with `seed` (`s_hash_seed`), signed-char variant:
/// (major hash with the low bit clear, minor hash).
pub fn half_md4(name: &[u8], seed: &[u8; 16]) -> (u32, u32) {
    let mut buf = [0x6745_2301u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    if seed.iter().any(|&b| b != 0) {
        for (i, w) in buf.iter_mut().enumerate() {
            *w = get_u32(seed, 4 * i);
        }
    }
    let mut p = name;
    let mut inp = [0u32; 8];
    loop {
        str2hashbuf(p, &mut inp);
        half_md4_transform(&mut buf, &inp);
        if p.len() <= 32 {
            break;
        }
        p = &p[32..];
    }
    let mut hash = buf[1] & !1;
    if hash == 0x7fff_ffff << 1 {
        hash = (0x7fff_ffff - 1) << 1;
    }
    (hash, buf[2])
}

/// One index entry: names hashing at or above `hash` live under `block` (directory-relative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DxEntry {
    pub hash: u32,
    pub block: u32,
}

/// `dx_root_info`, the fields after the fake `.` and `..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DxRootInfo {
    pub hash_version: u8,
    pub indirect_levels: u8,
}

fn put_entries(b: &mut [u8], count_off: usize, limit: usize, entries: &[DxEntry]) {
    put_u16(b, count_off, limit as u16);
    put_u16(b, count_off + 2, entries.len() as u16);
    put_u32(b, count_off + 4, entries[0].block);
    for (i, e) in entries.iter().enumerate().skip(1) {
        put_u32(b, count_off + 8 * i, e.hash);
        put_u32(b, count_off + 8 * i + 4, e.block);
    }
}

fn get_entries(b: &[u8], count_off: usize) -> Vec<DxEntry> {
    let count = get_u16(b, count_off + 2) as usize;
    (0..count)
        .map(|i| DxEntry {
            hash: if i == 0 {
                0
            } else {
                get_u32(b, count_off + 8 * i)
            },
            block: get_u32(b, count_off + 8 * i + 4),
        })
        .collect()
}

/// `ext4_dx_csum`: over the header and used entries, then the tail's reserved word and a zero
/// checksum; stored in the tail right after `limit` entries.
fn set_dx_tail(b: &mut [u8], count_off: usize, limit: usize, count: usize, inode_seed: u32) {
    let tail = count_off + 8 * limit;
    put_u32(b, tail, 0);
    let c = crc32c_raw(inode_seed, &b[..count_off + 8 * count]);
    let c = crc32c_raw(c, &[0; 8]);
    put_u32(b, tail + 4, c);
}

/// Encodes a `dx_root` block for a directory whose `.` is `ino` and `..` is `parent`.
pub fn encode_root(
    ino: u32,
    parent: u32,
    info: DxRootInfo,
    entries: &[DxEntry],
    seed: u32,
) -> Vec<u8> {
    assert!(!entries.is_empty() && entries.len() <= ROOT_LIMIT);
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    DirEntry {
        inode: ino,
        file_type: dirent::FT_DIR,
        name: b".".to_vec(),
    }
    .encode(&mut b, 12);
    DirEntry {
        inode: parent,
        file_type: dirent::FT_DIR,
        name: b"..".to_vec(),
    }
    .encode(&mut b[12..], BLOCK_SIZE as usize - 12);
    b[28] = info.hash_version;
    b[29] = 8; // info_length
    b[30] = info.indirect_levels;
    put_entries(&mut b, 32, ROOT_LIMIT, entries);
    set_dx_tail(&mut b, 32, ROOT_LIMIT, entries.len(), seed);
    b
}

pub fn decode_root(b: &[u8]) -> (DxRootInfo, Vec<DxEntry>) {
    (
        DxRootInfo {
            hash_version: b[28],
            indirect_levels: b[30],
        },
        get_entries(b, 32),
    )
}

/// Encodes an interior `dx_node` block.
pub fn encode_node(entries: &[DxEntry], seed: u32) -> Vec<u8> {
    assert!(!entries.is_empty() && entries.len() <= NODE_LIMIT);
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    put_u16(&mut b, 4, BLOCK_SIZE as u16); // fake empty entry spanning the block
    put_entries(&mut b, 8, NODE_LIMIT, entries);
    set_dx_tail(&mut b, 8, NODE_LIMIT, entries.len(), seed);
    b
}

pub fn decode_node(b: &[u8]) -> Vec<DxEntry> {
    get_entries(b, 8)
}

/// Builds an indexed directory's blocks, in directory-block order: the root, then interior
/// nodes (two-level trees only), then the leaves. Entries are sorted by hash and packed full,
/// the way `e2fsck -D` lays them out; a leaf that starts inside a run of equal hashes is keyed
/// with the low "continued" bit set. `None` if even two levels cannot hold the entries.
pub fn build(
    ino: u32,
    parent: u32,
    entries: &[DirEntry],
    hash_seed: &[u8; 16],
    inode_seed: u32,
) -> Option<Vec<Vec<u8>>> {
    let mut hashed: Vec<(u32, u32, &DirEntry)> = entries
        .iter()
        .map(|e| {
            let (h, m) = half_md4(&e.name, hash_seed);
            (h, m, e)
        })
        .collect();
    hashed.sort_by(|a, b| (a.0, a.1, &a.2.name).cmp(&(b.0, b.1, &b.2.name)));
    // Pack leaves, remembering each leaf's key.
    let mut leaves: Vec<Vec<DirEntry>> = Vec::new();
    let mut keys: Vec<u32> = Vec::new();
    let mut used = USABLE;
    let mut prev: Option<u32> = None;
    for (h, _, e) in &hashed {
        let r = e.min_rec_len();
        if used + r > USABLE {
            let key = if leaves.is_empty() {
                0
            } else if prev == Some(*h) {
                h | 1
            } else {
                *h
            };
            leaves.push(Vec::new());
            keys.push(key);
            used = 0;
        }
        leaves.last_mut().unwrap().push((*e).clone());
        used += r;
        prev = Some(*h);
    }
    let n = leaves.len();
    let info = |levels| DxRootInfo {
        hash_version: super::superblock::DX_HASH_HALF_MD4,
        indirect_levels: levels,
    };
    let mut out = Vec::new();
    if n <= ROOT_LIMIT {
        let es: Vec<DxEntry> = (0..n)
            .map(|i| DxEntry {
                hash: keys[i],
                block: 1 + i as u32,
            })
            .collect();
        out.push(encode_root(ino, parent, info(0), &es, inode_seed));
    } else {
        let nodes = n.div_ceil(NODE_LIMIT);
        if nodes > ROOT_LIMIT {
            return None;
        }
        let first_leaf = 1 + nodes as u32;
        let root: Vec<DxEntry> = (0..nodes)
            .map(|k| DxEntry {
                hash: keys[k * NODE_LIMIT],
                block: 1 + k as u32,
            })
            .collect();
        out.push(encode_root(ino, parent, info(1), &root, inode_seed));
        for k in 0..nodes {
            let range = k * NODE_LIMIT..((k + 1) * NODE_LIMIT).min(n);
            let es: Vec<DxEntry> = range
                .map(|i| DxEntry {
                    hash: keys[i],
                    block: first_leaf + i as u32,
                })
                .collect();
            out.push(encode_node(&es, inode_seed));
        }
    }
    for leaf in &leaves {
        out.push(dirent::encode_block(leaf, inode_seed));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_md4_matches_debugfs() {
        // `debugfs -R "dx_hash -s 01234567-89ab-cdef-0123-456789abcdef -h half_md4 NAME"`
        let seed = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        for (name, want) in KNOWN {
            assert_eq!(half_md4(name.as_bytes(), &seed), *want, "{name}");
        }
    }

    const KNOWN: &[(&str, (u32, u32))] = &[
        ("a", (0x35dc0cc4, 0x3f1dacef)),
        ("lost+found", (0x663bdc72, 0x562ef5d8)),
        ("file-0001", (0xefb480e2, 0xf7e64a88)),
        (
            "a-name-longer-than-thirty-two-bytes-for-sure-yes",
            (0xf8bda224, 0x94eeb765),
        ),
        ("héllo-wörld", (0xbf6330ae, 0xce3dc3d2)),
    ];

    #[test]
    fn root_and_node_round_trip() {
        let es = vec![
            DxEntry { hash: 0, block: 1 },
            DxEntry {
                hash: 0x1000,
                block: 2,
            },
        ];
        let b = encode_root(
            2,
            2,
            DxRootInfo {
                hash_version: 1,
                indirect_levels: 0,
            },
            &es,
            5,
        );
        let (info, back) = decode_root(&b);
        assert_eq!(info.hash_version, 1);
        assert_eq!(back, es);
        assert_eq!(decode_node(&encode_node(&es, 5)), es);
    }

    #[test]
    fn build_two_levels() {
        let es: Vec<DirEntry> = (0..200_000)
            .map(|i| DirEntry {
                inode: 12,
                file_type: 1,
                name: format!("a-rather-long-file-name-{i:08}").into_bytes(),
            })
            .collect();
        let blocks = build(2, 2, &es, &[0; 16], 1).unwrap();
        let (info, root) = decode_root(&blocks[0]);
        assert_eq!(info.indirect_levels, 1);
        assert!(root.len() > 1);
    }
}
