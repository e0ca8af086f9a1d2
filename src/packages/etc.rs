//! The files a Debian system expects that no package ships: the merged-/usr layout (made before
//! unpacking, as bookworm's debootstrap does), accounts, `/etc/{hostname,hosts,fstab}` and an
//! empty `/etc/machine-id` (systemd fills it on first boot, machine-id(5)).

use super::error::{PackageError, Result};
use super::put;
use crate::configure::accounts::{self, Accounts};
use crate::disk::layout::DiskPlan;
use crate::recipe::{Arch, Filesystem, Recipe};
use crate::tree::{Time, Tree};
use crate::util::uuid_string;

/// `/bin`, `/sbin` and `/lib*` as symlinks into `/usr` (debootstrap's `merge_usr`; amd64 also
/// has `lib32`, `lib64` and `libx32`).
pub fn merged_usr(tree: &mut Tree, arch: Arch, sde: Time) -> Result<()> {
    let dirs: &[&str] = match arch {
        Arch::X86_64 => &["bin", "sbin", "lib", "lib32", "lib64", "libx32"],
        Arch::Aarch64 => &["bin", "sbin", "lib"],
    };
    for d in dirs {
        put::dir(tree, &format!("/usr/{d}"), 0o755, 0, 0, sde)?;
        put::symlink(tree, &format!("/{d}"), &format!("usr/{d}"), sde)?;
    }
    Ok(())
}

/// Accounts, hostname, hosts, fstab and machine-id. Runs after the packages are unpacked (it
/// reads base-passwd's master files from the tree) and before the recipe's own entries.
pub fn configure(tree: &mut Tree, recipe: &Recipe, plan: &DiskPlan) -> Result<()> {
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    let days = recipe.image.source_date_epoch.div_euclid(86400);
    // configure_packages wrote the databases; without packages, base-passwd's masters (or
    // just root).
    let mut accounts = match Accounts::read(tree, days) {
        Some(a) => a,
        None => {
            let passwd = put::read(tree, "/usr/share/base-passwd/passwd.master");
            let group = put::read(tree, "/usr/share/base-passwd/group.master");
            let text = |b: Option<Vec<u8>>, d: &str| {
                b.map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|| d.to_owned())
            };
            Accounts::from_masters(
                &text(passwd, "root:*:0:0:root:/root:/bin/sh\n"),
                &text(group, "root:*:0:\n"),
                days,
            )
        }
    };
    accounts::apply_recipe(&mut accounts, recipe).map_err(PackageError::Etc)?;
    accounts
        .write(tree, sde)
        .map_err(|e| PackageError::Etc(e.to_string()))?;
    for u in &recipe.users {
        put::dir(tree, &u.home, 0o700, u.uid, u.gid, sde)?;
        if !u.ssh_authorized_keys.is_empty() {
            let ssh = format!("{}/.ssh", u.home.trim_end_matches('/'));
            put::dir(tree, &ssh, 0o700, u.uid, u.gid, sde)?;
            let mut keys = u.ssh_authorized_keys.join("\n");
            keys.push('\n');
            put::file_owned(
                tree,
                &format!("{ssh}/authorized_keys"),
                keys,
                0o600,
                u.uid,
                u.gid,
                sde,
            )?;
        }
    }
    let host = &recipe.image.name;
    put::file(tree, "/etc/hostname", format!("{host}\n"), 0o644, sde)?;
    put::file(
        tree,
        "/etc/hosts",
        format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        ),
        0o644,
        sde,
    )?;
    put::file(tree, "/etc/fstab", fstab(plan), 0o644, sde)?;
    put::file(tree, "/etc/machine-id", "", 0o444, sde)?;
    Ok(())
}

/// Every mounted filesystem by PARTUUID (fixed by the recipe's seed, so stable across builds).
pub fn fstab(plan: &DiskPlan) -> String {
    let mut parts: Vec<_> = plan
        .partitions
        .iter()
        .filter(|p| p.mount.is_some())
        .collect();
    parts.sort_by_key(|p| p.mount.clone());
    let mut out = String::from("# <file system> <mount point> <type> <options> <dump> <pass>\n");
    for p in parts {
        let mount = p.mount.as_deref().unwrap_or("/");
        let (fs, default) = match p.filesystem {
            Filesystem::Ext4 => ("ext4", "errors=remount-ro"),
            Filesystem::Vfat => ("vfat", "umask=0077"),
            Filesystem::None => continue,
        };
        let opts = p.options.as_deref().unwrap_or(default);
        let pass = if mount == "/" { 1 } else { 2 };
        out.push_str(&format!(
            "PARTUUID={} {mount} {fs} {opts} 0 {pass}\n",
            uuid_string(&p.unique_guid)
        ));
    }
    out
}
