//! `kiln test` and `kiln boot` against real QEMU and Debian's OVMF: images built by kiln with
//! systemd-boot, the cloud kernel and a busybox init placed by hand (`[[file]]` entries, no
//! `[boot]` support needed), then booted through the `kiln` binary. Inputs come from
//! `scripts/lib/boot-inputs.sh` (run by `scripts/test`). Full boots are few: each is ~20 s of TCG.

mod common;

use common::boot::{root_partuuid, HandMade};
use common::run_ok;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MARKER: &str = "KILN-BOOT-OK";

/// What the root's /sbin/init does.
enum Init {
    PrintsMarker,
    PrintsNothing,
}

/// Builds `dir/NAME.raw`: a 48 MiB ESP holding systemd-boot (unless `bootloader` is false), a
/// loader entry for the kernel and the kernel; an ext4 root with busybox and the init. The
/// entry needs the root partition's GUID, which derives from the seed alone: a first build with
/// a placeholder entry gives it (from the manifest), the second build is the image.
fn build_image(dir: &Path, name: &str, init: Init, bootloader: bool) -> PathBuf {
    let init_text = match init {
        Init::PrintsMarker => {
            format!("#!/bin/busybox sh\necho {MARKER}\n/bin/busybox poweroff -f\n")
        }
        Init::PrintsNothing => "#!/bin/busybox sh\n/bin/busybox poweroff -f\n".to_string(),
    };
    std::fs::write(dir.join(format!("{name}.init")), init_text).unwrap();
    let img = dir.join(format!("{name}.raw"));
    let init = format!("{name}.init");
    let seed = format!("qemu-test-{name}");
    let hand = HandMade {
        name,
        version: "1",
        seed: Some(&seed),
        init: &init,
        bootloader,
    };
    let write_recipe = |partuuid: &str| {
        let recipe = dir.join(format!("{name}.toml"));
        std::fs::write(&recipe, hand.recipe(partuuid)).unwrap();
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["build", "--allow-host-paths"])
                .arg(&recipe)
                .arg("-o")
                .arg(&img),
        );
        root_partuuid(&dir.join(format!("{name}.manifest.json")))
    };
    let partuuid = write_recipe("00000000-0000-0000-0000-000000000000");
    assert_eq!(
        write_recipe(&partuuid),
        partuuid,
        "the GUID depends on the seed alone"
    );
    img
}

/// Runs `kiln test` with a private TMPDIR (checked empty afterwards: the firmware variable
/// copy and QEMU's snapshot overlay leave nothing behind).
fn kiln_test(img: &Path, extra: &[&str]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("test")
        .arg(img)
        .args(extra)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "kiln test left {left:?} in TMPDIR");
    assert_no_qemu_for(img);
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

/// No process is left running (or as a zombie) with `img` on its command line.
fn assert_no_qemu_for(img: &Path) {
    let needle = img.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        assert!(
            !(cmd.contains("qemu-system") && cmd.contains(&needle)),
            "QEMU still running: {cmd}"
        );
    }
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
    assert!(stdout.starts_with("PASS "), "{}", text(&o));
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
        stdout.contains("kernel panic: ") && stdout.contains("VFS: Unable to mount root fs"),
        "{}",
        text(&o)
    );
    assert!(stdout.contains("last "), "{}", text(&o));
    assert!(std::fs::read_to_string(&vlog)
        .unwrap()
        .contains("Kernel panic - not syncing"));

    // A timeout stops QEMU (checked by kiln_test) and says so.
    let o = kiln_test(&img, &["--timeout", "2", "--log", vlog.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("timed out after 2 s"),
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
        stdout.contains("the machine stopped before the marker appeared"),
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
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("boot")
        .arg(&img)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Linux version 6."), "{}", text(&o));
    assert!(stdout.contains("reboot: Power down"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("-device nvme,serial=kiln-disk0,drive=disk0"),
        "{}",
        text(&o)
    );
    assert_no_qemu_for(&img);
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
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["test", "--arch", "x86_64"])
        .arg(&img)
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until QEMU runs (the console log's temp file exists, the vars copy is in TMPDIR).
    let started = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::read_dir(tmp.path()).unwrap().count() > 0
            && std::fs::read_dir(dir.path()).unwrap().count() > 1
    });
    assert!(started, "kiln test did not start QEMU");
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("qemu (pid"),
        "{}",
        text(&o)
    );
    assert_no_qemu_for(&img);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}\n{}", text(&o));
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
    std::fs::write(
        &recipe,
        r#"
[image]
name = "arm"
version = "1"
arch = "aarch64"
size = "80MiB"
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
"#,
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
                "qemu-system-aarch64 -machine virt -cpu cortex-a57 -m 1024 -nographic -no-reboot -net none -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd"
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
