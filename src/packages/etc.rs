//! The files a Debian system expects that no package ships: the merged-/usr layout (made before
//! unpacking, as bookworm's debootstrap does), accounts, `/etc/{hostname,hosts,fstab}` and an
//! empty `/etc/machine-id` (systemd fills it on first boot, machine-id(5)).

use std::collections::BTreeMap;

use super::error::{PackageError, Result};
use super::put;
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

#[derive(Debug, Clone)]
struct Account {
    name: String,
    /// The password field of the shadow file.
    secret: String,
    uid: u32,
    gid: u32,
    gecos: String,
    home: String,
    shell: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let [name, pw, uid, gid, gecos, home, shell] = f[..] else {
                return None;
            };
            Some(Account {
                name: name.into(),
                secret: pw.into(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                gecos: gecos.into(),
                home: home.into(),
                shell: shell.into(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let [name, _, gid, members] = f[..] else {
                return None;
            };
            Some(GroupEntry {
                name: name.into(),
                gid: gid.parse().ok()?,
                members: members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(Into::into)
                    .collect(),
            })
        })
        .collect()
}

/// Accounts, hostname, hosts, fstab and machine-id. Runs after the packages are unpacked (it
/// reads base-passwd's master files from the tree) and before the recipe's own entries.
pub fn configure(tree: &mut Tree, recipe: &Recipe, plan: &DiskPlan) -> Result<()> {
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    let passwd_master = put::read(tree, "/usr/share/base-passwd/passwd.master");
    let group_master = put::read(tree, "/usr/share/base-passwd/group.master");
    let mut users = match passwd_master {
        Some(t) => parse_passwd(&String::from_utf8_lossy(&t)),
        None => parse_passwd("root:*:0:0:root:/root:/bin/sh"),
    };
    let mut groups = match group_master {
        Some(t) => parse_group(&String::from_utf8_lossy(&t)),
        None => parse_group("root:*:0:"),
    };
    for g in &recipe.groups {
        groups.retain(|o| o.name != g.name);
        groups.push(GroupEntry {
            name: g.name.clone(),
            gid: g.gid,
            members: Vec::new(),
        });
    }
    for u in &recipe.users {
        if u.own_group && !groups.iter().any(|g| g.name == u.name) {
            groups.push(GroupEntry {
                name: u.name.clone(),
                gid: u.gid,
                members: Vec::new(),
            });
        }
        for g in &u.groups {
            let Some(e) = groups.iter_mut().find(|e| &e.name == g) else {
                return Err(PackageError::Etc(format!(
                    "{}: user {:?} is in group {g:?}, which neither base-passwd nor a [[group]] defines; expected a [[group]] named {g:?}",
                    u.pos, u.name
                )));
            };
            e.members.push(u.name.clone());
        }
        users.retain(|o| o.name != u.name);
        users.push(Account {
            name: u.name.clone(),
            secret: u.password.clone().unwrap_or_else(|| "!".into()),
            uid: u.uid,
            gid: u.gid,
            gecos: String::new(),
            home: u.home.clone(),
            shell: u.shell.clone(),
        });
    }
    // Duplicate ids would make ownership ambiguous; tell the user which entries collide.
    let mut seen = BTreeMap::new();
    for u in &users {
        if let Some(other) = seen.insert(u.uid, u.name.clone()) {
            return Err(PackageError::Etc(format!(
                "users {other:?} and {:?} both have uid {}; expected distinct uids",
                u.name, u.uid
            )));
        }
    }
    let days = recipe.image.source_date_epoch / 86400;
    let (mut passwd, mut shadow, mut group, mut gshadow) =
        (String::new(), String::new(), String::new(), String::new());
    for u in &users {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            u.name, u.uid, u.gid, u.gecos, u.home, u.shell
        ));
        shadow.push_str(&format!("{}:{}:{days}:0:99999:7:::\n", u.name, u.secret));
    }
    for g in &groups {
        let m = g.members.join(",");
        group.push_str(&format!("{}:x:{}:{m}\n", g.name, g.gid));
        gshadow.push_str(&format!("{}:*::{m}\n", g.name));
    }
    put::file(tree, "/etc/passwd", passwd, 0o644, sde)?;
    put::file(tree, "/etc/group", group, 0o644, sde)?;
    // Debian: shadow files are root:shadow 0640 (gid 42 in base-passwd).
    let shadow_gid = groups
        .iter()
        .find(|g| g.name == "shadow")
        .map_or(0, |g| g.gid);
    put::file_owned(tree, "/etc/shadow", shadow, 0o640, 0, shadow_gid, sde)?;
    put::file_owned(tree, "/etc/gshadow", gshadow, 0o640, 0, shadow_gid, sde)?;
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
        let (fs, opts) = match p.filesystem {
            Filesystem::Ext4 => ("ext4", "errors=remount-ro"),
            Filesystem::Vfat => ("vfat", "umask=0077"),
            Filesystem::None => continue,
        };
        let pass = if mount == "/" { 1 } else { 2 };
        out.push_str(&format!(
            "PARTUUID={} {mount} {fs} {opts} 0 {pass}\n",
            uuid_string(&p.unique_guid)
        ));
    }
    out
}
