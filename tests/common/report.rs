//! `kiln test` run the way the boot tests run it, and its JSON report read: one helper for
//! tests/test_stage.rs and tests/server_image.rs.

use super::boot::assert_nothing_left;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// A finished command's status, stdout and stderr, for failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kiln test IMG ARGS --json` with a private TMPDIR (left empty, or the test fails): the
/// output and the JSON report.
pub fn kiln_test(img: &Path, args: &[&std::ffi::OsStr]) -> (Output, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("test")
        .arg(img)
        .args(args)
        .arg("--json")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_nothing_left(tmp.path());
    let j: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", text(&o)));
    (o, j)
}

/// The first result named `name` (before any reboot).
pub fn result<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result {name:?} in {j:#}"))
}

/// The reason of the failed result `name` (the test fails if it passed).
pub fn reason(j: &Value, name: &str) -> String {
    let r = result(j, name);
    assert_eq!(r["passed"], false, "{name}: {r:#}");
    r["reason"].as_str().unwrap().to_string()
}
