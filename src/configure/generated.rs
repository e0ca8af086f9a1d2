//! Helper programs that postinst scripts call to generate files, done natively: each is a
//! shell or perl program that reads the tree and writes one file, so kiln does what it does
//! rather than interpreting it.
//!
//! - `update-shells` (debianutils 5.7): `/etc/shells` and `/var/lib/shells.state` from
//!   `/usr/share/debianutils/shells` and `shells.d/*`;
//! - `linux-update-symlinks` (linux-base 4.9): the `/vmlinuz`, `/initrd.img` (and `.old`)
//!   links of linux-image's postinst.

use super::fsops;
use crate::tree::{Time, Tree};

/// A path with its directory resolved through the tree's symlinks (dpkg-realpath of the
/// directory, as update-shells does it).
fn real_dir_path(tree: &Tree, p: &str) -> String {
    let (dir, base) = match p.rsplit_once('/') {
        Some(("", b)) => ("/", b),
        Some((d, b)) => (d, b),
        None => return p.to_owned(),
    };
    match fsops::find(tree, dir, true) {
        Some(f) if f.node.is_some() => fsops::join(&f.path(), base),
        _ => p.to_owned(),
    }
}

pub fn update_shells(tree: &mut Tree, sde: Time) -> Result<(), String> {
    let template = "/usr/share/debianutils/shells";
    let mut sources = vec![template.to_owned()];
    sources.extend(fsops::glob(tree, "/usr/share/debianutils/shells.d/*"));
    let mut pkg: Vec<String> = Vec::new();
    for f in &sources {
        let Some(text) = fsops::read_text(tree, f) else {
            continue;
        };
        for l in text.lines() {
            let line = l.split('#').next().unwrap_or("");
            if line.is_empty() {
                continue;
            }
            pkg.push(line.to_owned());
            let real = real_dir_path(tree, line);
            if real != line {
                pkg.push(real);
            }
        }
    }
    let state: Vec<String> = fsops::read_text(tree, "/var/lib/shells.state")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let source = if fsops::lookup(tree, "/etc/shells", true).is_some() {
        "/etc/shells"
    } else {
        template
    };
    let mut out = String::new();
    let mut etc: Vec<String> = Vec::new();
    for line in fsops::read_text(tree, source).unwrap_or_default().lines() {
        let shell = line.split('#').next().unwrap_or("").to_owned();
        if (shell.is_empty() || pkg.contains(&shell) || !state.contains(&shell))
            && (shell.is_empty() || !etc.contains(&shell))
        {
            out.push_str(line);
            out.push('\n');
            etc.push(shell);
        }
    }
    let mut new_state = String::new();
    for s in &pkg {
        new_state.push_str(s);
        new_state.push('\n');
        if !etc.contains(s) && !state.contains(s) {
            out.push_str(s);
            out.push('\n');
            etc.push(s.clone());
        }
    }
    let (mode, uid, gid) = fsops::lookup(tree, source, true).map_or((0o644, 0, 0), |id| {
        let m = &tree.node(id).meta;
        (m.mode, m.uid, m.gid)
    });
    let err = |e: super::error::ConfigureError| e.to_string();
    fsops::write_file(tree, "/etc/shells", out.into_bytes(), mode, uid, gid, sde).map_err(err)?;
    fsops::write_file(
        tree,
        "/var/lib/shells.state",
        new_state.into_bytes(),
        0o644,
        0,
        0,
        sde,
    )
    .map_err(err)
}

/// `linux-update-symlinks install|upgrade VERSION IMAGE` for the only kernel, or the newest:
/// `/vmlinuz` and `/vmlinuz.old` name the image, `/initrd.img` and `.old` its initrd (whether
/// or not one exists yet), in `/` or, with `link_in_boot = yes` in /etc/kernel-img.conf,
/// `/boot`.
pub fn linux_update_symlinks(tree: &mut Tree, args: &[&str], sde: Time) -> Result<(), String> {
    let [change, version, image] = args[..] else {
        return Err("linux-update-symlinks needs CHANGE VERSION IMAGE".into());
    };
    if change != "install" && change != "upgrade" {
        return Err(format!("linux-update-symlinks {change} is not handled"));
    }
    let conf = fsops::read_text(tree, "/etc/kernel-img.conf").unwrap_or_default();
    let setting = |k: &str| {
        conf.lines().find_map(|l| {
            let (a, b) = l.split_once('=')?;
            (a.trim() == k).then(|| b.trim().to_ascii_lowercase())
        })
    };
    if matches!(
        setting("do_symlinks").as_deref(),
        Some("no" | "0" | "false")
    ) || matches!(
        setting("no_symlinks").as_deref(),
        Some("yes" | "1" | "true")
    ) {
        return Ok(());
    }
    let others = fsops::glob(tree, "/boot/vmlinuz-*");
    if others
        .iter()
        .any(|p| p != &format!("/boot/vmlinuz-{version}"))
    {
        return Err("more than one kernel: kiln does not order kernel versions".into());
    }
    let in_boot = matches!(
        setting("link_in_boot").as_deref(),
        Some("yes" | "1" | "true")
    );
    let dir = if in_boot { "/boot" } else { "/" };
    let rel = |target: &str| -> String {
        let t = target.trim_start_matches('/');
        if in_boot {
            t.strip_prefix("boot/").unwrap_or(t).to_owned()
        } else {
            t.to_owned()
        }
    };
    let initrd = format!("/boot/initrd.img-{version}");
    for (name, target) in [
        ("vmlinuz.old", image.to_owned()),
        ("initrd.img.old", initrd.clone()),
        ("vmlinuz", image.to_owned()),
        ("initrd.img", initrd),
    ] {
        fsops::symlink(tree, &fsops::join(dir, name), &rel(&target), sde)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `locale-gen`: compiling locales is not done; with none selected in /etc/locale.gen (as
/// on a first install, where debconf's default is none) there is nothing to do.
pub fn locale_gen(tree: &Tree, args: &[&str]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("locale-gen with arguments is not handled".into());
    }
    let gen = fsops::read_text(tree, "/etc/locale.gen").unwrap_or_default();
    match gen
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    {
        Some(l) => Err(format!(
            "kiln does not compile locales (/etc/locale.gen selects {l})"
        )),
        None => Ok(()),
    }
}

/// `update-locale --no-checks [NAME=VALUE|NAME]...` (locales 2.36): /etc/default/locale with
/// the old assignments commented out, then the new ones (in name order; perl's hash order is
/// not fixed).
pub fn update_locale(tree: &mut Tree, args: &[&str], sde: Time) -> Result<(), String> {
    if !args.contains(&"--no-checks")
        || args
            .iter()
            .any(|a| a.starts_with('-') && *a != "--no-checks")
    {
        return Err("update-locale is handled with --no-checks only".into());
    }
    let file = "/etc/default/locale";
    let mut vars: std::collections::BTreeMap<String, String> = Default::default();
    let (mut content, mode) = match fsops::read_text(tree, file) {
        Some(old) => {
            let mode = fsops::lookup(tree, file, true).map_or(0o644, |id| tree.node(id).meta.mode);
            let mut c = String::new();
            for l in old.lines() {
                let t = l.trim_start();
                match t.split_once('=') {
                    Some((k, v))
                        if !k.is_empty()
                            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        vars.insert(k.to_owned(), v.to_owned());
                        c.push('#');
                        c.push_str(l);
                    }
                    _ => c.push_str(l),
                }
                c.push('\n');
            }
            (c, mode)
        }
        None => ("#  File generated by update-locale\n".to_owned(), 0o644),
    };
    for a in args.iter().filter(|a| !a.starts_with('-')) {
        match a.split_once('=') {
            Some((k, v)) => {
                vars.insert(k.to_owned(), v.to_owned());
            }
            None => {
                vars.remove(*a);
            }
        }
    }
    for (k, v) in vars {
        let mut lines: Vec<String> = content.lines().map(str::to_owned).collect();
        let commented = lines.iter().position(|l| {
            l.strip_prefix('#')
                .map(str::trim_start)
                .is_some_and(|r| r.starts_with(&format!("{k}=")))
        });
        match commented {
            Some(i) => lines[i] = format!("{k}={v}"),
            None => lines.push(format!("{k}={v}")),
        }
        content = lines.join("\n") + "\n";
    }
    fsops::write_file(tree, file, content.into_bytes(), mode, 0, 0, sde).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Meta;

    #[test]
    fn shells_with_merged_usr() {
        let sde = Time::from_secs(1);
        let mut t = Tree::new(Meta::new(0o755, 0, 0, sde));
        fsops::mkdir_p(&mut t, "/usr/bin", &Meta::new(0o755, 0, 0, sde)).unwrap();
        fsops::symlink(&mut t, "/bin", "usr/bin", sde).unwrap();
        fsops::write_file(
            &mut t,
            "/usr/share/debianutils/shells",
            b"# /etc/shells: valid login shells\n/bin/sh\n".to_vec(),
            0o644,
            0,
            0,
            sde,
        )
        .unwrap();
        fsops::write_file(
            &mut t,
            "/usr/share/debianutils/shells.d/bash",
            b"/bin/bash\n".to_vec(),
            0o644,
            0,
            0,
            sde,
        )
        .unwrap();
        update_shells(&mut t, sde).unwrap();
        assert_eq!(
            fsops::read_text(&t, "/etc/shells").unwrap(),
            "# /etc/shells: valid login shells\n/bin/sh\n/usr/bin/sh\n/bin/bash\n/usr/bin/bash\n"
        );
        // Idempotent, as the trigger runs it again.
        update_shells(&mut t, sde).unwrap();
        assert_eq!(
            fsops::read_text(&t, "/var/lib/shells.state").unwrap(),
            "/bin/sh\n/usr/bin/sh\n/bin/bash\n/usr/bin/bash\n"
        );
        assert_eq!(
            fsops::read_text(&t, "/etc/shells").unwrap().lines().count(),
            5
        );
    }
}
