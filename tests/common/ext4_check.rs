//! Helpers for ext4 integration tests: run e2fsck and debugfs on an image, build images.
#![allow(dead_code)]

use kiln::fs::ext4::{self, Ext4Options, Ext4Report};
use kiln::sink::FileSink;
use kiln::tree::{Time, Tree};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const EPOCH: Time = Time { secs: 1_700_000_000, nanos: 0 };

pub fn opts(size: u64) -> Ext4Options {
    Ext4Options {
        size,
        uuid: *b"kiln-test-uuid-1",
        hash_seed: *b"kiln-hash-seed-1",
        label: "kiln-root".into(),
        time: EPOCH,
    }
}

/// Writes `tree` into `dir/name` and returns the image path and report.
pub fn build(dir: &Path, name: &str, tree: &Tree, o: &Ext4Options) -> (PathBuf, Ext4Report) {
    let target = dir.join(name);
    let mut sink = FileSink::create(&target, o.size).unwrap();
    let report = ext4::write(tree, o, &mut sink).unwrap();
    (sink.persist().unwrap(), report)
}

/// Runs `e2fsck -fn` and panics with its output unless it is clean.
pub fn fsck(img: &Path) -> String {
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().expect("e2fsck runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "e2fsck -fn failed ({}):\n{text}", out.status);
    for bad in ["Fix?", "Clear?", "Salvage?", "Relocate?", "Optimize?", "Recreate?", "WARNING"] {
        assert!(!text.contains(bad), "e2fsck found problems:\n{text}");
    }
    text
}

/// Runs one debugfs request and returns its stdout.
pub fn debugfs(img: &Path, req: &str) -> String {
    let out = Command::new("debugfs").arg("-R").arg(req).arg(img).output().expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Dumps the whole fs to `dir` with `rdump` (keeps modes; no ownership, as we are not root).
pub fn rdump(img: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let out = debugfs(img, &format!("rdump / {}", dir.display()));
    let _ = out;
}

/// A field from `debugfs stat` output, such as "Links" or "Blockcount".
pub fn stat_field(stat: &str, field: &str) -> Option<String> {
    let key = format!("{field}: ");
    stat.split(|c| c == '\n' || c == '\t')
        .flat_map(|l| l.split("   "))
        .find_map(|part| part.trim().strip_prefix(&key).map(|v| v.split_whitespace().next().unwrap_or("").to_string()))
}
