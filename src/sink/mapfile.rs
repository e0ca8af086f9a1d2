//! `<stem>.blocks`: a disk's block map (the stream [`super::blocks`] defines) as a file beside its
//! manifest, and read back: the previous version's map is what an incremental upload compares
//! the new disk with (`kiln upload --parent-blocks`).
//!
//! The file is the block map's bytes exactly, so `sha256sum out/x.blocks` prints the manifest's
//! `image.blocks.sha256`, and `scripts/blocks-digest --map` writes the same file from an image.

use super::blocks::{BlockMapInfo, BLOCK_SIZE, ENTRY_LEN, HEADER_LEN, MAGIC, VERSION};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A whole block map: its bytes and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapData {
    pub info: BlockMapInfo,
    bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a kiln block map: {why}")]
    Bad { path: String, why: String },
}

/// The block map's path for an image: `out/x.raw` → `out/x.blocks`.
pub fn blocks_path(image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    image.with_file_name(format!("{stem}.blocks"))
}

impl MapData {
    /// A map whose digest was folded in as its bytes grew (see [`super::blocks::BlockMap`]).
    pub(crate) fn from_parts(info: BlockMapInfo, bytes: Vec<u8>) -> Self {
        MapData { info, bytes }
    }

    /// Checks `bytes` against the format (header, whole entries, ascending indices inside the
    /// disk) and digests them; `what` names them in errors.
    pub fn parse(bytes: Vec<u8>, what: &str) -> Result<MapData, MapError> {
        let bad = |why: String| MapError::Bad {
            path: what.to_string(),
            why,
        };
        if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
            return Err(bad("it does not start with \"KILNBMAP\"".into()));
        }
        let version = u32::from_be_bytes(bytes[8..12].try_into().unwrap_or_default());
        let block_size = u32::from_be_bytes(bytes[12..16].try_into().unwrap_or_default());
        if version != VERSION || u64::from(block_size) != BLOCK_SIZE {
            return Err(bad(format!(
                "format version {version} with {block_size}-byte blocks; this kiln reads \
                 version {VERSION} with {BLOCK_SIZE}-byte blocks"
            )));
        }
        let body = bytes.len() - HEADER_LEN;
        if body % ENTRY_LEN != 0 {
            return Err(bad(format!(
                "{body} bytes of entries is not a whole number of {ENTRY_LEN}-byte entries"
            )));
        }
        let map = MapData {
            info: BlockMapInfo {
                version,
                block_size: BLOCK_SIZE,
                blocks: (body / ENTRY_LEN) as u64,
                sha256: crate::util::hex(&Sha256::digest(&bytes)),
            },
            bytes,
        };
        let blocks = map.disk_size().div_ceil(BLOCK_SIZE);
        let mut next = 0;
        for (i, _) in map.entries() {
            if i < next || i >= blocks {
                return Err(bad(format!(
                    "block {i} is out of order or past the disk's {blocks} blocks"
                )));
            }
            next = i + 1;
        }
        Ok(map)
    }

    /// Reads and checks `<stem>.blocks` (or any map file).
    pub fn read(path: &Path) -> Result<MapData, MapError> {
        let bytes = std::fs::read(path).map_err(|source| MapError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(bytes, &path.display().to_string())
    }

    /// Writes the map to `path` atomically (temp file, renamed).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::util::write_atomic(path, &self.bytes)
    }

    /// The map's bytes: the stream whose SHA-256 is `info.sha256`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The disk's size in bytes (from the header).
    pub fn disk_size(&self) -> u64 {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.bytes[16..24]);
        u64::from_be_bytes(s)
    }

    /// The non-zero blocks, ascending: (index, SHA-256 of the block).
    pub fn entries(&self) -> impl Iterator<Item = (u64, [u8; 32])> + '_ {
        self.bytes[HEADER_LEN..].chunks_exact(ENTRY_LEN).map(|e| {
            let mut i = [0u8; 8];
            i.copy_from_slice(&e[..8]);
            let mut d = [0u8; 32];
            d.copy_from_slice(&e[8..]);
            (u64::from_be_bytes(i), d)
        })
    }

    /// The map of a disk of `disk_size` bytes whose non-zero blocks are `entries` (ascending):
    /// how a parent snapshot's map is rebuilt from the blocks read back.
    pub fn from_entries(
        disk_size: u64,
        entries: impl IntoIterator<Item = (u64, [u8; 32])>,
    ) -> Self {
        let mut m = super::blocks::BlockMap::new(disk_size);
        for (i, d) in entries {
            m.add(i, &d);
        }
        m.finish_map()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::blocks::BlockMapper;

    #[test]
    fn a_map_parses_back_to_itself_and_names_the_same_disk() {
        let mut m = BlockMapper::new(5 * BLOCK_SIZE + 7);
        m.write(3, &[1; 10]);
        m.write(2 * BLOCK_SIZE, &[2; 10]);
        m.write(5 * BLOCK_SIZE + 1, &[3; 2]);
        let map = m.finish_map();
        assert_eq!(map.info.blocks, 3);
        assert_eq!(
            map.info.sha256,
            crate::util::hex(&Sha256::digest(map.bytes()))
        );
        let back = MapData::parse(map.bytes().to_vec(), "x").unwrap();
        assert_eq!(back, map);
        assert_eq!(back.disk_size(), 5 * BLOCK_SIZE + 7);
        let idx: Vec<u64> = back.entries().map(|e| e.0).collect();
        assert_eq!(idx, [0, 2, 5]);
        assert_eq!(MapData::from_entries(back.disk_size(), back.entries()), map);
        assert_eq!(MapData::from_entries(BLOCK_SIZE, []).info.blocks, 0);
    }

    #[test]
    fn a_damaged_map_is_refused_with_the_reason() {
        let mut m = BlockMapper::new(4 * BLOCK_SIZE);
        m.write(0, &[1; 10]);
        m.write(3 * BLOCK_SIZE, &[1; 10]);
        let good = m.finish_map().bytes().to_vec();
        let err = |b: Vec<u8>| MapData::parse(b, "m.blocks").unwrap_err().to_string();
        assert!(err(b"KILNBMAX".to_vec()).contains("does not start with"));
        let mut v2 = good.clone();
        v2[11] = 2;
        assert!(err(v2).contains("format version 2"));
        assert!(err(good[..good.len() - 1].to_vec()).contains("whole number"));
        // Entries swapped: out of order.
        let mut swapped = good[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&good[HEADER_LEN + ENTRY_LEN..]);
        swapped.extend_from_slice(&good[HEADER_LEN..HEADER_LEN + ENTRY_LEN]);
        assert!(err(swapped).contains("out of order"));
        // A block past the disk's end.
        let mut small = good.clone();
        small[16..24].copy_from_slice(&(2 * BLOCK_SIZE).to_be_bytes());
        assert!(err(small).contains("past the disk's 2 blocks"));
    }
}
