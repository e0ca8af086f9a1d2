//! Linear directory blocks: `ext4_dir_entry_2` records and, with metadata_csum, a 12-byte fake
//! entry at the end of each block carrying the checksum (`ext4_dir_entry_tail`).
//! <https://docs.kernel.org/filesystems/ext4/dynamic.html#directory-entries>

use super::bytes::*;
use super::csum::crc32c_raw;
use super::layout::BLOCK_SIZE;

pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;
pub const TAIL_LEN: usize = 12;
/// Bytes of a block available to entries (the rest is the checksum tail).
pub const USABLE: usize = BLOCK_SIZE as usize - TAIL_LEN;
pub const NAME_MAX: usize = 255;

/// One directory entry (its `rec_len` is decided when packing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub inode: u32,
    pub file_type: u8,
    pub name: Vec<u8>,
}

impl DirEntry {
    /// The smallest record: 8 bytes of header and the name, padded to 4.
    pub fn min_rec_len(&self) -> usize {
        (8 + self.name.len()).div_ceil(4) * 4
    }

    /// Writes the entry at the start of `b` with the given `rec_len`.
    pub fn encode(&self, b: &mut [u8], rec_len: usize) {
        put_u32(b, 0, self.inode);
        put_u16(b, 4, rec_len as u16);
        b[6] = self.name.len() as u8;
        b[7] = self.file_type;
        b[8..8 + self.name.len()].copy_from_slice(&self.name);
    }

    /// Reads an entry and its `rec_len`.
    pub fn decode(b: &[u8]) -> (DirEntry, usize) {
        let n = b[6] as usize;
        let e = DirEntry {
            inode: get_u32(b, 0),
            file_type: b[7],
            name: b[8..8 + n].to_vec(),
        };
        (e, get_u16(b, 4) as usize)
    }
}

/// Packs entries in order into blocks; every block's last entry stretches to the tail. A block
/// with no entries gets one empty record (inode 0), as mke2fs's lost+found blocks have.
pub fn pack(entries: &[DirEntry]) -> Vec<Vec<DirEntry>> {
    let mut blocks: Vec<Vec<DirEntry>> = vec![Vec::new()];
    let mut used = 0;
    for e in entries {
        let r = e.min_rec_len();
        if used + r > USABLE {
            blocks.push(Vec::new());
            used = 0;
        }
        blocks.last_mut().unwrap().push(e.clone());
        used += r;
    }
    blocks
}

/// Encodes one leaf block with its checksum tail. `inode_seed` is the directory's seed.
pub fn encode_block(entries: &[DirEntry], inode_seed: u32) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let mut off = 0;
    if entries.is_empty() {
        put_u16(&mut b, 4, USABLE as u16);
    }
    for (i, e) in entries.iter().enumerate() {
        let rec = if i + 1 == entries.len() {
            USABLE - off
        } else {
            e.min_rec_len()
        };
        e.encode(&mut b[off..], rec);
        off += rec;
    }
    set_tail(&mut b, inode_seed);
    b
}

/// Writes the `ext4_dir_entry_tail` and its checksum over everything before it.
pub fn set_tail(b: &mut [u8], inode_seed: u32) {
    let t = USABLE;
    put_u32(b, t, 0);
    put_u16(b, t + 4, TAIL_LEN as u16);
    b[t + 6] = 0;
    b[t + 7] = 0xDE;
    let c = crc32c_raw(inode_seed, &b[..t]);
    put_u32(b, t + 8, c);
}

/// Reads back the entries of a leaf block (skipping empty records and the tail).
pub fn decode_block(b: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < USABLE {
        let (e, rec) = DirEntry::decode(&b[off..]);
        if e.inode != 0 {
            out.push(e);
        }
        if rec == 0 {
            break;
        }
        off += rec;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_packing() {
        let es: Vec<DirEntry> = (0..300)
            .map(|i| DirEntry {
                inode: 12 + i,
                file_type: FT_REG_FILE,
                name: format!("file-{i:04}").into_bytes(),
            })
            .collect();
        let blocks = pack(&es);
        assert!(blocks.len() > 1);
        let mut back = Vec::new();
        for blk in &blocks {
            let b = encode_block(blk, 99);
            assert_eq!(b[USABLE + 7], 0xDE);
            assert_eq!(get_u32(&b, USABLE + 8), crc32c_raw(99, &b[..USABLE]));
            back.extend(decode_block(&b));
        }
        assert_eq!(back, es);
        assert!(decode_block(&encode_block(&[], 1)).is_empty());
    }
}
