//! Bootable images end to end: the recipes/debian-minimal*.toml recipes are built from this
//! machine's Debian mirror (as CI does), their ESP, UKI, initrd, fstab and manifest are checked
//! with the real tools (mtools, sfdisk, objdump/objcopy, zstdcat/zcat + cpio, debugfs, e2fsck,
//! fsck.fat), and each boots under QEMU with UEFI firmware through `kiln test`.

mod common;

use common::{extract, run, run_ok};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The package cache shared by every build in this test binary (and across runs).
fn cache() -> PathBuf {
    std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"))
}

struct Built {
    _dir: tempfile::TempDir,
    image: PathBuf,
    manifest: Value,
}

impl Built {
    fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// (offset, length) in bytes of partition `i`.
    fn part(&self, i: usize) -> (u64, u64) {
        let p = &self.manifest["partitions"][i];
        let first = p["first_lba"].as_u64().unwrap();
        let last = p["last_lba"].as_u64().unwrap();
        (first * 512, (last - first + 1) * 512)
    }

    /// `mtools`' `-i image@@offset` for the ESP.
    fn esp(&self) -> String {
        format!("{}@@{}", self.image.display(), self.part(0).0)
    }

    fn mtype(&self, path: &str) -> String {
        run_ok(
            Command::new("mtype")
                .arg("-i")
                .arg(self.esp())
                .arg(format!("::{path}")),
        )
    }

    fn mcopy(&self, path: &str, to: &Path) {
        run_ok(
            Command::new("mcopy")
                .arg("-o")
                .arg("-i")
                .arg(self.esp())
                .arg(format!("::{path}"))
                .arg(to),
        );
    }

    /// The root filesystem as its own file, checked by e2fsck.
    fn root_fs(&self) -> PathBuf {
        let f = self.dir().join("root.ext4");
        if !f.exists() {
            let (off, len) = self.part(1);
            extract(&self.image, off, len, &f);
            run_ok(Command::new("e2fsck").arg("-fn").arg(&f));
        }
        f
    }

    fn debugfs(&self, req: &str) -> String {
        run_ok(
            Command::new("debugfs")
                .arg("-R")
                .arg(req)
                .arg(self.root_fs()),
        )
    }

    fn dump(&self, path: &str, to: &Path) {
        self.debugfs(&format!("dump {path} {}", to.display()));
    }

    /// The root partition's PARTUUID as sfdisk reads it from the GPT.
    fn root_partuuid(&self) -> String {
        let j: Value = serde_json::from_str(&run_ok(
            Command::new("sfdisk").arg("--json").arg(&self.image),
        ))
        .unwrap();
        j["partitiontable"]["partitions"][1]["uuid"]
            .as_str()
            .unwrap()
            .to_lowercase()
    }

    fn kernel_version(&self) -> String {
        let ls = self.debugfs("ls -p /boot");
        ls.lines()
            .filter_map(|l| l.split('/').nth(5))
            .find_map(|n| n.strip_prefix("vmlinuz-"))
            .expect("a kernel in /boot")
            .to_string()
    }
}

/// Builds `recipe` with the kiln binary into a fresh directory.
fn build(recipe: &Path) -> Built {
    build_in(recipe, tempfile::tempdir().unwrap())
}

/// [`build`] into `dir` (a [`common::fixture_dir`] for the images kept in a `static`).
fn build_in(recipe: &Path, dir: tempfile::TempDir) -> Built {
    let image = dir.path().join("image.raw");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(recipe)
            .arg("-o")
            .arg(&image)
            .env("KILN_CACHE", cache()),
    );
    let manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("image.manifest.json")).unwrap(),
    )
    .unwrap();
    run_ok(Command::new("sgdisk").arg("-v").arg(&image));
    Built {
        _dir: dir,
        image,
        manifest,
    }
}

/// A variant of recipes/debian-minimal.toml, written beside a copy of its init.
fn variant(name: &str, edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("recipes/debian-minimal.toml")).unwrap();
    let text = edit(text.replace("name = \"debian-minimal\"", &format!("name = \"{name}\"")));
    std::fs::create_dir(dir.path().join("debian-minimal")).unwrap();
    std::fs::copy(
        repo().join("recipes/debian-minimal/init"),
        dir.path().join("debian-minimal/init"),
    )
    .unwrap();
    let p = dir.path().join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

fn minimal() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = common::fixture_dir("boot-image-minimal");
        build_in(&repo().join("recipes/debian-minimal.toml"), dir)
    })
}

fn virtio() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = common::fixture_dir("boot-image-virtio");
        build_in(&repo().join("recipes/debian-minimal-virtio.toml"), dir)
    })
}

/// `kiln test IMAGE ARGS --log LOG`: (passed, console log). Exit 0 passes, 1 fails; anything
/// else (2: could not run) fails the test.
fn kiln_test(b: &Built, args: &[&str]) -> (bool, String) {
    let log = b.dir().join(format!("console-{}.log", args.join("-")));
    let o = run(Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("test")
        .arg(&b.image)
        .args(args)
        .arg("--log")
        .arg(&log));
    let code = o.status.code();
    assert!(
        matches!(code, Some(0) | Some(1)),
        "kiln test could not run ({:?}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    (
        code == Some(0),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

fn assert_boots(b: &Built, args: &[&str], want: &[&str]) -> String {
    let before = common::sha256_file(&b.image);
    let (ok, log) = kiln_test(b, args);
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        ok,
        "kiln test failed; console tail:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    for w in want {
        assert!(log.contains(w), "console lacks {w:?}:\n{log}");
    }
    assert_eq!(
        common::sha256_file(&b.image),
        before,
        "kiln test never modifies the image"
    );
    log
}

#[test]
fn systemd_boot_image_is_ec2_ready_and_boots_from_nvme() {
    let b = minimal();
    assert_eq!(b.manifest["boot_mode"], "uefi");
    assert_eq!(b.manifest["arch"], "x86_64");
    let (off, len) = b.part(0);
    let esp = b.dir().join("esp.fat");
    extract(&b.image, off, len, &esp);
    run_ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    let ver = b.kernel_version();
    let partuuid = b.root_partuuid();

    let listing = run_ok(
        Command::new("mdir")
            .arg("-/")
            .arg("-b")
            .arg("-i")
            .arg(b.esp())
            .arg("::/"),
    );
    let entry_name = format!("debian-minimal-{ver}.conf");
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI".to_string(),
        "::/loader/loader.conf".into(),
        format!("::/loader/entries/{entry_name}"),
        format!("::/debian-minimal/{ver}/linux"),
    ] {
        assert!(
            listing.lines().any(|l| l == f),
            "{f} not on the ESP:\n{listing}"
        );
    }
    assert_eq!(
        b.mtype("/loader/loader.conf"),
        format!("timeout 0\ndefault {entry_name}\n")
    );
    let entry = b.mtype(&format!("/loader/entries/{entry_name}"));
    assert!(
        entry.starts_with("title Debian GNU/Linux 12 (bookworm)\n"),
        "{entry}"
    );
    assert!(
        entry.contains(&format!("\nlinux /debian-minimal/{ver}/linux\n")),
        "{entry}"
    );
    assert!(
        entry.ends_with(&format!(
            "\noptions root=PARTUUID={partuuid} rw console=ttyS0,115200 \
             nvme_core.io_timeout=4294967295 panic=-1\n"
        )),
        "{entry}"
    );
    assert!(
        !entry.contains("initrd"),
        "the cloud kernel needs no initrd: {entry}"
    );

    // The loader and kernel on the ESP are the packages' own files.
    let (a, k) = (b.dir().join("a"), b.dir().join("k"));
    b.mcopy("/EFI/BOOT/BOOTX64.EFI", &a);
    b.dump("/usr/lib/systemd/boot/efi/systemd-bootx64.efi", &k);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&k).unwrap());
    b.mcopy(&format!("/debian-minimal/{ver}/linux"), &a);
    b.dump(&format!("/boot/vmlinuz-{ver}"), &k);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&k).unwrap());

    // EC2 readiness: fstab by PARTUUID, the ENA module in the tree, an init that loads it.
    let fstab = b.debugfs("cat /etc/fstab");
    let esp_uuid = b.manifest["partitions"][0]["unique_guid"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        fstab.contains(&format!("PARTUUID={partuuid} / ext4 ")),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("PARTUUID={esp_uuid} /boot/efi vfat ")),
        "{fstab}"
    );
    let ena = b.debugfs(&format!(
        "stat /usr/lib/modules/{ver}/kernel/drivers/net/ethernet/amazon/ena/ena.ko"
    ));
    assert!(ena.contains("Type: regular"), "{ena}");
    let init = b.debugfs("cat /sbin/init");
    assert!(init.contains("0x1d0f") && init.contains("insmod"), "{init}");

    // The root is on NVMe, as on Nitro; the console is ttyS0.
    assert_boots(
        b,
        &[],
        &[
            "EXT4-fs (nvme0n1p2): mounted filesystem",
            "console [ttyS0] enabled",
            "kiln-init: no ENA device",
            "KILN-BOOT-OK",
        ],
    );
}

/// objdump -h rows: (name, size, vma, file offset).
fn sections(efi: &Path) -> Vec<(String, u64, u64, u64)> {
    let out = run_ok(Command::new("objdump").arg("-h").arg(efi));
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 7 && f[0].parse::<u32>().is_ok() {
                let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                Some((f[1].to_string(), hex(f[2]), hex(f[3]), hex(f[5])))
            } else {
                None
            }
        })
        .collect()
}

fn pe_field(efi: &Path, name: &str) -> u64 {
    let out = run_ok(Command::new("objdump").arg("-p").arg(efi));
    let line = out.lines().find(|l| l.starts_with(name)).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

fn section_bytes(efi: &Path, name: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("section{name}"));
    run_ok(
        Command::new("objcopy")
            .args(["-O", "binary", "--only-section", name])
            .arg(efi)
            .arg(&out),
    );
    std::fs::read(out).unwrap()
}

#[test]
fn uki_with_initrd_is_a_valid_pe_and_boots_from_virtio() {
    let b = virtio();
    let ver = b.kernel_version();
    let partuuid = b.root_partuuid();
    let uki = b.dir().join("uki.efi");
    b.mcopy("/EFI/BOOT/BOOTX64.EFI", &uki);
    let stub = b.dir().join("stub.efi");
    b.dump("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", &stub);
    let stub_secs = sections(&stub);
    let secs = sections(&uki);
    assert_eq!(
        &secs[..stub_secs.len()],
        &stub_secs[..],
        "the stub's sections are kept"
    );
    let names: Vec<&str> = secs[stub_secs.len()..]
        .iter()
        .map(|s| s.0.as_str())
        .collect();
    assert_eq!(names, [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]);
    let (sa, fa) = (
        pe_field(&uki, "SectionAlignment"),
        pe_field(&uki, "FileAlignment"),
    );
    let stub_end = stub_secs.iter().map(|s| s.2 + s.1).max().unwrap();
    let mut prev_end = stub_end;
    for (name, size, vma, off) in &secs[stub_secs.len()..] {
        assert_eq!(
            vma % sa,
            0,
            "{name} VMA {vma:#x} is not SectionAlignment-aligned"
        );
        assert_eq!(
            off % fa,
            0,
            "{name} file offset {off:#x} is not FileAlignment-aligned"
        );
        assert!(
            *vma >= prev_end,
            "{name} at {vma:#x} overlaps what ends at {prev_end:#x}"
        );
        prev_end = vma + size;
    }
    let size_of_image = pe_field(&uki, "SizeOfImage");
    assert!(
        size_of_image >= prev_end && size_of_image % sa == 0,
        "{size_of_image:#x}"
    );
    assert_eq!(pe_field(&uki, "SizeOfHeaders") % fa, 0);

    let d = b.dir();
    let kernel = b.dir().join("vmlinuz");
    b.dump(&format!("/boot/vmlinuz-{ver}"), &kernel);
    let kernel = std::fs::read(kernel).unwrap();
    let linux = section_bytes(&uki, ".linux", d);
    assert_eq!(
        &linux[..kernel.len()],
        &kernel[..],
        ".linux holds the kernel"
    );
    assert!(linux[kernel.len()..].iter().all(|&x| x == 0));
    let cmdline = section_bytes(&uki, ".cmdline", d);
    assert_eq!(
        String::from_utf8(cmdline).unwrap(),
        format!(
            "root=PARTUUID={partuuid} rw console=ttyS0,115200 nvme_core.io_timeout=4294967295 panic=-1\0"
        )
    );
    let osrel = section_bytes(&uki, ".osrel", d);
    let tree_osrel = b.debugfs("cat /usr/lib/os-release");
    assert_eq!(String::from_utf8(osrel).unwrap(), tree_osrel);

    // The initrd: zstd (the kernel's config has CONFIG_RD_ZSTD=y), a newc cpio.
    let config = b.debugfs(&format!("cat /boot/config-{ver}"));
    assert!(config.contains("\nCONFIG_RD_ZSTD=y\n"));
    std::fs::write(d.join("initrd.zst"), section_bytes(&uki, ".initrd", d)).unwrap();
    let listing = run_ok(Command::new("sh").arg("-c").arg(format!(
        "zstdcat {0}/initrd.zst | cpio -itv --quiet",
        d.display()
    )));
    for m in [
        "virtio_blk.ko",
        "virtio_pci.ko",
        "virtio.ko",
        "virtio_ring.ko",
    ] {
        assert!(
            listing.lines().any(
                |l| l.ends_with(&format!("/{m}")) && l.contains(&format!("lib/modules/{ver}/"))
            ),
            "{m} not in the initrd:\n{listing}"
        );
    }
    assert!(listing.lines().any(|l| l.ends_with(" init")), "{listing}");
    assert!(
        listing.lines().any(|l| l.ends_with(" bin/busybox")),
        "{listing}"
    );

    assert_boots(
        b,
        &["--disk", "virtio"],
        &[
            "Run /init as init process",
            "EXT4-fs (vda2): mounted filesystem",
            "KILN-BOOT-OK",
        ],
    );
}

#[test]
fn builds_are_reproducible() {
    let again = build(&repo().join("recipes/debian-minimal-virtio.toml"));
    assert_eq!(
        common::sha256_file(&again.image),
        common::sha256_file(&virtio().image),
        "two builds of the same recipe are byte-identical"
    );
    assert_eq!(
        again.manifest["image"]["blocks"],
        virtio().manifest["image"]["blocks"]
    );
}

#[test]
fn systemd_boot_with_a_gzip_initrd_boots_from_virtio() {
    let (_d, recipe) = variant("debian-minimal-sdinitrd", |t| {
        t.replace(
            "kernel = \"auto\"\n",
            "kernel = \"auto\"\ninitrd = { modules = [\"virtio_pci\", \"virtio_blk\"], compression = \"gzip\" }\n",
        )
    });
    let b = build(&recipe);
    let ver = b.kernel_version();
    let entry = b.mtype(&format!(
        "/loader/entries/debian-minimal-sdinitrd-{ver}.conf"
    ));
    assert!(
        entry.contains(&format!("\ninitrd /debian-minimal-sdinitrd/{ver}/initrd\n")),
        "{entry}"
    );
    let initrd = b.dir().join("initrd.gz");
    b.mcopy(&format!("/debian-minimal-sdinitrd/{ver}/initrd"), &initrd);
    let listing = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("zcat {} | cpio -it --quiet", initrd.display())),
    );
    assert!(
        listing.lines().any(|l| l.ends_with("/virtio_blk.ko")),
        "{listing}"
    );
    assert_boots(
        &b,
        &["--disk", "virtio"],
        &["EXT4-fs (vda2): mounted filesystem", "KILN-BOOT-OK"],
    );
}

#[test]
fn an_init_that_prints_nothing_fails_kiln_test() {
    let (_d, recipe) = variant("debian-minimal-silent", |t| {
        t.replace(
            "source = \"debian-minimal/init\"",
            "content = \"\"\"#!/bin/busybox sh\n/bin/busybox poweroff -f\n\"\"\"",
        )
    });
    let b = build(&recipe);
    let (ok, log) = kiln_test(&b, &["--timeout", "240"]);
    assert!(!ok, "kiln test passed without the marker:\n{log}");
    assert!(
        log.contains("Run /sbin/init as init process"),
        "the kernel did start init:\n{log}"
    );
    assert!(!log.contains("KILN-BOOT-OK"));
}

#[test]
fn arm64_image_boots_with_aavmf() {
    let b = build(&repo().join("recipes/debian-minimal-arm64.toml"));
    assert_eq!(b.manifest["arch"], "aarch64");
    assert_eq!(b.manifest["boot_mode"], "uefi");
    let ver = b.kernel_version();
    let partuuid = b.root_partuuid();
    let listing = run_ok(
        Command::new("mdir")
            .arg("-/")
            .arg("-b")
            .arg("-i")
            .arg(b.esp())
            .arg("::/"),
    );
    assert!(
        listing.lines().any(|l| l == "::/EFI/BOOT/BOOTAA64.EFI"),
        "{listing}"
    );
    let entry = b.mtype(&format!("/loader/entries/debian-minimal-arm64-{ver}.conf"));
    assert!(
        entry.contains(&format!(
            "options root=PARTUUID={partuuid} rw console=ttyAMA0 "
        )),
        "{entry}"
    );
    // Debian's arm64 vmlinuz is gzip; UEFI's LoadImage wants the PE inside it.
    let k = b.dir().join("linux");
    b.mcopy(&format!("/debian-minimal-arm64/{ver}/linux"), &k);
    // (the host's x86 binutils reads no arm64 PE: binutils-aarch64-linux-gnu's does)
    let head = run_ok(Command::new("aarch64-linux-gnu-objdump").arg("-f").arg(&k));
    assert!(head.contains("file format pei-aarch64-little"), "{head}");
    let bb = b.dir().join("BOOTAA64.EFI");
    b.mcopy("/EFI/BOOT/BOOTAA64.EFI", &bb);
    let pkg = b.dir().join("systemd-bootaa64.efi");
    b.dump("/usr/lib/systemd/boot/efi/systemd-bootaa64.efi", &pkg);
    assert_eq!(std::fs::read(&bb).unwrap(), std::fs::read(&pkg).unwrap());
    assert_boots(
        &b,
        &[],
        &["EXT4-fs (nvme0n1p2): mounted filesystem", "KILN-BOOT-OK"],
    );
}
