//! `kiln test` on a real Debian server image: systemd, udev, cloud-init with its EC2 datasource,
//! OpenSSH, amazon-ec2-utils and nginx, booted as an instance of its AMI would boot. Every check
//! kind passes on a good image (SSH with the key the metadata service served, systemd running,
//! nginx's page, the user data run by cloud-init, the root grown to the volume by cloud-init's
//! growpart and resize2fs, cloud-init's `cloud-id` saying `aws` (ds-identify and the EC2
//! datasource took the machine for EC2), `ec2-metadata` unmodified, IMDSv2 enforced, a reboot
//! with the same host keys), and each fails with its own reason on an image whose nginx
//! configuration is broken.
//!
//! The image under test comes from one function, [`server_image`]: today the conventional
//! build of `scripts/lib/server-image.sh` (mmdebstrap and host tools, as root), described for
//! `--recipe` by [`FIXTURE_RECIPE`]; kiln's own server recipes can take its place.

mod common;

use common::boot::assert_nothing_left;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Which image.
#[derive(Clone, Copy)]
enum Variant {
    Good,
    /// nginx's configuration has an unknown directive: `nginx -t` fails, so does nginx.service.
    BrokenNginx,
}

/// The image under test and the recipe text the tests are appended to (for `--recipe`).
fn server_image(v: Variant) -> (PathBuf, String) {
    let name = match v {
        Variant::Good => "good",
        Variant::BrokenNginx => "broken-nginx",
    };
    let out = common::run_ok(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/server-image.sh"))
            .arg(name),
    );
    (PathBuf::from(out.trim()), FIXTURE_RECIPE.to_string())
}

/// What `--recipe` needs to describe the conventional fixture (its layout; nothing is built
/// from it).
const FIXTURE_RECIPE: &str = include_str!("../scripts/lib/server-image.toml");

const USER_DATA: &str = "#!/bin/sh\necho 'user-data ran' > /var/tmp/kiln-user-data\n";

/// Every kind of check, each expected to pass. The first ones wait for the boot (TCG on a
/// loaded machine: minutes).
const GOOD_TESTS: &str = r#"
[ami]
name = "server-fixture-{version}"
imds_support = "v2.0"
volume_size = "4GiB"
[[test]]
name = "kernel up"
console = "Linux version"
[[test]]
name = "sshd listens"
tcp = { port = 22 }
timeout = "900s"
[[test]]
name = "login with the served key"
ssh = { command = "id -un", output = "^admin$" }
timeout = "900s"
[[test]]
name = "system running"
systemd = { state = "running", active = ["nginx.service", "ssh.service"] }
timeout = "900s"
[[test]]
name = "web answers"
http = { port = 80, path = "/", status = 200, body = "Welcome to the kiln server fixture" }
[[test]]
name = "user-data ran"
ssh = { command = "cat /var/tmp/kiln-user-data", output = "^user-data ran$" }
[[test]]
name = "root grew to the volume"
ssh = { command = "s=$(df -B1M --output=size / | tail -n 1); echo $s; test $s -gt 3500" }
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
name = "survives a reboot"
reboot = true
timeout = "900s"
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

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(img: &Path, recipe: &Path, args: &[&str]) -> (Output, Value) {
    let tmp = tempfile::tempdir().unwrap();
    // The console log goes beside the image (target/server-image/…), kept for a look.
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("test")
        .arg(img)
        .arg("--recipe")
        .arg(recipe)
        .arg("--json")
        .args(args)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_nothing_left(tmp.path());
    let j: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", text(&o)));
    (o, j)
}

fn result<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result {name:?} in {j:#}"))
}

#[test]
fn every_check_passes_on_a_good_server_image() {
    let (img, base) = server_image(Variant::Good);
    let before = common::sha256_file(&img);
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("server.toml");
    std::fs::write(&recipe, format!("{base}{GOOD_TESTS}")).unwrap();
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, USER_DATA).unwrap();
    let (o, j) = run(&img, &recipe, &["--user-data", ud.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}\n{j:#}", text(&o));
    // Every check, then every non-reboot check again after the reboot.
    assert_eq!(j["results"].as_array().unwrap().len(), 11 + 10, "{j:#}");
    assert!(j["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["after_reboot"] == true && r["name"] == "login with the served key"));
    assert!(j["first_ssh_login"].as_f64().unwrap() > 0.0, "{j:#}");
    assert!(
        j["first_ssh_login_after_reboot"].as_f64().is_some(),
        "{j:#}"
    );
    let keys = j["host_keys"].as_str().unwrap();
    assert!(
        keys == "console" || keys == "first-login-confirmed",
        "host keys checked against cloud-init's console block: {keys}"
    );
    assert!(j["imds"]["refused"].as_u64().unwrap() >= 1, "{j:#}");
    assert_eq!(result(&j, "root grew to the volume")["passed"], true);
    assert_eq!(common::sha256_file(&img), before, "the image was modified");
}

#[test]
fn each_check_fails_with_its_own_reason_on_a_broken_nginx() {
    let (img, base) = server_image(Variant::BrokenNginx);
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("server.toml");
    std::fs::write(&recipe, format!("{base}{BROKEN_TESTS}")).unwrap();
    let (o, j) = run(&img, &recipe, &[]);
    assert_eq!(o.status.code(), Some(1), "{}\n{j:#}", text(&o));
    let reason = |n: &str| {
        let r = result(&j, n);
        assert_eq!(r["passed"], false, "{r:#}");
        r["reason"].as_str().unwrap().to_string()
    };
    let r = reason("system running");
    assert!(
        r.starts_with("the system is degraded, not running; failed units: ")
            && r.contains("nginx.service"),
        "{r}"
    );
    let r = reason("ssh command fails");
    assert!(
        r.starts_with("`echo checking; exit 1` exited 1, expected 0; stdout: \"checking\""),
        "{r}"
    );
    let r = reason("web answers");
    assert!(
        r.starts_with("nothing listens on port 80 in the guest (connection refused)"),
        "{r}"
    );
}
