//! `kiln build` end to end: a recipe with every kind of entry becomes a disk that the real tools
//! accept, that reads back as the recipe said, and that is byte-identical however it is built.

mod common;

use common::{extract, run, run_ok, sha256_file};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// The recipe of version `version` on a disk of `size`: every kind of entry.
fn recipe_text(version: &str, size: &str) -> String {
    common::recipe::head("e2e", version, size, "40MiB") + ENTRIES
}

const ENTRIES: &str = r##"[[directory]]
path = "/etc"
mode = "0755"

[[file]]
path = "/etc/hostname"
content = "kiln-e2e\n"

[[file]]
path = "/etc/gshadow"
content = "root:*::\n"
mode = "0640"
group = 42

[[file]]
path = "/usr/bin/passwd"
source = "files/passwd.bin"
mode = "4755"

[[symlink]]
path = "/bin"
target = "usr/bin"

[[file]]
path = "/bin/hello"
content = "#!/bin/sh\necho hello\n"
mode = "0755"

[[tree]]
source = "rootfs"
dest = "/opt/app"
owner = 1000
group = 1000

[[archive]]
source = "layer.tar.gz"
dest = "/srv"

[[file]]
path = "/boot/efi/EFI/BOOT/BOOTX64.EFI"
source = "files/boot.efi"

[[file]]
path = "/etc/hostname"
content = "overridden\n"
"##;

/// Writes the recipe and its inputs into `dir`; returns the recipe path.
fn setup(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/passwd.bin"), b"\x7fELF fake passwd").unwrap();
    let efi: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("files/boot.efi"), efi).unwrap();
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::write(root.join("lib/data.txt"), "data\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::hard_link(root.join("lib/data.txt"), root.join("lib/data-link.txt")).unwrap();
    std::os::unix::fs::symlink("lib/data.txt", root.join("current")).unwrap();
    // A sparse file: 8 MiB with one data block in the middle.
    let f = std::fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"middle", 4 << 20).unwrap();
    // Host mtimes vary between checkouts; the build clamps them to source_date_epoch.
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join("layer.tar.gz")).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_path("www/index.html").unwrap();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_uid(33);
    h.set_gid(33);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    tar.append(&h, &b"hello\n"[..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let recipe = dir.join("recipe.toml");
    std::fs::write(&recipe, recipe_text("1.0.0", "96MiB")).unwrap();
    recipe
}

fn build(recipe: &Path, out: &Path, cwd: &Path) -> std::process::Output {
    run(kiln()
        .current_dir(cwd)
        .arg("build")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .arg("--json"))
}

fn build_ok(recipe: &Path, out: &Path, cwd: &Path) -> serde_json::Value {
    let o = build(recipe, out, cwd);
    assert!(
        o.status.success(),
        "kiln build failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

/// Versions of one image keep every UUID by default (the seed is the name), so a version bump
/// alone changes no byte of the disk, and the next version's snapshot can be an increment of the
/// last; an explicit seed still sets them.
#[test]
fn versions_of_one_image_keep_their_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = setup(dir.path());
    let v2 = dir.path().join("v2.toml");
    std::fs::write(&v2, recipe_text("2.0.0", "96MiB")).unwrap();
    let seeded = dir.path().join("seeded.toml");
    std::fs::write(
        &seeded,
        recipe_text("1.0.0", "96MiB").replace(
            r#"version = "1.0.0""#,
            "version = \"1.0.0\"\nseed = \"other\"",
        ),
    )
    .unwrap();
    let manifest = |j: &serde_json::Value| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(j["manifest"].as_str().unwrap()).unwrap())
            .unwrap()
    };
    let a = build_ok(&v1, &dir.path().join("a.raw"), dir.path());
    let b = build_ok(&v2, &dir.path().join("b.raw"), dir.path());
    let c = build_ok(&seeded, &dir.path().join("c.raw"), dir.path());
    let (ma, mb, mc) = (manifest(&a), manifest(&b), manifest(&c));
    assert_eq!(ma["version"], "1.0.0");
    assert_eq!(mb["version"], "2.0.0");
    assert_eq!(ma["disk_guid"], mb["disk_guid"]);
    assert_eq!(ma["partitions"], mb["partitions"]);
    assert_eq!(a["blocks_sha256"], b["blocks_sha256"], "the same disk");
    assert_ne!(ma["disk_guid"], mc["disk_guid"]);
    let uuids = |m: &serde_json::Value| -> Vec<serde_json::Value> {
        m["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| [p["unique_guid"].clone(), p["filesystem_uuid"].clone()])
            .collect()
    };
    let (ua, uc) = (uuids(&ma), uuids(&mc));
    assert!(ua.iter().zip(&uc).all(|(x, y)| x != y), "{ua:?} {uc:?}");
}

fn debugfs(img: &Path, cmd: &str) -> String {
    run_ok(Command::new("debugfs").arg("-R").arg(cmd).arg(img))
}

#[test]
fn recipe_builds_a_disk_the_real_tools_accept_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = setup(tmp.path());
    let img = tmp.path().join("out/e2e.raw");
    let json = build_ok(&recipe, &img, tmp.path());
    // The identity is the blocks digest (tests/digest.rs checks it against its definition); the
    // whole-disk sha256 only with --sha256.
    assert_eq!(json.get("sha256"), None);

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json["manifest"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(manifest["image"]["blocks"]["sha256"], json["blocks_sha256"]);
    assert_eq!(manifest["image"].get("sha256"), None);
    assert_eq!(manifest["image"]["size"], 96 << 20);
    assert_eq!(manifest["source_date_epoch"], 1_700_000_000);
    assert_eq!(
        manifest["recipe"]["sha256"].as_str().unwrap(),
        sha256_file(&recipe)
    );
    let inputs = manifest["inputs"].as_array().unwrap();
    for src in [
        "files/passwd.bin",
        "files/boot.efi",
        "rootfs",
        "layer.tar.gz",
    ] {
        assert!(
            inputs.iter().any(|i| i["source"] == src),
            "input {src} in {inputs:?}"
        );
    }
    let gz = inputs
        .iter()
        .find(|i| i["source"] == "layer.tar.gz")
        .unwrap();
    assert_eq!(
        gz["sha256"].as_str().unwrap(),
        sha256_file(&tmp.path().join("layer.tar.gz"))
    );

    // GPT: sgdisk verifies it, sfdisk shows the manifest's layout.
    let v = run_ok(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let sf: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let parts = sf["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(sf["partitiontable"]["id"], manifest["disk_guid"]);
    for (p, m) in parts.iter().zip(manifest["partitions"].as_array().unwrap()) {
        assert_eq!(p["uuid"], m["unique_guid"]);
        assert_eq!(p["type"], m["type_guid"]);
        assert_eq!(p["name"], m["label"]);
        assert_eq!(p["start"], m["first_lba"]);
    }

    // blkid sees the filesystem UUIDs the manifest records.
    for m in manifest["partitions"].as_array().unwrap() {
        let (off, _) = lba_range(m);
        let b = run_ok(
            Command::new("blkid")
                .arg("-p")
                .arg("-O")
                .arg(off.to_string())
                .arg(&img),
        );
        let want = format!("UUID=\"{}\"", m["filesystem_uuid"].as_str().unwrap());
        assert!(b.contains(&want), "blkid: {b} (want {want})");
    }

    // ESP: fsck.fat and mtools.
    let mp = &manifest["partitions"][0];
    let (off, len) = lba_range(mp);
    let esp = tmp.path().join("esp.img");
    extract(&img, off, len, &esp);
    run_ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    let got = Command::new("mtype")
        .args([
            "-i",
            &format!("{}@@{off}", img.display()),
            "::/EFI/BOOT/BOOTX64.EFI",
        ])
        .output()
        .unwrap();
    assert_eq!(
        got.stdout,
        std::fs::read(tmp.path().join("files/boot.efi")).unwrap()
    );

    // Root: e2fsck and debugfs.
    let (off, len) = lba_range(&manifest["partitions"][1]);
    let root = tmp.path().join("root.img");
    extract(&img, off, len, &root);
    let fsck = run(Command::new("e2fsck").arg("-fn").arg(&root));
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let uuid = debugfs(&root, "stats");
    assert!(
        uuid.to_lowercase()
            .contains(&mp_uuid(&manifest["partitions"][1])),
        "filesystem UUID from the manifest"
    );
    assert_eq!(
        debugfs(&root, "cat /etc/hostname"),
        "overridden\n",
        "later entries override"
    );
    let st = debugfs(&root, "stat /etc/gshadow");
    assert!(
        st.contains("Mode:  0640") && st.contains("Group:    42"),
        "{st}"
    );
    let st = debugfs(&root, "stat /usr/bin/passwd");
    assert!(st.contains("Mode:  04755"), "{st}");
    assert_eq!(
        debugfs(&root, "cat /usr/bin/hello"),
        "#!/bin/sh\necho hello\n",
        "via /bin symlink"
    );
    let st = debugfs(&root, "stat /bin");
    assert!(
        st.contains("Type: symlink") && st.contains("usr/bin"),
        "{st}"
    );
    let st = debugfs(&root, "stat /opt/app/lib/data.txt");
    assert!(
        st.contains("Links: 2") && st.contains("User:  1000"),
        "{st}"
    );
    assert!(
        st.contains("mtime: 0x6553f100"),
        "host mtimes clamped to source_date_epoch: {st}"
    );
    let st = debugfs(&root, "stat /opt/app/sparse.img");
    assert!(st.contains("Size: 8388608"), "{st}");
    assert!(
        st.contains("Blockcount: 8\n") || st.contains("Blockcount: 8 "),
        "one 4 KiB block allocated: {st}"
    );
    let st = debugfs(&root, "stat /srv/www/index.html");
    assert!(
        st.contains("User:    33") && st.contains("mtime: 0x5f5e1000"),
        "{st}"
    );
    assert_eq!(debugfs(&root, "cat /srv/www/index.html"), "hello\n");
    let ls = debugfs(&root, "ls -l /boot/efi");
    assert!(
        !ls.contains("EFI"),
        "the ESP's files are not in the root filesystem: {ls}"
    );
}

fn lba_range(p: &serde_json::Value) -> (u64, u64) {
    let first = p["first_lba"].as_u64().unwrap();
    let last = p["last_lba"].as_u64().unwrap();
    (first * 512, (last + 1 - first) * 512)
}

fn mp_uuid(p: &serde_json::Value) -> String {
    p["filesystem_uuid"].as_str().unwrap().to_lowercase()
}

/// The same recipe gives the same bytes from another working directory, another TZ and umask,
/// another wall-clock time, and another user.
#[test]
fn builds_are_byte_identical_across_cwd_tz_umask_clock_and_user() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let recipe = setup(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();

    build_ok(&recipe, &out.join("a.raw"), tmp.path());
    let sha = sha256_file(&out.join("a.raw"));

    // Another working directory, with a relative recipe path, TZ and umask.
    let o = run(Command::new("sh")
        .current_dir("/")
        .env("TZ", "Asia/Kolkata")
        .arg("-c")
        .arg(format!(
            "umask 077 && exec {} build {} -o {} --json",
            env!("CARGO_BIN_EXE_kiln"),
            recipe.strip_prefix("/").unwrap().display(),
            out.join("b.raw").display()
        )));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        sha256_file(&out.join("b.raw")),
        sha,
        "cwd/TZ/umask changed the image"
    );

    // Another wall-clock time.
    let o = run(Command::new("faketime")
        .arg("2031-05-05 12:00:00")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(out.join("c.raw")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        sha256_file(&out.join("c.raw")),
        sha,
        "the wall clock changed the image"
    );

    // Another user: root runs it as nobody; anyone else runs it as themselves (and root's build
    // is covered by CI, which runs as root).
    let is_root = unsafe { libc::geteuid() } == 0;
    let o = if is_root {
        run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(out.join("d.raw"))
            .env("HOME", "/tmp"))
    } else {
        build(&recipe, &out.join("d.raw"), tmp.path())
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        sha256_file(&out.join("d.raw")),
        sha,
        "the user changed the image"
    );
}

fn expect_error(recipe_text: &str, want: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    if recipe_text.contains("fake.tar.gz") {
        std::fs::write(
            tmp.path().join("fake.tar.gz"),
            "this is plain text, not gzip\n",
        )
        .unwrap();
    }
    if recipe_text.contains("big.bin") {
        std::fs::write(tmp.path().join("big.bin"), vec![0xABu8; 40 << 20]).unwrap();
    }
    let recipe = tmp.path().join("bad.toml");
    std::fs::write(&recipe, recipe_text).unwrap();
    let out_dir = tmp.path().join("out");
    let o = build(&recipe, &out_dir.join("x.raw"), tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "exit 1 with a message: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in want {
        assert!(err.contains(w), "error should mention {w:?}: {err}");
    }
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

#[test]
fn bad_inputs_give_clear_errors_and_leave_nothing() {
    let head = common::recipe::image("x", "1", "64MiB");
    let esp_root = common::recipe::esp_and_root("34MiB");
    // A missing source names the file and where the entry is.
    expect_error(
        &format!("{head}{esp_root}[[file]]\npath = \"/a\"\nsource = \"nope.bin\"\n"),
        &["nope.bin", "bad.toml:"],
    );
    // A mode that is not octal.
    expect_error(
        &format!("{head}{esp_root}[[file]]\npath = \"/a\"\ncontent = \"x\"\nmode = \"0x9\"\n"),
        &["bad.toml:", "mode", "octal"],
    );
    // Partitions that exceed the disk.
    expect_error(
        &format!("{head}[[partition]]\nlabel = \"big\"\ntype = \"linux\"\nsize = \"100MiB\"\nfilesystem = \"none\"\n"),
        &["big"],
    );
    // Two partitions of size "rest".
    expect_error(
        &format!("{head}[[partition]]\nlabel = \"a\"\ntype = \"linux\"\nsize = \"rest\"\nfilesystem = \"none\"\n\
                  [[partition]]\nlabel = \"b\"\ntype = \"linux\"\nsize = \"rest\"\nfilesystem = \"none\"\n"),
        &["rest"],
    );
    // An archive that is not what its extension says.
    expect_error(
        &format!("{head}{esp_root}[[archive]]\nsource = \"files/passwd.bin\"\ndest = \"/\"\n")
            .replace("files/passwd.bin", "fake.tar.gz"),
        &["fake.tar.gz"],
    );
    // Content that does not fit names the partition and the sizes.
    expect_error(
        &format!("{head}{esp_root}[[file]]\npath = \"/big\"\nsource = \"big.bin\"\n"),
        &["root", "needs", "blocks"],
    );
    // Unknown keys are refused with their position.
    expect_error(
        &format!("{head}colour = \"red\"\n"),
        &["bad.toml:8", "colour"],
    );
}

#[test]
fn interrupted_build_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    // 400 MiB of incompressible data keeps the writer busy long enough to be interrupted.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = vec![0u8; 400 << 20];
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(tmp.path().join("big.bin"), &data).unwrap();
    drop(data);
    let recipe = tmp.path().join("r.toml");
    std::fs::write(
        &recipe,
        recipe_text("1.0.0", "600MiB") + "\n[[file]]\npath = \"/big.bin\"\nsource = \"big.bin\"\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut child = kiln()
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(out.join("x.raw"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the temporary image to appear, then press Ctrl-C.
    let started = std::time::Instant::now();
    loop {
        let tmp_exists = std::fs::read_dir(&out)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(false);
        if tmp_exists {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it could be interrupted"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "no temporary image appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "an interrupted build leaves nothing: {left:?}"
    );
}
