//! kiln's own ext4 writer: turns a [`Tree`] into a complete ext4 filesystem (4 KiB blocks,
//! extents, flex_bg, 64bit, metadata_csum, htree directories, an empty internal journal) and
//! streams it into a [`BlockSink`] in one forward pass.
//!
//! All placement is decided first ([`plan`]) from sizes and hole maps alone; [`write`] then
//! emits metadata and file data in block order, reading each file once. Unused inode tables
//! and free space are never written: the sink treats gaps as zeros.

pub mod bitmap;
pub mod bytes;
pub mod csum;
pub mod dirent;
mod errors;
pub mod extent;
pub mod group_desc;
pub mod htree;
pub mod inode;
pub mod journal;
pub mod layout;
pub mod place;
mod summary;
pub mod superblock;
mod writer;
pub mod xattr;

pub use place::Placement;
pub(crate) use writer::Plan;
pub use writer::{EXT4_LINK_MAX, MAX_FILE_SIZE};

use crate::sink::BlockSink;
use crate::tree::{Time, Tree};
use std::path::PathBuf;

/// What to build.
#[derive(Debug, Clone)]
pub struct Ext4Options {
    /// Partition size in bytes; the fs fills `size / 4096` blocks (less a last group too small
    /// for its metadata, which mke2fs drops as well).
    pub size: u64,
    /// `s_uuid`, derived from the recipe seed by the caller.
    pub uuid: [u8; 16],
    /// `s_hash_seed` for directory hashes.
    pub hash_seed: [u8; 16],
    /// `s_volume_name`, at most 16 bytes.
    pub label: String,
    /// `source_date_epoch`: every superblock time, and the clamp for every inode time.
    pub time: Time,
    /// Where inodes and data go: [`Placement::Stable`] keeps unchanged files in place across
    /// versions (see [`place`]).
    pub placement: Placement,
}

/// Sizes of the filesystem built (or planned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Report {
    pub blocks_total: u64,
    pub blocks_used: u64,
    pub inodes_total: u64,
    pub inodes_used: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("the tree does not fit: it needs {blocks_needed} blocks and {inodes_needed} inodes, the filesystem has {blocks_available} blocks and {inodes_available} inodes")]
    DoesNotFit {
        blocks_needed: u64,
        blocks_available: u64,
        inodes_needed: u64,
        inodes_available: u64,
    },
    #[error("a {size}-byte partition is too small for an ext4 filesystem with a journal: it needs at least {min_size} bytes")]
    TooSmall { size: u64, min_size: u64 },
    #[error("the ext4 label {label:?} is {len} bytes long; ext4 labels hold at most 16 bytes")]
    LabelTooLong { label: String, len: usize },
    #[error("{path}: the name is {len} bytes long; ext4 names hold at most 255 bytes")]
    NameTooLong { path: String, len: usize },
    #[error(
        "{path}: the symlink target is {len} bytes long; ext4 symlinks hold at most 4095 bytes"
    )]
    SymlinkTooLong { path: String, len: usize },
    #[error("{path}: the file has {links} names (hard links); ext4 allows at most 65000 (EXT4_LINK_MAX)")]
    TooManyLinks { path: String, links: u64 },
    #[error("{path}: the file is {len} bytes long; ext4 files hold at most 17592186040320 bytes (2^32 - 1 blocks of 4 KiB)")]
    FileTooBig { path: String, len: u64 },
    #[error("{path}: the directory has too many entries for a two-level htree index")]
    DirectoryTooBig { path: String },
    #[error("{path}: {source}")]
    Xattr {
        path: String,
        source: xattr::XattrError,
    },
    #[error("{path}: cannot read its content{}: {source}", from.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default())]
    Content {
        path: String,
        from: Option<PathBuf>,
        source: std::io::Error,
    },
    #[error("writing the filesystem at byte {offset}: {source}")]
    Sink { offset: u64, source: std::io::Error },
}

/// Checks that `tree` fits and computes the layout, without reading file contents.
pub fn plan(tree: &Tree, opts: &Ext4Options) -> Result<Ext4Report, Ext4Error> {
    Ok(Plan::new(tree, opts)?.report())
}

/// Streams the whole filesystem into `sink`: offsets `0..size` from the partition start, in
/// non-decreasing order.
pub fn write(
    tree: &Tree,
    opts: &Ext4Options,
    sink: &mut dyn BlockSink,
) -> Result<Ext4Report, Ext4Error> {
    write_planned(tree, &Plan::new(tree, opts)?, sink)
}

/// [`write`] with a plan already made from `tree` (a build's fit check keeps its plans), so
/// that the filesystem is planned once.
pub(crate) fn write_planned(
    tree: &Tree,
    plan: &Plan,
    sink: &mut dyn BlockSink,
) -> Result<Ext4Report, Ext4Error> {
    plan.emit(tree, sink)?;
    Ok(plan.report())
}
