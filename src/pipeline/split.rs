//! split_filesystems: the one tree cut into each partition's filesystem.

use super::BuildError;
use crate::disk::assemble::Contents;
use crate::disk::layout::DiskPlan;
use crate::recipe::{Filesystem, Recipe};
use crate::tree::{Meta, Node, NodeId, Time, Tree};

/// Cuts the tree at each partition's mount point, deepest first; `/` keeps what is left.
pub(super) fn split_filesystems(
    mut tree: Tree,
    recipe: &Recipe,
    plan: &DiskPlan,
) -> Result<Vec<Contents>, BuildError> {
    let time = Time::from_secs(recipe.image.source_date_epoch);
    let mut order: Vec<usize> = (0..plan.partitions.len()).collect();
    let depth = |i: &usize| {
        plan.partitions[*i]
            .mount
            .as_deref()
            .map(|m| m.split('/').filter(|c| !c.is_empty()).count())
    };
    order.sort_by_key(|i| std::cmp::Reverse(depth(i)));
    let mut trees: Vec<Option<Tree>> = (0..plan.partitions.len()).map(|_| None).collect();
    let mut root_index = None;
    for i in order {
        let p = &plan.partitions[i];
        if p.filesystem == Filesystem::None {
            continue;
        }
        match p.mount.as_deref() {
            Some("/") => root_index = Some(i),
            Some(m) => {
                let at =
                    mount_point(&mut tree, m, time).ok_or_else(|| BuildError::MountNotDir {
                        pos: p.pos.clone(),
                        label: p.label.clone(),
                        mount: m.to_string(),
                        path: m.to_string(),
                    })?;
                trees[i] = Some(tree.split_off(at));
            }
            None => trees[i] = Some(Tree::new(Meta::new(0o755, 0, 0, time))),
        }
    }
    match root_index {
        Some(i) => trees[i] = Some(tree),
        None => {
            // Without a root filesystem only directories (mount points) may be left over.
            let walk = tree.walk();
            if let Some((path, _)) = walk.iter().find(|(_, id)| !tree.node(*id).is_dir()) {
                let example = String::from_utf8_lossy(path).into_owned();
                return Err(BuildError::Unmounted { example });
            }
        }
    }
    Ok(plan
        .partitions
        .iter()
        .zip(trees)
        .map(|(p, t)| match (p.filesystem, t) {
            (Filesystem::Vfat, Some(t)) => Contents::Fat(t),
            (Filesystem::Ext4, Some(t)) => Contents::Ext4(t),
            _ => Contents::Empty,
        })
        .collect())
}

/// The directory at `path`, created (0755, root) where missing; `None` if a component exists
/// and is not a directory.
fn mount_point(tree: &mut Tree, path: &str, time: Time) -> Option<NodeId> {
    let mut at = Tree::ROOT;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        at = match tree.child(at, comp.as_bytes()) {
            Some(id) if tree.node(id).is_dir() => id,
            Some(_) => return None,
            None => tree.add(at, comp.as_bytes(), Node::dir(Meta::new(0o755, 0, 0, time))),
        };
    }
    Some(at)
}
