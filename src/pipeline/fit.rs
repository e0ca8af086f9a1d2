//! check_fit: every filesystem's files fit its partition, known before the first byte is written.
//! Fitting an ext4 filesystem is planning all of it: the plans are kept for write_disk.

use super::BuildError;
use crate::disk::assemble::{self, Contents, DiskError};
use crate::disk::layout::DiskPlan;
use crate::fs::{ext4, fat};
use crate::recipe::Recipe;
use crate::tree::{Kind, Time};

impl super::Prepared {
    /// Checks that every filesystem fits its partition, and keeps the ext4 plans that showed it
    /// for write_disk.
    pub fn check_fit(&mut self) -> Result<(), BuildError> {
        self.ext4_plans = super::step("check_fit", || {
            check_fit(&self.plan, &self.contents, &self.recipe)
        })?;
        Ok(())
    }
}

/// Returns each partition's ext4 plan (`None` for the others), in partition order.
fn check_fit(
    plan: &DiskPlan,
    contents: &[Contents],
    recipe: &Recipe,
) -> Result<Vec<Option<ext4::Plan>>, BuildError> {
    let time = Time::from_secs(recipe.image.source_date_epoch);
    let mut ext4_plans = Vec::with_capacity(contents.len());
    for (i, (p, c)) in plan.partitions.iter().zip(contents).enumerate() {
        let planned = match c {
            Contents::Ext4(t) => {
                let opts = assemble::ext4_options(plan, i, &recipe.image.seed, time);
                let made = ext4::Plan::new(t, &opts).map_err(|source| {
                    BuildError::Disk(DiskError::Ext4 {
                        label: p.label.clone(),
                        size: p.size(),
                        source,
                    })
                })?;
                Some(made)
            }
            Contents::Fat(t) => {
                let fat_err = |source| {
                    BuildError::Disk(DiskError::Fat {
                        label: p.label.clone(),
                        size: p.size(),
                        source,
                    })
                };
                let mount = p.mount.as_deref().unwrap_or("");
                fat::check(t, mount).map_err(fat_err)?;
                fat::check_size(p.size()).map_err(fat_err)?;
                // FAT32 spends about 1/128 of the volume on its two FATs at 4 KiB clusters;
                // check_size made sure the volume is larger than that and the reserved MiB.
                let available = p.size().saturating_sub(p.size() / 128 + (1 << 20));
                let needed: u64 = t
                    .walk()
                    .iter()
                    .map(|(_, id)| match &t.node(*id).kind {
                        Kind::File(c) => c.len().div_ceil(4096) * 4096,
                        _ => 4096,
                    })
                    .sum();
                if needed > available {
                    return Err(BuildError::FatFull {
                        label: p.label.clone(),
                        needed,
                        available,
                        size: p.size(),
                    });
                }
                None
            }
            Contents::Empty => None,
        };
        ext4_plans.push(planned);
    }
    Ok(ext4_plans)
}
