//! The kernel command line kiln writes for every loader.

use crate::recipe::Arch;

/// `root=PARTUUID=<root> rw`, the architecture's serial console, the NVMe I/O timeout AWS
/// recommends for EBS volumes (the longest the driver accepts, so that a slow EBS volume is
/// never failed by the guest; see the EC2 "NVMe on Linux" guide), then the recipe's own
/// arguments (later arguments win in the kernel's parser, so the recipe can override).
pub fn build(arch: Arch, root_partuuid: &str, extra: &str) -> String {
    let console = match arch {
        Arch::X86_64 => "console=ttyS0,115200",
        Arch::Aarch64 => "console=ttyAMA0",
    };
    let mut s = format!(
        "root=PARTUUID={} rw {console} nvme_core.io_timeout=4294967295",
        root_partuuid.to_lowercase()
    );
    if !extra.trim().is_empty() {
        s.push(' ');
        s.push_str(extra.trim());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_root_console_and_timeout_then_the_recipe() {
        let u = "0A1B2C3D-0000-4000-8000-000000000001";
        assert_eq!(
            build(Arch::X86_64, u, "panic=-1 quiet"),
            "root=PARTUUID=0a1b2c3d-0000-4000-8000-000000000001 rw console=ttyS0,115200 \
             nvme_core.io_timeout=4294967295 panic=-1 quiet"
        );
        assert_eq!(
            build(Arch::Aarch64, u, ""),
            "root=PARTUUID=0a1b2c3d-0000-4000-8000-000000000001 rw console=ttyAMA0 \
             nvme_core.io_timeout=4294967295"
        );
    }
}
