//! The ext4 writer against the real tools: every image must pass `e2fsck -fn`, and what debugfs
//! reads back must match the tree that was written.

mod common;

use common::ext4_check::*;
use kiln::tree::{Meta, Tree};

fn root() -> Tree {
    Tree::new(Meta::new(0o755, 0, 0, EPOCH))
}

#[test]
fn empty_filesystem_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    for size in [16 << 20, 64 << 20, (128 << 20) + 4096 * 3000] {
        let (img, report) = build(dir.path(), &format!("empty-{size}.img"), &root(), &opts(size));
        fsck(&img);
        assert_eq!(report.blocks_total, size / 4096);
    }
}
