//! Boot test inputs and the hand-made bootable recipe shared by the QEMU tests.

use std::path::{Path, PathBuf};

/// `target/boot-inputs` (or `$KILN_BOOT_INPUTS`), made by `scripts/lib/boot-inputs.sh`: Debian's
/// cloud kernel (`vmlinuz`), `busybox`, `systemd-bootx64.efi`, and the unpacked packages in
/// `root/`. Panics naming the script when `needs` (paths inside it) are missing.
pub fn inputs(needs: &[&str]) -> PathBuf {
    let dir = std::env::var_os("KILN_BOOT_INPUTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/boot-inputs"));
    for f in needs {
        assert!(
            dir.join(f).exists(),
            "{} has no {f}: run scripts/lib/boot-inputs.sh (scripts/test does)",
            dir.display()
        );
    }
    dir
}

/// An image that boots under OVMF without `[boot]`: systemd-boot (unless `bootloader` is
/// false), a loader entry and the kernel on a 48 MiB ESP, busybox and `init` (a file beside the
/// recipe) on an ext4 root, all placed by `[[file]]`. The entry names the root's `partuuid`,
/// which derives from the image's seed alone: build once with any value, read it with
/// [`root_partuuid`], then write the recipe again with it.
pub struct HandMade<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub seed: Option<&'a str>,
    pub init: &'a str,
    pub bootloader: bool,
}

impl HandMade<'_> {
    pub fn recipe(&self, partuuid: &str) -> String {
        let inp = inputs(&["vmlinuz", "busybox", "systemd-bootx64.efi"]);
        let seed = self
            .seed
            .map(|s| format!("seed = \"{s}\"\n"))
            .unwrap_or_default();
        let image = super::recipe::image(self.name, self.version, "160MiB");
        let partitions = super::recipe::esp_and_root("48MiB");
        let mut text = format!(
            r#"{image}{seed}
{partitions}[[file]]
path = "/boot/efi/loader/loader.conf"
content = "timeout 0\ndefault kiln.conf\n"
[[file]]
path = "/boot/efi/loader/entries/kiln.conf"
content = "title kiln\nlinux /vmlinuz\noptions root=PARTUUID={partuuid} rw console=ttyS0 panic=-1\n"
[[file]]
path = "/boot/efi/vmlinuz"
source = "{kernel}"
[[file]]
path = "/bin/busybox"
source = "{busybox}"
mode = "0755"
[[file]]
path = "/sbin/init"
source = "{init}"
mode = "0755"
"#,
            init = self.init,
            kernel = inp.join("vmlinuz").display(),
            busybox = inp.join("busybox").display(),
        );
        if self.bootloader {
            text.push_str(&format!(
                "[[file]]\npath = \"/boot/efi/EFI/BOOT/BOOTX64.EFI\"\nsource = \"{}\"\n",
                inp.join("systemd-bootx64.efi").display()
            ));
        }
        text
    }
}

/// The root partition's unique GUID (lower case), from a kiln manifest.
pub fn root_partuuid(manifest: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    m["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "root")
        .and_then(|p| p["unique_guid"].as_str())
        .unwrap()
        .to_lowercase()
}

/// The virtio-net modules of the cloud kernel in dependency order (the kernel builds them as
/// modules), as `[[file]]` entries placing them at `/m/<name>.ko` for an init to `insmod`.
pub const NET_MODULES: [&str; 8] = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
];

pub fn net_module_files() -> String {
    let inp = inputs(&["root/lib/modules"]);
    let kdir = std::fs::read_dir(inp.join("root/lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("kernel").is_dir())
        .expect("a kernel's modules in boot-inputs");
    NET_MODULES
        .iter()
        .map(|m| {
            let name = m.rsplit('/').next().unwrap();
            format!(
                "[[file]]\npath = \"/m/{name}.ko\"\nsource = \"{}\"\n",
                kdir.join("kernel").join(format!("{m}.ko")).display()
            )
        })
        .collect()
}

/// Builds `dir/NAME.raw` from a [`HandMade`] recipe whose init is `init_text`, with `extra`
/// TOML appended (more files, `[ami]`, `[[test]]`). The loader entry needs the root partition's
/// GUID, which derives from the seed alone: a first build with a placeholder gives it (from the
/// manifest), the second build is the image.
pub fn build_hand(
    dir: &Path,
    name: &str,
    init_text: &str,
    bootloader: bool,
    extra: &str,
) -> PathBuf {
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
        std::fs::write(&recipe, format!("{}{extra}", hand.recipe(partuuid))).unwrap();
        super::run_ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
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

/// The processes whose command line contains `needle` (QEMU's names the run's private
/// directory under TMPDIR, and so does each metadata relay's).
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
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
        if cmd.contains(needle) && !cmd.contains("cargo") {
            let zombie = std::fs::read_to_string(e.path().join("stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(false);
            found.push(format!("{}{cmd}", if zombie { "(zombie) " } else { "" }));
        }
    }
    found
}

/// After a `kiln test` run with `TMPDIR=tmp`: the private directory is gone (firmware
/// variables, overlay, sockets, key pair, known_hosts) and no QEMU or relay runs. A QEMU still
/// running would name the directory on its command line (`-qmp unix:<dir>/qmp.sock`), so the
/// search cannot miss it.
pub fn assert_nothing_left(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "kiln test left {left:?} in TMPDIR");
    // Relays end when QEMU's side of their connection closes: give them a moment.
    let needle = tmp.to_string_lossy().into_owned();
    let mut procs = processes_with(&needle);
    for _ in 0..50 {
        if procs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        procs = processes_with(&needle);
    }
    assert!(procs.is_empty(), "still running: {procs:?}");
}

/// A child process killed (and reaped) if the test panics before it is taken back.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl KillOnDrop {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    pub fn take(mut self) -> std::process::Child {
        self.0.take().expect("taken once")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
