//! The writer's errors, built with what the user needs to act on them.

use super::layout::{self, BLOCK_SIZE};
use super::writer::path_str;
use super::Ext4Error;
use crate::tree::Content;

pub(super) fn does_not_fit(
    blocks_needed: u64,
    blocks: u64,
    inodes_needed: u64,
    inodes: u64,
) -> Ext4Error {
    Ext4Error::DoesNotFit {
        blocks_needed,
        blocks_available: blocks,
        inodes_needed,
        inodes_available: inodes,
    }
}

pub(super) fn too_small(size: u64) -> Ext4Error {
    // The smallest size whose geometry works; found by stepping up (cheap: at most a few
    // hundred small geometries).
    let mut blocks = layout::MIN_BLOCKS;
    while layout::geometry(blocks, 0).is_err() {
        blocks += 256;
    }
    Ext4Error::TooSmall {
        size,
        min_size: blocks * BLOCK_SIZE,
    }
}

pub(super) fn content_err(path: &[u8], content: &Content, source: std::io::Error) -> Ext4Error {
    let from = match content {
        Content::Host { path, .. } => Some(path.clone()),
        Content::Stored(s) => Some(s.path.to_path_buf()),
        Content::Bytes(_) => None,
    };
    Ext4Error::Content {
        path: path_str(path),
        from,
        source,
    }
}
