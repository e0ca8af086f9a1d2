//! A real Linux kernel mounts kiln's ext4 root and reads it back: Debian's cloud kernel (ext4 and
//! NVMe built in) boots under QEMU straight into a busybox init on the root partition, by
//! PARTUUID, and prints what it finds. Inputs come from `scripts/lib/boot-inputs.sh` (run by
//! `scripts/test`); the image is opened in snapshot mode and never modified. The same content on a
//! 1 TiB disk proves that the kernel takes the larger flex groups kiln uses there (512 groups:
//! see `fs::ext4::layout::flex_groups`), and allocates in them.

mod common;

use common::run_ok;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn inputs() -> PathBuf {
    common::boot::inputs(&["vmlinuz", "busybox"])
}

const INIT: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
echo KILN-BOOT-START
$bb cat /etc/kiln-check
$bb stat -c 'stat %n %a %u %g %h' /usr/bin/passwd-test /etc/gshadow /data/a /data/b
echo "link $($bb readlink /data/link)"
echo "big $($bb sha256sum /data/big | $bb cut -c1-64)"
echo "sparse $($bb stat -c %s /data/sparse) $($bb tail -c 5 /data/sparse)"
echo "wide $($bb ls /data/wide | $bb wc -l) $($bb cat /data/wide/entry-2999)"
echo "deep $($bb cat /data/d1/d2/d3/d4/d5/d6/d7/d8/leaf)"
$bb head -c 2000000 /data/big >/data/copy && $bb sync
echo "copy $($bb sha256sum /data/copy | $bb cut -c1-64)"
echo KILN-BOOT-END
$bb poweroff -f
"#;

fn recipe(dir: &Path, bb: &Path, size: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("wide")).unwrap();
    std::fs::create_dir_all(data.join("d1/d2/d3/d4/d5/d6/d7/d8")).unwrap();
    std::fs::write(data.join("d1/d2/d3/d4/d5/d6/d7/d8/leaf"), "deep-ok").unwrap();
    std::fs::write(data.join("a"), "shared\n").unwrap();
    std::fs::hard_link(data.join("a"), data.join("b")).unwrap();
    std::os::unix::fs::symlink("a", data.join("link")).unwrap();
    for i in 0..3000 {
        std::fs::write(data.join(format!("wide/entry-{i}")), format!("v{i}")).unwrap();
    }
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("big"), &big).unwrap();
    let f = std::fs::File::create(data.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"tail!", (64 << 20) - 5).unwrap();
    std::fs::write(dir.join("init"), INIT).unwrap();
    let head = common::recipe::head("boot-test", "1", size, "40MiB");
    let text = format!(
        r#"{head}[[symlink]]
path = "/bin"
target = "usr/bin"
[[symlink]]
path = "/sbin"
target = "usr/sbin"
[[file]]
path = "/usr/bin/busybox"
source = "{bb}"
mode = "0755"
[[file]]
path = "/sbin/init"
source = "init"
mode = "0755"
[[directory]]
path = "/proc"
[[file]]
path = "/etc/kiln-check"
content = "check-ok"
[[file]]
path = "/etc/gshadow"
content = "root:*::\n"
mode = "0640"
group = 42
[[file]]
path = "/usr/bin/passwd-test"
content = "x"
mode = "4755"
[[tree]]
source = "data"
dest = "/data"
"#,
        bb = bb.display(),
    );
    let p = dir.join("boot.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_kernel_mounts_the_ext4_root_and_reads_it_back() {
    boot_and_read_back("160MiB");
}

#[test]
fn the_kernel_mounts_a_terabyte_root_and_writes_in_it() {
    boot_and_read_back("1TiB");
}

fn boot_and_read_back(size: &str) {
    let inp = inputs();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), &inp.join("busybox"), size);
    let img = tmp.path().join("boot.raw");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "--allow-host-paths"])
            .arg(&recipe)
            .arg("-o")
            .arg(&img),
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("boot.manifest.json")).unwrap(),
    )
    .unwrap();
    let partuuid = manifest["partitions"][1]["unique_guid"]
        .as_str()
        .unwrap()
        .to_lowercase();
    // The blocks digest, not a sha256 of all of a 1 TiB disk's zeros.
    let digest = || kiln::sink::blocks::BlockMapper::of_file(&img).unwrap();
    let before = digest();
    assert_eq!(
        manifest["image"]["blocks"]["sha256"],
        before.sha256.as_str()
    );

    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-net",
            "none",
        ])
        .arg("-kernel")
        .arg(inp.join("vmlinuz"))
        .arg("-append")
        .arg(format!(
            "root=PARTUUID={partuuid} rw console=ttyS0 panic=-1 init=/sbin/init"
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=d0,format=raw,snapshot=on",
            img.display()
        ))
        .args(["-device", "nvme,serial=kiln,drive=d0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (scripts/test installs it)");
    // Read the console on a thread; stop at the end marker or after the timeout.
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut s).ok();
        String::from_utf8_lossy(&s).into_owned()
    });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            child.kill().ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = reader.join().unwrap();
    let tail: String = console
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        console.contains("KILN-BOOT-END"),
        "no end marker; last console lines:\n{tail}"
    );
    assert!(!console.contains("EXT4-fs error"), "{tail}");
    assert!(
        console.contains("EXT4-fs (nvme0n1p2): mounted filesystem"),
        "{tail}"
    );
    let want = [
        "check-ok".to_string(),
        "stat /usr/bin/passwd-test 4755 0 0 1".into(),
        "stat /etc/gshadow 640 0 42 1".into(),
        "stat /data/a 644 0 0 2".into(),
        "stat /data/b 644 0 0 2".into(),
        "link a".into(),
        format!("big {}", common::sha256_file(&tmp.path().join("data/big"))),
        format!("sparse {} tail!", 64 << 20),
        "wide 3000 v2999".into(),
        "deep deep-ok".into(),
        format!(
            "copy {}",
            sha256_prefix(&tmp.path().join("data/big"), 2_000_000)
        ),
    ];
    for w in want {
        assert!(console.contains(&w), "console lacks {w:?}:\n{tail}");
    }
    assert_eq!(digest(), before, "the image is never modified");
}

fn sha256_prefix(path: &Path, n: usize) -> String {
    use sha2::{Digest, Sha256};
    let data = std::fs::read(path).unwrap();
    kiln::util::hex(&Sha256::digest(&data[..n]))
}
