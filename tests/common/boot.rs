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
        let mut text = format!(
            r#"
[image]
name = "{name}"
version = "{version}"
arch = "x86_64"
size = "160MiB"
{seed}[[partition]]
label = "esp"
type = "esp"
size = "48MiB"
filesystem = "vfat"
mount = "/boot/efi"
[[partition]]
label = "root"
type = "root"
size = "rest"
filesystem = "ext4"
mount = "/"
[[file]]
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
            name = self.name,
            version = self.version,
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
