//! `kiln test` and `kiln boot` against real QEMU and Debian's OVMF: images built by kiln with
//! systemd-boot, the cloud kernel and a busybox init placed by hand (`[[file]]` entries, no
//! `[boot]` support needed), then booted through the `kiln` binary. Inputs come from
//! `scripts/lib/boot-inputs.sh` (run by `scripts/test`). Full boots are few: each is ~20 s of TCG.
//! The EC2 side of the machine (network, metadata service, checks) is in tests/test_stage.rs.

mod common;

use common::boot::build_hand;
use common::run_ok;
use kiln::qemu::overlay::ImageFormat;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MARKER: &str = "KILN-BOOT-OK";

/// What the root's /sbin/init does.
enum Init {
    PrintsMarker,
    PrintsNothing,
}

fn build_image(dir: &Path, name: &str, init: Init, bootloader: bool) -> PathBuf {
    let init_text = match init {
        Init::PrintsMarker => {
            format!("#!/bin/busybox sh\necho {MARKER}\n/bin/busybox poweroff -f\n")
        }
        Init::PrintsNothing => "#!/bin/busybox sh\n/bin/busybox poweroff -f\n".to_string(),
    };
    build_hand(dir, name, &init_text, bootloader, "")
}

/// Runs `kiln test` with a private TMPDIR, then checks that nothing is left: the run's private
/// directory (firmware variables, disk overlay, sockets, keys) is gone, no QEMU and no metadata
/// relay runs.
fn kiln_test(img: &Path, extra: &[&str]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("test")
        .arg(img)
        .args(extra)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    common::boot::assert_nothing_left(tmp.path());
    out
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Image files beside the image that kiln test must not leave (temp console logs).
fn assert_no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with('.'),
            "temp file {n} left in {}",
            dir.display()
        );
    }
}

#[test]
fn a_good_image_passes_and_is_never_modified_virtio_without_initrd_panics() {
    let dir = tempfile::tempdir().unwrap();
    let img = build_image(dir.path(), "good", Init::PrintsMarker, true);
    let before = common::sha256_file(&img);

    let o = kiln_test(&img, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("console shows \"KILN-BOOT-OK\"  console  pass"),
        "{}",
        text(&o)
    );
    assert!(
        stdout.contains("PASS: 1 of 1 checks passed"),
        "{}",
        text(&o)
    );
    let log = dir.path().join("good.console.log");
    let console = std::fs::read_to_string(&log).unwrap();
    assert!(console.contains(MARKER), "{console}");
    // It really went firmware → systemd-boot → kernel → init on the NVMe root.
    assert!(console.contains("Linux version 6."), "{console}");
    assert!(console.contains("EXT4-fs (nvme0n1p2)"), "{console}");
    assert_eq!(common::sha256_file(&img), before, "the image was modified");

    // The cloud kernel has virtio_blk only as a module: without an initrd no root appears.
    let vlog = dir.path().join("virtio.log");
    let o = kiln_test(&img, &["--disk", "virtio", "--log", vlog.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(": kernel panic: ") && stdout.contains("VFS: Unable to mount root fs"),
        "{}",
        text(&o)
    );
    assert!(stdout.contains("console lines:"), "{}", text(&o));
    assert!(std::fs::read_to_string(&vlog)
        .unwrap()
        .contains("Kernel panic - not syncing"));

    // A timeout stops QEMU (checked by kiln_test) and says so.
    let o = kiln_test(&img, &["--timeout", "2", "--log", vlog.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("\"KILN-BOOT-OK\" did not appear on the console within 2 s"),
        "{}",
        text(&o)
    );
    assert_eq!(common::sha256_file(&img), before, "the image was modified");
    assert_no_temp_files(dir.path());
}

#[test]
fn an_init_that_prints_nothing_fails_and_shows_the_console_and_kiln_boot_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = build_image(dir.path(), "silent", Init::PrintsNothing, true);
    let o = kiln_test(&img, &["-v"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout
            .contains("the machine stopped (QEMU exit status 0) before \"KILN-BOOT-OK\" appeared"),
        "{}",
        text(&o)
    );
    // The tail is the end of the console: the kernel powering off after the init ran.
    assert!(stdout.contains("  | "), "{}", text(&o));
    assert!(stdout.contains("reboot: Power down"), "{}", text(&o));
    // -v streams the console to stderr.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Linux version 6."),
        "{}",
        text(&o)
    );
    assert!(dir.path().join("silent.console.log").is_file());

    // `kiln boot` gives QEMU the terminal: here stdout. The guest powers off, QEMU exits 0.
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("boot")
        .arg(&img)
        .env("TMPDIR", tmp.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Linux version 6."), "{}", text(&o));
    assert!(stdout.contains("reboot: Power down"), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("-device nvme,serial=kiln-disk0,drive=disk0,bootindex=1"),
        "{}",
        text(&o)
    );
    // The same EC2-like machine, its SSH port forwarded on a port the kernel picked.
    assert!(
        err.contains("-smbios type=1,manufacturer=Amazon EC2"),
        "{}",
        text(&o)
    );
    assert!(
        err.contains("the guest's SSH port is 127.0.0.1:"),
        "{}",
        text(&o)
    );
    common::boot::assert_nothing_left(tmp.path());
    assert_no_temp_files(dir.path());
}

#[test]
fn an_esp_without_a_bootloader_fails_in_the_firmware_not_by_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let img = build_image(dir.path(), "noloader", Init::PrintsMarker, false);
    let o = kiln_test(&img, &["--timeout", "600"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("the firmware found no bootloader on the disk: BdsDxe: "),
        "{}",
        text(&o)
    );
    assert!(stdout.contains("NVMe"), "{}", text(&o));
}

#[test]
fn setup_problems_exit_2_with_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = || Command::new(env!("CARGO_BIN_EXE_kiln"));
    let check = |o: Output, want: &str| {
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want), "want {want:?}: {}", text(&o));
        assert_eq!(e.trim().lines().count(), 1, "{}", text(&o));
    };
    let missing = dir.path().join("missing.raw");
    check(
        kiln().arg("test").arg(&missing).output().unwrap(),
        "cannot read the image",
    );
    check(
        kiln().arg("boot").arg(&missing).output().unwrap(),
        "cannot read the image",
    );
    check(
        kiln().arg("test").arg(dir.path()).output().unwrap(),
        "not a regular file",
    );
    let junk = dir.path().join("junk.raw");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    check(
        kiln().arg("test").arg(&junk).output().unwrap(),
        "pass --arch x86_64 or --arch aarch64",
    );
    check(
        kiln()
            .args([
                "test",
                "--arch",
                "x86_64",
                "--firmware-code",
                "/nonexistent/CODE.fd",
            ])
            .args(["--firmware-vars", "/usr/share/OVMF/OVMF_VARS_4M.fd"])
            .arg(&junk)
            .output()
            .unwrap(),
        "cannot read the UEFI firmware /nonexistent/CODE.fd",
    );
    check(
        kiln()
            .args(["test", "--arch", "aarch64"])
            .arg(&junk)
            .env("PATH", "/nonexistent")
            .output()
            .unwrap(),
        "qemu-system-aarch64 is not installed; install the Debian package qemu-system-arm",
    );
    check(
        kiln()
            .args(["test", "--arch", "x86_64", "--expect", ""])
            .arg(&junk)
            .output()
            .unwrap(),
        "the expected text must be one non-empty line",
    );
    // Nothing was started, so nothing was logged.
    assert!(!dir.path().join("junk.console.log").exists());
    assert_no_temp_files(dir.path());
}

#[test]
fn ctrl_c_stops_qemu_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // An empty disk: the firmware spends a few seconds before it gives up, time enough.
    let img = dir.path().join("empty.raw");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let child = common::boot::KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["test", "--arch", "x86_64"])
            .arg(&img)
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // Wait until QEMU runs: a process whose command line names the run directory in TMPDIR (the
    // directory and the console log's temp file exist a moment before QEMU does).
    let needle = tmp.path().to_string_lossy().into_owned();
    let started = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        common::boot::processes_with(&needle)
            .iter()
            .any(|p| p.contains("qemu-system"))
    });
    assert!(started, "kiln test did not start QEMU");
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let o = child.take().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("qemu (pid"),
        "{}",
        text(&o)
    );
    common::boot::assert_nothing_left(tmp.path());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["empty.raw"]);
}

#[test]
fn an_aarch64_image_gets_the_aarch64_machine_from_its_manifest_or_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("arm.toml");
    let head = common::recipe::head("arm", "1", "80MiB", "40MiB");
    std::fs::write(
        &recipe,
        head.replace(r#"arch = "x86_64""#, r#"arch = "aarch64""#),
    )
    .unwrap();
    let img = dir.path().join("arm.raw");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(&img),
    );
    for with_manifest in [true, false] {
        if !with_manifest {
            std::fs::remove_file(dir.path().join("arm.manifest.json")).unwrap();
        }
        let o = kiln_test(&img, &["-v"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        // AAVMF on the virt machine, the empty ESP seen as nothing to boot.
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(
                "qemu-system-aarch64 -machine virt -cpu cortex-a57 -m 1024 -nographic -no-reboot -netdev user,id=net0,"
            ),
            "{}",
            text(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stdout)
                .contains("the firmware found no bootloader on the disk"),
            "{}",
            text(&o)
        );
    }
}

/// kiln's qcow2 overlay, checked by qemu-img: a clean qcow2 v3 with the volume's virtual size,
/// backed by the raw image, reading as the image followed by zeros; writes land in the overlay
/// and never in the image.
#[test]
fn the_overlay_is_a_clean_qcow2_over_the_untouched_image() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("img,1.raw");
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, &data).unwrap();
    let before = common::sha256_file(&raw);
    let ov = dir.path().join("disk.qcow2");
    kiln::qemu::overlay::create(&ov, &raw, ImageFormat::Raw, 5 << 30).unwrap();
    let qemu_img = |args: &[&str]| {
        let mut c = Command::new("qemu-img");
        c.args(args).arg(&ov);
        common::run(&mut c)
    };
    let o = qemu_img(&["check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("No errors were found"),
        "{}",
        text(&o)
    );
    let info: serde_json::Value =
        serde_json::from_slice(&qemu_img(&["info", "--output=json"]).stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 5u64 << 30);
    assert_eq!(info["cluster-size"], 65536);
    assert_eq!(info["backing-filename"], raw.to_str().unwrap());
    assert_eq!(info["backing-filename-format"], "raw");
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
    // Identical to the image (qemu-img compare allows the larger side to be zeros).
    let o = common::run(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&ov),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Writes go to the overlay: at the start and beyond the image's end.
    for (off, pat) in [("0", "0xab"), ("4G", "0xcd")] {
        let o = common::run(
            Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", &format!("write -P {pat} {off} 64k")])
                .arg(&ov),
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = common::run(
        Command::new("qemu-io")
            .args([
                "-f",
                "qcow2",
                "-r",
                "-c",
                "read -P 0xcd 4G 64k",
                "-c",
                "read -P 0 3M 1M",
            ])
            .arg(&ov),
    );
    assert!(
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("mismatch"),
        "{}",
        text(&o)
    );
    let o = qemu_img(&["check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(common::sha256_file(&raw), before, "the image was written");
    let o = common::run(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&ov),
    );
    assert_eq!(o.status.code(), Some(1), "now they differ: {}", text(&o));
}

/// A qcow2, a fixed VHD and a streamOptimized VMDK (what `kiln build --format` writes; made here
/// by qemu-img) are each told by their own marker and are the overlay's backing file in that
/// format: qemu-img reads the overlay as the disk the image holds, not as the file's bytes.
#[test]
fn the_overlay_names_each_image_format_as_its_backing_format() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("img.raw");
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, &data).unwrap();
    let formats: [(&str, &[&str]); 3] = [
        ("qcow2", &["-O", "qcow2"]),
        ("vpc", &["-O", "vpc", "-o", "subformat=fixed,force_size=on"]),
        ("vmdk", &["-O", "vmdk", "-o", "subformat=streamOptimized"]),
    ];
    for (name, convert) in formats {
        let q = dir.path().join(format!("img.{name}"));
        let o = common::run(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw"])
                .args(convert)
                .arg(&raw)
                .arg(&q),
        );
        assert!(o.status.success(), "{}", text(&o));
        let before = common::sha256_file(&q);
        let f = std::fs::File::open(&q).unwrap();
        let info = kiln::qemu::image_file::probe(&f, f.metadata().unwrap().len()).unwrap();
        assert_eq!(info.format.as_str(), name);
        assert_eq!(info.disk_size, 3 << 20, "{name}");
        let ov = dir.path().join(format!("disk-{name}.qcow2"));
        kiln::qemu::overlay::create(&ov, &q, info.format, 1 << 30).unwrap();
        let qi = common::run(
            Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(&ov),
        );
        let qi: serde_json::Value = serde_json::from_slice(&qi.stdout).unwrap();
        assert_eq!(qi["backing-filename-format"], name);
        assert_eq!(qi["virtual-size"], 1u64 << 30);
        let o = common::run(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "qcow2"])
                .arg(&raw)
                .arg(&ov),
        );
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        // Named as raw, the same overlay would read the file's own bytes: a different disk.
        let wrong = dir.path().join(format!("wrong-{name}.qcow2"));
        kiln::qemu::overlay::create(&wrong, &q, ImageFormat::Raw, 1 << 30).unwrap();
        let o = common::run(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "qcow2"])
                .arg(&raw)
                .arg(&wrong),
        );
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert_eq!(
            common::sha256_file(&q),
            before,
            "{name}: the image was written"
        );
    }
}
