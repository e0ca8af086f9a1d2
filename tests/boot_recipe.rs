//! `[boot]` in the recipe (every error with its FILE:LINE:COL), and the build-time errors and the
//! generated initrd on a tree made from Debian's cloud kernel package (target/boot-inputs, no
//! network): modules and their dependencies checked against kmod's own `depmod`, the archive
//! read by GNU `cpio`.

mod common;

use common::run_ok;
use kiln::recipe::{Compression, KernelChoice, Loader, Recipe};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every recipe here: an ESP and a root; the `[boot]` body under test starts at line 22.
fn head() -> String {
    common::recipe::head("t", "1", "256MiB", "64MiB")
}

fn parse(body: &str) -> Result<Recipe, kiln::recipe::RecipeError> {
    Recipe::from_str_with_env(&(head() + body), Path::new("/r/b.toml"), &|_| None)
}

fn err(body: &str) -> String {
    parse(body).expect_err("should be refused").to_string()
}

#[test]
fn boot_section_parses() {
    let r = parse(
        "[boot]\nloader = \"uki\"\ncmdline = \"panic=-1   quiet\"\nkernel = \"/boot/vmlinuz-6.1\"\n\
         initrd = { modules = [\"virtio-blk\", \"virtio_pci\", \"virtio_blk\"], compression = \"gzip\" }\n",
    )
    .unwrap();
    let b = r.boot.unwrap();
    assert_eq!(b.loader, Loader::Uki);
    assert_eq!(b.cmdline, "panic=-1 quiet");
    assert_eq!(b.kernel, KernelChoice::Path("/boot/vmlinuz-6.1".into()));
    let i = b.initrd.unwrap();
    assert_eq!(i.modules, ["virtio_blk", "virtio_pci"]);
    assert_eq!(i.compression, Compression::Gzip);
    assert_eq!((b.pos.line, b.pos.col), (22, 1));
    let d = parse("[boot]\nloader = \"systemd-boot\"\n")
        .unwrap()
        .boot
        .unwrap();
    assert_eq!(
        (d.kernel, d.cmdline.as_str(), d.initrd),
        (KernelChoice::Auto, "", None)
    );
}

#[test]
fn boot_errors_point_at_the_value() {
    let cases: &[(&str, &str)] = &[
        (
            "[boot]\nloader = \"grub\"\n",
            "/r/b.toml:23:10: unknown boot loader \"grub\"; expected \"systemd-boot\", \"uki\" or \"none\"",
        ),
        (
            "[boot]\nloader = \"uki\"\ntimeout = 3\n",
            "/r/b.toml:24:1: unknown key `timeout`; expected one of the keys `loader`, `cmdline`, `kernel`, `initrd`",
        ),
        ("[boot]\ncmdline = \"x\"\n", "/r/b.toml:22:1: missing key `loader`"),
        (
            "[boot]\nloader = \"uki\"\ncmdline = \"a\\nb\"\n",
            "/r/b.toml:24:11: the kernel command line contains a control character",
        ),
        (
            "[boot]\nloader = \"uki\"\nkernel = \"vmlinuz\"\n",
            "/r/b.toml:24:10: kernel \"vmlinuz\" is not absolute; expected \"auto\" or an absolute path",
        ),
        (
            "[boot]\nloader = \"uki\"\ninitrd = { modules = [\"../ena\"] }\n",
            "/r/b.toml:24:23: module name \"../ena\" is not allowed",
        ),
        (
            "[boot]\nloader = \"uki\"\ninitrd = { compression = \"lz4\" }\n",
            "/r/b.toml:24:26: unknown initrd compression \"lz4\"; expected \"auto\", \"zstd\", \"gzip\" or \"none\"",
        ),
        (
            "[boot]\nloader = \"uki\"\ninitrd = { module = [\"x\"] }\n",
            "/r/b.toml:24:12: unknown key `module`; expected `modules` or `compression`",
        ),
    ];
    for (body, want) in cases {
        let e = err(body);
        assert!(e.starts_with(want), "for {body:?}\n got: {e}\nwant: {want}");
    }
}

#[test]
fn boot_needs_the_partitions_it_uses() {
    let no_esp = "[image]\nname = \"t\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
        [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\nfilesystem = \"ext4\"\nmount = \"/\"\n\
        [boot]\nloader = \"systemd-boot\"\n";
    let e = Recipe::from_str_with_env(no_esp, Path::new("/r/b.toml"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/r/b.toml:13:10: a boot loader needs an EFI System Partition"),
        "{e}"
    );
    let ok = no_esp.replace("\"systemd-boot\"", "\"none\"");
    assert!(Recipe::from_str_with_env(&ok, Path::new("/r/b.toml"), &|_| None).is_ok());
    let no_root = "[image]\nname = \"t\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
        [[partition]]\nlabel = \"esp\"\ntype = \"esp\"\nsize = \"rest\"\nfilesystem = \"vfat\"\nmount = \"/boot/efi\"\n\
        [boot]\nloader = \"uki\"\n";
    let e = Recipe::from_str_with_env(no_root, Path::new("/r/b.toml"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/r/b.toml:12:1: [boot] needs a root filesystem"),
        "{e}"
    );
}

fn inputs() -> PathBuf {
    common::boot::inputs(&["root/boot"])
}

/// Builds `head() + body` in `dir`; the kiln binary's stderr on failure.
fn build(dir: &Path, body: &str) -> Result<PathBuf, String> {
    let recipe = dir.join("b.toml");
    std::fs::write(&recipe, head() + body).unwrap();
    let img = dir.join("b.raw");
    let o = common::run(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "--allow-host-paths"])
            .arg(&recipe)
            .arg("-o")
            .arg(&img),
    );
    if o.status.success() {
        Ok(img)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[test]
fn kernel_choice_errors_name_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let e = build(tmp.path(), "[boot]\nloader = \"uki\"\n").unwrap_err();
    assert!(
        e.contains("b.toml:22:1: [boot] kernel = \"auto\" found no /boot/vmlinuz-* in the tree"),
        "{e}"
    );
    let two = "[[file]]\npath = \"/boot/vmlinuz-1\"\ncontent = \"x\"\n[[file]]\npath = \"/boot/vmlinuz-2\"\ncontent = \"x\"\n[boot]\nloader = \"uki\"\n";
    let e = build(tmp.path(), two).unwrap_err();
    assert!(
        e.contains("found several kernels in /boot (vmlinuz-1, vmlinuz-2)"),
        "{e}"
    );
    let one = "[[file]]\npath = \"/boot/vmlinuz-1\"\ncontent = \"x\"\n[boot]\nloader = \"uki\"\n";
    let e = build(tmp.path(), one).unwrap_err();
    assert!(
        e.contains("kernel /boot/vmlinuz-1: it is not a PE/COFF image"),
        "{e}"
    );
    let real = format!(
        "[[file]]\npath = \"/boot/vmlinuz-6.1\"\nsource = \"{}\"\n[boot]\nloader = \"systemd-boot\"\n",
        inputs().join("vmlinuz").display()
    );
    let e = build(tmp.path(), &real).unwrap_err();
    assert!(
        e.contains("loader = \"systemd-boot\" needs /usr/lib/systemd/boot/efi/systemd-bootx64.efi in the tree; add the systemd-boot-efi package"),
        "{e}"
    );
}

/// Which modules `depmod`'s modules.dep says `wanted` need (themselves included), as paths.
fn depmod_closure(
    root: &Path,
    version: &str,
    wanted: &[&str],
) -> std::collections::BTreeSet<String> {
    let dep =
        std::fs::read_to_string(root.join(format!("lib/modules/{version}/modules.dep"))).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for line in dep.lines() {
        let (m, deps) = line.split_once(':').unwrap();
        let name = m
            .rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".ko")
            .replace('-', "_");
        if wanted.contains(&name.as_str()) {
            out.insert(m.to_string());
            out.extend(deps.split_whitespace().map(str::to_string));
        }
    }
    out
}

#[test]
fn initrd_holds_the_modules_depmod_resolves() {
    let inp = inputs();
    let tmp = tempfile::tempdir().unwrap();
    // kmod's depmod writes modules.dep for a copy of the kernel package's tree: the oracle.
    let oracle = tmp.path().join("oracle");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(inp.join("root"))
            .arg(&oracle),
    );
    let version = std::fs::read_dir(oracle.join("lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    run_ok(Command::new("depmod").arg("-b").arg(&oracle).arg(&version));
    let wanted = ["virtio_blk", "virtio_pci", "ena"];
    let want = depmod_closure(&oracle, &version, &wanted);
    assert!(want.len() > 4, "{want:?}");

    let body = format!(
        "[[tree]]\nsource = \"{}\"\ndest = \"/\"\n[boot]\nloader = \"none\"\n\
         initrd = {{ modules = [\"virtio_blk\", \"virtio-pci\", \"ena\", \"nvme\"], compression = \"gzip\" }}\n",
        inp.join("root").display()
    );
    let img = build(tmp.path(), &body).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("b.manifest.json")).unwrap())
            .unwrap();
    assert!(m.get("boot_mode").is_none(), "no loader, no boot mode: {m}");
    let root = &m["partitions"][1];
    let first = root["first_lba"].as_u64().unwrap();
    let last = root["last_lba"].as_u64().unwrap();
    let part = tmp.path().join("root.ext4");
    common::extract(&img, first * 512, (last - first + 1) * 512, &part);
    let initrd = tmp.path().join("initrd.gz");
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!(
                "dump /boot/initrd.img-{version} {}",
                initrd.display()
            ))
            .arg(&part),
    );
    let cpio = run_ok(Command::new("sh").arg("-c").arg(format!(
        "zcat {} > {}/initrd.cpio",
        initrd.display(),
        tmp.path().display()
    )));
    assert!(cpio.is_empty());
    let listing = run_ok(
        Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(tmp.path().join("initrd.cpio")),
    );
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    for l in listing.lines() {
        assert!(
            l.contains(" root     root ") || l.contains(" 0        0 "),
            "owned by root: {l}"
        );
        assert!(
            l.contains("Nov 14  2023"),
            "mtime is source_date_epoch: {l}"
        );
    }
    for must in ["init", "bin/busybox", "dev/console"] {
        assert!(names.contains(&must), "{must} missing from {names:?}");
    }
    let mods: std::collections::BTreeSet<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&format!("lib/modules/{version}/")))
        .filter(|n| n.ends_with(".ko"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        mods, want,
        "the initrd's modules are exactly depmod's closure"
    );
    // /init loads each module after every module depmod says it needs.
    let x = tmp.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(
        Command::new("cpio")
            .args(["-id", "--quiet", "-F"])
            .arg(tmp.path().join("initrd.cpio"))
            .current_dir(&x),
    );
    let init = std::fs::read_to_string(x.join("init")).unwrap();
    let dep =
        std::fs::read_to_string(oracle.join(format!("lib/modules/{version}/modules.dep"))).unwrap();
    for line in dep.lines() {
        let (m, deps) = line.split_once(':').unwrap();
        let Some(at) = init.find(&format!("/{m} ")) else {
            continue;
        };
        for d in deps.split_whitespace() {
            let before = init.find(&format!("/{d} ")).unwrap_or(usize::MAX);
            assert!(before < at, "{d} must be loaded before {m}:\n{init}");
        }
    }
    assert_eq!(
        std::fs::read(x.join("bin/busybox")).unwrap(),
        std::fs::read(inp.join("busybox")).unwrap()
    );
    let ko = format!("lib/modules/{version}/kernel/drivers/block/virtio_blk.ko");
    assert_eq!(
        std::fs::read(x.join(&ko)).unwrap(),
        std::fs::read(oracle.join(&ko)).unwrap()
    );
}
