//! kiln's configure step against the real tools, as oracles on a copy of the same package tree
//! (run as root, only here): bookworm's `update-alternatives --root`, `systemd-sysusers --root`
//! and `systemctl --root enable`. Each test builds a tree of real Debian packages through
//! kiln's own package code (this machine's mirror), exports it unconfigured to the host, lets
//! the real tool configure the export, lets kiln configure the tree, and compares the results.

mod common;

use common::pkgtree::{export, packages_tree, packages_tree_without, read};
use common::run_ok;
use kiln::tree::{Kind, Time, Tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const SDE: i64 = 1_700_000_000;

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// The real tools need root on the copy; CI runs the tests as root.
macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: the oracle runs as root");
            return;
        }
    };
}

/// A recipe for `configure_packages` (it reads the architecture and the date).
fn recipe(dir: &Path) -> kiln::recipe::Recipe {
    let p = dir.join("oracle.toml");
    std::fs::write(
        &p,
        format!(
            "[image]\nname = \"oracle\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"1GiB\"\n\
             source_date_epoch = {SDE}\n\
             [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\n\
             filesystem = \"ext4\"\nmount = \"/\"\n"
        ),
    )
    .unwrap();
    kiln::recipe::Recipe::load(&p).unwrap()
}

/// Symlink target at `path` in the tree, without following the last component.
fn tree_link(tree: &mut Tree, path: &str) -> Option<String> {
    let (parent, name) = path.rsplit_once('/').unwrap();
    let dir = kiln::boot::tree_io::lookup(tree, if parent.is_empty() { "/" } else { parent })?;
    let id = *tree.children(dir)?.get(name.as_bytes())?;
    match &tree.node(id).kind {
        Kind::Symlink(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    }
}

/// Every entry of a host directory: name -> symlink target or file contents.
fn host_dir(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let v = match std::fs::read_link(&p) {
            Ok(t) => format!("-> {}", t.display()),
            Err(_) if p.is_dir() => "<dir>".into(),
            Err(_) => std::fs::read_to_string(&p).unwrap(),
        };
        out.insert(name, v);
    }
    out
}

/// The same for a directory of the tree.
fn tree_dir(tree: &mut Tree, dir: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(id) = kiln::boot::tree_io::lookup(tree, dir) else {
        return out;
    };
    let children: Vec<(Vec<u8>, kiln::tree::NodeId)> = tree
        .children(id)
        .unwrap()
        .iter()
        .map(|(n, &i)| (n.clone(), i))
        .collect();
    for (name, child) in children {
        let name = String::from_utf8_lossy(&name).into_owned();
        let v = match &tree.node(child).kind {
            Kind::Symlink(t) => format!("-> {}", String::from_utf8_lossy(t)),
            Kind::Dir(_) => "<dir>".into(),
            _ => String::from_utf8(read(tree, &format!("{dir}/{name}")).unwrap()).unwrap(),
        };
        out.insert(name, v);
    }
    out
}

/// `update-alternatives --install` calls of a postinst, continuation lines joined.
fn install_calls(postinst: &str) -> Vec<Vec<String>> {
    let joined = postinst.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("update-alternatives --install "))
        .map(|l| l.split_whitespace().skip(1).map(String::from).collect())
        .collect()
}

#[test]
fn alternatives_match_update_alternatives() {
    need_root!();
    // nano's editor (40) beats vim-tiny's (15); vi, ex, rview only from vim-tiny; awk with
    // slaves; which at priority 0.
    let pkgs = ["mawk", "vim-tiny", "nano", "debianutils"];
    let (mut tree, _store) = packages_tree("x86_64", &pkgs);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    export(&mut tree, "/", &root);
    // The real tool, on the copy, with each package's calls in kiln's configure order (the
    // packages do not depend on each other: name order).
    let mut names: Vec<String> = std::fs::read_dir(root.join("var/lib/dpkg/info"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".postinst").map(String::from)
        })
        .collect();
    names.sort();
    let mut calls = 0;
    for n in &names {
        let text =
            std::fs::read_to_string(root.join(format!("var/lib/dpkg/info/{n}.postinst"))).unwrap();
        for args in install_calls(&text) {
            run_ok(
                Command::new("update-alternatives")
                    .arg("--root")
                    .arg(&root)
                    .arg("--log")
                    .arg("/dev/null")
                    .arg("--quiet")
                    .args(&args),
            );
            calls += 1;
        }
    }
    assert!(calls >= 6, "the packages' calls were found: {calls}");
    let r = recipe(tmp.path());
    kiln::configure::configure_packages(&mut tree, &r).unwrap();

    let want = host_dir(&root.join("etc/alternatives"));
    let got = tree_dir(&mut tree, "/etc/alternatives");
    assert_eq!(got, want, "/etc/alternatives");
    for n in ["awk", "editor", "vi", "which"] {
        assert!(want.contains_key(n), "{n} in {want:?}");
    }
    assert_eq!(want["editor"], "-> /bin/nano", "the highest priority wins");
    let want = host_dir(&root.join("var/lib/dpkg/alternatives"));
    let got = tree_dir(&mut tree, "/var/lib/dpkg/alternatives");
    assert_eq!(got, want, "/var/lib/dpkg/alternatives");
    // The master and slave links themselves.
    for link in [
        "/usr/bin/awk",
        "/usr/bin/nawk",
        "/usr/bin/editor",
        "/usr/bin/vi",
        "/usr/bin/which",
        "/usr/share/man/man1/awk.1.gz",
    ] {
        let host = std::fs::read_link(root.join(&link[1..]))
            .unwrap_or_else(|e| panic!("{link}: {e}"))
            .display()
            .to_string();
        assert_eq!(
            tree_link(&mut tree, link).as_deref(),
            Some(host.as_str()),
            "{link}"
        );
    }
}

#[test]
fn sysusers_match_systemd_sysusers() {
    need_root!();
    // Without dbus (a Recommends of systemd): its postinst makes messagebus with adduser
    // before its sysusers.d file counts, the accounts module's business (tests/server_offline.rs).
    let pkgs = ["base-passwd", "systemd", "systemd-timesyncd"];
    let (mut tree, _store) = packages_tree_without(
        "x86_64",
        &pkgs,
        &[
            "dbus",
            "dbus-daemon",
            "dbus-system-bus-common",
            "dbus-session-bus-common",
            "dbus-bin",
            "systemd-resolved",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    export(&mut tree, "/", &root);
    // base-passwd's postinst on a fresh install: the masters become /etc/passwd and /etc/group.
    for (m, f) in [("passwd.master", "passwd"), ("group.master", "group")] {
        std::fs::copy(
            root.join("usr/share/base-passwd").join(m),
            root.join("etc").join(f),
        )
        .unwrap();
    }
    // Every sysusers.d file at once, in name order: the order the packages' postinsts call
    // them in on this set (systemd's basic, journal, network; then timesyncd's).
    run_ok(Command::new("systemd-sysusers").arg("--root").arg(&root));
    // passwd's postinst (`shadowconfig on`): the passwords move to the shadow files.
    run_ok(Command::new("pwconv").arg("-R").arg(&root));
    run_ok(Command::new("grpconv").arg("-R").arg(&root));
    let r = recipe(tmp.path());
    kiln::configure::configure_packages(&mut tree, &r).unwrap();
    for f in ["passwd", "group"] {
        let want = std::fs::read_to_string(root.join("etc").join(f)).unwrap();
        let got = String::from_utf8(read(&mut tree, &format!("/etc/{f}")).unwrap()).unwrap();
        assert_eq!(got, want, "/etc/{f}");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    for u in ["systemd-network", "systemd-timesync"] {
        assert!(passwd.contains(&format!("\n{u}:")), "{u} in\n{passwd}");
    }
}

#[test]
fn enabled_units_match_systemctl_enable() {
    need_root!();
    let pkgs = [
        "systemd",
        "systemd-resolved",
        "systemd-timesyncd",
        "openssh-server",
    ];
    let (mut tree, _store) = packages_tree("x86_64", &pkgs);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    export(&mut tree, "/", &root);
    // WantedBy, Alias (ssh's sshd.service, resolved's D-Bus name), Also (networkd's socket and
    // wait-online), RequiredBy-free templates with DefaultInstance (getty@ -> tty1), sysinit.
    let units = [
        "ssh.service",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "getty@.service",
        "systemd-timesyncd.service",
    ];
    let before = tree_dir(&mut tree, "/etc/systemd/system");
    // SYSTEMCTL_SKIP_SYSV: ssh's init script would also get rc.d links (update-rc.d), which
    // is deb-systemd-helper's business, not systemctl enable's.
    run_ok(
        Command::new("systemctl")
            .env("SYSTEMCTL_SKIP_SYSV", "1")
            .arg("--root")
            .arg(&root)
            .arg("enable")
            .args(units),
    );
    use kiln::configure::units::{self, Scope};
    units::enable(&mut tree, Scope::System, &units, Time::from_secs(SDE)).unwrap();
    let etc = root.join("etc/systemd/system");
    let want = host_dir(&etc);
    let got = tree_dir(&mut tree, "/etc/systemd/system");
    assert_eq!(got, want, "/etc/systemd/system");
    assert_ne!(got, before, "something was enabled");
    for (name, v) in &want {
        if v == "<dir>" {
            let want = host_dir(&etc.join(name));
            let got = tree_dir(&mut tree, &format!("/etc/systemd/system/{name}"));
            assert_eq!(got, want, "/etc/systemd/system/{name}");
        }
    }
    let wants = host_dir(&etc.join("getty.target.wants"));
    assert!(wants.contains_key("getty@tty1.service"), "{wants:?}");
}

/// Every entry below a host directory, recursively: relative path -> symlink target (`<dir>`
/// for directories).
fn host_links(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, v) in host_dir(dir) {
        if v == "<dir>" {
            for (n, t) in host_links(&dir.join(&name)) {
                out.insert(format!("{name}/{n}"), t);
            }
        }
        out.insert(name, v);
    }
    out
}

/// The same for a directory of the tree.
fn tree_links(tree: &mut Tree, dir: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, v) in tree_dir(tree, dir) {
        if v == "<dir>" {
            for (n, t) in tree_links(tree, &format!("{dir}/{name}")) {
                out.insert(format!("{name}/{n}"), t);
            }
        }
        out.insert(name, v);
    }
    out
}

/// `systemctl preset-all --preset-mode=enable-only` (what a first install's deb-systemd-helper
/// asks of systemctl, unit by unit) against kiln's presets and `[Install]` sections on the same
/// tree: every unit file the packages ship, judged by bookworm's 90-systemd.preset plus a site
/// preset that disables some of them, enabled through its WantedBy/RequiredBy/Alias/Also/
/// DefaultInstance. The symlinks under /etc/systemd/system must be the same, to the target.
#[test]
fn presets_match_systemctl_preset_all() {
    need_root!();
    let pkgs = [
        "systemd",
        "systemd-resolved",
        "systemd-timesyncd",
        "openssh-server",
        "udev",
        "dbus",
    ];
    let (mut tree, _store) = packages_tree("x86_64", &pkgs);
    let sde = Time::from_secs(SDE);
    // Rules before the vendor's (files are read in name order; the first match wins): a unit
    // the vendor enables, a glob, and one the vendor does not name (no rule: enable).
    let site = "# site policy\ndisable systemd-timesyncd.service\ndisable systemd-network*\n\
                ; an ini comment\nenable ssh.service\n";
    kiln::configure::fsops::write_file(
        &mut tree,
        "/etc/systemd/system-preset/10-site.preset",
        site.as_bytes().to_vec(),
        0o644,
        0,
        0,
        sde,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    export(&mut tree, "/", &root);
    run_ok(
        Command::new("systemctl")
            .env("SYSTEMCTL_SKIP_SYSV", "1")
            .arg("--root")
            .arg(&root)
            .arg("preset-all")
            .arg("--preset-mode=enable-only"),
    );
    use kiln::configure::units::{self, Scope};
    let mut names = std::collections::BTreeSet::new();
    for dir in units::SYSTEM_PATH {
        for (n, v) in tree_dir(&mut tree, dir) {
            let unit = [
                ".service",
                ".socket",
                ".target",
                ".timer",
                ".path",
                ".mount",
                ".automount",
                ".swap",
                ".slice",
            ]
            .iter()
            .any(|s| n.ends_with(s));
            if unit && v != "<dir>" {
                names.insert(n);
            }
        }
    }
    assert!(names.len() > 100, "{names:?}");
    // preset-all passes over what it cannot enable (a unit linked to /dev/null by its
    // package, such as cryptsetup's cryptdisks-early.service): kiln's refusals are listed
    // with any difference.
    let mut refused = Vec::new();
    for n in &names {
        if let Err(e) = units::preset(&mut tree, Scope::System, &[n.as_str()], sde) {
            refused.push(e);
        }
    }
    let want = host_links(&root.join("etc/systemd/system"));
    let got = tree_links(&mut tree, "/etc/systemd/system");
    let only = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| -> Vec<String> {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} {v}"))
            .collect()
    };
    assert_eq!(
        got,
        want,
        "only kiln: {:#?}\nonly systemctl: {:#?}\nkiln refused: {refused:#?}",
        only(&got, &want),
        only(&want, &got)
    );
    // The site preset was obeyed, and so were the vendor's rules.
    assert!(
        want.contains_key("multi-user.target.wants/ssh.service"),
        "{want:#?}"
    );
    assert!(want.contains_key("sshd.service"), "ssh's Alias");
    assert!(want.contains_key("getty.target.wants/getty@tty1.service"));
    assert!(
        !want.keys().any(|k| k.contains("systemd-timesyncd")),
        "{want:#?}"
    );
    assert!(
        !want.keys().any(|k| k.contains("systemd-networkd")),
        "{want:#?}"
    );
    assert!(
        want.contains_key("dbus-org.freedesktop.resolve1.service"),
        "{want:#?}"
    );
}
