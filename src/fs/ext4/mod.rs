//! kiln's own ext4 writer. PLACEHOLDER in main until the writer branch lands: it refuses to write.

use crate::sink::BlockSink;
use crate::tree::{Time, Tree};

pub struct Ext4Options {
    pub size: u64,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub label: String,
    pub time: Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Report {
    pub blocks_total: u64,
    pub blocks_used: u64,
    pub inodes_total: u64,
    pub inodes_used: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("the ext4 writer is not in this build yet")]
    Missing,
}

pub fn plan(_tree: &Tree, _opts: &Ext4Options) -> Result<Ext4Report, Ext4Error> {
    Err(Ext4Error::Missing)
}

pub fn write(
    _tree: &Tree,
    _opts: &Ext4Options,
    _sink: &mut dyn BlockSink,
) -> Result<Ext4Report, Ext4Error> {
    Err(Ext4Error::Missing)
}
