//! ext4's limits at their edges, against e2fsck: hard links (EXT4_LINK_MAX), a directory's link
//! count past 65,000 (dir_nlink), files past 2^32 blocks, and the inode count mke2fs would give.
//!
//! "Clean" means both `e2fsck -fn` passes and `e2fsck -fy` changes nothing (the image's sha256
//! is the same after it): e2fsck repairs some things without calling them errors, and a
//! silently repaired count is still a wrong one.

mod common;

use common::ext4_check::*;
use kiln::fs::ext4::{self, Ext4Error, EXT4_LINK_MAX, MAX_FILE_SIZE};
use kiln::tree::{Content, Kind, Meta, Node, Tree};
use std::path::Path;
use std::process::Command;

fn root() -> Tree {
    Tree::new(Meta::new(0o755, 0, 0, EPOCH))
}

/// `e2fsck -fn` clean, and `e2fsck -fy` (run at the image's time) exits 0 changing nothing but
/// what every e2fsck run that may write changes: the primary superblock's `s_kbytes_written`
/// (0x178) and its checksum (0x3FC). `cmp -l` lists every other byte it changed.
fn clean_and_unchanged(img: &Path) {
    fsck(img);
    let before = img.with_extension("before");
    common::run_ok(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(img)
            .arg(&before),
    );
    // At the image's own time (EPOCH), so that s_wtime and s_lastcheck are rewritten as they were;
    // the clock stopped there (-f without `@`), or a run slowed past a second by a loaded machine
    // writes the next second and fails the comparison.
    let out = common::run(
        Command::new("faketime")
            .args(["-f", "2023-11-14 22:13:20", "e2fsck", "-fy"])
            .arg(img)
            .env("TZ", "UTC"),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "e2fsck -fy: {text}");
    let cmp = common::run(Command::new("cmp").arg("-l").arg(&before).arg(img));
    let allowed = |at: u64| {
        (1024 + 0x178..1024 + 0x180).contains(&at) || (1024 + 0x3fc..1024 + 0x400).contains(&at)
    };
    let changed: Vec<String> = String::from_utf8_lossy(&cmp.stdout)
        .lines()
        .filter(|l| {
            let at: u64 = l.split_whitespace().next().unwrap().parse().unwrap();
            !allowed(at - 1)
        })
        .take(20)
        .map(str::to_owned)
        .collect();
    assert!(
        changed.is_empty(),
        "e2fsck -fy changed the image (cmp -l, 1-based offsets):\n{}\n{text}",
        changed.join("\n")
    );
    std::fs::remove_file(&before).unwrap();
}

/// A file with `names` hard links in one directory.
fn linked(names: u64) -> Tree {
    let mut t = root();
    let d = t.add(Tree::ROOT, b"d", Node::dir(Meta::new(0o755, 0, 0, EPOCH)));
    let f = t.add(
        d,
        b"f00000",
        Node {
            meta: Meta::new(0o644, 0, 0, EPOCH),
            kind: Kind::File(Content::bytes(b"shared\n".to_vec())),
        },
    );
    for i in 1..names {
        t.link(d, format!("f{i:05}").as_bytes(), f);
    }
    t
}

#[test]
fn hard_links_stop_at_ext4_link_max() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(256 << 20);
    let e = ext4::plan(&linked(EXT4_LINK_MAX + 1), &o).unwrap_err();
    assert!(
        matches!(e, Ext4Error::TooManyLinks { links: 65001, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("/d/f00000: the file has 65001 names"),
        "{e}"
    );

    let (img, _) = build(dir.path(), "links.img", &linked(EXT4_LINK_MAX), &o);
    assert_eq!(
        stat_field(&stat(&img, "/d/f64999"), "Links").as_deref(),
        Some("65000")
    );
    clean_and_unchanged(&img);
}

/// A directory with `subdirs` subdirectories.
fn wide(subdirs: u64) -> Tree {
    let mut t = root();
    let d = t.add(
        Tree::ROOT,
        b"wide",
        Node::dir(Meta::new(0o755, 0, 0, EPOCH)),
    );
    for i in 0..subdirs {
        t.add(
            d,
            format!("s{i:05}").as_bytes(),
            Node::dir(Meta::new(0o755, 0, 0, EPOCH)),
        );
    }
    t
}

/// 2 + subdirectories links, up to EXT4_LINK_MAX; past it 1, as the kernel's ext4_inc_count and
/// e2fsck's pass 4 both count (`> EXT4_LINK_MAX`). 64,998 subdirectories give exactly 65,000.
#[test]
fn directory_link_counts_past_65000_are_one() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(640 << 20);
    for (subdirs, links) in [(64_998u64, "65000"), (64_999, "1"), (65_010, "1")] {
        let name = format!("wide-{subdirs}.img");
        let (img, _) = build(dir.path(), &name, &wide(subdirs), &o);
        let s = stat(&img, "/wide");
        assert_eq!(
            stat_field(&s, "Links").as_deref(),
            Some(links),
            "{subdirs}: {s}"
        );
        clean_and_unchanged(&img);
        std::fs::remove_file(&img).unwrap();
    }
}

/// Logical block numbers are 32-bit: a file longer than 2^32 - 1 blocks cannot be mapped, and
/// one block more used to wrap to block 0 of the same file. The largest file that fits is
/// written, and e2fsck accepts it.
#[test]
fn files_past_16_tib_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // tmpfs holds sparse files of any size; the host's ext4 stops at 16 TiB - 4 KiB.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let big = shm.path().join("big");
    let f = std::fs::File::create(&big).unwrap();
    // One data block at logical block 2^32, the first one ext4 cannot address.
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"past the end", 1 << 44).unwrap();
    let len = f.metadata().unwrap().len();
    let host = |path: &Path, len: u64| {
        let mut t = root();
        t.add(
            Tree::ROOT,
            b"huge",
            Node {
                meta: Meta::new(0o644, 0, 0, EPOCH),
                kind: Kind::File(Content::Host {
                    path: path.to_owned(),
                    len,
                }),
            },
        );
        t
    };
    let o = opts(64 << 20);
    let e = ext4::plan(&host(&big, len), &o).unwrap_err();
    assert!(
        matches!(e, Ext4Error::FileTooBig { .. })
            && e.to_string().starts_with("/huge: the file is"),
        "{e}"
    );
    // The largest size is fine, with a data block in its last block.
    let edge = shm.path().join("edge");
    let f = std::fs::File::create(&edge).unwrap();
    f.write_all_at(b"last block", MAX_FILE_SIZE - 4096).unwrap();
    f.set_len(MAX_FILE_SIZE).unwrap();
    let (img, _) = build(dir.path(), "edge.img", &host(&edge, MAX_FILE_SIZE), &o);
    clean_and_unchanged(&img);
    let s = stat(&img, "/huge");
    assert!(s.contains(&format!("Size: {MAX_FILE_SIZE}")), "{s}");
    assert!(s.contains("(4294967294):"), "the last block is mapped: {s}");
}

/// The inodes mke2fs would give a filesystem of `blocks` 4 KiB blocks: `mke2fs -n` (which
/// writes nothing) with this machine's mke2fs.conf, e2fsprogs' own defaults.
fn mke2fs_inodes(dir: &Path, blocks: u64) -> u64 {
    let dev = dir.join("dev");
    std::fs::write(&dev, b"").unwrap();
    let o = common::run_ok(
        Command::new("mke2fs")
            .args(["-n", "-F", "-t", "ext4", "-b", "4096"])
            .arg(&dev)
            .arg(blocks.to_string()),
    );
    // "Creating filesystem with N 4k blocks and M inodes"
    let line = o
        .lines()
        .find(|l| l.starts_with("Creating filesystem with"))
        .unwrap_or_else(|| panic!("mke2fs -n said: {o}"));
    line.split_whitespace()
        .rev()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// kiln's inode count follows mke2fs's size types and mke2fs.conf's ratios (4096 bytes per
/// inode below 512 MiB, 16384 up to 4 TiB, 32768 up to 16 TiB, 65536 above): a 94 MiB root
/// used to get 6,016 inodes where mke2fs gives 24,064.
#[test]
fn inode_counts_are_mke2fs_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mib = 256u64; // blocks per MiB
    let sizes = [
        8 * mib,
        94 * mib,
        200 * mib + 77,
        512 * mib - 1,
        512 * mib,
        1024 * mib + 3,
        3000 * mib,
        (4u64 << 20) * mib - 1,
        (4u64 << 20) * mib,
        (5u64 << 20) * mib,
        (16u64 << 20) * mib,
        (20u64 << 20) * mib,
    ];
    let mut wrong = Vec::new();
    for blocks in sizes {
        let g = ext4::layout::geometry(blocks, 0).unwrap();
        let kiln = g.inodes_per_group * g.groups;
        let mke2fs = mke2fs_inodes(dir.path(), blocks);
        eprintln!("{blocks} blocks: kiln {kiln} inodes, mke2fs {mke2fs}");
        if kiln != mke2fs {
            wrong.push(format!("{blocks} blocks: kiln {kiln}, mke2fs {mke2fs}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        ext4::layout::geometry(94 * mib, 0).map(|g| g.inodes_per_group * g.groups),
        Ok(24_064)
    );
}
