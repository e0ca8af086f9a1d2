//! systemd-boot on the ESP, with one Boot Loader Specification type #1 entry
//! (<https://uapi-group.org/specifications/specs/boot_loader_specification/>).
//!
//! Layout, relative to the ESP's root:
//! ```text
//! EFI/BOOT/BOOTX64.EFI            systemd-boot (the removable-media path firmware tries first)
//! loader/loader.conf              timeout 0, default <token>-<version>.conf
//! loader/entries/<token>-<version>.conf
//! <token>/<version>/linux         the kernel
//! <token>/<version>/initrd        the generated initrd, if any
//! ```
//! The entry token is the image's name, as BLS allows for images (`IMAGE_ID`-like).

/// The files to write on the ESP: (path relative to the ESP, bytes).
pub struct EspFiles {
    pub loader_conf: String,
    pub entry_path: String,
    pub entry: String,
    pub kernel_path: String,
    pub initrd_path: Option<String>,
}

pub fn layout(
    token: &str,
    version: &str,
    title: &str,
    cmdline: &str,
    with_initrd: bool,
) -> EspFiles {
    let dir = format!("{token}/{version}");
    let entry_name = format!("{token}-{version}.conf");
    let initrd_path = with_initrd.then(|| format!("{dir}/initrd"));
    let mut entry = format!("title {title}\nversion {version}\nlinux /{dir}/linux\n");
    if let Some(i) = &initrd_path {
        entry.push_str(&format!("initrd /{i}\n"));
    }
    entry.push_str(&format!("options {cmdline}\n"));
    EspFiles {
        loader_conf: format!("timeout 0\ndefault {entry_name}\n"),
        entry_path: format!("loader/entries/{entry_name}"),
        entry,
        kernel_path: format!("{dir}/linux"),
        initrd_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_pointing_at_its_files() {
        let f = layout(
            "debian-minimal",
            "6.1.0-56-cloud-amd64",
            "Debian GNU/Linux 12",
            "root=x rw",
            true,
        );
        assert_eq!(
            f.loader_conf,
            "timeout 0\ndefault debian-minimal-6.1.0-56-cloud-amd64.conf\n"
        );
        assert_eq!(
            f.entry_path,
            "loader/entries/debian-minimal-6.1.0-56-cloud-amd64.conf"
        );
        assert_eq!(
            f.entry,
            "title Debian GNU/Linux 12\nversion 6.1.0-56-cloud-amd64\n\
             linux /debian-minimal/6.1.0-56-cloud-amd64/linux\n\
             initrd /debian-minimal/6.1.0-56-cloud-amd64/initrd\noptions root=x rw\n"
        );
        assert_eq!(f.kernel_path, "debian-minimal/6.1.0-56-cloud-amd64/linux");
        assert!(layout("t", "1", "t", "", false).initrd_path.is_none());
    }
}
