//! What tests/formats.rs and tests/oci.rs share: the recipe (a 600 MiB disk with an ESP, /boot
//! and a tar of every file feature an OCI layer must carry), `kiln build` with formats, and the
//! oracles' helpers. Included by `#[path]` from those two only (each uses part of it).
#![allow(dead_code)]

use crate::common::{run, run_ok};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// The file's SHA-256 by coreutils' `sha256sum`, not kiln's own code.
pub fn sha256_file(p: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(p));
    out.split_whitespace().next().unwrap().to_string()
}

pub fn manifest(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A tar with what an OCI layer must carry: setuid, owners, a hard link, a symlink, a device,
/// a fifo, xattrs (security.capability, user.*), a path over 100 bytes, a future mtime.
pub fn features_tar(dir: &Path) -> PathBuf {
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
pub fn recipe(dir: &Path, name: &str, extra: &str) -> PathBuf {
    features_tar(dir);
    let blob: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("blob.bin"), blob).unwrap();
    let head = crate::common::recipe::head(name, "2.1.0", "600MiB", "40MiB");
    let text = format!(
        r#"{head}[[file]]
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

pub fn build(recipe: &Path, out: &Path, formats: &[&str], extra: &[&str]) -> Output {
    let mut c = kiln();
    c.arg("build").arg(recipe).arg("-o").arg(out).arg("--json");
    for f in formats {
        c.args(["--format", f]);
    }
    c.args(extra);
    run(&mut c)
}

pub fn blocks_digest_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/blocks-digest")
}

pub fn qemu_img_json(args: &[&str], file: &Path) -> Value {
    let out = run_ok(Command::new("qemu-img").args(args).arg(file));
    serde_json::from_str(&out).unwrap()
}
