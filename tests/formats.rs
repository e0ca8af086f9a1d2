//! `kiln build --format`: qcow2, VHD and VMDK written in the disk's one pass and checked by
//! qemu-img (check, compare with the raw disk, info), a qcow2 booted by `kiln test`;
//! reproducibility of every format (twice, and as nobody); bad input. The OCI image's own tests
//! are in tests/oci.rs.

mod common;
#[path = "common/formats.rs"]
mod fmt;

use common::{run, run_ok};
use fmt::{blocks_digest_script, qemu_img_json};
use fmt::{build, kiln, manifest, recipe, sha256_file};
use serde_json::Value;
use std::process::Command;

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

/// `--sha256` hashes the whole disk: a build that writes no disk (only an OCI image, from --format
/// or from the recipe's [output]) refuses it before writing anything, instead of ignoring it.
#[test]
fn sha256_without_a_disk_format_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = recipe(tmp.path(), "sha", "");
    let o = build(&r, &out.join("sha.raw"), &["oci"], &["--sha256"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--sha256") && err.contains("no disk image") && err.contains("--format raw"),
        "{err}"
    );
    let r2 = recipe(tmp.path(), "sha2", "[output]\nformats = [\"oci\"]\n");
    let o = build(&r2, &out.join("sha2.raw"), &[], &["--sha256"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--sha256") && err.contains("formats: oci"),
        "{err}"
    );
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "nothing written"
    );
    // With a disk format beside the OCI image it applies to the disk.
    let o = build(&r, &out.join("sha.raw"), &["raw", "oci"], &["--sha256"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = manifest(&out.join("sha.manifest.json"));
    assert_eq!(
        m["image"]["sha256"].as_str().unwrap(),
        sha256_file(&out.join("sha.raw"))
    );
}

/// `kiln test` on an image that no manifest describes reads the architecture from the disk
/// itself: a qcow2 through its tables (kiln's, and qemu-img's own conversion of the raw disk), by
/// the GPT root partition's type, else by the ESP's EFI/BOOT/BOOT*.EFI; else it asks for --arch.
/// With a PATH that holds no QEMU, kiln stops right after choosing, naming the emulator of the
/// architecture it chose (no boot needed).
#[test]
fn kiln_test_reads_the_architecture_from_a_disk_without_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let base = std::fs::read_to_string(recipe(dir, "x", "")).unwrap();
    let variant = |name: &str, arch: &str, root: &str, loader: &str| {
        let r = dir.join(format!("{name}.toml"));
        let text = base
            .replace("name = \"x\"", &format!("name = \"{name}\""))
            .replace("arch = \"x86_64\"", &format!("arch = \"{arch}\""))
            .replace("type = \"root\"", &format!("type = \"{root}\""))
            .replace("EFI/BOOT/BOOTX64.EFI", loader);
        std::fs::write(&r, text).unwrap();
        let o = build(&r, &out.join(format!("{name}.raw")), &["raw", "qcow2"], &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::remove_file(out.join(format!("{name}.manifest.json"))).unwrap();
        // QEMU's own qcow2 of the same disk.
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(out.join(format!("{name}.raw")))
                .arg(out.join(format!("{name}-qemu.qcow2"))),
        );
        std::fs::remove_file(out.join(format!("{name}.raw"))).unwrap();
    };
    variant("x", "x86_64", "root", "EFI/BOOT/BOOTX64.EFI");
    variant("a", "aarch64", "linux", "EFI/BOOT/BOOTAA64.EFI");
    variant("n", "x86_64", "linux", "EFI/other/loader.efi");
    let empty = tempfile::tempdir().unwrap();
    let kiln_test = |image: &str| {
        let o = run(kiln()
            .arg("test")
            .arg(out.join(image))
            .env("PATH", empty.path())
            .env("TMPDIR", empty.path()));
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    for image in ["x.qcow2", "x-qemu.qcow2"] {
        let err = kiln_test(image);
        assert!(
            err.contains("qemu-system-x86_64 is not installed"),
            "{image}: {err}"
        );
    }
    for image in ["a.qcow2", "a-qemu.qcow2"] {
        let err = kiln_test(image);
        assert!(
            err.contains("qemu-system-aarch64 is not installed"),
            "{image}: {err}"
        );
    }
    for image in ["n.qcow2", "n-qemu.qcow2"] {
        let err = kiln_test(image);
        assert!(
            err.contains("cannot tell the architecture")
                && err.contains("BOOTAA64.EFI on an ESP")
                && err.contains("--arch"),
            "{image}: {err}"
        );
    }
    // A compressed qcow2 (qemu-img convert -c) is not read: the error says so and names --arch.
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2"])
            .arg(out.join("a-qemu.qcow2"))
            .arg(out.join("c.qcow2")),
    );
    let err = kiln_test("c.qcow2");
    assert!(
        err.contains("compressed") && err.contains("--arch"),
        "{err}"
    );
}

/// `kiln test` boots a qcow2, a fixed VHD and a streamOptimized VMDK, each attached as what it
/// is (told by its own marker: QEMU never probes a backing file) with its architecture from the
/// manifest beside it, and never modified.
#[test]
fn kiln_test_boots_the_qcow2_vhd_and_vmdk() {
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
        let o = build(
            &recipe,
            &img,
            &["qcow2", "vhd", "vmdk"],
            &["--allow-host-paths"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::boot::root_partuuid(&dir.join("q.manifest.json"))
    };
    let partuuid = write("00000000-0000-0000-0000-000000000000");
    write(&partuuid);
    assert!(!img.exists(), "no raw image was written");
    for ext in ["qcow2", "vhd", "vmdk"] {
        let q = dir.join(format!("q.{ext}"));
        let before = sha256_file(&q);
        // kiln test's machine: the image is the backing file of the run's overlay, named as
        // its format, and the volume is the disk's virtual size, not the file's.
        let run_tmp = tempfile::tempdir().unwrap();
        let o = run(kiln()
            .arg("test")
            .arg(&q)
            .args(["--timeout", "240"])
            .env("TMPDIR", run_tmp.path()));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && stdout.contains("console shows \"KILN-BOOT-OK\"  console  pass"),
            "{ext}: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        common::boot::assert_nothing_left(run_tmp.path());
        assert_eq!(
            sha256_file(&q),
            before,
            "{ext}: the image is never modified"
        );
    }
}
