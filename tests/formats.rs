//! `kiln build --format`: qcow2, VHD and VMDK written in the disk's one pass and checked by
//! qemu-img (check, compare with the raw disk, info), a qcow2 booted by `kiln test`; the OCI
//! layout read by skopeo and unpacked by umoci, entry by entry against the recipe's tree;
//! reproducibility (twice, and as nobody); bad input.

mod common;

use common::{run, run_ok};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// The file's SHA-256 by coreutils' `sha256sum`, not kiln's own code.
fn sha256_file(p: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(p));
    out.split_whitespace().next().unwrap().to_string()
}

fn manifest(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A tar with what an OCI layer must carry: setuid, owners, a hard link, a symlink, a device,
/// a fifo, xattrs (security.capability, user.*), a path over 100 bytes, a future mtime.
fn features_tar(dir: &Path) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>,
               path: &str,
               t: tar::EntryType,
               data: &[u8],
               mode: u32,
               owner: (u64, u64),
               link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(if path.ends_with("future") {
            4_000_000_000
        } else {
            1_600_000_000
        });
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        if t == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    use tar::EntryType as T;
    add(&mut b, "srv/", T::Directory, b"", 0o750, (33, 33), None);
    add(
        &mut b,
        "srv/su",
        T::Regular,
        b"su binary",
        0o4755,
        (0, 0),
        None,
    );
    add(
        &mut b,
        "srv/su2",
        T::Link,
        b"",
        0o4755,
        (0, 0),
        Some("srv/su"),
    );
    add(
        &mut b,
        "srv/link",
        T::Symlink,
        b"",
        0o777,
        (0, 0),
        Some("su"),
    );
    add(&mut b, "srv/null", T::Char, b"", 0o666, (0, 0), None);
    add(&mut b, "srv/fifo", T::Fifo, b"", 0o600, (1000, 100), None);
    add(
        &mut b,
        "srv/future",
        T::Regular,
        b"later",
        0o644,
        (65534, 65534),
        None,
    );
    let long = format!("srv/{}/{}", "d".repeat(60), "f".repeat(60));
    add(
        &mut b,
        &long,
        T::Regular,
        &[7u8; 70_000],
        0o640,
        (1, 2),
        None,
    );
    b.append_pax_extensions([
        ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..]),
        ("SCHILY.xattr.user.note", &b"kiln"[..]),
    ])
    .unwrap();
    add(&mut b, "srv/ping", T::Regular, b"ping", 0o755, (0, 0), None);
    let p = dir.join("features.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

/// 600 MiB (two qcow2 L1 entries, many VMDK grain tables), an ESP, and data spread over the
/// disk: a 3 MiB file of varied bytes, the features archive, a kernel-like file in /boot.
fn recipe(dir: &Path, name: &str, extra: &str) -> PathBuf {
    features_tar(dir);
    let blob: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("blob.bin"), blob).unwrap();
    let text = format!(
        r#"[image]
name = "{name}"
version = "2.1.0"
arch = "x86_64"
size = "600MiB"
source_date_epoch = 1700000000

[[partition]]
label = "esp"
type = "esp"
size = "40MiB"
filesystem = "vfat"
mount = "/boot/efi"

[[partition]]
label = "root"
type = "root"
size = "rest"
filesystem = "ext4"
mount = "/"

[[file]]
path = "/etc/hostname"
content = "formats\n"

[[file]]
path = "/usr/share/blob.bin"
source = "blob.bin"
mode = "0600"
owner = 12
group = 34

[[file]]
path = "/boot/vmlinuz-6.1"
content = "not really a kernel"

[[file]]
path = "/boot/efi/EFI/BOOT/BOOTX64.EFI"
content = "not really a loader"

[[archive]]
source = "features.tar"

[container]
entrypoint = ["/bin/sh", "-c"]
cmd = ["echo hello from kiln"]
env = {{ PATH = "/usr/bin:/bin", LANG = "C.UTF-8" }}
user = "1000:100"
working_dir = "/srv"
exposed_ports = ["8080", "53/udp"]
labels = {{ "org.example.team" = "images" }}
annotations = {{ "org.opencontainers.image.source" = "https://example.com/kiln" }}
{extra}
"#
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn build(recipe: &Path, out: &Path, formats: &[&str], extra: &[&str]) -> Output {
    let mut c = kiln();
    c.arg("build").arg(recipe).arg("-o").arg(out).arg("--json");
    for f in formats {
        c.args(["--format", f]);
    }
    c.args(extra);
    run(&mut c)
}

fn blocks_digest_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/blocks-digest")
}

fn qemu_img_json(args: &[&str], file: &Path) -> Value {
    let out = run_ok(Command::new("qemu-img").args(args).arg(file));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn disk_formats_equal_the_raw_disk_for_qemu_img() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "fmt", "");
    let out = tmp.path().join("out");
    let raw = out.join("fmt.raw");
    let o = build(&r, &raw, &["raw", "qcow2", "vhd", "vmdk"], &["--sha256"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = manifest(&out.join("fmt.manifest.json"));
    let disk_sha = m["image"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha256_file(&raw), disk_sha);
    // The disk's identity, the blocks digest, recomputed by the script from its definition.
    let blocks = run_ok(Command::new(blocks_digest_script()).arg(&raw));
    assert_eq!(
        m["image"]["blocks"]["sha256"].as_str().unwrap(),
        blocks.split_whitespace().next().unwrap()
    );

    // qcow2: qemu-img check is clean, version 3 (compat 1.1), sparse.
    let q = out.join("fmt.qcow2");
    let check = run(Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&q));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("No errors were found"));
    let info = qemu_img_json(&["info", "--output=json", "-f", "qcow2"], &q);
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
    assert_eq!(info["virtual-size"], 600u64 << 20);
    assert_eq!(info["cluster-size"], 65536);
    assert!(
        std::fs::metadata(&q).unwrap().len() < 40 << 20,
        "only non-zero clusters stored"
    );

    // VMDK: streamOptimized, compressed.
    let v = out.join("fmt.vmdk");
    let info = qemu_img_json(&["info", "--output=json", "-f", "vmdk"], &v);
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    assert_eq!(
        info["format-specific"]["data"]["extents"][0]["compressed"],
        true
    );
    assert_eq!(info["virtual-size"], 600u64 << 20);
    let check = run(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(&v));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // VHD: fixed, the raw disk's size exactly (whole MiB), footer last.
    let h = out.join("fmt.vhd");
    let info = qemu_img_json(&["info", "--output=json", "-f", "vpc"], &h);
    assert_eq!(info["virtual-size"], 600u64 << 20);
    let bytes = std::fs::metadata(&h).unwrap().len();
    assert_eq!(bytes, (600 << 20) + 512);

    // Each one holds exactly the raw disk.
    for (fmt, f) in [("qcow2", &q), ("vmdk", &v), ("vpc", &h)] {
        let c = run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", fmt])
            .arg(&raw)
            .arg(f));
        assert!(
            c.status.success(),
            "{fmt}: {}{}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        );
    }

    // Only the raw image is an EBS snapshot's bytes: kiln upload refuses the others at once.
    for (name, f) in [("qcow2", &q), ("VMDK", &v), ("VHD", &h)] {
        let o = run(kiln()
            .arg("upload")
            .arg(f)
            .args(["--region", "us-east-1"])
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(&format!("is a {name} image")),
            "{err}"
        );
    }
    // The manifest records every file with its size and sha256 (with --sha256, the raw image's
    // and the VHD's too).
    let outputs = m["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 4);
    for o in outputs {
        let f = out.join(o["file"].as_str().unwrap());
        assert_eq!(
            o["sha256"].as_str().unwrap(),
            sha256_file(&f),
            "{}",
            f.display()
        );
        assert_eq!(
            o["size"].as_u64().unwrap(),
            std::fs::metadata(&f).unwrap().len()
        );
        if o["format"] == "raw" {
            assert_eq!(o["sha256"].as_str().unwrap(), disk_sha);
        }
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with('.')),
        "no temporary file left: {names:?}"
    );
}

/// Without `--sha256` nothing hashes the whole disk: the raw image and the VHD (every byte of the
/// disk) have no sha256 in the manifest, the qcow2 and the VMDK (the data only) still have theirs,
/// and the disk is named by its blocks digest. `kiln hash` gives the missing ones later.
#[test]
fn only_the_data_sized_files_are_hashed_without_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "cheap", "");
    let out = tmp.path().join("out");
    let raw = out.join("cheap.raw");
    let o = build(&r, &raw, &["raw", "qcow2", "vhd", "vmdk"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = manifest(&out.join("cheap.manifest.json"));
    assert!(m["image"].get("sha256").is_none(), "{m}");
    let blocks = run_ok(Command::new(blocks_digest_script()).arg(&raw));
    assert_eq!(
        m["image"]["blocks"]["sha256"].as_str().unwrap(),
        blocks.split_whitespace().next().unwrap()
    );
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["blocks_sha256"], m["image"]["blocks"]["sha256"]);
    assert!(json.get("sha256").is_none());
    for o in m["outputs"].as_array().unwrap() {
        let f = out.join(o["file"].as_str().unwrap());
        match o["format"].as_str().unwrap() {
            "raw" | "vhd" => {
                assert!(o.get("sha256").is_none(), "{o}");
                let later = run_ok(kiln().arg("hash").arg(&f));
                assert!(later.starts_with(&sha256_file(&f)), "{later}");
            }
            _ => assert_eq!(o["sha256"].as_str().unwrap(), sha256_file(&f), "{o}"),
        }
    }
}

/// Every output, twice (the second time as nobody when run as root): the same bytes, the same
/// digests.
#[test]
fn every_format_is_reproducible_for_root_and_nobody() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = recipe(tmp.path(), "rep", "");
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let all = ["raw", "qcow2", "vhd", "vmdk", "oci"];
    let a = tmp.path().join("a");
    let o = build(&r, &a.join("rep.raw"), &all, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = tmp.path().join("b");
    std::fs::create_dir(&b).unwrap();
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o777)).unwrap();
    let is_root = unsafe { libc::geteuid() } == 0;
    let o = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(&r)
            .arg("-o")
            .arg(b.join("rep.raw"))
            .env("HOME", "/tmp");
        for f in all {
            c.args(["--format", f]);
        }
        run(&mut c)
    } else {
        build(&r, &b.join("rep.raw"), &all, &[])
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ma = manifest(&a.join("rep.manifest.json"));
    let mb = manifest(&b.join("rep.manifest.json"));
    assert_eq!(
        ma["outputs"], mb["outputs"],
        "same files, sizes, sha256s and digests"
    );
    assert_eq!(ma["outputs"].as_array().unwrap().len(), 5);
    for f in [
        "rep.raw",
        "rep.qcow2",
        "rep.vhd",
        "rep.vmdk",
        "rep.oci/index.json",
    ] {
        assert_eq!(sha256_file(&a.join(f)), sha256_file(&b.join(f)), "{f}");
    }
    let oci = ma["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["format"] == "oci")
        .unwrap();
    assert!(oci["digest"].as_str().unwrap().starts_with("sha256:"));
}

/// Reads every name in the tree (hard links under each of their names), below `prefix`.
fn tree_entries(t: &kiln::tree::Tree) -> Vec<(String, kiln::tree::NodeId)> {
    fn walk(
        t: &kiln::tree::Tree,
        id: kiln::tree::NodeId,
        path: &str,
        out: &mut Vec<(String, kiln::tree::NodeId)>,
    ) {
        if let Some(children) = t.children(id) {
            for (name, &c) in children {
                let p = format!("{path}/{}", String::from_utf8_lossy(name));
                out.push((p.clone(), c));
                walk(t, c, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(t, kiln::tree::Tree::ROOT, "", &mut out);
    out
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0);
        v.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    out
}

/// skopeo reads the layout; umoci (as root) unpacks it, and every entry of the recipe's tree is
/// there with its content, type, mode, owner, link target, device, xattrs and hard links; /boot
/// and the ESP are not; the config carries the [container] table.
#[test]
fn oci_layout_unpacks_to_the_recipes_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "img", "");
    let out = tmp.path().join("out");
    let o = build(&r, &out.join("img.raw"), &["oci"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !out.join("img.raw").exists(),
        "only the OCI image was asked for"
    );
    let layout = out.join("img.oci");
    let m = manifest(&out.join("img.manifest.json"));
    assert!(m.get("image").is_none(), "no disk was streamed");
    let digest = m["outputs"][0]["digest"].as_str().unwrap().to_string();

    let inspect: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:2.1.0", layout.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(inspect["Labels"]["org.example.team"], "images");
    let config: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}", layout.display())),
    ))
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo hello from kiln"]));
    assert_eq!(
        c["Env"],
        serde_json::json!(["LANG=C.UTF-8", "PATH=/usr/bin:/bin"])
    );
    assert_eq!(c["User"], "1000:100");
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );
    let raw: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}", layout.display())),
    ))
    .unwrap();
    let ann = &raw["annotations"];
    assert_eq!(
        ann["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(ann["org.opencontainers.image.version"], "2.1.0");
    assert_eq!(ann["org.opencontainers.image.title"], "img");
    assert_eq!(
        ann["org.opencontainers.image.source"],
        "https://example.com/kiln"
    );

    if unsafe { libc::geteuid() } != 0 {
        println!("note: not root; umoci unpack (which restores owners and devices) not run");
        return;
    }
    let bundle = tmp.path().join("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:2.1.0", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");

    let prepared = kiln::pipeline::prepare(&r).unwrap();
    let root = prepared
        .plan
        .partitions
        .iter()
        .position(|p| p.mount.as_deref() == Some("/"))
        .unwrap();
    let kiln::disk::assemble::Contents::Ext4(tree) = &prepared.contents[root] else {
        panic!("the root is ext4")
    };
    let sde = 1_700_000_000i64;
    let mut first_inode: BTreeMap<kiln::tree::NodeId, (String, u64)> = BTreeMap::new();
    let mut expected = std::collections::BTreeSet::new();
    for (path, id) in tree_entries(tree) {
        if path == "/boot" || path.starts_with("/boot/") {
            assert!(
                std::fs::symlink_metadata(rootfs.join(&path[1..])).is_err(),
                "{path} is left out"
            );
            continue;
        }
        expected.insert(path.clone());
        let node = tree.node(id);
        let on = rootfs.join(&path[1..]);
        let md = std::fs::symlink_metadata(&on).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(md.mode() & 0o170000, node.type_bits(), "{path}: type");
        assert_eq!(md.mode() & 0o7777, node.meta.mode, "{path}: mode");
        assert_eq!(
            (md.uid(), md.gid()),
            (node.meta.uid, node.meta.gid),
            "{path}: owner"
        );
        if !node.is_dir() {
            assert_eq!(
                md.mtime(),
                node.meta.mtime.secs.min(sde),
                "{path}: mtime clamped"
            );
        }
        let want_x: BTreeMap<String, Vec<u8>> = node
            .meta
            .xattrs
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
            .collect();
        assert_eq!(xattrs(&on), want_x, "{path}: xattrs");
        match &node.kind {
            kiln::tree::Kind::File(content) => {
                let mut want = Vec::new();
                std::io::Read::read_to_end(&mut content.open().unwrap(), &mut want).unwrap();
                let got = std::fs::read(&on).unwrap();
                assert!(got == want, "{path}: content");
                match first_inode.get(&id) {
                    Some((p0, ino)) => assert_eq!(md.ino(), *ino, "{path} is a hard link to {p0}"),
                    None => {
                        first_inode.insert(id, (path.clone(), md.ino()));
                    }
                }
            }
            kiln::tree::Kind::Symlink(t) => {
                assert_eq!(
                    std::fs::read_link(&on)
                        .unwrap()
                        .as_os_str()
                        .as_encoded_bytes(),
                    &t[..]
                );
            }
            kiln::tree::Kind::CharDev { major, minor } => {
                assert_eq!(md.rdev(), libc::makedev(*major, *minor), "{path}: device");
            }
            _ => {}
        }
    }
    assert!(expected.contains("/srv/su2") && expected.contains("/srv/null"));
    assert!(
        expected.iter().any(|p| p.len() > 120),
        "a long path is covered"
    );
    // Nothing more than the tree.
    let mut found = std::collections::BTreeSet::new();
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(format!("/{}", p.strip_prefix(base).unwrap().display()));
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(&rootfs, &rootfs, &mut found);
    assert_eq!(found, expected);
}

/// Two recipes, one per architecture: one multi-arch image (an index with both platforms), as
/// a directory and as an archive, with zstd layers; the same digest both ways.
#[test]
fn multi_arch_index_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let head = |arch: &str| {
        format!(
            "[image]\nname = \"multi\"\nversion = \"1\"\narch = \"{arch}\"\nsize = \"64MiB\"\n\
             [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\nfilesystem = \"ext4\"\nmount = \"/\"\n\
             [[file]]\npath = \"/etc/arch\"\ncontent = \"{arch}\\n\"\n\
             [container]\ncmd = [\"/bin/true\"]\ncompression = \"zstd\"\ntag = \"latest\"\n"
        )
    };
    let a = tmp.path().join("a.toml");
    let b = tmp.path().join("b.toml");
    std::fs::write(&a, head("x86_64")).unwrap();
    std::fs::write(&b, head("aarch64")).unwrap();
    let out = tmp.path().join("out");
    let dir_build = run(kiln()
        .arg("build")
        .arg(&a)
        .arg(&b)
        .args(["--format", "oci", "-o"])
        .arg(out.join("multi.raw")));
    assert!(
        dir_build.status.success(),
        "{}",
        String::from_utf8_lossy(&dir_build.stderr)
    );
    let tar_build = run(kiln()
        .arg("build")
        .arg(&a)
        .arg(&b)
        .args(["--format", "oci", "--oci-archive", "-o"])
        .arg(out.join("multi.raw")));
    assert!(
        tar_build.status.success(),
        "{}",
        String::from_utf8_lossy(&tar_build.stderr)
    );
    let ma = manifest(&out.join("multi-x86_64.manifest.json"));
    let mb = manifest(&out.join("multi-aarch64.manifest.json"));
    let index_digest = ma["outputs"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(
        mb["outputs"][0]["digest"],
        index_digest.as_str(),
        "one image index"
    );
    assert_ne!(
        ma["outputs"][0]["manifest_digest"],
        mb["outputs"][0]["manifest_digest"]
    );

    let raw: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}", out.join("multi.oci").display())),
    ))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    let arm: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .args(["--override-arch", "arm64", "inspect"])
            .arg(format!(
                "oci-archive:{}",
                out.join("multi.oci.tar").display()
            )),
    ))
    .unwrap();
    assert_eq!(
        arm["Architecture"], "arm64",
        "the arm64 instance of the index"
    );
    assert_eq!(
        arm["Digest"],
        index_digest.as_str(),
        "skopeo names the image by its index"
    );
    // The archive holds the same blobs as the directory.
    let mut t = tar::Archive::new(std::fs::File::open(out.join("multi.oci.tar")).unwrap());
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        if !e.header().entry_type().is_file() {
            continue;
        }
        let p = e.path().unwrap().into_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        assert_eq!(
            body,
            std::fs::read(out.join("multi.oci").join(&p)).unwrap(),
            "{}",
            p.display()
        );
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("multi.oci/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], index_digest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let blob = out
        .join("multi.oci/blobs/sha256")
        .join(&index_digest["sha256:".len()..]);
    assert_eq!(
        format!("sha256:{:x}", Sha256::digest(std::fs::read(blob).unwrap())),
        index_digest
    );
}

#[test]
fn bad_formats_are_errors_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = recipe(tmp.path(), "bad", "");
    // An unknown --format.
    let o = build(&r, &out.join("bad.raw"), &["qcow3"], &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown format \"qcow3\"") && err.contains("vmdk"),
        "{err}"
    );
    // An unknown format in [output], at its line and column.
    let r2 = recipe(
        tmp.path(),
        "bad2",
        "[output]\nformats = [\"raw\", \"iso\"]\n",
    );
    let o = build(&r2, &out.join("bad2.raw"), &[], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad2.toml:") && err.contains("unknown output format \"iso\""),
        "{err}"
    );
    // A VHD of a size that is not whole MiB.
    let text = std::fs::read_to_string(&r)
        .unwrap()
        .replace("size = \"600MiB\"", "size = \"629146112\"")
        .replace(
            "[container]",
            "[output]\nformats = [\"vhd\"]\n\n[container]",
        );
    let r3 = tmp.path().join("bad3.toml");
    std::fs::write(&r3, text).unwrap();
    let o = build(&r3, &out.join("bad3.raw"), &[], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad3.toml:") && err.contains("whole number of MiB"),
        "{err}"
    );
    // Two formats onto one file.
    let o = build(&r, &out.join("bad.vmdk"), &["raw", "vmdk"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("both be written to"), "{err}");
    // Several recipes are for one multi-arch OCI image only.
    let o = run(kiln()
        .arg("build")
        .arg(&r)
        .arg(&r)
        .args(["--format", "qcow2"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("multi-arch"));
    // An existing non-layout directory where the OCI layout would go is refused, and kept.
    std::fs::create_dir_all(out.join("bad.oci")).unwrap();
    std::fs::write(out.join("bad.oci/mine"), "keep").unwrap();
    let o = build(&r, &out.join("bad.raw"), &["qcow2", "oci"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not an OCI image layout"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("bad.oci/mine")).unwrap(),
        "keep"
    );
    let left: Vec<String> = std::fs::read_dir(&out)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        left,
        ["bad.oci"],
        "no image, no temporary file, no manifest"
    );
}

/// `kiln test` boots a qcow2 (attached as qcow2; its architecture from the manifest beside it).
#[test]
fn kiln_test_boots_the_qcow2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let init = dir.join("init");
    std::fs::write(
        &init,
        "#!/bin/busybox sh\necho KILN-BOOT-OK\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    let hand = common::boot::HandMade {
        name: "q",
        version: "1",
        seed: Some("qcow2-boot"),
        init: init.to_str().unwrap(),
        bootloader: true,
    };
    let img = dir.join("q.raw");
    let write = |partuuid: &str| {
        let recipe = dir.join("q.toml");
        std::fs::write(&recipe, hand.recipe(partuuid)).unwrap();
        let o = build(&recipe, &img, &["qcow2"], &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::boot::root_partuuid(&dir.join("q.manifest.json"))
    };
    let partuuid = write("00000000-0000-0000-0000-000000000000");
    write(&partuuid);
    let q = dir.join("q.qcow2");
    assert!(!img.exists(), "no raw image was written");
    let before = sha256_file(&q);
    // kiln test's machine: the qcow2 is the backing file of the run's overlay, named as qcow2,
    // and the volume is the disk's virtual size, not the file's.
    let run_tmp = tempfile::tempdir().unwrap();
    let o = run(kiln()
        .arg("test")
        .arg(&q)
        .args(["--timeout", "240"])
        .env("TMPDIR", run_tmp.path()));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains("console shows \"KILN-BOOT-OK\"  console  pass"),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    common::boot::assert_nothing_left(run_tmp.path());
    assert_eq!(sha256_file(&q), before, "the image is never modified");
}
