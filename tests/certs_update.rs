//! kiln's `configure::certs` against ca-certificates' own postinst: a tree of bookworm
//! packages (ca-certificates and what its postinst runs: dash, coreutils, sed, grep, findutils,
//! debianutils, diffutils, dpkg, debconf, perl-base, openssl) is copied to the host and the
//! package's postinst runs in a chroot of the copy (`configure`, debconf's defaults, so
//! `update-ca-certificates` and `openssl rehash` as on a fresh install); kiln applies its
//! emulation to the same tree. `/etc/ca-certificates.conf`, every entry of `/etc/ssl/certs`
//! (links and their targets, files and their bytes) and the bundle must be identical. A second
//! case adds local certificates made with `openssl req`: odd names, subjects that need
//! canonicalising (spaces, case, T61String, BMPString, a multi-valued RDN), a name collision, a
//! duplicate, two certificates in one file, no final newline, an empty file and a non-PEM file.

mod common;

use common::pkgtree::{export, packages_tree};
use common::{ok, run, run_ok};
use kiln::configure::certs;
use kiln::tree::{Content, Kind, Meta, Node, Time, Tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const PACKAGES: &[&str] = &[
    "ca-certificates",
    "dash",
    "coreutils",
    "sed",
    "grep",
    "findutils",
    "debianutils",
    "diffutils",
    "dpkg",
    "debconf",
    "perl-base",
];

/// Runs the package's postinst (`configure`, a first install) in a chroot of a copy of `tree`.
fn postinst_oracle(tree: &mut Tree) -> tempfile::TempDir {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test runs ca-certificates' postinst in a chroot, which needs root (CI runs as root)"
    );
    let root = tempfile::tempdir().unwrap();
    export(tree, "/", root.path());
    let r = root.path();
    if !r.join("bin/sh").exists() {
        std::os::unix::fs::symlink("dash", r.join("usr/bin/sh")).unwrap();
    }
    std::fs::create_dir_all(r.join("dev")).unwrap();
    std::fs::create_dir_all(r.join("tmp")).unwrap();
    run_ok(
        Command::new("mknod")
            .arg(r.join("dev/null"))
            .args(["c", "1", "3"]),
    );
    run_ok(Command::new("chmod").arg("666").arg(r.join("dev/null")));
    let o = run(Command::new("chroot").arg(r).args([
        "/usr/bin/env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND=noninteractive",
        "DPKG_MAINTSCRIPT_PACKAGE=ca-certificates",
        "DPKG_MAINTSCRIPT_NAME=postinst",
        "/bin/sh",
        "/var/lib/dpkg/info/ca-certificates.postinst",
        "configure",
    ]));
    ok(&o);
    root
}

/// `/etc/ssl/certs` on the host: name → `link TARGET` or `file` and its bytes.
fn host_listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type().unwrap();
        let v = if ft.is_symlink() {
            format!("link {}", std::fs::read_link(e.path()).unwrap().display())
        } else if ft.is_file() {
            format!("file {}", common::sha256_file(&e.path()))
        } else {
            "other".to_string()
        };
        out.insert(name, v);
    }
    out
}

fn tree_listing(tree: &mut Tree, dir: &str) -> BTreeMap<String, String> {
    let id = kiln::boot::tree_io::lookup(tree, dir).unwrap();
    let entries: Vec<(Vec<u8>, kiln::tree::NodeId)> = tree
        .children(id)
        .unwrap()
        .iter()
        .map(|(n, &i)| (n.clone(), i))
        .collect();
    let mut out = BTreeMap::new();
    for (name, child) in entries {
        let v = match &tree.node(child).kind {
            Kind::Symlink(t) => format!("link {}", String::from_utf8_lossy(t)),
            Kind::File(c) => {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                std::io::copy(&mut c.open().unwrap(), &mut h).unwrap();
                format!("file {}", kiln::util::hex(&h.finalize()))
            }
            _ => "other".to_string(),
        };
        out.insert(String::from_utf8_lossy(&name).into_owned(), v);
    }
    out
}

fn assert_same(tree: &mut Tree, oracle: &Path) {
    let conf = common::pkgtree::read(tree, "/etc/ca-certificates.conf").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&conf),
        String::from_utf8_lossy(&std::fs::read(oracle.join("etc/ca-certificates.conf")).unwrap())
    );
    let mine = tree_listing(tree, "/etc/ssl/certs");
    let theirs = host_listing(&oracle.join("etc/ssl/certs"));
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
        "/etc/ssl/certs differs:\nkiln only: {only_mine:#?}\npostinst only: {only_theirs:#?}"
    );
}

#[test]
fn a_fresh_install_matches_the_postinst() {
    let (mut tree, _store) = packages_tree("x86_64", PACKAGES);
    let oracle = postinst_oracle(&mut tree);
    let s = certs::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert!(s.installed);
    assert!(s.certificates > 100, "{s:?}");
    assert_eq!(s.links, s.certificates);
    assert_eq!(s.hash_links, s.certificates, "{:?}", s.not_hashed);
    assert!(s.missing.is_empty() && s.hooks_not_run.is_empty(), "{s:?}");
    assert_same(&mut tree, oracle.path());
    // OpenSSL itself finds a root through kiln's hash links: Amazon's, by subject hash.
    let mine = tempfile::tempdir().unwrap();
    export(&mut tree, "/", mine.path());
    let amazon = mine
        .path()
        .join("usr/share/ca-certificates/mozilla/Amazon_Root_CA_1.crt");
    let hash = run_ok(
        Command::new("openssl")
            .args(["x509", "-hash", "-noout", "-in"])
            .arg(&amazon),
    );
    let link = mine
        .path()
        .join("etc/ssl/certs")
        .join(format!("{}.0", hash.trim()));
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_string_lossy(),
        "Amazon_Root_CA_1.pem"
    );
    run_ok(
        Command::new("openssl")
            .args(["verify", "-CApath"])
            .arg(mine.path().join("etc/ssl/certs"))
            .arg(&amazon),
    );
}

fn put(tree: &mut Tree, path: &str, data: Vec<u8>) {
    kiln::boot::tree_io::put_file(tree, path, Content::bytes(data), 0o644, Time::from_secs(0))
        .unwrap();
}

/// A self-signed certificate for `subject` (openssl's `-subj` syntax, UTF-8).
fn make_cert(dir: &Path, subject: &str, extra: &[&str]) -> Vec<u8> {
    let out = dir.join("cert.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-keyout",
                "/dev/null",
                "-days",
                "2",
                "-utf8",
                "-subj",
                subject,
            ])
            .args(extra)
            .arg("-out")
            .arg(&out),
    );
    std::fs::read(&out).unwrap()
}

#[test]
fn local_certificates_match_the_postinst() {
    let (mut tree, _store) = packages_tree("x86_64", PACKAGES);
    let tmp = tempfile::tempdir().unwrap();
    let local = "/usr/local/share/ca-certificates";
    let odd = make_cert(tmp.path(), "/CN=  Kiln   TEST  CA /O=Kiln, Inc.", &[]);
    let twin = make_cert(tmp.path(), "/CN=kiln test ca/O=kiln, inc.", &[]);
    let latin = make_cert(tmp.path(), "/CN=Café Ünïcode/O=Kiln", &[]);
    let bmp = make_cert(tmp.path(), "/CN=€uro Ω/O=Kiln", &[]);
    let multi = make_cert(tmp.path(), "/CN=a+OU=b/O=multi", &["-multivalue-rdn"]);
    let mut no_newline = make_cert(tmp.path(), "/CN=no newline", &[]);
    while no_newline.last() == Some(&b'\n') {
        no_newline.pop();
    }
    let amazon = common::pkgtree::read(
        &mut tree,
        "/usr/share/ca-certificates/mozilla/Amazon_Root_CA_1.crt",
    )
    .unwrap();
    put(
        &mut tree,
        &format!("{local}/My CA (test), 2.crt"),
        odd.clone(),
    );
    put(&mut tree, &format!("{local}/twin.crt"), twin);
    put(&mut tree, &format!("{local}/latin.crt"), latin);
    put(&mut tree, &format!("{local}/sub/bmp.crt"), bmp);
    put(&mut tree, &format!("{local}/multi.crt"), multi);
    put(&mut tree, &format!("{local}/no-newline.crt"), no_newline);
    put(&mut tree, &format!("{local}/amazon-again.crt"), amazon);
    put(
        &mut tree,
        &format!("{local}/two.crt"),
        [odd.clone(), odd].concat(),
    );
    put(&mut tree, &format!("{local}/empty.crt"), Vec::new());
    put(
        &mut tree,
        &format!("{local}/not-pem.crt"),
        b"hello\n".to_vec(),
    );
    put(
        &mut tree,
        &format!("{local}/ignored.pem"),
        b"not a .crt\n".to_vec(),
    );
    let sub = kiln::boot::tree_io::lookup(&mut tree, &format!("{local}/sub")).unwrap();
    tree.add(
        sub,
        b"linked.crt",
        Node {
            meta: Meta::new(0o777, 0, 0, Time::from_secs(0)),
            kind: Kind::Symlink(b"../multi.crt".to_vec()),
        },
    );
    let oracle = postinst_oracle(&mut tree);
    let s = certs::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert_same(&mut tree, oracle.path());
    let skipped: Vec<&str> = s.not_hashed.iter().map(|(f, _)| f.as_str()).collect();
    for f in ["two.pem", "empty.pem", "not-pem.pem", "amazon-again.pem"] {
        assert!(skipped.contains(&f), "{f} not in {skipped:?}");
    }
}

#[test]
fn without_ca_certificates_nothing_happens() {
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, Time::from_secs(0)));
    put(
        &mut tree,
        "/usr/share/ca-certificates/x/a.crt",
        b"x".to_vec(),
    );
    let s = certs::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert!(!s.installed);
    assert!(kiln::boot::tree_io::lookup(&mut tree, "/etc").is_none());
}
