//! The `configure_packages` step: the effects that packages' maintainer scripts and triggers
//! have on a normal install, applied by kiln itself, natively, for any architecture (kiln never
//! runs a maintainer script).
//!
//! Each installed package's `preinst install`, then `postinst configure` (in dependency order,
//! see [`order`]), then the triggers they activate, are *read* by [`script`] and evaluated
//! against the tree as dpkg would run them on a fresh install; each command goes to
//! [`host::World`], which applies it through one module per effect:
//!
//! - [`accounts`] and [`sysusers`]: base-passwd's masters, adduser/useradd/groupadd calls and
//!   every sysusers.d file;
//! - [`alternatives`] for update-alternatives;
//! - [`units`], [`dsh`], [`sysv`]: systemctl, deb-systemd-helper, update-rc.d;
//! - [`ucf`], [`fileutil`], [`generated`]: configuration generated from templates (ucf), the
//!   file commands scripts run (ln, cp, echo > file, ...), and helper programs done natively;
//! - [`debconf`] for the template defaults a noninteractive install answers with;
//! - [`kmod`], [`certs`], [`ldcache`]: what depmod (the kernel's postinst),
//!   update-ca-certificates and ldconfig (triggers) write, each byte-identical to the tool.
//!
//! What kiln does not apply is listed in the [`report::Report`] (the manifest's
//! `maintainer_scripts`); [`commands`] is the table that decides.
//!
//! The recipe's `[services]` and the first-boot rules run later, after the recipe's own files
//! ([`services`], [`firstboot`]).

pub mod accounts;
pub mod alternatives;
pub mod awk;
pub mod certs;
pub mod commands;
pub mod debconf;
pub mod divert;
pub mod dsh;
mod error;
pub mod files;
pub mod fileutil;
pub mod firstboot;
pub mod fsops;
pub mod generated;
pub mod host;
pub mod kmod;
pub mod ldcache;
pub mod order;
pub mod pam;
pub mod report;
pub mod script;
pub mod sed;
pub mod services;
pub mod sysusers;
pub mod sysv;
pub mod textutil;
pub mod treeutil;
pub mod ucf;
pub mod units;

pub use error::ConfigureError;
pub use report::Report;

use crate::recipe::Recipe;
use crate::tree::{Time, Tree};
use host::World;
use order::Installed;

/// Where dpkg keeps maintainer scripts and package metadata.
pub const INFO_DIR: &str = "/var/lib/dpkg/info";

/// Applies the packages' maintainer-script effects to `tree` (after `install_packages`).
pub fn configure_packages(tree: &mut Tree, recipe: &Recipe) -> Result<Report, ConfigureError> {
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    let days = recipe.image.source_date_epoch.div_euclid(86400);
    let arch = crate::packages::debian_arch(recipe.image.arch);
    let status = fsops::read_text(tree, "/var/lib/dpkg/status").unwrap_or_default();
    let pkgs = order::parse_status(&status);
    let order = order::configure_order(&pkgs);
    // base-passwd's postinst copies its masters when /etc/passwd is missing; passwd's
    // `shadowconfig on` then moves the passwords to the shadow files.
    let master = |p: &str, default: &str| {
        fsops::read_text(tree, &format!("/usr/share/base-passwd/{p}"))
            .unwrap_or_else(|| default.to_owned())
    };
    let accounts = accounts::Accounts::from_masters(
        &master("passwd.master", "root:*:0:0:root:/root:/bin/sh\n"),
        &master("group.master", "root:*:0:\n"),
        days,
    );
    let mut world = World::new(tree, sde, arch, accounts);
    let names: Vec<String> = pkgs.iter().map(|p| p.key.clone()).collect();
    world.debconf.load_all(world.tree, &names);
    world.versions = pkgs
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    for &i in &order {
        run_script(&mut world, &pkgs[i], "preinst", &["install"]);
    }
    for &i in &order {
        run_script(&mut world, &pkgs[i], "postinst", &["configure", ""]);
    }
    run_triggers(&mut world, &pkgs, &order);
    // systemd-sysusers.service creates what any sysusers.d file names on first boot; doing it
    // now gives the files the right owners and keeps /etc/passwd the same on every instance.
    let files: Vec<(String, String)> = sysusers::files(world.tree)
        .into_iter()
        .map(|(_, p)| {
            let t = fsops::read_text(world.tree, &p).unwrap_or_default();
            (p, t)
        })
        .collect();
    for p in sysusers::apply(&mut world.accounts, world.tree, &files) {
        world.report.not_applied.push(report::Entry {
            package: String::new(),
            script: "sysusers.d".into(),
            line: 0,
            command: String::new(),
            reason: p,
        });
    }
    world.accounts.write(world.tree, sde)?;
    // What the kernel's postinst (depmod), then the triggers that run last on a normal
    // install (ca-certificates' update-ca-certificates, then libc-bin's ldconfig) leave.
    kmod::apply(world.tree, sde).map_err(|e| image_err("depmod", e))?;
    let certs =
        certs::apply(world.tree, sde).map_err(|e| image_err("update-ca-certificates", e))?;
    for hook in &certs.hooks_not_run {
        world.report.not_applied.push(report::Entry {
            package: "ca-certificates".into(),
            script: "postinst triggered".into(),
            line: 0,
            command: hook.clone(),
            reason: "kiln does not run update-ca-certificates' hooks".into(),
        });
    }
    ldcache::apply(world.tree, sde).map_err(|e| image_err("ldconfig", e))?;
    let mut report = std::mem::take(&mut world.report);
    report.sort();
    Ok(report)
}

fn image_err(what: &str, e: impl std::fmt::Display) -> ConfigureError {
    ConfigureError::Image {
        path: what.into(),
        problem: e.to_string(),
    }
}

/// The first line of a maintainer script: its interpreter and whether it sets `-e`.
pub(crate) fn shebang(text: &str) -> (String, bool) {
    let first = text.lines().next().unwrap_or("");
    let Some(rest) = first.strip_prefix("#!") else {
        return ("/bin/sh".into(), false);
    };
    let mut w = rest.split_whitespace();
    let interp = w.next().unwrap_or("").to_owned();
    let errexit = w.any(|a| a.starts_with('-') && a.contains('e'));
    (interp, errexit)
}

/// Whether kiln reads scripts run by `interp`.
pub(crate) fn is_shell(interp: &str) -> bool {
    matches!(
        interp,
        "/bin/sh" | "/bin/bash" | "/usr/bin/sh" | "/usr/bin/bash" | "/bin/dash"
    )
}

/// Reads and evaluates one maintainer script of `pkg`, if it has one.
fn run_script(world: &mut World, pkg: &Installed, which: &str, args: &[&str]) {
    let path = format!("{INFO_DIR}/{}.{which}", pkg.key);
    let Some(text) = fsops::read_text(world.tree, &path) else {
        return;
    };
    world.package = pkg.name.clone();
    world.pkg_key = pkg.key.clone();
    world.script = if args.first() == Some(&"triggered") {
        format!("{which} triggered")
    } else {
        which.to_owned()
    };
    let (interp, errexit) = shebang(&text);
    let whole = |world: &mut World, reason: String| {
        world.report.not_applied.push(report::Entry {
            package: pkg.name.clone(),
            script: world.script.clone(),
            line: 1,
            command: format!("{path} {}", args.join(" ")).trim_end().to_owned(),
            reason,
        });
    };
    if !is_shell(&interp) {
        whole(
            world,
            format!("the script is run by {interp}; kiln reads shell scripts only"),
        );
        return;
    }
    let parsed = match script::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            whole(world, format!("kiln cannot read this script: {e}"));
            return;
        }
    };
    let env = [
        ("DPKG_MAINTSCRIPT_PACKAGE", pkg.name.as_str()),
        ("DPKG_MAINTSCRIPT_NAME", which),
        ("DPKG_MAINTSCRIPT_ARCH", pkg.arch.as_str()),
        ("DPKG_ADMINDIR", "/var/lib/dpkg"),
        ("DPKG_ROOT", ""),
        ("DEBIAN_FRONTEND", "noninteractive"),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
    ];
    let mut sh = script::Shell::new(world, &path, args, &env);
    sh.set_errexit(errexit);
    sh.run(&parsed);
    drop(sh);
    world.end_script();
}

/// dpkg's triggers on a first install: each package's `interest` in a name or a path is
/// activated by other packages' `activate` lines, `dpkg-trigger` calls, and installed files
/// under an interesting path; each interested package then runs `postinst triggered NAMES`
/// once, in configure order.
fn run_triggers(world: &mut World, pkgs: &[Installed], order: &[usize]) {
    let mut interests: Vec<(usize, Vec<String>)> = Vec::new();
    let mut activated: Vec<String> = std::mem::take(&mut world.activated);
    for (i, p) in pkgs.iter().enumerate() {
        let Some(t) = fsops::read_text(world.tree, &format!("{INFO_DIR}/{}.triggers", p.key))
        else {
            continue;
        };
        let mut mine = Vec::new();
        for l in t.lines() {
            let mut w = l.split_whitespace();
            match (w.next(), w.next()) {
                (Some(d), Some(n)) if d.starts_with("interest") => mine.push(n.to_owned()),
                (Some(d), Some(n)) if d.starts_with("activate") => activated.push(n.to_owned()),
                _ => {}
            }
        }
        if !mine.is_empty() {
            interests.push((i, mine));
        }
    }
    let lists: Vec<String> = pkgs
        .iter()
        .filter_map(|p| fsops::read_text(world.tree, &format!("{INFO_DIR}/{}.list", p.key)))
        .collect();
    for &i in order {
        let Some((_, names)) = interests.iter().find(|(j, _)| *j == i) else {
            continue;
        };
        let hit: Vec<&str> = names
            .iter()
            .filter(|n| {
                if n.starts_with('/') {
                    let dir = format!("{}/", n.trim_end_matches('/'));
                    lists.iter().any(|l| l.lines().any(|f| f.starts_with(&dir)))
                } else {
                    activated.contains(n)
                }
            })
            .map(String::as_str)
            .collect();
        if hit.is_empty() {
            continue;
        }
        let joined = hit.join(" ");
        run_script(world, &pkgs[i], "postinst", &["triggered", &joined]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shebangs() {
        assert_eq!(super::shebang("#!/bin/sh -e\nx"), ("/bin/sh".into(), true));
        assert_eq!(super::shebang("#! /bin/sh\n"), ("/bin/sh".into(), false));
        assert_eq!(super::shebang("#!/usr/bin/perl -w\n").0, "/usr/bin/perl");
        assert_eq!(super::shebang("set -e\n"), ("/bin/sh".into(), false));
    }
}
