//! Repairs the `.` and `..` entries that `fatfs` 0.3.6 writes.
//!
//! fatfs 0.3.6 (the newest on crates.io) puts a long-file-name entry in front of every short
//! entry, including `.` and `..` of each new directory. The FAT specification (Microsoft FAT32
//! File System Specification, section 6.x "." and ".." entries) requires `.` and `..` to be the
//! first two 32-byte entries of a directory, and `fsck.fat` rejects anything else. This pass walks
//! the finished volume and moves the two short entries to the front, marking the two slots they
//! leave as deleted (0xE5), which every FAT reader skips. A `..` that names the root directory
//! must hold cluster 0 (the same section), where fatfs writes the root's cluster number.
//!
//! fatfs also leaves the FSInfo free-cluster count "unknown"; [`repair`] counts the free
//! clusters and records them, as mkfs.fat does.

use std::io::{self, Read, Seek, SeekFrom, Write};

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_DIR: u8 = 0x10;
const END_OF_CHAIN: u32 = 0x0FFF_FFF8;

struct Geometry {
    bytes_per_cluster: u64,
    fat_start: u64,
    data_start: u64,
    root_cluster: u32,
    clusters: u32,
    fsinfo: u64,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn geometry<D: Read + Seek>(dev: &mut D) -> io::Result<Geometry> {
    let mut bs = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut bs)?;
    let bps = le16(&bs, 11);
    let spc = u64::from(bs[13]);
    let reserved = le16(&bs, 14);
    let fats = u64::from(bs[16]);
    let fat_size = u64::from(le32(&bs, 36));
    if bps == 0 || spc == 0 || fat_size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a FAT32 boot sector",
        ));
    }
    let total = match le16(&bs, 19) {
        0 => u64::from(le32(&bs, 32)),
        n => n,
    };
    let data_start = reserved + fats * fat_size;
    Ok(Geometry {
        clusters: (total.saturating_sub(data_start) / spc) as u32,
        fsinfo: le16(&bs, 48) * bps,
        bytes_per_cluster: bps * spc,
        fat_start: reserved * bps,
        data_start: (reserved + fats * fat_size) * bps,
        root_cluster: le32(&bs, 44),
    })
}

/// FAT32 needs at least 65,525 clusters (FAT specification, section 3.5); fatfs formats smaller
/// volumes anyway, which no FAT32 reader accepts.
pub fn check_fat32<D: Read + Seek>(dev: &mut D) -> io::Result<()> {
    let g = geometry(dev)?;
    if g.clusters < 65_525 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it would have {} clusters, and FAT32 needs at least 65525",
                g.clusters
            ),
        ));
    }
    Ok(())
}

fn chain<D: Read + Seek>(dev: &mut D, g: &Geometry, first: u32) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut c = first;
    while (2..END_OF_CHAIN).contains(&c) {
        if out.len() > 1 << 22 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "FAT cluster chain loops",
            ));
        }
        out.push(c);
        let mut e = [0u8; 4];
        dev.seek(SeekFrom::Start(g.fat_start + u64::from(c) * 4))?;
        dev.read_exact(&mut e)?;
        c = u32::from_le_bytes(e) & 0x0FFF_FFFF;
    }
    Ok(out)
}

fn cluster_offset(g: &Geometry, c: u32) -> u64 {
    g.data_start + u64::from(c - 2) * g.bytes_per_cluster
}

fn is_dot(e: &[u8], name: &[u8; 11]) -> bool {
    &e[..11] == name && e[11] & ATTR_DIR != 0
}

/// Moves `.` and `..` to the front of every directory below the root.
pub fn repair<D: Read + Write + Seek>(dev: &mut D) -> io::Result<()> {
    let g = geometry(dev)?;
    let mut stack = vec![g.root_cluster];
    while let Some(dir) = stack.pop() {
        for c in chain(dev, &g, dir)? {
            let mut buf = vec![0u8; g.bytes_per_cluster as usize];
            dev.seek(SeekFrom::Start(cluster_offset(&g, c)))?;
            dev.read_exact(&mut buf)?;
            for e in buf.chunks(ENTRY) {
                if e[0] == 0 {
                    break;
                }
                if e[0] == 0xE5 || e[11] == ATTR_LFN || e[11] & ATTR_DIR == 0 || e[0] == b'.' {
                    continue;
                }
                let first = (le16(e, 20) << 16 | le16(e, 26)) as u32;
                fix_dots(dev, &g, first, dir == g.root_cluster)?;
                stack.push(first);
            }
        }
    }
    write_free_count(dev, &g)
}

fn write_free_count<D: Read + Write + Seek>(dev: &mut D, g: &Geometry) -> io::Result<()> {
    let mut fat = vec![0u8; (g.clusters as usize + 2) * 4];
    dev.seek(SeekFrom::Start(g.fat_start))?;
    dev.read_exact(&mut fat)?;
    let free: Vec<u32> = (2..g.clusters + 2)
        .filter(|&c| le32(&fat, c as usize * 4) & 0x0FFF_FFFF == 0)
        .collect();
    let mut info = [0u8; 512];
    dev.seek(SeekFrom::Start(g.fsinfo))?;
    dev.read_exact(&mut info)?;
    if le32(&info, 0) != 0x4161_5252 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "FSInfo sector has no signature",
        ));
    }
    info[488..492].copy_from_slice(&(free.len() as u32).to_le_bytes());
    info[492..496].copy_from_slice(&free.first().copied().unwrap_or(0xFFFF_FFFF).to_le_bytes());
    dev.seek(SeekFrom::Start(g.fsinfo))?;
    dev.write_all(&info)
}

fn fix_dots<D: Read + Write + Seek>(
    dev: &mut D,
    g: &Geometry,
    first: u32,
    parent_is_root: bool,
) -> io::Result<()> {
    let at = cluster_offset(g, first);
    let mut head = [0u8; 4 * ENTRY];
    dev.seek(SeekFrom::Start(at))?;
    dev.read_exact(&mut head)?;
    let dot = b".          ";
    let dotdot = b"..         ";
    let e = |i: usize| &head[i * ENTRY..(i + 1) * ENTRY];
    let mut fixed = head;
    if is_dot(e(0), dot) && is_dot(e(1), dotdot) {
        // Already in place (a directory fatfs did not create, or one repaired before).
    } else if e(0)[11] == ATTR_LFN
        && is_dot(e(1), dot)
        && e(2)[11] == ATTR_LFN
        && is_dot(e(3), dotdot)
    {
        fixed = [0u8; 4 * ENTRY];
        fixed[..ENTRY].copy_from_slice(e(1));
        fixed[ENTRY..2 * ENTRY].copy_from_slice(e(3));
        fixed[2 * ENTRY] = 0xE5;
        fixed[3 * ENTRY] = 0xE5;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("directory at cluster {first} does not start with the expected . and .."),
        ));
    }
    if parent_is_root {
        fixed[ENTRY + 20..ENTRY + 22].fill(0);
        fixed[ENTRY + 26..ENTRY + 28].fill(0);
    }
    dev.seek(SeekFrom::Start(at))?;
    dev.write_all(&fixed)
}
