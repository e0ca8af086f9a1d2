//! Where each partition goes on the disk: pure arithmetic over the recipe, no I/O.
//!
//! GPT layout (UEFI 2.10, section 5.3): LBA 0 holds the protective MBR, LBA 1 the primary header,
//! LBA 2..34 the 128-entry partition array; the backup array and header mirror them at the end.

use crate::recipe::{Arch, Filesystem, PartSize, PartType, Partition, Placement, Pos, Recipe};
use crate::util::derive_uuid;

pub const SECTOR: u64 = 512;
/// Partitions start on 1 MiB boundaries, as every modern partitioner does.
pub const ALIGN: u64 = 1 << 20;
/// Partition sizes are whole 4 KiB blocks, so ext4 fills each one exactly.
pub const BLOCK: u64 = 4096;
pub const GPT_ENTRIES: u64 = 128;
pub const GPT_ENTRY_SIZE: u64 = 128;
/// Sectors taken by one copy of the partition entry array.
pub const GPT_ARRAY_SECTORS: u64 = GPT_ENTRIES * GPT_ENTRY_SIZE / SECTOR;

pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const SWAP_TYPE: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
/// Discoverable Partitions Specification: root partition types per architecture.
pub const ROOT_X86_64_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
pub const ROOT_AARCH64_TYPE: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

/// One partition, placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// 1-based GPT entry number.
    pub number: u32,
    pub label: String,
    /// Type GUID in textual byte order.
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    /// Inclusive, as GPT records it.
    pub last_lba: u64,
    pub filesystem: Filesystem,
    pub mount: Option<String>,
    /// `/etc/fstab` mount options, if the recipe gives them.
    pub options: Option<String>,
    /// UUID of the filesystem inside, derived from the seed (unused for `none`).
    pub fs_uuid: [u8; 16],
    /// How an ext4 filesystem here places files and inodes.
    pub placement: Placement,
    pub pos: Pos,
}

impl PartitionPlan {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    pub size: u64,
    pub disk_guid: [u8; 16],
    pub partitions: Vec<PartitionPlan>,
}

impl DiskPlan {
    pub fn total_sectors(&self) -> u64 {
        self.size / SECTOR
    }
    /// First LBA a partition may use (after the primary header and array).
    pub fn first_usable_lba(&self) -> u64 {
        2 + GPT_ARRAY_SECTORS
    }
    /// Last LBA a partition may use (before the backup array and header).
    pub fn last_usable_lba(&self) -> u64 {
        self.total_sectors() - 2 - GPT_ARRAY_SECTORS
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("the image size {size} bytes is not a whole number of 512-byte sectors; use a size such as \"4GiB\"")]
    UnalignedDisk { size: u64 },
    #[error("the image size {size} bytes is too small: a GPT disk needs at least {min} bytes")]
    DiskTooSmall { size: u64, min: u64 },
    #[error("{pos}: partition \"{label}\" needs bytes {start}..{end}, but partitions must end by byte {limit} on a {disk}-byte disk; shrink it or grow [image] size")]
    Exceeds {
        pos: Pos,
        label: String,
        start: u64,
        end: u64,
        limit: u64,
        disk: u64,
    },
    #[error("{pos}: partition \"{label}\" has size \"rest\" but is not the last partition; only the last partition may take the rest of the disk")]
    RestNotLast { pos: Pos, label: String },
    #[error("{pos}: partition \"{label}\" has size 0; give a size such as \"256MiB\"")]
    Empty { pos: Pos, label: String },
    #[error("the recipe has {count} partitions; a GPT disk made by kiln holds at most 128")]
    TooMany { count: usize },
}

fn parse_guid(s: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(s)
        .expect("built-in GUID constants are valid")
        .as_bytes()
}

pub fn type_guid(t: PartType, arch: Arch) -> [u8; 16] {
    match t {
        PartType::Esp => parse_guid(ESP_TYPE),
        PartType::Linux => parse_guid(LINUX_TYPE),
        PartType::Swap => parse_guid(SWAP_TYPE),
        PartType::Root => match arch {
            Arch::X86_64 => parse_guid(ROOT_X86_64_TYPE),
            Arch::Aarch64 => parse_guid(ROOT_AARCH64_TYPE),
        },
        PartType::Guid(g) => g,
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Places the recipe's partitions on its disk.
pub fn plan(recipe: &Recipe) -> Result<DiskPlan, LayoutError> {
    plan_parts(
        recipe.image.size,
        recipe.image.arch,
        &recipe.image.seed,
        &recipe.partitions,
    )
}

pub fn plan_parts(
    size: u64,
    arch: Arch,
    seed: &str,
    parts: &[Partition],
) -> Result<DiskPlan, LayoutError> {
    if size % SECTOR != 0 {
        return Err(LayoutError::UnalignedDisk { size });
    }
    // The first partition starts at 1 MiB and the backup GPT needs 33 sectors at the end.
    let min = ALIGN + BLOCK + (1 + GPT_ARRAY_SECTORS) * SECTOR;
    if size < min {
        return Err(LayoutError::DiskTooSmall { size, min });
    }
    if parts.len() as u64 > GPT_ENTRIES {
        return Err(LayoutError::TooMany { count: parts.len() });
    }
    let mut plan = DiskPlan {
        size,
        disk_guid: derive_uuid(seed, "disk"),
        partitions: Vec::new(),
    };
    let limit = (plan.last_usable_lba() + 1) * SECTOR;
    let mut next = plan.first_usable_lba() * SECTOR;
    for (i, p) in parts.iter().enumerate() {
        let start = align_up(next, ALIGN);
        let len = match p.size {
            PartSize::Bytes(n) => align_up(n, BLOCK),
            PartSize::Rest if i + 1 != parts.len() => {
                return Err(LayoutError::RestNotLast {
                    pos: p.pos.clone(),
                    label: p.label.clone(),
                })
            }
            PartSize::Rest => (limit.saturating_sub(start)) / BLOCK * BLOCK,
        };
        if len == 0 {
            if start >= limit {
                return Err(LayoutError::Exceeds {
                    pos: p.pos.clone(),
                    label: p.label.clone(),
                    start,
                    end: start,
                    limit,
                    disk: size,
                });
            }
            return Err(LayoutError::Empty {
                pos: p.pos.clone(),
                label: p.label.clone(),
            });
        }
        let end = start.saturating_add(len);
        if end > limit {
            return Err(LayoutError::Exceeds {
                pos: p.pos.clone(),
                label: p.label.clone(),
                start,
                end,
                limit,
                disk: size,
            });
        }
        plan.partitions.push(PartitionPlan {
            number: i as u32 + 1,
            label: p.label.clone(),
            type_guid: type_guid(p.ptype, arch),
            unique_guid: derive_uuid(seed, &format!("partition:{}", p.label)),
            first_lba: start / SECTOR,
            last_lba: end / SECTOR - 1,
            filesystem: p.filesystem,
            mount: p.mount.clone(),
            options: p.options.clone(),
            fs_uuid: derive_uuid(seed, &format!("filesystem:{}", p.label)),
            placement: p.placement,
            pos: p.pos.clone(),
        });
        next = end;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(label: &str, size: PartSize) -> Partition {
        Partition {
            label: label.into(),
            ptype: PartType::Linux,
            size,
            filesystem: Filesystem::None,
            mount: None,
            options: None,
            placement: Default::default(),
            pos: Pos::default(),
        }
    }

    #[test]
    fn partitions_are_aligned_disjoint_and_inside_the_usable_area() {
        // Sweep disk sizes from 4 MiB to 16 TiB, with a fixed first partition and a "rest".
        let mut size = 4u64 << 20;
        while size <= 16u64 << 40 {
            let parts = [
                part("a", PartSize::Bytes(1 << 20)),
                part("b", PartSize::Rest),
            ];
            let p = plan_parts(size, Arch::X86_64, "s", &parts).unwrap();
            let mut prev_end = p.first_usable_lba();
            for q in &p.partitions {
                assert_eq!(q.offset() % ALIGN, 0, "size {size}");
                assert_eq!(q.size() % BLOCK, 0);
                assert!(q.first_lba >= prev_end);
                assert!(q.last_lba <= p.last_usable_lba());
                prev_end = q.last_lba + 1;
            }
            size = size * 3 + 512;
        }
    }

    #[test]
    fn errors_name_the_partition_and_sizes() {
        let parts = [part("big", PartSize::Bytes(10 << 20))];
        let e = plan_parts(8 << 20, Arch::X86_64, "s", &parts).unwrap_err();
        assert!(
            matches!(e, LayoutError::Exceeds { ref label, .. } if label == "big"),
            "{e}"
        );
        let parts = [part("r", PartSize::Rest), part("x", PartSize::Bytes(4096))];
        assert!(matches!(
            plan_parts(64 << 20, Arch::X86_64, "s", &parts),
            Err(LayoutError::RestNotLast { .. })
        ));
        assert!(matches!(
            plan_parts(1000, Arch::X86_64, "s", &[]),
            Err(LayoutError::UnalignedDisk { .. })
        ));
    }

    #[test]
    fn guids_come_from_the_seed() {
        let parts = [part("a", PartSize::Rest)];
        let a = plan_parts(64 << 20, Arch::X86_64, "s1", &parts).unwrap();
        let b = plan_parts(64 << 20, Arch::X86_64, "s1", &parts).unwrap();
        let c = plan_parts(64 << 20, Arch::X86_64, "s2", &parts).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.disk_guid, c.disk_guid);
        assert_ne!(a.partitions[0].unique_guid, c.partitions[0].unique_guid);
    }
}
