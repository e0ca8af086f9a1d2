//! `kiln build --format oci`: the OCI layout read by skopeo and unpacked by umoci, entry by entry
//! against the recipe's tree; the multi-arch index as a directory and as an archive.

mod common;
#[path = "common/formats.rs"]
mod fmt;

use common::{run, run_ok};
use fmt::{build, kiln, manifest, recipe};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

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

/// An OCI-only build makes no disk, so the disk's fit is not checked (nor its ext4 planned): a
/// tree bigger than the root partition is still a whole OCI image, while a raw build of the same
/// recipe names the partition and writes nothing.
#[test]
fn an_oci_only_build_does_not_need_the_disk_to_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tree/srv")).unwrap();
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 | 1)
        .collect();
    std::fs::write(d.join("tree/srv/big"), &big).unwrap();
    let r = d.join("r.toml");
    std::fs::write(
        &r,
        "[image]\nname = \"nofit\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"40MiB\"\n\
         [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\nfilesystem = \"ext4\"\nmount = \"/\"\n\
         [[tree]]\nsource = \"tree\"\ndest = \"/\"\n",
    )
    .unwrap();
    let raw = build(&r, &d.join("a.raw"), &["raw"], &[]);
    let err = String::from_utf8_lossy(&raw.stderr);
    assert!(
        !raw.status.success() && err.contains("root") && err.contains("needs"),
        "{err}"
    );
    assert!(!d.join("a.raw").exists());

    let oci = build(&r, &d.join("b.raw"), &["oci"], &[]);
    assert!(
        oci.status.success(),
        "{}",
        String::from_utf8_lossy(&oci.stderr)
    );
    let layout = d.join("b.oci");
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer = std::fs::File::open(blob(m["layers"][0]["digest"].as_str().unwrap())).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let mut found = None;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("srv/big") {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut got).unwrap();
            found = Some(got);
        }
    }
    assert!(found == Some(big), "srv/big is not in the layer whole");
}
