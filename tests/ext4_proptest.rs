//! Random trees through the ext4 writer: every image must pass `e2fsck -fn`, and every regular
//! file must read back byte for byte.

mod common;

use common::ext4_check::*;
use kiln::tree::{Content, Kind, Meta, Node, NodeId, Tree};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Spec {
    Dir,
    File { blocks: Vec<bool>, tail: u16 },
    Symlink(usize),
    HardLink(usize),
    Dev(u32, u32),
    Fifo,
    Socket,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z0-9._-]{1,20}".prop_map(|s| s.into_bytes()),
        "[a-zé日本ü]{1,90}".prop_map(|s| s.into_bytes()),
        (1usize..=255).prop_map(|n| vec![b'n'; n]),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
    .prop_map(|mut n| {
        n.truncate(255);
        while std::str::from_utf8(&n).is_err() {
            n.pop();
        }
        n
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        3 => Just(Spec::Dir),
        5 => (proptest::collection::vec(any::<bool>(), 0..200), 0u16..4096).prop_map(|(blocks, tail)| Spec::File { blocks, tail }),
        1 => (1usize..300).prop_map(Spec::Symlink),
        1 => any::<usize>().prop_map(Spec::HardLink),
        1 => (0u32..4096, 0u32..1 << 20).prop_map(|(a, b)| Spec::Dev(a, b)),
        1 => Just(Spec::Fifo),
        1 => Just(Spec::Socket),
    ]
}

fn build_tree(entries: &[(usize, Vec<u8>, Spec, u32, bool)]) -> Tree {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, EPOCH));
    let mut dirs = vec![Tree::ROOT];
    let mut files: Vec<NodeId> = Vec::new();
    for (i, (parent, name, spec, id, xattr)) in entries.iter().enumerate() {
        let parent = dirs[parent % dirs.len()];
        if t.child(parent, name).is_some() {
            continue;
        }
        let mut meta = Meta::new(0o644 | (i as u32 % 8) << 9, *id, id / 2, EPOCH);
        if *xattr {
            meta.xattrs.insert(b"user.k".to_vec(), name.clone());
            if i % 3 == 0 {
                meta.xattrs
                    .insert(b"trusted.big".to_vec(), vec![i as u8; 1500]);
            }
        }
        let kind = match spec {
            Spec::Dir => Kind::Dir(Default::default()),
            Spec::File { blocks, tail } => {
                let mut data = Vec::new();
                for (b, &full) in blocks.iter().enumerate() {
                    data.extend(std::iter::repeat_n(
                        if full { (b as u8) | 1 } else { 0 },
                        4096,
                    ));
                }
                data.extend(std::iter::repeat_n(0x42, *tail as usize));
                Kind::File(Content::bytes(data))
            }
            Spec::Symlink(n) => Kind::Symlink(vec![b's'; *n]),
            Spec::HardLink(k) if !files.is_empty() => {
                t.link(parent, name, files[k % files.len()]);
                continue;
            }
            Spec::HardLink(_) | Spec::Fifo => Kind::Fifo,
            Spec::Dev(a, b) => Kind::CharDev {
                major: *a,
                minor: *b,
            },
            Spec::Socket => Kind::Socket,
        };
        let is_dir = matches!(kind, Kind::Dir(_));
        let is_file = matches!(kind, Kind::File(_));
        let n = t.add(parent, name, Node { meta, kind });
        if is_dir {
            dirs.push(n);
        }
        if is_file {
            files.push(n);
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_pass_fsck(entries in proptest::collection::vec((any::<usize>(), name(), spec(), 0u32..200_000, any::<bool>()), 1..120)) {
        let t = build_tree(&entries);
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = build(dir.path(), "p.img", &t, &opts(48 << 20));
        fsck(&img);
        let out = dir.path().join("out");
        rdump(&img, &out);
        for (path, id) in t.walk() {
            if let Kind::File(Content::Bytes(want)) = &t.node(id).kind {
                let p = std::path::Path::new(std::str::from_utf8(&path[1..]).unwrap());
                let got = std::fs::read(out.join(p)).unwrap();
                prop_assert!(got == want[..], "content of {}", p.display());
            }
        }
    }
}
