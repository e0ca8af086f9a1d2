//! Where disk bytes go. Every writer (GPT, FAT, ext4) targets [`BlockSink`], never a `File`, so the
//! same code writes a sparse image file or streams blocks to an EBS snapshot.

pub mod blocks;
#[cfg(feature = "aws")]
pub mod ebs;
mod file;
pub mod formats;
mod hash;
pub mod mapfile;
mod output;
pub mod qcow2;
pub mod vhd;
pub mod vmdk;

pub use file::FileSink;
pub use formats::{DiskFormat, DiskOutputs, FormatIdentity, Written};
pub use hash::{DiskDigest, HashSink, PendingDigest, Want};
pub use output::{temp_beside, TempOutput};

use std::io;

/// A sequential byte sink with holes.
///
/// Writers call [`BlockSink::write_at`] with offsets that never go backwards: each call starts at
/// or after the end of the previous one. Bytes that are skipped over are zeros, and this is how a
/// writer reports a range as all-zero: a file sink leaves a hole, an EBS sink sends no block.
pub trait BlockSink {
    /// Writes `data` at `offset` (bytes from the start of this sink).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
}

impl<S: BlockSink + ?Sized> BlockSink for &mut S {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, data)
    }
}

/// A window of another sink starting at `base`: a partition's writer sees offsets from the start
/// of its partition.
pub struct Window<'a> {
    inner: &'a mut dyn BlockSink,
    base: u64,
    len: u64,
}

impl<'a> Window<'a> {
    pub fn new(inner: &'a mut dyn BlockSink, base: u64, len: u64) -> Self {
        Window { inner, base, len }
    }
}

impl BlockSink for Window<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write of {} bytes at {offset} runs past the end of a {}-byte region",
                    data.len(),
                    self.len
                ),
            ));
        }
        self.inner.write_at(self.base + offset, data)
    }
}

/// An in-memory sink for tests and small regions: records every byte, zero-filling gaps.
#[derive(Default, Debug, Clone)]
pub struct VecSink {
    pub data: Vec<u8>,
}

impl BlockSink for VecSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let offset = offset as usize;
        if offset < self.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write at {offset} goes backwards (already at {})",
                    self.data.len()
                ),
            ));
        }
        self.data.resize(offset, 0);
        self.data.extend_from_slice(data);
        Ok(())
    }
}

/// Checks the ordering contract shared by all sinks; returns the new end.
pub(crate) fn check_order(pos: u64, offset: u64, len: usize) -> io::Result<u64> {
    if offset < pos {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("write at byte {offset} goes backwards: the sink is already at {pos}"),
        ));
    }
    Ok(offset + len as u64)
}
