//! kiln's depmod (`configure::kmod`) against kmod's own `depmod -b` on the same files: Debian
//! bookworm's cloud kernels for amd64 and arm64 (through kiln's package code and this machine's
//! mirror), and the amd64 one with odd additions (compressed, truncated and non-ELF modules,
//! `updates/`, `depmod.d` rules, a symlink). Every file must be byte-identical, and kmod's
//! `modprobe` must resolve `virtio_net`, `ena` and `nvme` from kiln's files.

mod common;

use common::pkgtree::{export, packages_tree, read};
use common::{ok, run};
use kiln::configure::kmod;
use kiln::tree::{Content, Kind, Meta, Node, Time, Tree};
use std::path::Path;
use std::process::Command;

const FILES: [&str; 10] = [
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];

fn the_kernel(tree: &mut Tree) -> String {
    let v = kiln::boot::tree_io::list(tree, "/usr/lib/modules");
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

/// Runs kmod's depmod on a copy of the tree's module directory (with `cfg` as its only
/// configuration directory, so the host's own is never read) and returns the root it wrote in.
fn depmod_oracle(tree: &mut Tree, version: &str, cfg: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("lib/modules").join(version);
    export(tree, &format!("/usr/lib/modules/{version}"), &dir);
    let o = run(Command::new("depmod")
        .arg("-b")
        .arg(root.path())
        .arg("-C")
        .arg(cfg)
        .arg(version));
    ok(&o);
    root
}

/// Where two files first differ, for a readable failure.
fn first_difference(name: &str, a: &[u8], b: &[u8]) -> String {
    if name.ends_with(".bin") {
        let at = a.iter().zip(b).position(|(x, y)| x != y);
        return format!(
            "first differing byte at {at:?}; kiln {} bytes, depmod {} bytes",
            a.len(),
            b.len()
        );
    }
    let la: Vec<&[u8]> = a.split(|&c| c == b'\n').collect();
    let lb: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        if x != y {
            return format!(
                "line {}: kiln {:?}, depmod {:?}",
                i + 1,
                String::from_utf8_lossy(x),
                String::from_utf8_lossy(y)
            );
        }
    }
    format!("lengths: kiln {} bytes, depmod {} bytes", a.len(), b.len())
}

fn assert_identical(tree: &mut Tree, version: &str, oracle: &Path) {
    let dir = oracle.join("lib/modules").join(version);
    for f in FILES {
        let mine = read(tree, &format!("/usr/lib/modules/{version}/{f}"))
            .unwrap_or_else(|| panic!("kiln wrote no {f}"));
        let theirs = std::fs::read(dir.join(f)).unwrap();
        assert!(
            mine == theirs,
            "{f} differs from depmod's: {}",
            first_difference(f, &mine, &theirs)
        );
    }
}

fn modprobe(root: &Path, version: &str, args: &[&str]) -> String {
    let o = run(Command::new("modprobe")
        .arg("-d")
        .arg(root)
        .arg("-S")
        .arg(version)
        .args(args));
    ok(&o)
}

/// kmod's modprobe, reading kiln's files, resolves what EC2 instances need.
fn check_with_modprobe(tree: &mut Tree, version: &str, oracle: &Path) {
    let mine = tempfile::tempdir().unwrap();
    export(
        tree,
        &format!("/usr/lib/modules/{version}"),
        &mine.path().join("lib/modules").join(version),
    );
    let m = format!("/lib/modules/{version}/kernel");
    let deps = modprobe(mine.path(), version, &["--show-depends", "virtio_net"]);
    assert!(
        deps.ends_with(&format!(
            "insmod {}/drivers/net/virtio_net.ko \n",
            mine.path().display().to_string() + &m
        )),
        "{deps}"
    );
    assert!(deps.contains("/net_failover.ko"), "{deps}");
    assert!(deps.contains("/failover.ko"), "{deps}");
    // The same answer as from depmod's files.
    let theirs = modprobe(oracle, version, &["--show-depends", "virtio_net"]);
    assert_eq!(
        deps.replace(&mine.path().display().to_string(), "ROOT"),
        theirs.replace(&oracle.display().to_string(), "ROOT")
    );
    // ENA by the modalias udev sees for an Amazon ENA NIC (PCI 1d0f:ec20).
    let ena = modprobe(
        mine.path(),
        version,
        &[
            "-R",
            "pci:v00001D0Fd0000EC20sv00001D0Fsd00000000bc02sc00i00",
        ],
    );
    assert_eq!(ena, "ena\n");
    let ena_deps = modprobe(mine.path(), version, &["--show-depends", "ena"]);
    assert!(
        ena_deps.contains("/drivers/net/ethernet/amazon/ena/ena.ko"),
        "{ena_deps}"
    );
    // NVMe is built into the cloud kernels: modprobe knows it from modules.builtin.bin.
    let nvme = modprobe(mine.path(), version, &["--show-depends", "nvme"]);
    assert_eq!(nvme, "builtin nvme\n");
    // virtio_net by its modalias (virtio device id 1).
    let by_alias = modprobe(mine.path(), version, &["-R", "virtio:d00000001v00001AF4"]);
    assert_eq!(by_alias, "virtio_net\n");
}

fn empty_cfg() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn debian_kernel_matches_depmod(arch: &str, package: &str) {
    let (mut tree, _store) = packages_tree(arch, &[package, "tiny-initramfs"]);
    let version = the_kernel(&mut tree);
    let cfg = empty_cfg();
    let oracle = depmod_oracle(&mut tree, &version, cfg.path());
    let summary = kmod::apply(&mut tree, Time::from_secs(1_700_000_000)).unwrap();
    assert_eq!(summary.kernels.len(), 1);
    let k = &summary.kernels[0];
    assert_eq!(k.version, version);
    let kos = std::fs::read_to_string(
        oracle
            .path()
            .join("lib/modules")
            .join(&version)
            .join("modules.dep"),
    )
    .unwrap()
    .lines()
    .count();
    assert_eq!(k.modules, kos);
    assert!(k.modules > 500 && k.symbols > 1000, "{k:?}");
    assert!(k.unreadable.is_empty(), "{:?}", k.unreadable);
    assert_identical(&mut tree, &version, oracle.path());
    check_with_modprobe(&mut tree, &version, oracle.path());
    // The files are dated by the build's clock and owned by root, mode 0644.
    let id = kiln::boot::tree_io::lookup(&mut tree, &format!("/lib/modules/{version}/modules.dep"))
        .unwrap();
    let meta = &tree.node(id).meta;
    assert_eq!((meta.mode, meta.uid, meta.gid), (0o644, 0, 0));
    assert_eq!(meta.mtime, Time::from_secs(1_700_000_000));
}

#[test]
fn amd64_cloud_kernel_is_byte_identical_to_depmod() {
    debian_kernel_matches_depmod("x86_64", "linux-image-cloud-amd64");
}

#[test]
fn arm64_cloud_kernel_is_byte_identical_to_depmod() {
    debian_kernel_matches_depmod("aarch64", "linux-image-cloud-arm64");
}

fn put(tree: &mut Tree, path: &str, data: Vec<u8>) {
    kiln::boot::tree_io::put_file(tree, path, Content::bytes(data), 0o644, Time::from_secs(0))
        .unwrap();
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut e, data).unwrap();
    e.finish().unwrap()
}

#[test]
fn odd_module_trees_match_depmod_too() {
    let (mut tree, _store) =
        packages_tree("x86_64", &["linux-image-cloud-amd64", "tiny-initramfs"]);
    let version = the_kernel(&mut tree);
    let d = format!("/usr/lib/modules/{version}");
    let k = format!("{d}/kernel");
    let virtio_net = read(&mut tree, &format!("{k}/drivers/net/virtio_net.ko")).unwrap();
    let virtio_blk = read(&mut tree, &format!("{k}/drivers/block/virtio_blk.ko")).unwrap();
    let failover = read(&mut tree, &format!("{k}/net/core/failover.ko")).unwrap();
    // updates/ beats kernel/ (depmod's default search), and it is xz-compressed.
    put(
        &mut tree,
        &format!("{d}/updates/virtio_net.ko.xz"),
        xz(&virtio_net),
    );
    // depmod.d: extra/ beats the kernel tree; an override; an excluded directory.
    put(
        &mut tree,
        &format!("{d}/extra/virtio_blk.ko.zst"),
        zstd::encode_all(&virtio_blk[..], 3).unwrap(),
    );
    put(
        &mut tree,
        &format!("{d}/weak/virtio_blk.ko"),
        virtio_blk.clone(),
    );
    put(
        &mut tree,
        &format!("{d}/kernel/skipme/failover.ko"),
        failover.clone(),
    );
    // Modules outside modules.order, exporting the same symbols as listed ones (the later
    // module owns them), one of them through a symlink.
    put(
        &mut tree,
        &format!("{d}/extra/failover-copy.ko"),
        failover.clone(),
    );
    let extra = kiln::boot::tree_io::lookup(&mut tree, &format!("{d}/extra")).unwrap();
    tree.add(
        extra,
        b"linked.ko",
        Node {
            meta: Meta::new(0o777, 0, 0, Time::from_secs(0)),
            kind: Kind::Symlink(b"../kernel/drivers/net/net_failover.ko".to_vec()),
        },
    );
    // Files depmod gets nothing from, but lists; and one it does not take for a module.
    put(
        &mut tree,
        &format!("{d}/extra/truncated.ko"),
        virtio_net[..3000].to_vec(),
    );
    put(
        &mut tree,
        &format!("{d}/extra/not-elf.ko"),
        b"hello\n".to_vec(),
    );
    put(
        &mut tree,
        &format!("{d}/extra/bad-xz.ko.xz"),
        b"\xfd7zXZ\0broken".to_vec(),
    );
    put(
        &mut tree,
        &format!("{d}/extra/zlib.ko.gz"),
        virtio_net.clone(),
    );
    let conf = b"# kiln test\nsearch updates extra built-in weak\n\
                 override virtio_blk * weak\n\
                 exclude skipme\n"
        .to_vec();
    put(&mut tree, "/etc/depmod.d/kiln-test.conf", conf.clone());
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("kiln-test.conf"), &conf).unwrap();

    let oracle = depmod_oracle(&mut tree, &version, cfg.path());
    let summary = kmod::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert_identical(&mut tree, &version, oracle.path());
    let k = &summary.kernels[0];
    let bad: Vec<&str> = k.unreadable.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(bad.len(), 3, "{:?}", k.unreadable);
    for want in ["truncated.ko", "not-elf.ko", "bad-xz.ko.xz"] {
        assert!(bad.iter().any(|p| p.ends_with(want)), "{want} in {bad:?}");
    }
    let dep = String::from_utf8(read(&mut tree, &format!("{d}/modules.dep")).unwrap()).unwrap();
    assert!(
        dep.contains("\nupdates/virtio_net.ko.xz: "),
        "updates/ wins"
    );
    assert!(dep.contains("\nweak/virtio_blk.ko: "), "the override wins");
    assert!(
        !dep.contains("skipme") && !dep.contains("zlib"),
        "excluded, not a module"
    );
}

#[test]
fn a_tree_without_kernels_is_left_alone() {
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, Time::from_secs(0)));
    put(&mut tree, "/etc/hostname", b"x\n".to_vec());
    let s = kmod::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert!(s.kernels.is_empty());
    assert!(kiln::boot::tree_io::lookup(&mut tree, "/lib").is_none());
}

#[test]
fn cut_short_order_and_odd_builtin_files_match_depmod() {
    let (mut tree, _store) =
        packages_tree("x86_64", &["linux-image-cloud-amd64", "tiny-initramfs"]);
    let version = the_kernel(&mut tree);
    let d = format!("/usr/lib/modules/{version}");
    // A modules.order whose last line lost its newline: depmod then ignores the whole file
    // and keeps its hash order of the names.
    let mut order = read(&mut tree, &format!("{d}/modules.order")).unwrap();
    assert_eq!(order.pop(), Some(b'\n'));
    put(&mut tree, &format!("{d}/modules.order"), order);
    // Builtin aliases shared by two modules (equal priorities keep the newest first), and
    // records depmod's stream reader skips or cuts: no dot, no '=', an empty value, a key
    // that is not alias, a bracket left open, a 5000-byte alias.
    let mut info = read(&mut tree, &format!("{d}/modules.builtin.modinfo")).unwrap();
    info.extend_from_slice(b"first.alias=kiln-shared\0second.alias=kiln-shared\0nodot\0");
    info.extend_from_slice(b"noequals.alias\0third.alias=\0fourth.license=GPL\0");
    info.extend_from_slice(b"fifth.alias=pci:v[0-9\0sixth.alias=");
    info.extend_from_slice(&vec![b'x'; 5000]);
    info.extend_from_slice(b"\0seventh.alias=last-one\0");
    put(&mut tree, &format!("{d}/modules.builtin.modinfo"), info);
    let mut builtin = read(&mut tree, &format!("{d}/modules.builtin")).unwrap();
    builtin.extend_from_slice(b"/abs/not-alpha.ko\nkernel/no_dot\nkernel/x/dash-name.ko\n");
    put(&mut tree, &format!("{d}/modules.builtin"), builtin);
    let oracle = depmod_oracle(&mut tree, &version, empty_cfg().path());
    kmod::apply(&mut tree, Time::from_secs(0)).unwrap();
    assert_identical(&mut tree, &version, oracle.path());
}
