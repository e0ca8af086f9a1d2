//! The GUID partition table, written with the `gpt` crate into a sparse in-memory device of the
//! disk's full size. Only the head (protective MBR, primary header and array) and the tail
//! (backup array and header) hold bytes; [`Gpt::emit_head`] and [`Gpt::emit_tail`] stream them.

use super::layout::{DiskPlan, SECTOR};
use super::sparse::SparseImage;
use crate::sink::BlockSink;
use std::collections::BTreeMap;
use std::io;

pub struct Gpt {
    dev: SparseImage,
    head_end: u64,
    tail_start: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("writing the GPT: {0}")]
pub struct GptError(String);

impl Gpt {
    /// Builds the protective MBR and both GPT copies for `plan`.
    pub fn build(plan: &DiskPlan) -> Result<Gpt, GptError> {
        let err = |e: &dyn std::fmt::Display| GptError(e.to_string());
        let lb = gpt::disk::LogicalBlockSize::Lb512;
        let mut dev = SparseImage::new(plan.size);
        let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
            u32::try_from(plan.total_sectors() - 1).unwrap_or(0xFFFF_FFFF),
        );
        mbr.overwrite_lba0(&mut dev).map_err(|e| err(&e))?;

        let disk_guid = uuid::Uuid::from_bytes(plan.disk_guid);
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(lb)
            .change_partition_count(true)
            .create_from_device(dev, Some(disk_guid))
            .map_err(|e| err(&e))?;

        // A full 128-entry array, as sgdisk and sfdisk make; unused entries are zero.
        let mut parts = BTreeMap::new();
        for n in 1..=super::layout::GPT_ENTRIES as u32 {
            parts.insert(n, gpt::partition::Partition::zero());
        }
        for p in &plan.partitions {
            parts.insert(
                p.number,
                gpt::partition::Partition {
                    part_type_guid: gpt::partition_types::Type {
                        guid: uuid::Uuid::from_bytes(p.type_guid),
                        os: gpt::partition_types::OperatingSystem::None,
                    },
                    part_guid: uuid::Uuid::from_bytes(p.unique_guid),
                    first_lba: p.first_lba,
                    last_lba: p.last_lba,
                    flags: 0,
                    name: p.label.clone(),
                },
            );
        }
        disk.update_partitions(parts).map_err(|e| err(&e))?;
        let dev = disk.write().map_err(|e| err(&e))?;
        let head_end = plan.first_usable_lba() * SECTOR;
        let tail_start = (plan.last_usable_lba() + 1) * SECTOR;
        Ok(Gpt {
            dev,
            head_end,
            tail_start,
        })
    }

    /// Streams LBA 0 up to the first usable LBA.
    pub fn emit_head(&self, sink: &mut dyn BlockSink) -> io::Result<()> {
        self.dev.emit(0..self.head_end, sink, 0)
    }

    /// Streams the backup array and header at the end of the disk.
    pub fn emit_tail(&self, sink: &mut dyn BlockSink) -> io::Result<()> {
        self.dev.emit(self.tail_start..self.dev.len(), sink, 0)
    }

    /// Offset where the backup structures start.
    pub fn tail_start(&self) -> u64 {
        self.tail_start
    }
}
