//! dpkg's database (dpkg(1) "FILES"; `/var/lib/dpkg/status` is deb822): one `status` paragraph
//! per package with `Status: install ok installed`, and `info/<pkg>.{list,md5sums,conffiles,...}`.
//! Everything is sorted by package name, so the database is the same on every build.

use super::deb::Unpacked;
use super::error::Result;
use super::index::{field, paragraphs};
use super::put;
use crate::tree::{Time, Tree};

/// Maintainer scripts keep their execute bit; the rest of `info/` is data.
const SCRIPTS: &[&str] = &["preinst", "postinst", "prerm", "postrm", "config"];

/// ` /etc/x <md5>` lines for the package's conffiles, as unpacked in the tree.
fn conffiles(tree: &mut Tree, u: &Unpacked) -> String {
    use md5::{Digest, Md5};
    let Some((_, list)) = u.info.iter().find(|(n, _)| n == "conffiles") else {
        return String::new();
    };
    let mut out = String::new();
    for path in String::from_utf8_lossy(list).lines() {
        // `remove-on-upgrade` entries (dpkg 1.20.1) name files that are not shipped.
        let path = path.trim();
        if path.is_empty() || path.starts_with("remove-on-upgrade") {
            continue;
        }
        let sum = match put::read(tree, path) {
            Some(data) => crate::util::hex(&Md5::digest(&data)),
            None => "newconffile".to_owned(),
        };
        out.push_str(&format!(" {path} {sum}\n"));
    }
    out
}

/// Writes the database for `pkgs` (already sorted by name).
pub fn write_database(tree: &mut Tree, pkgs: &[&Unpacked], sde: Time) -> Result<()> {
    let mut status = String::new();
    put::dir(tree, "/var/lib/dpkg/info", 0o755, 0, 0, sde)?;
    put::dir(tree, "/var/lib/dpkg/updates", 0o755, 0, 0, sde)?;
    for u in pkgs {
        let ps = paragraphs(&u.control);
        let Some(p) = ps.first() else { continue };
        let name = field(p, "Package").unwrap_or("").to_owned();
        // dpkg names the files of Multi-Arch: same packages `<pkg>:<arch>`.
        let key = match (field(p, "Multi-Arch"), field(p, "Architecture")) {
            (Some("same"), Some(arch)) => format!("{name}:{arch}"),
            _ => name.clone(),
        };
        let conffiles = conffiles(tree, u);
        for (k, v) in p {
            if k == "Package" {
                status.push_str(&format!("Package: {v}\nStatus: install ok installed\n"));
                continue;
            }
            // dpkg writes Conffiles (path and MD5 of the shipped file) just before Description.
            if k == "Description" && !conffiles.is_empty() {
                status.push_str(&format!("Conffiles:\n{conffiles}"));
            }
            if k != "Status" && k != "Conffiles" {
                status.push_str(&format!("{k}: {v}\n"));
            }
        }
        status.push('\n');
        let mut list = u.files.join("\n");
        list.push('\n');
        put::file(
            tree,
            &format!("/var/lib/dpkg/info/{key}.list"),
            list,
            0o644,
            sde,
        )?;
        for (n, data) in &u.info {
            let mode = if SCRIPTS.contains(&n.as_str()) {
                0o755
            } else {
                0o644
            };
            put::file(
                tree,
                &format!("/var/lib/dpkg/info/{key}.{n}"),
                data.clone(),
                mode,
                sde,
            )?;
        }
    }
    put::file(tree, "/var/lib/dpkg/status", status, 0o644, sde)?;
    put::file(tree, "/var/lib/dpkg/available", "", 0o644, sde)?;
    Ok(())
}
