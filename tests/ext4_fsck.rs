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
        let (img, report) = build(
            dir.path(),
            &format!("empty-{size}.img"),
            &root(),
            &opts(size),
        );
        fsck(&img);
        assert_eq!(report.blocks_total, size / 4096);
    }
}

use kiln::tree::{Content, Kind, Node, NodeId, Time};
use std::collections::BTreeMap;
use std::path::Path;

fn meta(mode: u32) -> Meta {
    Meta::new(mode, 0, 0, EPOCH)
}

fn file(t: &mut Tree, parent: NodeId, name: &[u8], data: &[u8], m: Meta) -> NodeId {
    t.add(
        parent,
        name,
        Node {
            meta: m,
            kind: Kind::File(Content::bytes(data.to_vec())),
        },
    )
}

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The "nasty" tree: every file type and edge the writer must get right.
fn nasty(scratch: &Path) -> Tree {
    let mut t = root();
    // A 1 GiB sparse host file with three data blocks.
    let sparse = scratch.join("sparse.bin");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&sparse).unwrap();
        f.set_len(1 << 30).unwrap();
        for off in [0u64, 500 << 20, (1 << 30) - 4096] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&[0xA5; 4096]).unwrap();
        }
    }
    t.add(
        Tree::ROOT,
        b"sparse",
        Node {
            meta: meta(0o644),
            kind: Kind::File(Content::Host {
                path: sparse,
                len: 1 << 30,
            }),
        },
    );
    // A 6,000-entry directory.
    let big = t.add(Tree::ROOT, b"big", Node::dir(meta(0o755)));
    for i in 0..6000 {
        file(
            &mut t,
            big,
            format!("entry-{i:05}").as_bytes(),
            b"",
            meta(0o644),
        );
    }
    // 40 levels deep.
    let mut d = Tree::ROOT;
    for i in 0..40 {
        d = t.add(d, format!("d{i}").as_bytes(), Node::dir(meta(0o755)));
    }
    file(&mut t, d, b"bottom", b"deep\n", meta(0o644));
    // Long and UTF-8 names.
    let names = t.add(Tree::ROOT, b"names", Node::dir(meta(0o755)));
    file(&mut t, names, &[b'x'; 255], b"255\n", meta(0o644));
    file(
        &mut t,
        names,
        "héllo-wörld-日本語".as_bytes(),
        b"utf8\n",
        meta(0o644),
    );
    // Symlinks: fast, slow (long), dangling.
    let links = t.add(Tree::ROOT, b"links", Node::dir(meta(0o755)));
    t.add(
        links,
        b"fast",
        Node {
            meta: meta(0o777),
            kind: Kind::Symlink(b"../names".to_vec()),
        },
    );
    let long = format!("/{}", "long-component/".repeat(20));
    t.add(
        links,
        b"slow",
        Node {
            meta: meta(0o777),
            kind: Kind::Symlink(long.into_bytes()),
        },
    );
    t.add(
        links,
        b"dangling",
        Node {
            meta: meta(0o777),
            kind: Kind::Symlink(b"/nowhere/at/all".to_vec()),
        },
    );
    // Three hard links to one file.
    let hl = file(&mut t, links, b"hard1", b"shared\n", meta(0o644));
    t.link(links, b"hard2", hl);
    t.link(Tree::ROOT, b"hard3", hl);
    // Special files.
    let dev = t.add(Tree::ROOT, b"dev", Node::dir(meta(0o755)));
    t.add(
        dev,
        b"fifo",
        Node {
            meta: meta(0o600),
            kind: Kind::Fifo,
        },
    );
    t.add(
        dev,
        b"null",
        Node {
            meta: meta(0o666),
            kind: Kind::CharDev { major: 1, minor: 3 },
        },
    );
    t.add(
        dev,
        b"nvme",
        Node {
            meta: meta(0o660),
            kind: Kind::BlockDev {
                major: 259,
                minor: 70000,
            },
        },
    );
    t.add(
        dev,
        b"sock",
        Node {
            meta: meta(0o755),
            kind: Kind::Socket,
        },
    );
    // Modes, ids, times.
    let modes = t.add(Tree::ROOT, b"modes", Node::dir(meta(0o755)));
    file(&mut t, modes, b"suid", b"#!/bin/sh\n", meta(0o4755));
    file(&mut t, modes, b"sgid", b"#!/bin/sh\n", meta(0o2755));
    t.add(modes, b"sticky", Node::dir(meta(0o1777)));
    file(
        &mut t,
        modes,
        b"bigids",
        b"ids\n",
        Meta::new(0o640, 70000, 100000, EPOCH),
    );
    let later = Time {
        secs: EPOCH.secs + 1000,
        nanos: 5,
    };
    file(
        &mut t,
        modes,
        b"future",
        b"clamped\n",
        Meta::new(0o644, 0, 0, later),
    );
    let earlier = Time {
        secs: EPOCH.secs - 1000,
        nanos: 123_456_789,
    };
    file(
        &mut t,
        modes,
        b"past",
        b"kept\n",
        Meta::new(0o644, 0, 0, earlier),
    );
    // Extended attributes: small (in-inode), big (external block), ACLs.
    let mut x = meta(0o644);
    x.xattrs.insert(b"user.small".to_vec(), b"hello".to_vec());
    x.xattrs.insert(
        b"security.capability".to_vec(),
        vec![
            1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    x.xattrs.insert(b"trusted.big".to_vec(), vec![0x5A; 2000]);
    x.xattrs.insert(
        b"system.posix_acl_access".to_vec(),
        acl(&[
            (1, 6, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 4, u32::MAX),
        ]),
    );
    file(&mut t, Tree::ROOT, b"xattrs", b"x\n", x);
    let mut x = meta(0o644);
    x.xattrs.insert(b"user.only".to_vec(), b"in-inode".to_vec());
    file(&mut t, Tree::ROOT, b"xattr-small", b"y\n", x);
    // A multi-block file with a hole in the middle.
    let mut data = vec![7u8; 3 * 4096 + 100];
    data[4096..8192].fill(0);
    file(&mut t, Tree::ROOT, b"holey", &data, meta(0o644));
    t
}

#[test]
fn nasty_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let t = nasty(dir.path());
    let o = opts(128 << 20);
    let (img, report) = build(dir.path(), "nasty.img", &t, &o);
    fsck(&img);
    assert_eq!(report.inodes_used, 11 + t.walk().len() as u64 - 1);

    // Content, via rdump for the plain files.
    let out = dir.path().join("out");
    rdump(&img, &out);
    assert_eq!(std::fs::read(out.join("d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16/d17/d18/d19/d20/d21/d22/d23/d24/d25/d26/d27/d28/d29/d30/d31/d32/d33/d34/d35/d36/d37/d38/d39/bottom")).unwrap(), b"deep\n");
    assert_eq!(
        std::fs::read(out.join("names").join("x".repeat(255))).unwrap(),
        b"255\n"
    );
    assert_eq!(
        std::fs::read(out.join("names/héllo-wörld-日本語")).unwrap(),
        b"utf8\n"
    );
    let Kind::File(c) = &t.node(t.child(Tree::ROOT, b"holey").unwrap()).kind else {
        panic!()
    };
    let Content::Bytes(want) = c else { panic!() };
    assert_eq!(std::fs::read(out.join("holey")).unwrap(), &want[..]);
    assert_eq!(std::fs::read_dir(out.join("big")).unwrap().count(), 6000);
    assert_eq!(
        std::fs::read_link(out.join("links/slow"))
            .unwrap()
            .to_str()
            .unwrap(),
        format!("/{}", "long-component/".repeat(20))
    );
    assert_eq!(
        std::fs::read_link(out.join("links/fast"))
            .unwrap()
            .to_str()
            .unwrap(),
        "../names"
    );
    assert_eq!(
        std::fs::read_link(out.join("links/dangling"))
            .unwrap()
            .to_str()
            .unwrap(),
        "/nowhere/at/all"
    );

    // The sparse file: 1 GiB long, three blocks allocated, data where it was written.
    let s = stat(&img, "/sparse");
    assert_eq!(stat_field(&s, "Size").unwrap(), (1u64 << 30).to_string());
    assert_eq!(stat_field(&s, "Blockcount").unwrap(), "24");
    let sparse = std::fs::read(out.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 1 << 30);
    assert!(sparse[..4096].iter().all(|&b| b == 0xA5) && sparse[4096] == 0);
    assert_eq!(sparse[500 << 20], 0xA5);

    // Hard links, modes, ids, devices.
    for p in ["/links/hard1", "/links/hard2", "/hard3"] {
        assert_eq!(stat_field(&stat(&img, p), "Links").unwrap(), "3", "{p}");
    }
    assert_eq!(
        stat_field(&stat(&img, "/links/hard1"), "Inode"),
        stat_field(&stat(&img, "/hard3"), "Inode")
    );
    assert_eq!(
        stat_field(&stat(&img, "/modes/suid"), "Mode").unwrap(),
        "04755"
    );
    assert_eq!(
        stat_field(&stat(&img, "/modes/sgid"), "Mode").unwrap(),
        "02755"
    );
    assert_eq!(
        stat_field(&stat(&img, "/modes/sticky"), "Mode").unwrap(),
        "01777"
    );
    let ids = stat(&img, "/modes/bigids");
    assert_eq!(stat_field(&ids, "User").unwrap(), "70000");
    assert_eq!(stat_field(&ids, "Group").unwrap(), "100000");
    assert!(stat(&img, "/dev/fifo").contains("Type: FIFO"));
    assert!(stat(&img, "/dev/sock").contains("Type: socket"));
    let null = stat(&img, "/dev/null");
    assert!(
        null.contains("Type: character special")
            && null.contains("Device major/minor number: 01:03"),
        "{null}"
    );
    let nvme = stat(&img, "/dev/nvme");
    assert!(
        nvme.contains("Type: block special")
            && nvme.contains("Device major/minor number: 259:70000"),
        "{nvme}"
    );
    // Directory link counts: 2 + subdirectories (root also has lost+found).
    let root_dirs = t
        .children(Tree::ROOT)
        .unwrap()
        .values()
        .filter(|&&c| t.node(c).is_dir())
        .count();
    assert_eq!(
        stat_field(&stat(&img, "/"), "Links").unwrap(),
        (2 + root_dirs + 1).to_string()
    );
    assert!(
        stat(&img, "/big").contains("Flags: 0x81000"),
        "htree index flag on the big directory"
    );

    // Times: clamped to the epoch, nanoseconds kept.
    let (secs, _) = stat_time(&stat(&img, "/modes/future"), "mtime");
    assert_eq!(secs as i64, EPOCH.secs);
    let past = stat(&img, "/modes/past");
    let (secs, extra) = stat_time(&past, "mtime");
    assert_eq!((secs as i64, extra >> 2), (EPOCH.secs - 1000, 123_456_789));
    assert_eq!(stat_time(&past, "crtime"), stat_time(&past, "mtime"));

    // Extended attributes, in-inode and in a block.
    assert_eq!(ea_get(&img, "/xattrs", "user.small", dir.path()), b"hello");
    assert_eq!(
        ea_get(&img, "/xattrs", "trusted.big", dir.path()),
        vec![0x5A; 2000]
    );
    assert_eq!(
        ea_get(&img, "/xattr-small", "user.only", dir.path()),
        b"in-inode"
    );
    let want: BTreeMap<_, _> = t
        .node(t.child(Tree::ROOT, b"xattrs").unwrap())
        .meta
        .xattrs
        .clone();
    // debugfs writes the id of entries that have none as 0, the kernel as -1: compare without.
    let no_ids = |v: &[u8]| -> Vec<u8> {
        let mut v = v.to_vec();
        for e in v[4..].chunks_mut(8) {
            if e[0] != 2 && e[0] != 8 {
                e[4..].fill(0);
            }
        }
        v
    };
    let got = ea_get(&img, "/xattrs", "system.posix_acl_access", dir.path());
    assert_eq!(
        no_ids(&got),
        no_ids(&want[&b"system.posix_acl_access".to_vec()])
    );
    assert_ne!(stat_field(&stat(&img, "/xattrs"), "File ACL").unwrap(), "0");
    assert_eq!(
        stat_field(&stat(&img, "/xattr-small"), "File ACL").unwrap(),
        "0"
    );
}

#[test]
fn fit_is_exact_and_too_big_names_the_sizes() {
    use kiln::fs::ext4::{plan, Ext4Error};
    let dir = tempfile::tempdir().unwrap();
    let o = opts(64 << 20);
    let mut t = root();
    let f = file(&mut t, Tree::ROOT, b"fill", b"", meta(0o644));
    let empty = plan(&t, &o).unwrap();
    let free = empty.blocks_total - empty.blocks_used;
    let fill = |t: &mut Tree, blocks: u64| {
        t.node_mut(f).kind = Kind::File(Content::bytes(vec![0x11u8; (blocks * 4096) as usize]));
    };
    // 99% of the partition builds, and so does every last free block.
    let total = empty.blocks_total;
    fill(&mut t, total * 99 / 100 - empty.blocks_used);
    let (img, r) = build(dir.path(), "99.img", &t, &o);
    fsck(&img);
    assert!(r.blocks_used <= total);
    fill(&mut t, free);
    let (img, r) = build(dir.path(), "100.img", &t, &o);
    fsck(&img);
    assert_eq!(r.blocks_used, total);
    // One block more, or 101%, does not fit, and the error says by how much.
    for blocks in [free + 1, total * 101 / 100 - empty.blocks_used] {
        fill(&mut t, blocks);
        match plan(&t, &o) {
            Err(
                e @ Ext4Error::DoesNotFit {
                    blocks_needed,
                    blocks_available,
                    ..
                },
            ) => {
                assert_eq!(blocks_available, total);
                assert_eq!(blocks_needed, empty.blocks_used + blocks);
                assert!(e.to_string().contains(&blocks_needed.to_string()));
            }
            other => panic!("expected DoesNotFit, got {other:?}"),
        }
    }
}

#[test]
fn too_many_inodes_raise_the_count_or_do_not_fit() {
    use kiln::fs::ext4::{plan, Ext4Error};
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB gives 1024 inodes by the ratio; 3000 files must raise it.
    let mut t = root();
    let d = t.add(Tree::ROOT, b"many", Node::dir(meta(0o755)));
    for i in 0..3000 {
        file(&mut t, d, format!("f{i}").as_bytes(), b"", meta(0o644));
    }
    let (img, r) = build(dir.path(), "inodes.img", &t, &opts(16 << 20));
    fsck(&img);
    assert!(r.inodes_total >= 3012);
    // 8 MiB holds at most 32768 inodes (one bitmap block per group).
    for i in 3000..40000 {
        file(&mut t, d, format!("f{i}").as_bytes(), b"", meta(0o644));
    }
    assert!(matches!(
        plan(&t, &opts(8 << 20)),
        Err(Ext4Error::DoesNotFit { .. })
    ));
}

#[test]
fn two_level_htree_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = root();
    let d = t.add(Tree::ROOT, b"huge", Node::dir(meta(0o755)));
    // About 100 entries per leaf: 60,000 entries need more leaves than one dx_root holds.
    for i in 0..60_000 {
        file(
            &mut t,
            d,
            format!("a-fairly-long-name-to-fill-leaves-{i:06}").as_bytes(),
            b"",
            meta(0o644),
        );
    }
    // Two groups: one group holds at most 32768 inodes.
    let (img, _) = build(dir.path(), "htree2.img", &t, &opts(192 << 20));
    fsck(&img);
    let dump = debugfs(&img, "htree_dump /huge");
    assert!(
        dump.contains("Indirect levels: 1"),
        "{}",
        &dump[..dump.len().min(2000)]
    );
}

#[test]
fn output_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let t = nasty(dir.path());
    let o = opts(128 << 20);
    let (a, _) = build(dir.path(), "a.img", &t, &o);
    let (b, _) = build(dir.path(), "b.img", &t, &o);
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "two builds differ"
    );
}

#[test]
fn many_groups_and_ragged_ends_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = root();
    let big = vec![0x33u8; 300 << 20]; // spans groups, flex metadata and a backup superblock
    file(&mut t, Tree::ROOT, b"big", &big, meta(0o644));
    let group = 32768 * 4096u64;
    // 17 groups with a last (flex-leader) group too small to keep: mke2fs drops it too.
    for size in [
        (600u64 << 20) + 12345,
        17 * group + 40 * 4096,
        16 * group + 3000 * 4096,
        (4 << 30) + (512 << 20),
    ] {
        let (img, r) = build(dir.path(), &format!("g-{size}.img"), &t, &opts(size));
        fsck(&img);
        assert!(r.blocks_total <= size / 4096 && size / 4096 - r.blocks_total < 32768);
        std::fs::remove_file(img).unwrap();
    }
}

#[test]
fn content_errors_name_the_tree_path_and_source() {
    use kiln::fs::ext4::{plan, write, Ext4Error};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    std::fs::write(&src, vec![1u8; 10_000]).unwrap();
    let mut t = root();
    let f = t.add(
        Tree::ROOT,
        b"payload",
        Node {
            meta: meta(0o644),
            kind: Kind::File(Content::Host {
                path: src.clone(),
                len: 10_000,
            }),
        },
    );
    // The source shrinks between planning and writing.
    std::fs::write(&src, vec![1u8; 5]).unwrap();
    let mut sink = kiln::sink::VecSink::default();
    let e = write(&t, &opts(16 << 20), &mut sink).unwrap_err();
    assert!(matches!(e, Ext4Error::Content { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("/payload") && msg.contains("src.bin"), "{msg}");
    // The source is gone.
    t.node_mut(f).kind = Kind::File(Content::Host {
        path: dir.path().join("missing"),
        len: 1,
    });
    let msg = plan(&t, &opts(16 << 20)).unwrap_err().to_string();
    assert!(msg.contains("/payload") && msg.contains("missing"), "{msg}");
}

/// The checksum code agrees with what mke2fs 1.47 stored in a fresh image.
#[test]
fn checksums_match_mke2fs() {
    use kiln::fs::ext4::{bytes::get_u16, bytes::get_u32, csum, group_desc, inode, superblock};
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ref.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let st = std::process::Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-O",
            "^resize_inode",
        ])
        .args([
            "-U",
            "01234567-89ab-cdef-0123-456789abcdef",
            "-E",
            "root_owner=0:0",
        ])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let b = std::fs::read(&img).unwrap();
    let sb = &b[1024..2048];
    assert_eq!(get_u32(sb, 0x3FC), superblock::checksum(sb));
    let seed = csum::fs_seed(sb[0x68..0x78].try_into().unwrap());
    let gd = &b[4096..4096 + 64];
    assert_eq!(get_u16(gd, 0x1E), group_desc::checksum(gd, seed, 0));
    let d = group_desc::GroupDesc::decode(gd);
    let root = &b[(d.bg_inode_table * 4096 + 256) as usize..][..256];
    let stored = get_u16(root, 0x7C) as u32 | (get_u16(root, 0x82) as u32) << 16;
    assert_eq!(stored, inode::checksum(root, seed, 2));
}
