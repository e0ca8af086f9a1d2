//! deb-systemd-helper(1) (init-system-helpers 1.65): the enable/update-state/was-enabled/
//! debian-installed/mask/unmask/disable calls debhelper writes into postinst scripts, with its
//! state under `/var/lib/systemd/deb-systemd-helper-enabled/`, so that a later `apt upgrade` on
//! the instance sees a normal install.
//!
//! On a system with systemctl (every image with systemd), `enable` on a first install asks
//! `systemctl preset --preset-mode=enable-only` and records the links in its state files
//! without making them itself; kiln does the same with [`units`].

use super::fsops;
use super::units::{self, Scope};
use crate::tree::{Kind, Time, Tree};

pub const ENABLED_DIR: &str = "/var/lib/systemd/deb-systemd-helper-enabled";
pub const MASKED_DIR: &str = "/var/lib/systemd/deb-systemd-helper-masked";
const USER_ENABLED_DIR: &str = "/var/lib/systemd/deb-systemd-user-helper-enabled";
const USER_MASKED_DIR: &str = "/var/lib/systemd/deb-systemd-user-helper-masked";

/// A link deb-systemd-helper manages: `src` (under /etc/systemd/…) → `dest` (the unit file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub src: String,
    pub dest: String,
}

struct Ctx {
    scope: Scope,
    enabled_dir: &'static str,
    masked_dir: &'static str,
    instance: &'static str,
}

/// The unit file path deb-systemd-helper uses (its `find_unit`: `/etc`, then `/lib`, then
/// `/usr/lib`; the bare name when none has it).
fn find_unit(tree: &Tree, c: &Ctx, name: &str) -> String {
    for base in ["/etc/systemd", "/lib/systemd", "/usr/lib/systemd"] {
        let p = format!("{base}/{}/{name}", c.instance);
        if fsops::is_file(tree, &p) {
            return p;
        }
    }
    name.to_owned()
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// deb-systemd-helper's `get_link_closure`: its own reading of the unit file, line by line in
/// any section (it ignores continuation lines), following `Also=`.
fn link_closure(
    tree: &Tree,
    c: &Ctx,
    service_path: &str,
    visited: &mut Vec<String>,
) -> Result<Vec<Link>, String> {
    let text = fsops::read_text(tree, service_path)
        .ok_or_else(|| format!("unable to read {service_path}"))?;
    let unit_name = basename(service_path).to_owned();
    let mut wanted_target = unit_name.clone();
    let mut links = Vec::new();
    let mut wants_dirs = Vec::new();
    for line in text.lines() {
        let l = line.trim_start();
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let value = value.trim_end();
        match key.to_ascii_lowercase().as_str() {
            k @ ("wantedby" | "requiredby") if !value.is_empty() => {
                // The suffix follows the key as written (its regex compares it exactly).
                let ext = if key == "WantedBy" {
                    ".wants"
                } else if key == "RequiredBy" {
                    ".requires"
                } else {
                    ""
                };
                let _ = k;
                for v in value.split_whitespace() {
                    wants_dirs.push(format!("/etc/systemd/{}/{}{ext}/", c.instance, unquote(v)));
                }
            }
            "also" if !value.is_empty() => {
                for v in value.split_whitespace() {
                    let v = unquote(v).to_owned();
                    if v != unit_name && !visited.contains(&v) {
                        visited.push(v.clone());
                        let p = find_unit(tree, c, &v);
                        links.extend(link_closure(tree, c, &p, visited)?);
                    }
                }
            }
            "alias" if !value.is_empty() => {
                for v in value.split_whitespace() {
                    if unquote(v) != unit_name {
                        links.push(Link {
                            src: format!("/etc/systemd/{}/{}", c.instance, unquote(v)),
                            dest: service_path.to_owned(),
                        });
                    }
                }
            }
            "defaultinstance" => {
                let v = unquote(value.trim());
                if !v.is_empty() {
                    if let Some((pre, suf)) = unit_name.rsplit_once("@.") {
                        wanted_target = format!("{pre}@{v}.{suf}");
                    }
                }
            }
            _ => {}
        }
    }
    for d in wants_dirs {
        links.push(Link {
            src: format!("{d}{wanted_target}"),
            dest: service_path.to_owned(),
        });
    }
    Ok(links)
}

fn state_path(c: &Ctx, scriptname: &str) -> String {
    format!("{}/{}.dsh-also", c.enabled_dir, basename(scriptname))
}

fn state_entries(tree: &Tree, path: &str) -> Option<Vec<String>> {
    fsops::read_text(tree, path).map(|t| t.lines().map(str::to_owned).collect())
}

fn is_symlink(tree: &Tree, p: &str) -> bool {
    matches!(
        fsops::lookup(tree, p, false).map(|id| &tree.node(id).kind),
        Some(Kind::Symlink(_))
    )
}

fn write(tree: &mut Tree, path: &str, text: String, sde: Time) -> Result<(), String> {
    fsops::write_file(tree, path, text.into_bytes(), 0o644, 0, 0, sde).map_err(|e| e.to_string())
}

/// Runs `deb-systemd-helper ARGS...`; returns its exit status.
pub fn run(tree: &mut Tree, args: &[&str], sde: Time) -> Result<i32, String> {
    let mut c = Ctx {
        scope: Scope::System,
        enabled_dir: ENABLED_DIR,
        masked_dir: MASKED_DIR,
        instance: "system",
    };
    let mut rest = Vec::new();
    for a in args {
        match *a {
            "--quiet" => {}
            "--user" => {
                c = Ctx {
                    scope: Scope::Global,
                    enabled_dir: USER_ENABLED_DIR,
                    masked_dir: USER_MASKED_DIR,
                    instance: "user",
                }
            }
            "--system" => {}
            a if a.starts_with("--") => return Err(format!("option {a} is not handled")),
            a => rest.push(a),
        }
    }
    let Some((&action, units)) = rest.split_first() else {
        return Ok(0);
    };
    let has_systemctl = ["/bin/systemctl", "/usr/bin/systemctl"]
        .iter()
        .any(|p| fsops::is_file(tree, p));
    let mut rc = if matches!(action, "is-enabled" | "was-enabled" | "debian-installed") {
        1
    } else {
        0
    };
    for &name in units {
        let service_path = find_unit(tree, &c, name);
        match action {
            "enable" | "reenable" => {
                let mut create_links = true;
                if has_systemctl {
                    create_links = false;
                    if tree_has(tree, &state_path(&c, name)) {
                        create_links = !no_link_installed(tree, &c, &service_path)?;
                    } else {
                        units::preset(tree, c.scope, &[name], sde)?;
                    }
                }
                make_links(tree, &c, name, &service_path, create_links, sde)?;
            }
            "update-state" => {
                let links = link_closure(tree, &c, &service_path, &mut Vec::new())?;
                let mut text = String::new();
                for l in links {
                    text.push_str(&l.src);
                    text.push('\n');
                }
                write(tree, &state_path(&c, name), text, sde)?;
            }
            "was-enabled" => {
                let entries = state_entries(tree, &state_path(&c, name)).unwrap_or_default();
                if entries.iter().all(|e| is_symlink(tree, e)) {
                    rc = 0;
                }
            }
            "is-enabled" => {
                let links = link_closure(tree, &c, &service_path, &mut Vec::new())?;
                if links.iter().all(|l| is_symlink(tree, &l.src)) {
                    rc = 0;
                }
            }
            "debian-installed" => {
                if tree_has(tree, &state_path(&c, name)) {
                    rc = 0;
                }
            }
            "unmask" => {
                let mask_link = format!("/etc/systemd/{}/{}", c.instance, basename(&service_path));
                let state = format!("{}/{}", c.masked_dir, basename(&service_path));
                let masked = matches!(
                    fsops::lookup(tree, &mask_link, false).map(|id| &tree.node(id).kind),
                    Some(Kind::Symlink(t)) if t == b"/dev/null"
                );
                if masked && tree_has(tree, &state) {
                    fsops::remove(tree, &mask_link);
                    fsops::remove(tree, &state);
                }
            }
            "mask" => {
                let mask_link = format!("/etc/systemd/{}/{}", c.instance, basename(&service_path));
                if fsops::lookup(tree, &mask_link, false).is_none() {
                    fsops::symlink(tree, &mask_link, "/dev/null", sde)
                        .map_err(|e| e.to_string())?;
                    let state = format!("{}/{}", c.masked_dir, basename(&service_path));
                    write(tree, &state, String::new(), sde)?;
                }
            }
            "disable" | "purge" => {
                let state = state_path(&c, name);
                for e in state_entries(tree, &state).unwrap_or_default() {
                    if action == "purge" || is_symlink(tree, &e) {
                        let st = e.replacen(
                            &format!("/etc/systemd/{}/", c.instance),
                            &format!("{}/", c.enabled_dir),
                            1,
                        );
                        fsops::remove(tree, &st);
                    }
                    if is_symlink(tree, &e) {
                        fsops::remove(tree, &e);
                    }
                }
                if action == "purge" {
                    fsops::remove(tree, &state);
                }
            }
            other => return Err(format!("action {other} is not handled")),
        }
    }
    Ok(rc)
}

fn tree_has(tree: &Tree, p: &str) -> bool {
    fsops::lookup(tree, p, false).is_some()
}

fn no_link_installed(tree: &Tree, c: &Ctx, service_path: &str) -> Result<bool, String> {
    let links = link_closure(tree, c, service_path, &mut Vec::new())?;
    Ok(!links.iter().any(|l| is_symlink(tree, &l.src)))
}

/// `make_systemd_links`: records each link in the state file and a per-link marker, making the
/// link only when asked (and when the marker was absent).
fn make_links(
    tree: &mut Tree,
    c: &Ctx,
    name: &str,
    service_path: &str,
    create_links: bool,
    sde: Time,
) -> Result<(), String> {
    let state = state_path(c, name);
    let links = link_closure(tree, c, service_path, &mut Vec::new())?;
    for l in links {
        let mut entries = state_entries(tree, &state).unwrap_or_default();
        if !entries.contains(&l.src) {
            entries.push(l.src.clone());
            let mut text = entries.join("\n");
            text.push('\n');
            write(tree, &state, text, sde)?;
        }
        let marker = l.src.replacen(
            &format!("/etc/systemd/{}/", c.instance),
            &format!("{}/", c.enabled_dir),
            1,
        );
        if tree_has(tree, &marker) {
            continue;
        }
        if create_links && !is_symlink(tree, &l.src) {
            fsops::symlink(tree, &l.src, &l.dest, sde).map_err(|e| e.to_string())?;
        }
        write(tree, &marker, String::new(), sde)?;
    }
    Ok(())
}
