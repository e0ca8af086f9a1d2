//! Extended attributes: entries in the inode after `i_extra_isize` (behind the 0xEA020000
//! magic), or in one external block with a header, entry hashes and a checksum. POSIX ACLs are
//! converted from the xattr wire format to ext4's compact on-disk format, as the kernel does.
//! <https://docs.kernel.org/filesystems/ext4/dynamic.html#extended-attributes>

use super::bytes::*;
use super::csum::crc32c_raw;
use super::layout::BLOCK_SIZE;

pub const XATTR_MAGIC: u32 = 0xEA02_0000;
const ENTRY_HEADER: usize = 16;
const BLOCK_HEADER: usize = 32;
/// Bytes of in-inode xattr space after the magic (inode bytes 164..256).
pub const IBODY_SPACE: usize = 256 - 160 - 4;

/// One attribute as stored: a name index (which prefix), the name without the prefix, a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name_index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XattrError {
    #[error("unsupported extended attribute name {0:?}: ext4 stores only user., trusted., security. and system. names")]
    UnsupportedName(String),
    #[error("extended attribute {0:?} holds a malformed POSIX ACL")]
    BadAcl(String),
    #[error(
        "extended attributes take {0} bytes, more than fit in the inode and one 4096-byte block"
    )]
    TooBig(usize),
}

const POSIX_ACL_XATTR_VERSION: u32 = 2;
const EXT4_ACL_VERSION: u32 = 1;
const ACL_USER: u16 = 2;
const ACL_GROUP: u16 = 8;

impl Xattr {
    /// Splits a full name into the kernel's name index and suffix, converting ACL values.
    pub fn from_full(name: &[u8], value: &[u8]) -> Result<Xattr, XattrError> {
        let lossy = || String::from_utf8_lossy(name).into_owned();
        let (index, suffix): (u8, &[u8]) = if name == b"system.posix_acl_access" {
            (2, b"")
        } else if name == b"system.posix_acl_default" {
            (3, b"")
        } else if let Some(s) = name.strip_prefix(b"user.") {
            (1, s)
        } else if let Some(s) = name.strip_prefix(b"trusted.") {
            (4, s)
        } else if let Some(s) = name.strip_prefix(b"security.") {
            (6, s)
        } else if let Some(s) = name.strip_prefix(b"system.") {
            (7, s)
        } else {
            return Err(XattrError::UnsupportedName(lossy()));
        };
        if suffix.len() > 255 || (suffix.is_empty() && index != 2 && index != 3) {
            return Err(XattrError::UnsupportedName(lossy()));
        }
        let value = if index == 2 || index == 3 {
            acl_to_disk(value).ok_or_else(|| XattrError::BadAcl(lossy()))?
        } else {
            value.to_vec()
        };
        Ok(Xattr {
            name_index: index,
            name: suffix.to_vec(),
            value,
        })
    }

    /// Bytes of entry header and name (`EXT4_XATTR_LEN`).
    fn entry_len(&self) -> usize {
        (ENTRY_HEADER + self.name.len()).div_ceil(4) * 4
    }
    /// Bytes of value (`EXT4_XATTR_SIZE`).
    fn value_len(&self) -> usize {
        self.value.len().div_ceil(4) * 4
    }
    pub fn space(&self) -> usize {
        self.entry_len() + self.value_len()
    }

    /// `ext4_xattr_hash_entry`: name bytes (unsigned), then the value as padded le32 words.
    pub fn hash(&self) -> u32 {
        let mut h: u32 = 0;
        for &c in &self.name {
            h = (h << 5) ^ (h >> 27) ^ c as u32;
        }
        for w in self.value.chunks(4) {
            let mut word = [0u8; 4];
            word[..w.len()].copy_from_slice(w);
            h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(word);
        }
        h
    }
}

/// Converts a `system.posix_acl_*` value (version 2, 8-byte entries) to ext4's format (version
/// 1, 4-byte entries for the *_OBJ/MASK/OTHER tags, 8-byte ones for named users and groups).
pub fn acl_to_disk(v: &[u8]) -> Option<Vec<u8>> {
    if v.len() < 4 || (v.len() - 4) % 8 != 0 || get_u32(v, 0) != POSIX_ACL_XATTR_VERSION {
        return None;
    }
    let mut out = EXT4_ACL_VERSION.to_le_bytes().to_vec();
    for e in v[4..].chunks(8) {
        let tag = get_u16(e, 0);
        out.extend_from_slice(&e[0..4]);
        match tag {
            ACL_USER | ACL_GROUP => out.extend_from_slice(&e[4..8]),
            0x01 | 0x04 | 0x10 | 0x20 => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The inverse of [`acl_to_disk`] (for tests and readers).
pub fn acl_from_disk(v: &[u8]) -> Option<Vec<u8>> {
    if v.len() < 4 || get_u32(v, 0) != EXT4_ACL_VERSION {
        return None;
    }
    let mut out = POSIX_ACL_XATTR_VERSION.to_le_bytes().to_vec();
    let mut i = 4;
    while i < v.len() {
        let tag = get_u16(v, i);
        out.extend_from_slice(&v[i..i + 4]);
        if tag == ACL_USER || tag == ACL_GROUP {
            out.extend_from_slice(&v[i + 4..i + 8]);
            i += 8;
        } else {
            out.extend_from_slice(&u32::MAX.to_le_bytes()); // ACL_UNDEFINED_ID
            i += 4;
        }
    }
    Some(out)
}

/// Writes entries at `b[0..]` (terminated by a zero word) and values packed down from `end`;
/// value offsets are relative to `base` (the first entry in-inode, the block start in a block).
fn write_entries(b: &mut [u8], entries_off: usize, end: usize, base: usize, xs: &[&Xattr]) {
    let mut off = entries_off;
    let mut vend = end;
    for x in xs {
        vend -= x.value_len();
        b[vend..vend + x.value.len()].copy_from_slice(&x.value);
        b[off] = x.name.len() as u8;
        b[off + 1] = x.name_index;
        put_u16(
            b,
            off + 2,
            if x.value.is_empty() {
                0
            } else {
                (vend - base) as u16
            },
        );
        put_u32(b, off + 4, 0); // e_value_inum
        put_u32(b, off + 8, x.value.len() as u32);
        put_u32(b, off + 12, x.hash());
        b[off + 16..off + 16 + x.name.len()].copy_from_slice(&x.name);
        off += x.entry_len();
    }
}

/// Splits attributes between the inode and a block: in-inode first, in order, while they fit.
pub fn split(xs: &[Xattr]) -> Result<(Vec<&Xattr>, Vec<&Xattr>), XattrError> {
    let mut ibody = Vec::new();
    let mut block = Vec::new();
    let mut used = 4; // terminating zero word
    for x in xs {
        if block.is_empty() && used + x.space() <= IBODY_SPACE {
            used += x.space();
            ibody.push(x);
        } else {
            block.push(x);
        }
    }
    let need: usize = BLOCK_HEADER + 4 + block.iter().map(|x| x.space()).sum::<usize>();
    if need > BLOCK_SIZE as usize {
        return Err(XattrError::TooBig(need));
    }
    Ok((ibody, block))
}

/// The in-inode area (inode bytes 160..256): magic, entries, values. All zeros when empty.
pub fn encode_ibody(xs: &[&Xattr]) -> [u8; 96] {
    let mut b = [0u8; 96];
    if xs.is_empty() {
        return b;
    }
    put_u32(&mut b, 0, XATTR_MAGIC);
    write_entries(&mut b, 4, 96, 4, xs);
    b
}

/// An external xattr block at `blocknr`, entries sorted as the kernel keeps them.
pub fn encode_block(xs: &[&Xattr], fs_seed: u32, blocknr: u64) -> Vec<u8> {
    let mut sorted: Vec<&Xattr> = xs.to_vec();
    sorted.sort_by(|a, b| {
        (a.name_index, a.name.len(), &a.name).cmp(&(b.name_index, b.name.len(), &b.name))
    });
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    put_u32(&mut b, 0, XATTR_MAGIC);
    put_u32(&mut b, 4, 1); // h_refcount
    put_u32(&mut b, 8, 1); // h_blocks
    write_entries(&mut b, BLOCK_HEADER, BLOCK_SIZE as usize, 0, &sorted);
    // ext4_xattr_rehash: fold the entry hashes into the block hash.
    let mut h: u32 = 0;
    for x in &sorted {
        h = (h << 16) ^ (h >> 16) ^ x.hash();
    }
    put_u32(&mut b, 12, h);
    // ext4_xattr_block_csum: fs seed, le64 block number, block with h_checksum zeroed.
    let c = crc32c_raw(fs_seed, &blocknr.to_le_bytes());
    let c = crc32c_raw(c, &b);
    put_u32(&mut b, 16, c);
    b
}

/// Reads entries back from an in-inode area or a block (for tests and readers).
pub fn decode(b: &[u8], in_inode: bool) -> Vec<Xattr> {
    let (mut off, base) = if in_inode { (4, 4) } else { (BLOCK_HEADER, 0) };
    if get_u32(b, 0) != XATTR_MAGIC {
        return Vec::new();
    }
    let mut out = Vec::new();
    while off + 4 <= b.len() && get_u32(b, off) != 0 {
        let n = b[off] as usize;
        let voff = base + get_u16(b, off + 2) as usize;
        let vlen = get_u32(b, off + 8) as usize;
        out.push(Xattr {
            name_index: b[off + 1],
            name: b[off + 16..off + 16 + n].to_vec(),
            value: b[voff..voff + vlen].to_vec(),
        });
        off += (ENTRY_HEADER + n).div_ceil(4) * 4;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(n: &str, v: &[u8]) -> Xattr {
        Xattr::from_full(n.as_bytes(), v).unwrap()
    }

    #[test]
    fn names_map_to_kernel_indexes() {
        assert_eq!(x("user.a", b"1").name_index, 1);
        assert_eq!(x("trusted.a", b"1").name_index, 4);
        assert_eq!(x("security.selinux", b"1").name_index, 6);
        assert_eq!(x("system.data", b"").name_index, 7);
        assert!(Xattr::from_full(b"os2.x", b"").is_err());
    }

    #[test]
    fn acl_conversion_round_trips() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 7u16, u32::MAX),
            (2, 5, 1000),
            (4, 5, u32::MAX),
            (0x10, 7, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let a = x("system.posix_acl_access", &v);
        assert_eq!(a.name_index, 2);
        assert_eq!(a.value.len(), 4 + 4 * 4 + 8);
        assert_eq!(acl_from_disk(&a.value).unwrap(), v);
    }

    #[test]
    fn ibody_and_block_round_trip() {
        let small = x("user.k", b"v");
        let big = x("user.big", &[7u8; 1000]);
        let all = vec![small.clone(), big.clone()];
        let (ib, bl) = split(&all).unwrap();
        assert_eq!(ib, vec![&small]);
        assert_eq!(bl, vec![&big]);
        assert_eq!(decode(&encode_ibody(&ib), true), vec![small]);
        let b = encode_block(&bl, 9, 1234);
        assert_eq!(decode(&b, false), vec![big]);
        let mut z = b.clone();
        put_u32(&mut z, 16, 0);
        let c = crc32c_raw(crc32c_raw(9, &1234u64.to_le_bytes()), &z);
        assert_eq!(get_u32(&b, 16), c);
        assert!(split(&[x("user.huge", &[0; 5000])]).is_err());
    }
}
