//! recipes/web.toml (recipes/debian-server.toml plus nginx) built from this machine's Debian
//! mirror, then checked offline with the real tools: e2fsck -fn, debugfs, sgdisk -v. The image
//! must hold what a normal install's maintainer scripts and triggers leave (accounts,
//! alternatives, enabled units, generated configuration, depmod's indexes, the CA bundle), no
//! SSH host key, an empty machine-id; two builds are byte-identical, and so is a build run as
//! nobody (setpriv) with a copy of the same package cache.

mod common;

use common::{extract, run, run_ok, sha256_file};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Built {
    dir: tempfile::TempDir,
    image: PathBuf,
    manifest: Value,
    root: PathBuf,
}

impl Built {
    fn debugfs(&self, req: &str) -> String {
        run_ok(Command::new("debugfs").arg("-R").arg(req).arg(&self.root))
    }

    fn cat(&self, path: &str) -> String {
        self.debugfs(&format!("cat {path}"))
    }

    /// `ls -p` rows: (name, mode) of the directory's entries, `.` and `..` left out.
    fn ls(&self, dir: &str) -> Vec<(String, u32)> {
        self.debugfs(&format!("ls -p {dir}"))
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('/').collect();
                (f.len() >= 7).then(|| (f[5].to_string(), u32::from_str_radix(f[2], 8).unwrap()))
            })
            .filter(|(n, _)| n != "." && n != "..")
            .collect()
    }

    /// The inode's type and, for a symlink, its target (debugfs `stat`), without following
    /// the last component.
    fn lstat(&self, path: &str) -> Option<(String, Option<String>)> {
        let s = self.debugfs(&format!("stat {path}"));
        let ty = s
            .split("Type: ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_string();
        let target = s
            .split("Fast link dest: \"")
            .nth(1)
            .map(|t| t.split('"').next().unwrap().to_string());
        Some((ty, target))
    }

    /// `path` with every symlink resolved, component by component (debugfs' own lookup does
    /// not follow a link in the last component, and these paths cross /bin -> usr/bin), and
    /// the links crossed on the way.
    fn resolve(&self, path: &str) -> (String, Vec<String>) {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut at = String::new();
        let mut links = Vec::new();
        while let Some(c) = todo.pop() {
            assert!(links.len() < 40, "symlink loop at {path}: {links:?}");
            if c == "." {
                continue;
            }
            if c == ".." {
                at.truncate(at.rfind('/').unwrap_or(0));
                continue;
            }
            let next = format!("{at}/{c}");
            match self.lstat(&next) {
                Some((ty, Some(target))) if ty == "symlink" => {
                    links.push(next.clone());
                    if target.starts_with('/') {
                        at.clear();
                    }
                    todo.extend(
                        target
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .rev()
                            .map(String::from),
                    );
                }
                Some(_) => at = next,
                None => panic!("{next} is not in the image (resolving {path})"),
            }
        }
        (at, links)
    }
}

fn cache() -> PathBuf {
    common::pkgtree::cache()
}

fn kiln_build(recipe: &Path, image: &Path) -> std::process::Output {
    run(Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg("--strict-scripts")
        .arg(recipe)
        .arg("-o")
        .arg(image)
        .env("KILN_CACHE", cache()))
}

fn build(recipe: &Path, dir: tempfile::TempDir) -> Built {
    let image = dir.path().join("image.raw");
    common::ok(&kiln_build(recipe, &image));
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("image.manifest.json")).unwrap(),
    )
    .unwrap();
    run_ok(Command::new("sgdisk").arg("-v").arg(&image));
    let p = &manifest["partitions"][1];
    assert_eq!(p["label"], "root");
    let first = p["first_lba"].as_u64().unwrap();
    let last = p["last_lba"].as_u64().unwrap();
    let root = dir.path().join("root.ext4");
    extract(&image, first * 512, (last - first + 1) * 512, &root);
    run_ok(Command::new("e2fsck").arg("-fn").arg(&root));
    Built {
        dir,
        image,
        manifest,
        root,
    }
}

fn web() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = common::fixture_dir("server-offline-web");
        build(&repo().join("recipes/web.toml"), dir)
    })
}

#[test]
fn no_host_key_and_an_empty_machine_id() {
    let b = web();
    let ssh: Vec<String> = b.ls("/etc/ssh").into_iter().map(|(n, _)| n).collect();
    assert!(ssh.contains(&"sshd_config".to_string()), "{ssh:?}");
    assert!(
        !ssh.iter().any(|n| n.starts_with("ssh_host_")),
        "a host key is baked into the image: {ssh:?}"
    );
    assert_eq!(b.cat("/etc/machine-id"), "");
    // The first-boot unit that makes them when cloud-init does not, enabled before sshd.
    let unit = b.cat("/etc/systemd/system/kiln-ssh-hostkeys.service");
    assert!(unit.contains("ExecStart=/usr/bin/ssh-keygen -A"), "{unit}");
    assert!(unit.contains("Before=ssh.service"), "{unit}");
    let (to, _) = b.resolve("/etc/systemd/system/ssh.service.wants/kiln-ssh-hostkeys.service");
    assert_eq!(to, "/etc/systemd/system/kiln-ssh-hostkeys.service");
}

#[test]
fn every_package_is_installed_and_configured() {
    let b = web();
    let status = b.cat("/var/lib/dpkg/status");
    let entries: Vec<&str> = status
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    let names: Vec<&str> = b.manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(entries.len(), names.len(), "one status entry per package");
    for e in &entries {
        assert!(
            e.lines().any(|l| l == "Status: install ok installed"),
            "not `install ok installed`:\n{e}"
        );
    }
    for want in [
        "nginx",
        "openssh-server",
        "cloud-init",
        "systemd-sysv",
        "amazon-ec2-utils",
        "cloud-guest-utils",
        "sudo",
        "ca-certificates",
        "systemd-timesyncd",
    ] {
        assert!(names.contains(&want), "{want} is not installed: {names:?}");
    }
    // Every maintainer-script command was applied (web() builds with --strict-scripts).
    let na = &b.manifest["maintainer_scripts"]["not_applied"];
    assert_eq!(na, &serde_json::json!([]), "not applied: {na:#}");
}

/// locales' postinst on a fresh install: /etc/locale.gen lists every supported locale,
/// commented out (its loops over SUPPORTED, `grep -q` and `sed -i 0,/RE/`), nothing is
/// generated, /etc/default/locale is update-locale's header. The oracle is mmdebstrap's real
/// install of the same package (the server fixture, scripts/lib/server-image.sh).
#[test]
fn locales_as_a_normal_install_leaves_them() {
    let b = web();
    let images = run_ok(Command::new(repo().join("scripts/lib/server-image.sh")).arg("good"));
    let fixture = Path::new(images.trim()).parent().unwrap().join("rootfs");
    for f in ["/etc/locale.gen", "/etc/default/locale"] {
        let want = std::fs::read_to_string(fixture.join(&f[1..])).unwrap();
        assert_eq!(b.cat(f), want, "{f} differs from mmdebstrap's");
    }
    assert!(b.cat("/etc/locale.gen").lines().count() > 400);
    assert!(b.lstat("/usr/lib/locale/locale-archive").is_none());
    assert!(!fixture.join("usr/lib/locale/locale-archive").exists());
}

/// Every recipe in recipes/ builds with --strict-scripts: every maintainer-script command of
/// every package is applied (or deferred with its reason), none is left out.
#[test]
fn every_recipe_builds_with_strict_scripts() {
    let mut recipes: Vec<PathBuf> = std::fs::read_dir(repo().join("recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    recipes.sort();
    assert!(recipes.len() >= 7, "{recipes:?}");
    for r in recipes {
        let dir = tempfile::tempdir().unwrap();
        let o = run(Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg("--strict-scripts")
            .arg(&r)
            .arg("-o")
            .arg(dir.path().join("image.raw"))
            .env("KILN_CACHE", cache()));
        assert!(
            o.status.success(),
            "{} with --strict-scripts: {}",
            r.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn system_accounts_as_a_normal_install_makes_them() {
    let b = web();
    let passwd = b.cat("/etc/passwd");
    let user = |n: &str| {
        passwd
            .lines()
            .find(|l| l.starts_with(&format!("{n}:")))
            .unwrap_or_else(|| panic!("no {n} in /etc/passwd:\n{passwd}"))
            .to_string()
    };
    // openssh-server's postinst: adduser --system --no-create-home --home /run/sshd
    // --shell /usr/sbin/nologin sshd (no --group: nogroup).
    let sshd: Vec<String> = user("sshd").split(':').map(String::from).collect();
    assert_eq!(sshd[3], "65534", "{sshd:?}");
    assert_eq!(sshd[5], "/run/sshd");
    assert_eq!(sshd[6], "/usr/sbin/nologin");
    let uid: u32 = sshd[2].parse().unwrap();
    assert!((100..1000).contains(&uid), "a system uid: {uid}");
    // base-passwd's master copy.
    assert_eq!(
        user("www-data"),
        "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin"
    );
    assert!(user("root").starts_with("root:x:0:0:"));
    // systemd's sysusers.d files.
    user("systemd-network");
    user("systemd-resolve");
    user("systemd-timesync");
    let shadow = b.cat("/etc/shadow");
    for l in passwd.lines() {
        let n = l.split(':').next().unwrap();
        assert!(
            shadow.lines().any(|s| s.starts_with(&format!("{n}:"))),
            "{n} has no shadow entry"
        );
    }
    let group = b.cat("/etc/group");
    assert!(
        group.lines().any(|l| l.starts_with("www-data:x:33:")),
        "{group}"
    );
    assert!(
        group.lines().any(|l| l.starts_with("sudo:x:27:")),
        "{group}"
    );
    // nginx-common's postinst: the log directory belongs to www-data:adm.
    let (log, _) = b.lstat("/var/log/nginx").unwrap();
    assert_eq!(log, "directory");
}

#[test]
fn awk_which_and_vi_resolve_through_the_alternatives() {
    let b = web();
    for (cmd, want) in [
        ("/usr/bin/awk", "/usr/bin/mawk"),
        ("/usr/bin/which", "/usr/bin/which.debianutils"),
        ("/usr/bin/vi", "/usr/bin/vim.tiny"),
        ("/bin/awk", "/usr/bin/mawk"),
    ] {
        let (to, links) = b.resolve(cmd);
        assert_eq!(to, want, "{cmd} -> {links:?}");
        assert!(
            links.iter().any(|l| l.starts_with("/etc/alternatives/")),
            "{cmd} does not go through /etc/alternatives: {links:?}"
        );
        assert_eq!(b.lstat(&to).unwrap().0, "regular");
    }
    // dpkg's administrative file, as update-alternatives writes it.
    let awk = b.cat("/var/lib/dpkg/alternatives/awk");
    assert!(awk.starts_with("auto\n/usr/bin/awk\n"), "{awk}");
    assert!(awk.contains("\n/usr/bin/mawk\n5\n"), "{awk}");
}

#[test]
fn units_enabled_as_their_packages_enable_them() {
    let b = web();
    let wants = |t: &str| -> Vec<String> {
        b.ls(&format!("/etc/systemd/system/{t}.wants"))
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    let multi = wants("multi-user.target");
    for u in [
        "ssh.service",
        "nginx.service",
        "systemd-networkd.service",
        "remote-fs.target",
    ] {
        assert!(multi.contains(&u.to_string()), "{u} not enabled: {multi:?}");
    }
    assert!(
        !wants("sockets.target").contains(&"ssh.socket".to_string()),
        "ssh.socket would fight ssh.service for port 22"
    );
    let ci = wants("cloud-init.target");
    for u in [
        "cloud-init-local.service",
        "cloud-init.service",
        "cloud-config.service",
        "cloud-final.service",
    ] {
        assert!(ci.contains(&u.to_string()), "{u} not enabled: {ci:?}");
    }
    assert!(wants("getty.target").contains(&"getty@tty1.service".to_string()));
    let sysinit = wants("sysinit.target");
    for u in ["systemd-timesyncd.service", "systemd-resolved.service"] {
        assert!(
            sysinit.contains(&u.to_string()),
            "{u} not enabled: {sysinit:?}"
        );
    }
    // Alias= links, and each enabled link points at the unit's file.
    assert_eq!(
        b.resolve("/etc/systemd/system/sshd.service").0,
        "/usr/lib/systemd/system/ssh.service"
    );
    assert_eq!(
        b.resolve("/etc/systemd/system/multi-user.target.wants/nginx.service")
            .0,
        "/usr/lib/systemd/system/nginx.service"
    );
    assert_eq!(
        b.resolve("/etc/systemd/system/default.target").0,
        "/usr/lib/systemd/system/multi-user.target"
    );
    // deb-systemd-helper's state, so that an upgrade on the instance keeps them enabled.
    let dsh: Vec<String> = b
        .ls("/var/lib/systemd/deb-systemd-helper-enabled")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for f in ["ssh.service.dsh-also", "nginx.service.dsh-also"] {
        assert!(dsh.contains(&f.to_string()), "{f} missing: {dsh:?}");
    }
}

#[test]
fn generated_configuration_is_there() {
    let b = web();
    // openssh-server's postinst (ucf) copies the template.
    assert_eq!(
        b.cat("/etc/ssh/sshd_config"),
        b.cat("/usr/share/openssh/sshd_config")
    );
    let ucf = b.cat("/var/lib/ucf/hashfile");
    assert!(ucf.contains(" /etc/ssh/sshd_config\n"), "{ucf}");
    // nginx-common's postinst enables the default site, serving the recipe's page.
    let (ty, target) = b.lstat("/etc/nginx/sites-enabled/default").unwrap();
    assert_eq!(ty, "symlink");
    assert_eq!(
        target.as_deref(),
        Some("/etc/nginx/sites-available/default")
    );
    assert_eq!(
        b.cat("/var/www/html/index.html"),
        std::fs::read_to_string(repo().join("recipes/web/index.html")).unwrap()
    );
    // systemd-resolved's postinst on a fresh install: the stub resolver.
    let (ty, target) = b.lstat("/etc/resolv.conf").unwrap();
    assert_eq!(ty, "symlink");
    assert_eq!(
        target.as_deref(),
        Some("../run/systemd/resolve/stub-resolv.conf")
    );
    let shells = b.cat("/etc/shells");
    assert!(shells.lines().any(|l| l == "/bin/bash"), "{shells}");
    // The recipe's own configuration beside the packages'.
    assert!(b
        .cat("/etc/systemd/timesyncd.conf.d/80-ec2.conf")
        .contains("FallbackNTP=169.254.169.123"));
    assert!(b
        .cat("/etc/cloud/cloud.cfg.d/01_kiln_ec2.cfg")
        .contains("name: admin"));
    let fstab = b.cat("/etc/fstab");
    assert!(
        fstab.contains(" / ext4 rw,discard,errors=remount-ro,x-systemd.growfs "),
        "{fstab}"
    );
}

#[test]
fn kernel_module_indexes_ca_bundle_and_ld_cache() {
    let b = web();
    let ver = b
        .ls("/usr/lib/modules")
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| n.ends_with("-cloud-amd64"))
        .expect("a cloud kernel");
    let dir = format!("/usr/lib/modules/{ver}");
    let dep = b.cat(&format!("{dir}/modules.dep"));
    assert!(
        dep.lines()
            .any(|l| l.starts_with("kernel/drivers/net/virtio_net.ko:")),
        "virtio_net in modules.dep"
    );
    assert!(dep.contains("/ena.ko:"), "ena in modules.dep");
    let alias = b.cat(&format!("{dir}/modules.alias"));
    // ENA's PCI id (Amazon 1d0f:ec20), so that udev loads it on a Nitro instance.
    assert!(
        alias
            .lines()
            .any(|l| l.starts_with("alias pci:v00001D0Fd0000EC20") && l.ends_with(" ena")),
        "ena's PCI alias"
    );
    for f in [
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.symbols.bin",
    ] {
        assert_eq!(b.lstat(&format!("{dir}/{f}")).unwrap().0, "regular", "{f}");
    }
    let bundle = b.cat("/etc/ssl/certs/ca-certificates.crt");
    assert!(
        bundle.matches("-----BEGIN CERTIFICATE-----").count() > 100,
        "the CA bundle"
    );
    assert_eq!(b.lstat("/etc/ld.so.cache").unwrap().0, "regular");
}

#[test]
fn builds_are_byte_identical_as_root_and_as_nobody() {
    let a = web();
    let again = tempfile::tempdir().unwrap();
    let image = again.path().join("image.raw");
    common::ok(&kiln_build(&repo().join("recipes/web.toml"), &image));
    let sha = sha256_file(&a.image);
    assert_eq!(sha256_file(&image), sha, "a second build differs");
    assert_eq!(
        std::fs::read_to_string(again.path().join("image.manifest.json")).unwrap(),
        std::fs::read_to_string(a.dir.path().join("image.manifest.json")).unwrap(),
        "the manifests differ"
    );
    if unsafe { libc::geteuid() } != 0 {
        // Built as this user already; CI runs the tests as root, which covers the comparison.
        return;
    }
    // nobody gets its own copy of the same cache (root's is not nobody's to write) and an
    // output directory of its own.
    let nb = tempfile::tempdir().unwrap();
    let nb_cache = nb.path().join("cache");
    run_ok(Command::new("cp").arg("-a").arg(cache()).arg(&nb_cache));
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg("65534:65534")
            .arg(nb.path()),
    );
    let out = nb.path().join("nobody.raw");
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg(repo().join("recipes/web.toml"))
        .arg("-o")
        .arg(&out)
        .env("HOME", nb.path())
        .env("KILN_CACHE", &nb_cache));
    common::ok(&o);
    assert_eq!(
        sha256_file(&out),
        sha,
        "a build as nobody differs from root's"
    );
}
