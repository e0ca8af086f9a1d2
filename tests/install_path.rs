//! The install path of `scripts/test`, proved on machine states other than this machine's own:
//! `scripts/lib/test-deps.sh check` simulates (`apt-get install -s`) installing every tool
//! package against a saved dpkg status, through this machine's APT lists.
//!
//! `testdata/apt/fresh-machine.status.gz` is `/var/lib/dpkg/status` of a fresh machine of the
//! project's kind, saved before anything was installed: its qemu-utils is 1:10.0 from
//! bookworm-backports, which Breaks bookworm's qemu-system-common 1:7.2.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fresh_status() -> String {
    let gz = std::fs::read("testdata/apt/fresh-machine.status.gz").unwrap();
    let mut s = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// The status without `package`'s paragraph, or with its Version replaced.
fn edit(status: &str, package: &str, version: Option<&str>) -> String {
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let ours = para.lines().any(|l| l == format!("Package: {package}"));
        match (ours, version) {
            (false, _) => out.push(para.to_string()),
            (true, None) => {}
            (true, Some(v)) => out.push(
                para.lines()
                    .map(|l| match l.starts_with("Version: ") {
                        true => format!("Version: {v}"),
                        false => l.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }
    out.join("\n\n")
}

fn write_status(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn deps(verb: &str, status: &Path, no_pin: bool) -> (bool, String, String) {
    let mut c = Command::new("scripts/lib/test-deps.sh");
    c.arg(verb).env("KILN_APT_STATUS", status);
    if no_pin {
        c.env("KILN_TEST_DEPS_NO_PIN", "1");
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn candidate(package: &str) -> String {
    let out = Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_string))
        .unwrap()
}

#[test]
fn fresh_machine_with_backported_qemu_utils_installs_with_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let status = write_status(dir.path(), "fresh", &fresh_status());
    assert!(
        fresh_status().contains("Version: 1:10.0.2+ds-2+deb13u1~bpo12+1"),
        "the saved state holds the backported qemu-utils"
    );
    let (ok, plan, err) = deps("plan", &status, false);
    assert!(ok, "{err}");
    let v = candidate("qemu-system-x86");
    for p in ["qemu-utils", "qemu-system-x86", "qemu-system-arm"] {
        assert!(
            plan.lines().any(|l| l == format!("{p}={v}")),
            "{p} pinned to {v}:\n{plan}"
        );
    }
    let (ok, _, err) = deps("check", &status, false);
    assert!(ok, "the simulated install must succeed: {err}");
}

#[test]
fn without_the_pin_apt_refuses_and_the_check_says_why_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let status = write_status(dir.path(), "fresh", &fresh_status());
    let (ok, _, err) = deps("check", &status, true);
    assert!(!ok, "apt must refuse the unpinned install");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("scripts/test: apt cannot install the test tools"));
    assert!(
        lines[0].contains("qemu-utils : Breaks: qemu-system-common"),
        "{err}"
    );
}

#[test]
fn plain_bookworm_states_install() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = fresh_status();
    // No qemu-utils at all, as on a plain bookworm installation.
    let none = write_status(dir.path(), "none", &edit(&fresh, "qemu-utils", None));
    // bookworm's own qemu-utils, an older build than the lists' candidate.
    let own = write_status(
        dir.path(),
        "own",
        &edit(&fresh, "qemu-utils", Some("1:7.2+dfsg-7+deb12u15")),
    );
    for s in [none, own] {
        let (ok, _, err) = deps("check", &s, false);
        assert!(ok, "{}: {err}", s.display());
        let (ok, _, err) = deps("check", &s, true);
        assert!(ok, "{} needs no pin: {err}", s.display());
    }
}

#[test]
fn this_machine_with_everything_installed_checks_clean() {
    let out = Command::new("scripts/lib/test-deps.sh")
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("scripts/lib/test-deps.sh")
        .arg("install")
        .env("KILN_APT_STATUS", "/var/lib/dpkg/status")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "install refuses a foreign state"
    );
}
