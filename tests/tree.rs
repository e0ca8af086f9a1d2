//! Building trees from recipe entries: overrides, symlink resolution, host trees and archives.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use kiln::recipe::*;
use kiln::tree::*;
use sha2::{Digest, Sha256};

const SDE: i64 = 1_700_000_000;

fn recipe(entries: Vec<EntryKind>) -> Recipe {
    Recipe {
        path: "/r/kiln.toml".into(),
        sha256: String::new(),
        image: Image {
            name: "t".into(),
            version: "1".into(),
            arch: Arch::X86_64,
            size: 1 << 30,
            source_date_epoch: SDE,
            seed: "t-1".into(),
        },
        partitions: vec![],
        entries: entries
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Entry {
                pos: Pos {
                    file: "/r/kiln.toml".into(),
                    line: i + 1,
                    col: 1,
                },
                kind,
            })
            .collect(),
        repositories: vec![],
        packages: None,
        users: vec![],
        groups: vec![],
        ami: None,
        boot: None,
        tests: vec![],
    }
}

/// Builds with a throwaway content store: only for trees without archives, whose contents
/// live in the store and vanish with it.
fn build(entries: Vec<EntryKind>) -> Result<Built, TreeError> {
    let store = ContentStore::new().unwrap();
    build_tree(&recipe(entries), &store)
}

fn file(path: &str, content: &str) -> EntryKind {
    EntryKind::File {
        path: path.into(),
        source: FileSource::Inline(content.into()),
        mode: 0o644,
        owner: 0,
        group: 0,
    }
}
fn dir(path: &str, mode: u32) -> EntryKind {
    EntryKind::Directory {
        path: path.into(),
        mode,
        owner: 0,
        group: 0,
    }
}
fn symlink(path: &str, target: &str) -> EntryKind {
    EntryKind::Symlink {
        path: path.into(),
        target: target.into(),
    }
}

/// The node at an absolute path, not following symlinks.
fn at(t: &Tree, path: &str) -> Option<NodeId> {
    let mut id = Tree::ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        id = t.child(id, c.as_bytes())?;
    }
    Some(id)
}

fn node<'a>(t: &'a Tree, path: &str) -> &'a Node {
    t.node(at(t, path).unwrap_or_else(|| panic!("{path} is missing")))
}

fn read(t: &Tree, path: &str) -> Vec<u8> {
    let Kind::File(c) = &node(t, path).kind else {
        panic!("{path} is not a file")
    };
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut c.open().unwrap(), &mut v).unwrap();
    v
}

#[test]
fn root_and_parents_get_defaults() {
    let b = build(vec![file("/etc/ssh/sshd_config", "x")]).unwrap();
    let t = &b.tree;
    for p in ["/", "/etc", "/etc/ssh"] {
        assert_eq!(
            node(t, p).meta,
            Meta::new(0o755, 0, 0, Time::from_secs(SDE)),
            "{p}"
        );
    }
    assert_eq!(node(t, "/etc/ssh/sshd_config").meta.mode, 0o644);
    assert!(b.inputs.is_empty());
}

#[test]
fn later_entries_override_earlier_ones() {
    let b = build(vec![
        file("/a", "1"),
        dir("/a", 0o700), // a directory replaces a file
        file("/a/child", "c"),
        dir("/a", 0o750), // a directory over a directory keeps its children
        dir("/f", 0o755),
        file("/f/x", "x"),
        file("/f", "file"), // a file replaces a directory and its subtree
        symlink("/s", "target"),
        file("/s", "over the symlink"),
    ])
    .unwrap();
    let t = &b.tree;
    assert_eq!(node(t, "/a").meta.mode, 0o750);
    assert_eq!(read(t, "/a/child"), b"c");
    assert_eq!(read(t, "/f"), b"file");
    assert_eq!(read(t, "/s"), b"over the symlink");
    assert!(at(t, "/target").is_none());
}

#[test]
fn merged_usr_symlinks_are_followed() {
    let b = build(vec![
        dir("/usr/bin", 0o755),
        symlink("/bin", "usr/bin"),
        symlink("/lib", "/usr/lib"),
        file("/bin/sh", "#!"),
        file("/lib/x/libc.so", "elf"),
    ])
    .unwrap();
    let t = &b.tree;
    assert_eq!(read(t, "/usr/bin/sh"), b"#!");
    assert_eq!(read(t, "/usr/lib/x/libc.so"), b"elf");
    assert_eq!(node(t, "/bin").kind, Kind::Symlink(b"usr/bin".to_vec()));
}

#[test]
fn escapes_and_loops_are_refused() {
    let e = build(vec![symlink("/a", "../../.."), file("/a/x", "")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/r/kiln.toml:2:1: /a/x: following the symlink /a would leave the image's tree; make the \
         symlink's target stay inside the tree"
    );
    let e = build(vec![
        dir("/d", 0o755),
        symlink("/d/up", "../.."),
        dir("/d/up/etc", 0o755),
    ])
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("following the symlink /d/up would leave"),
        "{e}"
    );
    let e = build(vec![
        symlink("/l1", "l2"),
        symlink("/l2", "/l1"),
        file("/l1/x", ""),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("more than 40 symlinks"), "{e}");
    let e = build(vec![file("/x/../y", "")]).unwrap_err();
    assert!(e.to_string().contains("\"..\" component"), "{e}");
    let e = build(vec![file("/f", ""), file("/f/g", "")]).unwrap_err();
    assert_eq!(e.pos().line, 2);
    assert!(e.to_string().contains("/f is not a directory"), "{e}");
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn host_files_are_referenced_and_digested() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("motd");
    std::fs::write(&p, "hi").unwrap();
    let b = build(vec![EntryKind::File {
        path: "/etc/motd".into(),
        source: FileSource::Path(p.clone()),
        mode: 0o4755,
        owner: 1,
        group: 2,
    }])
    .unwrap();
    let n = node(&b.tree, "/etc/motd");
    assert_eq!(
        n.kind,
        Kind::File(Content::Host {
            path: p.clone(),
            len: 2
        })
    );
    assert_eq!((n.meta.mode, n.meta.uid, n.meta.gid), (0o4755, 1, 2));
    assert_eq!(
        b.inputs,
        vec![InputDigest {
            kind: "file",
            source: p,
            sha256: sha(b"hi")
        }]
    );
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> bool {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a valid buffer.
    unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

fn host_fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(r.join("b/deep")).unwrap();
    std::fs::write(r.join("usr/bin/tool"), "tool").unwrap();
    std::fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/tool-alias")).unwrap();
    std::os::unix::fs::symlink("../usr/bin/tool", r.join("b/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/on/host", r.join("b/dangling")).unwrap();
    let fifo = CString::new(r.join("b/fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let sparse = std::fs::File::create(r.join("b/sparse")).unwrap();
    sparse.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"end", (1 << 20) - 3).unwrap();
    let old = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(r.join("usr/bin/tool"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        r.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(r.join("b/deep"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

#[test]
fn host_tree_import_keeps_everything() {
    let d = host_fixture();
    let r = d.path();
    let xattrs_ok = set_xattr(&r.join("usr/bin/tool"), "user.kiln", b"v1");
    let tree = |owner| EntryKind::Tree {
        source: r.to_owned(),
        dest: "/".into(),
        owner,
        group: None,
    };
    let b = build(vec![
        dir("/usr/bin", 0o755),
        symlink("/bin", "usr/bin"),
        tree(None),
    ])
    .unwrap();
    let t = &b.tree;
    let tool = node(t, "/usr/bin/tool");
    assert_eq!(tool.meta.mode, 0o4755);
    assert_eq!(
        tool.meta.mtime,
        Time {
            secs: 1_000_000_000,
            nanos: 123_456_789
        }
    );
    assert_eq!(read(t, "/usr/bin/tool"), b"tool");
    assert_eq!(
        at(t, "/usr/bin/tool"),
        at(t, "/usr/bin/tool-alias"),
        "hard links share a node"
    );
    assert_eq!(
        t.link_counts()[at(t, "/usr/bin/tool").unwrap().0 as usize],
        2
    );
    assert_eq!(
        node(t, "/b/link").kind,
        Kind::Symlink(b"../usr/bin/tool".to_vec())
    );
    assert_eq!(
        node(t, "/b/dangling").kind,
        Kind::Symlink(b"/nonexistent/on/host".to_vec())
    );
    assert_eq!(node(t, "/b/fifo").kind, Kind::Fifo);
    assert_eq!(node(t, "/b/fifo").meta.mode, 0o640);
    assert_eq!(node(t, "/b/deep").meta.mode, 0o1777);
    // Files created just now are newer than source_date_epoch: clamped.
    assert_eq!(node(t, "/b/sparse").meta.mtime, Time::from_secs(SDE));
    let Kind::File(sparse) = &node(t, "/b/sparse").kind else {
        panic!()
    };
    assert_eq!(sparse.len(), 1 << 20);
    let ranges = sparse.data_ranges().unwrap();
    assert!(
        ranges.iter().all(|r| r.start >= 4096),
        "the sparse file's hole is kept: {ranges:?}"
    );
    if xattrs_ok {
        assert_eq!(
            tool.meta.xattrs.get(&b"user.kiln"[..]),
            Some(&b"v1".to_vec())
        );
    } else {
        println!("note: this filesystem refuses user.* xattrs; xattr import not checked");
    }
    // The directory walk order is sorted and the digest is stable.
    let again = build(vec![tree(None)]).unwrap();
    assert_eq!(b.inputs[0].sha256, again.inputs[0].sha256);
    assert_eq!(b.inputs[0].kind, "tree");
    // Owner override.
    let o = build(vec![tree(Some(4242))]).unwrap();
    assert_eq!(node(&o.tree, "/b/fifo").meta.uid, 4242);
}

#[test]
fn host_tree_keeps_merged_usr_directory_symlinks() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("bin")).unwrap();
    std::fs::write(d.path().join("bin/ls"), "ls").unwrap();
    let b = build(vec![
        dir("/usr/bin", 0o755),
        symlink("/bin", "usr/bin"),
        EntryKind::Tree {
            source: d.path().to_owned(),
            dest: "/".into(),
            owner: None,
            group: None,
        },
    ])
    .unwrap();
    assert_eq!(
        node(&b.tree, "/bin").kind,
        Kind::Symlink(b"usr/bin".to_vec())
    );
    assert_eq!(read(&b.tree, "/usr/bin/ls"), b"ls");
}

// ---- archives ----

fn header(path: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    // Written into the raw name field so that hostile names are not refused by `tar` itself.
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(100);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8], mode: u32) {
    b.append(
        &header(path.as_bytes(), kind, data.len() as u64, mode),
        data,
    )
    .unwrap();
}

fn add_link(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, target: &str) {
    let mut h = header(path.as_bytes(), kind, 0, 0o777);
    h.set_link_name(target).unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
}

fn good_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "./", tar::EntryType::Directory, b"", 0o755);
    add(&mut b, "usr/", tar::EntryType::Directory, b"", 0o755);
    add(&mut b, "usr/bin/", tar::EntryType::Directory, b"", 0o755);
    add(
        &mut b,
        "usr/bin/su",
        tar::EntryType::Regular,
        b"su binary",
        0o4755,
    );
    add_link(&mut b, "usr/bin/su2", tar::EntryType::Link, "usr/bin/su");
    add_link(&mut b, "bin", tar::EntryType::Symlink, "usr/bin");
    let mut big = vec![0u8; 3 * 4096];
    big[2 * 4096] = 1;
    add(&mut b, "bin/sparse", tar::EntryType::Regular, &big, 0o644);
    let mut h = header(b"dev/null", tar::EntryType::Char, 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    add(&mut b, "run/fifo", tar::EntryType::Fifo, b"", 0o600);
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &b"\x01\x02"[..])])
        .unwrap();
    add(
        &mut b,
        "usr/bin/ping",
        tar::EntryType::Regular,
        b"ping",
        0o755,
    );
    b.into_inner().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

fn archive(source: PathBuf, dest: &str) -> EntryKind {
    EntryKind::Archive {
        source,
        dest: dest.into(),
    }
}

fn check_good(b: &Built, prefix: &str) {
    let t = &b.tree;
    let p = |s: &str| format!("{prefix}{s}");
    let su = node(t, &p("/usr/bin/su"));
    assert_eq!(
        (su.meta.mode, su.meta.uid, su.meta.gid),
        (0o4755, 1000, 100)
    );
    assert_eq!(su.meta.mtime, Time::from_secs(1_600_000_000));
    assert_eq!(read(t, &p("/usr/bin/su")), b"su binary");
    assert_eq!(at(t, &p("/usr/bin/su")), at(t, &p("/usr/bin/su2")));
    // Written through the archive's own symlink /bin -> usr/bin.
    let sparse = read(t, &p("/usr/bin/sparse"));
    assert_eq!(sparse.len(), 3 * 4096);
    let Kind::File(c) = &node(t, &p("/usr/bin/sparse")).kind else {
        panic!()
    };
    assert!(c.data_ranges().unwrap().iter().all(|r| r.start >= 4096));
    assert_eq!(
        node(t, &p("/dev/null")).kind,
        Kind::CharDev { major: 1, minor: 3 }
    );
    assert_eq!(node(t, &p("/run/fifo")).kind, Kind::Fifo);
    let ping = node(t, &p("/usr/bin/ping"));
    assert_eq!(
        ping.meta.xattrs.get(&b"security.capability"[..]),
        Some(&vec![1, 2])
    );
}

#[test]
fn archives_gz_and_zst_unpack_into_the_tree() {
    let d = tempfile::tempdir().unwrap();
    let tar = good_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (name, bytes) in [
        ("a.tar", &tar),
        ("a.tar.gz", &gz),
        ("a.tgz", &gz),
        ("a.tar.zst", &zst),
    ] {
        let p = write(d.path(), name, bytes);
        let store = ContentStore::new().unwrap();
        let b = build_tree(&recipe(vec![archive(p.clone(), "/")]), &store).unwrap();
        check_good(&b, "");
        assert_eq!(
            b.inputs,
            vec![InputDigest {
                kind: "archive",
                source: p,
                sha256: sha(bytes)
            }]
        );
    }
    let p = write(d.path(), "b.tar.zstd", &zst);
    let store = ContentStore::new().unwrap();
    check_good(
        &build_tree(&recipe(vec![archive(p, "/opt/root")]), &store).unwrap(),
        "/opt/root",
    );
}

type AddMembers = dyn Fn(&mut tar::Builder<Vec<u8>>);

#[test]
fn hostile_archives_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Box<AddMembers>, &str)> = vec![
        (
            "dotdot",
            Box::new(|b| add(b, "../x", tar::EntryType::Regular, b"x", 0o644)),
            "has a \"..\" component",
        ),
        (
            "abs",
            Box::new(|b| add(b, "/etc/x", tar::EntryType::Regular, b"x", 0o644)),
            "has an absolute path",
        ),
        (
            "escape",
            Box::new(|b| {
                add_link(b, "a", tar::EntryType::Symlink, "../../..");
                add(b, "a/x", tar::EntryType::Regular, b"x", 0o644);
            }),
            "following the symlink /a would leave the image's tree",
        ),
        (
            "hardlink",
            Box::new(|b| add_link(b, "h", tar::EntryType::Link, "nowhere")),
            "is a hard link to \"nowhere\"",
        ),
        (
            "hardlink-out",
            Box::new(|b| add_link(b, "h", tar::EntryType::Link, "../etc/passwd")),
            "\"..\"",
        ),
    ];
    for (name, f, want) in cases {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        let p = write(d.path(), &format!("{name}.tar"), &b.into_inner().unwrap());
        let e = build(vec![dir("/etc", 0o755), archive(p.clone(), "/")]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with(&format!("/r/kiln.toml:2:1: archive {}", p.display())),
            "{s}"
        );
        assert!(s.contains(want), "{name}: {s}");
    }
    // A size beyond the limit is refused before any data is read.
    let mut h = header(b"huge", tar::EntryType::Regular, 0, 0o644);
    h.set_size(MAX_MEMBER_SIZE + 1);
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 1024]);
    let p = write(d.path(), "huge.tar", &bytes);
    let e = build(vec![archive(p, "/")]).unwrap_err();
    assert!(
        e.to_string()
            .contains("more than the 68719476736-byte limit"),
        "{e}"
    );
}

#[test]
fn archive_extension_must_match_contents() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "plain.tar.gz", &good_tar());
    let e = build(vec![archive(p.clone(), "/")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "/r/kiln.toml:1:1: archive {}: is not a gzip-compressed tar archive (its extension \
             says so); rename the file to match its contents, or recompress it",
            p.display()
        )
    );
    let p = write(d.path(), "x.tar.zst", b"not zstd");
    assert!(build(vec![archive(p, "/")])
        .unwrap_err()
        .to_string()
        .contains("zstd-compressed"));
    let p = write(d.path(), "x.zip", b"PK");
    assert!(build(vec![archive(p, "/")])
        .unwrap_err()
        .to_string()
        .contains("no known archive extension"));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Corrupted archives give errors or trees, never panics, and never write outside the
        /// content store.
        #[test]
        fn mutated_archives_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            gz in any::<bool>(),
        ) {
            let mut tar = good_tar();
            for (at, byte) in edits {
                let i = at.index(tar.len());
                tar[i] = byte;
            }
            let (name, bytes) = if gz {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&tar).unwrap();
                ("m.tar.gz", e.finish().unwrap())
            } else {
                ("m.tar", tar)
            };
            let d = tempfile::tempdir().unwrap();
            let p = write(d.path(), name, &bytes);
            let store = ContentStore::new().unwrap();
            let _ = build_tree(&recipe(vec![archive(p, "/srv")]), &store);
        }

        #[test]
        fn random_bytes_as_archives_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            ext in prop::sample::select(vec!["tar", "tar.gz", "tar.zst"]),
        ) {
            let d = tempfile::tempdir().unwrap();
            let p = write(d.path(), &format!("r.{ext}"), &bytes);
            let store = ContentStore::new().unwrap();
            let _ = build_tree(&recipe(vec![archive(p, "/")]), &store);
        }
    }
}
