//! The 256-byte inode with 32 bytes of extra fields (nanosecond times, crtime, checksum high half)
//! and in-inode extended attribute space after them.
//! <https://docs.kernel.org/filesystems/ext4/dynamic.html#index-nodes>

use super::bytes::*;
use super::csum::crc32c_raw;
use crate::tree::Time;

pub const INODE_SIZE: usize = 256;
pub const GOOD_OLD_INODE_SIZE: usize = 128;
/// `i_extra_isize` and `s_want_extra_isize`: up to and including `i_projid`.
pub const EXTRA_ISIZE: u16 = 32;
/// Where in-inode xattrs start: after the extra fields.
pub const XATTR_IBODY_OFFSET: usize = GOOD_OLD_INODE_SIZE + EXTRA_ISIZE as usize;

pub const EXT4_INDEX_FL: u32 = 0x1000;
pub const EXT4_HUGE_FILE_FL: u32 = 0x40000;
pub const EXT4_EXTENTS_FL: u32 = 0x80000;

pub const ROOT_INO: u32 = 2;
pub const JOURNAL_INO: u32 = 8;
pub const FIRST_INO: u32 = 11;

/// An inode as kiln writes it (generation and version are always 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Type and permission bits.
    pub i_mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Time,
    pub ctime: Time,
    pub mtime: Time,
    pub crtime: Time,
    pub i_links_count: u16,
    /// In 512-byte sectors.
    pub blocks_512: u64,
    pub i_flags: u32,
    /// The 60-byte `i_block` area: extent root, fast symlink target or device number.
    pub i_block: [u8; 60],
    pub file_acl: u64,
    /// In-inode xattr area (from byte 160 to 256), already encoded; zeros when unused.
    pub ibody_xattr: [u8; INODE_SIZE - XATTR_IBODY_OFFSET],
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            i_mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            atime: Time::default(),
            ctime: Time::default(),
            mtime: Time::default(),
            crtime: Time::default(),
            i_links_count: 0,
            blocks_512: 0,
            i_flags: 0,
            i_block: [0; 60],
            file_acl: 0,
            ibody_xattr: [0; INODE_SIZE - XATTR_IBODY_OFFSET],
        }
    }
}

/// Splits a time into the 32-bit seconds field and the extra field (2 epoch bits, 30 bits of
/// nanoseconds), as `ext4_encode_extra_time` does.
pub fn encode_time(t: Time) -> (u32, u32) {
    let secs = t.secs;
    let epoch = ((secs - (secs as i32) as i64) >> 32) as u32 & 3;
    (secs as u32, epoch | (t.nanos << 2))
}

pub fn decode_time(lo: u32, extra: u32) -> Time {
    let mut secs = lo as i32 as i64;
    secs += ((extra & 3) as i64) << 32;
    Time {
        secs,
        nanos: extra >> 2,
    }
}

impl Inode {
    /// Encodes the inode numbered `ino`, with its checksum.
    pub fn encode(&self, fs_seed: u32, ino: u32) -> [u8; INODE_SIZE] {
        let mut b = [0u8; INODE_SIZE];
        put_u16(&mut b, 0x00, self.i_mode);
        put_u16(&mut b, 0x02, self.uid as u16);
        put_lo_hi32(&mut b, 0x04, 0x6C, self.size);
        let (a, ax) = encode_time(self.atime);
        let (c, cx) = encode_time(self.ctime);
        let (m, mx) = encode_time(self.mtime);
        let (cr, crx) = encode_time(self.crtime);
        put_u32(&mut b, 0x08, a);
        put_u32(&mut b, 0x0C, c);
        put_u32(&mut b, 0x10, m);
        put_u16(&mut b, 0x18, self.gid as u16);
        put_u16(&mut b, 0x1A, self.i_links_count);
        put_u32(&mut b, 0x1C, self.blocks_512 as u32);
        put_u32(&mut b, 0x20, self.i_flags);
        b[0x28..0x64].copy_from_slice(&self.i_block);
        put_u32(&mut b, 0x68, self.file_acl as u32);
        put_u16(&mut b, 0x74, (self.blocks_512 >> 32) as u16);
        put_u16(&mut b, 0x76, (self.file_acl >> 32) as u16);
        put_u16(&mut b, 0x78, (self.uid >> 16) as u16);
        put_u16(&mut b, 0x7A, (self.gid >> 16) as u16);
        put_u16(&mut b, 0x80, EXTRA_ISIZE);
        put_u32(&mut b, 0x84, cx);
        put_u32(&mut b, 0x88, mx);
        put_u32(&mut b, 0x8C, ax);
        put_u32(&mut b, 0x90, cr);
        put_u32(&mut b, 0x94, crx);
        b[XATTR_IBODY_OFFSET..].copy_from_slice(&self.ibody_xattr);
        let csum = checksum(&b, fs_seed, ino);
        put_u16(&mut b, 0x7C, csum as u16);
        put_u16(&mut b, 0x82, (csum >> 16) as u16);
        b
    }

    pub fn decode(b: &[u8]) -> Inode {
        Inode {
            i_mode: get_u16(b, 0x00),
            uid: get_u16(b, 0x02) as u32 | (get_u16(b, 0x78) as u32) << 16,
            gid: get_u16(b, 0x18) as u32 | (get_u16(b, 0x7A) as u32) << 16,
            size: get_lo_hi32(b, 0x04, 0x6C),
            atime: decode_time(get_u32(b, 0x08), get_u32(b, 0x8C)),
            ctime: decode_time(get_u32(b, 0x0C), get_u32(b, 0x84)),
            mtime: decode_time(get_u32(b, 0x10), get_u32(b, 0x88)),
            crtime: decode_time(get_u32(b, 0x90), get_u32(b, 0x94)),
            i_links_count: get_u16(b, 0x1A),
            blocks_512: get_u32(b, 0x1C) as u64 | (get_u16(b, 0x74) as u64) << 32,
            i_flags: get_u32(b, 0x20),
            i_block: b[0x28..0x64].try_into().unwrap(),
            file_acl: get_u32(b, 0x68) as u64 | (get_u16(b, 0x76) as u64) << 32,
            ibody_xattr: b[XATTR_IBODY_OFFSET..INODE_SIZE].try_into().unwrap(),
        }
    }
}

/// `ext4_inode_csum`: crc32c over the whole inode with both checksum halves zeroed, seeded with
/// the inode number and generation (0).
pub fn checksum(b: &[u8], fs_seed: u32, ino: u32) -> u32 {
    let mut copy = [0u8; INODE_SIZE];
    copy.copy_from_slice(&b[..INODE_SIZE]);
    put_u16(&mut copy, 0x7C, 0);
    put_u16(&mut copy, 0x82, 0);
    crc32c_raw(super::csum::inode_seed(fs_seed, ino, 0), &copy)
}

/// Device numbers in `i_block` as the kernel stores them: the old 8:8 form in word 0 when both
/// fit, else `new_encode_dev` in word 1.
pub fn encode_dev(major: u32, minor: u32) -> [u8; 60] {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        put_u32(&mut b, 0, (major << 8) | minor);
    } else {
        let v = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        put_u32(&mut b, 4, v);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let i = Inode {
            i_mode: 0o104755,
            uid: 70000,
            gid: 65537,
            size: 5 << 32,
            atime: Time {
                secs: 1_700_000_000,
                nanos: 999_999_999,
            },
            ctime: Time { secs: -5, nanos: 1 },
            mtime: Time {
                secs: 1 << 33,
                nanos: 0,
            },
            crtime: Time::from_secs(0),
            i_links_count: 3,
            blocks_512: 1 << 40,
            i_flags: EXT4_EXTENTS_FL,
            i_block: [9; 60],
            file_acl: 1 << 40,
            ibody_xattr: [1; INODE_SIZE - XATTR_IBODY_OFFSET],
        };
        let b = i.encode(42, 12);
        assert_eq!(Inode::decode(&b), i);
        let c = get_u16(&b, 0x7C) as u32 | (get_u16(&b, 0x82) as u32) << 16;
        assert_eq!(c, checksum(&b, 42, 12));
    }

    #[test]
    fn devices() {
        assert_eq!(get_u32(&encode_dev(8, 1), 0), 0x801);
        let b = encode_dev(259, 70000);
        assert_eq!(get_u32(&b, 0), 0);
        assert_eq!(
            get_u32(&b, 4),
            (70000 & 0xff) | (259 << 8) | ((70000 & !0xff) << 12)
        );
    }
}
