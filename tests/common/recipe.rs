//! The start most test recipes share: the `[image]` table, then a FAT32 ESP at /boot/efi and an
//! ext4 root filling the rest of the disk (or the root alone). Its lines read `key = "value"`
//! exactly as written here, so a test may still `replace` one of them.

/// The `[image]` table of an x86_64 image, with a fixed `source_date_epoch` (the build's times do
/// not depend on the environment's `SOURCE_DATE_EPOCH`).
pub fn image(name: &str, version: &str, size: &str) -> String {
    format!(
        r#"[image]
name = "{name}"
version = "{version}"
arch = "x86_64"
size = "{size}"
source_date_epoch = 1700000000

"#
    )
}

/// An ESP of `size` mounted at /boot/efi.
pub fn esp(size: &str) -> String {
    format!(
        r#"[[partition]]
label = "esp"
type = "esp"
size = "{size}"
filesystem = "vfat"
mount = "/boot/efi"

"#
    )
}

/// The ext4 root, in the rest of the disk.
pub const ROOT: &str = r#"[[partition]]
label = "root"
type = "root"
size = "rest"
filesystem = "ext4"
mount = "/"

"#;

/// The two partitions: an ESP of `esp_size`, the root in the rest.
pub fn esp_and_root(esp_size: &str) -> String {
    esp(esp_size) + ROOT
}

/// [`image`] and [`esp_and_root`]: a recipe's whole head; its entries follow.
pub fn head(name: &str, version: &str, size: &str, esp_size: &str) -> String {
    image(name, version, size) + &esp_and_root(esp_size)
}
