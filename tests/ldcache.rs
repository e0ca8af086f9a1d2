//! kiln's `configure::ldcache` against the image's own `ldconfig`: a tree of bookworm packages
//! is copied to the host and its `/sbin/ldconfig` (glibc 2.36, a static program: run directly
//! for amd64, under qemu-aarch64-static for arm64) runs as `ldconfig -r COPY`; kiln applies its
//! emulation to the same tree. `/etc/ld.so.cache` must be byte-identical, and the symlinks of
//! every library directory (those ldconfig makes and removes) the same. The amd64 case adds
//! odd inputs: a missing soname link, a dangling `.so.` link, glibc-hwcaps and legacy hwcap
//! (`haswell`, `tls`) subdirectories, two versions of one soname, a linker script, non-ELF,
//! truncated and executable files, nested `include`s, a `=libc6` type, a `hwcap` line, a
//! directory named twice through a symlink, and i386 libraries (libc6-i386).

mod common;

use common::pkgtree::{export, packages_tree, read};
use common::{ok, run};
use kiln::configure::ldcache;
use kiln::tree::{Content, Kind, Meta, Node, Time, Tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn put(tree: &mut Tree, path: &str, data: Vec<u8>, mode: u32) {
    kiln::boot::tree_io::put_file(tree, path, Content::bytes(data), mode, Time::from_secs(0))
        .unwrap();
}

fn link(tree: &mut Tree, dir: &str, name: &str, target: &str) {
    let d = kiln::boot::tree_io::lookup(tree, dir).unwrap();
    tree.add(
        d,
        name.as_bytes(),
        Node {
            meta: Meta::new(0o777, 0, 0, Time::from_secs(0)),
            kind: Kind::Symlink(target.as_bytes().to_vec()),
        },
    );
}

/// Runs the tree's own ldconfig on a copy of it (`runner`: how to start an arm64 program).
fn ldconfig_oracle(tree: &mut Tree, runner: Option<&str>) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    export(tree, "/", root.path());
    let ldconfig = root.path().join("usr/sbin/ldconfig");
    let mut cmd = match runner {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(&ldconfig);
            c
        }
        None => Command::new(&ldconfig),
    };
    let o = run(cmd.arg("-r").arg(root.path()));
    ok(&o);
    root
}

/// Every symlink under the library directories, with its target.
fn host_links(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for top in ["usr/lib", "usr/lib32", "usr/lib64", "opt"] {
        let mut stack = vec![root.join(top)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let e = e.unwrap();
                let ft = e.file_type().unwrap();
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                if ft.is_symlink() {
                    out.insert(
                        rel,
                        std::fs::read_link(e.path()).unwrap().display().to_string(),
                    );
                } else if ft.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

fn assert_same(tree: &mut Tree, oracle: &Path) {
    let mine = read(tree, "/etc/ld.so.cache").expect("kiln wrote no cache");
    let theirs = std::fs::read(oracle.join("etc/ld.so.cache")).unwrap();
    if mine != theirs {
        let at = mine.iter().zip(&theirs).position(|(a, b)| a != b);
        let dir = tempfile::tempdir().unwrap();
        let (m, t) = (dir.path().join("kiln"), dir.path().join("ldconfig"));
        std::fs::write(&m, &mine).unwrap();
        std::fs::write(&t, &theirs).unwrap();
        let print = |f: &Path| {
            String::from_utf8_lossy(
                &run(Command::new("/sbin/ldconfig").arg("-p").arg("-C").arg(f)).stdout,
            )
            .into_owned()
        };
        let (pm, pt) = (print(&m), print(&t));
        let diff: Vec<String> = pm
            .lines()
            .zip(pt.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .map(|(a, b)| format!("kiln {a:?}\nldconfig {b:?}"))
            .collect();
        panic!(
            "ld.so.cache differs at byte {at:?} (kiln {} bytes, ldconfig {}):\n{}",
            mine.len(),
            theirs.len(),
            diff.join("\n")
        );
    }
    let mine_root = tempfile::tempdir().unwrap();
    export(tree, "/", mine_root.path());
    let (mine, theirs) = (host_links(mine_root.path()), host_links(oracle));
    let only_mine: Vec<_> = mine
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(v))
        .collect();
    let only_theirs: Vec<_> = theirs
        .iter()
        .filter(|(k, v)| mine.get(*k) != Some(v))
        .collect();
    assert!(
        only_mine.is_empty() && only_theirs.is_empty(),
        "library symlinks differ:\nkiln only: {only_mine:?}\nldconfig only: {only_theirs:?}"
    );
}

const AMD64: &[&str] = &[
    "libc-bin",
    "libc6",
    "libc6-i386",
    "openssl",
    "curl",
    "openssh-client",
];

#[test]
fn amd64_cache_is_byte_identical_to_ldconfig() {
    let (mut tree, _store) = packages_tree("x86_64", AMD64);
    let oracle = ldconfig_oracle(&mut tree, None);
    let s = ldcache::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert!(s.installed && s.not_written.is_none(), "{s:?}");
    assert!(s.libraries > 50, "{s:?}");
    assert_same(&mut tree, oracle.path());
    // glibc's own reader takes kiln's file.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cache");
    std::fs::write(&f, read(&mut tree, "/etc/ld.so.cache").unwrap()).unwrap();
    let p = common::run_ok(Command::new("/sbin/ldconfig").arg("-p").arg("-C").arg(&f));
    assert!(
        p.contains("libc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6"),
        "{p}"
    );
    assert!(p.contains("libc.so.6 (libc6) => /lib32/libc.so.6"), "{p}");
}

#[test]
fn odd_library_trees_match_ldconfig() {
    let (mut tree, _store) = packages_tree("x86_64", AMD64);
    let lib = "/usr/lib/x86_64-linux-gnu";
    let libz = read(&mut tree, &format!("{lib}/libz.so.1.2.13")).expect("zlib in the tree");
    let libssl = read(&mut tree, &format!("{lib}/libssl.so.3")).unwrap();
    // ldconfig makes the missing soname link and removes the dangling one.
    let d = kiln::boot::tree_io::lookup(&mut tree, lib).unwrap();
    tree.unlink(d, b"libz.so.1");
    link(&mut tree, lib, "libgone.so.1", "libgone.so.1.0.0");
    // glibc-hwcaps and legacy hwcap subdirectories.
    put(
        &mut tree,
        &format!("{lib}/glibc-hwcaps/x86-64-v3/libz.so.1.2.13"),
        libz.clone(),
        0o644,
    );
    put(
        &mut tree,
        &format!("{lib}/glibc-hwcaps/x86-64-v2/libssl.so.3"),
        libssl.clone(),
        0o644,
    );
    put(
        &mut tree,
        &format!("{lib}/glibc-hwcaps/empty-v9/README"),
        b"x".to_vec(),
        0o644,
    );
    put(
        &mut tree,
        &format!("{lib}/haswell/libz.so.1"),
        libz.clone(),
        0o644,
    );
    put(
        &mut tree,
        &format!("{lib}/tls/libssl.so.3"),
        libssl.clone(),
        0o644,
    );
    // A directory of its own: two versions of one soname, a dev link, odd files.
    let opt = "/opt/kiln/lib";
    put(
        &mut tree,
        &format!("{opt}/libdup.so.1.0"),
        libz.clone(),
        0o644,
    );
    put(
        &mut tree,
        &format!("{opt}/libdup.so.1.2"),
        libz.clone(),
        0o644,
    );
    link(&mut tree, opt, "libdup.so", "libz.so.1");
    put(
        &mut tree,
        &format!("{opt}/libscript.so"),
        b"/* GNU ld script */\nGROUP ( libz.so.1 )\n".to_vec(),
        0o644,
    );
    put(
        &mut tree,
        &format!("{opt}/libbad.so.1"),
        b"not an elf, long enough to be read by ldconfig at all\n".repeat(2),
        0o644,
    );
    put(
        &mut tree,
        &format!("{opt}/libcut.so.1"),
        libssl[..200].to_vec(),
        0o644,
    );
    let exe = read(&mut tree, "/usr/bin/openssl").unwrap();
    put(&mut tree, &format!("{opt}/libexe.so.1"), exe, 0o755);
    put(&mut tree, "/opt/kiln/lib2/libother.so.3", libssl, 0o644);
    link(&mut tree, "/opt/kiln", "lib-again", "lib");
    put(
        &mut tree,
        "/etc/ld.so.conf.d/kiln-test.conf",
        b"# kiln test\n/opt/kiln/lib=libc6   # with a type\n\thwcap 0 nosegneg\n\
          /opt/kiln/lib-again/\n/nonexistent\ninclude /etc/kiln-ld/*.conf missing/*.conf\n"
            .to_vec(),
        0o644,
    );
    put(
        &mut tree,
        "/etc/kiln-ld/a.conf",
        b"/opt/kiln/lib2\n".to_vec(),
        0o644,
    );
    put(
        &mut tree,
        "/etc/kiln-ld/.hidden.conf",
        b"/opt/hidden\n".to_vec(),
        0o644,
    );
    let oracle = ldconfig_oracle(&mut tree, None);
    let s = ldcache::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert_same(&mut tree, oracle.path());
    assert!(
        s.links_made
            .iter()
            .any(|l| l.ends_with("/libz.so.1 -> libz.so.1.2.13")),
        "{s:?}"
    );
    assert!(
        s.links_removed.iter().any(|l| l.ends_with("libgone.so.1")),
        "{s:?}"
    );
}

#[test]
fn arm64_cache_is_byte_identical_to_ldconfig() {
    // The image's own aarch64 ldconfig is the oracle; qemu-user runs it (only in this test).
    let (mut tree, _store) = packages_tree("aarch64", &["libc-bin", "libc6", "openssl", "curl"]);
    let oracle = ldconfig_oracle(&mut tree, Some("qemu-aarch64-static"));
    let s = ldcache::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert!(s.installed && s.not_written.is_none(), "{s:?}");
    assert_same(&mut tree, oracle.path());
}

#[test]
fn without_libc_bin_nothing_happens() {
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, Time::from_secs(0)));
    put(&mut tree, "/etc/ld.so.conf", b"/usr/lib\n".to_vec(), 0o644);
    let s = ldcache::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert!(!s.installed);
    assert!(read(&mut tree, "/etc/ld.so.cache").is_none());
}
