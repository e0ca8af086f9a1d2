//! `kiln test` on a real Debian server image: systemd, udev, cloud-init with its EC2 datasource,
//! OpenSSH, amazon-ec2-utils and nginx, booted as an instance of its AMI would boot. Every check
//! kind passes on a good image (SSH with the key the metadata service served, systemd running,
//! nginx's page, the user data run by cloud-init, the root grown to the volume by cloud-init's
//! growpart and resize2fs, cloud-init's `cloud-id` saying `aws` (ds-identify and the EC2
//! datasource took the machine for EC2), `ec2-metadata` unmodified, IMDSv2 enforced, a reboot
//! with the same host keys), and each fails with its own reason on an image whose nginx
//! configuration is broken.
//!
//! The image under test is kiln's own: recipes/web.toml built from this machine's Debian mirror
//! (its tests come from the manifest, as `kiln test IMAGE` runs them), and, for the failures,
//! a variant of it with an nginx configuration `nginx -t` refuses. The conventional mmdebstrap
//! image (`scripts/lib/server-image.sh`) stays the baseline of scripts/bench-boot only.

mod common;

use common::report::{kiln_test, reason, result, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A built image in its own directory.
struct Built {
    _dir: tempfile::TempDir,
    image: PathBuf,
}

/// Builds a copy of recipes/web.toml (beside copies of its files) edited by `edit`.
fn build_web(edit: &dyn Fn(String) -> String) -> Built {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["debian-server", "web"] {
        let to = dir.path().join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(repo().join("recipes").join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    let text = std::fs::read_to_string(repo().join("recipes/web.toml")).unwrap();
    let recipe = dir.path().join("web.toml");
    std::fs::write(&recipe, edit(text)).unwrap();
    let image = dir.path().join("web.raw");
    common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(&image)
            .env("KILN_CACHE", common::pkgtree::cache()),
    );
    Built { _dir: dir, image }
}

/// web.toml with [`EXTRA_TESTS`] after its own.
fn good() -> Built {
    build_web(&|text: String| format!("{text}{EXTRA_TESTS}"))
}

/// web.toml with nginx's configuration broken: `nginx -t` fails, so does nginx.service. Its
/// own tests are replaced by [`BROKEN_TESTS`].
fn broken_nginx() -> Built {
    build_web(&|text: String| {
        let cut = text.find("\n[[test]]").expect("web.toml has tests");
        format!(
            "{}\n[[file]]\npath = \"/etc/nginx/conf.d/broken.conf\"\ncontent = \"this_is_not_an_nginx_directive on;\\n\"\n{BROKEN_TESTS}",
            &text[..cut]
        )
    })
}

const USER_DATA: &str = "#!/bin/sh\necho 'user-data ran' > /var/tmp/kiln-user-data\n";

/// Added to web.toml's own tests: what needs `--user-data` or a machine that is not EC2.
const EXTRA_TESTS: &str = r#"
[[test]]
name = "user-data ran"
ssh = { command = "cat /var/tmp/kiln-user-data", output = "^user-data ran$" }
[[test]]
name = "cloud-init took it for AWS"
ssh = { command = "cloud-id", output = "^aws$" }
[[test]]
name = "ec2-metadata works unmodified"
ssh = { command = "ec2-metadata --instance-id --availability-zone", output = "(?m)^instance-id: i-0[0-9a-f]{16}\n^placement: us-east-1a$" }
[[test]]
name = "token-less metadata refused"
ssh = { command = "curl -s -o /dev/null -w '%{http_code}' http://169.254.169.254/latest/meta-data/instance-id", output = "^401$" }
[[test]]
name = "time synced from the recipe's servers"
ssh = { command = "systemd-analyze cat-config systemd/timesyncd.conf", output = "(?m)^FallbackNTP=169.254.169.123" }
[[test]]
name = "no password logins"
ssh = { command = "sudo sshd -T", output = "(?m)^passwordauthentication no$" }
"#;

/// On the broken image: each check fails its own way.
const BROKEN_TESTS: &str = r#"
[[test]]
name = "system running"
systemd = { state = "running", active = ["nginx.service"] }
timeout = "900s"
[[test]]
name = "ssh command fails"
ssh = { command = "echo checking; exit 1" }
timeout = "90s"
[[test]]
name = "web answers"
http = { port = 80 }
timeout = "20s"
"#;

/// `kiln test IMG [--recipe RECIPE] ARGS --json` (tests/common/report.rs); the console log
/// goes beside the image, kept for a look.
fn run(img: &Path, recipe: Option<&Path>, args: &[&str]) -> (Output, Value) {
    let mut all: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(r) = recipe {
        all.extend([std::ffi::OsStr::new("--recipe"), r.as_os_str()]);
    }
    all.extend(args.iter().map(std::ffi::OsStr::new));
    kiln_test(img, &all)
}

#[test]
fn every_check_passes_on_kilns_web_image() {
    let b = good();
    let img = &b.image;
    let before = common::sha256_file(img);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(img.with_extension("manifest.json")).unwrap(),
    )
    .unwrap();
    let tests = manifest["test"]["tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"user-data ran"), "{names:?}");
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, USER_DATA).unwrap();
    // The recipe's own tests, from the manifest.
    let (o, j) = run(img, None, &["--user-data", ud.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}\n{j:#}", text(&o));
    let results = j["results"].as_array().unwrap();
    // Every check, then every check but the reboot again after it.
    assert_eq!(results.len(), 2 * names.len() - 1, "{j:#}");
    for r in results {
        assert_eq!(r["passed"], true, "{r:#}");
    }
    for n in &names {
        assert!(results.iter().any(|r| r["name"] == *n), "{n} did not run");
    }
    assert!(results
        .iter()
        .any(|r| r["after_reboot"] == true && r["name"] == "login as admin with the served key"));
    assert!(j["first_ssh_login"].as_f64().unwrap() > 0.0, "{j:#}");
    assert!(
        j["first_ssh_login_after_reboot"].as_f64().is_some(),
        "{j:#}"
    );
    // The host keys made on first boot (no key is in the image) are the same after the reboot.
    let keys = j["host_keys"].as_str().unwrap();
    assert!(
        keys == "console" || keys == "first-login-confirmed",
        "host keys checked against cloud-init's console block: {keys}"
    );
    assert!(j["imds"]["refused"].as_u64().unwrap() >= 1, "{j:#}");
    assert_eq!(common::sha256_file(img), before, "the image was modified");
}

#[test]
fn each_check_fails_with_its_own_reason_on_a_broken_nginx() {
    let b = broken_nginx();
    let (o, j) = run(&b.image, None, &[]);
    assert_eq!(o.status.code(), Some(1), "{}\n{j:#}", text(&o));
    let r = reason(&j, "system running");
    assert!(
        r.starts_with("the system is degraded, not running; failed units: ")
            && r.contains("nginx.service"),
        "{r}"
    );
    let r = reason(&j, "ssh command fails");
    assert!(
        r.starts_with("`echo checking; exit 1` exited 1, expected 0; stdout: \"checking\""),
        "{r}"
    );
    let r = reason(&j, "web answers");
    assert!(
        r.starts_with("nothing listens on port 80 in the guest (connection refused)"),
        "{r}"
    );
}

/// recipes/debian-server-arm64.toml, built on this (x86_64) machine without emulation, boots
/// under AAVMF (TCG: a quarter of an hour on a loaded machine) on a volume of its [ami]
/// volume_size, 8 GiB for a 2 GiB image, and passes its own checks: admin's login with the
/// served key, systemd running with no failed unit, cloud-init done, awk/which/vi through the
/// alternatives, the root grown to the volume; then the reboot, and every check again.
#[test]
fn the_arm64_server_image_passes_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("arm64.raw");
    common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(repo().join("recipes/debian-server-arm64.toml"))
            .arg("-o")
            .arg(&image)
            .env("KILN_CACHE", common::pkgtree::cache()),
    );
    let (o, j) = run(&image, None, &[]);
    assert_eq!(o.status.code(), Some(0), "{}\n{j:#}", text(&o));
    assert_eq!(j["volume_size"], 8u64 << 30, "{j:#}");
    let results = j["results"].as_array().unwrap();
    // Seven checks, then all but the reboot again after it.
    assert_eq!(results.len(), 13, "{j:#}");
    for r in results {
        assert_eq!(r["passed"], true, "{r:#}");
    }
    for n in [
        "root grew to the volume",
        "login as admin with the served key",
    ] {
        assert!(
            results
                .iter()
                .any(|r| r["after_reboot"] == true && r["name"] == n),
            "{n} after the reboot: {j:#}"
        );
    }
    assert_eq!(result(&j, "survives a reboot")["passed"], true);
    // The host keys made on the first boot are the ones sshd shows after the reboot.
    let keys = j["host_keys"].as_str().unwrap();
    assert!(
        keys == "console" || keys == "first-login-confirmed",
        "host keys: {keys}"
    );
    let log = std::fs::read_to_string(image.with_extension("console.log")).unwrap();
    assert!(
        log.contains("Linux version 6.1.0-") && log.contains("-cloud-arm64"),
        "an arm64 kernel booted"
    );
    // The kernel's own word that it grew the mounted root (online, no resize_inode).
    assert!(
        log.contains("EXT4-fs (nvme0n1p2): resized filesystem to "),
        "the root was grown online"
    );
}
