//! Streams a whole disk into one sink, strictly in order: GPT head, each partition's filesystem
//! (gaps between them are zeros), GPT tail.

use super::gpt::{Gpt, GptError};
use super::layout::DiskPlan;
use crate::fs::{ext4, fat};
use crate::sink::{BlockSink, Window};
use crate::tree::{Time, Tree};
use crate::util::derive_uuid;
use std::io;

/// What goes inside one partition.
pub enum Contents {
    Fat(Tree),
    Ext4(Tree),
    /// `filesystem = "none"`: the partition is left zeroed.
    Empty,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error("partition \"{label}\" (FAT32, {size} bytes): {source}")]
    Fat {
        label: String,
        size: u64,
        source: fat::FatError,
    },
    #[error("partition \"{label}\" (ext4, {size} bytes): {source}")]
    Ext4 {
        label: String,
        size: u64,
        source: ext4::Ext4Error,
    },
    #[error("writing the disk: {0}")]
    Io(#[from] io::Error),
}

/// Filesystem options for a partition, all derived from the plan and the seed.
pub fn ext4_options(plan: &DiskPlan, index: usize, seed: &str, time: Time) -> ext4::Ext4Options {
    let p = &plan.partitions[index];
    ext4::Ext4Options {
        size: p.size(),
        uuid: p.fs_uuid,
        hash_seed: derive_uuid(seed, &format!("ext4-hash-seed:{}", p.label)),
        // The recipe refuses longer labels; never cut one inside a character regardless.
        label: crate::util::truncate_utf8(&p.label, 16).to_owned(),
        time,
        placement: match p.placement {
            crate::recipe::Placement::Stable => ext4::Placement::Stable,
            crate::recipe::Placement::Packed => ext4::Placement::Packed,
        },
    }
}

pub fn fat_options(plan: &DiskPlan, index: usize, time: Time) -> fat::FatOptions {
    let p = &plan.partitions[index];
    let id = p.fs_uuid;
    fat::FatOptions {
        size: p.size(),
        volume_id: u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
        label: p.label.clone(),
        time,
    }
}

/// The FAT volume id formatted as blkid shows it (`ABCD-1234`).
pub fn fat_volume_id_string(volume_id: u32) -> String {
    format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xFFFF)
}

/// Writes the disk described by `plan` with `contents[i]` in partition `i`.
pub fn write_disk(
    plan: &DiskPlan,
    contents: &[Contents],
    seed: &str,
    time: Time,
    sink: &mut dyn BlockSink,
) -> Result<(), DiskError> {
    write_disk_planned(plan, contents, &[], seed, time, sink)
}

/// [`write_disk`], writing partition `i`'s ext4 filesystem from `ext4[i]` where the build's fit
/// check left its plan there (made from `contents[i]` with [`ext4_options`]), so that no
/// filesystem is planned twice; a partition without one is planned here.
pub(crate) fn write_disk_planned(
    plan: &DiskPlan,
    contents: &[Contents],
    ext4: &[Option<ext4::Plan>],
    seed: &str,
    time: Time,
    sink: &mut dyn BlockSink,
) -> Result<(), DiskError> {
    let gpt = Gpt::build(plan)?;
    gpt.emit_head(sink)?;
    for (i, (p, c)) in plan.partitions.iter().zip(contents).enumerate() {
        let mut window = Window::new(sink, p.offset(), p.size());
        match c {
            Contents::Fat(tree) => {
                fat::write(tree, &fat_options(plan, i, time), &mut window).map_err(|source| {
                    DiskError::Fat {
                        label: p.label.clone(),
                        size: p.size(),
                        source,
                    }
                })?;
            }
            Contents::Ext4(tree) => {
                let written = match ext4.get(i).and_then(Option::as_ref) {
                    Some(planned) => ext4::write_planned(tree, planned, &mut window),
                    None => ext4::write(tree, &ext4_options(plan, i, seed, time), &mut window),
                };
                written.map_err(|source| DiskError::Ext4 {
                    label: p.label.clone(),
                    size: p.size(),
                    source,
                })?;
            }
            Contents::Empty => {}
        }
    }
    gpt.emit_tail(sink)?;
    Ok(())
}
